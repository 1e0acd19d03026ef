//! Searching connections across tenants, and counting them by status.

use super::row::{Connection, Status};
use crate::db::schema::connections;
use crate::db::DbConn;
use crate::ids::{AccountId, ExternalTenantId, ProviderKey, TenantId};
use diesel::prelude::*;

/// What [`Connection::search`] filters on in SQL; every part is optional.
#[derive(Debug, Default)]
pub struct Search<'a> {
    pub tenant_id: Option<&'a TenantId>,
    pub provider: Option<&'a ProviderKey>,
    pub account_id: Option<&'a AccountId>,
    /// The business the account belongs to (the indexed
    /// `parent_account_id`, set from the provider's `parent_account`).
    pub parent_account_id: Option<AccountId>,
    /// Any of these statuses (empty: any).
    pub statuses: &'a [Status],
    /// Metadata fields the row must name (their values are checked by the caller).
    pub metadata_names: &'a [String],
}

/// `name` as it appears as a key in stored metadata (compact JSON).
fn json_key(name: &str) -> String {
    format!("{}:", serde_json::Value::from(name))
}

/// `text` as a LIKE pattern matching itself, with `\` as the escape.
fn like_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl Connection {
    /// Connections matching `search` (rows holding tokens only: a
    /// disconnected row is not a connection any more), with their tenant's
    /// external id, in tenant external id, provider, account id (then row
    /// id) order: the first `limit` of them, and whether more matched. `keep` is asked about each row the SQL filters let through
    /// (metadata lives in a JSON text column that SQL cannot read portably);
    /// rows are read in batches, so a scan never holds more than one batch
    /// besides the answer.
    pub fn search(
        conn: &mut DbConn,
        search: &Search<'_>,
        limit: usize,
        keep: impl Fn(&Connection) -> bool,
    ) -> QueryResult<(Vec<(Connection, ExternalTenantId)>, bool)> {
        use crate::db::schema::tenants;
        const BATCH: i64 = 500;
        let statuses: Vec<&str> = search.statuses.iter().map(|s| s.as_str()).collect();
        let mut found = Vec::new();
        let mut offset = 0;
        loop {
            // Sorted in SQL, before the limit: the first rows of the order,
            // not a sort of whichever rows came first.
            let mut q = connections::table
                .inner_join(tenants::table)
                .filter(connections::token_ciphertext.is_not_null())
                .order((
                    tenants::external_id.asc(),
                    connections::provider.asc(),
                    connections::account_id.asc(),
                    connections::id.asc(),
                ))
                .offset(offset)
                .limit(BATCH)
                .select((Connection::as_select(), tenants::external_id))
                .into_boxed();
            if let Some(t) = search.tenant_id {
                q = q.filter(connections::tenant_id.eq(t.to_string()));
            }
            if let Some(p) = search.provider {
                q = q.filter(connections::provider.eq(p.to_string()));
            }
            if let Some(a) = search.account_id {
                q = q.filter(connections::account_id.eq(a));
            }
            if let Some(parent) = &search.parent_account_id {
                q = q.filter(connections::parent_account_id.eq(parent.as_str()));
            }
            if !statuses.is_empty() {
                q = q.filter(connections::status.eq_any(statuses.clone()));
            }
            // A bound pattern, never SQL text: narrows the scan to rows whose
            // metadata names the field; `keep` decides on the parsed value.
            for name in search.metadata_names {
                q = q.filter(
                    connections::metadata
                        .like(format!("%{}%", like_literal(&json_key(name))))
                        .escape('\\'),
                );
            }
            let batch: Vec<(Connection, ExternalTenantId)> = q.load(conn)?;
            let full = batch.len() as i64 == BATCH;
            offset += BATCH;
            for (row, tenant) in batch {
                if keep(&row) {
                    if found.len() == limit {
                        return Ok((found, true));
                    }
                    found.push((row, tenant));
                }
            }
            if !full {
                return Ok((found, false));
            }
        }
    }

    /// Connections per status, for metrics.
    pub fn count_by_status(conn: &mut DbConn) -> QueryResult<Vec<(String, i64)>> {
        connections::table
            .group_by(connections::status)
            .select((connections::status, diesel::dsl::count_star()))
            .load(conn)
    }
}
