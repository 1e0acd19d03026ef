//! The application: what the domain shares across requests and workers.

use crate::config::Settings;
use crate::crypto::KeyRing;
use crate::db::{Backend, DbConn, Pool};
use crate::error::{AppError, AppResult};
use crate::providers::Catalogue;
use crate::ratelimit::RateLimiter;
use std::sync::Arc;
use std::time::Duration;

/// Everything the domain shares: built once by `startup`, handed to the web
/// layer as app data and to the workers, and taken as `&App` by every
/// domain function.
pub struct App {
    pub settings: Arc<Settings>,
    pub pool: Pool,
    pub keys: Arc<KeyRing>,
    pub providers: Arc<Catalogue>,
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
    /// Failed sign-ins per email: consulted before a password is checked,
    /// counted only when it was wrong (see `web::pages::login`).
    pub login_failures: RateLimiter,
    /// OAuth starts and callbacks per client address.
    pub oauth_limiter: RateLimiter,
    /// Shares one refresh between concurrent callers in this process.
    pub flights: crate::refresh::flight::Flights,
    /// Per-provider circuit breakers.
    pub breakers: crate::refresh::circuit::Breakers,
    pub metrics: crate::metrics::Metrics,
    /// Validated API keys and tenant ids (see `api_keys`).
    pub api_cache: crate::api_keys::ApiCache,
    /// Opened token sets of warm connections (see `refresh::cache`).
    pub tokens: Arc<crate::refresh::cache::TokenCache>,
    /// Refreshes whose request may be at the provider: each holds a permit
    /// from the moment it decides to send until its answer is committed.
    pub sending: tokio::sync::Semaphore,
    /// Set once a shutdown began: the scheduler claims nothing more.
    pub stopping: std::sync::atomic::AtomicBool,
    /// Set once the server stopped answering: no refresh is sent any more.
    pub draining: std::sync::atomic::AtomicBool,
}

/// Permits of [`App::sending`]: more than can ever be in flight.
const SENDING_PERMITS: u32 = 1 << 20;

impl App {
    pub fn new(
        settings: Arc<Settings>,
        pool: Pool,
        keys: Arc<KeyRing>,
        providers: Arc<Catalogue>,
    ) -> App {
        let http = crate::oauth::client::http_client(settings.refresh.provider_timeout);
        let refresh_http = crate::oauth::client::http_client(settings.refresh.provider_timeout);
        // SQLite serves one instance: nobody else writes. On PostgreSQL the
        // cache is coherent once the listener hears other instances' writes.
        let postgres = matches!(
            Backend::from_url(settings.database_url.expose()),
            Ok(Backend::Postgres(_))
        );
        let tokens = Arc::new(crate::refresh::cache::TokenCache::new(
            settings.refresh.token_cache,
            !postgres,
        ));
        if postgres && !settings.refresh.token_cache.is_zero() {
            crate::db::listen::spawn(settings.database_url.expose(), Arc::downgrade(&tokens));
        }
        App {
            settings,
            pool,
            keys,
            providers,
            refresh_http,
            http,
            // Hex, so that it is a plain prefix in a LIKE pattern.
            instance_id: hex::encode(crate::crypto::random_bytes(6)),
            login_limiter: RateLimiter::new(30, Duration::from_secs(300)),
            login_failures: RateLimiter::new(10, Duration::from_secs(300)),
            oauth_limiter: RateLimiter::new(60, Duration::from_secs(60)),
            flights: Default::default(),
            breakers: Default::default(),
            metrics: Default::default(),
            api_cache: Default::default(),
            tokens,
            sending: tokio::sync::Semaphore::new(SENDING_PERMITS as usize),
            stopping: Default::default(),
            draining: Default::default(),
        }
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The end of a graceful stop, once the server answers no more: send
    /// nothing new, let the refreshes whose request is at a provider finish
    /// (each is bounded by the provider timeout), then release this
    /// instance's leases so another instance can take the work at once
    /// instead of waiting for them to lapse.
    pub async fn drain(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        self.stopping.store(true, SeqCst);
        self.draining.store(true, SeqCst);
        let bound = self.settings.refresh.provider_timeout + Duration::from_secs(5);
        let waited = std::time::Instant::now();
        match tokio::time::timeout(bound, self.sending.acquire_many(SENDING_PERMITS)).await {
            Ok(_) => log::info!(
                "shutdown: refreshes in flight finished after {} ms",
                waited.elapsed().as_millis()
            ),
            Err(_) => {
                // Their leases are left to lapse: the provider may still act
                // on those requests, and no other instance may send the same
                // refresh token before the lease says no answer can come.
                log::warn!(
                    "shutdown: refreshes still in flight after {} s; stopping anyway, their leases lapse by themselves",
                    bound.as_secs()
                );
                return;
            }
        }
        let instance = self.instance_id.clone();
        match self
            .db(move |c| {
                Ok(crate::db::models::connection::Connection::release_all_of(
                    c, &instance,
                )?)
            })
            .await
        {
            Ok(n) => log::info!("shutdown: released {n} refresh lease(s)"),
            Err(e) => log::warn!("shutdown: could not release refresh leases: {e:?}"),
        }
    }

    /// Records that `provider` rejected our client credentials (an operator
    /// error, shown by /readyz, doctor and metrics); tenants are left alone.
    pub fn flag_provider(&self, provider: &str, error: &str) {
        log::error!("provider {provider} rejected Tether's client credentials ({error}): check its client id and secret");
        let pool = self.pool.clone();
        let (provider, error) = (provider.to_string(), error.to_string());
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

    /// Runs blocking database work on the thread pool.
    pub async fn db<T, F>(&self, f: F) -> AppResult<T>
    where
        F: FnOnce(&mut DbConn) -> AppResult<T> + Send + 'static,
        T: Send + 'static,
    {
        let pool = self.pool.clone();
        actix_web::web::block(move || {
            let mut conn = pool.get()?;
            f(&mut conn)
        })
        .await?
    }
}
