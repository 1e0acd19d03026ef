//! Refreshing against a provider that rotates refresh tokens: a refresh token
//! is never sent twice, concurrent callers share one refresh, instances on one
//! database cooperate through leases, a refresh whose answer never arrives is
//! retried rather than given up, each failure class takes its documented path,
//! the circuit breaker stops storms, refresh tokens with a lifetime (or no
//! refresh at all) are handled as the provider declares, and a late answer
//! never undoes a disconnect, a reconnect or a lease taken over. Each family
//! of these promises is a file with its own `backend_tests!` list; what
//! webhooks deliver is tests/api/webhooks.rs.

mod circuit;
mod failures;
mod guards;
mod leases;
mod lifetimes;
mod single_flight;
mod storage_faults;
mod unknown_outcome;

use crate::helpers::TestApp;
use diesel::prelude::*;
use tether::db::models::connection::Connection;
use tether::db::now;

/// The refresh token a stored connection holds.
fn refresh_token_of(app: &TestApp, c: &Connection) -> String {
    c.tokens(&app.ctx.keys)
        .unwrap()
        .unwrap()
        .refresh_token
        .unwrap()
        .expose()
        .clone()
}

/// The kinds of the events recorded for a connection.
fn event_kinds(app: &TestApp, connection_id: &str) -> Vec<String> {
    use tether::db::schema::events;
    events::table
        .filter(events::connection_id.eq(connection_id))
        .select(events::kind)
        .load(&mut app.conn())
        .unwrap()
}

/// Seconds from now until `t` (negative when past).
fn secs_until(t: chrono::NaiveDateTime) -> i64 {
    (t - now()).num_seconds()
}

/// A provider timeout of 1 s, and leases that outlive it.
const SHORT_TIMEOUT: [(&str, &str); 2] = [
    ("TETHER_PROVIDER_TIMEOUT_SECS", "1"),
    ("TETHER_REFRESH_LEASE_SECS", "10"),
];
