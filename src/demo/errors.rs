//! OAuth error responses ([`OAuthError`]), and the no-store headers they
//! share with every JSON answer of the demo.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use std::fmt;

/// An OAuth error response: RFC 6749 section 5.2 at the token and revocation
/// endpoints, RFC 6750 section 3 at the bearer endpoints.
#[derive(Debug)]
pub(super) struct OAuthError {
    status: StatusCode,
    pub(super) error: &'static str,
    description: String,
    challenge: Option<String>,
}

impl OAuthError {
    pub(super) fn new(
        status: StatusCode,
        error: &'static str,
        description: impl Into<String>,
    ) -> Self {
        OAuthError {
            status,
            error,
            description: description.into(),
            challenge: None,
        }
    }

    pub(super) fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    pub(super) fn invalid_grant(description: &str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_grant", description)
    }

    pub(super) fn invalid_scope() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "the scope is unknown or wider than the grant",
        )
    }

    /// 401 with a challenge, which RFC 9110 requires of every 401.
    pub(super) fn invalid_client() -> Self {
        OAuthError {
            challenge: Some(r#"Basic realm="demo""#.into()),
            ..Self::new(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "client authentication failed",
            )
        }
    }

    pub(super) fn invalid_token(description: &str) -> Self {
        OAuthError {
            challenge: Some(r#"Bearer error="invalid_token""#.into()),
            ..Self::new(StatusCode::UNAUTHORIZED, "invalid_token", description)
        }
    }

    pub(super) fn insufficient_scope(scope: &str) -> Self {
        OAuthError {
            challenge: Some(format!(
                r#"Bearer error="insufficient_scope", scope="{scope}""#
            )),
            ..Self::new(
                StatusCode::FORBIDDEN,
                "insufficient_scope",
                format!("the access token lacks the {scope} scope"),
            )
        }
    }
}

impl fmt::Display for OAuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.error, self.description)
    }
}

impl ResponseError for OAuthError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = no_store(HttpResponse::build(self.status));
        if let Some(challenge) = &self.challenge {
            res.insert_header((header::WWW_AUTHENTICATE, challenge.as_str()));
        }
        res.json(serde_json::json!({
            "error": self.error,
            "error_description": self.description,
        }))
    }
}

/// `Cache-Control: no-store` and `Pragma: no-cache` on a response: nothing
/// the demo answers with may be cached.
pub(super) fn no_store(mut res: actix_web::HttpResponseBuilder) -> actix_web::HttpResponseBuilder {
    res.insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::PRAGMA, "no-cache"));
    res
}
