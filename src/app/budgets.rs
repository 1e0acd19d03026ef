//! The arithmetic of a provider's per-account budget (a number of calls in
//! any stretch of a window), shared by the database's count and this
//! process's own, and the in-memory count the proxy falls back on while
//! the database is away.
//!
//! A window is cut into [`BUCKETS`] buckets, numbered since the epoch; a
//! call is let through while the current bucket and the buckets before it
//! that reach back a whole window hold fewer calls than the budget. The
//! counted stretch is a little longer than the window (up to one bucket
//! more), so no stretch of the window's length ever holds more calls than
//! the budget, boundaries included: what a plain fixed window cannot say (it
//! lets twice the budget through around a boundary), paid for by letting
//! through up to a tenth less than the budget when calls are steady.

use crate::providers::Budget;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Buckets per window.
pub const BUCKETS: i64 = 10;

/// Milliseconds since the epoch, now: the clock every instance cuts
/// buckets by (instances' clocks are assumed to agree, as leases assume).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Where a budget stands at one moment: which buckets count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// The calls the budget allows.
    pub calls: i64,
    /// The window's length in whole seconds (what names the budget).
    pub window_secs: i64,
    /// A bucket's length.
    pub bucket_ms: i64,
    /// The bucket `now` falls in.
    pub current: i64,
    /// The oldest bucket counted: the one the moment a window ago falls in.
    pub lowest: i64,
}

impl Span {
    /// The span of `budget` at `now_ms`.
    pub fn at(budget: &Budget, now_ms: i64) -> Span {
        let window_ms = (budget.window.as_millis() as i64).max(BUCKETS);
        let bucket_ms = window_ms / BUCKETS;
        let current = now_ms.div_euclid(bucket_ms);
        Span {
            calls: budget.calls.min(i64::MAX as u64) as i64,
            window_secs: budget.window.as_secs() as i64,
            bucket_ms,
            current,
            lowest: (now_ms - window_ms).div_euclid(bucket_ms),
        }
    }

    /// How many buckets back from the current one are counted.
    fn back(&self) -> i64 {
        self.current - self.lowest
    }

    /// When a bucket counted now stops being counted by any later span
    /// (milliseconds since the epoch): its rows may go then.
    pub fn expires_ms(&self) -> i64 {
        (self.current + self.back() + 1) * self.bucket_ms
    }

    /// Whether one more call fits, with `before` calls in the counted
    /// buckets before the current one and `current` in it.
    pub fn admits(&self, before: i64, current: i64) -> bool {
        before.saturating_add(current) < self.calls
    }

    /// Milliseconds from `now_ms` until one more call fits, given the
    /// counted buckets' calls as (bucket, calls): the oldest buckets drop
    /// out of the span one by one until fewer than the budget remain.
    pub fn reopens_in(&self, counted: &[(i64, i64)], now_ms: i64) -> i64 {
        let mut buckets = counted.to_vec();
        buckets.sort_unstable();
        let mut total: i64 = buckets.iter().map(|b| b.1).sum();
        let mut at = now_ms;
        for (bucket, calls) in buckets {
            if total < self.calls {
                break;
            }
            total -= calls;
            // The first span whose lowest bucket is past this one.
            at = (bucket + self.back() + 1) * self.bucket_ms;
        }
        (at - now_ms).max(0)
    }
}

/// Whole seconds for a `Retry-After` of `ms` milliseconds: rounded up, at
/// least one.
pub fn retry_after_secs(ms: i64) -> u64 {
    (ms.max(1) as u64).div_ceil(1000)
}

/// One account's budget in this process: (provider, account, window secs).
type Key = (String, String, i64);

/// This process's own count of the budgets, used only while the database
/// is away: an approximation (each instance counts alone, so instances
/// together may spend up to their number times the budget; the provider's
/// own 429s remain the backstop), chosen over refusing every call.
#[derive(Default)]
pub struct BudgetLedger {
    spent: Mutex<HashMap<Key, BTreeMap<i64, i64>>>,
    /// Whether the last spend fell back on this count (to log the change once).
    away: AtomicBool,
}

impl BudgetLedger {
    /// Spends one call of every span for the account, or none: `Err` names
    /// the first span without room and when it has room again (ms).
    pub fn spend(
        &self,
        provider: &str,
        account: &str,
        spans: &[Span],
        now_ms: i64,
    ) -> Result<(), (usize, i64)> {
        let mut spent = self.spent.lock().unwrap_or_else(|e| e.into_inner());
        for (i, span) in spans.iter().enumerate() {
            let key = (provider.to_string(), account.to_string(), span.window_secs);
            let buckets = spent.entry(key).or_default();
            buckets.retain(|b, _| *b >= span.lowest);
            let current = buckets.get(&span.current).copied().unwrap_or(0);
            let before: i64 = buckets.range(..span.current).map(|(_, n)| n).sum();
            if !span.admits(before, current) {
                let counted: Vec<(i64, i64)> = buckets.iter().map(|(b, n)| (*b, *n)).collect();
                return Err((i, span.reopens_in(&counted, now_ms)));
            }
        }
        for span in spans {
            let key = (provider.to_string(), account.to_string(), span.window_secs);
            *spent
                .entry(key)
                .or_default()
                .entry(span.current)
                .or_insert(0) += 1;
        }
        Ok(())
    }

    /// Records whether spending falls back on this count; true when that
    /// changed (the caller logs it once).
    pub fn set_away(&self, away: bool) -> bool {
        self.away.swap(away, Ordering::Relaxed) != away
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_stretch_of_a_window_lets_more_than_the_budget_through() {
        // 10 calls per 10 s, tried every 100 ms for a minute: every
        // 10-second stretch, boundaries included, holds at most 10.
        let budget = Budget::per_secs(10, 10);
        let ledger = BudgetLedger::default();
        let mut admitted = Vec::new();
        for ms in (1_000_000..1_060_000).step_by(100) {
            let span = Span::at(&budget, ms);
            if ledger.spend("p", "a", &[span], ms).is_ok() {
                admitted.push(ms);
            }
        }
        for (i, start) in admitted.iter().enumerate() {
            let within = admitted[i..]
                .iter()
                .take_while(|t| **t < start + 10_000)
                .count();
            assert!(within <= 10, "{within} calls in the 10 s from {start}");
        }
        // Steady calls still get most of the budget (at least 9 per 11 s).
        assert!(admitted.len() >= 45, "{}", admitted.len());
    }

    #[test]
    fn a_spent_budget_reopens_when_its_oldest_calls_leave_the_window() {
        let budget = Budget::per_secs(3, 10);
        let ledger = BudgetLedger::default();
        let t0 = 2_000_000;
        for _ in 0..3 {
            assert!(ledger.spend("p", "a", &[Span::at(&budget, t0)], t0).is_ok());
        }
        let (which, ms) = ledger
            .spend("p", "a", &[Span::at(&budget, t0 + 500)], t0 + 500)
            .unwrap_err();
        assert_eq!(which, 0);
        // t0's bucket is counted until a whole window (and its bucket) passed.
        assert_eq!(ms, 10_000 + 1_000 - 500);
        assert_eq!(retry_after_secs(ms), 11);
        assert!(ledger
            .spend("p", "a", &[Span::at(&budget, t0 + 11_000)], t0 + 11_000)
            .is_ok());
    }

    #[test]
    fn a_call_spends_every_budget_or_none() {
        let (burst, day) = (Budget::per_secs(5, 10), Budget::per_secs(2, 86_400));
        let ledger = BudgetLedger::default();
        let t = 3_000_000;
        let spans = [Span::at(&burst, t), Span::at(&day, t)];
        assert!(ledger.spend("p", "a", &spans, t).is_ok());
        assert!(ledger.spend("p", "a", &spans, t).is_ok());
        assert_eq!(ledger.spend("p", "a", &spans, t).unwrap_err().0, 1);
        // The refused call spent none of the burst: three of its five remain.
        let burst_only = [Span::at(&burst, t)];
        for _ in 0..3 {
            assert!(ledger.spend("p", "a", &burst_only, t).is_ok());
        }
        assert!(ledger.spend("p", "a", &burst_only, t).is_err());
        // Another account has budgets of its own.
        assert!(ledger.spend("p", "b", &spans, t).is_ok());
    }
}
