//! GoHighLevel: what its presets' data cannot say.
//! - `agency`: an agency's (Company) connection serves its locations: a
//!   location's token is minted from the agency's on the first request
//!   naming it, for every location a bulk install approved (a worker of
//!   its own), and again when a minted one is due (it has no refresh token);
//!   the agency's locations are listed with its token;
//! - `client`: the agency endpoints (`/oauth/locationToken`,
//!   `/oauth/installedLocations`);
//! - `events` and `app_webhooks`: the Marketplace app's signed webhooks
//!   (`X-GHL-Signature`), read and applied;
//! - `account`: the one reader of a connection's GoHighLevel metadata.
//!
//! Installs started at the Marketplace are generic (`connections::installs`,
//! the preset's `provider_initiated_installs`), as is the location's name
//! (the preset's `userinfo_url`).

use crate::app::App;
use crate::db::models::connection::{Connection, Status, TokenSet};
use crate::db::now;
use crate::ids::{AccountId, TenantId};
use crate::oauth::client::{self as oauth_client, ProviderError};
use crate::platform::{Answer, Due, Location, Platform, Taken, Worker};
use crate::providers::Provider;
use account::Account;
use actix_web::http::header::HeaderMap;
use chrono::Duration;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use std::sync::Arc;

pub mod account;
pub mod agency;
pub mod app_webhooks;
pub mod client;
pub mod events;

use crate::providers::presets::GOHIGHLEVEL as NAME;

pub struct GoHighLevel;

impl Platform<App> for GoHighLevel {
    fn name(&self) -> &'static str {
        NAME
    }

    /// A location token minted from an agency came without a refresh token:
    /// it is minted again from that agency.
    fn minted_from(
        &self,
        provider: &Provider,
        row: &Connection,
        tokens: &TokenSet,
    ) -> Option<AccountId> {
        if !provider.location_tokens || tokens.refresh_token.is_some() {
            return None;
        }
        Account::of(&row.metadata()).agency
    }

    /// A minted location token is minted again; any other is refreshed
    /// with `user_type` set to the stored token's own type, as the token
    /// endpoint takes it (a company's token refreshed as a location's would
    /// be refused).
    fn renew<'a>(
        &'a self,
        http: &'a reqwest::Client,
        provider: &'a Provider,
        due: Due<'a>,
    ) -> Option<BoxFuture<'a, Answer>> {
        if self.minted_from(provider, due.row, due.tokens).is_some() {
            return Some(remint(http, provider, due).boxed());
        }
        let user_type = Account::of(&due.row.metadata()).user_type;
        let refresh_token = due
            .tokens
            .refresh_token
            .as_ref()
            .map(|t| t.expose().clone());
        Some(
            async move {
                let extra: Vec<(&str, &str)> = user_type
                    .as_deref()
                    .map(|t| ("user_type", t))
                    .into_iter()
                    .collect();
                oauth_client::refresh(http, provider, refresh_token.as_deref(), &extra).await
            }
            .boxed(),
        )
    }

    fn app_webhook<'a>(
        &'a self,
        app: &'a Arc<App>,
        body: &'a [u8],
        headers: &'a HeaderMap,
    ) -> Option<BoxFuture<'a, crate::error::AppResult<Taken>>> {
        Some(app_webhooks::take(app, body, headers).boxed())
    }

    fn ensure_account<'a>(
        &'a self,
        app: &'a Arc<App>,
        tenant: &'a TenantId,
        provider: &'a Provider,
        account: &'a AccountId,
    ) -> Option<BoxFuture<'a, crate::error::AppResult<()>>> {
        Some(agency::ensure_location(app, tenant, provider, account).boxed())
    }

    fn locations<'a>(
        &'a self,
        app: &'a Arc<App>,
        tenant: &'a TenantId,
        provider: &'a Provider,
    ) -> Option<BoxFuture<'a, crate::error::AppResult<Vec<Location>>>> {
        Some(agency::installed_locations(app, tenant, provider).boxed())
    }

    fn refused_in_production(&self, provider: &Provider) -> Option<String> {
        (provider.app_id.is_none() && provider.webhook_key.is_some()).then(|| {
            "TETHER_GOHIGHLEVEL_APP_ID is required in production: GoHighLevel signs every Marketplace app's webhooks with one key, so without it another app's signed events (an UNINSTALL among them) would be taken as this app's".to_string()
        })
    }

    fn warnings(&self, provider: &Provider, base_url: &str) -> Vec<String> {
        if provider.app_id.is_some() {
            return Vec::new();
        }
        vec![format!(
            "TETHER_GOHIGHLEVEL_APP_ID is unset, so app webhooks of any Marketplace app signed by GoHighLevel are taken at {base_url}/webhooks/{NAME}"
        )]
    }

    fn workers(&self, app: &Arc<App>) -> Vec<Worker> {
        let minting = app
            .providers
            .all()
            .any(|p| p.enabled() && p.location_tokens && p.platform.as_deref() == Some(NAME));
        if !minting {
            return Vec::new();
        }
        vec![Worker {
            name: "location minter",
            work: agency::mint_approved_forever(app.clone()).boxed_local(),
        }]
    }
}

/// Mints a location's token again from the agency connection that minted
/// it, with the agency's stored token (the scheduler keeps that one fresh;
/// while it is due, this waits and is retried).
async fn remint(http: &reqwest::Client, provider: &Provider, due: Due<'_>) -> Answer {
    let gone = || ProviderError::GrantGone {
        error: "the agency connection that minted this location's token is gone".into(),
    };
    let (agency, tokens) = due
        .parent
        .filter(|(agency, _)| agency.status() != Status::NeedsReconnect)
        .ok_or_else(gone)?;
    if agency
        .expires_at
        .is_some_and(|exp| exp <= now() + Duration::seconds(5))
    {
        return Err(ProviderError::Transient {
            detail: "the agency's token is due for its own refresh first".into(),
            retry_after: Some(30),
            throttled: false,
        });
    }
    let company = Account::of(&due.row.metadata())
        .company_id
        .unwrap_or_else(|| agency.account_id.clone());
    client::mint_location_token(
        http,
        provider,
        tokens.access_token.expose(),
        &company,
        &due.row.account_id,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `tether doctor` hears, through the seam, that app webhooks of any
    /// app are taken while no app id is set, and nothing once one is.
    #[test]
    fn doctor_is_warned_while_no_app_id_is_set() {
        let mut provider = crate::providers::presets::all()
            .into_iter()
            .find(|p| p.key.as_str() == NAME)
            .unwrap();
        let warnings = GoHighLevel.warnings(&provider, "https://t.example");
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("TETHER_GOHIGHLEVEL_APP_ID is unset")
                && warnings[0].contains("https://t.example/webhooks/gohighlevel"),
            "{warnings:?}"
        );
        provider.app_id = Some("64f0a1b2c3".into());
        assert!(GoHighLevel
            .warnings(&provider, "https://t.example")
            .is_empty());
    }
}
