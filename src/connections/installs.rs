//! Installs that start at the provider (GoHighLevel's Marketplace): the
//! callback carries a code and no state, so no tenant. The grant goes to the
//! tenant holding the account's tokens (a disconnected tenant holds
//! nothing), or is held unassigned (sealed like a
//! connection) for a day, until a signed-in admin claims it or the CRM
//! assigns it; then it is revoked and dropped.

use super::grant::{self, Arrival, NewGrant};
use crate::app::App;
use crate::db::models::connection::Connection;
use crate::db::models::event::Actor;
use crate::db::models::pending_install::{NewInstall, PendingInstall};
use crate::db::models::tenant::Tenant;
use crate::error::{AppError, AppResult, Code};
use crate::ids::TenantId;
use crate::oauth::token::TokenResponse;
use crate::oauth::Authorized;
use crate::providers::Provider;
use chrono::Duration;
use diesel::Connection as _;
use std::sync::Arc;

/// How long an unclaimed install is held.
pub const HOLD: Duration = Duration::hours(24);

/// Installs swept per round (a round repeats while it finds a full batch).
const SWEEP_BATCH: i64 = 100;

/// What became of an install that reached the callback.
#[derive(Debug)]
pub enum Received {
    /// A tenant holds its account; its connection was refreshed.
    Refreshed { message: String },
    /// Held for a tenant to claim; `id` is kept in the installer's session
    /// only (whoever holds it may claim the install).
    Held { id: String, message: String },
}

/// The answer for an install id that is not (or no longer) held.
pub fn unknown_install() -> AppError {
    AppError::not_found_as(
        Code::UnknownInstall,
        "no unclaimed install with that id: it was claimed, replaced by a newer install, or it expired (install the app from the Marketplace again)",
    )
}

/// Exchanges a state-less callback's code (for a provider that declares
/// provider-initiated installs) and routes the grant: to the tenant holding
/// the account's live tokens when the install is that tenant's own
/// re-authorisation (the same business as its grant names: the provider's
/// `parent_account`: the company a location belongs to), else held unassigned for a
/// signed-in claim or the CRM's assign.
pub async fn receive(app: &App, provider: Arc<Provider>, code: &str) -> AppResult<Received> {
    if !provider.provider_initiated_installs {
        return Err(AppError::bad_request(
            Code::InvalidState,
            "This sign-in link is not valid (no state). Start again from the integrations page.",
        ));
    }
    let redirect_uri = app.settings.redirect_uri(&provider.key);
    // No verifier: the preset has PKCE off, and the catalogue refuses
    // provider-initiated installs with PKCE on.
    let authorized = super::connect::exchange(app, &provider, &redirect_uri, code, None).await?;
    let held_by = {
        let (p, a) = (provider.key.clone(), authorized.account_id.clone());
        app.db(move |c| {
            let Some(tenant) = Connection::holder(c, &p, &a)? else {
                return Ok(None);
            };
            Ok(Connection::find(c, &tenant, &p, &a)?.map(|row| (tenant, row)))
        })
        .await?
    };
    let business = provider.parent_of(&authorized.metadata);
    let bound = held_by.and_then(|(tenant, row)| {
        let own = business.is_some() && provider.parent_of(&row.metadata()) == business;
        if !own {
            log::info!(
                "install of {} account {} not routed to its holder tenant={tenant}: it does not re-authorise that grant's business; held for a claim",
                provider.key,
                authorized.account_id
            );
        }
        own.then_some(tenant)
    });
    let label = authorized
        .account_name
        .clone()
        .unwrap_or_else(|| authorized.account_id.to_string());
    if let Some(tenant_id) = bound {
        let actor = Actor::Provider {
            key: provider.key.to_string(),
        };
        let (connection, _) = grant::save(
            app,
            NewGrant {
                provider: provider.clone(),
                tenant: tenant_id,
                authorized,
                actor,
                arrival: Arrival::Reinstall,
                tags: None,
            },
        )
        .await?;
        let t = connection.tenant_id.clone();
        let tenant = app
            .db(move |c| Ok(Tenant::by_id(c, &t)?))
            .await?
            .map(|t| t.name)
            .unwrap_or_default();
        return Ok(Received::Refreshed {
            message: format!(
                "{} {label} is connected to {tenant}; its access was renewed.",
                provider.display_name
            ),
        });
    }
    let (keys, p) = (app.keys.clone(), provider.clone());
    let held = app
        .db(move |c| {
            let t = crate::db::now();
            Ok(PendingInstall::hold(
                c,
                &keys,
                &NewInstall {
                    provider: &p.key,
                    account_id: &authorized.account_id,
                    account_name: authorized.account_name.as_deref(),
                    scopes: &authorized.scopes,
                    metadata: &authorized.metadata,
                    parent_account_id: p.parent_of(&authorized.metadata).as_ref(),
                    tokens: &authorized.response.tokens,
                    token_expires_at: authorized.response.expires_at(t),
                    held_for: HOLD,
                },
            )?)
        })
        .await?;
    log::info!(
        "install held provider={} account={} install={}",
        provider.key,
        held.account_id,
        logged_id(&held.id)
    );
    Ok(Received::Held {
        message: format!(
            "{} {label} was installed. Choose the business in the CRM it belongs to.",
            provider.display_name
        ),
        id: held.id,
    })
}

/// The unclaimed install `id` of `provider`, for its claim page.
pub async fn preview(app: &App, provider: &Provider, id: String) -> AppResult<PendingInstall> {
    let key = provider.key.clone();
    app.db(move |c| {
        PendingInstall::by_id(c, &id)?
            .filter(|p| p.provider == key && p.expires_at > crate::db::now())
            .ok_or_else(unknown_install)
    })
    .await
}

/// Every unclaimed install, newest first (at most 500).
pub async fn unclaimed(app: &App) -> AppResult<Vec<PendingInstall>> {
    app.db(|c| Ok(PendingInstall::unclaimed(c, 500)?)).await
}

/// Claims the unclaimed install `id` for `tenant_id`: its grant becomes the
/// tenant's connection (as any saved grant, with its event), in one
/// transaction with the install's removal, so that exactly one claim wins.
/// `provider`: the install must be of it (`None`: any enabled provider).
/// Refused (409) when another tenant holds the account meanwhile.
pub async fn claim(
    app: &App,
    provider: Option<&Provider>,
    id: String,
    tenant_id: &TenantId,
    actor: &Actor,
) -> AppResult<Connection> {
    let install = app
        .db({
            let id = id.clone();
            move |c| PendingInstall::by_id(c, &id)?.ok_or_else(unknown_install)
        })
        .await?;
    if provider.is_some_and(|p| p.key != install.provider) {
        return Err(unknown_install());
    }
    let provider = app.enabled_provider(&install.provider)?;
    let (keys, settings, p, t, who) = (
        app.keys.clone(),
        app.settings.clone(),
        provider.clone(),
        tenant_id.clone(),
        actor.clone(),
    );
    let connection = app
        .db(move |c| {
            c.transaction(|c| {
                // Taken first: a concurrent claim waits on the row, then finds it gone.
                if !PendingInstall::take(c, &id)? || install.expires_at <= crate::db::now() {
                    return Err(unknown_install());
                }
                let claimed = NewGrant {
                    provider: p,
                    tenant: t,
                    authorized: reopen(&keys, &install)?,
                    actor: who,
                    arrival: Arrival::Claim,
                    tags: None,
                };
                Ok(grant::store(c, &keys, &settings, &claimed)?.0)
            })
        })
        .await?;
    grant::stored(app, &connection);
    log::info!(
        "install claimed provider={} tenant={} connection={} actor={actor}",
        provider.key,
        connection.tenant_id,
        connection.id
    );
    Ok(connection)
}

/// The held grant as a fresh authorization, its lifetime what is left of it.
fn reopen(keys: &crate::crypto::KeyRing, install: &PendingInstall) -> AppResult<Authorized> {
    let tokens = install.tokens(keys)?;
    let t = crate::db::now();
    let scopes = install.scopes();
    Ok(Authorized {
        response: TokenResponse {
            raw: tokens.raw.expose().clone(),
            tokens,
            expires_in: install
                .token_expires_at
                .map(|at| (at - t).num_seconds().max(0)),
            scopes: Some(scopes.clone()),
        },
        account_id: install.account_id.clone(),
        account_name: install.account_name.clone(),
        scopes,
        metadata: install.metadata(),
    })
}

/// What a sweep did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Swept {
    /// Unclaimed installs whose day was over, dropped.
    pub expired: usize,
    /// Of those, the ones the provider confirmed revoking.
    pub revoked: usize,
}

/// Drops the unclaimed installs whose day is over, revoking each at its
/// provider where it offers revocation, and forgets webhook ids whose
/// replay window has passed. Several instances may sweep at once: each
/// install is dropped (and revoked) by one of them only.
pub async fn sweep(app: &App) -> AppResult<Swept> {
    let mut swept = Swept::default();
    loop {
        let batch = app
            .db(|c| Ok(PendingInstall::expired(c, SWEEP_BATCH)?))
            .await?;
        let full = batch.len() as i64 == SWEEP_BATCH;
        let mut left = 0;
        for install in batch {
            // Sealed with a key this instance lacks: an instance that has it
            // revokes the grant when it sweeps; dropped here it could not be.
            if !app.keys.contains(&install.key_id) {
                left += 1;
                continue;
            }
            let id = install.id.clone();
            if !app.db(move |c| Ok(PendingInstall::take(c, &id)?)).await? {
                continue;
            }
            swept.expired += 1;
            if revoke(app, &install).await {
                swept.revoked += 1;
            }
        }
        // Another batch only when this one made room for it.
        if !full || left > 0 {
            break;
        }
    }
    let forgotten = app
        .db(|c| Ok(crate::db::models::seen_webhook::prune(c)?))
        .await?;
    if swept.expired > 0 {
        log::info!(
            "installs: {} unclaimed installs expired and were dropped ({} revoked at the provider)",
            swept.expired,
            swept.revoked
        );
    }
    log::debug!("installs: forgot {forgotten} webhook ids past their replay window");
    Ok(swept)
}

/// How an unclaimed install's id appears in a log line: an id is what an
/// all-tenants key (or the session it was put in) claims the install by, so
/// a line carries a digest of it instead (`sha256:` and 16 hex digits),
/// enough to match a line to the row (`sha256sum` of the id) and useless to
/// claim with.
pub fn logged_id(id: &str) -> String {
    let digest = crate::crypto::sha256_hex(id.as_bytes());
    format!("sha256:{}", &digest[..16])
}

/// Asks the provider to revoke a dropped install's grant; whether it did.
async fn revoke(app: &App, install: &PendingInstall) -> bool {
    let Some(provider) = app.providers.enabled(&install.provider) else {
        return false;
    };
    let tokens = match install.tokens(&app.keys) {
        Ok(t) => t,
        Err(e) => {
            log::warn!(
                "install {} does not open ({e}); dropped unrevoked",
                logged_id(&install.id)
            );
            return false;
        }
    };
    let (token, hint) = match &tokens.refresh_token {
        Some(rt) => (rt.expose().as_str(), "refresh_token"),
        None => (tokens.access_token.expose().as_str(), "access_token"),
    };
    match crate::oauth::client::revoke(&app.http, provider, token, hint).await {
        Ok(revoked) => revoked,
        Err(e) => {
            log::warn!(
                "revocation failed provider={} install={}: {e}",
                install.provider,
                logged_id(&install.id)
            );
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::logged_id;

    #[test]
    fn an_install_id_is_logged_as_a_digest_that_does_not_contain_it() {
        let id = "Zq3vK9x2LmP0aB7cD4eF6gH8iJ1kLmNo";
        let logged = logged_id(id);
        assert!(
            !logged.contains(id) && !logged.contains(&id[..8]),
            "{logged}"
        );
        assert_eq!(logged, logged_id(id), "the same id, the same digest");
        assert_ne!(logged, logged_id("another-install-id"));
        assert_eq!(
            logged,
            format!("sha256:{}", &crate::crypto::sha256_hex(id.as_bytes())[..16])
        );
    }
}
