//! Which account a request means, the tenant's default account, and
//! disconnecting one.

use crate::app::App;
use crate::db::models::connection::{unknown_account, Connection, Kind};
use crate::db::models::event::{Actor, EventKind, NewEvent};
use crate::error::{AppError, AppResult};
use crate::ids::{AccountId, ProviderKey, TenantId};
use crate::oauth;
use crate::providers::Provider;
use std::sync::Arc;

/// The tenant's connected account of the provider (the named one, else the
/// default), or a 404 that says which of the two is missing.
pub async fn connection(
    app: &App,
    tenant_id: &TenantId,
    provider: &ProviderKey,
    account: Option<&AccountId>,
) -> AppResult<Connection> {
    let (t, p, a) = (tenant_id.clone(), provider.clone(), account.cloned());
    app.db(move |c| {
        Connection::lookup(c, &t, &p, a.as_ref())?
            .filter(|c| c.has_tokens())
            .ok_or_else(|| match a {
                None => AppError::not_connected(),
                Some(_) => unknown_account(),
            })
    })
    .await
}

/// Refreshes the tenant's account of `provider` (`None`: the default) now,
/// sharing any refresh already under way; returns the refreshed row. Within
/// `TETHER_FORCED_REFRESH_COOLDOWN_SECS` of its last successful refresh the
/// row is answered as it is: a loop of forced refreshes would otherwise
/// spend the provider's per-user token quota (and earn 429s) for nothing.
pub async fn refresh(
    app: &Arc<App>,
    tenant_id: &TenantId,
    provider: &Provider,
    account: Option<&AccountId>,
    actor: &Actor,
) -> AppResult<Connection> {
    let row = connection(app, tenant_id, &provider.key, account).await?;
    // Only what could be refreshed cools down: the others' refusal
    // (`not_refreshable`) is said at once.
    let refreshable =
        row.kind == Kind::OAuth && provider.refresh != crate::providers::RefreshStyle::None;
    if refreshable && refreshed_lately(&row, app.settings.refresh.forced_cooldown) {
        log::debug!(
            "forced refresh answered without a call: refreshed moments ago connection={}",
            row.id
        );
        return Ok(row);
    }
    crate::refresh::refresh_now(app, &row.id, actor, None).await
}

/// Whether `row` was last refreshed (or connected) within `cooldown`.
fn refreshed_lately(row: &Connection, cooldown: std::time::Duration) -> bool {
    let Ok(cooldown) = chrono::Duration::from_std(cooldown) else {
        return false;
    };
    !cooldown.is_zero()
        && row
            .last_refreshed_at
            .is_some_and(|at| crate::db::now() < at + cooldown)
}

/// Makes the tenant's connected `account` of `provider` its default.
pub async fn choose_default(
    app: &App,
    tenant_id: &TenantId,
    provider: &Provider,
    account: &AccountId,
    actor: &Actor,
) -> AppResult<Connection> {
    let target = connection(app, tenant_id, &provider.key, Some(account)).await?;
    let id = target.id.clone();
    let chosen = app.db(move |c| Connection::make_default(c, &id)).await?;
    app.tokens.forget(tenant_id, &provider.key);
    log::info!(
        "default account changed tenant={tenant_id} provider={} connection={} actor={actor}",
        provider.key,
        chosen.id
    );
    Ok(chosen)
}

/// What became of the grant at the provider when a connection was disconnected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    /// The provider revoked it (RFC 7009).
    Revoked,
    /// The provider offers no revocation endpoint.
    NotOffered,
    /// The provider did not confirm; why.
    Failed(String),
    /// The stored tokens no longer open (a lost key, a damaged row): nothing
    /// could be sent to revoke.
    Unopenable,
}

/// What a disconnect did.
pub struct Disconnected {
    /// For the person: revoked or not, and what to do.
    pub message: String,
    /// The provider account id that was disconnected.
    pub account_id: AccountId,
    pub revocation: Revocation,
    /// The default account afterwards; `None`: the provider is not connected.
    pub default: Option<Connection>,
}

/// Revokes at the provider where it can (RFC 7009), then erases the tokens,
/// even when revocation fails. `account` names the account (`None`: the
/// default); when the default goes, the earliest-connected other account
/// becomes the default (see [`Connection::erase`]).
pub async fn disconnect(
    app: &App,
    tenant_id: &TenantId,
    provider: &Provider,
    account: Option<&AccountId>,
    actor: &Actor,
) -> AppResult<Disconnected> {
    let connection = connection(app, tenant_id, &provider.key, account).await?;
    // Sealed with a key another instance has and this one lacks: that
    // instance can revoke the grant; erasing it unrevoked here cannot be undone.
    if let Err(e @ crate::crypto::CryptoError::UnknownKey(_)) = connection.tokens(&app.keys) {
        return Err(e.into());
    }
    let revocation = revoke(app, provider, &connection).await;
    let (name, label) = (&provider.display_name, connection.label());
    let outcome = match &revocation {
        _ if connection.kind == Kind::PrivateToken => format!(
            "Disconnected {name} ({label}) and forgot its private token, which works at {name} until you delete it there."
        ),
        Revocation::Revoked => {
            format!("Disconnected {name} ({label}); the provider revoked the access.")
        }
        Revocation::NotOffered => format!(
            "Disconnected {name} ({label}). It offers no way to revoke access from here: remove Tether in your {name} account settings too."
        ),
        Revocation::Failed(_) | Revocation::Unopenable => format!(
            "Disconnected {name} ({label}) and erased its tokens, but the provider did not confirm the revocation: remove Tether in your {name} account settings too."
        ),
    };
    let detail = match &revocation {
        Revocation::Failed(why) => Some(format!("revocation failed: {why}")),
        Revocation::Unopenable => {
            Some("revocation failed: the stored tokens could not be decrypted".to_string())
        }
        Revocation::Revoked | Revocation::NotOffered => None,
    };
    let (id, t, p, actor) = (
        connection.id.clone(),
        connection.tenant_id.clone(),
        provider.key.clone(),
        actor.clone(),
    );
    let was_revoked = revocation == Revocation::Revoked;
    let notify = app.settings.webhook.is_some();
    let default = app
        .db(move |c| {
            let default = Connection::erase(c, &id)?;
            let event = NewEvent {
                tenant_id: &t,
                connection_id: Some(&id),
                provider: &p,
                kind: EventKind::Revoked,
                actor: &actor,
                detail: None,
            };
            if was_revoked {
                crate::db::models::webhook::record(c, notify, &event)?;
            }
            crate::db::models::webhook::record(
                c,
                notify,
                &NewEvent {
                    kind: EventKind::Disconnected,
                    detail: detail.as_deref(),
                    ..event
                },
            )?;
            Ok(default)
        })
        .await?;
    app.tokens.forget(&connection.tenant_id, &provider.key);
    log::info!(
        "disconnected tenant={} provider={} connection={}",
        connection.tenant_id,
        provider.key,
        connection.id
    );
    let message = match (&default, connection.is_default) {
        (Some(d), true) => format!("{outcome} {} is now the default account.", d.label()),
        _ => outcome,
    };
    Ok(Disconnected {
        message,
        account_id: connection.account_id,
        revocation,
        default,
    })
}

/// Asks the provider to revoke the connection's grant: its refresh token
/// where it has one, else its access token.
pub async fn revoke(app: &App, provider: &Provider, connection: &Connection) -> Revocation {
    if connection.kind == Kind::PrivateToken {
        // Not Tether's grant: only its owner deletes it, at the provider.
        return Revocation::NotOffered;
    }
    match connection.tokens(&app.keys) {
        Ok(Some(tokens)) => {
            let (token, hint) = match &tokens.refresh_token {
                Some(rt) => (rt.expose().clone(), "refresh_token"),
                None => (tokens.access_token.expose().clone(), "access_token"),
            };
            match oauth::client::revoke(&app.http, provider, &token, hint).await {
                Ok(true) => Revocation::Revoked,
                Ok(false) => Revocation::NotOffered,
                Err(e) => {
                    log::warn!(
                        "revocation failed provider={} connection={}: {e}",
                        provider.key,
                        connection.id
                    );
                    Revocation::Failed(e.to_string())
                }
            }
        }
        Ok(None) => Revocation::NotOffered,
        Err(e) => {
            log::warn!(
                "revocation failed provider={} connection={}: its tokens do not open ({e}); erasing without revocation",
                provider.key,
                connection.id
            );
            Revocation::Unopenable
        }
    }
}
