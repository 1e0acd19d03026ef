//! What Tether knows of one OAuth provider.

use crate::crypto::Secret;
use crate::ids::ProviderKey;
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

/// How a connection is first made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flow {
    /// The browser is sent to the provider's authorize URL.
    AuthorizationCode,
    /// No user redirect: tokens are minted per site instance (Wix apps).
    ClientCredentials,
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
    pub userinfo_url: Option<String>,
    /// JSON pointer into the userinfo (else token) response.
    pub account_id: Option<String>,
    pub account_name: Option<String>,
    pub issuer: Option<String>,
    /// RFC 9207: the provider puts `iss` on every authorization response (its
    /// metadata's `authorization_response_iss_parameter_supported`), so a
    /// callback without one is refused rather than taken on trust.
    pub iss_required: bool,
    pub scopes: Vec<String>,
    pub scope_separator: String,
    /// Installs may start at the provider (GoHighLevel's Marketplace): its
    /// callback then carries a code and no state, and the grant is held
    /// unassigned until a tenant claims it. Never with PKCE (no verifier
    /// can exist for a flow Tether did not start).
    pub provider_initiated_installs: bool,
    pub pkce: bool,
    pub client_auth: ClientAuth,
    pub client_id_env: String,
    pub client_secret_env: String,
    pub keep_fields: Vec<String>,
    pub api_base_url: Option<String>,
    /// Fixed headers every call to the provider's API carries (GoHighLevel's
    /// `Version`): the proxy adds them, and the token API returns them for
    /// callers that call the provider themselves.
    pub api_headers: BTreeMap<String, String>,
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
    /// Client id and secret, when configured.
    pub credentials: Option<(String, Secret<String>)>,
}

impl Provider {
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
