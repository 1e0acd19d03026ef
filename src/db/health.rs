//! What this process knows about its database: whether it answers, since
//! when, and which errors mean "the database is away" rather than "this
//! query is wrong". Everything that must behave differently during an outage
//! (the token API answering from memory, the scheduler pausing, `/readyz`,
//! taking over another instance's lapsed leases) asks here.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How a failed database call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The database cannot be reached: the connection broke or none can be
    /// opened. The whole process treats the database as away.
    Unreachable,
    /// The database answers but cannot take a write for now: SQLite locked by
    /// another process past the busy timeout, a full disk, a read-only file,
    /// a PostgreSQL that is read-only during a failover.
    Unwritable,
}

/// Classifies a diesel error: `None` for an error of the query itself.
pub fn fault_of(e: &diesel::result::Error) -> Option<Fault> {
    use diesel::result::{DatabaseErrorKind as Kind, Error};
    match e {
        Error::DatabaseError(Kind::ClosedConnection | Kind::UnableToSendCommand, _) => {
            Some(Fault::Unreachable)
        }
        Error::DatabaseError(Kind::ReadOnlyTransaction, _) => Some(Fault::Unwritable),
        // A rollback that failed: the connection is gone mid-transaction.
        Error::BrokenTransactionManager => Some(Fault::Unreachable),
        Error::DatabaseError(_, info) => sqlite_fault(info.message()),
        _ => None,
    }
}

/// SQLite reports these only as text (diesel maps its result codes to
/// `Unknown`); the texts are `sqlite3_errstr`'s, stable across versions.
fn sqlite_fault(message: &str) -> Option<Fault> {
    const UNWRITABLE: [&str; 5] = [
        "database is locked",
        "database table is locked",
        "database or disk is full",
        "attempt to write a readonly database",
        "disk I/O error",
    ];
    if UNWRITABLE.iter().any(|m| message.contains(m)) {
        Some(Fault::Unwritable)
    } else if message.contains("unable to open database file") {
        Some(Fault::Unreachable)
    } else {
        None
    }
}

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
    fn sqlite_texts_are_told_apart_from_query_errors() {
        assert_eq!(sqlite_fault("database is locked"), Some(Fault::Unwritable));
        assert_eq!(
            sqlite_fault("database or disk is full"),
            Some(Fault::Unwritable)
        );
        assert_eq!(
            sqlite_fault("attempt to write a readonly database"),
            Some(Fault::Unwritable)
        );
        assert_eq!(
            sqlite_fault("unable to open database file"),
            Some(Fault::Unreachable)
        );
        assert_eq!(sqlite_fault("no such table: connections"), None);
        assert_eq!(sqlite_fault("UNIQUE constraint failed: tenants.id"), None);
    }

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
