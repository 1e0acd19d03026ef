//! Reading a provider's token response: tokens, expiry (number or string),
//! granted scopes, and the fields kept as metadata.

use crate::crypto::Secret;
use crate::db::models::connection::TokenSet;
use crate::providers::Provider;
use chrono::{Duration, NaiveDateTime};
use serde_json::{Map, Value};

/// The longest lifetime taken from an `expires_in`: one year. Longer claims
/// are capped (the token is then refreshed within the year).
pub const MAX_EXPIRES_IN: i64 = 365 * 86_400;

/// A token response, parsed. Its `Debug` leaves `raw` out: the whole answer
/// holds the tokens in the clear.
pub struct TokenResponse {
    pub tokens: TokenSet,
    /// `None`: the token does not expire.
    pub expires_in: Option<i64>,
    pub scopes: Option<Vec<String>>,
    pub raw: Value,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("tokens", &self.tokens)
            .field("expires_in", &self.expires_in)
            .field("scopes", &self.scopes)
            .field("raw", &crate::crypto::Redacted)
            .finish()
    }
}

/// Why a token response could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("the provider's token response is not a JSON object")]
    NotJson,
    #[error("the provider's token response has no access_token")]
    NoAccessToken,
    #[error("the provider's token response has an unreadable expires_in")]
    BadExpiry,
}

impl TokenResponse {
    /// Parses a successful (2xx) token response body.
    pub fn parse(provider: &Provider, body: &[u8]) -> Result<TokenResponse, TokenError> {
        let raw: Value = serde_json::from_slice(body).map_err(|_| TokenError::NotJson)?;
        let obj = raw.as_object().ok_or(TokenError::NotJson)?;
        let access = str_field(obj, "access_token").ok_or(TokenError::NoAccessToken)?;
        let refresh = str_field(obj, "refresh_token");
        let token_type = str_field(obj, "token_type").unwrap_or_else(|| "Bearer".into());
        let expires_in = match obj.get("expires_in") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => Some(n.as_i64().ok_or(TokenError::BadExpiry)?),
            Some(Value::String(s)) => {
                Some(s.trim().parse::<i64>().map_err(|_| TokenError::BadExpiry)?)
            }
            Some(_) => return Err(TokenError::BadExpiry),
        };
        if expires_in.is_some_and(|s| s < 0) {
            return Err(TokenError::BadExpiry);
        }
        // A provider's "expires in 10^15 seconds" would overflow the date
        // arithmetic; no token is trusted for longer than this without a refresh.
        let expires_in = expires_in.map(|s| s.min(MAX_EXPIRES_IN));
        let scopes = match obj.get("scope").or_else(|| obj.get("scopes")) {
            Some(Value::String(s)) => Some(split_scopes(s, &provider.scope_separator)),
            Some(Value::Array(items)) => Some(
                items
                    .iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect(),
            ),
            _ => None,
        };
        Ok(TokenResponse {
            tokens: TokenSet {
                access_token: Secret::new(access),
                refresh_token: refresh.map(Secret::new),
                token_type,
                raw: Secret::new(raw.clone()),
            },
            expires_in,
            scopes,
            raw,
        })
    }

    /// The non-secret fields the provider keeps as metadata (`keep_fields`).
    pub fn metadata(&self, provider: &Provider) -> Value {
        let mut out = Map::new();
        if let Some(obj) = self.raw.as_object() {
            for field in &provider.keep_fields {
                if let Some(v) = obj.get(field) {
                    out.insert(field.clone(), v.clone());
                }
            }
        }
        Value::Object(out)
    }

    pub fn expires_at(&self, now: NaiveDateTime) -> Option<NaiveDateTime> {
        self.expires_in.map(|s| now + Duration::seconds(s))
    }
}

fn str_field(obj: &Map<String, Value>, name: &str) -> Option<String> {
    match obj.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

/// Splits a scope string on the provider's separator, and on spaces and commas
/// too (providers are not always consistent).
pub fn split_scopes(s: &str, separator: &str) -> Vec<String> {
    s.split(|c: char| c == ' ' || c == ',' || separator.contains(c))
        .filter(|p| !p.is_empty())
        .map(String::from)
        .collect()
}

/// When to refresh a token that expires in `lifetime` seconds: at 80% of its
/// life, or `margin` before it expires if that is earlier, but never sooner
/// than half-way through its life. The floor matters for tokens shorter than
/// the margin (a 5-minute token with the default 300 s margin): without it
/// they would be due the moment they arrive and be refreshed back to back.
pub fn next_refresh_at(now: NaiveDateTime, lifetime: i64, margin: i64) -> NaiveDateTime {
    let lifetime = lifetime.clamp(0, MAX_EXPIRES_IN);
    let at_80 = lifetime * 4 / 5;
    let latest = lifetime - margin;
    now + Duration::seconds(at_80.min(latest).max(lifetime / 2))
}

/// Reads a JSON pointer as a string (numbers are rendered).
pub fn pointer_str(value: &Value, pointer: &str) -> Option<String> {
    match value.pointer(pointer)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    fn provider() -> Provider {
        let settings = Settings::from_vars(&Default::default()).unwrap();
        let mut p = crate::providers::presets::demo(&settings);
        p.keep_fields = vec!["siteId".into()];
        p
    }

    #[test]
    fn expires_in_may_be_a_number_a_string_or_absent() {
        let p = provider();
        let n = TokenResponse::parse(&p, br#"{"access_token":"a","expires_in":3599}"#).unwrap();
        assert_eq!(n.expires_in, Some(3599));
        let s = TokenResponse::parse(&p, br#"{"access_token":"a","expires_in":"86399"}"#).unwrap();
        assert_eq!(s.expires_in, Some(86399));
        let none = TokenResponse::parse(&p, br#"{"access_token":"a"}"#).unwrap();
        assert_eq!(none.expires_in, None);
        assert_eq!(
            TokenResponse::parse(&p, br#"{"access_token":"a","expires_in":"soon"}"#).unwrap_err(),
            TokenError::BadExpiry
        );
    }

    #[test]
    fn scopes_metadata_and_errors() {
        let p = provider();
        let r = TokenResponse::parse(
            &p,
            br#"{"access_token":"a","refresh_token":"r","scope":"contacts.readonly conversations/message.write","siteId":"loc_1","userId":"u"}"#,
        )
        .unwrap();
        assert_eq!(
            r.scopes.as_deref().unwrap(),
            ["contacts.readonly", "conversations/message.write"]
        );
        assert_eq!(r.metadata(&p), serde_json::json!({"siteId":"loc_1"}));
        assert_eq!(r.tokens.refresh_token.unwrap().expose(), "r");
        assert_eq!(
            TokenResponse::parse(&p, b"<html>").unwrap_err(),
            TokenError::NotJson
        );
        assert_eq!(
            TokenResponse::parse(&p, b"{}").unwrap_err(),
            TokenError::NoAccessToken
        );
        assert_eq!(split_scopes("a,b c", ","), ["a", "b", "c"]);
    }

    #[test]
    fn refresh_is_planned_at_80_percent_or_the_margin_before_expiry() {
        let now = chrono::DateTime::from_timestamp(0, 0).unwrap().naive_utc();
        assert_eq!(
            next_refresh_at(now, 3600, 300),
            now + Duration::seconds(2880)
        );
        assert_eq!(
            next_refresh_at(now, 86400, 300),
            now + Duration::seconds(69120)
        );
        assert_eq!(next_refresh_at(now, 600, 300), now + Duration::seconds(300));
    }

    #[test]
    fn tokens_shorter_than_the_margin_are_refreshed_half_way_not_at_once() {
        let now = chrono::DateTime::from_timestamp(0, 0).unwrap().naive_utc();
        assert_eq!(next_refresh_at(now, 300, 300), now + Duration::seconds(150));
        assert_eq!(next_refresh_at(now, 60, 300), now + Duration::seconds(30));
        assert_eq!(next_refresh_at(now, 4, 300), now + Duration::seconds(2));
        assert_eq!(next_refresh_at(now, 0, 300), now);
    }

    #[test]
    fn an_absurd_expires_in_is_capped_not_a_panic() {
        let p = provider();
        for huge in ["1000000000000000", "9223372036854775807"] {
            let body = format!(r#"{{"access_token":"a","expires_in":{huge}}}"#);
            let r = TokenResponse::parse(&p, body.as_bytes()).unwrap();
            assert_eq!(r.expires_in, Some(MAX_EXPIRES_IN));
            let now = chrono::Utc::now().naive_utc();
            assert_eq!(
                r.expires_at(now),
                Some(now + Duration::seconds(MAX_EXPIRES_IN))
            );
            assert!(next_refresh_at(now, i64::MAX, 300) > now);
        }
        // Beyond i64: not a number Tether can use.
        assert_eq!(
            TokenResponse::parse(&p, br#"{"access_token":"a","expires_in":1e300}"#).unwrap_err(),
            TokenError::BadExpiry
        );
    }
}
