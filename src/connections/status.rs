//! What the CRM and the dashboard are told about a tenant's connections:
//! one `StatusView`, the body of the API's status routes, the source of every
//! fact on a dashboard card, and the `Status` schema of the OpenAPI document.

use crate::db::models::connection::{unknown_account, Connection, Kind, Status};
use crate::db::DbConn;
use crate::error::AppResult;
use crate::ids::{AccountId, TenantId};
use crate::providers::Provider;
use chrono::NaiveDateTime;

/// The status of one provider for a tenant: its default account (or the
/// account asked for) and, for the provider as a whole, every account.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[schema(as = Status)]
pub struct StatusView {
    pub provider: String,
    pub status: PublicStatus,
    /// The account this status is of; none when not connected.
    pub account: Option<AccountRef>,
    /// Whether this account is the tenant's default for the provider (served
    /// when a caller names no account).
    pub default: bool,
    /// How its token came: `oauth`, or `private_token` (a token the
    /// account's owner created at the provider: never refreshed, replaced
    /// by an OAuth grant of the account). Null when not connected.
    #[schema(value_type = Option<String>, example = "oauth")]
    pub kind: Option<Kind>,
    pub scopes: Vec<String>,
    /// Scopes the provider is now configured to ask for that this account
    /// was not granted (the operator added some since): reconnecting grants
    /// them.
    pub missing_scopes: Vec<String>,
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
    #[schema(format = DateTime)]
    pub last_refreshed_at: Option<String>,
    /// When the refresh token lapses, for providers that document a lifetime
    /// (Spotify, GoHighLevel, Microsoft): someone must reconnect before then.
    #[schema(format = DateTime)]
    pub lapses_at: Option<String>,
    /// What the provider said about the grant (e.g. a GoHighLevel location's
    /// company id).
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    pub last_error: Option<String>,
    /// Every connected account of the provider, the default first, then in
    /// the order they were connected. Only in a provider's status (no
    /// `account` parameter).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accounts: Option<Vec<AccountSummary>>,
}

/// A provider account: its id at the provider and its readable name.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct AccountRef {
    #[schema(value_type = String)]
    pub id: AccountId,
    pub name: Option<String>,
}

/// One line of a provider's account list.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct AccountSummary {
    #[schema(value_type = String)]
    pub id: AccountId,
    pub name: Option<String>,
    pub status: PublicStatus,
    pub default: bool,
    /// `oauth` or `private_token`.
    #[schema(value_type = String, example = "oauth")]
    pub kind: Kind,
}

/// The status the CRM and the dashboard see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PublicStatus {
    Connected,
    NeedsReconnect,
    /// Refreshes are failing for a reason that may pass; Tether retries.
    Error,
    NotConnected,
}

impl PublicStatus {
    /// As in JSON bodies (and the dashboard's CSS classes).
    pub fn as_str(self) -> &'static str {
        match self {
            PublicStatus::Connected => "connected",
            PublicStatus::NeedsReconnect => "needs_reconnect",
            PublicStatus::Error => "error",
            PublicStatus::NotConnected => "not_connected",
        }
    }

    /// As the dashboard shows it.
    pub fn label(self) -> &'static str {
        match self {
            PublicStatus::Connected => "Connected",
            PublicStatus::NeedsReconnect => "Needs reconnecting",
            PublicStatus::Error => "Refresh failing, retrying",
            PublicStatus::NotConnected => "Not connected",
        }
    }
}

impl std::fmt::Display for PublicStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A disconnected row (or none) is "not connected".
pub fn public_status(c: Option<&Connection>) -> PublicStatus {
    match c.map(Connection::status) {
        Some(Status::Connected) => PublicStatus::Connected,
        Some(Status::NeedsReconnect) => PublicStatus::NeedsReconnect,
        Some(Status::Error) => PublicStatus::Error,
        Some(Status::Disconnected) | None => PublicStatus::NotConnected,
    }
}

fn iso(t: Option<NaiveDateTime>) -> Option<String> {
    t.map(|t| {
        t.and_utc()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    })
}

impl StatusView {
    /// One account's view (`None`: not connected).
    pub fn of(provider: &Provider, c: Option<&Connection>) -> StatusView {
        let live = c.filter(|c| c.has_tokens());
        let scopes = live.map(Connection::scopes).unwrap_or_default();
        StatusView {
            provider: provider.key.to_string(),
            // A private token's scopes are its owner's choice, not asked for.
            missing_scopes: live
                .filter(|c| c.kind == Kind::OAuth)
                .map_or_else(Vec::new, |_| missing_scopes(provider, &scopes)),
            kind: live.map(|c| c.kind),
            status: public_status(c),
            account: live.map(|c| AccountRef {
                id: c.account_id.clone(),
                name: c.account_name.clone(),
            }),
            default: live.is_some_and(|c| c.is_default),
            scopes,
            expires_at: iso(live.and_then(|c| c.expires_at)),
            last_refreshed_at: iso(live.and_then(|c| c.last_refreshed_at)),
            lapses_at: iso(live.and_then(|c| c.refresh_expires_at)),
            metadata: live.map_or_else(|| serde_json::json!({}), Connection::metadata),
            last_error: live.and_then(|c| c.last_error.clone()),
            accounts: None,
        }
    }

    /// A provider's view: the default account's, plus every account (as
    /// [`Connection::accounts`] lists them, default first).
    pub fn of_provider(provider: &Provider, accounts: &[Connection]) -> StatusView {
        let default = accounts.first().filter(|c| c.is_default);
        StatusView {
            accounts: Some(
                accounts
                    .iter()
                    .map(|c| AccountSummary {
                        id: c.account_id.clone(),
                        name: c.account_name.clone(),
                        status: public_status(Some(c)),
                        default: c.is_default,
                        kind: c.kind,
                    })
                    .collect(),
            ),
            ..StatusView::of(provider, default)
        }
    }
}

/// The view of one named account, or of the provider (default and list).
pub fn load(
    c: &mut DbConn,
    tenant_id: &TenantId,
    provider: &Provider,
    account: Option<&AccountId>,
) -> AppResult<StatusView> {
    match account {
        Some(a) => {
            let row = Connection::for_account(c, tenant_id, &provider.key, a)?
                .ok_or_else(unknown_account)?;
            Ok(StatusView::of(provider, Some(&row)))
        }
        None => Ok(StatusView::of_provider(
            provider,
            &Connection::accounts(c, tenant_id, &provider.key)?,
        )),
    }
}

/// The provider's configured scopes that `granted` lacks, leaving out those
/// only ever asked for (`request_only_scopes`: `offline_access`, which no
/// token answer echoes). Google answers
/// `email` and `profile` with their long names
/// (`https://www.googleapis.com/auth/userinfo.email`), which count as them.
pub fn missing_scopes(provider: &Provider, granted: &[String]) -> Vec<String> {
    let has = |wanted: &str| {
        granted.iter().any(|g| {
            g == wanted
                || (matches!(wanted, "email" | "profile")
                    && g.strip_suffix(wanted)
                        .is_some_and(|rest| rest.ends_with("/auth/userinfo.")))
        })
    };
    provider
        .scopes
        .iter()
        .filter(|s| !has(s) && !provider.request_only_scopes.contains(s))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_scopes_are_the_configured_ones_not_granted_with_googles_long_names_counting() {
        let mut google = crate::providers::presets::all()
            .into_iter()
            .find(|p| p.key.as_str() == "google")
            .unwrap();
        google.scopes = vec![
            "openid".into(),
            "email".into(),
            "https://www.googleapis.com/auth/webmasters.readonly".into(),
        ];
        let granted = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(missing_scopes(
            &google,
            &granted(&[
                "openid",
                "https://www.googleapis.com/auth/userinfo.email",
                "https://www.googleapis.com/auth/webmasters.readonly"
            ])
        )
        .is_empty());
        assert_eq!(
            missing_scopes(&google, &granted(&["openid", "email"])),
            vec!["https://www.googleapis.com/auth/webmasters.readonly".to_string()]
        );
        assert_eq!(
            missing_scopes(&google, &granted(&["openid", "https://evil.example/email"]))[0],
            "email",
            "only Google's own long name counts"
        );
    }

    #[test]
    fn a_request_only_scope_is_never_missing_unless_the_list_drops_it() {
        let mut microsoft = crate::providers::presets::all()
            .into_iter()
            .find(|p| p.key.as_str() == "microsoft")
            .unwrap();
        assert!(microsoft.scopes.contains(&"offline_access".to_string()));
        let granted = vec!["User.Read".to_string()];
        assert!(missing_scopes(&microsoft, &granted).is_empty());
        microsoft.request_only_scopes.clear();
        assert_eq!(missing_scopes(&microsoft, &granted), ["offline_access"]);
    }
}
