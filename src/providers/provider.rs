//! What Tether knows of one OAuth provider.

use crate::crypto::Secret;
use crate::ids::{AccountId, ProviderKey};
use std::collections::BTreeMap;

/// How the client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// HTTP Basic with id and secret.
    Basic,
    /// `client_id` and `client_secret` in the form body.
    Post,
    /// `client_id` and `client_secret` in a JSON body (Wix).
    Json,
}

/// How a connection's access token is renewed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefreshStyle {
    /// RFC 6749 `grant_type=refresh_token`.
    Standard,
    /// Tokens do not expire or cannot be renewed: reconnect when they lapse.
    None,
    /// Instagram: `GET .../refresh_access_token?grant_type=ig_refresh_token`.
    Instagram,
    /// Wix: mint a new token with client credentials and the site's instance id.
    ClientCredentials,
}

impl RefreshStyle {
    /// Whether a connection is renewed without a refresh token of its own
    /// (its platform renews it another way: `platform::Platform::renew`).
    pub fn renews_without_refresh_token(self) -> bool {
        matches!(
            self,
            RefreshStyle::Instagram | RefreshStyle::ClientCredentials
        )
    }
}

/// How a connection is first made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flow {
    /// The browser is sent to the provider's authorize URL.
    AuthorizationCode,
    /// No user redirect: tokens are minted per site instance (Wix apps).
    ClientCredentials,
}

/// How the account is looked up at `userinfo_url`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Identity {
    /// `GET` with the access token as a bearer token (and the API headers).
    Bearer,
    /// RFC 7662-style introspection: `POST` of the token in a form, with the
    /// client's credentials (HubSpot).
    Introspect,
}

/// What a reconnect sends as OpenID Connect's `login_hint`, so that the
/// provider offers the account being reconnected rather than any other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoginHint {
    /// The account's id (Google takes its `sub`).
    AccountId,
    /// The account's name (Microsoft takes the user principal name).
    AccountName,
}

/// The type of a field of a provider's settings schema.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    String,
    Number,
    Boolean,
}

impl FieldType {
    pub fn as_str(self) -> &'static str {
        match self {
            FieldType::String => "string",
            FieldType::Number => "number",
            FieldType::Boolean => "boolean",
        }
    }

    /// Whether `value` is of this type (JSON's string, number or boolean).
    pub fn admits(self, value: &serde_json::Value) -> bool {
        match self {
            FieldType::String => value.is_string(),
            FieldType::Number => value.is_number(),
            FieldType::Boolean => value.is_boolean(),
        }
    }
}

/// One named field of a provider's per-tenant settings (a tenant may leave
/// any of them unset).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct SettingField {
    /// The key in the settings object.
    pub name: String,
    #[serde(rename = "type")]
    pub kind: FieldType,
    /// What the dashboard's form calls it (the name when none was given).
    pub label: String,
}

impl SettingField {
    pub fn new(name: &str, kind: FieldType, label: &str) -> SettingField {
        SettingField {
            name: name.into(),
            kind,
            label: label.into(),
        }
    }
}

/// A budget of calls a provider grants each of its accounts over a window
/// (GoHighLevel: 100 per 10 s and 200,000 per day per location), which the
/// proxy spends for every instance together (`connections::budget`), so
/// that the provider never has to refuse. Read from the providers file as
/// `{ calls = 100, window = "10s" }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "BudgetToml")]
pub struct Budget {
    /// Calls allowed in any stretch of `window`.
    pub calls: u64,
    /// Whole seconds, from 1 s to [`Budget::LONGEST_WINDOW_SECS`].
    pub window: std::time::Duration,
}

impl Budget {
    /// The longest window a budget may declare (31 days): longer ones are
    /// not rate limits but quotas, which providers reset on their own calendar.
    pub const LONGEST_WINDOW_SECS: u64 = 31 * 86_400;

    /// A budget of `calls` per `window_secs` seconds (for presets).
    pub const fn per_secs(calls: u64, window_secs: u64) -> Budget {
        Budget {
            calls,
            window: std::time::Duration::from_secs(window_secs),
        }
    }
}

/// A budget as the providers file writes it: the window as a duration
/// (`90s`, `10m`, `1h`, `1d`).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct BudgetToml {
    calls: u64,
    window: String,
}

impl TryFrom<BudgetToml> for Budget {
    type Error = String;

    fn try_from(t: BudgetToml) -> Result<Budget, String> {
        let window = crate::config::parse_duration(&t.window, 1, Budget::LONGEST_WINDOW_SECS)
            .map_err(|why| format!("an api_budgets window {why}"))?;
        Ok(Budget {
            calls: t.calls,
            window,
        })
    }
}

/// One configured provider.
#[derive(Debug, Clone)]
pub struct Provider {
    pub key: ProviderKey,
    pub display_name: String,
    pub flow: Flow,
    pub authorize_url: String,
    pub token_url: String,
    pub revocation_url: Option<String>,
    /// Where the account is looked up after a connect. `{field}` stands for
    /// that field of the token response (GoHighLevel's
    /// `.../locations/{locationId}`); when the field is missing, no lookup.
    pub userinfo_url: Option<String>,
    /// How `userinfo_url` is asked.
    pub identity: Identity,
    /// JSON pointers to the account's id, tried in order, each in the
    /// identity document, then in the token response (GoHighLevel: the
    /// location, else the agency's company).
    pub account_id: Vec<String>,
    /// JSON pointer to the account's name, found the same way.
    pub account_name: Option<String>,
    /// JSON pointer to a detail shown after the name in parentheses
    /// (HubSpot: the hub's domain).
    pub account_label: Option<String>,
    /// JSON pointer into the kept metadata (`keep_fields`) naming the
    /// business an account belongs to (GoHighLevel: a location's
    /// `/companyId`); stored as an indexed column, so that an agency's
    /// accounts are found without reading JSON.
    pub parent_account: Option<String>,
    pub issuer: Option<String>,
    /// RFC 9207: the provider puts `iss` on every authorization response (its
    /// metadata's `authorization_response_iss_parameter_supported`), so a
    /// callback without one is refused rather than taken on trust.
    pub iss_required: bool,
    pub scopes: Vec<String>,
    /// Scopes the app may use where the account grants them, sent as
    /// `optional_scope` beside `scope` (HubSpot: a required scope the
    /// account cannot grant fails the install; an optional one is left out).
    pub optional_scopes: Vec<String>,
    /// Scopes that are asked for but never echoed in a token answer's
    /// `scope` (OpenID's `offline_access`, which only asks for a refresh
    /// token): never counted as missing from a grant.
    pub request_only_scopes: Vec<String>,
    /// Each scope in a sentence a client admin reads ("See your email
    /// address"); a scope without one is shown by its code.
    pub scope_descriptions: BTreeMap<String, String>,
    /// What a reconnect of one account sends as `login_hint`, where the
    /// provider takes one.
    pub login_hint: Option<LoginHint>,
    pub scope_separator: String,
    /// Installs may start at the provider (GoHighLevel's Marketplace): its
    /// callback then carries a code and no state, and the grant is held
    /// unassigned until a tenant claims it. Never with PKCE (no verifier
    /// can exist for a flow Tether did not start).
    pub provider_initiated_installs: bool,
    pub pkce: bool,
    pub client_auth: ClientAuth,
    /// How the revocation endpoint takes the client's credentials, where it
    /// differs from the token endpoint (Calendly: Basic at `/oauth/token`,
    /// form fields at `/oauth/revoke`); `None`: as `client_auth`.
    pub revocation_client_auth: Option<ClientAuth>,
    pub client_id_env: String,
    pub client_secret_env: String,
    pub keep_fields: Vec<String>,
    pub api_base_url: Option<String>,
    /// Fixed headers every call to the provider's API carries (GoHighLevel's
    /// `Version`): the proxy adds them, and the token API returns them for
    /// callers that call the provider themselves.
    pub api_headers: BTreeMap<String, String>,
    /// Per-account budgets of API calls the proxy keeps to (none: the
    /// provider's own 429s are the only limit).
    pub api_budgets: Vec<Budget>,
    pub authorize_params: BTreeMap<String, String>,
    /// Authorize parameters that make the provider show its consent screen
    /// or account chooser instead of answering at once for an app already
    /// approved; sent on connect-link flows, over `authorize_params`.
    pub consent_params: BTreeMap<String, String>,
    pub token_params: BTreeMap<String, String>,
    pub refresh: RefreshStyle,
    /// Known refresh-token lifetime, to warn before it lapses.
    pub refresh_token_lifetime_days: Option<i64>,
    /// Whether a refresh returns a new refresh token and retires the old one
    /// (so that a refresh restarts the refresh token's tracked lifetime). An
    /// unknown outcome is resent either way: docs/design.md section 1.
    pub rotates_refresh_tokens: bool,
    /// GoHighLevel: an agency's (Company) connection mints location tokens
    /// (`POST {api_base_url}/oauth/locationToken`) and lists the locations
    /// where the app is installed (`GET .../oauth/installedLocations`).
    pub location_tokens: bool,
    /// The provider's accounts are businesses (a GoHighLevel location or
    /// company, a HubSpot hub, a Wix site): each is held by one tenant at
    /// most, whichever way its grant arrives (`connections::grant`).
    pub one_holder: bool,
    /// JSON pointer into the kept metadata naming the person who installed
    /// or approved the app (GoHighLevel: `/userId`), shown on the claim
    /// page of a held install beside the business (`parent_account`).
    pub installed_by: Option<String>,
    /// What the platform calls the tokens an account's owner creates for
    /// an integration (GoHighLevel: "Private Integration Token"): a tenant
    /// may store one as a connection (`connections::private_token`),
    /// checked with `userinfo_url`. `None`: OAuth only.
    pub private_tokens: Option<String>,
    /// The platform whose code does what this data cannot say (a folder of
    /// `src/platforms/`, reached through `platform::Platform`); one of
    /// [`super::PLATFORMS`], or `None` for a provider that is data only.
    pub platform: Option<String>,
    /// The fields a tenant's settings for this provider may have; empty: any
    /// JSON object (the dashboard shows a JSON box instead of a form).
    pub settings_schema: Vec<SettingField>,
    /// Client id and secret, when configured.
    pub credentials: Option<(String, Secret<String>)>,
    /// The provider's app (a Marketplace app's id), from
    /// `TETHER_<KEY>_APP_ID`: its app webhooks for another app are refused.
    pub app_id: Option<String>,
    /// The raw Ed25519 key its app webhooks are signed with: the preset's
    /// (the platform's published key), or `TETHER_<KEY>_WEBHOOK_PUBLIC_KEY`.
    pub webhook_key: Option<[u8; 32]>,
}

/// The field names of `{field}` placeholders in a URL template, or why the
/// template is malformed.
pub fn placeholders(template: &str) -> Result<Vec<&str>, String> {
    let mut names = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or("a '{' has no closing '}'".to_string())?;
        let name = &after[..close];
        let valid =
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            return Err(format!(
                "'{{{name}}}' is not a placeholder: letters, digits and '_' name a field of the token response"
            ));
        }
        names.push(name);
        rest = &after[close + 1..];
    }
    if rest.contains('}') {
        return Err("a '}' has no opening '{'".into());
    }
    Ok(names)
}

impl Provider {
    /// The business an account with this kept metadata belongs to
    /// ([`Provider::parent_account`]), if the provider names one.
    pub fn parent_of(&self, metadata: &serde_json::Value) -> Option<AccountId> {
        let pointer = self.parent_account.as_deref()?;
        metadata
            .pointer(pointer)
            .and_then(serde_json::Value::as_str)
            .and_then(AccountId::check)
    }

    /// The marketplace app's id as the client id says it, for GoHighLevel's
    /// installedLocations when TETHER_GOHIGHLEVEL_APP_ID is unset: the part
    /// before its first '-' (GoHighLevel client ids are `<appId>-<suffix>`).
    pub fn client_app_id(&self) -> Option<&str> {
        let (id, _) = self.credentials.as_ref()?;
        id.split('-').next().filter(|s| !s.is_empty())
    }
    /// `userinfo_url` with its placeholders filled from the token response:
    /// `None` without a URL, or when a field is missing or is not a plain
    /// id (letters, digits, '-', '_', '.'), so nothing odd reaches a path.
    pub fn identity_url(&self, token: &serde_json::Value) -> Option<String> {
        let template = self.userinfo_url.as_deref()?;
        let mut url = template.to_string();
        for name in placeholders(template).ok()? {
            let value = match token.get(name)? {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(n) => n.to_string(),
                _ => return None,
            };
            let plain = (1..=256).contains(&value.len())
                && value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
            if !plain || value == "." || value == ".." {
                return None;
            }
            url = url.replace(&format!("{{{name}}}"), &value);
        }
        Some(url)
    }

    pub fn enabled(&self) -> bool {
        self.credentials.is_some()
    }

    /// Why the provider is disabled, or `None` when it is enabled.
    pub fn disabled_reason(&self) -> Option<String> {
        if self.enabled() {
            None
        } else {
            Some(format!(
                "set {} and {}",
                self.client_id_env, self.client_secret_env
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_placeholders_are_named() {
        assert_eq!(placeholders("https://x/{a}/{b_2}").unwrap(), ["a", "b_2"]);
        assert!(placeholders("https://x/{a")
            .unwrap_err()
            .contains("closing"));
        assert!(placeholders("https://x/a}")
            .unwrap_err()
            .contains("opening"));
        assert!(placeholders("https://x/{a.b}")
            .unwrap_err()
            .contains("placeholder"));
    }
}
