//! Delivery ids of provider webhooks already taken: a replay of one is
//! refused. An id is kept until a replay would be refused as stale anyway.

use crate::db::schema::seen_webhooks;
use crate::db::{now, DbConn};
use crate::ids::ProviderKey;
use chrono::NaiveDateTime;
use diesel::prelude::*;

/// Records `webhook_id` of `provider` as taken until `expires_at`; `false`
/// when it was taken before (a replay). The insert is the first statement
/// of the caller's transaction, with no read before it: on SQLite a
/// transaction that read first and then writes fails at once
/// (`SQLITE_BUSY_SNAPSHOT`, "database is locked") when another connection
/// committed a write in between, where one that writes first waits its turn
/// (`busy_timeout`). On PostgreSQL the refused insert ends the transaction,
/// and the caller answers the replay without another statement.
pub fn first_sight(
    conn: &mut DbConn,
    provider: &ProviderKey,
    webhook_id: &str,
    expires_at: NaiveDateTime,
) -> QueryResult<bool> {
    let inserted = diesel::insert_into(seen_webhooks::table)
        .values((
            seen_webhooks::provider.eq(provider),
            seen_webhooks::webhook_id.eq(webhook_id),
            seen_webhooks::expires_at.eq(expires_at),
        ))
        .execute(conn);
    match inserted {
        Ok(_) => Ok(true),
        // Taken before, or by a concurrent delivery of the same id.
        Err(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UniqueViolation,
            _,
        )) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Forgets ids whose window has passed; returns how many.
pub fn prune(conn: &mut DbConn) -> QueryResult<usize> {
    diesel::delete(seen_webhooks::table.filter(seen_webhooks::expires_at.le(now()))).execute(conn)
}
