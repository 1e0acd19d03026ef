//! A fixed-window rate limiter in memory, per process. Several instances each
//! enforce their own limit, so the effective limit scales with the instance count.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct RateLimiter {
    window: Duration,
    max: u32,
    hits: Mutex<HashMap<String, (Instant, u32)>>,
}

impl RateLimiter {
    pub fn new(max: u32, window: Duration) -> RateLimiter {
        RateLimiter {
            window,
            max,
            hits: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a hit for `key`; `Err(seconds)` to wait when over the limit.
    pub fn check(&self, key: &str) -> Result<(), u64> {
        let now = Instant::now();
        let mut hits = self.hits.lock().unwrap_or_else(|e| e.into_inner());
        if hits.len() > 50_000 {
            hits.retain(|_, (start, _)| now.duration_since(*start) < self.window);
        }
        let entry = hits.entry(key.to_string()).or_insert((now, 0));
        if now.duration_since(entry.0) >= self.window {
            *entry = (now, 0);
        }
        entry.1 += 1;
        if entry.1 > self.max {
            let left = self.window.saturating_sub(now.duration_since(entry.0));
            Err(left.as_secs().max(1))
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_up_to_max_per_window_and_per_key() {
        let rl = RateLimiter::new(2, Duration::from_secs(60));
        assert!(rl.check("a").is_ok());
        assert!(rl.check("a").is_ok());
        assert!(rl.check("a").unwrap_err() <= 60);
        assert!(rl.check("b").is_ok());
        let instant = RateLimiter::new(1, Duration::ZERO);
        assert!(instant.check("a").is_ok());
        assert!(instant.check("a").is_ok(), "a zero window never limits");
    }
}
