//! Storing a fresh grant, and choosing which account is the default.

use super::row::{aad, unknown_account, Connection, Kind, Status, TokenSet};
use crate::crypto::KeyRing;
use crate::db::listen::notify_changed;
use crate::db::schema::connections;
use crate::db::{now, DbConn};
use crate::error::{AppError, AppResult, Code};
use crate::ids::{AccountId, ConnectionId, ProviderKey, TenantId};
use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::Connection as _;

/// A freshly granted token set and what is known about its account.
#[derive(Debug)]
pub struct Grant<'a> {
    pub tenant_id: &'a TenantId,
    pub provider: &'a ProviderKey,
    pub account_id: &'a AccountId,
    pub account_name: Option<&'a str>,
    pub scopes: &'a [String],
    pub tokens: &'a TokenSet,
    pub expires_at: Option<NaiveDateTime>,
    pub refresh_expires_at: Option<NaiveDateTime>,
    pub next_refresh_at: Option<NaiveDateTime>,
    pub metadata: &'a serde_json::Value,
    /// The business the account belongs to (the provider's `parent_account`).
    pub parent_account_id: Option<&'a AccountId>,
    /// The CRM's tags of the connect: stored when given, else the row keeps
    /// what it has.
    pub tags: Option<&'a crate::ids::Tags>,
    /// How the token came; an OAuth grant replaces a private token in place.
    pub kind: Kind,
}

#[derive(Insertable, AsChangeset)]
#[diesel(table_name = connections, treat_none_as_null = true)]
struct GrantRow<'a> {
    account_name: Option<&'a str>,
    status: &'a str,
    scopes: String,
    token_ciphertext: Option<Vec<u8>>,
    key_id: Option<String>,
    expires_at: Option<NaiveDateTime>,
    refresh_expires_at: Option<NaiveDateTime>,
    next_refresh_at: Option<NaiveDateTime>,
    lease_owner: Option<String>,
    lease_until: Option<NaiveDateTime>,
    failure_count: i32,
    last_error: Option<String>,
    metadata: String,
    parent_account_id: Option<&'a str>,
    last_refreshed_at: Option<NaiveDateTime>,
    updated_at: NaiveDateTime,
    error_since: Option<NaiveDateTime>,
    kind: Kind,
}

fn unique_violation(e: &diesel::result::Error) -> bool {
    matches!(
        e,
        diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::UniqueViolation, _)
    )
}

impl Connection {
    /// Stores a new grant for (tenant, provider, account): a new row, or the
    /// existing one overwritten with status `connected`. Returns the row.
    pub fn store_grant(
        conn: &mut DbConn,
        ring: &KeyRing,
        grant: &Grant<'_>,
    ) -> AppResult<Connection> {
        let plaintext = serde_json::to_vec(grant.tokens).map_err(AppError::internal)?;
        let tags = grant.tags.map(crate::ids::Tags::to_json);
        let row = |id: &str| {
            let sealed = ring.seal(&plaintext, aad(id, grant.tenant_id, grant.provider));
            let t = now();
            GrantRow {
                account_name: grant.account_name,
                status: Status::Connected.as_str(),
                scopes: serde_json::to_string(grant.scopes).unwrap_or_else(|_| "[]".into()),
                token_ciphertext: Some(sealed.bytes),
                key_id: Some(sealed.key_id),
                expires_at: grant.expires_at,
                refresh_expires_at: grant.refresh_expires_at,
                next_refresh_at: grant.next_refresh_at,
                lease_owner: None,
                lease_until: None,
                failure_count: 0,
                last_error: None,
                metadata: grant.metadata.to_string(),
                parent_account_id: grant.parent_account_id.map(AccountId::as_str),
                last_refreshed_at: Some(t),
                updated_at: t,
                error_since: None,
                kind: grant.kind,
            }
        };
        // A losing racer on the insert (same account, or a second default
        // through the partial unique index) sees the winner on the second pass.
        for _ in 0..2 {
            let has_default =
                Connection::default_for(conn, grant.tenant_id, grant.provider)?.is_some();
            let written =
                match Connection::find(conn, grant.tenant_id, grant.provider, grant.account_id)? {
                    Some(existing) => {
                        // A reconnect keeps its flag; an account that comes back
                        // while no other is default becomes the default.
                        let is_default = existing.is_default || !has_default;
                        diesel::update(connections::table.find(&existing.id))
                            .set((
                                row(&existing.id),
                                connections::version.eq(connections::version + 1),
                                connections::is_default.eq(is_default),
                                tags.as_ref().map(|t| connections::tags.eq(t)),
                            ))
                            .execute(conn)
                            .map(|_| existing.id)
                    }
                    None => {
                        let id = ConnectionId::fresh();
                        diesel::insert_into(connections::table)
                            .values((
                                connections::id.eq(&id),
                                connections::tenant_id.eq(grant.tenant_id),
                                connections::provider.eq(grant.provider),
                                connections::account_id.eq(grant.account_id),
                                connections::version.eq(0i64),
                                connections::created_at.eq(now()),
                                // The first account connected is the default.
                                connections::is_default.eq(!has_default),
                                connections::tags.eq(&tags),
                                row(&id),
                            ))
                            .execute(conn)
                            .map(|_| id)
                    }
                };
            match written {
                Ok(id) => {
                    notify_changed(conn, grant.tenant_id, grant.provider)?;
                    return Ok(Connection::by_id(conn, &id)?);
                }
                Err(e) if unique_violation(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(AppError::conflict(
            Code::ConcurrentUpdate,
            "the connection changed while saving; try again",
        ))
    }

    /// Makes the connected account `id` its tenant's default for its provider,
    /// in one transaction: the flag leaves the old default and comes to this
    /// one, and both rows get a new `version` and `updated_at`, so that any
    /// reader that decided from the old rows sees they moved on. A row whose
    /// refresh is under way (leased) is not touched, because its refresh
    /// commits with a compare-and-swap on `version` that a bump would make
    /// fail, losing the provider's new tokens: then nothing changes and the
    /// caller is asked to retry in a moment. Returns the new default.
    pub fn make_default(conn: &mut DbConn, id: &ConnectionId) -> AppResult<Connection> {
        let target = Connection::by_id(conn, id)
            .optional()?
            .filter(|c| c.has_tokens())
            .ok_or_else(unknown_account)?;
        if target.is_default {
            return Ok(target);
        }
        let busy = || {
            AppError::unavailable(
                Code::RefreshInProgress,
                "a refresh of one of these accounts is under way; try again in a moment",
                2,
            )
        };
        conn.transaction(|conn| {
            let t = now();
            // Writes first: on SQLite that takes the write lock up front
            // (waiting on busy_timeout) instead of failing a lock upgrade.
            diesel::update(
                connections::table
                    .filter(connections::tenant_id.eq(&target.tenant_id))
                    .filter(connections::provider.eq(&target.provider))
                    .filter(connections::is_default)
                    .filter(connections::id.ne(&target.id))
                    .filter(
                        connections::lease_until
                            .is_null()
                            .or(connections::lease_until.lt(t)),
                    ),
            )
            .set((
                connections::is_default.eq(false),
                connections::version.eq(connections::version + 1),
                connections::updated_at.eq(t),
            ))
            .execute(conn)?;
            let set = diesel::update(
                connections::table
                    .find(&target.id)
                    .filter(connections::token_ciphertext.is_not_null())
                    .filter(
                        connections::lease_until
                            .is_null()
                            .or(connections::lease_until.lt(t)),
                    ),
            )
            .set((
                connections::is_default.eq(true),
                connections::version.eq(connections::version + 1),
                connections::updated_at.eq(t),
            ))
            .execute(conn);
            match set {
                // A leased old default kept its flag: the index refuses a second.
                Err(e) if unique_violation(&e) => Err(busy()),
                Err(e) => Err(e.into()),
                Ok(1) => {
                    notify_changed(conn, &target.tenant_id, &target.provider)?;
                    Ok(Connection::by_id(conn, &target.id)?)
                }
                Ok(_) => match Connection::by_id(conn, &target.id).optional()? {
                    Some(c) if c.has_tokens() => Err(busy()),
                    _ => Err(unknown_account()),
                },
            }
        })
    }

    /// Gives `provider`'s account `account_id` a new name on every row
    /// holding its tokens (the provider renamed it); returns their tenants,
    /// whose other instances are told. `updated_at` stays: a name is not a
    /// change a refresh in flight must yield to.
    pub fn rename_account(
        conn: &mut DbConn,
        provider: &ProviderKey,
        account_id: &AccountId,
        name: &str,
    ) -> QueryResult<Vec<TenantId>> {
        let held = connections::table
            .filter(connections::provider.eq(provider))
            .filter(connections::account_id.eq(account_id))
            .filter(connections::token_ciphertext.is_not_null());
        diesel::update(held)
            .set(connections::account_name.eq(name))
            .execute(conn)?;
        let tenants: Vec<TenantId> = held.select(connections::tenant_id).load(conn)?;
        for tenant in &tenants {
            notify_changed(conn, tenant, provider)?;
        }
        Ok(tenants)
    }
}
