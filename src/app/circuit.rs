//! A circuit breaker per provider, per process: after repeated transient
//! failures it opens and refreshes for that provider fail fast; after a
//! cool-down one probe is let through, and its success closes the circuit.
//! Every call that was let through holds a [`Ticket`]; a probe whose ticket is
//! dropped without a verdict (cancelled, or stopped before it reached the
//! provider) reopens the circuit for the next probe instead of leaving it
//! half-open for ever.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Transient failures in a row that open the circuit.
pub const THRESHOLD: u32 = 5;
const FIRST_COOL_DOWN: Duration = Duration::from_secs(30);
const MAX_COOL_DOWN: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    Closed,
    Open,
    /// One probe is in flight.
    HalfOpen,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
        }
    }
}

#[derive(Debug)]
struct Entry {
    failures: u32,
    state: State,
    open_until: Instant,
    cool_down: Duration,
}

impl Default for Entry {
    fn default() -> Self {
        Entry {
            failures: 0,
            state: State::Closed,
            open_until: Instant::now(),
            cool_down: FIRST_COOL_DOWN,
        }
    }
}

#[derive(Debug, Default)]
pub struct Breakers {
    entries: Mutex<HashMap<String, Entry>>,
}

impl Breakers {
    fn with<T>(&self, provider: &str, f: impl FnOnce(&mut Entry) -> T) -> T {
        let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        f(map.entry(provider.to_string()).or_default())
    }

    /// May a refresh for `provider` go out now? `Err(seconds)` while open.
    /// An open circuit whose cool-down has passed lets exactly one probe through.
    pub fn allow(&self, provider: &str) -> Result<Ticket<'_>, u64> {
        let probe = self.allow_at(provider, Instant::now())?;
        Ok(Ticket {
            breakers: self,
            provider: provider.to_string(),
            probe,
            settled: false,
        })
    }

    /// `Ok(true)` when the call let through is the probe.
    fn allow_at(&self, provider: &str, now: Instant) -> Result<bool, u64> {
        self.with(provider, |e| match e.state {
            State::Closed => Ok(false),
            State::Open if now >= e.open_until => {
                e.state = State::HalfOpen;
                Ok(true)
            }
            State::Open => Err(e.open_until.saturating_duration_since(now).as_secs().max(1)),
            // The probe is out: the others wait for its verdict.
            State::HalfOpen => Err(1),
        })
    }

    /// A probe ended without a verdict: open again, due for the next probe now.
    fn abandon_at(&self, provider: &str, now: Instant) {
        self.with(provider, |e| {
            if e.state == State::HalfOpen {
                e.state = State::Open;
                e.open_until = now;
            }
        })
    }

    fn success(&self, provider: &str) {
        self.with(provider, |e| *e = Entry::default());
    }

    fn failure_at(&self, provider: &str, now: Instant) -> bool {
        self.with(provider, |e| {
            e.failures += 1;
            let open = match e.state {
                // A failed probe reopens for longer.
                State::HalfOpen => {
                    e.cool_down = (e.cool_down * 2).min(MAX_COOL_DOWN);
                    true
                }
                State::Closed => e.failures >= THRESHOLD,
                State::Open => false,
            };
            if open {
                e.state = State::Open;
                e.open_until = now + e.cool_down;
            }
            open
        })
    }

    /// The state of every provider that has one, for metrics and readiness.
    pub fn states(&self) -> Vec<(String, State)> {
        let map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<_> = map.iter().map(|(k, e)| (k.clone(), e.state)).collect();
        out.sort();
        out
    }

    pub fn state(&self, provider: &str) -> State {
        self.with(provider, |e| e.state)
    }

    /// `provider`'s circuit as an operator sees it: its state, the transient
    /// failures counted since the provider last answered, and while open, the
    /// seconds until the next probe may go out.
    pub fn health(&self, provider: &str) -> (State, u32, Option<u64>) {
        let now = Instant::now();
        let map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(provider) {
            None => (State::Closed, 0, None),
            Some(e) => {
                let wait = (e.state == State::Open)
                    .then(|| e.open_until.saturating_duration_since(now).as_secs());
                (e.state, e.failures, wait)
            }
        }
    }
}

/// Leave to call a provider, given by [`Breakers::allow`]: say how it went.
#[must_use]
pub struct Ticket<'a> {
    breakers: &'a Breakers,
    provider: String,
    probe: bool,
    settled: bool,
}

impl Ticket<'_> {
    /// The provider answered (whatever it said): it is up.
    pub fn success(mut self) {
        self.settled = true;
        self.breakers.success(&self.provider);
    }

    /// A transient failure (timeout, 5xx, no answer; not a 429); true when this
    /// opened the circuit.
    pub fn failure(mut self) -> bool {
        self.settled = true;
        self.breakers.failure_at(&self.provider, Instant::now())
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if self.probe && !self.settled {
            self.breakers.abandon_at(&self.provider, Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_probes_after_the_cool_down_and_closes_on_success() {
        let b = Breakers::default();
        let t0 = Instant::now();
        for _ in 0..THRESHOLD - 1 {
            assert!(!b.failure_at("p", t0));
        }
        assert!(b.allow_at("p", t0).is_ok());
        assert!(b.failure_at("p", t0), "the threshold opens it");
        assert!(b.allow_at("p", t0).is_err());
        assert!(b.allow_at("other", t0).is_ok(), "per provider");
        let later = t0 + FIRST_COOL_DOWN;
        assert!(b.allow_at("p", later).is_ok(), "one probe");
        assert_eq!(b.state("p"), State::HalfOpen);
        assert!(b.allow_at("p", later).is_err(), "only one");
        assert!(b.failure_at("p", later), "a failed probe reopens");
        assert!(
            b.allow_at("p", later + FIRST_COOL_DOWN).is_err(),
            "for longer"
        );
        assert!(b.allow_at("p", later + FIRST_COOL_DOWN * 2).is_ok());
        b.success("p");
        assert_eq!(b.state("p"), State::Closed);
    }

    #[test]
    fn a_probe_dropped_without_a_verdict_reopens_for_the_next_probe() {
        let b = Breakers::default();
        let t0 = Instant::now();
        for _ in 0..THRESHOLD {
            b.failure_at("p", t0);
        }
        assert_eq!(b.state("p"), State::Open);
        // Wait out the cool-down on the real clock's terms: make it due now.
        b.with("p", |e| e.open_until = Instant::now());
        let probe = b.allow("p").expect("the probe is let through");
        assert_eq!(b.state("p"), State::HalfOpen);
        assert!(b.allow("p").is_err(), "only one probe");
        drop(probe);
        assert_eq!(b.state("p"), State::Open, "not half-open for ever");
        let next = b.allow("p").expect("the next probe goes at once");
        next.success();
        assert_eq!(b.state("p"), State::Closed);
        // A ticket of a closed circuit leaves it alone when dropped.
        drop(b.allow("p").unwrap());
        assert_eq!(b.state("p"), State::Closed);
    }
}
