//! Connect sessions: a token the CRM's own page holds for minutes, good for
//! a number of connects of the providers it lists. Each connect spends one
//! use and goes on as a single-use connect link.

use crate::crypto::{random_token, sha256_hex, Secret};
use crate::db::schema::connect_sessions;
use crate::db::{now, DbConn};
use crate::ids::{Tags, TenantId};
use chrono::{Duration, NaiveDateTime};
use diesel::prelude::*;

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = connect_sessions)]
pub struct ConnectSession {
    pub token_hash: String,
    pub tenant_id: TenantId,
    /// The provider keys it may connect, separated by spaces.
    pub providers: String,
    /// Who opened it (an API key's actor), recorded as the connect's actor.
    pub created_by: String,
    /// The person it is for, shown on its page (not a check).
    pub email: Option<String>,
    /// The CRM's tags for the connects (a JSON object, `ids::Tags`).
    pub tags: Option<String>,
    pub uses_left: i32,
    pub expires_at: NaiveDateTime,
    pub created_at: NaiveDateTime,
}

/// What a session is opened with.
pub struct NewSession<'a> {
    pub tenant_id: &'a TenantId,
    pub providers: &'a [String],
    pub created_by: &'a str,
    pub email: Option<&'a str>,
    pub tags: Option<&'a Tags>,
    pub uses: i32,
    pub ttl: Duration,
}

impl ConnectSession {
    /// Opens a session; returns its token (shown once, stored as a hash)
    /// and expiry. Sessions expired for a day are removed on the way.
    pub fn create(
        conn: &mut DbConn,
        new: &NewSession,
    ) -> QueryResult<(Secret<String>, NaiveDateTime)> {
        let token = random_token(32);
        let t = now();
        diesel::insert_into(connect_sessions::table)
            .values((
                connect_sessions::token_hash.eq(sha256_hex(token.as_bytes())),
                connect_sessions::tenant_id.eq(new.tenant_id),
                connect_sessions::providers.eq(new.providers.join(" ")),
                connect_sessions::created_by.eq(new.created_by),
                connect_sessions::email.eq(new.email),
                connect_sessions::tags.eq(new.tags.map(Tags::to_json)),
                connect_sessions::uses_left.eq(new.uses),
                connect_sessions::expires_at.eq(t + new.ttl),
                connect_sessions::created_at.eq(t),
            ))
            .execute(conn)?;
        diesel::delete(
            connect_sessions::table.filter(connect_sessions::expires_at.lt(t - Duration::days(1))),
        )
        .execute(conn)?;
        Ok((Secret::new(token), t + new.ttl))
    }

    /// The session, if it has a use left and has not expired, without
    /// spending one: its page may be fetched any number of times.
    pub fn usable(conn: &mut DbConn, token: &str) -> QueryResult<Option<ConnectSession>> {
        let Some(hash) = Self::hash(token) else {
            return Ok(None);
        };
        connect_sessions::table
            .find(&hash)
            .filter(connect_sessions::uses_left.gt(0))
            .filter(connect_sessions::expires_at.gt(now()))
            .select(ConnectSession::as_select())
            .first(conn)
            .optional()
    }

    /// Spends one use: `None` when it is unknown, used up or expired. One
    /// statement, so two clicks at once never spend the same last use.
    pub fn spend(conn: &mut DbConn, token: &str) -> QueryResult<Option<ConnectSession>> {
        let Some(hash) = Self::hash(token) else {
            return Ok(None);
        };
        let spent = diesel::update(
            connect_sessions::table
                .find(&hash)
                .filter(connect_sessions::uses_left.gt(0))
                .filter(connect_sessions::expires_at.gt(now())),
        )
        .set(connect_sessions::uses_left.eq(connect_sessions::uses_left - 1))
        .execute(conn)?;
        if spent != 1 {
            return Ok(None);
        }
        connect_sessions::table
            .find(&hash)
            .select(ConnectSession::as_select())
            .first(conn)
            .optional()
    }

    /// Whether the session may connect `provider`.
    pub fn allows(&self, provider: &str) -> bool {
        self.providers.split(' ').any(|p| p == provider)
    }

    /// The stored hash of a token that could be one (at most 128 characters).
    fn hash(token: &str) -> Option<String> {
        (token.len() <= 128).then(|| sha256_hex(token.as_bytes()))
    }
}
