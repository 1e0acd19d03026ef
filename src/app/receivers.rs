//! How the CRM's receivers are doing, per outbox channel (connection
//! events, relayed app events), per process. A receiver that failed (it did
//! not answer, or answered 5xx or 429) is probed with one delivery per
//! round, not sent a whole batch, until one is taken again; each delivery's
//! own back-off (its `next_attempt_at`) paces the probes. A delivery it
//! refused with another status is that delivery's problem, not the
//! receiver's.

use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Default)]
pub struct Receivers {
    /// Consecutive receiver failures by channel.
    failing: Mutex<HashMap<String, u32>>,
}

impl Receivers {
    /// How many deliveries of `channel` a round may send: `full`, or one
    /// while its receiver is failing.
    pub fn allowance(&self, channel: &str, full: usize) -> usize {
        let failing = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        match failing.get(channel) {
            Some(n) if *n > 0 => 1,
            _ => full,
        }
    }

    /// The receiver of `channel` took a delivery.
    pub fn took(&self, channel: &str) {
        self.failing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(channel);
    }

    /// The receiver of `channel` failed (down, 5xx or 429); returns how many
    /// times in a row.
    pub fn failed(&self, channel: &str) -> u32 {
        let mut failing = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        let n = failing.entry(channel.to_string()).or_default();
        *n += 1;
        *n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_receiver_is_probed_with_one_delivery_until_it_takes_one() {
        let r = Receivers::default();
        assert_eq!(r.allowance("relay", 64), 64);
        assert_eq!(r.failed("relay"), 1);
        assert_eq!(r.failed("relay"), 2);
        assert_eq!(r.allowance("relay", 64), 1);
        assert_eq!(r.allowance("events", 64), 64, "per channel");
        r.took("relay");
        assert_eq!(r.allowance("relay", 64), 64);
    }
}
