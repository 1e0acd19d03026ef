//! The background workers that run beside the HTTP server: the refresh
//! scheduler, the webhook deliverer, the install sweeper and the usage
//! flusher, among others. They are started here, from one
//! place; a worker is supposed to run until the process stops, so one that
//! ends early (or panics) is logged and takes the process down with an
//! error instead of leaving it running half alive.

use crate::app::App;
use crate::refresh::scheduler::Scheduler;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::task::JoinHandle;

/// How often the webhook deliverer looks for due deliveries.
const DELIVER_EVERY: Duration = Duration::from_secs(2);

/// How often unclaimed installs past their day are looked for (they are
/// swept within this of expiring).
const SWEEP_INSTALLS_EVERY: Duration = Duration::from_secs(300);

/// The running workers.
#[derive(Default)]
pub struct Workers {
    running: Vec<(&'static str, JoinHandle<()>)>,
}

/// Why the supervision of workers ended.
#[derive(Debug)]
pub struct Stopped {
    pub worker: &'static str,
    pub panicked: bool,
}

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let how = if self.panicked { "panicked" } else { "stopped" };
        write!(f, "the {} worker {how}", self.worker)
    }
}

impl Workers {
    /// Starts the workers the settings ask for on the current runtime.
    pub fn start(app: &Arc<App>) -> Workers {
        let mut workers = Workers::default();
        if app.settings.refresh.enabled {
            let scheduler = Scheduler::new(app.clone());
            workers.spawn("refresh scheduler", async move { scheduler.run().await });
            // What platforms keep up beside it (minting a bulk install's
            // locations, say) runs where refreshes run.
            for worker in app.platforms.workers(app) {
                workers.spawn(worker.name, worker.work);
            }
        }
        if app.settings.webhook.is_some() || app.settings.relay_target().is_some() {
            let app = app.clone();
            workers.spawn("webhook deliverer", deliver_webhooks(app));
        }
        {
            let app = app.clone();
            workers.spawn("heartbeat", beat(app));
        }
        {
            let app = app.clone();
            workers.spawn("held answer keeper", crate::refresh::keeper::keep(app));
        }
        {
            let app = app.clone();
            workers.spawn("usage flusher", flush_usage_every(app));
        }
        if app
            .providers
            .all()
            .any(|p| p.enabled() && p.provider_initiated_installs)
        {
            let app = app.clone();
            workers.spawn("install sweeper", sweep_installs(app));
        }
        workers
    }

    /// Runs `work` as the worker `name`.
    pub fn spawn(&mut self, name: &'static str, work: impl Future<Output = ()> + 'static) {
        self.running.push((name, actix_web::rt::spawn(work)));
    }

    /// Resolves when the first worker ends, saying which and how; never
    /// while every worker runs (nor at all when there are none).
    pub fn first_to_stop(&mut self) -> FirstToStop<'_> {
        FirstToStop(self)
    }
}

/// The future of [`Workers::first_to_stop`].
pub struct FirstToStop<'a>(&'a mut Workers);

impl Future for FirstToStop<'_> {
    type Output = Stopped;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Stopped> {
        let running = &mut self.0.running;
        for i in 0..running.len() {
            if let Poll::Ready(ended) = Pin::new(&mut running[i].1).poll(cx) {
                let (worker, _) = running.swap_remove(i);
                return Poll::Ready(Stopped {
                    worker,
                    panicked: ended.is_err_and(|e| e.is_panic()),
                });
            }
        }
        Poll::Pending
    }
}

/// Writes this instance's heartbeat every [`HEARTBEAT_EVERY`] until the
/// instance leaves at the end of a graceful stop: other instances take over
/// its lapsed leases only once it has been silent (see `app::held`).
/// Each beat also reads the other live instances and tells, once, where they
/// disagree with this one on keys (see `keys::disagreements`).
async fn beat(app: Arc<App>) {
    use crate::db::models::instance::{Instance, HEARTBEAT_EVERY};
    let mut every = tokio::time::interval(HEARTBEAT_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !app.has_left() {
        every.tick().await;
        let me = app.fingerprints.clone();
        // A failure is the database's health, logged there.
        let Ok(peers) = app
            .db(move |c| {
                let at = crate::db::now();
                Instance::beat(c, &me, at)?;
                Ok(Instance::live_peers(c, &me.id, at)?)
            })
            .await
        else {
            continue;
        };
        let found = crate::keys::disagreements(&app.fingerprints, &app.keys, &peers);
        let mut told = app.disagreements.lock().expect("disagreements");
        for line in found.iter().filter(|l| !told.contains(l)) {
            log::warn!("{line}");
        }
        if !told.is_empty() && found.is_empty() {
            log::info!("every live instance now agrees with this one on keys");
        }
        *told = found;
    }
}

/// Delivers due webhooks every [`DELIVER_EVERY`], and at once when this
/// process queued something (`App::deliver_now`), until the process stops.
async fn deliver_webhooks(app: Arc<App>) {
    let mut every = tokio::time::interval(DELIVER_EVERY);
    while !app.is_stopping() {
        tokio::select! {
            _ = every.tick() => {}
            _ = app.deliver_now.notified() => {}
        }
        if let Err(e) = crate::webhooks::deliver_due(&app).await {
            log::warn!("webhook delivery: {e:?}");
        }
    }
}

/// Adds the uses counted in memory to the database every
/// `TETHER_USAGE_FLUSH_MS` until the process stops (a graceful stop flushes
/// once more, after the last request was answered: see `startup`).
async fn flush_usage_every(app: Arc<App>) {
    let mut every = tokio::time::interval(app.settings.usage_flush);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !app.is_stopping() {
        every.tick().await;
        if let Err(e) = flush_usage(&app).await {
            log::warn!(
                "usage counts not written yet (kept for the next try): {}",
                e.message()
            );
        }
    }
}

/// Adds every use counted in memory so far to the database; returns how
/// many rows it added to. On failure the counts are kept for the next flush.
pub async fn flush_usage(app: &App) -> crate::error::AppResult<usize> {
    use crate::db::models::usage::Usage;
    let tallies = app.usage.take();
    if tallies.is_empty() {
        return Ok(0);
    }
    let n = tallies.len();
    let written = tallies.clone();
    match app.db(move |c| Ok(Usage::add(c, &written)?)).await {
        Ok(()) => Ok(n),
        Err(e) => {
            app.usage.put_back(tallies);
            Err(e)
        }
    }
}

/// Sweeps unclaimed installs every [`SWEEP_INSTALLS_EVERY`] until the process stops.
async fn sweep_installs(app: Arc<App>) {
    let mut every = tokio::time::interval(SWEEP_INSTALLS_EVERY);
    while !app.is_stopping() {
        every.tick().await;
        if let Err(e) = crate::connections::installs::sweep(&app).await {
            log::warn!("install sweep: {e:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_web::test]
    async fn the_first_worker_to_stop_is_named_and_a_panic_is_told_apart() {
        let mut workers = Workers::default();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        workers.spawn("waits", async move {
            let _ = rx.await;
        });
        workers.spawn("panics", async { panic!("on purpose") });
        let stopped = workers.first_to_stop().await;
        assert_eq!(stopped.worker, "panics");
        assert!(stopped.panicked);
        assert_eq!(stopped.to_string(), "the panics worker panicked");
        tx.send(()).unwrap();
        let stopped = workers.first_to_stop().await;
        assert_eq!(stopped.worker, "waits");
        assert!(!stopped.panicked);
    }

    #[actix_web::test]
    async fn without_workers_supervision_waits_forever() {
        let mut workers = Workers::default();
        let waited = tokio::time::timeout(Duration::from_millis(50), workers.first_to_stop()).await;
        assert!(waited.is_err());
    }
}
