//! The database cut while refreshes are at the provider: `tether serve`
//! processes on PostgreSQL reached through a [`FaultProxy`] that closes
//! every connection and refuses new ones for a while, against the strict
//! provider (rotating refresh tokens, the grant revoked on reuse) answering
//! while the database is away. Nothing the provider handed out may be lost:
//! 0 reuse at the provider, 0 connections lost, every warm token request
//! answered 200 throughout, and the instance back (ready, answers stored)
//! within 5 s of the database.

use super::instance::Instance;
use super::load::{per_target, start_load, tally, Answer, Sample};
use super::setup::{seed, settle, Settled, Setup};
use super::strict_provider::{malformed, Call, Outcome, Strict};
use super::{sleep_until, LEASE_SECS, PROVIDER_TIMEOUT_SECS, SERIAL};
use crate::backend_tests;
use crate::helpers::{get_at, skipped_without_postgres, Backend, FaultProxy, WriteLock};
use chrono::NaiveDateTime;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tether::db::models::tenant::Tenant;

/// How soon after the database is back everything must be too.
const BACK_WITHIN: Duration = Duration::from_secs(5);
/// How soon after a cut `/readyz` must say so.
const NOTICED_WITHIN: Duration = Duration::from_secs(2);

/// The settings every instance here runs with: the database through the
/// proxy, every due connection refreshed in one round.
fn through(proxied: &str) -> Vec<(&'static str, String)> {
    vec![
        ("TETHER_DATABASE_URL", proxied.to_string()),
        ("TETHER_REFRESH_CONCURRENCY", "20".into()),
        ("TETHER_REFRESH_PER_PROVIDER", "20".into()),
        // The cache on, and with it the LISTEN session that must come back.
        ("TETHER_TOKEN_CACHE_MS", "1000".into()),
    ]
}

fn env<'a>(pairs: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    pairs.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// Makes the connections seeded so far due in `secs` (their tokens stay
/// valid for as long as they were seeded for).
fn due_in(setup: &Setup, secs: i64) {
    use diesel::prelude::*;
    use tether::db::schema::connections;
    let ids: Vec<&str> = setup.conns.iter().map(|(_, id, _)| id.as_str()).collect();
    diesel::update(connections::table.filter(connections::id.eq_any(ids)))
        .set(connections::next_refresh_at.eq(tether::db::now() + chrono::Duration::seconds(secs)))
        .execute(&mut setup.ctx.pool.get().expect("pooled connection"))
        .expect("make the connections due");
}

/// One more connection whose token lasts an hour: warm, never due.
fn seed_long_lived(setup: &mut Setup) {
    let mut conn = setup.ctx.pool.get().expect("pooled connection");
    let external = "proc-long".to_string();
    let tenant = Tenant::create(&mut conn, &external, &external).expect("tenant");
    setup.provider.grant("glong");
    let row = seed(&mut conn, &setup.ctx.keys, &tenant.id, "glong", 3600);
    setup
        .conns
        .push((external, row.id.to_string(), "glong".into()));
}

/// Waits until `n` refreshes from the processes `via` are at the provider,
/// unanswered, all at once.
async fn all_in_flight(provider: &Strict, via: &[String], n: usize, max: Duration) {
    let deadline = Instant::now() + max;
    loop {
        let at_provider: usize = via.iter().map(|v| provider.in_flight(v)).sum();
        if at_provider >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {at_provider} of {n} refreshes reached the provider together"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// How long a request to an instance may wait for its answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// Polls `url` until it answers `status`; how long that took, or `None`.
async fn until_status(url: &str, status: u16, max: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < max {
        if get_at(url, None, ANSWER_WITHIN)
            .await
            .is_ok_and(|(s, _)| s == status)
        {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// The instance's `tether_held_token_sets` gauge.
async fn held(instance: &Instance) -> Option<u64> {
    let (_, text) = get_at(&format!("{}/metrics", instance.url()), None, ANSWER_WITHIN)
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("tether_held_token_sets "))
        .and_then(|v| v.trim().parse().ok())
}

async fn until_held(instance: &Instance, n: u64, max: Duration) {
    let deadline = Instant::now() + max;
    loop {
        let now = held(instance).await;
        if now == Some(n) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "instance {} holds {now:?} token sets, not {n}\n{}",
            instance.name,
            instance.tail(30)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The instance's `tether_token_cache_coherent` gauge.
async fn coherent(instance: &Instance) -> bool {
    get_at(&format!("{}/metrics", instance.url()), None, ANSWER_WITHIN)
        .await
        .is_ok_and(|(_, text)| text.contains("tether_token_cache_coherent 1\n"))
}

/// Polls until the instance hears other instances' writes again.
async fn until_coherent(instance: &Instance, max: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < max {
        if coherent(instance).await {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// Waits until every connection holds the provider's live refresh token:
/// how long that took.
async fn until_stored(setup: &Setup, max: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < max {
        let live = setup.provider.live();
        let stored = (0..setup.conns.len()).all(|i| {
            let row = setup.row(i);
            setup.stored_rt(&row).as_ref() == live.get(&setup.conns[i].2)
        });
        if stored {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// What the provider saw that loses a grant, and what it should never see.
fn assert_nothing_lost(setup: &Setup, settled: &Settled, what: &str) {
    let calls = setup.provider.calls();
    let reuses: Vec<&Call> = calls
        .iter()
        .filter(|c| matches!(c.outcome, Outcome::Reuse | Outcome::Revoked))
        .collect();
    assert!(
        reuses.is_empty(),
        "{what}: refresh tokens reused: {reuses:?}"
    );
    assert!(
        malformed(&calls).is_empty(),
        "{what}: {:?}",
        malformed(&calls)
    );
    assert!(
        settled.lost.is_empty() && settled.unsettled.is_empty(),
        "{what}: lost {:?}, unsettled {:?}",
        settled.lost.keys().collect::<Vec<_>>(),
        settled.unsettled
    );
    for i in 0..setup.conns.len() {
        assert_eq!(
            setup.row(i).failure_count,
            0,
            "{what}: the outage counted against connection {i}"
        );
    }
}

/// Token requests answered other than 200 while the database was cut.
fn not_served(samples: &[Sample], from: NaiveDateTime, to: NaiveDateTime) -> Vec<&Sample> {
    samples
        .iter()
        .filter(|s| s.sent >= from && s.sent <= to)
        .filter(|s| !matches!(s.answer, Answer::Http(200, _)))
        .collect()
}

// ---------------------------------------------------------------------------

/// One instance; six connections due together, a seventh warm for an hour.
/// The database is cut the moment all six refreshes are at the provider,
/// which answers 2 s later (rotating every refresh token), and comes back
/// after 8 s. The answers are held and served, the warm token is served
/// from memory, `/readyz` says not ready within 2 s, a refresh that needs
/// the database is a 503 `database_unavailable` with `Retry-After`; once
/// the database is back the answers are stored and `/readyz` is 200 within
/// 5 s, and the provider saw each refresh token once.
#[actix_web::test]
async fn a_database_outage_while_refreshes_are_at_the_provider_loses_nothing() {
    if skipped_without_postgres() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let outage = Duration::from_secs(8);
    let mut setup = Setup::new(Backend::Postgres, 6, 40, Duration::from_secs(2)).await;
    due_in(&setup, 5);
    seed_long_lived(&mut setup);
    let (proxy, proxied) = FaultProxy::for_postgres(&setup.db.url);
    let settings = through(&proxied);
    let mut a = setup.instance("a", &env(&settings));
    a.start().await;
    let load = start_load(vec![a.url()], setup.tenants(), &setup.api_key, Some(0));

    all_in_flight(&setup.provider, &[a.via()], 6, Duration::from_secs(30)).await;
    let cut_at = tether::db::now();
    let cut = Instant::now();
    proxy.cut();
    let noticed = until_status(
        &format!("{}/readyz", a.url()),
        503,
        NOTICED_WITHIN + Duration::from_secs(3),
    )
    .await
    .expect("/readyz never said not ready while the database was cut");
    until_held(&a, 6, Duration::from_secs(6)).await;
    let deaf = !coherent(&a).await;
    let alive = get_at(&format!("{}/healthz", a.url()), None, ANSWER_WITHIN)
        .await
        .ok()
        .map(|(s, _)| s);
    // The warm connection needs the database to refresh: told to come back.
    let refresh = reqwest::Client::new()
        .post(format!(
            "{}/api/v1/tenants/proc-long/connections/acme/refresh",
            a.url()
        ))
        .bearer_auth(&setup.api_key)
        .send()
        .await
        .expect("refresh request");
    let retry_after = refresh.headers().get("retry-after").cloned();
    let (status, body): (u16, serde_json::Value) = (
        refresh.status().as_u16(),
        refresh.json().await.unwrap_or_default(),
    );
    sleep_until(cut + outage).await;
    let healed_at = tether::db::now();
    let healed = Instant::now();
    proxy.heal();
    let ready = until_status(&format!("{}/readyz", a.url()), 200, Duration::from_secs(30)).await;
    let stored = until_stored(&setup, Duration::from_secs(30)).await;
    let listening = until_coherent(&a, Duration::from_secs(30))
        .await
        .map(|_| healed.elapsed());
    sleep_until(healed + Duration::from_secs(2)).await;
    let samples = load.stop().await;
    let settled = settle(&setup, Duration::from_secs(10)).await;
    let during = samples
        .iter()
        .filter(|s| s.sent >= cut_at && s.sent <= healed_at)
        .count();
    eprintln!(
        "outage 8 s, one instance: readyz 503 after {noticed:?}; back: ready after {ready:?}, stored after {stored:?}, cache coherent after {listening:?}; \
         token requests during the outage {during} ({}); provider refreshes {} (connections dropped by the proxy: {})",
        tally(samples.iter().filter(|s| s.sent >= cut_at && s.sent <= healed_at)),
        setup.provider.calls().len(),
        proxy.dropped()
    );

    assert!(
        noticed <= NOTICED_WITHIN,
        "/readyz said not ready only after {noticed:?}"
    );
    assert_eq!(status, 503, "a refresh without a database: {body}");
    assert_eq!(body["error"]["code"], "database_unavailable", "{body}");
    assert!(retry_after.is_some(), "503 without Retry-After");
    assert!(
        ready.is_some_and(|d| d <= BACK_WITHIN),
        "/readyz 200 only after {ready:?}\n{}",
        a.tail(30)
    );
    assert!(
        stored.is_some_and(|d| d <= BACK_WITHIN),
        "held answers stored only after {stored:?}\n{}",
        a.tail(30)
    );
    assert!(
        deaf,
        "the token cache counted as coherent while the database was cut"
    );
    assert_eq!(alive, Some(200), "/healthz while the database was cut");
    let (_, metrics) = get_at(&format!("{}/metrics", a.url()), None, ANSWER_WITHIN)
        .await
        .unwrap_or_default();
    assert!(
        !metrics.contains("tether_circuit_open{provider=\"acme\"} 1"),
        "the outage opened the provider's circuit:\n{metrics}"
    );
    assert!(
        listening.is_some_and(|d| d <= BACK_WITHIN),
        "the LISTEN session was back only after {listening:?}\n{}",
        a.tail(30)
    );
    assert!(during > 0, "no token request was made during the outage");
    let failed = not_served(&samples, cut_at, healed_at);
    assert!(
        failed.is_empty(),
        "token requests not served during the outage: {failed:?}"
    );
    assert_nothing_lost(&setup, &settled, "one instance");
}

/// Two instances on one database, each through its own proxy; both cut
/// while all six due refreshes are at the provider, for longer than the
/// leases and than an instance may be silent. B's database comes back 2 s
/// before A's: B must not take over the rows A leased (A holds their
/// answers), though their leases lapsed long ago; A stores them once it
/// is back. The provider sees every refresh token once.
#[actix_web::test]
async fn two_instances_never_refresh_what_the_other_holds_after_an_outage() {
    if skipped_without_postgres() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let outage = Duration::from_secs(LEASE_SECS + 4);
    let mut setup = Setup::new(Backend::Postgres, 6, 40, Duration::from_secs(2)).await;
    due_in(&setup, 6);
    seed_long_lived(&mut setup);
    let (proxy_a, via_a) = FaultProxy::for_postgres(&setup.db.url);
    let (proxy_b, via_b) = FaultProxy::for_postgres(&setup.db.url);
    let (env_a, env_b) = (through(&via_a), through(&via_b));
    let mut a = setup.instance("a", &env(&env_a));
    let mut b = setup.instance("b", &env(&env_b));
    a.start().await;
    b.start().await;
    let load = start_load(
        vec![a.url(), b.url()],
        setup.tenants(),
        &setup.api_key,
        Some(0),
    );

    all_in_flight(
        &setup.provider,
        &[a.via(), b.via()],
        6,
        Duration::from_secs(40),
    )
    .await;
    let from_a = setup.provider.in_flight(&a.via());
    let cut_at = tether::db::now();
    let cut = Instant::now();
    proxy_a.cut();
    proxy_b.cut();
    sleep_until(cut + outage).await;
    proxy_b.heal();
    sleep_until(cut + outage + Duration::from_secs(2)).await;
    let healed_at = tether::db::now();
    proxy_a.heal();
    let stored = until_stored(&setup, Duration::from_secs(30)).await;
    sleep_until(Instant::now() + Duration::from_secs(2)).await;
    let samples = load.stop().await;
    let settled = settle(&setup, Duration::from_secs(15)).await;
    eprintln!(
        "outage {outage:?} (B back 2 s before A), two instances: {from_a} of 6 refreshes from A; stored after {stored:?}; \
         during the outage {}; provider refreshes {}",
        per_target(
            &samples.iter().filter(|s| s.sent >= cut_at && s.sent <= healed_at).cloned().collect::<Vec<_>>(),
            &["a", "b"]
        ),
        setup.provider.calls().len()
    );
    assert!(
        from_a > 0,
        "A had no refresh at the provider: the race was not run"
    );
    assert!(
        stored.is_some_and(|d| d <= BACK_WITHIN),
        "held answers stored only after {stored:?}\n{}\n{}",
        a.tail(30),
        b.tail(30)
    );
    assert_nothing_lost(&setup, &settled, "two instances");
    let failed = not_served(&samples, cut_at, healed_at);
    assert!(
        failed.is_empty(),
        "token requests not served during the outage: {failed:?}"
    );
}

/// One instance holding six answers is stopped (SIGTERM) while the database
/// is still away: it waits for the database up to the drain limit, writes
/// the answers sealed to its spill file (no token in it), and exits with
/// success. Started again once the database is back, it stores them before
/// it serves, and deletes the file.
#[actix_web::test]
async fn a_stop_during_an_outage_spills_held_answers_and_the_next_start_stores_them() {
    if skipped_without_postgres() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let setup = Setup::new(Backend::Postgres, 6, 40, Duration::from_secs(2)).await;
    due_in(&setup, 5);
    let (proxy, proxied) = FaultProxy::for_postgres(&setup.db.url);
    let settings = through(&proxied);
    let mut a = setup.instance("a", &env(&settings));
    a.start().await;

    all_in_flight(&setup.provider, &[a.via()], 6, Duration::from_secs(30)).await;
    proxy.cut();
    until_held(&a, 6, Duration::from_secs(6)).await;
    a.sigterm();
    let exited = a
        .wait_exit(Duration::from_secs(PROVIDER_TIMEOUT_SECS + 5 + 5))
        .await;
    let spills: Vec<PathBuf> = std::fs::read_dir(&a.dir)
        .expect("instance dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().contains("held-answers-"))
        .collect();
    let spilled = spills
        .iter()
        .map(|p| std::fs::read_to_string(p).expect("spill file"))
        .collect::<String>();
    proxy.heal();
    a.start().await;
    let left = std::fs::read_dir(&a.dir)
        .expect("instance dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("held-answers-"))
        .count();
    let stored = until_stored(&setup, Duration::from_secs(10)).await;
    let settled = settle(&setup, Duration::from_secs(15)).await;
    eprintln!(
        "SIGTERM during an outage: exited {exited:?}, spilled {} answer(s) in {} file(s), stored after restart in {stored:?}",
        spilled.lines().count(),
        spills.len()
    );

    let (status, _) = exited.expect("the SIGTERMed instance did not exit within the drain limit");
    assert!(status.success(), "exit status {status}\n{}", a.tail(30));
    assert_eq!(spills.len(), 1, "one spill file");
    assert_eq!(spilled.lines().count(), 6, "six answers spilled");
    let live = setup.provider.live();
    for rt in live.values() {
        assert!(
            !spilled.contains(rt.as_str()),
            "a refresh token in the spill file"
        );
    }
    assert!(
        !spilled.contains("at-"),
        "an access token in the spill file"
    );
    assert_eq!(left, 0, "the spill file is deleted once stored");
    assert!(
        stored.is_some(),
        "the spilled answers were not stored\n{}",
        a.tail(30)
    );
    assert_nothing_lost(&setup, &settled, "SIGTERM during an outage");
}

// ---------------------------------------------------------------------------
// Figures for BENCHMARKS.md (ignored: `cargo test --test api outage_figures
// -- --ignored --nocapture`, `TETHER_OUTAGE_SECS` seconds, default 15).

/// 20 connections due together and one warm for an hour, one instance under
/// token-API load; the database goes away the moment the 20 refreshes are at
/// the provider (PostgreSQL: cut by the proxy; SQLite: another process holds
/// the write lock) for `TETHER_OUTAGE_SECS`, then comes back.
async fn outage_figures(backend: Backend) {
    let secs: u64 = std::env::var("TETHER_OUTAGE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    let _serial = SERIAL.lock().await;
    let life = (secs as i64 + 10) * 2;
    let mut setup = Setup::new(backend, 20, life, Duration::from_secs(2)).await;
    due_in(&setup, 5);
    seed_long_lived(&mut setup);
    let proxy = (backend == Backend::Postgres).then(|| FaultProxy::for_postgres(&setup.db.url));
    let settings = through(proxy.as_ref().map_or(&setup.db.url, |(_, url)| url));
    let mut a = setup.instance("a", &env(&settings));
    a.start().await;
    let load = start_load(vec![a.url()], setup.tenants(), &setup.api_key, Some(0));
    all_in_flight(&setup.provider, &[a.via()], 20, Duration::from_secs(30)).await;
    let cut_at = tether::db::now();
    let cut = Instant::now();
    let lock = match &proxy {
        Some((proxy, _)) => {
            proxy.cut();
            None
        }
        None => Some(WriteLock::take(&setup.db.url)),
    };
    let not_ready = until_status(
        &format!("{}/readyz", a.url()),
        503,
        Duration::from_secs(secs),
    )
    .await;
    let mut most_held = 0;
    while cut.elapsed() < Duration::from_secs(secs) {
        most_held = most_held.max(held(&a).await.unwrap_or(0));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let healed_at = tether::db::now();
    if let Some((proxy, _)) = &proxy {
        proxy.heal();
    }
    drop(lock);
    let ready = until_status(&format!("{}/readyz", a.url()), 200, Duration::from_secs(60)).await;
    let stored = until_stored(&setup, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let samples = load.stop().await;
    let settled = settle(&setup, Duration::from_secs(15)).await;
    let during: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.sent >= cut_at && s.sent <= healed_at)
        .collect();
    let reuses = setup
        .provider
        .calls()
        .iter()
        .filter(|c| matches!(c.outcome, Outcome::Reuse | Outcome::Revoked))
        .count();
    eprintln!(
        "FIGURES {backend:?} outage {secs} s: token requests during it {} ({}); refreshes held at most {most_held} of 20; \
         readyz 503 after {not_ready:?}; after the database is back: ready {ready:?}, all stored {stored:?}; \
         provider refreshes {}, reuse {reuses}, lost {}, unsettled {}",
        during.len(),
        tally(during.iter().copied()),
        setup.provider.calls().len(),
        settled.lost.len(),
        settled.unsettled.len()
    );
    assert_nothing_lost(&setup, &settled, "figures");
}

backend_tests!(
    #[ignore = "figures for BENCHMARKS.md; TETHER_OUTAGE_SECS sets the outage"]
    outage_figures,
);
