//! Fixed-window rate limiters in memory, per process, of a fixed capacity.
//! Several instances each enforce their own limit, so the effective limit
//! scales with the instance count.
//!
//! Memory is bounded without ever scanning: keys are kept in the order their
//! windows opened, so the expired ones are always at the front and are
//! dropped a few at a time by the checks themselves; when the limiter is
//! full, the key whose window opened first (the one nearest to expiring
//! anyway) is forgotten to make room. Keys are stored as 64-bit hashes under
//! a per-process random key, so an entry's size does not depend on what the
//! client sent, and nobody outside the process can aim for a collision.
//!
//! Not `governor`: its keyed limiter's memory is only reclaimed by
//! `retain_recent`, a scan of every key, which is the cost this replaces.

use std::collections::hash_map::{Entry, RandomState};
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Keys a limiter keeps at most (each a few dozen bytes, so a few MiB).
pub const CAPACITY: usize = 100_000;

pub struct RateLimiter {
    window: Duration,
    max: u32,
    capacity: usize,
    hasher: RandomState,
    windows: Mutex<Windows>,
}

#[derive(Default)]
struct Windows {
    hits: HashMap<u64, Window>,
    /// Every key in `hits` once, with its window's start, oldest first.
    opened: VecDeque<(u64, Instant)>,
    /// The latest time seen: threads read the clock before they take the
    /// lock, and `opened` stays in order only if time never goes back.
    latest: Option<Instant>,
}

impl Windows {
    fn clamp(&mut self, now: Instant) -> Instant {
        let now = self.latest.map_or(now, |l| l.max(now));
        self.latest = Some(now);
        now
    }
}

struct Window {
    start: Instant,
    hits: u32,
}

impl RateLimiter {
    /// At most `max` hits per key in each `window`, for [`CAPACITY`] keys.
    pub fn new(max: u32, window: Duration) -> RateLimiter {
        RateLimiter::with_capacity(max, window, CAPACITY)
    }

    pub fn with_capacity(max: u32, window: Duration, capacity: usize) -> RateLimiter {
        RateLimiter {
            window,
            max,
            capacity: capacity.max(1),
            hasher: RandomState::new(),
            windows: Mutex::new(Windows::default()),
        }
    }

    /// Counts a hit for `key`; `Err(seconds)` to wait when over the limit.
    pub fn check(&self, key: &str) -> Result<(), u64> {
        self.check_at(key, Instant::now())
    }

    /// Whether a hit for `key` would be allowed, without counting one (and
    /// without storing the key): `Err(seconds)` to wait when the limit is reached.
    pub fn peek(&self, key: &str) -> Result<(), u64> {
        self.peek_at(key, Instant::now())
    }

    /// Counts a hit for `key` without asking whether it is allowed.
    pub fn charge(&self, key: &str) {
        self.charge_at(key, Instant::now())
    }

    /// The number of keys held (never more than the capacity).
    pub fn len(&self) -> usize {
        self.lock().hits.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn check_at(&self, key: &str, now: Instant) -> Result<(), u64> {
        let mut w = self.lock();
        let now = w.clamp(now);
        let window = self.hit(&mut w, key, now);
        if window.hits > self.max {
            Err(self.wait(window, now))
        } else {
            Ok(())
        }
    }

    fn peek_at(&self, key: &str, now: Instant) -> Result<(), u64> {
        let mut w = self.lock();
        let now = w.clamp(now);
        self.expire(&mut w, now);
        match w.hits.get(&self.hasher.hash_one(key)) {
            Some(window) if window.hits >= self.max => Err(self.wait(window, now)),
            _ => Ok(()),
        }
    }

    fn charge_at(&self, key: &str, now: Instant) {
        let mut w = self.lock();
        let now = w.clamp(now);
        self.hit(&mut w, key, now);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Windows> {
        self.windows.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a hit in `key`'s current window, opening one (and making room
    /// for it) if it has none.
    fn hit<'w>(&self, w: &'w mut Windows, key: &str, now: Instant) -> &'w Window {
        self.expire(w, now);
        let hash = self.hasher.hash_one(key);
        if !w.hits.contains_key(&hash) && w.hits.len() >= self.capacity {
            if let Some((oldest, _)) = w.opened.pop_front() {
                w.hits.remove(&oldest);
            }
        }
        let window = match w.hits.entry(hash) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                w.opened.push_back((hash, now));
                e.insert(Window {
                    start: now,
                    hits: 0,
                })
            }
        };
        window.hits = window.hits.saturating_add(1);
        window
    }

    /// Drops the windows that have ended: they are all at the front. A
    /// check drops as many as have ended since the last one, so each window
    /// is dropped once, by one check.
    fn expire(&self, w: &mut Windows, now: Instant) {
        while let Some(&(hash, start)) = w.opened.front() {
            if now.saturating_duration_since(start) < self.window {
                break;
            }
            w.opened.pop_front();
            w.hits.remove(&hash);
        }
    }

    /// Seconds until `window` ends, at least one.
    fn wait(&self, window: &Window, now: Instant) -> u64 {
        let left = self
            .window
            .saturating_sub(now.saturating_duration_since(window.start));
        left.as_secs().max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn allows_up_to_max_per_window_and_per_key() {
        let rl = RateLimiter::new(2, MINUTE);
        assert!(rl.check("a").is_ok());
        assert!(rl.check("a").is_ok());
        assert!(rl.check("a").unwrap_err() <= 60);
        assert!(rl.check("b").is_ok());
        let instant = RateLimiter::new(1, Duration::ZERO);
        assert!(instant.check("a").is_ok());
        assert!(instant.check("a").is_ok(), "a zero window never limits");
    }

    #[test]
    fn a_window_ends_and_its_key_is_forgotten() {
        let rl = RateLimiter::new(1, MINUTE);
        let t0 = Instant::now();
        assert!(rl.check_at("a", t0).is_ok());
        assert_eq!(rl.check_at("a", t0 + Duration::from_secs(15)), Err(45));
        assert_eq!(rl.len(), 1);
        assert!(rl.check_at("b", t0 + MINUTE).is_ok());
        assert_eq!(rl.len(), 1, "a's window ended and was dropped");
        assert!(rl.check_at("a", t0 + MINUTE).is_ok(), "a new window");
    }

    #[test]
    fn peek_neither_counts_nor_stores_and_charge_counts_without_asking() {
        let rl = RateLimiter::new(2, MINUTE);
        let t0 = Instant::now();
        for _ in 0..10 {
            assert!(rl.peek_at("a", t0).is_ok());
        }
        assert!(rl.is_empty());
        rl.charge_at("a", t0);
        assert!(rl.peek_at("a", t0).is_ok());
        rl.charge_at("a", t0);
        assert_eq!(rl.peek_at("a", t0 + Duration::from_secs(20)), Err(40));
        rl.charge_at("a", t0);
        assert!(rl.peek_at("a", t0 + MINUTE).is_ok(), "the window ended");
    }

    #[test]
    fn a_full_limiter_forgets_the_oldest_window_first() {
        let rl = RateLimiter::with_capacity(1, MINUTE, 3);
        let t0 = Instant::now();
        for (i, key) in ["a", "b", "c"].iter().enumerate() {
            assert!(rl.check_at(key, t0 + Duration::from_secs(i as u64)).is_ok());
        }
        // b and c are at their limit; a new key makes room by forgetting a.
        let t = t0 + Duration::from_secs(10);
        assert!(rl.check_at("d", t).is_ok());
        assert_eq!(rl.len(), 3);
        assert!(rl.check_at("b", t).is_err());
        assert!(rl.check_at("c", t).is_err());
        assert!(rl.check_at("a", t).is_ok(), "a was forgotten");
        // ...which forgot b, the oldest left.
        assert!(rl.check_at("b", t).is_ok());
        assert_eq!(rl.len(), 3);
    }

    #[test]
    fn a_flood_of_distinct_keys_stays_within_the_capacity() {
        let rl = RateLimiter::new(10, Duration::from_secs(300));
        let t0 = Instant::now();
        for i in 0..(CAPACITY * 3) {
            rl.charge_at(&format!("email:flood-{i}@example.com"), t0);
            if i % 10_007 == 0 {
                assert!(rl.len() <= CAPACITY);
            }
        }
        assert_eq!(rl.len(), CAPACITY);
        let w = rl.lock();
        assert_eq!(w.opened.len(), CAPACITY, "the order holds each key once");
    }

    #[test]
    fn each_key_is_in_the_order_once_however_often_its_window_restarts() {
        let rl = RateLimiter::new(1, MINUTE);
        let t0 = Instant::now();
        for round in 0..50u32 {
            let t = t0 + MINUTE * round;
            for key in ["a", "b", "c"] {
                assert!(rl.check_at(key, t).is_ok());
            }
        }
        let w = rl.lock();
        assert_eq!((w.hits.len(), w.opened.len()), (3, 3));
    }
}
