//! SIGTERM in the middle of a refresh storm loses nothing: every SIGTERMed
//! process drains and exits with success, no refresh token is reused at the
//! provider, and every token request is answered 200.

use super::instance::Instance;
use super::load::{per_target, start_load, Answer, Sample};
use super::setup::{instance_names, settle, Setup};
use super::strict_provider::{malformed, refresh_in_flight, Outcome};
use super::{sleep_until, EXIT_WITHIN, LEASE_SECS, SERIAL};
use crate::backend_tests;
use crate::helpers::Backend;
use std::time::{Duration, Instant};
use tether::db::models::connection::Status;

pub(super) struct TermPlan {
    pub(super) life: i64,
    pub(super) sigterms: usize,
    /// Whether a SIGTERM must find a refresh of its instance in flight.
    pub(super) require_in_flight: bool,
}

backend_tests!(sigterm_in_the_middle_of_a_refresh_storm_loses_nothing);

/// 20 connections with 3 s tokens (margin 1 s; token API load with
/// `min_ttl=0`, so the schedulers do the refreshing and the token API only
/// refreshes what expired) on every instance (one on SQLite, two on
/// PostgreSQL) for 20 s, and three SIGTERMs (alternating on PostgreSQL), each
/// while a refresh of the signalled process is at the provider, unanswered;
/// each instance is restarted on its port. Nothing may be lost: no refresh
/// token reused, no connection needs a reconnect, every one is connected with
/// the provider's live refresh token, every HTTP answer to a token request is
/// 200, and every SIGTERMed process exits with success within the provider
/// timeout + 3 s. A request no server answered (refused while an instance is
/// down, or a fresh connection reset as a server stops accepting) is retried
/// at once on the other instance, or 100 ms later on the same one when it is
/// alone, and counted apart; at most two resets per SIGTERM are tolerated.
async fn sigterm_in_the_middle_of_a_refresh_storm_loses_nothing(backend: Backend) {
    sigterm_storm(
        backend,
        TermPlan {
            life: 3,
            sigterms: 3,
            require_in_flight: true,
        },
    )
    .await
}

pub(super) async fn sigterm_storm(backend: Backend, plan: TermPlan) {
    let _serial = SERIAL.lock().await;
    let delay = Duration::from_millis(250);
    let setup = Setup::new(backend, 20, plan.life, delay).await;
    let names = instance_names(backend);
    let mut instances = setup
        .started(names, &[("TETHER_REFRESH_MARGIN_SECS", "1")])
        .await;
    let load = start_load(
        instances.iter().map(Instance::url).collect(),
        setup.tenants(),
        &setup.api_key,
        Some(0),
    );
    let t0 = Instant::now();
    let mut problems = Vec::new();
    let mut in_flight_at_term = Vec::new();
    let mut during_shutdown = Vec::new();
    let mut restarted = t0;
    for round in 0..plan.sigterms {
        // Every 6 s, and at least 3 s after the last restart.
        let at = (t0 + Duration::from_secs(4 + 6 * round as u64))
            .max(restarted + Duration::from_secs(3));
        sleep_until(at).await;
        let target = &mut instances[round % names.len()];
        let via = target.via();
        let found = refresh_in_flight(&setup.provider, &via, Duration::from_secs(3)).await;
        let at = Instant::now();
        target.sigterm();
        let exit = target.wait_exit(EXIT_WITHIN).await;
        let in_flight = setup.provider.received(Some(&via), at - delay, at);
        in_flight_at_term.push(in_flight);
        // Refreshes it had at the provider from then until it exited.
        during_shutdown.push(
            setup
                .provider
                .received(Some(&via), at - delay, Instant::now()),
        );
        match exit {
            Some((status, took)) => {
                eprintln!(
                    "SIGTERM {} to instance {}: {in_flight} refresh(es) in flight (looked: {found}), {} at the provider until it exited {status} after {took:?}",
                    round + 1,
                    target.name,
                    during_shutdown[round],
                );
                if !status.success() {
                    problems.push(format!(
                        "instance {} exited with {status} after SIGTERM {}",
                        target.name,
                        round + 1
                    ));
                }
            }
            None => problems.push(format!(
                "instance {} had not exited {EXIT_WITHIN:?} after SIGTERM {} (killed)",
                target.name,
                round + 1
            )),
        }
        target.start().await;
        restarted = Instant::now();
    }
    sleep_until(t0 + Duration::from_secs(20)).await;
    let samples = load.stop().await;
    let settled = settle(&setup, Duration::from_secs(LEASE_SECS + 15)).await;
    let calls = setup.provider.calls();
    let reuses = calls.iter().filter(|c| c.outcome == Outcome::Reuse).count();
    let refused = samples
        .iter()
        .filter(|s| matches!(s.answer, Answer::Refused))
        .count();
    let dropped = samples
        .iter()
        .filter(|s| matches!(s.answer, Answer::Dropped(_)))
        .count();
    let not_ok: Vec<&Sample> = samples
        .iter()
        .filter(|s| matches!(s.answer, Answer::Http(status, _) if status != 200))
        .collect();
    eprintln!(
        "sigterm storm ({backend:?}, {} instance(s), {} s tokens): SIGTERMs={} in_flight_at_sigterm={:?} \
         at_provider_until_exit={:?} provider_refreshes={} reuses={reuses} needs_reconnect={} unsettled={} \
         token_requests={} [{}] (refused and dropped ones were retried)",
        names.len(),
        plan.life,
        plan.sigterms,
        in_flight_at_term,
        during_shutdown,
        calls.len(),
        settled.lost.len(),
        settled.unsettled.len(),
        samples.len(),
        per_target(&samples, names)
    );

    if plan.require_in_flight {
        assert!(
            in_flight_at_term.iter().sum::<usize>() > 0,
            "harness: no SIGTERM found a refresh in flight, so nothing was tested"
        );
    }
    assert!(problems.is_empty(), "{problems:#?}");
    assert_eq!(malformed(&calls), vec![], "requests the provider refused");
    assert_eq!(reuses, 0, "refresh tokens sent again at the provider");
    assert!(
        settled.lost.is_empty(),
        "connections that need a reconnect: {:#?}",
        settled
            .lost
            .values()
            .map(|r| (&r.tenant_id, &r.last_error))
            .collect::<Vec<_>>()
    );
    assert!(
        settled.unsettled.is_empty(),
        "connections not holding the provider's live refresh token: {:#?}",
        settled.unsettled
    );
    for (i, row) in &settled.live {
        assert_eq!(row.status(), Status::Connected, "connection {i}: {row:?}");
    }
    assert!(
        not_ok.is_empty(),
        "{} token request(s) not answered 200, e.g. {:#?}",
        not_ok.len(),
        &not_ok[..not_ok.len().min(10)]
    );
    // A fresh connection closed before any answer as a server stops accepting
    // (its backlog is reset) is retried like a refused one. How many sit in
    // the backlog at that moment depends on the machine's load: up to 7 in
    // 3 SIGTERMs were seen while the whole suite ran on 2 cores. More than a
    // few per SIGTERM would mean that accepted requests are dropped.
    assert!(
        dropped <= 4 * plan.sigterms,
        "{dropped} token request(s) connected but got no answer ({refused} refused)"
    );
}
