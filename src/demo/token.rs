//! The token step: running a grant, authenticating the client (Basic or
//! body credentials), and checking bearer tokens at the API endpoints.

use super::authorize::{parse_scope, valid_verifier};
use super::config::Client;
use super::errors::OAuthError;
use super::input::Params;
use super::store::{DemoStore, Tokens};
use actix_web::http::{header, StatusCode};
use actix_web::HttpRequest;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sha2::{Digest, Sha256};
use std::time::Instant;
use subtle::ConstantTimeEq;

/// Runs the grant a token request asks for.
pub(super) fn grant(
    store: &DemoStore,
    params: &Params,
    client_id: &str,
    now: Instant,
) -> Result<Tokens, OAuthError> {
    match params.get("grant_type") {
        Some("authorization_code") => {
            let code = params.require("code")?;
            let redirect_uri = params.require("redirect_uri")?;
            let verifier = params.require("code_verifier")?;
            if !valid_verifier(verifier) {
                return Err(OAuthError::invalid_request(
                    "code_verifier must be 43 to 128 unreserved characters",
                ));
            }
            store.exchange_code(client_id, code, redirect_uri, verifier, now)
        }
        Some("refresh_token") => {
            let refresh_token = params.require("refresh_token")?;
            let scope = match params.get("scope") {
                Some(raw) => Some(parse_scope(raw).ok_or_else(OAuthError::invalid_scope)?),
                None => None,
            };
            store.refresh(client_id, refresh_token, scope, now)
        }
        Some(_) => Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "the demo supports authorization_code and refresh_token",
        )),
        None => Err(OAuthError::invalid_request("grant_type is required")),
    }
}

/// The authenticated client's id: HTTP Basic or `client_id`/`client_secret`
/// in the body, never both (RFC 6749 section 2.3.1).
pub(super) fn authenticate_client(
    req: &HttpRequest,
    params: &Params,
    client: &Client,
) -> Result<String, OAuthError> {
    let (id, secret) = match (basic_credentials(req)?, params.get("client_secret")) {
        (Some(_), Some(_)) => {
            return Err(OAuthError::invalid_request(
                "use one client authentication method, not two",
            ))
        }
        (Some((id, secret)), None) => {
            if params.get("client_id").is_some_and(|body_id| body_id != id) {
                return Err(OAuthError::invalid_request(
                    "client_id differs from the Basic credentials",
                ));
            }
            (id, secret)
        }
        (None, Some(secret)) => match params.get("client_id") {
            Some(id) => (id.to_string(), secret.to_string()),
            None => return Err(OAuthError::invalid_client()),
        },
        (None, None) => return Err(OAuthError::invalid_client()),
    };
    // Hashing first makes the comparison constant-time in the length, too.
    let secret_ok: bool = Sha256::digest(secret.as_bytes())
        .ct_eq(&Sha256::digest(client.1.expose().as_bytes()))
        .into();
    if secret_ok && id == client.0 {
        Ok(id)
    } else {
        Err(OAuthError::invalid_client())
    }
}

/// `Authorization: Basic` credentials, form-decoded; `None` without them.
fn basic_credentials(req: &HttpRequest) -> Result<Option<(String, String)>, OAuthError> {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| OAuthError::invalid_client())?;
    let Some((scheme, encoded)) = value.split_once(' ') else {
        return Ok(None);
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Ok(None);
    }
    let decoded = STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(OAuthError::invalid_client)?;
    let (id, secret) = decoded
        .split_once(':')
        .ok_or_else(OAuthError::invalid_client)?;
    match (form_decode(id), form_decode(secret)) {
        (Some(id), Some(secret)) => Ok(Some((id, secret))),
        _ => Err(OAuthError::invalid_client()),
    }
}

/// Undoes `application/x-www-form-urlencoded` on one value; Basic credentials
/// are encoded that way before base64 (RFC 6749 section 2.3.1).
fn form_decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let pair = bytes.get(i + 1..i + 3)?;
                out.extend(hex::decode(pair).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// Checks `Authorization: Bearer` against live access tokens and `scope`.
pub(super) fn check_bearer(
    req: &HttpRequest,
    store: &DemoStore,
    scope: &str,
) -> Result<(), OAuthError> {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|token| !token.is_empty());
    let Some(token) = token else {
        return Err(OAuthError::invalid_token(
            "a bearer access token is required",
        ));
    };
    match store.access_scope(token, Instant::now()) {
        None => Err(OAuthError::invalid_token(
            "the access token is unknown, expired or revoked",
        )),
        Some(granted) if !granted.contains(&scope) => Err(OAuthError::insufficient_scope(scope)),
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_form_decoded() {
        assert_eq!(form_decode("a%3Ab+c").as_deref(), Some("a:b c"));
        assert_eq!(form_decode("%zz"), None);
        assert_eq!(form_decode("%4"), None);
        assert_eq!(form_decode("%FF"), None);
    }
}
