//! Delivery ids of provider webhooks already taken: a replay of one is
//! refused. An id is kept until a replay would be refused as stale anyway.

use crate::db::schema::seen_webhooks;
use crate::db::{now, DbConn};
use chrono::NaiveDateTime;
use diesel::prelude::*;

/// Records `webhook_id` of `provider` as taken until `expires_at`; `false`
/// when it was taken before (a replay), for every caller but one.
pub fn first_sight(
    conn: &mut DbConn,
    provider: &str,
    webhook_id: &str,
    expires_at: NaiveDateTime,
) -> QueryResult<bool> {
    let seen = diesel::select(diesel::dsl::exists(
        seen_webhooks::table
            .filter(seen_webhooks::provider.eq(provider))
            .filter(seen_webhooks::webhook_id.eq(webhook_id)),
    ))
    .get_result::<bool>(conn)?;
    if seen {
        return Ok(false);
    }
    let inserted = diesel::insert_into(seen_webhooks::table)
        .values((
            seen_webhooks::provider.eq(provider),
            seen_webhooks::webhook_id.eq(webhook_id),
            seen_webhooks::expires_at.eq(expires_at),
        ))
        .execute(conn);
    match inserted {
        Ok(_) => Ok(true),
        // A concurrent delivery of the same id won the insert.
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
