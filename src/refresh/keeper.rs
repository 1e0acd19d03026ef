//! The keeper of held answers (see `app::held`): stores a refresh's
//! answer or holds it, retries what it holds until the database takes it,
//! and at a graceful stop waits for the database, then spills.

use crate::app::held::{self, HeldAnswer};
use crate::app::App;
use crate::crypto::KeyRing;
use crate::db::models::connection::{Connection, Status};
use crate::db::models::event::{EventKind, NewEvent};
use crate::db::DbConn;
use crate::error::{AppResult, Code};
use diesel::Connection as _;
use diesel::OptionalExtension;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// What became of an answer handed to [`store`].
#[derive(Debug)]
pub enum Stored {
    /// Committed: the row as stored.
    Committed(Box<Connection>),
    /// The row moved on meanwhile (a disconnect, a reconnect, another
    /// holder's lease): the answer is no longer anybody's to store.
    Superseded,
}

/// Stores an answer in one transaction: the token set (if the row is still
/// the one leased), the provider's flag cleared, the `refreshed` event, and
/// `recovered` when the row's refreshes had been failing.
pub fn store(c: &mut DbConn, answer: &HeldAnswer, notify: bool) -> AppResult<Stored> {
    let row = &answer.leased;
    c.transaction(|c| {
        if !Connection::commit_refresh(c, row, &answer.owner, &answer.sealed, &answer.refreshed)? {
            return Ok(Stored::Superseded);
        }
        crate::db::models::provider_flag::ProviderFlag::clear(c, &row.provider)?;
        crate::db::models::webhook::record(
            c,
            notify,
            &NewEvent {
                tenant_id: &row.tenant_id,
                connection_id: Some(&row.id),
                provider: &row.provider,
                kind: EventKind::Refreshed,
                actor: &answer.actor,
                detail: None,
            },
        )?;
        if row.status() == Status::Error {
            let detail = match row.error_since {
                Some(since) => format!(
                    "refreshing works again after failing since {}",
                    since
                        .and_utc()
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                ),
                None => "refreshing works again".to_string(),
            };
            crate::db::models::webhook::record(
                c,
                notify,
                &NewEvent {
                    tenant_id: &row.tenant_id,
                    connection_id: Some(&row.id),
                    provider: &row.provider,
                    kind: EventKind::Recovered,
                    actor: &answer.actor,
                    detail: Some(&detail),
                },
            )?;
        }
        Ok(Stored::Committed(Box::new(Connection::by_id(c, &row.id)?)))
    })
}

/// Stores a refresh's answer now, or holds it when the database cannot take
/// it. Returns the row as stored or as held; `None` when the row moved on
/// meanwhile and the answer is nobody's any more. From the moment it is
/// here until it is stored, the answer is what callers are served.
pub async fn store_or_hold(state: &App, answer: HeldAnswer) -> AppResult<Option<Connection>> {
    let answer = Arc::new(answer);
    state.held.hold(answer.clone());
    let notify = state.settings.webhook.is_some();
    // Not under `storing`: the keeper only takes answers marked waiting,
    // which this one is not until this attempt failed.
    let stored = {
        let answer = answer.clone();
        state.db(move |c| store(c, &answer, notify)).await
    };
    let (tenant, provider) = (&answer.leased.tenant_id, &answer.leased.provider);
    match stored {
        Ok(Stored::Committed(row)) => {
            cache_committed(state, &row);
            state.held.release(&answer);
            Ok(Some(*row))
        }
        Ok(Stored::Superseded) => {
            state.tokens.forget(tenant, provider);
            state.held.release(&answer);
            Ok(None)
        }
        Err(e) => {
            // Never thrown away: the keeper tries again.
            let unavailable = e.is(Code::DatabaseUnavailable);
            let why = if unavailable {
                e.message().to_string()
            } else {
                format!("{e:?}")
            };
            log::warn!(
                "holding the new token set of tenant={tenant} provider={provider} connection={} until the database takes it: {why}",
                answer.leased.id,
            );
            state.held.wait(&answer);
            state.metrics.held_answers(state.held.waiting_total());
            Ok(Some(answer.row()))
        }
    }
}

/// The token cache after a commit: what a reader cached before it is
/// dropped, and the committed token set takes its place, so that between
/// the held answer's release and the next read there is always a token set
/// to serve, even when the database answered the commit and blinks again
/// (or, just back, has no pooled connection for the next reader yet).
fn cache_committed(state: &App, row: &Connection) {
    state.tokens.forget(&row.tenant_id, &row.provider);
    let epoch = state.tokens.epoch(&row.tenant_id, &row.provider);
    let Ok(Some(tokens)) = row.tokens(&state.keys) else {
        return;
    };
    let opened = crate::app::cache::Opened::new(row.clone(), tokens);
    state.tokens.put(&opened, Some(&row.account_id), epoch);
    if row.is_default {
        state.tokens.put(&opened, None, epoch);
    }
}

/// How often the keeper tries the database while it holds answers.
const RETRY_EVERY: Duration = Duration::from_millis(250);

/// Tries to store every held answer once; returns how many are left.
pub async fn store_held(state: &App) -> usize {
    let _one = state.held.storing.lock().await;
    let notify = state.settings.webhook.is_some();
    for answer in state.held.waiting() {
        let attempt = {
            let answer = answer.clone();
            state.db(move |c| store(c, &answer, notify)).await
        };
        let row = &answer.leased;
        match attempt {
            Ok(Stored::Committed(stored)) => {
                log::info!(
                    "stored the held token set of tenant={} provider={} connection={}",
                    row.tenant_id,
                    row.provider,
                    row.id
                );
                cache_committed(state, &stored);
                state.held.release(&answer);
                continue;
            }
            Ok(Stored::Superseded) => {
                log::warn!(
                    "dropped the held token set of tenant={} provider={} connection={}: the connection changed meanwhile (disconnected or reconnected)",
                    row.tenant_id,
                    row.provider,
                    row.id
                );
                state.held.release(&answer);
            }
            // Still away: the rest would fail the same way.
            Err(e) if e.is(Code::DatabaseUnavailable) => break,
            // Never thrown away: logged, and tried again.
            Err(e) => log::error!(
                "cannot store the held token set of connection={}: {e:?}",
                row.id
            ),
        }
        state.tokens.forget(&row.tenant_id, &row.provider);
    }
    for grant in state.held.grants() {
        let attempt = {
            let grant = grant.clone();
            state.db(move |c| (grant.save)(c)).await
        };
        match attempt {
            Ok(()) => log::info!(
                "stored the new connection held for the database: tenant={} provider={} ({})",
                grant.tenant_id,
                grant.provider,
                grant.what
            ),
            Err(e) if e.is(Code::DatabaseUnavailable) => break,
            // Refused now (the account went to another tenant meanwhile, the
            // tenant was removed): said, not retried.
            Err(e) => log::warn!(
                "dropped the new connection held for the database: tenant={} provider={} ({}): {}",
                grant.tenant_id,
                grant.provider,
                grant.what,
                e.message()
            ),
        }
        state.held.release_grant(&grant);
        state.tokens.forget(&grant.tenant_id, &grant.provider);
    }
    let left = state.held.waiting_total();
    state.metrics.held_answers(left);
    left
}

/// The keeper: runs until the process stops, storing held answers as soon
/// as the database takes them. Started by `workers`.
pub async fn keep(state: Arc<App>) {
    loop {
        if state.held.waiting_total() == 0 {
            state.held.added.notified().await;
        }
        if store_held(&state).await > 0 {
            tokio::time::sleep(RETRY_EVERY).await;
        }
    }
}

/// The end of a graceful stop, once the server answers no more: send
/// nothing new, let the refreshes whose request is at a provider finish
/// (each is bounded by the provider timeout), store the answers held for
/// want of a database (waiting for it until the same bound), spill what
/// still cannot be stored, then release this instance's leases so another
/// instance can take the work at once instead of waiting for them to lapse.
pub async fn drain(state: &App) {
    let bound = state.settings.refresh.provider_timeout + Duration::from_secs(5);
    let deadline = tokio::time::Instant::now() + bound;
    if !state.drain_in_flight(deadline).await {
        // Their leases are left to lapse: the provider may still act on
        // those requests, and no other instance may send the same refresh
        // token before the lease says no answer can come.
        log::warn!(
            "shutdown: refreshes still in flight after {} s; stopping anyway, their leases lapse by themselves",
            bound.as_secs()
        );
        spill(state);
        return;
    }
    // Answers held for want of a database: wait for it, up to the bound.
    while store_held(state).await > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(RETRY_EVERY).await;
    }
    let grants = state.held.grants().len();
    if grants > 0 {
        log::error!(
            "shutdown: the database did not take {grants} new connection(s) made during the outage; their people have to connect again (a location token is minted again by itself)"
        );
    }
    if spill(state) > 0 {
        // Our leases stay: the next start stores the spilled answers.
        return;
    }
    state.leave().await;
}

/// Writes the answers still held to this instance's spill file; returns how many.
fn spill(state: &App) -> usize {
    let dir = state.settings.spill_dir();
    match held::spill(&state.held, &state.instance_id, &dir) {
        Ok(0) => 0,
        Ok(n) => {
            log::warn!(
                "shutdown: the database did not take {n} refreshed token set(s); spilled (sealed) to {}: the next start on this folder stores them before it serves",
                held::spill_path(&dir, &state.instance_id).display()
            );
            n
        }
        Err(e) => {
            log::error!(
                "shutdown: cannot write the spill file in {}: {e}; {} refreshed token set(s) are lost and their connections may need a reconnect",
                dir.display(),
                state.held.len()
            );
            0
        }
    }
}

/// Stores the answers of every spill file in `dir` (left by earlier stops of
/// instances that used this folder), before this instance serves. A file is
/// deleted once each of its answers is stored or superseded; any other
/// failure leaves it in place and refuses the start. Returns how many
/// answers were stored.
pub fn store_spilled(
    c: &mut DbConn,
    ring: &KeyRing,
    dir: &Path,
    notify: bool,
) -> Result<usize, String> {
    let mut stored = 0;
    for file in held::spill_files(dir) {
        for spilled in held::read_spill(&file)? {
            let id = spilled.connection_id.clone();
            let row = Connection::by_id(c, &id)
                .optional()
                .map_err(|e| format!("cannot read connection {id}: {e}"))?;
            let Some(row) = row else {
                log::warn!("spilled answer for connection {id} dropped: the connection is gone");
                continue;
            };
            let answer = spilled.answer(row)?;
            // The key ring must open it, or storing it would store garbage.
            answer
                .row()
                .tokens(ring)
                .map_err(|e| format!("the spilled answer for connection {id}: {e}"))?;
            match store(c, &answer, notify) {
                Ok(Stored::Committed(_)) => {
                    stored += 1;
                    log::info!("stored the spilled token set of connection {id}");
                }
                Ok(Stored::Superseded) => log::warn!(
                    "spilled token set of connection {id} dropped: the connection changed since"
                ),
                Err(e) => {
                    return Err(format!(
                        "cannot store the spilled token set of connection {id}: {}",
                        e.message()
                    ))
                }
            }
        }
        std::fs::remove_file(&file)
            .map_err(|e| format!("cannot remove the spill file {}: {e}", file.display()))?;
    }
    Ok(stored)
}
