//! How long to wait before trying again after failures in a row: shared by
//! refreshes and webhook deliveries.

use chrono::Duration;
use rand::Rng;

/// Back-off after the `failures`-th failure in a row: 30 s doubling to at
/// most an hour, with ±20% jitter so failed connections do not retry in step,
/// and never sooner than the provider's Retry-After.
pub fn backoff(failures: i32, retry_after: Option<u64>) -> Duration {
    let base = 30i64.saturating_mul(1i64 << failures.clamp(0, 7)).min(3600);
    let jittered = (base as f64 * rand::thread_rng().gen_range(0.8..1.2)) as i64;
    let floor = retry_after.map_or(0, |s| s.min(86_400) as i64);
    Duration::seconds(jittered.max(floor))
}
