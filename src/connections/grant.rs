//! The one door for a grant. Every way a token set arrives (a callback, a
//! provider-signed install, a Marketplace install for the tenant that holds
//! the account, a claimed or assigned install, a location minted from its
//! agency, an import) is saved here: sealed into the connection, checked
//! against the account-holder rule, recorded as an event in the same
//! transaction, and every cache of the tenant's tokens cleared. App events
//! held for the account are relayed to its new holder.

use crate::app::held::HeldGrant;
use crate::app::App;
use crate::config::Settings;
use crate::crypto::KeyRing;
use crate::db::models::connection::{self, Connection, Kind};
use crate::db::models::event::{Actor, EventKind, NewEvent};
use crate::db::{now, DbConn};
use crate::error::{AppError, AppResult, Code};
use crate::ids::{Tags, TenantId};
use crate::oauth::{token, Authorized};
use crate::providers::{Provider, RefreshStyle};
use chrono::Duration;
use diesel::Connection as _;
use std::sync::Arc;

/// How a grant arrived: which holder rule applies, and when it is refreshed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// The authorization-code callback of a connect the tenant started.
    Callback,
    /// A provider-signed install (Wix): refused when another tenant holds
    /// the account's tokens.
    SignedInstall,
    /// A Marketplace install for the tenant holding the account.
    Reinstall,
    /// A held install claimed or assigned: refused when the account is
    /// held by another tenant.
    Claim,
    /// A location's token minted from the tenant's agency.
    Mint,
    /// Tokens the CRM kept itself; `due`: refresh them at once (expired or
    /// within the refresh margin).
    Import { due: bool },
    /// A private token (`connections::private_token`), checked against the
    /// account lookup: refused over a live OAuth grant of the account.
    PrivateToken,
}

/// A grant on its way in.
pub struct NewGrant {
    pub provider: Arc<Provider>,
    pub tenant: TenantId,
    pub authorized: Authorized,
    pub actor: Actor,
    pub arrival: Arrival,
    /// The CRM's tags of the connect (a connect link's): stored with the
    /// connection when given; `None` keeps what the connection has.
    pub tags: Option<Tags>,
}

/// The account is bound to another tenant.
pub fn bound_elsewhere(provider: &Provider) -> AppError {
    AppError::conflict(
        Code::AccountBoundElsewhere,
        format!(
            "This {} account is connected to another business in the CRM. Disconnect it there first, or ask the CRM's support to move it.",
            provider.display_name
        ),
    )
}

/// A private token refused over an OAuth grant of the account.
fn over_oauth(provider: &Provider, account: &crate::ids::AccountId) -> AppError {
    AppError::conflict(
        Code::OauthConnected,
        format!(
            "{account} is connected to {} through OAuth, which Tether keeps fresh; a private token would replace it. Disconnect it first if that is what you want.",
            provider.display_name
        ),
    )
}

/// The account-holder rule. Where an account is a business (the
/// provider's `one_holder`), and for any grant that arrived without the
/// tenant's own connect (a signed install, a claimed or assigned install),
/// the account is held by one tenant at most: the one holding its tokens.
/// A tenant that disconnected holds nothing. Called first in the grant's
/// transaction, which from then on is the only one storing this account.
fn check_holder(c: &mut DbConn, grant: &NewGrant) -> AppResult<()> {
    let (key, account) = (&grant.provider.key, &grant.authorized.account_id);
    // Taken for every arrival, before any read: on SQLite a transaction
    // that reads and then writes fails when another connection wrote in
    // between; and the account's app events wait for the grant that
    // releases them (connections::relay).
    crate::db::lock_for_write(c, &format!("account {key} {account}"))?;
    let applies = grant.provider.one_holder
        || matches!(grant.arrival, Arrival::SignedInstall | Arrival::Claim);
    if !applies {
        return Ok(());
    }
    match Connection::holder(c, key, account)? {
        Some(holder) if holder != grant.tenant => Err(bound_elsewhere(&grant.provider)),
        _ => Ok(()),
    }
}

/// Stores a grant within the caller's database work (a claim takes its
/// install in the same transaction). Returns the connection and whether it
/// replaced tokens the tenant held for the account. The caller clears the
/// caches once its work is committed ([`stored`]).
pub fn store(
    c: &mut DbConn,
    ring: &KeyRing,
    settings: &Settings,
    grant: &NewGrant,
) -> AppResult<(Connection, bool)> {
    c.transaction(|c| store_checked(c, ring, settings, grant))
}

fn store_checked(
    c: &mut DbConn,
    ring: &KeyRing,
    settings: &Settings,
    grant: &NewGrant,
) -> AppResult<(Connection, bool)> {
    check_holder(c, grant)?;
    let (provider, auth) = (&grant.provider, &grant.authorized);
    let t = now();
    let before = Connection::find(c, &grant.tenant, &provider.key, &auth.account_id)?
        .filter(Connection::has_tokens);
    let kind = match grant.arrival {
        Arrival::PrivateToken => Kind::PrivateToken,
        _ => Kind::OAuth,
    };
    if kind == Kind::PrivateToken && before.as_ref().is_some_and(|b| b.kind == Kind::OAuth) {
        return Err(over_oauth(provider, &auth.account_id));
    }
    let existed = before.is_some();
    let due = matches!(grant.arrival, Arrival::Import { due: true });
    let next_refresh_at = match (auth.response.expires_in, provider.refresh) {
        (_, RefreshStyle::None) | (None, _) => None,
        _ if due => Some(t),
        (Some(lifetime), _) => Some(token::next_refresh_at(
            t,
            lifetime,
            settings.refresh.margin.as_secs() as i64,
        )),
    };
    let refresh_expires_at = provider
        .refresh_token_lifetime_days
        .filter(|_| auth.response.tokens.refresh_token.is_some())
        .map(|days| t + Duration::days(days));
    let parent = provider.parent_of(&auth.metadata);
    let connection = Connection::store_grant(
        c,
        ring,
        &connection::Grant {
            tenant_id: &grant.tenant,
            provider: &provider.key,
            account_id: &auth.account_id,
            account_name: auth.account_name.as_deref(),
            scopes: &auth.scopes,
            tokens: &auth.response.tokens,
            expires_at: auth.response.expires_at(t),
            refresh_expires_at,
            next_refresh_at,
            metadata: &auth.metadata,
            parent_account_id: parent.as_ref(),
            tags: grant.tags.as_ref(),
            kind,
        },
    )?;
    let kind = if existed {
        EventKind::Reconnected
    } else {
        EventKind::Connected
    };
    crate::db::models::webhook::record(
        c,
        settings.webhook.is_some(),
        &NewEvent {
            tenant_id: &grant.tenant,
            connection_id: Some(&connection.id),
            provider: &provider.key,
            kind,
            actor: &grant.actor,
            detail: Some(auth.account_name.as_deref().unwrap_or(&auth.account_id)),
        },
    )?;
    // The account's app events held for whoever came to hold it.
    super::relay::release_held(c, &connection)?;
    Ok((connection, existed))
}

/// After a grant was stored and committed: no cache serves the tenant's
/// earlier tokens of the provider.
pub fn stored(app: &App, connection: &Connection) {
    app.tokens
        .forget(&connection.tenant_id, &connection.provider);
    // Its event, and app events held for the account, go out now.
    app.deliver_now.notify_one();
    log::info!(
        "stored a grant tenant={} provider={} connection={}",
        connection.tenant_id,
        connection.provider,
        connection.id
    );
}

/// Saves a grant. The provider has answered, so a grant the database
/// cannot take now is kept and stored as soon as it can (a process that
/// stops first loses it, and the person connects again).
pub async fn save(app: &App, grant: NewGrant) -> AppResult<(Connection, bool)> {
    let grant = Arc::new(grant);
    let saving = {
        let (keys, settings, grant) = (app.keys.clone(), app.settings.clone(), grant.clone());
        app.db(move |c| store(c, &keys, &settings, &grant)).await
    };
    match saving {
        Ok((connection, replaced)) => {
            stored(app, &connection);
            Ok((connection, replaced))
        }
        Err(e) if e.is(Code::DatabaseUnavailable) => {
            let (keys, settings, provider) = (
                app.keys.clone(),
                app.settings.clone(),
                grant.provider.display_name.clone(),
            );
            app.held.hold_grant(HeldGrant {
                tenant_id: grant.tenant.clone(),
                provider: grant.provider.key.clone(),
                what: format!("account {}", grant.authorized.account_id),
                save: Box::new(move |c| store(c, &keys, &settings, &grant).map(|_| ())),
            });
            Err(AppError::unavailable(
                Code::DatabaseUnavailable,
                format!(
                    "{provider} accepted, but Tether's database did not answer. Tether keeps the new connection and stores it as soon as the database is back, usually within seconds; it then shows here."
                ),
                crate::error::DATABASE_RETRY_AFTER_SECS,
            ))
        }
        Err(e) => Err(e),
    }
}
