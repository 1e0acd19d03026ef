//! Connection events to the operator's URL, and providers' app events
//! relayed to the CRM: written to an outbox in the same database work as
//! what they tell, delivered by a background task with retries, so they
//! survive restarts and never hold up a refresh.
//!
//! Each delivery is a JSON POST with
//! `Tether-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body">`.

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
            let outcome = send(state, url, secret, &p.payload).await;
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

/// POSTs one payload, signed.
async fn send(
    state: &App,
    url: &url::Url,
    secret: &crate::crypto::Secret<String>,
    payload: &str,
) -> Outcome {
    let ts = chrono::Utc::now().timestamp();
    let sent = state
        .http
        .post(url.clone())
        .header("content-type", "application/json")
        .header(
            "Tether-Signature",
            signature(secret.expose().as_bytes(), ts, payload),
        )
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
    fn signature_is_hmac_of_timestamp_dot_body() {
        // Computed independently: printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac secret
        assert_eq!(
            super::signature(b"secret", 1_700_000_000, r#"{"a":1}"#),
            "t=1700000000,v1=49f24e537407743fa4a0242bb63b94b9a47ee99cbbe071ccd8a22550ae411686"
        );
    }
}
