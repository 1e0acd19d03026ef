//! The audit trail of a connection: who connected, refreshed or disconnected it, and when.

use crate::db::schema::events;
use crate::db::{new_id, now, DbConn};
use chrono::NaiveDateTime;
use diesel::prelude::*;

#[derive(Debug, Clone, Queryable, Selectable, serde::Serialize)]
#[diesel(table_name = events)]
pub struct Event {
    pub id: String,
    pub tenant_id: String,
    pub connection_id: Option<String>,
    pub provider: String,
    pub kind: String,
    pub actor: String,
    pub detail: Option<String>,
    pub created_at: NaiveDateTime,
}

#[derive(Insertable)]
#[diesel(table_name = events)]
struct NewEvent<'a> {
    id: &'a str,
    tenant_id: &'a str,
    connection_id: Option<&'a str>,
    provider: &'a str,
    kind: &'a str,
    actor: &'a str,
    detail: Option<&'a str>,
    created_at: NaiveDateTime,
}

impl Event {
    /// Records an event. `detail` must never contain a secret.
    pub fn record(
        conn: &mut DbConn,
        tenant_id: &str,
        connection_id: Option<&str>,
        provider: &str,
        kind: &str,
        actor: &str,
        detail: Option<&str>,
    ) -> QueryResult<Event> {
        let event = Event {
            id: new_id(),
            tenant_id: tenant_id.into(),
            connection_id: connection_id.map(Into::into),
            provider: provider.into(),
            kind: kind.into(),
            actor: actor.into(),
            detail: detail.map(Into::into),
            created_at: now(),
        };
        diesel::insert_into(events::table)
            .values(NewEvent {
                id: &event.id,
                tenant_id,
                connection_id,
                provider,
                kind,
                actor,
                detail,
                created_at: event.created_at,
            })
            .execute(conn)?;
        Ok(event)
    }

    /// Whether the connection has an event of `kind` since `since`.
    pub fn exists_since(
        conn: &mut DbConn,
        connection_id: &str,
        kind: &str,
        since: NaiveDateTime,
    ) -> QueryResult<bool> {
        diesel::select(diesel::dsl::exists(
            events::table
                .filter(events::connection_id.eq(connection_id))
                .filter(events::kind.eq(kind))
                .filter(events::created_at.ge(since)),
        ))
        .get_result(conn)
    }

    /// The latest events of a tenant's provider for its card: state changes
    /// (connected, failures, needs_reconnect...) first, newest first, then
    /// routine refreshes, so that a day of refreshes does not hide why a
    /// connection is in the state it is.
    pub fn recent(
        conn: &mut DbConn,
        tenant_id: &str,
        provider: &str,
        limit: i64,
    ) -> QueryResult<Vec<Event>> {
        events::table
            .filter(events::tenant_id.eq(tenant_id))
            .filter(events::provider.eq(provider))
            // false sorts first on both backends.
            .order((
                events::kind.eq("refreshed").asc(),
                events::created_at.desc(),
                events::id.desc(),
            ))
            .limit(limit)
            .select(Event::as_select())
            .load(conn)
    }

    /// Deletes up to `batch` events older than `before`; returns how many.
    pub fn prune(conn: &mut DbConn, before: NaiveDateTime, batch: i64) -> QueryResult<usize> {
        let old: Vec<String> = events::table
            .filter(events::created_at.lt(before))
            .select(events::id)
            .limit(batch)
            .load(conn)?;
        diesel::delete(events::table.filter(events::id.eq_any(&old))).execute(conn)
    }
}
