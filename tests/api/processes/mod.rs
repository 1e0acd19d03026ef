//! The real `tether` binary as separate processes, against a strict fake
//! provider that counts what it saw. Verdicts come from the provider's ledger
//! and the rows, not from what Tether says about itself.
//!
//! The harness, a question a file:
//! - `strict_provider.rs`: the token endpoint, as strict as the strictest real
//!   one, and its ledger of every refresh it saw;
//! - `instance.rs`: one `tether serve` process, started, signalled, killed
//!   and restarted;
//! - `setup.rs`: the connections seeded for a test, and where their rows
//!   settle once nothing is in flight;
//! - `load.rs`: token API requests for every connection, continuously, and
//!   their answers.
//!
//! The tests:
//! - `sigterm_storm.rs`: SIGTERM in the middle of a refresh storm loses
//!   nothing;
//! - `sigkill_storm.rs`: SIGKILL costs at most the refreshes whose answer died
//!   with the process;
//! - `refresh_budget.rs`: short-lived tokens get at most two refreshes per
//!   lifetime across instances;
//! - `outages.rs`: the database cut (or SQLite locked) while refreshes are at
//!   the provider loses nothing either;
//! - `keys.rs`: key rotation through rolling restarts;
//! - `harness_check.rs`: the `harness_check::*` tests (ignored; `cargo test
//!   --test api processes -- --ignored`) run the same machinery where today's
//!   code behaves (no kills, or long-lived tokens, or a margin shorter than
//!   the tokens): when one of the real tests fails, they tell a harness
//!   problem from a Tether one.
//!
//! Each instance is `tether serve` with a clean environment, its own data dir
//! (stderr in `tether.log` there, printed when a test fails) and its own port,
//! on the test's database. The tests take a module-wide lock ([`SERIAL`]) so
//! that they do not load the machine at the same time; each takes under a
//! minute.

pub(crate) mod instance;
pub(crate) mod load;
pub(crate) mod setup;
pub(crate) mod strict_provider;

mod harness_check;
mod keys;
mod outages;
mod refresh_budget;
mod sigkill_storm;
mod sigterm_storm;

use std::time::{Duration, Instant};

/// One process test at a time: they are timing-sensitive and heavy.
pub(crate) static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The client credentials the instances send and the provider insists on.
const CLIENT_ID: &str = "acme-client";
const CLIENT_SECRET: &str = "acme-secret-value";
/// Time limit of one provider call in the instances; the lease must be at
/// least this + 5 s (configuration refuses less), and a lease of a dead
/// instance lapses after that long.
const PROVIDER_TIMEOUT_SECS: u64 = 5;
const LEASE_SECS: u64 = 10;
/// A SIGTERMed instance must be gone this long after the signal.
pub(crate) const EXIT_WITHIN: Duration = Duration::from_secs(PROVIDER_TIMEOUT_SECS + 3);

/// Sleeps until `at` (pacing a schedule, not synchronising).
async fn sleep_until(at: Instant) {
    tokio::time::sleep(at.saturating_duration_since(Instant::now())).await;
}
