//! Where sign-ins' password hashes are checked: on blocking threads, at
//! most one per CPU at once (argon2 is tens of milliseconds of CPU; more at
//! once would only queue in the kernel), and never while a database
//! connection is held (the caller gives it back first).

use crate::error::{AppError, AppResult};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

pub struct PasswordChecks {
    /// One per check allowed to run at once.
    pub permits: tokio::sync::Semaphore,
    waiting: AtomicUsize,
}

impl Default for PasswordChecks {
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        PasswordChecks {
            permits: tokio::sync::Semaphore::new(cpus),
            waiting: AtomicUsize::new(0),
        }
    }
}

impl PasswordChecks {
    /// Checks waiting for a permit now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(SeqCst)
    }

    /// Runs the check `f` once a permit is free.
    pub async fn run<T, F>(&self, f: F) -> AppResult<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let permit = {
            let _waiting = Waiting::on(&self.waiting);
            self.permits.acquire().await.map_err(AppError::internal)?
        };
        let out = actix_web::web::block(f).await.map_err(AppError::internal)?;
        drop(permit);
        Ok(out)
    }
}

/// Counts a waiter for as long as it lives (a request dropped while
/// waiting stops counting too).
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn on(n: &'a AtomicUsize) -> Self {
        n.fetch_add(1, SeqCst);
        Waiting(n)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, SeqCst);
    }
}
