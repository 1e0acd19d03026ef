//! Recording how a refresh ended: the new tokens committed, or the failure.

use super::row::{Connection, Status};
use crate::crypto::Sealed;
use crate::db::listen::notify_changed;
use crate::db::schema::connections;
use crate::db::{now, DbConn};
use chrono::NaiveDateTime;
use diesel::prelude::*;

/// What a successful refresh changes besides the tokens.
#[derive(Debug, Clone)]
pub struct Refreshed {
    pub expires_at: Option<NaiveDateTime>,
    pub next_refresh_at: Option<NaiveDateTime>,
    /// When the (possibly renewed) refresh token lapses.
    pub refresh_expires_at: Option<NaiveDateTime>,
    pub scopes: Vec<String>,
}

impl Connection {
    /// Commits a refreshed token set, sealed for this row by [`Connection::seal`],
    /// if the row is still the one we leased (compare-and-swap on version and
    /// lease owner), and releases the lease. The lease may have lapsed: an
    /// answer held through an outage is stored as long as nobody else took
    /// the row (a claim names a new owner; a disconnect, a reconnect and
    /// every other commit move the version on).
    pub fn commit_refresh(
        conn: &mut DbConn,
        leased: &Connection,
        owner: &str,
        sealed: &Sealed,
        refreshed: &Refreshed,
    ) -> QueryResult<bool> {
        let t = now();
        let n = diesel::update(
            connections::table
                .find(&leased.id)
                .filter(connections::version.eq(leased.version))
                .filter(connections::lease_owner.eq(owner)),
        )
        .set((
            connections::token_ciphertext.eq(&sealed.bytes),
            connections::key_id.eq(&sealed.key_id),
            connections::status.eq(Status::Connected.as_str()),
            connections::expires_at.eq(refreshed.expires_at),
            connections::next_refresh_at.eq(refreshed.next_refresh_at),
            connections::refresh_expires_at.eq(refreshed.refresh_expires_at),
            connections::scopes
                .eq(serde_json::to_string(&refreshed.scopes).unwrap_or_else(|_| "[]".into())),
            connections::version.eq(connections::version + 1),
            connections::lease_owner.eq(None::<String>),
            connections::lease_until.eq(None::<NaiveDateTime>),
            connections::failure_count.eq(0),
            connections::last_error.eq(None::<String>),
            connections::error_since.eq(None::<NaiveDateTime>),
            connections::last_refreshed_at.eq(t),
            connections::updated_at.eq(t),
        ))
        .execute(conn)?;
        notify_changed(conn, &leased.tenant_id, &leased.provider)?;
        Ok(n == 1)
    }

    /// Records a failed refresh and releases the lease. `status` is
    /// `needs_reconnect` (no more tries: `next_refresh_at` is cleared) or `error`.
    pub fn record_failure(
        conn: &mut DbConn,
        leased: &Connection,
        owner: &str,
        status: Status,
        error: &str,
        next_refresh_at: Option<NaiveDateTime>,
    ) -> QueryResult<bool> {
        let t = now();
        // A streak of failures keeps the moment it began; the row was read
        // under our lease, so its status is the one before this failure.
        let error_since = match (status, leased.status) {
            (Status::Error, Status::Error) => leased.error_since.or(Some(t)),
            (Status::Error, _) => Some(t),
            _ => None,
        };
        let n = diesel::update(
            connections::table
                .find(&leased.id)
                .filter(connections::version.eq(leased.version))
                .filter(connections::lease_owner.eq(owner)),
        )
        .set((
            connections::status.eq(status.as_str()),
            connections::next_refresh_at.eq(next_refresh_at),
            connections::failure_count.eq(connections::failure_count + 1),
            connections::last_error.eq(error),
            connections::error_since.eq(error_since),
            connections::lease_owner.eq(None::<String>),
            connections::lease_until.eq(None::<NaiveDateTime>),
            connections::updated_at.eq(t),
        ))
        .execute(conn)?;
        notify_changed(conn, &leased.tenant_id, &leased.provider)?;
        Ok(n == 1)
    }
}
