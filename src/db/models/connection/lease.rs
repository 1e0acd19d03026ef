//! Leases: claiming one connection or those due for refresh, extending
//! and releasing a lease.

use super::row::Connection;
use crate::crypto::KeyRing;
use crate::db::models::instance::{Takeover, TAKEABLE};
use crate::db::schema::connections;
use crate::db::{now, DbConn};
use crate::ids::ConnectionId;
use chrono::NaiveDateTime;
use diesel::prelude::*;

/// Raw SQL written with PostgreSQL's `$n` placeholders, for the backend at
/// hand (SQLite numbers them `?n`).
fn numbered(conn: &DbConn, sql: &str) -> String {
    match conn {
        DbConn::Postgres(_) => sql.to_string(),
        DbConn::Sqlite(_) => sql.replace('$', "?"),
    }
}

impl Connection {
    /// Takes the lease if nobody holds it: the one guard that keeps a
    /// refresh token from being sent twice. A lapsed lease is taken only as
    /// `takeover` allows (its holder may hold the answer; see
    /// `db::models::instance`). Returns the row as leased.
    pub fn claim(
        conn: &mut DbConn,
        id: &ConnectionId,
        owner: &str,
        until: NaiveDateTime,
        takeover: &Takeover,
    ) -> QueryResult<Option<Connection>> {
        use diesel::sql_types::{Bool, Text, Timestamp};
        let (own, others, since) = takeover.binds();
        let sql = format!(
            "UPDATE connections SET lease_owner = $1, lease_until = $2 WHERE id = $3 \
             AND token_ciphertext IS NOT NULL AND status IN ('connected', 'error') \
             AND (lease_until IS NULL OR lease_until < $4) AND {}",
            TAKEABLE
                .replace("{own}", "$5")
                .replace("{others}", "$6")
                .replace("{since}", "$7")
        );
        let taken = diesel::sql_query(numbered(conn, &sql))
            .bind::<Text, _>(owner)
            .bind::<Timestamp, _>(until)
            .bind::<Text, _>(id)
            .bind::<Timestamp, _>(now())
            .bind::<Text, _>(own)
            .bind::<Bool, _>(others)
            .bind::<Timestamp, _>(since)
            .execute(conn)?;
        if taken == 1 {
            Connection::by_id(conn, id).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Whether a claim of `id` under `takeover` would find its lease free.
    pub fn lease_free(
        conn: &mut DbConn,
        id: &ConnectionId,
        takeover: &Takeover,
    ) -> QueryResult<bool> {
        use diesel::sql_types::{BigInt, Bool, Text, Timestamp};
        #[derive(QueryableByName)]
        struct Count {
            #[diesel(sql_type = BigInt)]
            n: i64,
        }
        let (own, others, since) = takeover.binds();
        let sql = format!(
            "SELECT COUNT(*) AS n FROM connections WHERE id = $1 \
             AND (lease_until IS NULL OR lease_until < $2) AND {}",
            TAKEABLE
                .replace("{own}", "$3")
                .replace("{others}", "$4")
                .replace("{since}", "$5")
        );
        let found: Count = diesel::sql_query(numbered(conn, &sql))
            .bind::<Text, _>(id)
            .bind::<Timestamp, _>(now())
            .bind::<Text, _>(own)
            .bind::<Bool, _>(others)
            .bind::<Timestamp, _>(since)
            .get_result(conn)?;
        Ok(found.n > 0)
    }

    /// Pushes our lease's end out to `until`, if we still hold it.
    pub fn extend_lease(
        conn: &mut DbConn,
        id: &ConnectionId,
        owner: &str,
        until: NaiveDateTime,
    ) -> QueryResult<bool> {
        diesel::update(
            connections::table
                .find(id)
                .filter(connections::lease_owner.eq(owner))
                .filter(connections::lease_until.gt(now())),
        )
        .set(connections::lease_until.eq(until))
        .execute(conn)
        .map(|n| n == 1)
    }

    /// Leases up to `limit` connections due for refresh (oldest due first) to
    /// `owner` and returns them. On PostgreSQL, `FOR UPDATE SKIP LOCKED` lets
    /// instances claiming at the same moment take disjoint rows; SQLite
    /// serialises writers, so the same conditional UPDATE suffices. Only rows
    /// sealed with a key of `ring` are taken: a row another instance sealed
    /// with a key this one lacks is left to the instances that can open it.
    pub fn claim_due(
        conn: &mut DbConn,
        owner: &str,
        until: NaiveDateTime,
        limit: i64,
        takeover: &Takeover,
        ring: &KeyRing,
    ) -> QueryResult<Vec<Connection>> {
        use diesel::sql_types::{BigInt, Bool, Text, Timestamp};
        #[derive(QueryableByName)]
        struct Id {
            #[diesel(sql_type = Text)]
            id: String,
        }
        // Key ids are letters, digits, '-' and '_' (`KeyRing::parse`): safe
        // to quote inline, and their number varies, which binds cannot.
        let key_ids = ring
            .key_ids()
            .iter()
            .map(|k| format!("'{k}'"))
            .collect::<Vec<_>>()
            .join(", ");
        let due = format!(
            "next_refresh_at <= $3 AND status IN ('connected', 'error') \
             AND token_ciphertext IS NOT NULL AND key_id IN ({key_ids}) \
             AND (lease_until IS NULL OR lease_until < $3) \
             AND {} ORDER BY next_refresh_at LIMIT $4",
            TAKEABLE
                .replace("{own}", "$5")
                .replace("{others}", "$6")
                .replace("{since}", "$7")
        );
        let lock = match conn {
            DbConn::Postgres(_) => " FOR UPDATE SKIP LOCKED",
            DbConn::Sqlite(_) => "",
        };
        let sql = format!(
            "UPDATE connections SET lease_owner = $1, lease_until = $2 WHERE id IN \
             (SELECT id FROM connections WHERE {due}{lock}) RETURNING id"
        );
        let (own, others, since) = takeover.binds();
        let ids: Vec<Id> = diesel::sql_query(numbered(conn, &sql))
            .bind::<Text, _>(owner)
            .bind::<Timestamp, _>(until)
            .bind::<Timestamp, _>(now())
            .bind::<BigInt, _>(limit)
            .bind::<Text, _>(own)
            .bind::<Bool, _>(others)
            .bind::<Timestamp, _>(since)
            .load(conn)?;
        let ids: Vec<String> = ids.into_iter().map(|r| r.id).collect();
        connections::table
            .filter(connections::id.eq_any(&ids))
            .filter(connections::lease_owner.eq(owner))
            .select(Connection::as_select())
            .load(conn)
    }

    /// Releases a lease without changing anything else.
    pub fn release(conn: &mut DbConn, id: &ConnectionId, owner: &str) -> QueryResult<usize> {
        diesel::update(
            connections::table
                .find(id)
                .filter(connections::lease_owner.eq(owner)),
        )
        .set((
            connections::lease_owner.eq(None::<String>),
            connections::lease_until.eq(None::<NaiveDateTime>),
        ))
        .execute(conn)
    }

    /// Releases every lease held by one instance (lease owners are
    /// `<instance>:<attempt>`), at the end of a graceful shutdown.
    pub fn release_all_of(conn: &mut DbConn, instance_id: &str) -> QueryResult<usize> {
        diesel::update(
            connections::table.filter(connections::lease_owner.like(format!("{instance_id}:%"))),
        )
        .set((
            connections::lease_owner.eq(None::<String>),
            connections::lease_until.eq(None::<NaiveDateTime>),
        ))
        .execute(conn)
    }
}
