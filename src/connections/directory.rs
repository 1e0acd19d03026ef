//! Connections across tenants: which tenant owns a provider account (a
//! platform's inbound traffic names its account, or a metadata field such
//! as a location id), and which connections need attention. One filter, read from the API's query string or the CLI's
//! flags; the caller's scope (every tenant, or one) bounds what it sees.

use crate::db::models::connection::{Connection, Search, Status};
use crate::db::models::tenant::Tenant;
use crate::db::DbConn;
use crate::error::{AppError, AppResult, Code};
use crate::ids::{AccountId, ExternalTenantId, ProviderKey, TenantId};
use crate::providers::Catalogue;

/// Connections in one answer when the caller names no `limit`.
pub const DEFAULT_LIMIT: usize = 100;
/// The most a caller may ask for in one answer.
pub const MAX_LIMIT: usize = 1000;
/// Metadata fields one query may match on.
pub const MAX_METADATA_FILTERS: usize = 8;
/// The query keys that are Tether's own filters; any other key names a
/// metadata field.
pub const RESERVED: [&str; 5] = ["tenant", "provider", "account", "status", "limit"];

/// What to look for. Every part narrows the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub tenant: Option<ExternalTenantId>,
    pub provider: Option<ProviderKey>,
    pub account: Option<AccountId>,
    /// Any of these (empty: any status).
    pub statuses: Vec<Status>,
    /// Metadata fields and the value each must have, e.g. a location id.
    pub metadata: Vec<(String, String)>,
    pub limit: usize,
    /// The providers the caller may see (an API key limited to some);
    /// `None`: every provider. Set by the caller, never from the query.
    pub visible_providers: Option<Vec<String>>,
}

impl Default for Filter {
    fn default() -> Self {
        Filter {
            tenant: None,
            provider: None,
            account: None,
            statuses: Vec::new(),
            metadata: Vec::new(),
            limit: DEFAULT_LIMIT,
            visible_providers: None,
        }
    }
}

fn bad(message: impl Into<String>) -> AppError {
    AppError::bad_request(Code::InvalidQuery, message)
}

/// A value a provider could have issued: 1 to 256 characters, none a control.
fn plain_value(v: &str) -> bool {
    !v.is_empty() && v.chars().count() <= 256 && !v.chars().any(char::is_control)
}

/// A metadata field name: a letter or `_`, then letters, digits, `_`, `.` or `-`.
fn field_name(k: &str) -> bool {
    let mut chars = k.chars();
    k.len() <= 64
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

impl Filter {
    /// Reads the query's pairs (decoded): the reserved keys are filters,
    /// any other key is a metadata field. A key given twice, a malformed
    /// name or value, or too many fields is a 400 that names the problem.
    pub fn from_query(pairs: Vec<(String, String)>) -> AppResult<Filter> {
        let mut filter = Filter::default();
        let mut seen: Vec<String> = Vec::new();
        for (key, value) in pairs {
            if seen.contains(&key) {
                return Err(bad(format!("'{key}' is given more than once")));
            }
            seen.push(key.clone());
            match key.as_str() {
                "tenant" => filter.tenant = Some(ExternalTenantId::parse(&value)?),
                "provider" => {
                    if !crate::providers::valid_key(&value) {
                        return Err(bad(
                            "provider is a provider's key, as /api/v1/providers lists them",
                        ));
                    }
                    filter.provider = Some(ProviderKey::known(value));
                }
                "account" => filter.account = Some(AccountId::parse(&value)?),
                "status" => filter.statuses = parse_statuses(&value)?,
                "limit" => filter.limit = parse_limit(&value)?,
                _ => {
                    if !field_name(&key) {
                        return Err(bad(
                            "a metadata field name is a letter or '_' then up to 63 letters, digits, '_', '.' or '-'",
                        ));
                    }
                    if !plain_value(&value) {
                        return Err(bad(format!(
                            "the value of metadata field '{key}' must be 1 to 256 characters, no control characters"
                        )));
                    }
                    filter.metadata.push((key, value));
                }
            }
        }
        if filter.metadata.len() > MAX_METADATA_FILTERS {
            return Err(bad(format!(
                "at most {MAX_METADATA_FILTERS} metadata fields per query"
            )));
        }
        Ok(filter)
    }

    /// Whether a row's metadata has every field asked for with its value: a
    /// string equal to it, or a number or boolean written that way.
    /// Whether the caller may see `row`'s provider.
    fn visible(&self, row: &Connection) -> bool {
        self.visible_providers
            .as_ref()
            .is_none_or(|list| list.iter().any(|p| p == row.provider.as_str()))
    }

    fn metadata_matches(&self, row: &Connection) -> bool {
        if self.metadata.is_empty() {
            return true;
        }
        let metadata = row.metadata();
        self.metadata
            .iter()
            .all(|(name, want)| match metadata.get(name) {
                Some(serde_json::Value::String(s)) => s == want,
                Some(serde_json::Value::Number(n)) => n.to_string() == *want,
                Some(serde_json::Value::Bool(b)) => b.to_string() == *want,
                _ => false,
            })
    }
}

/// `connected`, `needs_reconnect` or `error`, or several of them separated
/// by commas (`needs_reconnect,error`: everything needing attention).
pub fn parse_statuses(raw: &str) -> AppResult<Vec<Status>> {
    let mut out = Vec::new();
    for part in raw.split(',') {
        let status = match part.trim() {
            "connected" => Status::Connected,
            "needs_reconnect" => Status::NeedsReconnect,
            "error" => Status::Error,
            _ => {
                return Err(AppError::bad_request(
                    Code::InvalidStatus,
                    "status is connected, needs_reconnect or error, or several of them separated by commas",
                ))
            }
        };
        if !out.contains(&status) {
            out.push(status);
        }
    }
    Ok(out)
}

fn parse_limit(raw: &str) -> AppResult<usize> {
    raw.parse::<usize>()
        .ok()
        .filter(|n| (1..=MAX_LIMIT).contains(n))
        .ok_or_else(|| bad(format!("limit is a number from 1 to {MAX_LIMIT}")))
}

/// Whose connections a caller may see.
#[derive(Debug, Clone)]
pub enum Scope {
    /// An operator, or an API key for every tenant.
    AllTenants,
    /// An API key limited to this tenant.
    Tenant(TenantId),
}

/// One connection found, with its tenant.
#[derive(Debug, Clone)]
pub struct Listed {
    pub tenant: ExternalTenantId,
    pub connection: Connection,
}

/// The answer: at most the filter's limit, in tenant, provider and account
/// order, and whether more matched.
#[derive(Debug, Clone)]
pub struct Listing {
    pub connections: Vec<Listed>,
    pub truncated: bool,
}

/// The connections `filter` asks for that `scope` may see. An unknown
/// tenant or provider is a 404; a tenant outside a scoped caller's own is a
/// 403 (whether it exists or not, as everywhere in the API).
pub fn find(
    conn: &mut DbConn,
    catalogue: &Catalogue,
    scope: &Scope,
    filter: &Filter,
) -> AppResult<Listing> {
    let named = match &filter.tenant {
        None => None,
        Some(ext) => {
            let found = Tenant::by_external_id(conn, ext)?;
            match (scope, found) {
                (Scope::Tenant(own), Some(t)) if t.id == *own => Some(t.id),
                (Scope::Tenant(_), _) => {
                    return Err(AppError::forbidden(
                        "this API key may not act for that tenant",
                    ))
                }
                (Scope::AllTenants, Some(t)) => Some(t.id),
                (Scope::AllTenants, None) => {
                    return Err(AppError::not_found(format!("no tenant '{ext}'")))
                }
            }
        }
    };
    let tenant_id = match scope {
        Scope::Tenant(own) => Some(own.clone()),
        Scope::AllTenants => named,
    };
    if let Some(p) = &filter.provider {
        if catalogue.get(p).is_none() {
            return Err(AppError::not_found(format!("no provider '{p}'")));
        }
    }
    let names: Vec<String> = filter.metadata.iter().map(|(k, _)| k.clone()).collect();
    // The business field (the provider's `parent_account`) is an indexed column:
    // it narrows the scan exactly, before the metadata is read.
    let parent_pointer = filter
        .provider
        .as_ref()
        .and_then(|p| catalogue.get(p))
        .and_then(|p| p.parent_account.clone());
    let parent_account_id = filter
        .metadata
        .iter()
        .find(|(name, _)| parent_pointer.as_deref() == Some(&format!("/{name}")))
        .and_then(|(_, value)| AccountId::check(value));
    let search = Search {
        tenant_id: tenant_id.as_ref(),
        provider: filter.provider.as_ref(),
        account_id: filter.account.as_ref(),
        parent_account_id,
        statuses: &filter.statuses,
        metadata_names: &names,
    };
    let (rows, truncated) = Connection::search(conn, &search, filter.limit, |row| {
        filter.visible(row) && filter.metadata_matches(row)
    })?;
    let connections: Vec<Listed> = rows
        .into_iter()
        .map(|(connection, tenant)| Listed { tenant, connection })
        .collect();
    Ok(Listing {
        connections,
        truncated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(q: &[(&str, &str)]) -> Vec<(String, String)> {
        q.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn reserved_keys_are_filters_and_any_other_key_is_a_metadata_field() {
        let f = Filter::from_query(pairs(&[
            ("provider", "acme"),
            ("siteId", "loc_1"),
            ("status", "needs_reconnect,error"),
            ("limit", "5"),
        ]))
        .unwrap();
        assert_eq!(f.provider.as_deref(), Some("acme"));
        assert_eq!(f.metadata, vec![("siteId".into(), "loc_1".into())]);
        assert_eq!(f.statuses, vec![Status::NeedsReconnect, Status::Error]);
        assert_eq!(f.limit, 5);
    }

    #[test]
    fn malformed_names_values_repeats_and_limits_are_refused() {
        for q in [
            vec![("siteId", "a"), ("siteId", "b")],
            vec![("1abc", "x")],
            vec![("loc'Id", "x")],
            vec![("siteId", "")],
            vec![("siteId", "a\u{0}b")],
            vec![("limit", "0")],
            vec![("limit", "1001")],
            vec![("provider", "Not A Key")],
        ] {
            let e = Filter::from_query(pairs(&q)).unwrap_err();
            assert_eq!(e.code(), "invalid_query", "{q:?}");
        }
        let e = Filter::from_query(pairs(&[("status", "disconnected")])).unwrap_err();
        assert_eq!(e.code(), "invalid_status");
        let e = Filter::from_query(pairs(&[("tenant", "a b")])).unwrap_err();
        assert_eq!(e.code(), "invalid_tenant");
        let many: Vec<(String, String)> = (0..=MAX_METADATA_FILTERS)
            .map(|i| (format!("f{i}"), "x".to_string()))
            .collect();
        assert_eq!(
            Filter::from_query(many).unwrap_err().code(),
            "invalid_query"
        );
    }
}
