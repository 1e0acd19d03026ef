//! Single flight inside one process: concurrent callers for one key share the
//! first caller's run and its outcome. (Across processes, the database lease
//! does the same job.)

use crate::error::{AppError, Code};
use actix_web::http::StatusCode;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use tokio::sync::OnceCell;

/// An outcome every waiter can have a copy of.
#[derive(Debug, Clone)]
pub struct Shared {
    status: StatusCode,
    code: Code,
    message: String,
    retry_after: Option<u64>,
}

impl Shared {
    fn from(e: &AppError) -> Shared {
        Shared {
            status: e.status(),
            code: e.code_kind(),
            message: e.message().to_string(),
            retry_after: e.retry_after(),
        }
    }

    pub fn into_error(self) -> AppError {
        AppError::rebuild(self.status, self.code, self.message, self.retry_after)
    }
}

type Cell = Arc<OnceCell<Result<(), Shared>>>;

#[derive(Default)]
pub struct Flights {
    inflight: Mutex<HashMap<String, Cell>>,
}

impl Flights {
    /// Runs `work` unless a run for `key` is under way, in which case waits
    /// for that one. Every caller gets the run's outcome.
    pub async fn run<F, Fut>(&self, key: &str, work: F) -> Result<(), AppError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(), AppError>>,
    {
        let cell = {
            let mut map = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
            map.entry(key.to_string()).or_default().clone()
        };
        let outcome = cell
            .get_or_init(|| async {
                let r = work().await.map_err(|e| Shared::from(&e));
                // Later callers start a new run: take this one out before anyone else can join it.
                let mut map = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
                if map.get(key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                    map.remove(key);
                }
                r
            })
            .await
            .clone();
        outcome.map_err(Shared::into_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn concurrent_callers_share_one_run_and_later_callers_start_another() {
        let flights = Arc::new(Flights::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Notify::new());
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (flights, runs, gate) = (flights.clone(), runs.clone(), gate.clone());
            tasks.push(tokio::spawn(async move {
                flights
                    .run("c1", || async {
                        runs.fetch_add(1, Ordering::SeqCst);
                        gate.notified().await;
                        Err(AppError::conflict(Code::NeedsReconnect, "gone"))
                    })
                    .await
            }));
        }
        // Let every task join the flight, then release the one run.
        while Arc::strong_count(&flights) > 1
            && flights
                .inflight
                .lock()
                .unwrap()
                .get("c1")
                .map_or(0, Arc::strong_count)
                < 21
        {
            tokio::task::yield_now().await;
        }
        gate.notify_one();
        for t in tasks {
            let err = t.await.unwrap().unwrap_err();
            assert_eq!(err.code(), "needs_reconnect");
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        flights.run("c1", || async { Ok(()) }).await.unwrap();
        assert!(flights.inflight.lock().unwrap().is_empty());
    }
}
