//! Refreshing a connection whose lease we hold, phase by phase: check that
//! it may be sent and open the old tokens, confirm the lease, send the
//! renewal, then store the answer or classify and record the failure.

use super::failure::{classify, not_connected, outcome_of, shutting_down, Failure};
use super::keeper;
use crate::app::circuit::Ticket;
use crate::app::held;
use crate::app::App;
use crate::db::models::connection::{Connection, Kind, Refreshed, Status, TokenSet};
use crate::db::models::event::{Actor, NewEvent};
use crate::db::now;
use crate::error::{AppError, AppResult, Code};
use crate::ids::{AccountId, ProviderKey};
use crate::metrics::RefreshOutcome;
use crate::oauth::client::ProviderError;
use crate::oauth::token::{self, TokenResponse};
use crate::platform::{Answer, Due};
use crate::providers::{Provider, RefreshStyle};
use chrono::{Duration, NaiveDateTime};
use diesel::Connection as _;
use std::sync::Arc;
use tokio::sync::SemaphorePermit;

/// A connection whose lease we hold.
#[derive(Debug, Clone)]
pub struct Leased {
    pub row: Connection,
    pub owner: String,
}

pub(super) fn lease_until(state: &App) -> NaiveDateTime {
    now() + Duration::from_std(state.settings.refresh.lease).unwrap_or(Duration::seconds(20))
}

/// The lease taken just before a refresh token is sent: until the moment no
/// answer to that request can arrive any more (the provider timeout, plus a
/// little for committing the answer). A holder that dies mid-call is taken
/// over as soon as that moment passes.
fn sending_lease_until(state: &App) -> NaiveDateTime {
    now()
        + Duration::from_std(state.settings.refresh.provider_timeout)
            .unwrap_or(Duration::seconds(15))
        + Duration::seconds(SEND_GRACE_SECS)
}

/// Time after a provider call's deadline to commit its answer.
pub const SEND_GRACE_SECS: i64 = 5;

/// Refreshes a connection whose lease we hold, and releases the lease.
pub async fn refresh_leased(state: &App, leased: Leased, actor: &Actor) -> AppResult<Connection> {
    let Leased { row, owner } = leased;
    let Ready {
        provider,
        _sending,
        ticket,
        old,
    } = ready_to_send(state, &row, &owner).await?;
    // Last check before the refresh token leaves: we still hold the lease,
    // now until no answer to this call can come any more.
    {
        let (id, owner, until) = (row.id.clone(), owner.clone(), sending_lease_until(state));
        if !state
            .db(move |c| Ok(Connection::extend_lease(c, &id, &owner, until)?))
            .await?
        {
            return Err(AppError::conflict(
                Code::LeaseLost,
                "the refresh lease lapsed before the call; not sending",
            ));
        }
    }
    let started = std::time::Instant::now();
    let result = send(state, &provider, &row, &owner, &old).await?;
    let secs = started.elapsed().as_secs_f64();
    let ms = started.elapsed().as_millis();
    let (tenant_id, conn_id, provider_key) =
        (row.tenant_id.clone(), row.id.clone(), row.provider.clone());
    match result {
        Ok(response) => {
            ticket.success();
            state
                .metrics
                .refresh_outcome(&provider.key, RefreshOutcome::Ok, secs);
            let (tokens, refreshed) = renewed(state, &provider, &row, &old, response);
            log::info!("refreshed tenant={tenant_id} provider={provider_key} connection={conn_id} in {ms}ms");
            store_renewed(state, row, owner, &tokens, refreshed, actor.clone()).await
        }
        Err(e) => {
            log::warn!("refresh failed tenant={tenant_id} provider={provider_key} connection={conn_id} in {ms}ms: {e}");
            let failure = classify(&provider, &row, &e);
            state
                .metrics
                .refresh_outcome(&provider.key, failure.outcome, secs);
            judge_provider(state, &provider, &provider_key, ticket, &e);
            Err(record_failure(state, row, owner, actor.clone(), &e, failure).await?)
        }
    }
}

/// Releases our lease on `row` (whether that works or not) and returns `err`.
async fn release(state: &App, row: &Connection, owner: &str, err: AppError) -> AppError {
    let (id, owner) = (row.id.clone(), owner.to_string());
    let _ = state
        .db(move |c| Ok(Connection::release(c, &id, &owner)?))
        .await;
    err
}

/// What a refresh needs before it may send: the provider, a permit to send,
/// the provider's circuit breaker's leave, and the old tokens.
struct Ready<'a> {
    provider: Arc<Provider>,
    _sending: SemaphorePermit<'a>,
    ticket: Ticket<'a>,
    old: TokenSet,
}

/// Checks that `row` may be refreshed now and opens its old tokens; when it
/// may not, releases the lease and says why.
async fn ready_to_send<'a>(state: &'a App, row: &Connection, owner: &str) -> AppResult<Ready<'a>> {
    let Some(provider) = state.providers.shared(&row.provider).cloned() else {
        return Err(release(
            state,
            row,
            owner,
            AppError::not_found(format!("provider '{}' is not enabled", row.provider)),
        )
        .await);
    };
    if provider.refresh == RefreshStyle::None {
        return Err(release(
            state,
            row,
            owner,
            AppError::conflict(
                Code::NotRefreshable,
                format!(
                    "{} tokens do not expire and cannot be refreshed",
                    provider.display_name
                ),
            ),
        )
        .await);
    }
    if row.kind == Kind::PrivateToken {
        return Err(release(
            state,
            row,
            owner,
            AppError::conflict(
                Code::NotRefreshable,
                format!(
                    "{} is connected with a private token, which is never refreshed: replace it with a new one, or connect with OAuth",
                    row.label()
                ),
            ),
        )
        .await);
    }
    // Nothing new goes out once a shutdown is draining; the permit keeps the
    // shutdown waiting until this refresh's answer is committed.
    let _sending = match state.sending.try_acquire() {
        Ok(permit) if !state.is_draining() => permit,
        _ => return Err(release(state, row, owner, shutting_down()).await),
    };
    let ticket = match state.breakers.allow(&provider.key) {
        Ok(ticket) => ticket,
        Err(wait) => {
            state
                .metrics
                .refresh_outcome(&provider.key, RefreshOutcome::CircuitOpen, 0.0);
            let error = AppError::unavailable(
                Code::ProviderUnavailable,
                format!(
                    "{} is failing; Tether is waiting before trying again",
                    provider.display_name
                ),
                wait,
            );
            return Err(release(state, row, owner, error).await);
        }
    };
    let old = match row.tokens(&state.keys) {
        Ok(Some(t)) => t,
        Ok(None) => return Err(release(state, row, owner, not_connected()).await),
        Err(e) => return Err(release(state, row, owner, e.into()).await),
    };
    Ok(Ready {
        provider,
        _sending,
        ticket,
        old,
    })
}

/// Sends the renewal through the row's platform: `Err` (the lease released)
/// when the connection it is minted from cannot be read, else the answer.
async fn send(
    state: &App,
    provider: &Provider,
    row: &Connection,
    owner: &str,
    old: &TokenSet,
) -> AppResult<Answer> {
    // A token minted from another connection is minted again from it: read
    // that one now (the database, not the provider: a failure sends nothing).
    let parent = match state.platforms.minted_from(provider, row, old) {
        Some(account) => match parent_of(state, row, account).await {
            Ok(parent) => parent,
            Err(e) => return Err(release(state, row, owner, e).await),
        },
        None => None,
    };
    let due = Due {
        row,
        tokens: old,
        parent: parent.as_ref().and_then(|(p, t)| Some((p, t.as_ref()?))),
    };
    Ok(state
        .platforms
        .renew(&state.refresh_http, provider, due)
        .await)
}

/// The token set and what else is stored after a successful renewal.
fn renewed(
    state: &App,
    provider: &Provider,
    row: &Connection,
    old: &TokenSet,
    response: TokenResponse,
) -> (TokenSet, Refreshed) {
    let t = now();
    let mut tokens = response.tokens;
    // A provider that rotates refresh tokens starts the new one's
    // lifetime afresh (GoHighLevel's year); one that hands back the
    // old one, or none, keeps the lapse date it had (Spotify's six
    // months run from consent).
    let renewed = provider.rotates_refresh_tokens
        && tokens.refresh_token.as_ref().is_some_and(|new| {
            old.refresh_token
                .as_ref()
                .is_none_or(|old| old.expose() != new.expose())
        });
    let refresh_expires_at = match provider.refresh_token_lifetime_days {
        Some(days) if renewed => Some(t + Duration::days(days)),
        _ => row.refresh_expires_at,
    };
    // A response without a new refresh token keeps the old one.
    if tokens.refresh_token.is_none() {
        tokens.refresh_token = old.refresh_token.clone();
    }
    let margin = state.settings.refresh.margin.as_secs() as i64;
    let refreshed = Refreshed {
        expires_at: response.expires_in.map(|s| t + Duration::seconds(s)),
        next_refresh_at: response
            .expires_in
            .map(|s| token::next_refresh_at(t, s, margin)),
        refresh_expires_at,
        scopes: response.scopes.unwrap_or_else(|| row.scopes()),
    };
    (tokens, refreshed)
}

/// Stores the renewed tokens, or holds them until the database takes them,
/// and releases the lease. Returns the row as it is then.
async fn store_renewed(
    state: &App,
    row: Connection,
    owner: String,
    tokens: &TokenSet,
    refreshed: Refreshed,
    actor: Actor,
) -> AppResult<Connection> {
    // Sealed once: stored now, or held (and maybe spilled) as is.
    let sealed = row.seal(&state.keys, tokens)?;
    let id = row.id.clone();
    let answer = held::HeldAnswer {
        leased: row,
        owner,
        sealed,
        refreshed,
        actor,
    };
    match keeper::store_or_hold(state, answer).await? {
        Some(row) => Ok(row),
        // A disconnect, a reconnect or another holder got there
        // first: what the row says now is the answer.
        None => {
            let row = state.db(move |c| Ok(Connection::by_id(c, &id)?)).await?;
            outcome_of(&row).map(|()| row)
        }
    }
}

/// What a failed renewal tells the provider's circuit breaker (and the
/// operator, for a client the provider rejects).
fn judge_provider(
    state: &App,
    provider: &Provider,
    provider_key: &ProviderKey,
    ticket: Ticket<'_>,
    e: &ProviderError,
) {
    match e {
        // A 429 limits one caller (often per user: one tenant forcing
        // refreshes gets it), and must not stop every tenant's refreshes:
        // the provider answered.
        ProviderError::Transient {
            throttled: true, ..
        } => ticket.success(),
        // No answer is as much a sign of trouble as a 5xx.
        ProviderError::Transient { .. } | ProviderError::Unknown { .. } => {
            if ticket.failure() {
                log::warn!("circuit opened for provider={provider_key}");
            }
        }
        ProviderError::ClientMisconfigured { error } => {
            state.flag_provider(&provider.key, error);
            // Not a transient failure of the provider, nor a verdict on the tenant.
            ticket.success();
        }
        _ => ticket.success(),
    }
}

/// Records a failed renewal on the row (with its event) and releases the
/// lease. Returns the error for the caller, or why it could not be recorded.
async fn record_failure(
    state: &App,
    row: Connection,
    owner: String,
    actor: Actor,
    e: &ProviderError,
    failure: Failure,
) -> AppResult<AppError> {
    let detail = match (e, row.last_error.as_deref()) {
        // Most often the answer to that earlier refresh was lost
        // after the provider rotated the token: say so.
        (ProviderError::GrantGone { .. }, Some(earlier)) if row.status() == Status::Error => {
            format!("{e}; the refresh before it had failed: {earlier}")
        }
        _ => e.to_string(),
    };
    let Failure {
        status,
        next_refresh_at,
        event,
        error,
        ..
    } = failure;
    let notify = state.settings.webhook.is_some();
    let (tenant_id, conn_id, provider_key) =
        (row.tenant_id.clone(), row.id.clone(), row.provider.clone());
    let (cached_tenant, cached_provider) = (row.tenant_id.clone(), row.provider.clone());
    let recorded = state
        .db(move |c| {
            c.transaction(|c| {
                // The row moved on meanwhile (a disconnect, a
                // reconnect, another holder): this failure is not its.
                if !Connection::record_failure(c, &row, &owner, status, &detail, next_refresh_at)? {
                    return Ok(());
                }
                crate::db::models::webhook::record(
                    c,
                    notify,
                    &NewEvent {
                        tenant_id: &tenant_id,
                        connection_id: Some(&conn_id),
                        provider: &provider_key,
                        kind: event,
                        actor: &actor,
                        detail: Some(&detail),
                    },
                )?;
                Ok::<(), AppError>(())
            })
        })
        .await;
    // Unrecorded for want of a database, the row (and a still-valid
    // token this process holds for it) is as it was, unless the
    // provider said the grant is gone.
    if recorded.is_ok() || status == Status::NeedsReconnect {
        state.tokens.forget(&cached_tenant, &cached_provider);
    }
    recorded?;
    Ok(error)
}

/// The connection (of the same tenant and provider) that `row`'s token is
/// minted from, if it still exists, and its tokens if they can be opened.
async fn parent_of(
    state: &App,
    row: &Connection,
    account: AccountId,
) -> AppResult<Option<(Connection, Option<TokenSet>)>> {
    let (tenant, key) = (row.tenant_id.clone(), row.provider.clone());
    let parent = state
        .db(move |c| Ok(Connection::for_account(c, &tenant, &key, &account)?))
        .await?;
    Ok(parent.map(|p| {
        let tokens = p.tokens(&state.keys).ok().flatten();
        (p, tokens)
    }))
}
