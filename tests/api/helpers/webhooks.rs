//! Webhooks as a receiver sees them: the shared secret, the outbox rows
//! waiting or delivered, and checks of a signed delivery.

use diesel::prelude::*;
use wiremock::{MockServer, Request};

/// The secret the test apps sign webhooks with.
pub const WEBHOOK_SECRET: &str = "whsec-test-secret";

/// One row of the webhook outbox.
#[derive(Debug, Queryable)]
pub struct Outbox {
    pub payload: String,
    pub attempts: i32,
    pub next_attempt_at: chrono::NaiveDateTime,
    pub delivered_at: Option<chrono::NaiveDateTime>,
    pub last_error: Option<String>,
}

/// The webhook outbox, oldest row first.
pub fn outbox(conn: &mut tether::db::PooledConn) -> Vec<Outbox> {
    use tether::db::schema::webhook_outbox as o;
    o::table
        .order(o::created_at.asc())
        .select((
            o::payload,
            o::attempts,
            o::next_attempt_at,
            o::delivered_at,
            o::last_error,
        ))
        .load(conn)
        .unwrap()
}

/// Every request a receiver (a wiremock server) got, in order.
pub async fn received(server: &MockServer) -> Vec<Request> {
    server.received_requests().await.unwrap_or_default()
}

/// Checks a delivered request: a JSON POST whose signature verifies.
pub fn assert_signed(request: &Request) -> serde_json::Value {
    assert_eq!(request.method.as_str(), "POST");
    assert!(request.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let header = request.headers["tether-signature"]
        .to_str()
        .unwrap()
        .to_string();
    let t: i64 = header
        .strip_prefix("t=")
        .and_then(|rest| rest.split(',').next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no timestamp in {header}"));
    assert!(
        (chrono::Utc::now().timestamp() - t).abs() < 60,
        "a current timestamp"
    );
    let body = String::from_utf8(request.body.clone()).unwrap();
    assert_eq!(
        header,
        tether::webhooks::signature(WEBHOOK_SECRET.as_bytes(), t, &body),
        "the signature verifies"
    );
    assert_ne!(
        header,
        tether::webhooks::signature(b"another secret", t, &body),
        "and only with the secret"
    );
    serde_json::from_str(&body).unwrap()
}
