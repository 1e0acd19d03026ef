//! The authorization-code flow: state and PKCE, the authorize URL, the
//! callback's checks, the code exchange and the account lookup.

pub mod client;
pub mod token;

use crate::config::Settings;
use crate::crypto::{random_token, redacted, sha256_hex, KeyRing, Secret};
use crate::db::models::oauth_state::{NewState, OAuthState};
use crate::db::{now, DbConn};
use crate::error::{AppError, AppResult, Code};
use crate::ids::AccountId;
use crate::providers::{Flow, Provider};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::Duration;
use client::ProviderError;
use serde_json::Value;
use token::{pointer_str, TokenResponse};

/// How long a started authorization may take.
pub const STATE_TTL_MINUTES: i64 = 10;
/// Where the dashboard lives; the default `return_to`.
pub const DASHBOARD: &str = "/settings/integrations";

/// The S256 challenge of a PKCE verifier.
pub fn pkce_challenge(verifier: &str) -> String {
    use sha2::{Digest, Sha256};
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Accepts only a relative path inside this app: one leading `/`, no `//`,
/// no backslash, no control characters. Anything else is refused outright.
pub fn safe_return_to(value: &str) -> AppResult<String> {
    let ok = value.len() <= 512
        && value.starts_with('/')
        && !value.starts_with("//")
        && !value.contains('\\')
        && !value.chars().any(char::is_control)
        && !value.contains("/..");
    if ok {
        Ok(value.to_string())
    } else {
        Err(AppError::bad_request(
            Code::InvalidReturnTo,
            "return_to must be a path inside Tether, such as /settings/integrations",
        ))
    }
}

/// Who is starting the flow. `Debug` hides the session binding: it is what
/// proves the browser.
#[derive(Clone)]
pub struct Initiator<'a> {
    pub tenant_id: &'a str,
    pub user_id: Option<&'a str>,
    /// Ties the state to the browser session that started it.
    pub session_binding: Option<&'a str>,
    /// Someone who may have approved the app for another account (a connect
    /// link's follower): the provider is asked to show its consent or
    /// account chooser (`Provider::consent_params`).
    pub ask_consent: bool,
    /// The CRM's tags (JSON text of `ids::Tags`), kept with the state until
    /// the callback.
    pub tags: Option<&'a str>,
    /// The listed origin of the CRM page that opened a connect link in a
    /// popup, told the outcome by the callback.
    pub embed_origin: Option<&'a str>,
    /// OpenID Connect's `login_hint`, sent on a reconnect of one account so
    /// that the provider offers that account (`Provider::login_hint`).
    pub login_hint: Option<&'a str>,
    /// A reconnect of this account: a callback with another is refused.
    pub reconnect_account: Option<&'a str>,
}

impl std::fmt::Debug for Initiator<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Initiator")
            .field("tenant_id", &self.tenant_id)
            .field("user_id", &self.user_id)
            .field("session_binding", &redacted(&self.session_binding))
            .field("ask_consent", &self.ask_consent)
            .field("tags", &self.tags)
            .field("embed_origin", &self.embed_origin)
            .field("login_hint", &self.login_hint)
            .field("reconnect_account", &self.reconnect_account)
            .finish_non_exhaustive()
    }
}

/// Records a pending authorization and returns the provider's authorize URL.
pub fn start(
    conn: &mut DbConn,
    ring: &KeyRing,
    settings: &Settings,
    provider: &Provider,
    who: &Initiator<'_>,
    return_to: Option<&str>,
    popup: bool,
) -> AppResult<String> {
    if provider.flow != Flow::AuthorizationCode {
        return Err(AppError::bad_request(
            Code::UnsupportedFlow,
            format!(
                "{} is connected from its own app install, not from here",
                provider.display_name
            ),
        ));
    }
    let state = random_token(32);
    let verifier = provider.pkce.then(|| Secret::new(random_token(48)));
    let redirect_uri = settings.redirect_uri(&provider.key);
    let binding_hash = who.session_binding.map(|b| sha256_hex(b.as_bytes()));
    OAuthState::create(
        conn,
        ring,
        &NewState {
            state_hash: &sha256_hex(state.as_bytes()),
            tenant_id: who.tenant_id,
            user_id: who.user_id,
            session_binding: binding_hash.as_deref(),
            provider: &provider.key,
            verifier: verifier.as_ref(),
            redirect_uri: &redirect_uri,
            return_to,
            popup,
            expires_at: now() + Duration::minutes(STATE_TTL_MINUTES),
            tags: who.tags,
            embed_origin: who.embed_origin,
            reconnect_account: who.reconnect_account,
        },
    )?;
    let mut url = url::Url::parse(&provider.authorize_url).map_err(|_| {
        AppError::internal(format!(
            "provider {} has an invalid authorize_url",
            provider.key
        ))
    })?;
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("response_type", "code")
            .append_pair(
                "client_id",
                provider
                    .credentials
                    .as_ref()
                    .map(|(id, _)| id.as_str())
                    .unwrap_or_default(),
            )
            .append_pair("redirect_uri", &redirect_uri)
            .append_pair("state", &state);
        if !provider.scopes.is_empty() {
            q.append_pair("scope", &provider.scopes.join(&provider.scope_separator));
        }
        if !provider.optional_scopes.is_empty() {
            q.append_pair(
                "optional_scope",
                &provider.optional_scopes.join(&provider.scope_separator),
            );
        }
        if let Some(hint) = who.login_hint {
            q.append_pair("login_hint", hint);
        }
        if let Some(v) = &verifier {
            q.append_pair("code_challenge", &pkce_challenge(v.expose()))
                .append_pair("code_challenge_method", "S256");
        }
        let consent = provider.consent_params.iter().filter(|_| who.ask_consent);
        let overridden = |k: &String| consent.clone().any(|(c, _)| c == k);
        for (k, v) in provider
            .authorize_params
            .iter()
            .filter(|(k, _)| !overridden(k))
        {
            q.append_pair(k, v);
        }
        for (k, v) in consent.clone() {
            q.append_pair(k, v);
        }
    }
    Ok(url.to_string())
}

/// The query of a callback, as received. `Debug` hides the code and the state.
#[derive(Default, serde::Deserialize)]
pub struct CallbackQuery {
    pub code: Option<String>,
    pub state: Option<String>,
    pub iss: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

impl std::fmt::Debug for CallbackQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallbackQuery")
            .field("code", &redacted(&self.code))
            .field("state", &redacted(&self.state))
            .field("iss", &self.iss)
            .field("error", &self.error)
            .field("error_description", &self.error_description)
            .finish()
    }
}

fn invalid_state(why: &str) -> AppError {
    AppError::bad_request(
        Code::InvalidState,
        format!("This sign-in link is not valid ({why}). Start again from the integrations page."),
    )
}

/// Checks a callback against its stored state without changing anything:
/// known, unused, unexpired, same session, same provider, expected issuer
/// (and present, when the provider declares that it always sends one).
pub fn check_callback(
    conn: &mut DbConn,
    provider: &Provider,
    query: &CallbackQuery,
    session_binding: Option<&str>,
) -> AppResult<OAuthState> {
    let state = query
        .state
        .as_deref()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| invalid_state("no state"))?;
    if state.len() > 512 {
        return Err(invalid_state("unknown state"));
    }
    let row = OAuthState::by_hash(conn, &sha256_hex(state.as_bytes()))?
        .ok_or_else(|| invalid_state("unknown state"))?;
    if row.consumed_at.is_some() {
        return Err(invalid_state("already used"));
    }
    if row.expires_at <= now() {
        return Err(invalid_state("expired"));
    }
    if let Some(expected) = &row.session_binding {
        let presented = session_binding.map(|b| sha256_hex(b.as_bytes()));
        if presented.as_deref() != Some(expected.as_str()) {
            return Err(invalid_state("started in another browser session"));
        }
    }
    if provider.key != row.provider.as_str() {
        return Err(AppError::bad_request(
            Code::ProviderMismatch,
            "This sign-in was started for another provider. Start again from the integrations page.",
        ));
    }
    match (&query.iss, &provider.issuer) {
        (Some(iss), Some(expected)) if iss != expected => {
            return Err(AppError::bad_request(
                Code::IssuerMismatch,
                "The answer did not come from the expected provider (iss mismatch).",
            ));
        }
        // RFC 9207 section 2.4: a provider that says it sends `iss` must be
        // believed to; an answer without one may come from another server.
        (None, _) if provider.iss_required => {
            return Err(AppError::bad_request(
                Code::IssuerMissing,
                format!(
                    "The answer did not say which provider it came from (no iss), which {} always does. Start again from the integrations page.",
                    provider.display_name
                ),
            ));
        }
        _ => {}
    }
    Ok(row)
}

/// Uses the state up; loses cleanly to a concurrent callback with the same state.
pub fn consume(conn: &mut DbConn, row: &OAuthState) -> AppResult<()> {
    if OAuthState::consume(conn, &row.id)? {
        Ok(())
    } else {
        Err(invalid_state("already used"))
    }
}

/// A finished exchange: tokens and what we learned about the account.
#[derive(Debug)]
pub struct Authorized {
    pub response: TokenResponse,
    pub account_id: AccountId,
    pub account_name: Option<String>,
    pub scopes: Vec<String>,
    pub metadata: serde_json::Value,
}

/// An error for the person at the browser, from a provider failure.
pub fn provider_failure(provider: &Provider, e: ProviderError) -> AppError {
    let message = match &e {
        ProviderError::ClientMisconfigured { .. } => format!(
            "{} rejected Tether's client credentials. An operator has to check its configuration.",
            provider.display_name
        ),
        ProviderError::Transient { .. } | ProviderError::Unknown { .. } => format!(
            "{} is not answering right now. Try again in a minute.",
            provider.display_name
        ),
        ProviderError::GrantGone { .. } | ProviderError::Refused { .. } => {
            format!(
                "{} refused to complete the connection. Start again from the integrations page.",
                provider.display_name
            )
        }
    };
    AppError::bad_gateway(Code::ProviderError, message).with_cause(e)
}

/// Refuses a code no provider hands out (empty, or over 4 KiB).
pub fn check_code(code: &str) -> AppResult<()> {
    if code.is_empty() || code.len() > 4096 {
        return Err(AppError::bad_request(
            Code::InvalidCode,
            "The provider's answer carried no usable code.",
        ));
    }
    Ok(())
}

/// What a fresh token set from an exchange authorizes: the account it
/// belongs to, its scopes (the provider's default when it does not say)
/// and the metadata the provider keeps.
pub async fn authorized(
    http: &reqwest::Client,
    provider: &Provider,
    response: TokenResponse,
) -> AppResult<Authorized> {
    let (account_id, account_name) = identify(http, provider, &response).await?;
    let scopes = response
        .scopes
        .clone()
        .unwrap_or_else(|| provider.scopes.clone());
    let metadata = response.metadata(provider);
    Ok(Authorized {
        response,
        account_id,
        account_name,
        scopes,
        metadata,
    })
}

/// The account a fresh token set belongs to: its id and name, from the
/// provider's identity lookup, else the token response. A lookup that fails
/// costs only the name when the token response names the account (a
/// GoHighLevel app not granted `locations.readonly`): the code is spent, and
/// losing the connection for a name would be worse.
pub async fn identify(
    http: &reqwest::Client,
    provider: &Provider,
    response: &TokenResponse,
) -> AppResult<(AccountId, Option<String>)> {
    let from_token =
        |pointers: &[String]| pointers.iter().find_map(|p| pointer_str(&response.raw, p));
    let identity = match client::identity(
        http,
        provider,
        response.tokens.access_token.expose(),
        &response.raw,
    )
    .await
    {
        Ok(doc) => doc,
        Err(e) if from_token(&provider.account_id).is_some() => {
            log::warn!(
                "provider={}: the account lookup failed, so the account is shown by its id: {e}",
                provider.key
            );
            None
        }
        Err(e) => return Err(provider_failure(provider, e)),
    };
    let find = |pointer: &str| {
        identity
            .as_ref()
            .and_then(|doc| pointer_str(doc, pointer))
            .or_else(|| pointer_str(&response.raw, pointer))
    };
    let account_id = provider.account_id.iter().find_map(|p| find(p));
    let account_name = name_of(provider, find);
    Ok(match account_id {
        Some(id) => match AccountId::check(&id) {
            Some(id) => (id, account_name),
            // Over 256 characters, or with a control character: no provider
            // documents such an id, so the answer is not trusted.
            None => {
                return Err(AppError::bad_gateway(
                    Code::ProviderError,
                    format!(
                        "{} named the account with an id Tether cannot use. An operator has to check the provider's account_id setting.",
                        provider.display_name
                    ),
                ))
            }
        },
        // Without an identity, the provider has one account per tenant:
        // named after the provider rather than "default".
        None => (
            AccountId::unnamed(),
            account_name.or_else(|| Some(provider.display_name.clone())),
        ),
    })
}

/// The account's readable name, as the provider's `account_name` and
/// `account_label` pointers find it: "name (label)", or either alone.
fn name_of(provider: &Provider, find: impl Fn(&str) -> Option<String>) -> Option<String> {
    let name = provider.account_name.as_deref().and_then(&find);
    let label = provider.account_label.as_deref().and_then(&find);
    match (name, label) {
        (Some(name), Some(label)) => Some(format!("{name} ({label})")),
        (name, label) => name.or(label),
    }
}

/// What the provider's account lookup says of a token Tether did not get
/// from a code exchange (an import, a private token).
#[derive(Debug)]
pub struct Checked {
    /// The account the lookup names, else the one asked about (whose own
    /// lookup URL answered); `None` when neither names one.
    pub account_id: Option<AccountId>,
    pub account_name: Option<String>,
    /// The fields the lookup's URL was filled from, each the account's id:
    /// identity-bearing metadata that the check vouches for.
    pub filled: Value,
}

/// Why the lookup could not vouch for a token.
#[derive(Debug)]
pub enum Unchecked {
    /// Its URL is filled from the account's id, under this field.
    AccountNeeded(String),
    /// The account's id cannot fill a URL (letters, digits, '-', '_', '.').
    UnusableAccount,
    /// The provider refused the token.
    Refused,
    /// The provider names another account.
    Mismatch(AccountId),
    /// An answer as it stands (the provider failing for now, or naming the
    /// account with an id Tether cannot use).
    Failed(AppError),
}

/// Asks the provider's account lookup (`userinfo_url`, which the caller
/// knows is set; its placeholders filled with `account`) whose `token` is.
pub async fn check_token(
    http: &reqwest::Client,
    provider: &Provider,
    token: &str,
    account: Option<&AccountId>,
) -> Result<Checked, Unchecked> {
    let template = provider.userinfo_url.as_deref().unwrap_or_default();
    let mut filled = serde_json::Map::new();
    for field in crate::providers::placeholders(template).unwrap_or_default() {
        let account = account.ok_or_else(|| Unchecked::AccountNeeded(field.to_string()))?;
        filled.insert(field.to_string(), Value::String(account.to_string()));
    }
    let filled = Value::Object(filled);
    if provider.identity_url(&filled).is_none() {
        return Err(Unchecked::UnusableAccount);
    }
    let doc = match client::identity(http, provider, token, &filled).await {
        Ok(Some(doc)) => doc,
        Ok(None) => return Err(Unchecked::UnusableAccount),
        Err(e @ (ProviderError::Transient { .. } | ProviderError::Unknown { .. })) => {
            return Err(Unchecked::Failed(provider_failure(provider, e)))
        }
        Err(e) => {
            log::info!(
                "a token was refused by the account lookup provider={}: {e}",
                provider.key
            );
            return Err(Unchecked::Refused);
        }
    };
    let find = |pointer: &str| pointer_str(&doc, pointer);
    let named = match provider.account_id.iter().find_map(|p| find(p)) {
        None => None,
        Some(id) => Some(AccountId::check(&id).ok_or_else(|| {
            Unchecked::Failed(AppError::bad_gateway(
                Code::ProviderError,
                format!(
                    "{} named the account with an id Tether cannot use",
                    provider.display_name
                ),
            ))
        })?),
    };
    let account_id = match (account, named) {
        (Some(given), Some(named)) if *given != named => return Err(Unchecked::Mismatch(named)),
        (given, named) => named.or_else(|| given.cloned()),
    };
    Ok(Checked {
        account_id,
        account_name: name_of(provider, find),
        filled,
    })
}

/// What the provider's account lookup says now of a stored access token
/// ([`verify_access`]).
#[derive(Debug)]
pub enum Verdict {
    /// It answered for the token, naming this account (`None`: neither its
    /// answer nor the stored fields name one) and name.
    Accepted {
        account_id: Option<AccountId>,
        account_name: Option<String>,
    },
    /// It does not accept the token: a 401, or an answer saying the grant is
    /// gone. An access token can be refused because it expired early as
    /// much as because the grant was revoked; the caller tells them apart.
    NotAccepted(ProviderError),
    /// It answered otherwise (a 403, another refusal, Tether's client
    /// credentials refused, an id Tether cannot use): it vouches for
    /// nothing, and says nothing of the grant.
    Refused(String),
    /// No answer to judge by: none, a 5xx, a 429, one that is not JSON.
    Unreachable(ProviderError),
}

/// Asks the provider's account lookup now whose `token` is, its URL filled
/// from `fields` (a connection's stored token response and metadata), and
/// the account read from its answer, else from `fields`, as a connect reads
/// it from the code exchange's. `None` when the provider has no lookup, or
/// its URL cannot be filled from `fields` (a GoHighLevel agency's token,
/// which names no location).
pub async fn verify_access(
    http: &reqwest::Client,
    provider: &Provider,
    token: &str,
    fields: &Value,
) -> Option<Verdict> {
    let failure = match client::identity_answer(http, provider, token, fields).await {
        Ok(doc) => {
            let doc = doc?;
            let find =
                |pointer: &str| pointer_str(&doc, pointer).or_else(|| pointer_str(fields, pointer));
            let named = provider.account_id.iter().find_map(|p| find(p));
            let account_id = match named.map(|id| AccountId::check(&id)) {
                None => None,
                Some(Some(id)) => Some(id),
                Some(None) => {
                    return Some(Verdict::Refused(
                        "the lookup named the account with an id Tether cannot use".into(),
                    ))
                }
            };
            return Some(Verdict::Accepted {
                account_id,
                account_name: name_of(provider, find),
            });
        }
        Err(failure) => failure,
    };
    Some(match failure.error {
        e if failure.unauthorized => Verdict::NotAccepted(e),
        e @ ProviderError::GrantGone { .. } => Verdict::NotAccepted(e),
        e @ (ProviderError::Transient { .. } | ProviderError::Unknown { .. }) => {
            Verdict::Unreachable(e)
        }
        e @ (ProviderError::Refused { .. } | ProviderError::ClientMisconfigured { .. }) => {
            Verdict::Refused(e.to_string())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_to_accepts_only_paths_inside_the_app() {
        for ok in [
            "/settings/integrations",
            "/settings/integrations?x=1#top",
            "/",
        ] {
            assert!(safe_return_to(ok).is_ok(), "{ok}");
        }
        for bad in [
            "//evil.example",
            "https://evil.example",
            "javascript:alert(1)",
            "\\\\evil.example",
            "/\\evil.example",
            "evil.example",
            "",
            "/a/../../x",
            "/line\nbreak",
        ] {
            assert!(safe_return_to(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn pkce_challenge_matches_rfc_7636_appendix_b() {
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }
}
