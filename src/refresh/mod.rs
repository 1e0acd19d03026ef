//! Refreshing connections. One rule above all: a refresh token is never sent
//! to the provider twice while an answer to it can still come. A refresh runs
//! only under the connection's lease in the database (taken with a conditional
//! UPDATE), concurrent callers in one process share one run, callers in other
//! processes wait for the lease, and the new token set is committed
//! (compare-and-swap on `version`) before anyone is handed the new access
//! token. Once an answer can no longer come (the call timed out, the process
//! that sent it died and its lease lapsed), sending the same refresh token
//! again is the dominant choice: see docs/design.md.

mod failure;
pub mod keeper;
mod leased;
pub mod retry;
pub mod scheduler;

pub use failure::{classify, Failure};
use failure::{failing, needs_reconnect, not_connected, outcome_of};
use leased::lease_until;
pub use leased::{refresh_leased, Leased, SEND_GRACE_SECS};

use crate::app::cache::Opened;
use crate::app::App;
use crate::db::models::connection::{Connection, Status};
use crate::db::models::event::Actor;
use crate::db::models::instance::Takeover;
use crate::db::models::integration_setting::IntegrationSetting;
use crate::db::now;
use crate::error::{AppError, AppResult, Code};
use crate::ids::{AccountId, ConnectionId, ProviderKey, TenantId};
use crate::providers::{Provider, RefreshStyle};
use chrono::{Duration, NaiveDateTime};
pub use retry::backoff;
use std::sync::Arc;

/// How long a token request whose stored token is still valid waits for a
/// refresh under way before it takes the stored token.
const PATIENCE: std::time::Duration = std::time::Duration::from_secs(2);
/// How long before its expiry a waiting caller takes the stored token.
const EXPIRY_MARGIN: std::time::Duration = std::time::Duration::from_millis(250);

/// A fresh lease owner name: this process and this attempt.
pub fn lease_owner(state: &App) -> String {
    format!("{}:{}", state.instance_id, crate::crypto::random_token(6))
}

/// Whose lapsed leases this instance may take now (see
/// `db::models::instance`).
pub fn takeover(state: &App) -> Takeover {
    Takeover::new(&state.instance_id, state.health.up_for(), now())
}

/// Takes the lease of one connection, or says who cannot have it: `Ok(None)`
/// when another holder has it, an error when the row cannot be refreshed.
async fn claim(state: &App, id: &ConnectionId) -> AppResult<Option<Leased>> {
    let (id, owner, until) = (id.clone(), lease_owner(state), lease_until(state));
    let takeover = takeover(state);
    state
        .db(move |c| {
            if let Some(row) = Connection::claim(c, &id, &owner, until, &takeover)? {
                return Ok(Some(Leased { row, owner }));
            }
            match Connection::by_id(c, &id).ok() {
                None => Err(AppError::not_found("no such connection")),
                Some(row) if !row.has_tokens() => Err(not_connected()),
                Some(row) if row.status() == Status::NeedsReconnect => Err(needs_reconnect()),
                Some(_) => Ok(None),
            }
        })
        .await
}

/// Waits until another holder's lease on `id` is released, or lapses and
/// may be taken over, by polling the row with a growing interval (bounded
/// by the lease length).
async fn wait_for_lease(state: &App, id: &ConnectionId) -> AppResult<()> {
    let deadline = std::time::Instant::now()
        + state.settings.refresh.lease
        + std::time::Duration::from_secs(1);
    let mut pause = std::time::Duration::from_millis(10);
    loop {
        let free = {
            let (id, takeover) = (id.clone(), takeover(state));
            state
                .db(move |c| Ok(Connection::lease_free(c, &id, &takeover)?))
                .await?
        };
        if free {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(AppError::unavailable(
                Code::RefreshInProgress,
                "another instance is refreshing this connection",
                2,
            ));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(std::time::Duration::from_millis(200));
    }
}

/// The state of a row a caller decided from: if the row has moved on since
/// (a refresh committed or failed, a disconnect), that outcome is the caller's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub version: i64,
    pub updated_at: NaiveDateTime,
}

impl Seen {
    pub fn of(row: &Connection) -> Seen {
        Seen {
            version: row.version,
            updated_at: row.updated_at,
        }
    }
}

/// Refreshes a connection now, sharing the run with concurrent callers in this
/// process and waiting for another instance's run if it holds the lease. When
/// the row has moved on since `seen` (the caller's view; `None`: as it is now),
/// whatever happened meanwhile is the outcome, and nothing is sent.
pub async fn refresh_now(
    state: &Arc<App>,
    id: &ConnectionId,
    actor: &Actor,
    seen: Option<Seen>,
) -> AppResult<Connection> {
    // The run is a task of its own: a caller that goes away (a client hanging
    // up, a request timing out) must not cancel a refresh whose request may
    // be at the provider, or the answer (a rotated refresh token) is lost.
    // It runs on the system's own runtime, not the HTTP worker's: workers
    // stop with the server, the system runs until refreshes have drained.
    let (tx, rx) = tokio::sync::oneshot::channel();
    {
        let (state, id, actor) = (state.clone(), id.clone(), actor.clone());
        let started = actix_web::rt::System::current()
            .arbiter()
            .spawn(async move {
                let _ = tx.send(shared_refresh(&state, &id, &actor, seen).await);
            });
        if !started {
            return Err(AppError::internal("the refresh runtime has stopped"));
        }
    }
    rx.await
        .map_err(|_| AppError::internal("the refresh task ended without an outcome"))??;
    // An answer the database could not take yet is the connection's state.
    if let Some(held) = state.held.row_of(id) {
        return Ok(held);
    }
    let id = id.clone();
    state.db(move |c| Ok(Connection::by_id(c, &id)?)).await
}

/// [`refresh_now`]'s run, shared by every caller in this process.
async fn shared_refresh(
    state: &Arc<App>,
    id: &ConnectionId,
    actor: &Actor,
    seen: Option<Seen>,
) -> AppResult<()> {
    state
        .flights
        .run(id, || async {
            // Its last answer is not stored yet: nothing may be sent before.
            if state.held.holds(id) {
                return Ok(());
            }
            let baseline = match seen {
                Some(s) => s,
                None => {
                    let id = id.clone();
                    state
                        .db(move |c| Ok(Seen::of(&Connection::by_id(c, &id)?)))
                        .await?
                }
            };
            loop {
                match claim(state, id).await? {
                    Some(leased) if Seen::of(&leased.row) == baseline => {
                        return refresh_leased(state, leased, actor).await.map(|_| ())
                    }
                    Some(leased) => {
                        // Refreshed (or failed) between the caller's look and our claim.
                        let (id, owner) = (leased.row.id.clone(), leased.owner.clone());
                        state
                            .db(move |c| Ok(Connection::release(c, &id, &owner)?))
                            .await?;
                        return outcome_of(&leased.row);
                    }
                    None => {
                        wait_for_lease(state, id).await?;
                        // The other holder finished: its outcome, success or failure, is ours.
                        let id = id.clone();
                        let row = state.db(move |c| Ok(Connection::by_id(c, &id)?)).await?;
                        if Seen::of(&row) != baseline || row.status() == Status::NeedsReconnect {
                            return outcome_of(&row);
                        }
                    }
                }
            }
        })
        .await
}

/// A valid access token for the tenant's connection to `provider`: the stored
/// one when it stays valid for `min_ttl` seconds, else a refreshed one. A
/// token is not refreshed before half its life has passed, whatever `min_ttl`
/// asks (a 4 s token cannot be valid for 60 s; refreshing it on every request
/// would only storm the provider). While a refresh is backing off, or another
/// instance holds the lease, a stored token that is still valid is handed out.
/// `account` names the provider account; `None` is the tenant's default.
pub async fn fresh_token(
    state: &Arc<App>,
    tenant_id: &TenantId,
    provider: &Provider,
    account: Option<&AccountId>,
    min_ttl: i64,
) -> AppResult<Arc<Opened>> {
    let t = now();
    let valid_for = |c: &Connection, secs: i64| {
        c.expires_at
            .is_none_or(|exp| exp > t + Duration::seconds(secs))
    };
    let wants_refresh = |c: &Connection| {
        provider.refresh != RefreshStyle::None && !valid_for(c, min_ttl) && c.past_half_life(t)
    };
    // Read before the database, so that what it says is not cached if
    // another instance's write is heard meanwhile.
    let epoch = state.tokens.epoch(tenant_id, &provider.key);
    // An answer held until the database takes it is the current token set.
    if let Some(row) = state.held.row_for(tenant_id, &provider.key, account) {
        if valid_for(&row, 0) {
            let tokens = row.tokens(&state.keys)?.ok_or_else(not_connected)?;
            return Ok(Opened::new(row, tokens));
        }
    }
    // Warm path: an opened token set this process read or wrote moments ago.
    if let Some(hit) = state.tokens.get(tenant_id, &provider.key, account) {
        let row = &hit.row;
        if row.status() == Status::Connected && valid_for(row, 0) && !wants_refresh(row) {
            return Ok(hit);
        }
    }
    let row = match stored(state, tenant_id, provider, account).await? {
        Stored::Row(row) => *row,
        Stored::Remembered(hit) => return Ok(hit),
    };
    let backing_off = row.status() == Status::Error && row.next_refresh_at.is_some_and(|at| at > t);
    let open = |row: Connection| -> AppResult<Arc<Opened>> {
        let tokens = row.tokens(&state.keys)?.ok_or_else(not_connected)?;
        let opened = Opened::new(row, tokens);
        if opened.row.status() == Status::Connected {
            state.tokens.put(&opened, account, epoch);
        }
        Ok(opened)
    };
    let still_valid = valid_for(&row, 0);
    if !wants_refresh(&row) || (still_valid && backing_off) {
        return open(row);
    }
    if backing_off {
        // Expired, and the last refresh failed for now: say when it is retried.
        return Err(failing(&row));
    }
    let refreshed = refresh_now(state, &row.id, &Actor::TokenApi, Some(Seen::of(&row)));
    let outcome = patiently(&row, still_valid, refreshed).await;
    match outcome {
        Ok(fresh) => open(fresh),
        // Still valid now, after the wait (not only when the request came).
        Err(e) if e.is_unavailable() && row.expires_at.is_none_or(|exp| exp > now()) => {
            // Still usable: better a short-lived token than none.
            log::warn!(
                "handing out a token valid < min_ttl for connection {}: {}",
                row.id,
                e.message()
            );
            let tokens = row.tokens(&state.keys)?.ok_or_else(not_connected)?;
            Ok(Opened::new(row, tokens))
        }
        Err(e) => Err(e),
    }
}

/// The tenant's connection to `provider` as the database has it: one with
/// tokens, or an error saying why there is none. While the database is
/// away, the token set this process last opened, if still valid.
enum Stored {
    Row(Box<Connection>),
    Remembered(Arc<Opened>),
}

/// Reads the connection a token request is for (see [`Stored`]).
async fn stored(
    state: &App,
    tenant_id: &TenantId,
    provider: &Provider,
    account: Option<&AccountId>,
) -> AppResult<Stored> {
    let read = {
        let (tn, p, a) = (tenant_id.clone(), provider.key.clone(), account.cloned());
        state
            .db(move |c| {
                // Before the connection: a tenant that switched the provider
                // off gets that answer whether or not it is connected. The
                // warm path (in `fresh_token`) needs no check: a switch-off forgets the
                // pair's entries in every instance.
                if IntegrationSetting::is_disabled(c, &tn, &p)? {
                    return Ok(None);
                }
                Ok(Some(Connection::lookup(c, &tn, &p, a.as_ref())?))
            })
            .await
    };
    let current = match read {
        Ok(current) => {
            current.ok_or_else(|| AppError::provider_disabled(&provider.display_name))?
        }
        Err(e) if e.is(Code::DatabaseUnavailable) => {
            return from_memory(state, tenant_id, &provider.key, account)
                .map(Stored::Remembered)
                .ok_or(e)
        }
        Err(e) => return Err(e),
    };
    let row = current
        .filter(|c| c.has_tokens())
        .ok_or_else(|| match account {
            None => not_connected(),
            Some(_) => crate::db::models::connection::unknown_account(),
        })?;
    if row.status() == Status::NeedsReconnect {
        return Err(needs_reconnect());
    }
    Ok(Stored::Row(Box::new(row)))
}

/// A caller whose stored token still works waits a little for the refresh
/// (its own, or another instance's lease), not for a slow provider or the
/// lease of an instance that died: then the stored token is the answer.
/// The refresh itself runs on (it is a task of its own).
async fn patiently(
    row: &Connection,
    still_valid: bool,
    refreshed: impl std::future::Future<Output = AppResult<Connection>>,
) -> AppResult<Connection> {
    if still_valid {
        // Never so long that the stored token expires meanwhile: then there
        // would be nothing left to answer with (the refresh may be held by
        // an instance that died, whose lease only lapses later).
        let left = row
            .expires_at
            .and_then(|exp| (exp - now()).to_std().ok())
            .map_or(PATIENCE, |left| left.saturating_sub(EXPIRY_MARGIN));
        tokio::time::timeout(PATIENCE.min(left), refreshed)
            .await
            .unwrap_or_else(|_| {
                Err(AppError::unavailable(
                    Code::RefreshInProgress,
                    "a refresh is under way",
                    1,
                ))
            })
    } else {
        refreshed.await
    }
}

/// While the database is away: the last token set this process opened for
/// the connection, if its access token is still valid. Nothing else can be
/// known without the database (a disconnect elsewhere, a newer token), and a
/// still-valid token is what the provider accepts.
fn from_memory(
    state: &App,
    tenant_id: &TenantId,
    provider: &ProviderKey,
    account: Option<&AccountId>,
) -> Option<Arc<Opened>> {
    let hit = state.tokens.fallback(tenant_id, provider, account)?;
    let row = &hit.row;
    let valid = row.status() == Status::Connected && row.expires_at.is_none_or(|exp| exp > now());
    if !valid {
        return None;
    }
    state.metrics.answered_from_memory();
    log::debug!(
        "database away: answered tenant={tenant_id} provider={provider} connection={} from memory",
        row.id
    );
    Some(hit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_is_capped_jittered_and_honours_retry_after() {
        for failures in 0..12 {
            let secs = backoff(failures, None).num_seconds();
            let base = (30i64 << failures.min(7)).min(3600);
            assert!(
                secs >= base * 8 / 10 && secs <= base * 12 / 10,
                "{failures}: {secs}"
            );
        }
        assert!(backoff(0, Some(600)).num_seconds() >= 600);
    }
}
