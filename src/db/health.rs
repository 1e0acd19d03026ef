//! What this process knows about its database: whether it answers, and
//! since when (which errors mean "the database is away" rather than "this
//! query is wrong": `error::fault`). Everything that must behave differently during an outage
//! (the token API answering from memory, the scheduler pausing, `/readyz`,
//! taking over another instance's lapsed leases) asks here.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The database as this process sees it.
pub struct Health {
    up: AtomicBool,
    /// Moves on at every outage: pooled connections opened before it are
    /// checked once before they are used again (see `db::checkout`).
    epoch: AtomicU64,
    /// When the last outage ended (`None`: none seen since the start).
    recovered_at: Mutex<Option<Instant>>,
    /// When the current outage began.
    down_since: Mutex<Option<Instant>>,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            up: AtomicBool::new(true),
            epoch: AtomicU64::new(0),
            recovered_at: Mutex::new(None),
            down_since: Mutex::new(None),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Health {
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::SeqCst)
    }

    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// A call could not reach the database.
    pub fn down(&self, why: &dyn std::fmt::Display) {
        if self.up.swap(false, Ordering::SeqCst) {
            self.epoch.fetch_add(1, Ordering::SeqCst);
            *lock(&self.down_since) = Some(Instant::now());
            log::warn!("database unreachable ({why}); answering from memory where possible until it is back");
        }
    }

    /// A call reached the database.
    pub fn reached(&self) {
        if !self.up.swap(true, Ordering::SeqCst) {
            let now = Instant::now();
            *lock(&self.recovered_at) = Some(now);
            let away = lock(&self.down_since)
                .take()
                .map_or(0, |t| now.duration_since(t).as_millis());
            log::info!("database reachable again after {away} ms");
        }
    }

    /// How long the database has answered without a break this process saw:
    /// `None` while it is away; `Duration::MAX` when no outage was seen.
    pub fn up_for(&self) -> Option<Duration> {
        if !self.is_up() {
            return None;
        }
        Some(lock(&self.recovered_at).map_or(Duration::MAX, |t| t.elapsed()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_moves_the_epoch_once_and_recovery_is_timed() {
        let h = Health::default();
        assert_eq!(h.up_for(), Some(Duration::MAX));
        h.down(&"cut");
        h.down(&"still cut");
        assert_eq!(h.epoch(), 1);
        assert_eq!(h.up_for(), None);
        h.reached();
        assert!(h.up_for().is_some_and(|d| d < Duration::from_secs(5)));
    }
}
