//! The webhook outbox: notifications queued with their event, delivered by
//! the webhook worker with retries (`webhooks`).

use crate::db::schema::webhook_outbox;
use crate::db::{new_id, now, DbConn};
use chrono::{Duration, NaiveDateTime};
use diesel::prelude::*;

/// After this many failed attempts a notification is given up (and logged).
pub const MAX_ATTEMPTS: i32 = 20;

/// A notification due for delivery.
#[derive(Debug, Queryable)]
pub struct Pending {
    pub id: String,
    pub payload: String,
    pub attempts: i32,
    pub next_attempt_at: NaiveDateTime,
}

/// Queues `payload` (the JSON body) as the notification of event `event_id`
/// (`None`: of no stored event, e.g. a tenant's removal, whose events go
/// with it).
pub fn enqueue(conn: &mut DbConn, event_id: Option<&str>, payload: &str) -> QueryResult<()> {
    let t = now();
    diesel::insert_into(webhook_outbox::table)
        .values((
            webhook_outbox::id.eq(new_id()),
            webhook_outbox::event_id.eq(event_id),
            webhook_outbox::payload.eq(payload),
            webhook_outbox::attempts.eq(0),
            webhook_outbox::next_attempt_at.eq(t),
            webhook_outbox::created_at.eq(t),
        ))
        .execute(conn)
        .map(|_| ())
}

/// Takes up to `limit` due notifications, pushing their next attempt out so
/// that another instance does not send them at the same time.
pub fn claim(conn: &mut DbConn, limit: i64) -> QueryResult<Vec<Pending>> {
    let t = now();
    let due: Vec<Pending> = webhook_outbox::table
        .filter(webhook_outbox::delivered_at.is_null())
        .filter(webhook_outbox::next_attempt_at.le(t))
        .order(webhook_outbox::next_attempt_at.asc())
        .limit(limit)
        .select((
            webhook_outbox::id,
            webhook_outbox::payload,
            webhook_outbox::attempts,
            webhook_outbox::next_attempt_at,
        ))
        .load(conn)?;
    let mut mine = Vec::new();
    for p in due {
        let taken = diesel::update(
            webhook_outbox::table
                .find(&p.id)
                .filter(webhook_outbox::next_attempt_at.eq(p.next_attempt_at)),
        )
        .set(webhook_outbox::next_attempt_at.eq(t + Duration::seconds(60)))
        .execute(conn)?;
        if taken == 1 {
            mine.push(p);
        }
    }
    Ok(mine)
}

/// Records a delivery after `attempts` attempts.
pub fn delivered(conn: &mut DbConn, id: &str, attempts: i32) -> QueryResult<()> {
    diesel::update(webhook_outbox::table.find(id))
        .set((
            webhook_outbox::delivered_at.eq(now()),
            webhook_outbox::attempts.eq(attempts),
        ))
        .execute(conn)
        .map(|_| ())
}

/// Records a failed attempt and when the next one is due.
pub fn failed(
    conn: &mut DbConn,
    id: &str,
    attempts: i32,
    next_attempt_at: NaiveDateTime,
    why: &str,
) -> QueryResult<()> {
    diesel::update(webhook_outbox::table.find(id))
        .set((
            webhook_outbox::attempts.eq(attempts),
            webhook_outbox::next_attempt_at.eq(next_attempt_at),
            webhook_outbox::last_error.eq(why),
        ))
        .execute(conn)
        .map(|_| ())
}

/// Undelivered notifications not given up, of every instance: due now, or
/// waiting for a later attempt (the `/metrics` backlog).
pub fn backlog(conn: &mut DbConn) -> QueryResult<crate::metrics::Backlog> {
    let undelivered = || {
        webhook_outbox::table
            .filter(webhook_outbox::delivered_at.is_null())
            .filter(webhook_outbox::attempts.lt(MAX_ATTEMPTS))
    };
    let t = now();
    Ok(crate::metrics::Backlog {
        due: undelivered()
            .filter(webhook_outbox::next_attempt_at.le(t))
            .count()
            .get_result(conn)?,
        waiting: undelivered()
            .filter(webhook_outbox::next_attempt_at.gt(t))
            .count()
            .get_result(conn)?,
    })
}

/// Deletes up to `batch` notifications older than `before` that are done
/// with: delivered, or given up after [`MAX_ATTEMPTS`]. Returns how many.
pub fn prune(conn: &mut DbConn, before: NaiveDateTime, batch: i64) -> QueryResult<usize> {
    let done = webhook_outbox::table
        .filter(webhook_outbox::created_at.lt(before))
        .filter(
            webhook_outbox::delivered_at
                .is_not_null()
                .or(webhook_outbox::attempts.ge(MAX_ATTEMPTS)),
        )
        .select(webhook_outbox::id)
        .limit(batch)
        .load::<String>(conn)?;
    diesel::delete(webhook_outbox::table.filter(webhook_outbox::id.eq_any(&done))).execute(conn)
}
