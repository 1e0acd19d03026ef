//! Which database errors mean "the database is away" rather than "this
//! query is wrong": how `AppError` tells an outage from a bug, and what
//! `db::health` counts as an outage.

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
}
