//! A refresh whose answer never arrives (a timeout): the outcome is unknown,
//! so the connection is kept and retried after a back-off, never given up
//! while its stored token is still valid, and a lost answer after rotation
//! ends as needs_reconnect with the reason named.

use super::{refresh_token_of, secs_until, SHORT_TIMEOUT};
use crate::backend_tests;
use crate::helpers::{spawn_app_with_acme, Backend, FakeProvider, Rotating};
use std::time::Duration;
use tether::db::models::connection::{Connection, Status};
use tether::refresh::scheduler::Scheduler;

backend_tests!(
    a_refresh_whose_answer_was_lost_after_rotation_is_retried_and_ends_as_needs_reconnect_with_the_reason,
    a_provider_timing_out_for_a_while_loses_no_connection_and_all_recover,
    a_timed_out_refresh_at_a_provider_that_keeps_refresh_tokens_is_retried_later,
);

async fn a_refresh_whose_answer_was_lost_after_rotation_is_retried_and_ends_as_needs_reconnect_with_the_reason(
    backend: Backend,
) {
    let fake = FakeProvider::start().await;
    let rotating = Rotating::new(true);
    // It rotates on receipt, then the answer comes too late: lost.
    rotating.set_delay(Duration::from_secs(3));
    rotating.mount(&fake).await;
    let app = spawn_app_with_acme(backend, &fake, "", &SHORT_TIMEOUT).await;
    let t = app.ensure_tenant("acme");
    rotating.grant("rt-0");
    let c = app.seed(&t.id, "acct-1", "rt-0", 30, 3600);
    let key = app.api_key(None, false);

    // The stored token is still valid: it is handed out, and the connection
    // waits to retry instead of being given up.
    let res = app.token(&key, "acme").await;
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["access_token"], "at-seed-rt-0");
    let after = app.connection(&c.id);
    assert_eq!(after.status(), Status::Error, "not given up");
    assert!(
        after
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("outcome is unknown"),
        "{:?}",
        after.last_error
    );
    let next = after.next_refresh_at.expect("a retry is planned");
    assert!(secs_until(next) >= 20, "backed off: {}", secs_until(next));
    assert!(after.lease_owner.is_none());

    // While it backs off, callers get the stored token and nothing is sent.
    for _ in 0..3 {
        assert_eq!(app.token(&key, "acme").await.status(), 200);
    }
    assert_eq!(Scheduler::new(app.state.clone()).tick().await.unwrap(), 0);
    assert_eq!(rotating.calls(), 1, "no resend while backing off");

    // The retry sends the stored refresh token again; the provider had
    // rotated it, so it says the grant is gone: needs_reconnect, with why.
    rotating.set_delay(Duration::ZERO);
    app.make_due(&c.id);
    assert_eq!(Scheduler::new(app.state.clone()).tick().await.unwrap(), 1);
    let done = app
        .until(&c.id, |r| r.status() == Status::NeedsReconnect)
        .await;
    let reason = done.last_error.clone().unwrap_or_default();
    assert!(reason.contains("no longer valid"), "{reason}");
    assert!(
        reason.contains("the refresh before it had failed"),
        "the lost answer is named: {reason}"
    );
    assert_eq!(rotating.seen("rt-0"), 2);
    assert_eq!(app.token(&key, "acme").await.status(), 409);
    let status: serde_json::Value = app
        .client
        .get(format!(
            "{}/api/v1/tenants/acme/connections/acme",
            app.address
        ))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["status"], "needs_reconnect");
    assert_eq!(status["last_error"], serde_json::Value::String(reason));
}

async fn a_provider_timing_out_for_a_while_loses_no_connection_and_all_recover(backend: Backend) {
    let fake = FakeProvider::start().await;
    let rotating = Rotating::new(true);
    rotating.mount(&fake).await;
    let app = spawn_app_with_acme(backend, &fake, "", &SHORT_TIMEOUT).await;
    let t = app.ensure_tenant("acme");
    // Fewer than the circuit's threshold, so every one is really sent.
    let n = tether::app::circuit::THRESHOLD as usize - 1;
    let seeded: Vec<(Connection, String)> = (0..n)
        .map(|i| {
            let rt = format!("rt-seed-{i}");
            rotating.grant(&rt);
            (app.seed(&t.id, &format!("acct-{i}"), &rt, 600, -1), rt)
        })
        .collect();

    // The provider hangs: every refresh times out, none is acted on.
    rotating.set_stalled(true);
    let scheduler = Scheduler::new(app.state.clone());
    assert_eq!(scheduler.tick().await.unwrap(), n);
    for (c, _) in &seeded {
        let after = app
            .until(&c.id, |r| r.version > c.version || r.failure_count > 0)
            .await;
        assert_eq!(after.status(), Status::Error, "kept, retrying: {after:?}");
        assert!(after.next_refresh_at.is_some());
    }

    // It recovers: the retries, with the same refresh tokens, all succeed.
    rotating.set_stalled(false);
    for (c, _) in &seeded {
        app.make_due(&c.id);
    }
    assert_eq!(scheduler.tick().await.unwrap(), n);
    for (c, first_rt) in &seeded {
        let done = app
            .until(&c.id, |r| {
                r.status() == Status::Connected && r.lease_owner.is_none()
            })
            .await;
        assert_eq!(done.failure_count, 0);
        assert_eq!(Some(refresh_token_of(&app, &done)), rotating.live(first_rt));
    }
    assert!(rotating.reuses().is_empty());
    assert_eq!(rotating.revoked(), 0);
}

async fn a_timed_out_refresh_at_a_provider_that_keeps_refresh_tokens_is_retried_later(
    backend: Backend,
) {
    let fake = FakeProvider::start().await;
    let keeping = Rotating::new(false);
    keeping.set_delay(Duration::from_secs(3));
    keeping.mount(&fake).await;
    let app = spawn_app_with_acme(
        backend,
        &fake,
        "rotates_refresh_tokens = false",
        &SHORT_TIMEOUT,
    )
    .await;
    let t = app.ensure_tenant("acme");
    keeping.grant("rt-0");
    let c = app.seed(&t.id, "acct-1", "rt-0", 30, 3600);
    let key = app.api_key(None, false);

    // The stored token is still valid (under min_ttl): it is handed out.
    let res = app.token(&key, "acme").await;
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["access_token"], "at-seed-rt-0");
    let after = app.connection(&c.id);
    assert_eq!(after.status(), Status::Error);
    assert_eq!(after.failure_count, 1);
    assert!(
        after
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("outcome is unknown"),
        "{:?}",
        after.last_error
    );
    let next = after.next_refresh_at.expect("a retry is planned");
    assert!(secs_until(next) >= 20, "backed off: {}", secs_until(next));
    assert_eq!(keeping.calls(), 1);

    // Later, the retry goes through.
    keeping.set_delay(Duration::ZERO);
    app.make_due(&c.id);
    assert_eq!(Scheduler::new(app.state.clone()).tick().await.unwrap(), 1);
    let done = app
        .until(&c.id, |r| {
            r.version > after.version && r.lease_owner.is_none()
        })
        .await;
    assert_eq!(done.status(), Status::Connected);
    assert_eq!(done.failure_count, 0);
    assert_eq!(
        keeping.seen("rt-0"),
        2,
        "a provider that keeps refresh tokens may see it again"
    );
    assert_eq!(
        refresh_token_of(&app, &done),
        "rt-0",
        "the old refresh token is kept"
    );
}
