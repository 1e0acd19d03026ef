//! GoHighLevel's app webhooks (`INSTALL`, `UNINSTALL`, ...), as confirmed in
//! PROVIDERS.md: since 2026-07-01 every delivery is signed only with
//! `X-GHL-Signature`, the base64 of an Ed25519 signature over the raw body
//! bytes, under GoHighLevel's published key (configurable:
//! `TETHER_GOHIGHLEVEL_WEBHOOK_PUBLIC_KEY`). The legacy RSA `X-WH-Signature`
//! is retired and not taken. This file is the one place the scheme lives.

use crate::error::{AppError, AppResult, Code};
use crate::ids::AccountId;
use actix_web::http::StatusCode;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chrono::{DateTime, Duration, Utc};

/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "x-ghl-signature";

/// How old a delivery's `timestamp` may be. GoHighLevel retries failed
/// deliveries for a while with the same timestamp, so the window is hours,
/// not minutes; a delivery id seen within it is a replay.
pub const MAX_AGE: Duration = Duration::hours(6);

/// How far ahead of our clock a `timestamp` may be.
pub const CLOCK_SKEW: Duration = Duration::minutes(5);

/// What an app webhook says happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Install,
    Uninstall,
    /// A location's details changed: its name is applied to the connection.
    LocationUpdate,
    /// Any other type (messages, contacts, ...): relayed, not acted on.
    Other(String),
}

/// A verified app webhook's fields that Tether reads.
#[derive(Debug, Clone)]
pub struct AppEvent {
    pub kind: Kind,
    /// The `type` as GoHighLevel wrote it.
    pub type_name: String,
    /// A location's new name (`LocationUpdate`).
    pub name: Option<String>,
    pub app_id: Option<String>,
    pub location_id: Option<AccountId>,
    pub company_id: Option<AccountId>,
    pub webhook_id: Option<String>,
    pub timestamp: Option<DateTime<Utc>>,
}

impl AppEvent {
    /// The account the event concerns: its location, else its company (an
    /// agency-level event).
    pub fn account(&self) -> Option<&AccountId> {
        self.location_id.as_ref().or(self.company_id.as_ref())
    }
}

fn invalid(why: &str) -> AppError {
    AppError::bad_request(
        Code::InvalidWebhook,
        format!("not a GoHighLevel app webhook: {why}"),
    )
}

/// Checks `X-GHL-Signature` over the raw body against `public_key`.
pub fn verify(public_key: &[u8; 32], body: &[u8], signature: Option<&str>) -> AppResult<()> {
    let refused = |why: &str| {
        AppError::refused(
            StatusCode::UNAUTHORIZED,
            Code::InvalidWebhookSignature,
            format!("the webhook's signature does not verify: {why}"),
        )
    };
    let signature = signature
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| refused("no X-GHL-Signature header (X-WH-Signature is retired)"))?;
    let raw = STANDARD
        .decode(signature)
        .map_err(|_| refused("X-GHL-Signature is not base64"))?;
    if crate::crypto::ed25519_verifies(public_key, body, &raw) {
        Ok(())
    } else {
        Err(refused(
            "X-GHL-Signature is not GoHighLevel's signature of this body",
        ))
    }
}

/// An id-like field: printable, short.
fn id_field(doc: &serde_json::Value, name: &str) -> AppResult<Option<String>> {
    match doc.get(name) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s))
            if (1..=256).contains(&s.len()) && !s.chars().any(char::is_control) =>
        {
            Ok(Some(s.clone()))
        }
        Some(_) => Err(invalid(&format!("'{name}' is not a short string"))),
    }
}

/// An account id field: absent, or an id as [`AccountId`] takes them.
fn account_field(doc: &serde_json::Value, name: &str) -> AppResult<Option<AccountId>> {
    match id_field(doc, name)? {
        None => Ok(None),
        Some(id) => AccountId::check(&id)
            .map(Some)
            .ok_or_else(|| invalid(&format!("'{name}' is not an account id"))),
    }
}

/// Reads a verified body.
pub fn parse(body: &[u8]) -> AppResult<AppEvent> {
    let doc: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| invalid("the body is not JSON"))?;
    if !doc.is_object() {
        return Err(invalid("the body is not a JSON object"));
    }
    let type_name = id_field(&doc, "type")?.ok_or_else(|| invalid("no 'type'"))?;
    let kind = match type_name.as_str() {
        "INSTALL" => Kind::Install,
        "UNINSTALL" => Kind::Uninstall,
        "LocationUpdate" => Kind::LocationUpdate,
        other => Kind::Other(other.to_string()),
    };
    // A location event names its location `id`; every other event that
    // concerns one, `locationId`.
    let location_id = match type_name.starts_with("Location") {
        true => account_field(&doc, "id")?,
        false => None,
    };
    let timestamp = match id_field(&doc, "timestamp")? {
        None => None,
        Some(t) => Some(
            DateTime::parse_from_rfc3339(&t)
                .map_err(|_| invalid("'timestamp' is not an ISO 8601 date and time"))?
                .with_timezone(&Utc),
        ),
    };
    Ok(AppEvent {
        kind,
        type_name,
        name: match doc.get("name") {
            Some(serde_json::Value::String(n)) => Some(n.chars().take(256).collect()),
            _ => None,
        },
        app_id: id_field(&doc, "appId")?,
        location_id: match location_id {
            Some(id) => Some(id),
            None => account_field(&doc, "locationId")?,
        },
        company_id: account_field(&doc, "companyId")?,
        webhook_id: id_field(&doc, "webhookId")?,
        timestamp,
    })
}

/// Refuses a delivery older than [`MAX_AGE`] or from the future.
pub fn check_fresh(event: &AppEvent, now: DateTime<Utc>) -> AppResult<()> {
    let Some(at) = event.timestamp else {
        return Ok(());
    };
    let stale = |why: String| AppError::bad_request(Code::WebhookStale, why);
    if at > now + CLOCK_SKEW {
        return Err(stale(format!(
            "the webhook's timestamp {} is in the future",
            at.to_rfc3339()
        )));
    }
    if now - at > MAX_AGE {
        return Err(stale(format!(
            "the webhook's timestamp {} is more than {} hours old",
            at.to_rfc3339(),
            MAX_AGE.num_hours()
        )));
    }
    Ok(())
}

/// Refuses a delivery for another app than `expected` (when one is configured).
pub fn check_app(event: &AppEvent, expected: Option<&str>) -> AppResult<()> {
    match expected {
        Some(app) if event.app_id.as_deref() != Some(app) => Err(AppError::refused(
            StatusCode::FORBIDDEN,
            Code::WrongApp,
            "the webhook is for another GoHighLevel app than TETHER_GOHIGHLEVEL_APP_ID",
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{Ed25519KeyPair, KeyPair};

    fn pair() -> (Ed25519KeyPair, [u8; 32]) {
        let pair = Ed25519KeyPair::from_seed_unchecked(&[3u8; 32]).unwrap();
        let mut key = [0u8; 32];
        key.copy_from_slice(pair.public_key().as_ref());
        (pair, key)
    }

    #[test]
    fn only_a_signature_of_the_exact_body_verifies() {
        let (pair, key) = pair();
        let body = br#"{"type":"INSTALL","locationId":"loc_1"}"#;
        let sig = STANDARD.encode(pair.sign(body));
        assert!(verify(&key, body, Some(&sig)).is_ok());
        let code = |r: AppResult<()>| r.unwrap_err().code();
        assert_eq!(
            code(verify(&key, b"{}", Some(&sig))),
            "invalid_webhook_signature"
        );
        assert_eq!(code(verify(&key, body, None)), "invalid_webhook_signature");
        assert_eq!(
            code(verify(&key, body, Some("%%%"))),
            "invalid_webhook_signature"
        );
        let other = Ed25519KeyPair::from_seed_unchecked(&[4u8; 32]).unwrap();
        let forged = STANDARD.encode(other.sign(body));
        assert_eq!(
            code(verify(&key, body, Some(&forged))),
            "invalid_webhook_signature"
        );
    }

    #[test]
    fn payloads_read_their_type_ids_and_timestamp_and_stale_ones_are_refused() {
        let e = parse(br#"{"type":"UNINSTALL","appId":"a1","locationId":"loc_1","webhookId":"w1","timestamp":"2026-07-02T10:53:58.853Z"}"#).unwrap();
        assert_eq!(e.kind, Kind::Uninstall);
        assert_eq!(e.location_id.as_deref(), Some("loc_1"));
        assert_eq!(e.webhook_id.as_deref(), Some("w1"));
        let at = e.timestamp.unwrap();
        assert!(check_fresh(&e, at + MAX_AGE).is_ok());
        assert_eq!(
            check_fresh(&e, at + MAX_AGE + Duration::seconds(1))
                .unwrap_err()
                .code(),
            "webhook_stale"
        );
        assert_eq!(
            check_fresh(&e, at - Duration::minutes(10))
                .unwrap_err()
                .code(),
            "webhook_stale"
        );
        assert!(check_app(&e, Some("a1")).is_ok());
        assert!(check_app(&e, None).is_ok());
        assert_eq!(check_app(&e, Some("a2")).unwrap_err().code(), "wrong_app");
        assert_eq!(
            parse(br#"{"type":"InboundMessage"}"#).unwrap().kind,
            Kind::Other("InboundMessage".into())
        );
        // A location event names its location `id`, with its new name.
        let renamed =
            parse(br#"{"type":"LocationUpdate","id":"l9","companyId":"c1","name":"Dental"}"#)
                .unwrap();
        assert_eq!(renamed.kind, Kind::LocationUpdate);
        assert_eq!(renamed.account().map(|a| a.as_str()), Some("l9"));
        assert_eq!(renamed.name.as_deref(), Some("Dental"));
        // An agency event names only its company.
        let agency = parse(br#"{"type":"UserCreate","companyId":"c1"}"#).unwrap();
        assert_eq!(agency.account().map(|a| a.as_str()), Some("c1"));
        for bad in [
            &b"[]"[..],
            b"nope",
            br#"{"locationId":"x"}"#,
            br#"{"type":"INSTALL","timestamp":"yesterday"}"#,
            br#"{"type":"INSTALL","locationId":7}"#,
        ] {
            assert_eq!(parse(bad).unwrap_err().code(), "invalid_webhook");
        }
    }
}
