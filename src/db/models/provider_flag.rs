//! Providers that rejected Tether's client credentials: an operator must act.

use crate::db::schema::provider_flags;
use crate::db::{now, DbConn};
use crate::ids::ProviderKey;
use chrono::NaiveDateTime;
use diesel::prelude::*;

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = provider_flags)]
pub struct ProviderFlag {
    pub provider: String,
    pub error: String,
    pub flagged_at: NaiveDateTime,
}

impl ProviderFlag {
    /// Flags `provider` (or refreshes its flag).
    pub fn raise(conn: &mut DbConn, provider: &ProviderKey, error: &str) -> QueryResult<()> {
        diesel::delete(provider_flags::table.find(provider)).execute(conn)?;
        diesel::insert_into(provider_flags::table)
            .values((
                provider_flags::provider.eq(provider),
                provider_flags::error.eq(error),
                provider_flags::flagged_at.eq(now()),
            ))
            .execute(conn)
            .map(|_| ())
    }

    pub fn clear(conn: &mut DbConn, provider: &ProviderKey) -> QueryResult<usize> {
        diesel::delete(provider_flags::table.find(provider)).execute(conn)
    }

    pub fn all(conn: &mut DbConn) -> QueryResult<Vec<ProviderFlag>> {
        provider_flags::table
            .order(provider_flags::provider.asc())
            .select(ProviderFlag::as_select())
            .load(conn)
    }
}
