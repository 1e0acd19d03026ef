//! Each failure class takes its documented path: invalid_grant needs a
//! reconnect (409, and a webhook queued), invalid_client flags the provider
//! and not the tenant, and a 500, a 429 with Retry-After, an HTML page with
//! 200 or a refused connection is transient: 503 with Retry-After, one more
//! failure counted, and a retry planned after a growing back-off.

use super::{event_kinds, secs_until};
use crate::backend_tests;
use crate::helpers::{
    failing, invalid_grant, outbox, spawn_app_with_providers, Backend, FakeProvider, TestApp,
    TestDb, WEBHOOK_SECRET,
};
use std::time::{Duration, Instant};
use tether::app::circuit::State;
use tether::db::models::connection::{Connection, Status};
use tether::db::now;
use tether::refresh::scheduler::Scheduler;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

backend_tests!(
    invalid_grant_needs_reconnect_answers_409_and_queues_a_webhook,
    invalid_client_flags_the_provider_not_the_tenant,
    a_provider_500_is_retried_with_growing_back_off,
    a_429_with_retry_after_is_not_retried_sooner,
    an_html_page_with_200_is_a_transient_failure,
    a_refused_connection_is_a_transient_failure,
);

/// A token request that fails for now: 503 with Retry-After; returns its code and Retry-After.
async fn unavailable(app: &TestApp, key: &str) -> (String, u64) {
    let res = app.token(key, "acme").await;
    assert_eq!(res.status(), 503);
    let retry_after = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body: serde_json::Value = res.json().await.unwrap();
    (
        body["error"]["code"].as_str().unwrap().to_string(),
        retry_after,
    )
}

/// The transient path: status error, one more failure, a retry planned.
fn assert_transient(app: &TestApp, c: &Connection, error_contains: &str) -> Connection {
    let after = app.connection(&c.id);
    assert_eq!(after.status(), Status::Error, "{after:?}");
    assert_eq!(after.failure_count, c.failure_count + 1);
    assert!(
        after
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains(error_contains),
        "{:?}",
        after.last_error
    );
    let next = after.next_refresh_at.expect("a retry is planned");
    assert!(secs_until(next) >= 20, "backed off: {}", secs_until(next));
    assert!(after.lease_owner.is_none());
    assert!(event_kinds(app, &c.id).contains(&"refresh_failed".to_string()));
    after
}

async fn invalid_grant_needs_reconnect_answers_409_and_queues_a_webhook(backend: Backend) {
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    let hook = format!("{}/hooks", receiver.uri());
    let (app, fake, c, key) = failing(
        backend,
        invalid_grant(),
        &[
            ("TETHER_WEBHOOK_URL", &hook),
            ("TETHER_WEBHOOK_SECRET", WEBHOOK_SECRET),
        ],
    )
    .await;
    let res = app.token(&key, "acme").await;
    assert_eq!(res.status(), 409);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "needs_reconnect");
    let after = app.connection(&c.id);
    assert_eq!(after.status(), Status::NeedsReconnect);
    assert_eq!(after.next_refresh_at, None);
    assert_eq!(after.failure_count, 1);
    assert!(after
        .last_error
        .as_deref()
        .unwrap_or_default()
        .contains("invalid_grant"));
    assert!(after.lease_owner.is_none());
    assert_eq!(
        event_kinds(&app, &c.id),
        vec!["needs_reconnect".to_string()]
    );
    let queued = outbox(&mut app.conn());
    assert_eq!(queued.len(), 1, "{queued:?}");
    let payload: serde_json::Value = serde_json::from_str(&queued[0].payload).unwrap();
    assert_eq!(payload["type"], "needs_reconnect");
    assert_eq!(payload["connection_id"], c.id.as_str());
    // No more tries.
    assert_eq!(app.token(&key, "acme").await.status(), 409);
    assert_eq!(fake.calls_to("/token").await, 1);
}

async fn invalid_client_flags_the_provider_not_the_tenant(backend: Backend) {
    let (app, fake, c, key) = failing(
        backend,
        ResponseTemplate::new(401).set_body_json(serde_json::json!({ "error": "invalid_client" })),
        &[],
    )
    .await;
    let (code, _) = unavailable(&app, &key).await;
    assert_eq!(code, "provider_misconfigured");
    let after = app.connection(&c.id);
    assert_eq!(
        after.status(),
        Status::Error,
        "the tenant's connection is not condemned"
    );
    assert_eq!(after.failure_count, 1);
    assert!(after
        .last_error
        .as_deref()
        .unwrap_or_default()
        .contains("invalid_client"));
    let next = after
        .next_refresh_at
        .expect("retried after the operator's fix");
    assert!(secs_until(next) >= 600, "a long wait: {}", secs_until(next));
    assert_eq!(
        app.state.breakers.state("acme"),
        State::Closed,
        "not an outage"
    );

    // The flag is raised off the request path.
    let deadline = Instant::now() + Duration::from_secs(10);
    let ready = loop {
        let res = app.get("/readyz").await;
        assert_eq!(res.status(), 200, "still ready");
        let ready: serde_json::Value = res.json().await.unwrap();
        if ready["misconfigured_providers"].get("acme").is_some() {
            break ready;
        }
        assert!(Instant::now() < deadline, "no flag in /readyz: {ready}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(ready["misconfigured_providers"]["acme"]
        .as_str()
        .unwrap()
        .contains("invalid_client"));
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("tether_provider_misconfigured{provider=\"acme\"} 1"),
        "{metrics}"
    );
    assert_eq!(fake.calls_to("/token").await, 1);
}

async fn a_provider_500_is_retried_with_growing_back_off(backend: Backend) {
    let (app, fake, c, key) = failing(backend, ResponseTemplate::new(500), &[]).await;
    let (code, retry_after) = unavailable(&app, &key).await;
    assert_eq!(code, "refresh_failed");
    assert!((20..=40).contains(&retry_after), "{retry_after}");
    let first = assert_transient(&app, &c, "HTTP 500");
    let in_secs = secs_until(first.next_refresh_at.unwrap());
    assert!((20..=37).contains(&in_secs), "30 s ± 20%: {in_secs}");

    // The scheduler's retry fails again and waits longer.
    app.make_due(&c.id);
    assert_eq!(Scheduler::new(app.state.clone()).tick().await.unwrap(), 1);
    let second = app
        .until(&c.id, |r| r.failure_count == 2 && r.lease_owner.is_none())
        .await;
    let in_secs = secs_until(second.next_refresh_at.unwrap());
    assert!((45..=73).contains(&in_secs), "60 s ± 20%: {in_secs}");
    assert_eq!(second.status(), Status::Error);
    assert_eq!(fake.calls_to("/token").await, 2);
}

async fn a_429_with_retry_after_is_not_retried_sooner(backend: Backend) {
    let (app, _fake, c, key) = failing(
        backend,
        ResponseTemplate::new(429).insert_header("Retry-After", "120"),
        &[],
    )
    .await;
    let before = now();
    let (code, retry_after) = unavailable(&app, &key).await;
    assert_eq!(code, "refresh_failed");
    assert!(retry_after >= 120, "{retry_after}");
    let after = assert_transient(&app, &c, "HTTP 429");
    let next = after.next_refresh_at.unwrap();
    assert!(
        next >= before + chrono::Duration::seconds(120),
        "{next} vs {before}"
    );
}

async fn an_html_page_with_200_is_a_transient_failure(backend: Backend) {
    let (app, _fake, c, key) = failing(
        backend,
        ResponseTemplate::new(200).set_body_raw(
            "<html><body>Down for maintenance</body></html>",
            "text/html",
        ),
        &[],
    )
    .await;
    let (code, _) = unavailable(&app, &key).await;
    assert_eq!(code, "refresh_failed");
    assert_transient(&app, &c, "");
}

async fn a_refused_connection_is_a_transient_failure(backend: Backend) {
    let fake = FakeProvider::start().await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let db = TestDb::new(backend);
    let toml = fake.providers_toml("post").replace(
        &format!("{}/token", fake.server.uri()),
        &format!("http://127.0.0.1:{closed}/token"),
    );
    let app = spawn_app_with_providers(db, &toml, &[]).await;
    let t = app.ensure_tenant("acme");
    let c = app.seed(&t.id, "acct-1", "rt-0", -60, -1);
    let key = app.api_key(None, false);
    // The cause reaches the caller, and the row, with its whole chain: a
    // refused connection reads apart from a failed lookup or a bad
    // certificate (the outermost message alone is "error sending request").
    let res = app.token(&key, "acme").await;
    assert_eq!(res.status(), 503);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "refresh_failed");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("Connection refused"), "{message}");
    assert!(!message.contains("127.0.0.1"), "no URL: {message}");
    let after = assert_transient(&app, &c, "connection failed");
    let last_error = after.last_error.unwrap_or_default();
    assert!(last_error.contains("Connection refused"), "{last_error}");
    assert!(!last_error.contains("/token"), "no URL: {last_error}");
}
