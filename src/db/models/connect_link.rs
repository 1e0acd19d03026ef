//! Single-use links to connect a provider for a tenant without signing in.

use crate::crypto::{random_token, sha256_hex, Secret};
use crate::db::schema::connect_links;
use crate::db::{now, DbConn};
use crate::ids::{ProviderKey, Tags, TenantId};
use chrono::{Duration, NaiveDateTime};
use diesel::prelude::*;

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = connect_links)]
pub struct ConnectLink {
    pub token_hash: String,
    pub tenant_id: TenantId,
    pub provider: String,
    pub created_by: String,
    pub expires_at: NaiveDateTime,
    pub used_at: Option<NaiveDateTime>,
    pub created_at: NaiveDateTime,
    /// The person the link is for, shown on its page (not a check: the CRM
    /// owns identity).
    pub email: Option<String>,
    /// The CRM's tags for the connect (a JSON object, `ids::Tags`).
    pub tags: Option<String>,
    /// The account a reconnect link is for (its provider id): the flow
    /// sends its login hint and refuses a callback with another account.
    pub account: Option<String>,
}

/// What a link is made with besides its tenant and provider.
pub struct NewLink<'a> {
    pub created_by: &'a str,
    pub email: Option<&'a str>,
    pub tags: Option<&'a Tags>,
    /// Reconnect of this account only.
    pub account: Option<&'a str>,
    pub ttl: Duration,
}

impl ConnectLink {
    /// Creates a link; returns its token (shown once, stored as a hash) and expiry.
    pub fn create(
        conn: &mut DbConn,
        tenant_id: &TenantId,
        provider: &ProviderKey,
        new: &NewLink,
    ) -> QueryResult<(Secret<String>, NaiveDateTime)> {
        let NewLink {
            created_by,
            email,
            tags,
            account,
            ttl,
        } = *new;
        let token = random_token(32);
        let t = now();
        diesel::insert_into(connect_links::table)
            .values((
                connect_links::token_hash.eq(sha256_hex(token.as_bytes())),
                connect_links::tenant_id.eq(tenant_id),
                connect_links::provider.eq(provider),
                connect_links::created_by.eq(created_by),
                connect_links::email.eq(email),
                connect_links::tags.eq(tags.map(Tags::to_json)),
                connect_links::account.eq(account),
                connect_links::expires_at.eq(t + ttl),
                connect_links::created_at.eq(t),
            ))
            .execute(conn)?;
        diesel::delete(
            connect_links::table.filter(connect_links::expires_at.lt(t - Duration::days(1))),
        )
        .execute(conn)?;
        Ok((Secret::new(token), t + ttl))
    }

    /// The link, if it can still be used, without using it up: its page may
    /// be fetched any number of times (link previews, mail scanners).
    pub fn usable(conn: &mut DbConn, token: &str) -> QueryResult<Option<ConnectLink>> {
        let Some(hash) = Self::hash(token) else {
            return Ok(None);
        };
        connect_links::table
            .find(&hash)
            .filter(connect_links::used_at.is_null())
            .filter(connect_links::expires_at.gt(now()))
            .select(ConnectLink::as_select())
            .first(conn)
            .optional()
    }

    /// The stored hash of a token that could be one (at most 128 characters).
    fn hash(token: &str) -> Option<String> {
        (token.len() <= 128).then(|| sha256_hex(token.as_bytes()))
    }

    /// Uses the link up: `None` when it is unknown, used or expired. Exactly
    /// one caller gets the link.
    pub fn redeem(conn: &mut DbConn, token: &str) -> QueryResult<Option<ConnectLink>> {
        let Some(hash) = Self::hash(token) else {
            return Ok(None);
        };
        let t = now();
        let taken = diesel::update(
            connect_links::table
                .find(&hash)
                .filter(connect_links::used_at.is_null())
                .filter(connect_links::expires_at.gt(t)),
        )
        .set(connect_links::used_at.eq(t))
        .execute(conn)?;
        if taken != 1 {
            return Ok(None);
        }
        connect_links::table
            .find(&hash)
            .select(ConnectLink::as_select())
            .first(conn)
            .optional()
    }
}
