//! Connection events to the operator's URL, and providers' app events
//! relayed to the CRM: written to an outbox in the same database work as
//! what they tell, delivered by a background task with retries, so they
//! survive restarts and never hold up a refresh.
//!
//! Each delivery is a JSON POST signed as Standard Webhooks defines
//! (standardwebhooks.com), so a receiver verifies it with any of that
//! specification's libraries: `webhook-id` (the payload's id, the same on
//! every attempt), `webhook-timestamp` (unix seconds) and `webhook-signature`
//! (`v1,<base64 HMAC-SHA256 of "id.timestamp.body">`, one per secret,
//! space-separated). The older `Tether-Signature: t=<unix seconds>,v1=<hex
//! HMAC-SHA256 of "t.body">` is still sent, with the first secret, for
//! receivers written for it.

use crate::app::App;
use crate::db::models::webhook as outbox;
use crate::db::now;
use crate::metrics::Delivery;
use hmac::{Hmac, Mac};
use sha2::Sha256;

pub use crate::db::models::webhook::MAX_ATTEMPTS;

/// The `Tether-Signature` header value for `body` at `timestamp`.
pub fn signature(secret: &[u8], timestamp: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(format!("{timestamp}.{body}").as_bytes());
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

pub use crate::config::webhook_secrets as secrets;

/// The HMAC key of a secret, as Standard Webhooks' libraries read it: a
/// `whsec_` secret is the base64 of its key; any other is its own bytes (a
/// library is then given `whsec_` and the base64 of the secret).
pub fn signing_key(secret: &str) -> Vec<u8> {
    use base64::Engine;
    secret
        .strip_prefix("whsec_")
        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
        .unwrap_or_else(|| secret.as_bytes().to_vec())
}

/// The `webhook-signature` header value: a `v1,<base64>` signature of
/// `id.timestamp.body` per secret, space-separated.
pub fn standard_signature(secrets: &[&str], id: &str, timestamp: i64, body: &str) -> String {
    use base64::Engine;
    secrets
        .iter()
        .map(|secret| {
            let mut mac = Hmac::<Sha256>::new_from_slice(&signing_key(secret))
                .expect("HMAC takes keys of any length");
            mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
            let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
            format!("v1,{sig}")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

pub use crate::db::models::webhook::prune;

/// Deliveries sent at once per channel, per process.
pub const CONCURRENCY: usize = 16;

/// Deliveries taken per round and channel.
const BATCH: usize = 64;

/// How one delivery went.
enum Outcome {
    Taken,
    /// The receiver is down, overloaded or failing (no answer, 5xx, 429):
    /// its deliveries are probed one at a time until it takes one.
    ReceiverFailed(String),
    /// The receiver refused this delivery (another 4xx, a 3xx).
    Refused(String),
}

/// Delivers what is due, round after round, until nothing is left that can
/// go now; returns how many were delivered. Each channel (connection
/// events, relayed app events) goes to its own URL, [`CONCURRENCY`] at a
/// time, in order per account.
pub async fn deliver_due(state: &App) -> Result<usize, crate::error::AppError> {
    let targets = [
        (outbox::EVENTS, state.settings.webhook.clone()),
        (outbox::RELAY, state.settings.relay_target()),
    ];
    let mut delivered = 0;
    for (channel, target) in targets {
        // Unset since some were queued: those wait for a URL.
        let Some((url, secret)) = target else {
            continue;
        };
        // A stopping process claims nothing more: another instance sends it.
        while !state.is_stopping() {
            let limit = state.receivers.allowance(channel, BATCH) as i64;
            let batch = state
                .db(move |c| Ok(outbox::claim(c, channel, limit)?))
                .await?;
            if batch.is_empty() {
                break;
            }
            let sent = round(state, channel, &url, &secret, batch).await?;
            delivered += sent;
            if sent == 0 {
                break;
            }
        }
    }
    Ok(delivered)
}

/// Sends one claimed batch and records each outcome; returns how many
/// were taken.
async fn round(
    state: &App,
    channel: &'static str,
    url: &url::Url,
    secret: &crate::crypto::Secret<String>,
    batch: Vec<outbox::Pending>,
) -> Result<usize, crate::error::AppError> {
    use futures_util::StreamExt;
    let outcomes: Vec<(outbox::Pending, Outcome)> = futures_util::stream::iter(batch)
        .map(|p| async move {
            let outcome = match outgoing(state, channel, &p).await {
                Ok(payload) => send(state, url, secret, &p.delivery_id(), &payload).await,
                Err(why) => Outcome::Refused(why),
            };
            (p, outcome)
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let mut taken = Vec::new();
    for (p, outcome) in outcomes {
        let why = match outcome {
            Outcome::Taken => {
                state.receivers.took(channel);
                state.metrics.webhook_delivery(Delivery::Delivered);
                taken.push(p.id);
                continue;
            }
            Outcome::ReceiverFailed(why) => {
                state.receivers.failed(channel);
                why
            }
            Outcome::Refused(why) => why,
        };
        failed(state, p, why).await?;
    }
    let n = taken.len();
    if n > 0 {
        state
            .db(move |c| Ok(outbox::delivered_all(c, &taken)?))
            .await?;
    }
    Ok(n)
}

/// How long the reconnect link of a `needs_reconnect` event stays valid:
/// the longest a link may, since the chatbot may forward it to a person who
/// reads it hours later.
const RECONNECT_LINK_TTL: chrono::Duration = chrono::Duration::days(1);

/// The payload as it goes out. A `needs_reconnect` event of an account
/// connected in a browser carries `reconnect_url`: a single-use connect
/// link that reconnects exactly that account (with the provider's login
/// hint, refusing another account), for the chatbot to forward as it is.
/// The link is made at each attempt and never stored in the outbox, where
/// a secret would sit in clear for as long as the row is kept; an attempt
/// that could not make it is retried like a failed one.
async fn outgoing(state: &App, channel: &str, p: &outbox::Pending) -> Result<String, String> {
    use crate::db::models::connect_link::{ConnectLink, NewLink};
    use crate::db::models::tenant::Tenant;
    use crate::ids::ExternalTenantId;
    if channel != outbox::EVENTS || !p.payload.contains("\"needs_reconnect\"") {
        return Ok(p.payload.clone());
    }
    let mut payload: serde_json::Value =
        serde_json::from_str(&p.payload).map_err(|e| format!("stored payload: {e}"))?;
    let field = |name: &str| payload.get(name).and_then(|v| v.as_str()).map(String::from);
    let account = payload
        .pointer("/account/id")
        .and_then(|v| v.as_str())
        .map(String::from);
    let (Some("needs_reconnect"), Some(tenant), Some(provider), Some(account)) = (
        field("type").as_deref(),
        field("tenant").and_then(|t| ExternalTenantId::parse(&t).ok()),
        field("provider").and_then(|k| state.providers.shared(&k).cloned()),
        account,
    ) else {
        return Ok(p.payload.clone());
    };
    if provider.flow != crate::providers::Flow::AuthorizationCode {
        return Ok(p.payload.clone());
    }
    let key = provider.key.clone();
    let token = state
        .db(move |c| {
            let Some(tenant) = Tenant::by_external_id(c, &tenant)? else {
                return Ok(None);
            };
            let (token, _) = ConnectLink::create(
                c,
                &tenant.id,
                &key,
                &NewLink {
                    created_by: "needs_reconnect",
                    email: None,
                    tags: None,
                    account: Some(&account),
                    ttl: RECONNECT_LINK_TTL,
                },
            )?;
            Ok(Some(token))
        })
        .await
        .map_err(|e| format!("reconnect link not made: {}", e.message()))?;
    // A tenant removed since: the event goes out as it is.
    let Some(token) = token else {
        return Ok(p.payload.clone());
    };
    payload["reconnect_url"] = serde_json::Value::String(format!(
        "{}/connect/{}",
        state.settings.base_url(),
        token.expose()
    ));
    Ok(payload.to_string())
}

/// POSTs one payload, signed (see the module's documentation). `id` is the
/// id the receiver sees, the same on every attempt.
async fn send(
    state: &App,
    url: &url::Url,
    secret: &crate::crypto::Secret<String>,
    id: &str,
    payload: &str,
) -> Outcome {
    let ts = chrono::Utc::now().timestamp();
    let secrets = secrets(secret.expose());
    let first = secrets.first().copied().unwrap_or_default();
    let sent = state
        .http
        .post(url.clone())
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", ts.to_string())
        .header(
            "webhook-signature",
            standard_signature(&secrets, id, ts, payload),
        )
        .header("Tether-Signature", signature(first.as_bytes(), ts, payload))
        .body(payload.to_string())
        .send()
        .await;
    match sent {
        Ok(res) if res.status().is_success() => Outcome::Taken,
        Ok(res) if res.status().is_server_error() || res.status().as_u16() == 429 => {
            Outcome::ReceiverFailed(format!("HTTP {}", res.status().as_u16()))
        }
        Ok(res) => Outcome::Refused(format!("HTTP {}", res.status().as_u16())),
        Err(e) => Outcome::ReceiverFailed(crate::oauth::client::transport_detail(e)),
    }
}

/// Records a failed attempt: the next one backs off, or it is given up.
async fn failed(
    state: &App,
    p: outbox::Pending,
    why: String,
) -> Result<(), crate::error::AppError> {
    let attempts = p.attempts + 1;
    let delivery = p.delivery_id();
    let next = if attempts >= MAX_ATTEMPTS {
        log::error!("webhook {delivery} given up after {attempts} attempts: {why}; `tether webhooks retry {delivery}` sends it again");
        state.metrics.webhook_delivery(Delivery::GivenUp);
        now() + outbox::GIVEN_UP_FOR
    } else {
        log::warn!("webhook {delivery} attempt {attempts} failed: {why}");
        state.metrics.webhook_delivery(Delivery::Failed);
        now() + crate::refresh::retry::backoff(attempts - 1, None)
    };
    let id = p.id;
    state
        .db(move |c| Ok(outbox::failed(c, &id, attempts, next, &why)?))
        .await
}

#[cfg(test)]
mod tests {
    #[test]
    fn standard_signatures_are_hmac_of_id_timestamp_body_one_per_secret() {
        // Computed independently: printf 'msg_1.1700000000.{"a":1}' |
        // openssl dgst -sha256 -hmac secret -binary | base64
        let one = super::standard_signature(&["secret"], "msg_1", 1_700_000_000, r#"{"a":1}"#);
        assert_eq!(one, "v1,Q5nZ7DiOGwijBBqvBVAK6c0zDr2JLkXI7TaV4f+Q2vY=");
        // A whsec_ secret is its base64 key: "c2VjcmV0" is "secret".
        assert_eq!(
            super::standard_signature(&["whsec_c2VjcmV0"], "msg_1", 1_700_000_000, r#"{"a":1}"#),
            one
        );
        let two =
            super::standard_signature(&["secret", "old"], "msg_1", 1_700_000_000, r#"{"a":1}"#);
        assert!(two.starts_with(&format!("{one} v1,")), "{two}");
        assert_eq!(super::secrets(" new-one  old-one "), ["new-one", "old-one"]);
    }

    #[test]
    fn signature_is_hmac_of_timestamp_dot_body() {
        // Computed independently: printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac secret
        assert_eq!(
            super::signature(b"secret", 1_700_000_000, r#"{"a":1}"#),
            "t=1700000000,v1=49f24e537407743fa4a0242bb63b94b9a47ee99cbbe071ccd8a22550ae411686"
        );
    }
}
