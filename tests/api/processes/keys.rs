//! Key rotation through rolling restarts of two real instances on one
//! PostgreSQL database, with 4-second tokens so that both schedulers keep
//! re-sealing rows with whatever key their ring puts first: done as the
//! README says, every instance stays ready and serves every tenant at every
//! step; done out of order, the instance without the new key stays ready,
//! fails only the rows sealed with it, and both are told. Verdicts come from
//! the answers, the rows and the provider's ledger.

use super::instance::Instance;
use super::setup::{seed, Setup};
use super::strict_provider::Outcome;
use super::SERIAL;
use crate::helpers::{
    get_json_at, run, skipped_without_postgres, stderr, stdout, tether, Backend, KEY_K1, KEY_K2,
};
use diesel::prelude::*;
use std::time::{Duration, Instant};
use tether::db::schema::connections;

fn old_then_new() -> String {
    format!("{KEY_K1},{KEY_K2}")
}

fn new_then_old() -> String {
    format!("{KEY_K2},{KEY_K1}")
}

/// How long a request to an instance may wait for its answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

async fn token(setup: &Setup, instance: &Instance, tenant: &str) -> (u16, serde_json::Value) {
    get_json_at(
        &format!(
            "{}/api/v1/tenants/{tenant}/connections/acme/token",
            instance.url()
        ),
        Some(&setup.api_key),
        ANSWER_WITHIN,
    )
    .await
}

async fn readyz(instance: &Instance) -> (u16, serde_json::Value) {
    get_json_at(&format!("{}/readyz", instance.url()), None, ANSWER_WITHIN).await
}

/// Every instance is ready and hands out a token for every tenant.
async fn all_served(setup: &Setup, instances: &[&Instance], step: &str) {
    for instance in instances {
        let (status, body) = readyz(instance).await;
        assert_eq!(status, 200, "{step}: {} not ready: {body}", instance.url());
        for tenant in setup.tenants() {
            let (status, body) = token(setup, instance, &tenant).await;
            assert_eq!(
                status,
                200,
                "{step}: {} refused {tenant}'s token: {body}",
                instance.url()
            );
        }
    }
}

/// Stops `instance`, gives it `keys` and starts it again.
async fn restart(instance: &mut Instance, keys: &str) {
    instance.stop().await;
    instance.set("TETHER_ENCRYPTION_KEYS", keys);
    instance.start().await;
}

/// Tenants whose connection is sealed with `kid` now.
fn tenants_under(setup: &Setup, kid: &str) -> Vec<String> {
    let ids: Vec<String> = connections::table
        .filter(connections::key_id.eq(kid))
        .select(connections::id)
        .load(&mut setup.ctx.pool.get().expect("pooled connection"))
        .expect("key ids");
    setup
        .conns
        .iter()
        .filter(|(_, id, _)| ids.contains(id))
        .map(|(tenant, _, _)| tenant.clone())
        .collect()
}

/// Waits until some connection is sealed with `kid`; its tenant.
async fn until_sealed_with(setup: &Setup, kid: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(tenant) = tenants_under(setup, kid).into_iter().next() {
            return tenant;
        }
        assert!(
            Instant::now() < deadline,
            "no connection was sealed with '{kid}' within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `/readyz` of `instance` warns with a line containing all of `words`.
async fn until_warned(instance: &Instance, words: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = readyz(instance).await;
        assert_eq!(status, 200, "{} must stay ready: {body}", instance.url());
        let warned = body["warnings"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|w| w.as_str())
            .find(|w| words.iter().all(|word| w.contains(word)))
            .map(str::to_string);
        if let Some(line) = warned {
            return line;
        }
        assert!(
            Instant::now() < deadline,
            "{} did not warn about {words:?} within 30 s: {body}",
            instance.url()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// No grant was lost: the provider never saw a retired or revoked refresh
/// token, and every connection is still connected.
fn nothing_lost(setup: &Setup) {
    let bad: Vec<_> = setup
        .provider
        .calls()
        .into_iter()
        .filter(|c| !matches!(c.outcome, Outcome::Rotated))
        .collect();
    assert!(bad.is_empty(), "the provider refused refreshes: {bad:?}");
    let statuses: Vec<String> = connections::table
        .select(connections::status)
        .load(&mut setup.ctx.pool.get().expect("pooled connection"))
        .expect("statuses");
    assert!(
        statuses.iter().all(|s| s == "connected"),
        "statuses: {statuses:?}"
    );
}

#[actix_web::test]
async fn a_rolling_key_rotation_keeps_both_instances_serving_at_every_step() {
    if skipped_without_postgres() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let setup = Setup::new(Backend::Postgres, 3, 4, Duration::from_millis(20)).await;
    let mut a = setup.instance("a", &[]);
    let mut b = setup.instance("b", &[]);
    a.start().await;
    b.start().await;
    all_served(&setup, &[&a, &b], "both on k1").await;

    // 1. The new key second, everywhere.
    restart(&mut a, &old_then_new()).await;
    all_served(&setup, &[&a, &b], "a: k1,k2; b: k1").await;
    restart(&mut b, &old_then_new()).await;
    all_served(&setup, &[&a, &b], "both: k1,k2").await;

    // 2. The new key first, everywhere: b opens what a now seals.
    restart(&mut a, &new_then_old()).await;
    let sealed_by_a = until_sealed_with(&setup, "k2").await;
    all_served(&setup, &[&a, &b], "a: k2,k1; b: k1,k2").await;
    let (status, body) = token(&setup, &b, &sealed_by_a).await;
    assert_eq!(status, 200, "b opens the row a sealed with k2: {body}");
    restart(&mut b, &new_then_old()).await;
    all_served(&setup, &[&a, &b], "both: k2,k1").await;

    // 3. Rotate: nothing is left under k1, and nobody was told of a disagreement.
    let out = run(
        tether(&setup.db, &new_then_old()).args(["keys", "rotate"]),
        "",
    );
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(tenants_under(&setup, "k1").is_empty());

    // 4. k1 leaves the ring, one instance after the other.
    restart(&mut a, KEY_K2).await;
    all_served(&setup, &[&a, &b], "a: k2; b: k2,k1").await;
    restart(&mut b, KEY_K2).await;
    all_served(&setup, &[&a, &b], "both: k2").await;
    for instance in [&a, &b] {
        let (_, body) = readyz(instance).await;
        assert_eq!(body["warnings"], serde_json::json!([]), "{body}");
    }
    nothing_lost(&setup);
}

#[actix_web::test]
async fn an_instance_without_the_new_key_fails_only_its_rows_and_stays_ready() {
    if skipped_without_postgres() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let mut setup = Setup::new(Backend::Postgres, 2, 4, Duration::from_millis(20)).await;
    // One connection nobody refreshes during the test: it stays under k1.
    let steady = {
        let mut conn = setup.ctx.pool.get().expect("pooled connection");
        let tenant = tether::db::models::tenant::Tenant::create(&mut conn, "steady", "Steady")
            .expect("tenant");
        setup.provider.grant("gsteady");
        let row = seed(&mut conn, &setup.ctx.keys, &tenant.id, "gsteady", 3600);
        setup
            .conns
            .push(("steady".into(), row.id.to_string(), "gsteady".into()));
        "steady".to_string()
    };
    // The old README's order: the new key first on one instance while the
    // other still has only the old one.
    let mut a = setup.instance("a", &[("TETHER_ENCRYPTION_KEYS", &new_then_old())]);
    let mut b = setup.instance("b", &[]);
    b.start().await;
    a.start().await;
    let sealed_by_a = until_sealed_with(&setup, "k2").await;

    // b stays ready and says why some rows fail there, and that a seals
    // with a key it lacks; a says b lacks its key.
    until_warned(&b, &["'k2'", "TETHER_ENCRYPTION_KEYS does not contain"]).await;
    until_warned(&b, &["seals with encryption key 'k2'"]).await;
    until_warned(&a, &["lacks encryption key 'k2'"]).await;

    // Only the row sealed with k2 fails on b, saying so; a serves it.
    let (status, body) = token(&setup, &b, &sealed_by_a).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "key_unavailable", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("'k2'"), "{message}");
    let (status, body) = token(&setup, &b, &steady).await;
    assert_eq!(status, 200, "b serves what it can open: {body}");
    all_served(&setup, &[&a], "a: k2,k1").await;

    // Rotating now would make every row fail on b: refused, nothing changed.
    let out = run(
        tether(&setup.db, &new_then_old()).args(["keys", "rotate"]),
        "",
    );
    assert!(!out.status.success(), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(err.contains("lacks key 'k2'"), "{err}");
    assert!(tenants_under(&setup, "k1").contains(&steady), "{err}");

    // The logs have said the same, one WARN line each.
    let b_log = b.log_text();
    assert!(
        b_log
            .lines()
            .any(|l| l.contains("WARN") && l.contains("seals with encryption key 'k2'")),
        "b's log:\n{b_log}"
    );

    // Once b has the key too, the warnings go and b serves every row.
    restart(&mut b, &new_then_old()).await;
    all_served(&setup, &[&a, &b], "both: k2,k1").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = readyz(&a).await;
        if body["warnings"] == serde_json::json!([]) {
            break;
        }
        assert!(Instant::now() < deadline, "a still warns: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    nothing_lost(&setup);
}

#[actix_web::test]
async fn instances_with_different_session_keys_are_told() {
    if skipped_without_postgres() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let setup = Setup::new(Backend::Postgres, 1, 3600, Duration::from_millis(20)).await;
    let other = base64_of(&[7u8; 64]);
    let a = &mut setup.instance("a", &[]);
    let b = &mut setup.instance("b", &[("TETHER_SESSION_KEY", &other)]);
    a.start().await;
    b.start().await;
    for instance in [&*a, &*b] {
        until_warned(instance, &["another TETHER_SESSION_KEY"]).await;
    }
    assert!(
        a.log_text()
            .lines()
            .any(|l| l.contains("WARN") && l.contains("another TETHER_SESSION_KEY")),
        "{}",
        a.log_text()
    );
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
