//! Short-lived tokens get at most two refreshes per lifetime across
//! instances, and each connection at least one; no refresh token is reused.

use super::instance::Instance;
use super::load::{start_load, tally};
use super::setup::{instance_names, Setup};
use super::strict_provider::{malformed, Call, Outcome};
use super::SERIAL;
use crate::backend_tests;
use crate::helpers::Backend;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

backend_tests!(short_lived_tokens_get_at_most_two_refreshes_per_lifetime_across_two_instances);

pub(super) struct BudgetPlan {
    /// `TETHER_REFRESH_MARGIN_SECS`, or the default (300).
    pub(super) margin: Option<i64>,
    /// The token API's `min_ttl`, or its default (60).
    pub(super) min_ttl: Option<u32>,
}

/// 30 connections with 4 s access tokens, the default refresh margin (300 s)
/// and the token API's default `min_ttl` (60 s), both longer than the tokens,
/// load on every instance (two on PostgreSQL, one on SQLite) for 20 s. Each
/// connection gets at least one refresh and at most 2 per token lifetime + 2
/// over the time since it was seeded; no refresh token is reused.
async fn short_lived_tokens_get_at_most_two_refreshes_per_lifetime_across_two_instances(
    backend: Backend,
) {
    refresh_budget(
        backend,
        BudgetPlan {
            margin: None,
            min_ttl: None,
        },
    )
    .await
}

pub(super) async fn refresh_budget(backend: Backend, plan: BudgetPlan) {
    let _serial = SERIAL.lock().await;
    const LIFE: i64 = 4;
    let margin = plan.margin.unwrap_or(300);
    let setup = Setup::new(backend, 30, LIFE, Duration::from_millis(200)).await;
    let margin_var = plan.margin.map(|m| m.to_string());
    let extra: Vec<(&str, &str)> = margin_var
        .iter()
        .map(|m| ("TETHER_REFRESH_MARGIN_SECS", m.as_str()))
        .collect();
    let names = instance_names(backend);
    let instances = setup.started(names, &extra).await;
    let load = start_load(
        instances.iter().map(Instance::url).collect(),
        setup.tenants(),
        &setup.api_key,
        plan.min_ttl,
    );
    tokio::time::sleep(Duration::from_secs(20)).await;
    let end = Instant::now();
    let samples = load.stop().await;
    let elapsed = end - setup.seeded_at;
    let lifetimes = elapsed.as_secs_f64() / LIFE as f64;
    let budget = (2.0 * lifetimes).floor() as usize + 2;
    let calls: Vec<Call> = setup
        .provider
        .calls()
        .into_iter()
        .filter(|c| c.at <= end)
        .collect();
    let mut per_conn: BTreeMap<&str, usize> = setup
        .conns
        .iter()
        .map(|(_, _, g)| (g.as_str(), 0))
        .collect();
    for c in &calls {
        if let Some(n) = c.grant.as_deref().and_then(|g| per_conn.get_mut(g)) {
            *n += 1;
        }
    }
    let reuses = calls.iter().filter(|c| c.outcome == Outcome::Reuse).count();
    let max = per_conn.values().copied().max().unwrap_or(0);
    let min = per_conn.values().copied().min().unwrap_or(0);
    let mean = calls.len() as f64 / setup.conns.len() as f64;
    eprintln!(
        "refresh budget ({backend:?}, {} instance(s), {LIFE} s tokens, margin {margin} s, min_ttl {:?}): \
         {:.1} s = {lifetimes:.1} lifetimes, budget {budget} per connection; refreshes per connection \
         min={min} mean={mean:.1} max={max}, per connection per lifetime mean={:.2} max={:.2}; reuses={reuses}; \
         token_requests={} [{}]",
        names.len(),
        plan.min_ttl,
        elapsed.as_secs_f64(),
        mean / lifetimes,
        max as f64 / lifetimes,
        samples.len(),
        tally(samples.iter())
    );
    assert_eq!(malformed(&calls), vec![], "requests the provider refused");
    assert_eq!(reuses, 0, "refresh tokens sent again at the provider");
    let over: Vec<_> = per_conn.iter().filter(|(_, n)| **n > budget).collect();
    assert!(
        over.is_empty(),
        "{} connection(s) over the budget of {budget} refreshes in {:.1} s: {over:?}",
        over.len(),
        elapsed.as_secs_f64()
    );
    let never: Vec<_> = per_conn.iter().filter(|(_, n)| **n == 0).collect();
    assert!(never.is_empty(), "never refreshed: {never:?}");
}
