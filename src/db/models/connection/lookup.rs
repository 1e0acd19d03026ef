//! Finding connections by id, tenant, provider, account and metadata.

use super::row::{Connection, Status};
use crate::db::models::event::EventKind;
use crate::db::schema::{connections, events};
use crate::db::DbConn;
use crate::ids::{AccountId, ConnectionId, ProviderKey, TenantId};
use chrono::NaiveDateTime;
use diesel::prelude::*;

/// `value` with LIKE's special characters turned into `%`: the pattern
/// still matches every row that holds `value` (and maybe more), and the
/// caller checks each candidate exactly.
fn like_escaped(value: &str) -> String {
    value
        .chars()
        .map(|c| {
            if matches!(c, '%' | '_' | '\\') {
                '%'
            } else {
                c
            }
        })
        .collect()
}

impl Connection {
    pub fn by_id(conn: &mut DbConn, id: &ConnectionId) -> QueryResult<Connection> {
        connections::table
            .find(id)
            .select(Connection::as_select())
            .first(conn)
    }

    pub fn find(
        conn: &mut DbConn,
        tenant_id: &TenantId,
        provider: &ProviderKey,
        account_id: &AccountId,
    ) -> QueryResult<Option<Connection>> {
        connections::table
            .filter(connections::tenant_id.eq(tenant_id))
            .filter(connections::provider.eq(provider))
            .filter(connections::account_id.eq(account_id))
            .select(Connection::as_select())
            .first(conn)
            .optional()
    }

    /// The tenant's default account of `provider`, if it holds tokens: what
    /// the token API, the proxy and the status serve when no account is named.
    /// This is the token API's one query, answered from the partial unique
    /// index `connections_default` (the bare `is_default` term matches its
    /// predicate on both backends). It runs on the backend's own connection,
    /// whose prepared-statement cache it then hits (through the multi-backend
    /// enum it is parsed again on every call).
    pub fn default_for(
        conn: &mut DbConn,
        tenant_id: &TenantId,
        provider: &ProviderKey,
    ) -> QueryResult<Option<Connection>> {
        macro_rules! query {
            () => {
                connections::table
                    .filter(connections::tenant_id.eq(tenant_id))
                    .filter(connections::provider.eq(provider))
                    .filter(connections::is_default)
                    .filter(connections::token_ciphertext.is_not_null())
                    .select(Connection::as_select())
            };
        }
        match conn {
            DbConn::Postgres(c) => query!().first(c).optional(),
            DbConn::Sqlite(c) => query!().first(c).optional(),
        }
    }

    /// The tenant holding `provider`'s account `account_id`: the one whose
    /// row holds its tokens (the earliest, should two: `tether doctor`
    /// reports that), if any. A disconnected row holds nothing.
    pub fn holder(
        conn: &mut DbConn,
        provider: &ProviderKey,
        account_id: &AccountId,
    ) -> QueryResult<Option<TenantId>> {
        connections::table
            .filter(connections::provider.eq(provider))
            .filter(connections::account_id.eq(account_id))
            .filter(connections::token_ciphertext.is_not_null())
            .order((connections::created_at.asc(), connections::id.asc()))
            .select(connections::tenant_id)
            .first(conn)
            .optional()
    }

    /// Accounts of the `providers` held by more than one tenant (tokens in
    /// each), with the tenants: left by versions without the one-holder
    /// rule, reported by `tether doctor`, never resolved silently.
    pub fn held_twice(
        conn: &mut DbConn,
        providers: &[ProviderKey],
    ) -> QueryResult<Vec<(ProviderKey, AccountId, Vec<TenantId>)>> {
        let twice: Vec<(ProviderKey, AccountId)> = connections::table
            .filter(connections::provider.eq_any(providers))
            .filter(connections::token_ciphertext.is_not_null())
            .group_by((connections::provider, connections::account_id))
            .having(
                diesel::dsl::count(connections::tenant_id)
                    .aggregate_distinct()
                    .gt(1),
            )
            .order((connections::provider.asc(), connections::account_id.asc()))
            .select((connections::provider, connections::account_id))
            .load(conn)?;
        twice
            .into_iter()
            .map(|(provider, account)| {
                let tenants = connections::table
                    .filter(connections::provider.eq(&provider))
                    .filter(connections::account_id.eq(&account))
                    .filter(connections::token_ciphertext.is_not_null())
                    // One row per (tenant, provider, account): no repeats.
                    .order(connections::created_at.asc())
                    .select(connections::tenant_id)
                    .load(conn)?;
                Ok((provider, account, tenants))
            })
            .collect()
    }

    /// Every row (any tenant, any status) of `provider`'s account `account_id`.
    pub fn all_of_account(
        conn: &mut DbConn,
        provider: &ProviderKey,
        account_id: &AccountId,
    ) -> QueryResult<Vec<Connection>> {
        connections::table
            .filter(connections::provider.eq(provider))
            .filter(connections::account_id.eq(account_id))
            .order(connections::id.asc())
            .select(Connection::as_select())
            .load(conn)
    }

    /// Every row of `provider` whose account belongs to `parent` (an
    /// agency's company), by the indexed column.
    pub fn of_parent(
        conn: &mut DbConn,
        provider: &ProviderKey,
        parent: &AccountId,
    ) -> QueryResult<Vec<Connection>> {
        connections::table
            .filter(connections::provider.eq(provider))
            .filter(connections::parent_account_id.eq(parent))
            .order(connections::id.asc())
            .select(Connection::as_select())
            .load(conn)
    }

    /// One connected account (holding tokens) of the tenant's `provider`.
    pub fn for_account(
        conn: &mut DbConn,
        tenant_id: &TenantId,
        provider: &ProviderKey,
        account_id: &AccountId,
    ) -> QueryResult<Option<Connection>> {
        Ok(Connection::find(conn, tenant_id, provider, account_id)?.filter(|c| c.has_tokens()))
    }

    /// The named account, or the default when `account` is `None`.
    pub fn lookup(
        conn: &mut DbConn,
        tenant_id: &TenantId,
        provider: &ProviderKey,
        account: Option<&AccountId>,
    ) -> QueryResult<Option<Connection>> {
        match account {
            None => Connection::default_for(conn, tenant_id, provider),
            Some(a) => Connection::for_account(conn, tenant_id, provider, a),
        }
    }

    /// Connected rows of `providers` whose metadata holds every one of
    /// `fragments` (metadata is compact JSON, so a fragment such as
    /// `"kind":"x"` matches exactly), each with the account ids its tenant
    /// holds of that provider. The caller reads the parsed metadata.
    pub fn connected_with_metadata(
        conn: &mut DbConn,
        providers: &[ProviderKey],
        fragments: &[&str],
    ) -> QueryResult<Vec<(Connection, Vec<AccountId>)>> {
        let mut query = connections::table
            .filter(connections::provider.eq_any(providers))
            .filter(connections::status.eq(Status::Connected.as_str()))
            .filter(connections::token_ciphertext.is_not_null())
            .into_boxed();
        for fragment in fragments {
            query =
                query.filter(connections::metadata.like(format!("%{}%", like_escaped(fragment))));
        }
        let rows: Vec<Connection> = query.select(Connection::as_select()).load(conn)?;
        rows.into_iter()
            .map(|row| {
                let held = connections::table
                    .filter(connections::tenant_id.eq(&row.tenant_id))
                    .filter(connections::provider.eq(&row.provider))
                    .filter(connections::token_ciphertext.is_not_null())
                    .select(connections::account_id)
                    .load(conn)?;
                Ok((row, held))
            })
            .collect()
    }

    /// Every connected account of the tenant's `provider`: the default first,
    /// then in the order they were connected.
    pub fn accounts(
        conn: &mut DbConn,
        tenant_id: &TenantId,
        provider: &ProviderKey,
    ) -> QueryResult<Vec<Connection>> {
        connections::table
            .filter(connections::tenant_id.eq(tenant_id))
            .filter(connections::provider.eq(provider))
            .filter(connections::token_ciphertext.is_not_null())
            // true sorts last on both backends, so descending puts the default first.
            .order((
                connections::is_default.desc(),
                connections::created_at.asc(),
                connections::id.asc(),
            ))
            .select(Connection::as_select())
            .load(conn)
    }

    /// Every row of the tenant (connected or not), for its removal.
    pub fn of_tenant(conn: &mut DbConn, tenant_id: &TenantId) -> QueryResult<Vec<Connection>> {
        connections::table
            .filter(connections::tenant_id.eq(tenant_id))
            .order((connections::provider.asc(), connections::created_at.asc()))
            .select(Connection::as_select())
            .load(conn)
    }

    /// Connections whose refreshes have failed without a break since before
    /// `before` (status `error`) and whose streak has no `refresh_failing`
    /// event yet, longest failing first (up to 100).
    pub fn failing_unannounced(
        conn: &mut DbConn,
        before: NaiveDateTime,
    ) -> QueryResult<Vec<Connection>> {
        let announced = events::table
            .filter(events::connection_id.eq(connections::id.nullable()))
            .filter(events::kind.eq(EventKind::RefreshFailing.as_str()))
            .filter(events::created_at.nullable().ge(connections::error_since));
        connections::table
            .filter(connections::status.eq(Status::Error.as_str()))
            .filter(connections::error_since.le(before))
            .filter(connections::token_ciphertext.is_not_null())
            .filter(diesel::dsl::not(diesel::dsl::exists(announced)))
            .order(connections::error_since.asc())
            .limit(100)
            .select(Connection::as_select())
            .load(conn)
    }

    /// Live connections whose refresh token lapses before `horizon` (up to 100).
    pub fn refresh_token_lapsing(
        conn: &mut DbConn,
        horizon: NaiveDateTime,
    ) -> QueryResult<Vec<Connection>> {
        connections::table
            .filter(connections::refresh_expires_at.le(horizon))
            .filter(
                connections::status.eq_any([Status::Connected.as_str(), Status::Error.as_str()]),
            )
            .filter(connections::token_ciphertext.is_not_null())
            .order(connections::refresh_expires_at.asc())
            .limit(100)
            .select(Connection::as_select())
            .load(conn)
    }
}
