//! Input before it means anything: request parameters ([`Params`]), the
//! form body reader, and [`BadInput`] for what is malformed.

use super::errors::OAuthError;
use crate::error::{AppError, Code as ErrorCode, PageError};
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest};
use futures_util::StreamExt;
use std::collections::BTreeMap;

/// Every legitimate form to the demo is a few hundred bytes.
const MAX_BODY: usize = 8 * 1024;

/// Malformed input, before it means anything.
#[derive(Debug)]
pub(super) struct BadInput {
    status: StatusCode,
    message: String,
}

impl BadInput {
    fn new(message: impl Into<String>) -> Self {
        BadInput {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    pub(super) fn into_page(self) -> PageError {
        PageError(AppError::bad_request(
            ErrorCode::InvalidRequest,
            self.message,
        ))
    }
}

impl From<BadInput> for OAuthError {
    fn from(e: BadInput) -> Self {
        OAuthError::new(e.status, "invalid_request", e.message)
    }
}

impl From<BadInput> for actix_web::Error {
    fn from(e: BadInput) -> Self {
        OAuthError::from(e).into()
    }
}

/// Request parameters: each at most once, printable ASCII (every OAuth
/// parameter is, RFC 6749 appendix A), empty ones dropped (section 3.1).
/// No `Debug`: the values are codes, tokens and secrets.
pub(super) struct Params(BTreeMap<String, String>);

impl Params {
    pub(super) fn parse(raw: &[u8]) -> Result<Params, BadInput> {
        // Raw bytes beyond ASCII are not URL-encoded; decoded ones are
        // checked below (a bad UTF-8 sequence decodes to U+FFFD).
        if !raw.is_ascii() {
            return Err(BadInput::new("parameters must be URL-encoded ASCII"));
        }
        let printable = |s: &str| s.bytes().all(|b| (0x20..=0x7e).contains(&b));
        let mut params = BTreeMap::new();
        for (name, value) in url::form_urlencoded::parse(raw) {
            if !printable(&name) || !printable(&value) {
                return Err(BadInput::new(
                    "parameters must be printable ASCII once decoded",
                ));
            }
            if value.is_empty() {
                continue;
            }
            if params.contains_key(&*name) {
                // Named: parameter names are ours to echo, values are not.
                let name = if name.len() <= 32 {
                    &*name
                } else {
                    "a parameter"
                };
                return Err(BadInput::new(format!("{name} appears more than once")));
            }
            params.insert(name.into_owned(), value.into_owned());
        }
        Ok(Params(params))
    }

    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    pub(super) fn require(&self, name: &str) -> Result<&str, OAuthError> {
        self.get(name)
            .ok_or_else(|| OAuthError::invalid_request(format!("{name} is required")))
    }
}

/// An `application/x-www-form-urlencoded` body of at most [`MAX_BODY`] bytes.
pub(super) async fn read_form(
    req: &HttpRequest,
    mut payload: web::Payload,
) -> Result<Params, BadInput> {
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !is_form {
        return Err(BadInput::new(
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    let mut body = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| BadInput::new("the request body could not be read"))?;
        if body.len() + chunk.len() > MAX_BODY {
            return Err(BadInput {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                message: format!("the request body is larger than {} KiB", MAX_BODY / 1024),
            });
        }
        body.extend_from_slice(&chunk);
    }
    Params::parse(&body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_reject_repeats_and_non_ascii_and_drop_empty_values() {
        assert!(Params::parse(b"a=1&a=2").is_err());
        assert!(Params::parse("a=\u{e9}".as_bytes()).is_err());
        assert!(Params::parse(b"a=%FF").is_err());
        assert!(Params::parse(b"a=%0A").is_err());
        let p = Params::parse(b"a=&b=x+y%21").unwrap();
        assert_eq!(p.get("a"), None);
        assert_eq!(p.get("b"), Some("x y!"));
    }
}
