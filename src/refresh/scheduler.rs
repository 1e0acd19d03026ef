//! The in-process scheduler: every interval it leases connections due for
//! refresh (at most as many as it can run now) and refreshes them with bounded
//! concurrency overall and per provider. Several instances may run it against
//! one database: leases keep their work disjoint, and a lease whose holder
//! died lapses so that another instance picks the work up.

use super::{lease_owner, refresh_leased, Leased};
use crate::app::App;
use crate::db::models::connection::Connection;
use crate::db::models::event::{Actor, EventKind, NewEvent};
use crate::db::models::oauth_state::OAuthState;
use crate::db::models::usage;
use crate::db::now;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;

/// How soon a tick is tried again while the database is away.
const AWAY_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// A warning of the scheduler about one connection: a WARN line and the
/// event (with its webhook).
fn announce(
    c: &mut crate::db::DbConn,
    notify: bool,
    row: &Connection,
    kind: EventKind,
    detail: &str,
) -> diesel::QueryResult<()> {
    log::warn!(
        "tenant={} provider={} connection={}: {detail}",
        row.tenant_id,
        row.provider,
        row.id
    );
    crate::db::models::webhook::record(
        c,
        notify,
        &NewEvent {
            tenant_id: &row.tenant_id,
            connection_id: Some(&row.id),
            provider: &row.provider,
            kind,
            actor: &Actor::Scheduler,
            detail: Some(detail),
        },
    )
    .map(|_| ())
}

/// Records (once per connection and window) that a refresh token with a known
/// lifetime lapses within `warn_days` days (TETHER_REFRESH_TOKEN_LAPSE_WARNING_DAYS):
/// after that, only a reconnect helps.
fn warn_lapsing_refresh_tokens(
    c: &mut crate::db::DbConn,
    notify: bool,
    warn_days: i64,
) -> diesel::QueryResult<()> {
    let window = chrono::Duration::days(warn_days);
    for row in Connection::refresh_token_lapsing(c, now() + window)? {
        let Some(lapses) = row.refresh_expires_at else {
            continue;
        };
        if crate::db::models::event::Event::exists_since(
            c,
            &row.id,
            EventKind::RefreshTokenExpiring,
            lapses - window,
        )? {
            continue;
        }
        let detail = format!(
            "the refresh token lapses on {}; reconnect before then",
            lapses.format("%Y-%m-%d")
        );
        announce(c, notify, &row, EventKind::RefreshTokenExpiring, &detail)?;
    }
    Ok(())
}

/// Records `refresh_failing` for each connection whose refreshes have failed
/// without a break for longer than `after` (TETHER_REFRESH_FAILING_AFTER):
/// once per streak, which begins at the row's `error_since` (an event of
/// that kind since then means it was said).
fn announce_failing(
    c: &mut crate::db::DbConn,
    notify: bool,
    after: chrono::Duration,
) -> diesel::QueryResult<()> {
    for row in Connection::failing_unannounced(c, now() - after)? {
        let Some(since) = row.error_since else {
            continue;
        };
        let detail = format!(
            "refreshing has failed since {}: {}",
            since
                .and_utc()
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            row.last_error.as_deref().unwrap_or("no answer")
        );
        announce(c, notify, &row, EventKind::RefreshFailing, &detail)?;
    }
    Ok(())
}

/// Rows deleted per statement, and statements per housekeeping round, when
/// pruning old events and webhook deliveries: short transactions that never
/// hold up refreshes, while a backlog still goes within a few rounds.
const PRUNE_BATCH: i64 = 1_000;
const PRUNE_BATCHES_PER_ROUND: usize = 20;

/// Deletes events and finished webhook deliveries older than `before`, and
/// held app events whose time is over.
fn prune(c: &mut crate::db::DbConn, before: chrono::NaiveDateTime) -> diesel::QueryResult<()> {
    let (mut events, mut deliveries) = (0, 0);
    for _ in 0..PRUNE_BATCHES_PER_ROUND {
        let e = crate::db::models::event::Event::prune(c, before, PRUNE_BATCH)?;
        let d = crate::db::models::webhook::prune(c, before, PRUNE_BATCH)?;
        events += e;
        deliveries += d;
        if (e as i64) < PRUNE_BATCH && (d as i64) < PRUNE_BATCH {
            break;
        }
    }
    if events + deliveries > 0 {
        log::info!(
            "retention: deleted {events} events and {deliveries} webhook deliveries older than {}",
            before.format("%Y-%m-%d")
        );
    }
    let mut dropped = 0;
    for _ in 0..PRUNE_BATCHES_PER_ROUND {
        let d = crate::db::models::webhook::drop_expired_held(c, PRUNE_BATCH)?;
        dropped += d;
        if (d as i64) < PRUNE_BATCH {
            break;
        }
    }
    if dropped > 0 {
        log::warn!(
            "relay: dropped {dropped} held app events: no tenant came to hold their accounts within TETHER_RELAY_HOLD_DAYS"
        );
    }
    Ok(())
}

pub struct Scheduler {
    state: Arc<App>,
    overall: Arc<Semaphore>,
    per_provider: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// When housekeeping last ran; it runs at most once per interval, not on
    /// every tick of a backlog drain.
    housekept: Mutex<Option<std::time::Instant>>,
}

impl Scheduler {
    pub fn new(state: Arc<App>) -> Arc<Scheduler> {
        let overall = Arc::new(Semaphore::new(state.settings.refresh.concurrency));
        Arc::new(Scheduler {
            state,
            overall,
            per_provider: Mutex::new(HashMap::new()),
            housekept: Mutex::new(None),
        })
    }

    /// Runs until the process stops: a tick every interval, and while ticks
    /// find a full batch of due work, the next one as soon as a refresh slot
    /// frees up (so a backlog drains at full concurrency). Started by
    /// `workers`.
    pub async fn run(self: Arc<Self>) {
        // Whether the last tick found the database away: said once per outage.
        let mut away = false;
        while !self.state.is_stopping() {
            // A tick that filled every slot it had probably left work due:
            // go on as soon as a slot frees instead of after the interval.
            let (full, pause) = match self.tick_with_capacity().await {
                Ok((started, capacity)) => {
                    log::debug!("scheduler tick started {started} of {capacity} slots");
                    if std::mem::take(&mut away) {
                        log::info!("refresh scheduler: the database answers again; refreshing");
                    }
                    (
                        started > 0 && started == capacity,
                        self.state.settings.refresh.interval,
                    )
                }
                // Paused, counting nothing against any connection or
                // provider; tried again every second so that it resumes as
                // soon as the database is back.
                Err(e) if e.is(crate::error::Code::DatabaseUnavailable) => {
                    if !std::mem::replace(&mut away, true) {
                        log::warn!(
                            "refresh scheduler: paused while the database is away ({})",
                            e.message()
                        );
                    }
                    (false, AWAY_RETRY.min(self.state.settings.refresh.interval))
                }
                Err(e) => {
                    log::warn!("refresh scheduler: {e:?}");
                    (false, self.state.settings.refresh.interval)
                }
            };
            if full {
                // Wait for one slot, then claim more.
                if let Ok(permit) = self.overall.clone().acquire_owned().await {
                    drop(permit);
                }
            } else {
                tokio::time::sleep(pause).await;
            }
        }
    }

    fn provider_slots(&self, provider: &str) -> Arc<Semaphore> {
        let mut map = self.per_provider.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(provider.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(self.state.settings.refresh.per_provider)))
            .clone()
    }

    /// One round: lease what is due and start refreshing it. Returns the
    /// number of connections started; their refreshes run on after it returns.
    pub async fn tick(&self) -> Result<usize, crate::error::AppError> {
        self.tick_with_capacity().await.map(|(started, _)| started)
    }

    /// Once per refresh interval: expired sign-in states go, lapsing refresh
    /// tokens and long failing refreshes are announced, and old events (and
    /// usage counts older than `usage::KEEP_DAYS`, and the proxy's budget
    /// buckets no window counts any more) are pruned.
    async fn housekeep(&self) -> Result<(), crate::error::AppError> {
        let state = &self.state;
        let housekeeping_due = {
            let mut last = self.housekept.lock().unwrap_or_else(|e| e.into_inner());
            let due = last.is_none_or(|t| t.elapsed() >= state.settings.refresh.interval);
            if due {
                *last = Some(std::time::Instant::now());
            }
            due
        };
        if housekeeping_due {
            let notify = state.settings.webhook.is_some();
            let warn_days = state.settings.refresh.lapse_warning_days;
            let retention = chrono::Duration::from_std(state.settings.refresh.retention)
                .unwrap_or(chrono::Duration::days(90));
            let failing_after = chrono::Duration::from_std(state.settings.refresh.failing_after)
                .unwrap_or(chrono::Duration::hours(1));
            state
                .db(move |c| {
                    OAuthState::delete_expired(c, now() - chrono::Duration::hours(1))?;
                    warn_lapsing_refresh_tokens(c, notify, warn_days)?;
                    announce_failing(c, notify, failing_after)?;
                    prune(c, now() - retention)?;
                    let keep = chrono::Duration::days(usage::KEEP_DAYS);
                    usage::Usage::prune(c, (now() - keep).date())?;
                    crate::db::models::proxy_budget::prune(c, now())?;
                    Ok(())
                })
                .await?;
        }
        Ok(())
    }

    /// As [`Scheduler::tick`], also returning how many slots the tick had.
    async fn tick_with_capacity(&self) -> Result<(usize, usize), crate::error::AppError> {
        let state = &self.state;
        if state.is_stopping() {
            return Ok((0, 0));
        }
        // An answer this process holds must be stored before anything of
        // ours is refreshed again (the keeper stores it once it can).
        if !state.held.is_empty() {
            return Err(crate::error::AppError::database_unavailable());
        }
        self.housekeep().await?;
        // Take the slots first: each claimed row goes out holding its own, so
        // the loop in `start` sees at once whether every slot is busy.
        let mut slots = Vec::new();
        while let Ok(permit) = self.overall.clone().try_acquire_owned() {
            slots.push(permit);
        }
        let capacity = slots.len();
        if capacity == 0 {
            return Ok((0, 0));
        }
        let owner = lease_owner(state);
        let until = super::lease_until(state);
        let due = {
            let (owner, limit, takeover) =
                (owner.clone(), slots.len() as i64, super::takeover(state));
            let ring = state.keys.clone();
            state
                .db(move |c| {
                    Ok(Connection::claim_due(
                        c, &owner, until, limit, &takeover, &ring,
                    )?)
                })
                .await?
        };
        let started = due.len();
        // Unused slots are released when `slots` runs out below.
        for (row, slot) in due.into_iter().zip(slots) {
            let provider = self.provider_slots(&row.provider);
            let state = state.clone();
            let leased = Leased {
                row,
                owner: owner.clone(),
            };
            actix_web::rt::spawn(async move {
                let _slot = slot;
                let Ok(_per_provider) = provider.acquire_owned().await else {
                    return;
                };
                if state.is_stopping() {
                    // Claimed before the stop, never sent: hand it back now.
                    let (id, owner) = (leased.row.id.clone(), leased.owner.clone());
                    let _ = state
                        .db(move |c| Ok(Connection::release(c, &id, &owner)?))
                        .await;
                    return;
                }
                // Errors are recorded on the connection and logged by refresh_leased.
                let _ = refresh_leased(&state, leased, &Actor::Scheduler).await;
            });
        }
        Ok((started, capacity))
    }
}
