//! The application: what the domain shares across requests and workers.

use crate::config::Settings;
use crate::crypto::KeyRing;
use crate::db::{Backend, DbConn, Pool};
use crate::error::{AppError, AppResult, Code};
use crate::ids::ProviderKey;
use crate::platform::Platforms;
use crate::providers::Catalogue;
use crate::ratelimit::RateLimiter;
use diesel::r2d2::R2D2Connection;
use std::sync::Arc;
use std::time::Duration;

pub mod budgets;
pub mod cache;
pub mod circuit;
pub mod flight;
pub mod hashing;
pub mod held;
pub mod receivers;
pub mod usage;

/// Everything the domain shares: built once by `startup`, handed to the web
/// layer as app data and to the workers, and taken as `&App` by every
/// domain function.
pub struct App {
    pub settings: Arc<Settings>,
    pub pool: Pool,
    pub keys: Arc<KeyRing>,
    pub providers: Arc<Catalogue>,
    /// What each platform does that its providers' data cannot say.
    pub platforms: Platforms<App>,
    /// For calls to providers.
    pub http: reqwest::Client,
    /// For refreshes only, which all run on the system's runtime: its pooled
    /// connections are never ones an HTTP worker opened (they die when the
    /// worker stops, while a refresh is still using them).
    pub refresh_http: reqwest::Client,
    /// Names this process in leases.
    pub instance_id: String,
    /// Sign-in attempts per client address: every attempt counts.
    pub login_limiter: RateLimiter,
    /// Failed sign-ins per email and client address: consulted before a
    /// password is checked, counted only when it was wrong (see
    /// `web::pages::login`).
    pub login_failures: RateLimiter,
    /// Failed sign-ins per email from every address: a backstop, high
    /// enough that an attacker spending it is a flood, not a lockout.
    pub login_failures_anywhere: RateLimiter,
    /// OAuth starts and callbacks per client address.
    pub oauth_limiter: RateLimiter,
    /// State-less install callbacks per client address: each costs a code
    /// exchange at the provider, so a client repeating them is stopped
    /// before the exchange.
    pub install_limiter: RateLimiter,
    /// Requests per tenant-scoped API key (`TETHER_API_KEY_RATE_LIMIT` a
    /// minute; `None`: off).
    pub api_key_limiter: Option<RateLimiter>,
    /// Where sign-ins' password hashes are checked (see `app::hashing`).
    pub password_checks: crate::app::hashing::PasswordChecks,
    /// Shares one refresh between concurrent callers in this process.
    pub flights: crate::app::flight::Flights,
    /// Per-provider circuit breakers.
    pub breakers: crate::app::circuit::Breakers,
    pub metrics: crate::metrics::Metrics,
    /// Validated API keys and tenant ids (see `api_keys`).
    pub api_cache: crate::api_keys::ApiCache,
    /// Opened token sets of warm connections (see `app::cache`).
    pub tokens: Arc<crate::app::cache::TokenCache>,
    /// Refreshes whose request may be at the provider: each holds a permit
    /// from the moment it decides to send until its answer is committed.
    pub sending: tokio::sync::Semaphore,
    /// Set once a shutdown began: the scheduler claims nothing more.
    pub stopping: std::sync::atomic::AtomicBool,
    /// Set once the server stopped answering: no refresh is sent any more.
    pub draining: std::sync::atomic::AtomicBool,
    /// Set at the very end of a graceful stop: the heartbeat ends.
    pub left: std::sync::atomic::AtomicBool,
    /// Whether the database answers (see `db::health`).
    pub health: Arc<crate::db::health::Health>,
    /// Token sets providers handed out that the database could not take
    /// yet (see `app::held`).
    pub held: crate::app::held::Held,
    /// What this instance tells the others with its heartbeat.
    pub fingerprints: crate::db::models::instance::Fingerprints,
    /// Where live instances disagree with this one on keys, as the last
    /// heartbeat found (see `keys::disagreements`); shown by `/readyz`.
    pub disagreements: std::sync::Mutex<Vec<String>>,
    /// How the CRM's webhook receivers are doing (see `app::receivers`).
    pub receivers: crate::app::receivers::Receivers,
    /// Woken when this process queued an app event to relay: the deliverer
    /// sends it now rather than at its next round.
    pub deliver_now: tokio::sync::Notify,
    /// Token reads and proxied calls counted since the last flush (see
    /// `app::usage`).
    pub usage: crate::app::usage::UsageCounter,
    /// This process's own count of providers' budgets, spent only while
    /// the database is away (see `app::budgets`).
    pub budgets: crate::app::budgets::BudgetLedger,
}

/// Permits of [`App::sending`]: more than can ever be in flight.
const SENDING_PERMITS: u32 = 1 << 20;

impl App {
    pub fn new(
        settings: Arc<Settings>,
        pool: Pool,
        keys: Arc<KeyRing>,
        providers: Arc<Catalogue>,
        session_key_check: String,
        platforms: Platforms<App>,
    ) -> App {
        let timeout = settings.refresh.provider_timeout;
        let http = crate::oauth::client::http_client(timeout, &settings.ca_certs);
        let refresh_http = crate::oauth::client::http_client(timeout, &settings.ca_certs);
        // SQLite serves one instance: nobody else writes. On PostgreSQL the
        // cache is coherent once the listener hears other instances' writes.
        let postgres = matches!(
            Backend::from_url(settings.database_url.expose()),
            Ok(Backend::Postgres(_))
        );
        let tokens = Arc::new(crate::app::cache::TokenCache::new(
            settings.refresh.token_cache,
            !postgres,
        ));
        if postgres && !settings.refresh.token_cache.is_zero() {
            crate::db::listen::spawn(settings.database_url.expose(), Arc::downgrade(&tokens));
        }
        // Hex, so that it is a plain prefix in a LIKE pattern.
        let instance_id = hex::encode(crate::crypto::random_bytes(6));
        let fingerprints = crate::db::models::instance::Fingerprints {
            id: instance_id.clone(),
            key_ids: keys.key_ids().join(","),
            session_key_check,
        };
        let per_key = settings.api_key_rate_limit;
        let api_key_limiter =
            (per_key > 0).then(|| RateLimiter::new(per_key, Duration::from_secs(60)));
        App {
            settings,
            pool,
            keys,
            providers,
            platforms,
            refresh_http,
            http,
            instance_id,
            login_limiter: RateLimiter::new(30, Duration::from_secs(300)),
            login_failures: RateLimiter::new(10, Duration::from_secs(300)),
            login_failures_anywhere: RateLimiter::new(100, Duration::from_secs(300)),
            oauth_limiter: RateLimiter::new(60, Duration::from_secs(60)),
            install_limiter: RateLimiter::new(10, Duration::from_secs(600)),
            password_checks: Default::default(),
            api_key_limiter,
            flights: Default::default(),
            breakers: Default::default(),
            metrics: Default::default(),
            api_cache: Default::default(),
            tokens,
            sending: tokio::sync::Semaphore::new(SENDING_PERMITS as usize),
            stopping: Default::default(),
            draining: Default::default(),
            left: Default::default(),
            health: Default::default(),
            held: Default::default(),
            fingerprints,
            disagreements: Default::default(),
            receivers: Default::default(),
            deliver_now: Default::default(),
            usage: Default::default(),
            budgets: Default::default(),
        }
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn has_left(&self) -> bool {
        self.left.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The first part of a graceful stop, once the server answers no more:
    /// send nothing new, and wait until `deadline` for the refreshes whose
    /// request is at a provider; says whether they all finished.
    pub async fn drain_in_flight(&self, deadline: tokio::time::Instant) -> bool {
        use std::sync::atomic::Ordering::SeqCst;
        self.stopping.store(true, SeqCst);
        self.draining.store(true, SeqCst);
        let waited = std::time::Instant::now();
        let finished =
            tokio::time::timeout_at(deadline, self.sending.acquire_many(SENDING_PERMITS))
                .await
                .is_ok();
        if finished {
            log::info!(
                "shutdown: refreshes in flight finished after {} ms",
                waited.elapsed().as_millis()
            );
        }
        finished
    }

    /// The last part of a graceful stop that left nothing held: releases
    /// this instance's leases and its heartbeat row, so that nobody waits
    /// for it.
    pub async fn leave(&self) {
        let instance = self.instance_id.clone();
        let released = self
            .db(move |c| {
                let n = crate::db::models::connection::Connection::release_all_of(c, &instance)?;
                crate::db::models::instance::Instance::leave(c, &instance, crate::db::now())?;
                Ok(n)
            })
            .await;
        self.left.store(true, std::sync::atomic::Ordering::SeqCst);
        match released {
            Ok(n) => log::info!("shutdown: released {n} refresh lease(s)"),
            Err(e) => log::warn!("shutdown: could not release refresh leases: {e:?}"),
        }
    }

    /// Records that `provider` rejected our client credentials (an operator
    /// error, shown by /readyz, doctor and metrics); tenants are left alone.
    pub fn flag_provider(&self, provider: &ProviderKey, error: &str) {
        log::error!("provider {provider} rejected Tether's client credentials ({error}): check its client id and secret");
        let pool = self.pool.clone();
        let (provider, error) = (provider.clone(), error.to_string());
        // Best effort, off the request path.
        std::thread::spawn(move || {
            if let Ok(mut c) = pool.get() {
                let _ = crate::db::models::provider_flag::ProviderFlag::raise(
                    &mut c, &provider, &error,
                );
            }
        });
    }

    /// The enabled provider with this key (as it appears in a URL), or a 404.
    pub fn enabled_provider(&self, key: &str) -> AppResult<Arc<crate::providers::Provider>> {
        if !crate::providers::valid_key(key) {
            return Err(AppError::not_found("no such provider"));
        }
        self.providers
            .shared(key)
            .cloned()
            .ok_or_else(|| AppError::not_found(format!("provider '{key}' is not enabled")))
    }

    /// Runs blocking database work on the thread pool. While the database is
    /// away this fails within a fraction of a second with 503
    /// `database_unavailable`, and [`App::health`] says so.
    pub async fn db<T, F>(&self, f: F) -> AppResult<T>
    where
        F: FnOnce(&mut DbConn) -> AppResult<T> + Send + 'static,
        T: Send + 'static,
    {
        let (pool, health) = (self.pool.clone(), self.health.clone());
        let settings = self.settings.clone();
        actix_web::web::block(move || {
            let mut conn = crate::db::checkout(&pool, &health, pool.connection_timeout())
                .inspect_err(|e| health.down(e))?;
            let result = f(&mut conn);
            match &result {
                Err(e) if e.is(Code::DatabaseUnavailable) => {
                    // Away, or only refusing writes (SQLite locked or full)?
                    if let Err(lost) = conn.ping() {
                        crate::db::poison(&mut conn);
                        health.down(&lost);
                    } else {
                        crate::db::reopen_sqlite(&mut conn, settings.database_url.expose());
                    }
                }
                _ => health.reached(),
            }
            result
        })
        .await?
    }
}
