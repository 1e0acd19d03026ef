//! The authorization step: checking an authorization request, the consent
//! page, the redirect back to the client, scopes and PKCE.

use super::config::{Client, DemoConfig, SCOPES};
use super::input::Params;
use crate::error::{AppError, Code as ErrorCode, PageError, PageResult};
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};
use askama::Template;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What an authorization request without `scope` gets (RFC 6749 section 3.3).
const DEFAULT_SCOPE: &str = "profile";

/// An authorization request that passed every check.
pub(super) struct AuthRequest {
    pub(super) client_id: String,
    pub(super) redirect_uri: String,
    pub(super) state: String,
    pub(super) scope: Vec<&'static str>,
    pub(super) code_challenge: String,
}

/// Why an authorization request is refused, and where the user learns it.
pub(super) enum Rejection {
    /// The client or redirect URI is wrong: say so here and never redirect,
    /// or the demo would be an open redirector (RFC 6749 section 4.1.2.1).
    Page(AppError),
    /// Anything else goes back to the client.
    Redirect {
        error: &'static str,
        description: &'static str,
        state: Option<String>,
    },
}

impl Rejection {
    pub(super) fn respond(self, config: &DemoConfig) -> PageResult<HttpResponse> {
        match self {
            Rejection::Page(err) => Err(PageError(err)),
            Rejection::Redirect {
                error,
                description,
                state,
            } => redirect_back(
                config,
                &[("error", error), ("error_description", description)],
                state.as_deref(),
            ),
        }
    }
}

impl AuthRequest {
    pub(super) fn validate(
        params: &Params,
        client: &Client,
        config: &DemoConfig,
    ) -> Result<Self, Rejection> {
        if params.get("client_id") != Some(client.0.as_str()) {
            return Err(Rejection::Page(AppError::bad_request(
                ErrorCode::InvalidClient,
                "unknown client_id: the demo provider only knows Tether's client",
            )));
        }
        let expected = &config.redirect_uri;
        if params.get("redirect_uri") != Some(expected.as_str()) {
            return Err(Rejection::Page(AppError::bad_request(
                ErrorCode::InvalidRedirectUri,
                format!("redirect_uri must be exactly {expected}"),
            )));
        }
        let state = params.get("state").map(str::to_string);
        let fail = |error, description| Rejection::Redirect {
            error,
            description,
            state: state.clone(),
        };
        match params.get("response_type") {
            Some("code") => {}
            Some(_) => {
                return Err(fail(
                    "unsupported_response_type",
                    "the demo provider only issues authorization codes",
                ))
            }
            None => return Err(fail("invalid_request", "response_type is required")),
        }
        let Some(state_value) = state.clone() else {
            return Err(fail("invalid_request", "state is required"));
        };
        if params.get("code_challenge_method") != Some("S256") {
            return Err(fail(
                "invalid_request",
                "PKCE is required, with code_challenge_method=S256",
            ));
        }
        let Some(challenge) = params.get("code_challenge").filter(|c| valid_challenge(c)) else {
            return Err(fail(
                "invalid_request",
                "code_challenge must be the base64url SHA-256 of the code verifier",
            ));
        };
        let scope = parse_scope(params.get("scope").unwrap_or(DEFAULT_SCOPE))
            .ok_or_else(|| fail("invalid_scope", "the demo knows profile and contacts.read"))?;
        Ok(AuthRequest {
            client_id: client.0.clone(),
            redirect_uri: expected.clone(),
            state: state_value,
            scope,
            code_challenge: challenge.to_string(),
        })
    }

    /// The request again, for the consent form to send back.
    pub(super) fn hidden_fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("response_type", "code".into()),
            ("client_id", self.client_id.clone()),
            ("redirect_uri", self.redirect_uri.clone()),
            ("state", self.state.clone()),
            ("scope", self.scope.join(" ")),
            ("code_challenge", self.code_challenge.clone()),
            ("code_challenge_method", "S256".into()),
        ]
    }
}

/// A 303 to the redirect URI with `pairs`, `state` and `iss`, encoded by `url`.
pub(super) fn redirect_back(
    config: &DemoConfig,
    pairs: &[(&str, &str)],
    state: Option<&str>,
) -> PageResult<HttpResponse> {
    let mut url = url::Url::parse(&config.redirect_uri).map_err(AppError::internal)?;
    {
        let mut query = url.query_pairs_mut();
        for (name, value) in pairs {
            query.append_pair(name, value);
        }
        if let Some(state) = state {
            query.append_pair("state", state);
        }
        query.append_pair("iss", &config.issuer);
    }
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, url.as_str()))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .finish())
}

/// Refuses a decision posted from another page than the consent page.
/// Browsers say where a request comes from in `Sec-Fetch-Site`; older ones
/// only in `Origin`, which is `null` here because the consent page sets
/// `Referrer-Policy: no-referrer`. Clients that send neither are not browsers.
pub(super) fn same_origin(req: &HttpRequest, config: &DemoConfig) -> Result<(), PageError> {
    let value = |name: &str| req.headers().get(name).map(|v| v.to_str().unwrap_or(""));
    let ours = config.origin.as_str();
    let allowed = match (value("sec-fetch-site"), value("origin")) {
        (Some(site), _) => site == "same-origin",
        (None, Some(origin)) => origin == "null" || origin == ours,
        (None, None) => true,
    };
    if allowed {
        Ok(())
    } else {
        Err(PageError(AppError::forbidden(
            "the consent form was submitted from another site",
        )))
    }
}

#[derive(Template)]
#[template(path = "demo_consent.html")]
pub(super) struct ConsentPage<'a> {
    pub(super) scopes: Vec<(&'static str, &'static str)>,
    pub(super) redirect_uri: &'a str,
    pub(super) hidden: Vec<(&'static str, String)>,
}

/// Known scopes from a space-separated list, duplicates dropped; `None` when
/// one is unknown or the list is malformed.
pub(super) fn parse_scope(raw: &str) -> Option<Vec<&'static str>> {
    let mut scope = Vec::new();
    for token in raw.split(' ') {
        let (name, _) = SCOPES.iter().find(|(name, _)| *name == token)?;
        if !scope.contains(name) {
            scope.push(*name);
        }
    }
    Some(scope)
}

/// An S256 challenge is 32 bytes in base64url without padding.
fn valid_challenge(challenge: &str) -> bool {
    challenge.len() == 43
        && challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// RFC 7636 section 4.1: 43 to 128 unreserved characters.
pub(super) fn valid_verifier(verifier: &str) -> bool {
    (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

pub(super) fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    computed.as_bytes().ct_eq(challenge.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    const VERIFIER: &str = "a-verifier-that-is-long-enough-for-rfc-7636-pkce";

    #[test]
    fn scopes_must_be_known_and_single_spaced() {
        assert_eq!(
            parse_scope("profile contacts.read profile"),
            Some(vec!["profile", "contacts.read"])
        );
        assert_eq!(parse_scope("profile  contacts.read"), None);
        assert_eq!(parse_scope("admin"), None);
    }

    #[test]
    fn pkce_verifiers_and_challenges_are_checked() {
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(VERIFIER.as_bytes()));
        assert!(valid_challenge(&challenge));
        assert!(valid_verifier(VERIFIER));
        assert!(pkce_matches(VERIFIER, &challenge));
        assert!(!pkce_matches(&format!("{VERIFIER}x"), &challenge));
        assert!(!valid_verifier("short"));
        assert!(!valid_challenge("plain-text-challenge"));
    }
}
