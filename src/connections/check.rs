//! Checking a connection with its provider now: the provider's account
//! lookup (the one a connect names the account with) asked with the stored
//! access token, and what it says. A check changes nothing, unless the
//! provider says the grant is gone.
//!
//! A lookup that refuses the access token (a 401) does not tell an access
//! token that lapsed early (rotated, cut short by the provider, past its
//! expiry) from a revoked grant. Where the connection can be refreshed, the
//! refresh tells them apart, through the one refresh path: a refresh the
//! provider refuses (`invalid_grant`) marks the connection
//! `needs_reconnect` with its event, as any refresh would; one that works
//! stores the new tokens, as any refresh would, and the lookup is asked
//! again with them. Where it cannot be refreshed (a private token, a
//! provider whose tokens do not expire), the refused token is the grant:
//! the connection is marked `needs_reconnect`, with its event.

use super::manage;
use crate::app::App;
use crate::db::models::connection::{Connection, Kind, Status};
use crate::db::models::event::{Actor, EventKind, NewEvent};
use crate::db::now;
use crate::error::{AppError, AppResult, Code};
use crate::ids::{AccountId, TenantId};
use crate::oauth::client::ProviderError;
use crate::oauth::{self, Verdict};
use crate::providers::{Provider, RefreshStyle};
use crate::refresh::{self, Seen};
use chrono::NaiveDateTime;
use diesel::Connection as _;
use std::sync::Arc;

/// What a check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The provider accepts the token (after a refresh, if the first one
    /// had lapsed).
    Valid,
    /// The provider no longer accepts the grant: the connection needs
    /// reconnecting (it is marked so, if it was not yet).
    Revoked,
    /// The provider answered without vouching for the token or saying the
    /// grant is gone (a 403, a refused lookup, a token that refreshes but is
    /// still refused): nothing changed.
    Refused,
    /// No answer to judge by (the provider is down, slow or throttling), or
    /// the refresh that would have told a lapsed token from a revoked grant
    /// failed for now: nothing changed beyond what a failed refresh records.
    Unreachable,
}

/// What a check found, and the connection afterwards.
#[derive(Debug)]
pub struct Checked {
    pub outcome: Outcome,
    /// The account as the provider names it now (when it accepts the token).
    pub account_id: Option<AccountId>,
    pub account_name: Option<String>,
    /// Whether that is the connection's account; `None` when the provider
    /// accepted the token without naming one, or did not accept it.
    pub same_account: Option<bool>,
    /// Whether a refresh ran to tell a lapsed token from a revoked grant.
    pub refreshed: bool,
    /// For a person: what was found and what to do.
    pub message: String,
    /// The connection after the check.
    pub connection: Connection,
    pub checked_at: NaiveDateTime,
}

/// The refusal of a check that cannot be made.
fn no_lookup(provider: &Provider) -> AppError {
    AppError::conflict(
        Code::NoIdentityLookup,
        format!(
            "{} has no account lookup Tether can ask for this account, so its token cannot be checked; a refresh (POST .../refresh) shows whether the grant still holds",
            provider.display_name
        ),
    )
}

/// Checks the tenant's account of `provider` (`None`: the default) with
/// the provider now; see the module's documentation for what it may change.
pub async fn check(
    app: &Arc<App>,
    tenant_id: &TenantId,
    provider: &Arc<Provider>,
    account: Option<&AccountId>,
    actor: &Actor,
) -> AppResult<Checked> {
    if provider.userinfo_url.is_none() {
        return Err(no_lookup(provider));
    }
    let row = manage::connection(app, tenant_id, &provider.key, account).await?;
    // An answer held until the database takes it is the current token set.
    let row = app.held.row_of(&row.id).unwrap_or(row);
    let verdict = ask(app, provider, &row).await?;
    let Verdict::NotAccepted(refusal) = verdict else {
        return Ok(found(provider, row, verdict, false));
    };
    if row.status() == Status::NeedsReconnect {
        return Ok(revoked(provider, row, false));
    }
    if !renewable(provider, &row) {
        let row = mark_revoked(app, &row, actor, &refusal).await?;
        return Ok(revoked(provider, row, false));
    }
    match refresh::refresh_now(app, &row.id, actor, Some(Seen::of(&row))).await {
        Ok(fresh) => {
            let verdict = ask(app, provider, &fresh).await?;
            Ok(found(provider, fresh, verdict, true))
        }
        Err(e) if e.is(Code::NeedsReconnect) => {
            let id = row.id.clone();
            let row = app.db(move |c| Ok(Connection::by_id(c, &id)?)).await?;
            Ok(revoked(provider, row, true))
        }
        Err(e) => {
            let id = row.id.clone();
            let row = app.db(move |c| Ok(Connection::by_id(c, &id)?)).await?;
            Ok(unconfirmed(provider, row, &e))
        }
    }
}

/// Whether a refused access token can be renewed without a person: an
/// OAuth grant of a provider whose tokens are refreshed (or minted again).
fn renewable(provider: &Provider, row: &Connection) -> bool {
    row.kind == Kind::OAuth && provider.refresh != RefreshStyle::None
}

/// The provider's lookup asked with the connection's access token, its URL
/// filled from the stored token response, else the connection's metadata.
async fn ask(app: &App, provider: &Provider, row: &Connection) -> AppResult<Verdict> {
    let tokens = row.tokens(&app.keys)?.ok_or_else(AppError::not_connected)?;
    let mut fields = match row.metadata() {
        serde_json::Value::Object(m) => m,
        _ => serde_json::Map::new(),
    };
    if let serde_json::Value::Object(raw) = tokens.raw.expose() {
        fields.extend(raw.clone());
    }
    let fields = serde_json::Value::Object(fields);
    let token = tokens.access_token.expose();
    oauth::verify_access(&app.http, provider, token, &fields)
        .await
        .ok_or_else(|| no_lookup(provider))
}

/// What a check found, from the lookup's `verdict` on `row`'s token.
fn found(provider: &Provider, row: Connection, verdict: Verdict, refreshed: bool) -> Checked {
    let name = &provider.display_name;
    let label = row.label().to_string();
    let refused = |why: &str| {
        let message =
            format!("{name} refused the account lookup for {label} ({why}). Nothing was changed.");
        (Outcome::Refused, None, None, None, message)
    };
    let (outcome, account_id, account_name, same_account, message) = match verdict {
        Verdict::Accepted {
            account_id,
            account_name,
        } => {
            let same = account_id.as_ref().map(|id| *id == row.account_id);
            let message = match (&account_id, same) {
                (Some(named), Some(false)) => format!(
                    "{name} accepts the token, but names account {named} where the connection is {}'s. Nothing was changed.",
                    row.account_id
                ),
                _ if refreshed => format!(
                    "{name} accepts the token of {label} after a refresh (the access token had lapsed)."
                ),
                _ => format!("{name} accepts the token of {label}."),
            };
            (Outcome::Valid, account_id, account_name, same, message)
        }
        Verdict::Refused(why) => refused(&why),
        // Only after a refresh worked (see `check`): what the lookup
        // refuses is not the grant.
        Verdict::NotAccepted(e) => refused(&format!(
            "the grant refreshes, but the lookup refuses its new token too: {e}"
        )),
        Verdict::Unreachable(e) => (
            Outcome::Unreachable,
            None,
            None,
            None,
            format!(
                "{name} gave no answer to judge the token of {label} by ({e}). Nothing was changed; check again later."
            ),
        ),
    };
    Checked {
        outcome,
        account_id,
        account_name,
        same_account,
        refreshed,
        message,
        connection: row,
        checked_at: now(),
    }
}

/// A check whose refused token could not be judged: the refresh that would
/// have told a lapsed token from a revoked grant failed for now (and was
/// recorded as any failed refresh is).
fn unconfirmed(provider: &Provider, row: Connection, e: &AppError) -> Checked {
    let message = format!(
        "{} refused the access token of {}, and the refresh that would tell a lapsed token from a revoked grant failed for now ({}). Check again later.",
        provider.display_name,
        row.label(),
        e.message()
    );
    Checked {
        outcome: Outcome::Unreachable,
        account_id: None,
        account_name: None,
        same_account: None,
        refreshed: true,
        message,
        connection: row,
        checked_at: now(),
    }
}

/// A check that found the grant gone (`refreshed`: by a refresh).
fn revoked(provider: &Provider, row: Connection, refreshed: bool) -> Checked {
    let message = format!(
        "{} no longer accepts the connection of {}: a person has to reconnect it.",
        provider.display_name,
        row.label()
    );
    Checked {
        outcome: Outcome::Revoked,
        account_id: None,
        account_name: None,
        same_account: None,
        refreshed,
        message,
        connection: row,
        checked_at: now(),
    }
}

/// Marks a connection that cannot be renewed `needs_reconnect` after the
/// provider refused its token, with its event, under its refresh lease (so
/// that nothing else writes the row meanwhile), unless the row moved on
/// since the token was read. Returns the row afterwards.
async fn mark_revoked(
    app: &App,
    row: &Connection,
    actor: &Actor,
    refusal: &ProviderError,
) -> AppResult<Connection> {
    let detail = format!(
        "a check found the token refused by the provider's account lookup ({refusal}); it cannot be renewed without a person"
    );
    let (seen, owner) = (Seen::of(row), refresh::lease_owner(app));
    let lease = chrono::Duration::from_std(app.settings.refresh.lease)
        .unwrap_or(chrono::Duration::seconds(20));
    let (id, takeover) = (row.id.clone(), refresh::takeover(app));
    let (actor, notify) = (actor.clone(), app.settings.webhook.is_some());
    let marked = app
        .db(move |c| {
            let Some(leased) = Connection::claim(c, &id, &owner, now() + lease, &takeover)? else {
                return Ok(None);
            };
            if Seen::of(&leased) != seen {
                Connection::release(c, &id, &owner)?;
                return Ok(None);
            }
            c.transaction(|c| {
                let status = Status::NeedsReconnect;
                Connection::record_failure(c, &leased, &owner, status, &detail, None)?;
                crate::db::models::webhook::record(
                    c,
                    notify,
                    &NewEvent {
                        tenant_id: &leased.tenant_id,
                        connection_id: Some(&leased.id),
                        provider: &leased.provider,
                        kind: EventKind::NeedsReconnect,
                        actor: &actor,
                        detail: Some(&detail),
                    },
                )?;
                Ok::<_, AppError>(())
            })?;
            Ok(Some(Connection::by_id(c, &id)?))
        })
        .await?;
    app.tokens.forget(&row.tenant_id, &row.provider);
    if marked.is_some() {
        log::warn!(
            "check: the provider refused a token that cannot be renewed; needs_reconnect tenant={} provider={} connection={}",
            row.tenant_id,
            row.provider,
            row.id
        );
    }
    marked.ok_or_else(|| {
        AppError::conflict(
            Code::ConcurrentUpdate,
            "the connection changed while it was checked (a refresh or a reconnect): check it again",
        )
    })
}
