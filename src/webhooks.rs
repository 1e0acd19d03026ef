//! Connection events to the operator's URL: written to an outbox in the same
//! database work as the event, delivered by a background task with retries,
//! so they survive restarts and never hold up a refresh.
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

/// Delivers what is due; returns how many were delivered.
pub async fn deliver_due(state: &App) -> Result<usize, crate::error::AppError> {
    let Some((url, secret)) = state.settings.webhook.clone() else {
        return Ok(0);
    };
    let batch = state.db(|c| Ok(outbox::claim(c, 20)?)).await?;
    let mut delivered = 0;
    for p in batch {
        let ts = chrono::Utc::now().timestamp();
        let sent = state
            .http
            .post(url.clone())
            .header("content-type", "application/json")
            .header(
                "Tether-Signature",
                signature(secret.expose().as_bytes(), ts, &p.payload),
            )
            .body(p.payload.clone())
            .send()
            .await;
        let outcome = match sent {
            Ok(res) if res.status().is_success() => Ok(()),
            Ok(res) => Err(format!("HTTP {}", res.status().as_u16())),
            Err(e) => Err(crate::oauth::client::transport_detail(e)),
        };
        let attempts = p.attempts + 1;
        let id = p.id.clone();
        let delivery = p.delivery_id();
        match outcome {
            Ok(()) => {
                delivered += 1;
                state.metrics.webhook_delivery(Delivery::Delivered);
                state
                    .db(move |c| Ok(outbox::delivered(c, &id, attempts)?))
                    .await?;
            }
            Err(why) => {
                let next = if attempts >= MAX_ATTEMPTS {
                    log::error!("webhook {delivery} given up after {attempts} attempts: {why}; `tether webhooks retry {delivery}` sends it again");
                    state.metrics.webhook_delivery(Delivery::GivenUp);
                    now() + outbox::GIVEN_UP_FOR
                } else {
                    log::warn!("webhook {delivery} attempt {attempts} failed: {why}");
                    state.metrics.webhook_delivery(Delivery::Failed);
                    now() + crate::refresh::retry::backoff(attempts - 1, None)
                };
                state
                    .db(move |c| Ok(outbox::failed(c, &id, attempts, next, &why)?))
                    .await?;
            }
        }
    }
    Ok(delivered)
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
