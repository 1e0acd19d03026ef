//! Private tokens: a token the account's owner created at the provider
//! (what the preset's `private_tokens` names it: a platform's private
//! integration token or API key) stored as a connection of its
//! own kind, so that a client's integration keeps working while it moves
//! to OAuth. Such a token is checked against the provider's account lookup
//! (`userinfo_url`, its placeholders filled with the account named) before
//! it is stored, through the one door for a grant (the holder rule holds);
//! it is never refreshed nor revoked (Tether did not issue it), and an OAuth
//! grant of the same account replaces it in the same row, with no moment
//! between them where the account is not connected.
//!
//! No message here repeats the token.

use super::grant::{self, Arrival, NewGrant};
use crate::app::App;
use crate::crypto::Secret;
use crate::db::models::connection::{Connection, TokenSet};
use crate::db::models::event::Actor;
use crate::error::{AppError, AppResult, Code};
use crate::ids::{AccountId, TenantId};
use crate::oauth::token::TokenResponse;
use crate::oauth::{self, Authorized, Unchecked};
use crate::providers::Provider;
use serde_json::{Map, Value};
use std::sync::Arc;

/// A private token on its way in. Its `Debug` hides the token.
pub struct Request {
    pub token: Secret<String>,
    /// The account it is for; may be left out where the lookup names it.
    pub account: Option<AccountId>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("token", &crate::crypto::Redacted)
            .field("account", &self.account)
            .finish()
    }
}

fn invalid(message: impl Into<String>) -> AppError {
    AppError::bad_request(Code::InvalidRequest, message)
}

impl Request {
    /// Reads `{"token": "...", "account": "..."}`; anything else is refused
    /// with a reason that repeats no value.
    pub fn parse(value: &Value) -> AppResult<Request> {
        let obj = value.as_object().ok_or_else(|| {
            invalid("the body is a JSON object: {\"token\": \"...\", \"account\": \"...\"}")
        })?;
        if obj.keys().any(|k| k != "token" && k != "account") {
            return Err(invalid("unknown field (the fields are token, account)"));
        }
        let token = match obj.get("token") {
            Some(Value::String(t)) => Request::token(t)?,
            _ => return Err(invalid("token is required: the private token, as a string")),
        };
        let account = match obj.get("account") {
            None | Some(Value::Null) => None,
            Some(Value::String(a)) => Some(AccountId::parse(a)?),
            Some(_) => return Err(invalid("account is the provider's account id, as a string")),
        };
        Ok(Request { token, account })
    }

    /// A token as a person pasted it: trimmed, then 1 to 8 KiB of visible
    /// ASCII characters.
    pub fn token(raw: &str) -> AppResult<Secret<String>> {
        let t = raw.trim();
        let max = super::import::MAX_TOKEN_LEN;
        if t.is_empty() || t.len() > max || !t.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid(format!(
                "token must be 1 to {max} visible ASCII characters (no spaces)"
            )));
        }
        Ok(Secret::new(t.to_string()))
    }
}

/// Checks `request` with the provider's account lookup and stores it as the
/// tenant's connection of that account. Returns the connection and whether
/// it replaced a private token the tenant held for the account.
pub async fn store(
    app: &App,
    tenant_id: &TenantId,
    provider: &Arc<Provider>,
    request: Request,
    actor: &Actor,
) -> AppResult<(Connection, bool)> {
    let Some(label) = provider.private_tokens.as_deref() else {
        return Err(AppError::bad_request(
            Code::UnsupportedFlow,
            format!(
                "{} takes no private tokens: connect it with OAuth",
                provider.display_name
            ),
        ));
    };
    let invalid_account = |message: String| AppError::bad_request(Code::InvalidAccount, message);
    let refused = |message: String| AppError::bad_request(Code::TokenRefused, message);
    let token = request.token.expose();
    let given = request.account.as_ref();
    let checked = match oauth::check_token(&app.http, provider, token, given).await {
        Ok(checked) => checked,
        Err(Unchecked::AccountNeeded(field)) => {
            return Err(invalid_account(format!(
                "account is required: the {field} the {label} belongs to"
            )))
        }
        Err(Unchecked::UnusableAccount) => {
            return Err(invalid_account(
                "account is an id of letters, digits, '-', '_' and '.'".into(),
            ))
        }
        Err(Unchecked::Refused) => {
            return Err(refused(format!(
                "{} refused this {label}{}. Check that it is the account's, still active, and allowed to read the account.",
                provider.display_name,
                given.map(|a| format!(" for {a}")).unwrap_or_default()
            )))
        }
        Err(Unchecked::Mismatch(named)) => {
            let given = given.map(ToString::to_string).unwrap_or_default();
            return Err(refused(format!(
                "this {label} belongs to {named}, not to {given}"
            )));
        }
        Err(Unchecked::Failed(e)) => return Err(e),
    };
    let account_id = checked.account_id.ok_or_else(|| {
        invalid_account(format!(
            "account is required: the account the {label} belongs to"
        ))
    })?;
    let authorized = Authorized {
        response: TokenResponse {
            tokens: TokenSet {
                access_token: request.token,
                refresh_token: None,
                token_type: "Bearer".into(),
                raw: Secret::new(Value::Object(Map::new())),
            },
            // Never expires, as far as Tether knows: never refreshed.
            expires_in: None,
            scopes: None,
            raw: Value::Object(Map::new()),
        },
        account_id,
        account_name: checked.account_name,
        scopes: Vec::new(),
        metadata: checked.filled,
    };
    let grant = NewGrant {
        provider: provider.clone(),
        tenant: tenant_id.clone(),
        authorized,
        actor: actor.clone(),
        arrival: Arrival::PrivateToken,
        tags: None,
    };
    grant::save(app, grant).await
}
