//! The in-process scheduler: every interval it leases connections due for
//! refresh (at most as many as it can run now) and refreshes them with bounded
//! concurrency overall and per provider. Several instances may run it against
//! one database: leases keep their work disjoint, and a lease whose holder
//! died lapses so that another instance picks the work up.

use super::{lease_owner, refresh_leased, Leased};
use crate::db::models::connection::Connection;
use crate::db::models::oauth_state::OAuthState;
use crate::db::now;
use crate::web::AppState;
use actix_web::web;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;

pub struct Scheduler {
    state: web::Data<AppState>,
    overall: Arc<Semaphore>,
    per_provider: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl Scheduler {
    pub fn new(state: web::Data<AppState>) -> Arc<Scheduler> {
        let overall = Arc::new(Semaphore::new(state.settings.refresh.concurrency));
        Arc::new(Scheduler {
            state,
            overall,
            per_provider: Mutex::new(HashMap::new()),
        })
    }

    /// Runs ticks forever at the configured interval (on the current runtime).
    pub fn start(self: &Arc<Self>) {
        let me = self.clone();
        actix_web::rt::spawn(async move {
            let mut every = tokio::time::interval(me.state.settings.refresh.interval);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                if let Err(e) = me.tick().await {
                    log::warn!("refresh scheduler: {e:?}");
                }
            }
        });
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
        let state = &self.state;
        state
            .db(|c| {
                Ok(OAuthState::delete_expired(
                    c,
                    now() - chrono::Duration::hours(1),
                )?)
            })
            .await?;
        let free = self.overall.available_permits();
        if free == 0 {
            return Ok(0);
        }
        let owner = lease_owner(state);
        let until = super::lease_until(state);
        let due = {
            let owner = owner.clone();
            state
                .db(move |c| Ok(Connection::claim_due(c, &owner, until, free as i64)?))
                .await?
        };
        let started = due.len();
        for row in due {
            let overall = self.overall.clone();
            let provider = self.provider_slots(&row.provider);
            let state = state.clone();
            let leased = Leased {
                row,
                owner: owner.clone(),
            };
            actix_web::rt::spawn(async move {
                let (Ok(_a), Ok(_b)) = (
                    overall.acquire_owned().await,
                    provider.acquire_owned().await,
                ) else {
                    return;
                };
                // Errors are recorded on the connection and logged by refresh_leased.
                let _ = refresh_leased(&state, leased, "scheduler").await;
            });
        }
        Ok(started)
    }
}
