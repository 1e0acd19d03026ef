//! Refreshing against a provider that rotates refresh tokens: a refresh token
//! is never sent twice, concurrent callers share one refresh, instances on one
//! database cooperate through leases, each failure class takes its documented
//! path, the circuit breaker stops storms, and webhooks report what matters.

use crate::backend_tests;
use crate::helpers::{
    acme_vars, assert_signed, eventually, failing, instance_settings, invalid_grant, outbox,
    received, seed_on, spawn_app_with, spawn_app_with_acme, spawn_app_with_providers, token_at,
    write_providers, Backend, FakeProvider, Rotating, TestApp, TestDb, WEBHOOK_SECRET,
};
use diesel::prelude::*;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tether::db::models::connection::{Connection, Status};
use tether::db::models::tenant::Tenant;
use tether::db::now;
use tether::refresh::circuit::State;
use tether::refresh::scheduler::Scheduler;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

// ---------------------------------------------------------------------------
// Set-up.

fn refresh_token_of(app: &TestApp, c: &Connection) -> String {
    c.tokens(&app.ctx.keys)
        .unwrap()
        .unwrap()
        .refresh_token
        .unwrap()
        .expose()
        .clone()
}

fn event_kinds(app: &TestApp, connection_id: &str) -> Vec<String> {
    use tether::db::schema::events;
    events::table
        .filter(events::connection_id.eq(connection_id))
        .select(events::kind)
        .load(&mut app.conn())
        .unwrap()
}

fn secs_until(t: chrono::NaiveDateTime) -> i64 {
    (t - now()).num_seconds()
}

backend_tests!(
    fifty_concurrent_token_requests_share_one_refresh_and_one_new_token,
    an_expired_lease_of_a_dead_instance_is_taken_over_and_the_refresh_token_sent_once,
    two_instances_refresh_200_connections_without_reusing_a_refresh_token,
    a_refresh_whose_answer_was_lost_after_rotation_is_retried_and_ends_as_needs_reconnect_with_the_reason,
    a_provider_timing_out_for_a_while_loses_no_connection_and_all_recover,
    a_renewed_refresh_token_moves_its_lapse_date_and_a_lapse_warning_is_a_webhook,
    a_refresh_of_a_provider_without_refresh_is_a_409_that_changes_nothing,
    a_timed_out_refresh_at_a_provider_that_keeps_refresh_tokens_is_retried_later,
    invalid_grant_needs_reconnect_answers_409_and_queues_a_webhook,
    invalid_client_flags_the_provider_not_the_tenant,
    a_provider_500_is_retried_with_growing_back_off,
    a_429_with_retry_after_is_not_retried_sooner,
    an_html_page_with_200_is_a_transient_failure,
    a_refused_connection_is_a_transient_failure,
    five_transient_failures_open_the_circuit_and_the_next_refresh_fails_fast,
    a_success_resets_the_count_of_failures_in_a_row,
    a_needs_reconnect_event_is_delivered_as_a_signed_json_post,
    a_failed_delivery_stays_pending_and_a_restarted_instance_delivers_it,
    timeouts_open_the_circuit,
    a_waiting_instance_shares_a_failed_refresh_instead_of_sending_another,
);

// ---------------------------------------------------------------------------
// Single flight and leases.

async fn fifty_concurrent_token_requests_share_one_refresh_and_one_new_token(backend: Backend) {
    let fake = FakeProvider::start().await;
    let rotating = Rotating::new(true);
    rotating.set_delay(Duration::from_millis(200));
    rotating.mount(&fake).await;
    let app = spawn_app_with_acme(backend, &fake, "", &[]).await;
    let t = app.ensure_tenant("acme");
    rotating.grant("rt-0");
    // Expires within the default min_ttl (60 s): every request wants a refresh.
    let c = app.seed(&t.id, "acct-1", "rt-0", 30, 3600);
    let key = app.api_key(None, false);

    let started = Instant::now();
    let requests = (0..50).map(|_| {
        let (client, address, key) = (app.client.clone(), app.address.clone(), key.clone());
        actix_web::rt::spawn(async move {
            let res = token_at(&client, &address, &key, "acme").await;
            let status = res.status().as_u16();
            let body: serde_json::Value = res.json().await.unwrap();
            (status, body)
        })
    });
    let answers = futures_util::future::join_all(requests).await;
    eprintln!("50 concurrent token requests: {:?}", started.elapsed());

    assert_eq!(rotating.calls(), 1, "one call to the token endpoint");
    let tokens: HashSet<String> = answers
        .into_iter()
        .map(|a| {
            let (status, body) = a.unwrap();
            assert_eq!(status, 200, "{body}");
            body["access_token"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(
        tokens,
        HashSet::from(["at-1".to_string()]),
        "one new access token for all"
    );
    let after = app.connection(&c.id);
    assert_eq!(after.version, c.version + 1);
    assert_eq!(refresh_token_of(&app, &after), "rt-1");
    assert!(rotating.reuses().is_empty());
}

async fn an_expired_lease_of_a_dead_instance_is_taken_over_and_the_refresh_token_sent_once(
    backend: Backend,
) {
    let fake = FakeProvider::start().await;
    let rotating = Rotating::new(true);
    rotating.mount(&fake).await;
    let app = spawn_app_with_acme(backend, &fake, "", &[]).await;
    let t = app.ensure_tenant("acme");
    rotating.grant("rt-0");
    let c = app.seed(&t.id, "acct-1", "rt-0", 600, -1);
    // An instance leased it and stopped before finishing.
    let leased = Connection::claim(
        &mut app.conn(),
        &c.id,
        "dead-instance",
        now() + chrono::Duration::seconds(60),
    )
    .unwrap();
    assert!(leased.is_some());
    let scheduler = Scheduler::new(app.state.clone());
    assert_eq!(
        scheduler.tick().await.unwrap(),
        0,
        "a live lease is respected"
    );
    assert_eq!(rotating.calls(), 0);

    // The lease lapses.
    {
        use tether::db::schema::connections;
        diesel::update(connections::table.find(&c.id))
            .set(connections::lease_until.eq(Some(now() - chrono::Duration::seconds(1))))
            .execute(&mut app.conn())
            .unwrap();
    }
    assert_eq!(
        scheduler.tick().await.unwrap(),
        1,
        "the lapsed lease is taken over"
    );
    let after = app
        .until(&c.id, |r| r.version > c.version && r.lease_owner.is_none())
        .await;
    assert_eq!(after.status(), Status::Connected);
    assert_eq!(refresh_token_of(&app, &after), "rt-1");
    assert_eq!(rotating.seen("rt-0"), 1, "the refresh token went out once");
    assert_eq!(rotating.calls(), 1);
    assert!(rotating.reuses().is_empty());
}

// Two instances, 200 due connections, both schedulers and the token API at once.

async fn two_instances_refresh_200_connections_without_reusing_a_refresh_token(backend: Backend) {
    let fake = FakeProvider::start().await;
    let rotating = Rotating::new(true);
    rotating.set_delay(Duration::from_millis(20));
    rotating.mount(&fake).await;
    let app = spawn_app_with_acme(backend, &fake, "", &[]).await;
    let (second_address, second_state) = app.second_instance(&[]).await;

    const TENANTS: usize = 20;
    const ACCOUNTS: usize = 10;
    let mut seeded = Vec::new();
    {
        let mut conn = app.conn();
        for t in 0..TENANTS {
            let ext = format!("t{t:02}");
            let tenant = Tenant::create(&mut conn, &ext, &ext).unwrap();
            for a in 0..ACCOUNTS {
                let rt = format!("rt-seed-{t}-{a}");
                rotating.grant(&rt);
                let c = seed_on(
                    &mut conn,
                    &app.ctx.keys,
                    &tenant.id,
                    &format!("acct-{a}"),
                    &rt,
                    30,
                    -1,
                );
                seeded.push((c, rt));
            }
        }
    }
    let key = app.api_key(None, false);
    let started = Instant::now();

    // Both schedulers tick until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let loops: Vec<_> = [app.state.clone(), second_state.clone()]
        .into_iter()
        .map(|state| {
            let stop = stop.clone();
            actix_web::rt::spawn(async move {
                let scheduler = Scheduler::new(state);
                while !stop.load(Ordering::SeqCst) {
                    scheduler.tick().await.expect("tick");
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
            })
        })
        .collect();

    // Meanwhile, token requests for every tenant hit both instances at once.
    let mut requests = Vec::new();
    for _round in 0..2 {
        for t in 0..TENANTS {
            for address in [app.address.clone(), second_address.clone()] {
                let (client, key, tenant) = (app.client.clone(), key.clone(), format!("t{t:02}"));
                requests.push(actix_web::rt::spawn(async move {
                    let res = token_at(&client, &address, &key, &tenant).await;
                    let status = res.status().as_u16();
                    (status, res.text().await.unwrap())
                }));
            }
        }
    }
    for answer in futures_util::future::join_all(requests).await {
        let (status, body) = answer.unwrap();
        assert_eq!(status, 200, "{body}");
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        let at = body["access_token"].as_str().unwrap();
        assert!(!at.starts_with("at-seed"), "a refreshed token: {at}");
    }

    let ids: Vec<String> = seeded.iter().map(|(c, _)| c.id.clone()).collect();
    let deadline = Instant::now() + Duration::from_secs(90);
    let rows = loop {
        use tether::db::schema::connections;
        let rows: Vec<Connection> = connections::table
            .filter(connections::id.eq_any(&ids))
            .select(Connection::as_select())
            .load(&mut app.conn())
            .unwrap();
        let done = rows
            .iter()
            .all(|r| r.lease_owner.is_none() && r.next_refresh_at.is_some_and(|t| t > now()));
        if done || Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    stop.store(true, Ordering::SeqCst);
    for l in loops {
        l.await.unwrap();
    }
    eprintln!(
        "{backend:?}: 200 connections refreshed by two instances in {:?} ({} refresh calls)",
        started.elapsed(),
        rotating.calls()
    );

    assert!(
        rotating.reuses().is_empty(),
        "refresh tokens reused: {:?}",
        rotating.reuses()
    );
    assert!(
        rotating.unknown().is_empty(),
        "unknown refresh tokens: {:?}",
        rotating.unknown()
    );
    assert_eq!(rotating.revoked(), 0);
    // Each connection refreshed exactly once: a caller that finds a refresh
    // done since it looked takes that outcome instead of refreshing again.
    assert_eq!(rotating.calls(), 200, "refresh calls for 200 connections");
    let mut seen: HashMap<String, usize> = HashMap::new();
    for rt in rotating.sent().iter() {
        *seen.entry(rt.clone()).or_default() += 1;
    }
    assert!(
        seen.values().all(|n| *n == 1),
        "a refresh token was sent twice"
    );
    assert_eq!(rows.len(), 200);
    let by_id: HashMap<String, Connection> = rows.into_iter().map(|r| (r.id.clone(), r)).collect();
    for (before, first_rt) in &seeded {
        let after = &by_id[&before.id];
        assert_eq!(after.status(), Status::Connected, "{after:?}");
        assert!(after.version > before.version, "not refreshed: {after:?}");
        assert!(after.lease_owner.is_none(), "{after:?}");
        let rt = refresh_token_of(&app, after);
        assert_ne!(&rt, first_rt);
        assert_eq!(
            Some(rt),
            rotating.live(first_rt),
            "the stored refresh token is the live one"
        );
    }
}

// ---------------------------------------------------------------------------
// A refresh whose answer never arrives.

const SHORT_TIMEOUT: [(&str, &str); 2] = [
    ("TETHER_PROVIDER_TIMEOUT_SECS", "1"),
    ("TETHER_REFRESH_LEASE_SECS", "10"),
];

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
    let n = tether::refresh::circuit::THRESHOLD as usize - 1;
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

// ---------------------------------------------------------------------------
// Failure classes.

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
    let (code, _) = unavailable(&app, &key).await;
    assert_eq!(code, "refresh_failed");
    assert_transient(&app, &c, "connection failed");
}

// ---------------------------------------------------------------------------
// Circuit breaker.

/// `n` tenants `c0..` with one expired connection each.
fn expired_connections(app: &TestApp, n: usize) -> Vec<Connection> {
    (0..n)
        .map(|i| {
            let t = app.ensure_tenant(&format!("c{i}"));
            app.seed(&t.id, "acct", &format!("rt-c{i}"), -60, 3600)
        })
        .collect()
}

async fn five_transient_failures_open_the_circuit_and_the_next_refresh_fails_fast(
    backend: Backend,
) {
    let fake = FakeProvider::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&fake.server)
        .await;
    let app = spawn_app_with_acme(backend, &fake, "", &[]).await;
    let conns = expired_connections(&app, 6);
    let key = app.api_key(None, false);
    for i in 0..5 {
        let res = app.token(&key, &format!("c{i}")).await;
        assert_eq!(res.status(), 503);
    }
    assert_eq!(app.state.breakers.state("acme"), State::Open);
    assert_eq!(fake.calls_to("/token").await, 5);
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("tether_circuit_open{provider=\"acme\"} 1"),
        "{metrics}"
    );

    // The sixth fails fast, without a call, and leaves its connection alone.
    let res = app.token(&key, "c5").await;
    assert_eq!(res.status(), 503);
    let retry_after: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&retry_after), "{retry_after}");
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "provider_unavailable");
    assert_eq!(fake.calls_to("/token").await, 5, "no call while open");
    let sixth = app.connection(&conns[5].id);
    assert_eq!(sixth.status(), Status::Connected);
    assert_eq!(sixth.failure_count, 0);
    assert!(sixth.lease_owner.is_none(), "the lease is released");
    // The scheduler fails fast too.
    app.make_due(&conns[5].id);
    assert_eq!(Scheduler::new(app.state.clone()).tick().await.unwrap(), 1);
    app.until(&conns[5].id, |r| r.lease_owner.is_none()).await;
    assert_eq!(fake.calls_to("/token").await, 5);
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("tether_refreshes_total{provider=\"acme\",outcome=\"circuit_open\"} 2"),
        "{metrics}"
    );
    // The probe after the 30 s cool-down and its closing the circuit are not
    // reachable without waiting (the breaker reads the wall clock); the unit
    // test in src/refresh/circuit.rs covers them with explicit instants.
}

async fn a_success_resets_the_count_of_failures_in_a_row(backend: Backend) {
    let fake = FakeProvider::start().await;
    // Four failures, one success, then failures again: never five in a row.
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(4)
        .mount(&fake.server)
        .await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "access_token": "at-ok", "token_type": "Bearer", "expires_in": 3600,
        })))
        .up_to_n_times(1)
        .mount(&fake.server)
        .await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&fake.server)
        .await;
    let app = spawn_app_with_acme(backend, &fake, "", &[]).await;
    expired_connections(&app, 9);
    let key = app.api_key(None, false);
    let mut statuses = Vec::new();
    for i in 0..9 {
        statuses.push(app.token(&key, &format!("c{i}")).await.status().as_u16());
    }
    assert_eq!(statuses, [503, 503, 503, 503, 200, 503, 503, 503, 503]);
    assert_eq!(app.state.breakers.state("acme"), State::Closed);
    assert_eq!(fake.calls_to("/token").await, 9);
}

/// DESIGN.md section 6 counts timeouts among the transient failures the
/// breaker guards against; a provider that hangs must open it too.
async fn timeouts_open_the_circuit(backend: Backend) {
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
    let conns = expired_connections(&app, 6);
    for i in 0..6 {
        keeping.grant(&format!("rt-c{i}"));
    }
    let key = app.api_key(None, false);
    let requests = (0..5).map(|i| {
        let (client, address, key) = (app.client.clone(), app.address.clone(), key.clone());
        actix_web::rt::spawn(async move {
            token_at(&client, &address, &key, &format!("c{i}"))
                .await
                .status()
                .as_u16()
        })
    });
    for status in futures_util::future::join_all(requests).await {
        assert_eq!(status.unwrap(), 503);
    }
    for c in &conns[..5] {
        assert_eq!(app.connection(&c.id).status(), Status::Error);
    }
    assert_eq!(keeping.calls(), 5);
    assert_eq!(
        app.state.breakers.state("acme"),
        State::Open,
        "five timeouts in a row open the circuit"
    );
    assert_eq!(app.token(&key, "c5").await.status(), 503);
    assert_eq!(keeping.calls(), 5, "no call while open");
}

// ---------------------------------------------------------------------------
// Webhooks.

async fn a_needs_reconnect_event_is_delivered_as_a_signed_json_post(backend: Backend) {
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hooks"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    let hook = format!("{}/hooks", receiver.uri());
    let (app, _fake, c, key) = failing(
        backend,
        invalid_grant(),
        &[
            ("TETHER_WEBHOOK_URL", &hook),
            ("TETHER_WEBHOOK_SECRET", WEBHOOK_SECRET),
        ],
    )
    .await;
    assert_eq!(app.token(&key, "acme").await.status(), 409);
    // The app's own delivery loop may get there first; either way one delivery.
    let (app, receiver) = (&app, &receiver);
    eventually(10, "the webhook delivery", move || async move {
        tether::webhooks::deliver_due(&app.state).await.unwrap();
        !received(receiver).await.is_empty()
    })
    .await;
    let received = received(receiver).await;
    assert_eq!(received.len(), 1);
    let payload = assert_signed(&received[0]);
    assert_eq!(payload["type"], "needs_reconnect");
    assert_eq!(payload["tenant"], "acme");
    assert_eq!(payload["provider"], "acme");
    assert_eq!(payload["connection_id"], c.id.as_str());
    assert!(payload["detail"]
        .as_str()
        .unwrap()
        .contains("invalid_grant"));
    eventually(10, "the row marked delivered", move || async move {
        outbox(&mut app.conn())[0].delivered_at.is_some()
    })
    .await;
    let rows = outbox(&mut app.conn());
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].attempts, 1);
    assert_eq!(
        tether::webhooks::deliver_due(&app.state).await.unwrap(),
        0,
        "delivered once"
    );
}

async fn a_failed_delivery_stays_pending_and_a_restarted_instance_delivers_it(backend: Backend) {
    let down = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&down)
        .await;
    let fake = FakeProvider::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(invalid_grant())
        .mount(&fake.server)
        .await;
    let db = TestDb::new(backend);
    write_providers(&db, &fake.providers_toml("post"));

    // The first instance (no server, so no delivery loop of its own).
    let down_hook = format!("{}/hooks", down.uri());
    let ctx = tether::startup::prepare(instance_settings(
        &db,
        &[
            ("TETHER_WEBHOOK_URL", &down_hook),
            ("TETHER_WEBHOOK_SECRET", WEBHOOK_SECRET),
        ],
    ))
    .unwrap();
    let c = {
        let mut conn = ctx.pool.get().unwrap();
        let t = Tenant::create(&mut conn, "acme", "acme").unwrap();
        seed_on(&mut conn, &ctx.keys, &t.id, "acct-1", "rt-0", -60, -1)
    };
    let first = std::sync::Arc::new(ctx.app());
    let err = tether::refresh::refresh_now(&first, &c.id, "test", None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "needs_reconnect");
    let before = now();
    assert_eq!(tether::webhooks::deliver_due(&first).await.unwrap(), 0);
    assert_eq!(received(&down).await.len(), 1);
    assert_signed(&received(&down).await[0]);
    let mut conn = first.pool.get().unwrap();
    let pending = outbox(&mut conn);
    drop(conn);
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].attempts, 1);
    assert!(pending[0].delivered_at.is_none());
    assert!(pending[0]
        .last_error
        .as_deref()
        .unwrap_or_default()
        .contains("500"));
    assert!(
        pending[0].next_attempt_at >= before + chrono::Duration::seconds(20),
        "a later attempt: {:?} vs {before}",
        pending[0].next_attempt_at
    );
    assert_eq!(
        tether::webhooks::deliver_due(&first).await.unwrap(),
        0,
        "not before its time"
    );
    assert_eq!(received(&down).await.len(), 1);
    // A restart: the first instance goes, the receiver comes back, and the
    // row's back-off has passed.
    {
        use tether::db::schema::webhook_outbox as o;
        diesel::update(o::table)
            .set(o::next_attempt_at.eq(now() - chrono::Duration::seconds(1)))
            .execute(&mut first.pool.get().unwrap())
            .unwrap();
    }
    drop(first);
    let up = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hooks"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&up)
        .await;
    let up_hook = format!("{}/hooks", up.uri());
    let file = db.data_dir().join("providers.toml").display().to_string();
    let mut vars = acme_vars(&file).to_vec();
    vars.extend([
        ("TETHER_WEBHOOK_URL", up_hook.as_str()),
        ("TETHER_WEBHOOK_SECRET", WEBHOOK_SECRET),
    ]);
    let app = spawn_app_with(db, &vars).await;
    let app = &app;
    eventually(10, "delivery after the restart", move || async move {
        tether::webhooks::deliver_due(&app.state).await.unwrap();
        outbox(&mut app.conn())[0].delivered_at.is_some()
    })
    .await;
    let received = received(&up).await;
    assert_eq!(received.len(), 1);
    let payload = assert_signed(&received[0]);
    assert_eq!(payload["type"], "needs_reconnect");
    assert_eq!(payload["connection_id"], c.id.as_str());
    assert_eq!(outbox(&mut app.conn())[0].attempts, 2);
}

// ---------------------------------------------------------------------------
// Single flight across instances, when the shared refresh fails.

/// DESIGN.md section 6: concurrent requests share one refresh across
/// processes. An instance waiting on another's lease must take that refresh's
/// failure as its own outcome, not send the refresh again at once (which
/// skips the back-off and, with N instances, multiplies the calls by N).
async fn a_waiting_instance_shares_a_failed_refresh_instead_of_sending_another(backend: Backend) {
    let fake = FakeProvider::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(500).set_delay(Duration::from_millis(500)))
        .mount(&fake.server)
        .await;
    let app = spawn_app_with_acme(backend, &fake, "", &[]).await;
    let (second_address, _second_state) = app.second_instance(&[]).await;
    let t = app.ensure_tenant("acme");
    let c = app.seed(&t.id, "acct-1", "rt-0", -60, 3600);
    let key = app.api_key(None, false);

    let first = {
        let (client, address, key) = (app.client.clone(), app.address.clone(), key.clone());
        actix_web::rt::spawn(async move { token_at(&client, &address, &key, "acme").await })
    };
    // The first instance holds the lease and is talking to the provider.
    app.until(&c.id, |r| r.lease_owner.is_some()).await;
    let second = token_at(&app.client, &second_address, &key, "acme").await;
    let first = first.await.unwrap();
    assert_eq!(first.status(), 503);
    assert_eq!(second.status(), 503, "the failure is shared");
    let after = app.connection(&c.id);
    assert_eq!(after.status(), Status::Error);
    assert_eq!(
        fake.calls_to("/token").await,
        1,
        "one refresh for both instances; failure_count {}",
        after.failure_count
    );
    assert_eq!(after.failure_count, 1);
}

// ---------------------------------------------------------------------------
// Refresh tokens with a known lifetime; tokens that cannot be refreshed.

async fn a_renewed_refresh_token_moves_its_lapse_date_and_a_lapse_warning_is_a_webhook(
    backend: Backend,
) {
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hooks"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    let hook = format!("{}/hooks", receiver.uri());
    let fake = FakeProvider::start().await;
    let rotating = Rotating::new(true);
    rotating.mount(&fake).await;
    let app = spawn_app_with_acme(
        backend,
        &fake,
        "refresh_token_lifetime_days = 365",
        &[
            ("TETHER_WEBHOOK_URL", &hook),
            ("TETHER_WEBHOOK_SECRET", WEBHOOK_SECRET),
        ],
    )
    .await;
    let t = app.ensure_tenant("acme");
    rotating.grant("rt-0");
    let c = app.seed(&t.id, "acct-1", "rt-0", 600, 3600);
    {
        use tether::db::schema::connections;
        diesel::update(connections::table.find(&c.id))
            .set(connections::refresh_expires_at.eq(Some(now() + chrono::Duration::days(3))))
            .execute(&mut app.conn())
            .unwrap();
    }
    // The scheduler's housekeeping announces the lapse, as a webhook too.
    Scheduler::new(app.state.clone()).tick().await.unwrap();
    let receiver = &receiver;
    eventually(10, "the lapse webhook", move || async move {
        !received(receiver).await.is_empty()
    })
    .await;
    let payload = assert_signed(&received(receiver).await[0]);
    assert_eq!(payload["type"], "refresh_token_expiring");
    assert_eq!(payload["connection_id"], c.id.as_str());

    // A refresh that brings a new refresh token starts its year afresh.
    app.make_due(&c.id);
    assert_eq!(Scheduler::new(app.state.clone()).tick().await.unwrap(), 1);
    let after = app
        .until(&c.id, |r| r.version > c.version && r.lease_owner.is_none())
        .await;
    let lapses = after.refresh_expires_at.expect("a lapse date");
    assert!(
        (364..=365).contains(&(lapses - now()).num_days()),
        "moved a year ahead: {lapses}"
    );
    assert_eq!(refresh_token_of(&app, &after), "rt-1");
}

async fn a_refresh_of_a_provider_without_refresh_is_a_409_that_changes_nothing(backend: Backend) {
    let fake = FakeProvider::start().await;
    let rotating = Rotating::new(true);
    rotating.mount(&fake).await;
    let app = spawn_app_with_acme(backend, &fake, r#"refresh = "none""#, &[]).await;
    let t = app.ensure_tenant("acme");
    let c = app.seed(&t.id, "acct-1", "rt-0", 600, 3600);
    let key = app.api_key(None, false);
    let res = app
        .client
        .post(format!(
            "{}/api/v1/tenants/acme/connections/acme/refresh",
            app.address
        ))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 409);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_refreshable", "{body}");
    let after = app.connection(&c.id);
    assert_eq!(after.status(), Status::Connected);
    assert_eq!(after.version, c.version);
    assert_eq!(after.updated_at, c.updated_at);
    assert_eq!(after.failure_count, 0);
    assert!(after.last_error.is_none() && after.lease_owner.is_none());
    assert_eq!(rotating.calls(), 0, "nothing sent");
    // The token API hands the stored token out as it is.
    assert_eq!(app.token(&key, "acme").await.status(), 200);
    // And the card offers no Refresh.
    app.create_admin("acme", "owner@acme.example");
    assert_eq!(
        app.login("owner@acme.example", crate::helpers::PASSWORD)
            .await
            .status(),
        303
    );
    let page = app
        .get("/settings/integrations")
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains(r#"data-provider="acme""#), "{page}");
    assert!(page.contains(r#"data-action="disconnect""#), "{page}");
    assert!(!page.contains(r#"data-action="refresh""#), "{page}");
}
