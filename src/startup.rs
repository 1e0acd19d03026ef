//! From settings to a running server: keys, database, migrations, the key
//! check, the first tenant, and the HTTP server bound to a listener (port 0 in
//! tests).

use crate::config::Settings;
use crate::crypto::{random_token, KeyRing, Secret};
use crate::db::models::{tenant::Tenant, user::User};
use crate::db::{self, Backend, Pool};
use crate::providers::Catalogue;
use crate::web;
use crate::workers::Workers;
use actix_session::config::{CookieContentSecurity, PersistentSession};
use actix_session::storage::CookieSessionStore;
use actix_session::SessionMiddleware;
use actix_web::cookie::{time::Duration as CookieDuration, SameSite};
use actix_web::dev::Server;
use actix_web::{middleware, App, HttpServer};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;

/// Everything a command needs once start-up checks have passed.
#[derive(Clone)]
pub struct Context {
    pub settings: Arc<Settings>,
    pub pool: Pool,
    pub keys: Arc<KeyRing>,
    pub session_key: Arc<Secret<Vec<u8>>>,
    pub backend: &'static str,
    pub providers: Arc<Catalogue>,
    /// Migrations the database lacks (always none once `serve` or `migrate`
    /// opened it; a read-only command reports them instead of applying them).
    pub pending_migrations: Vec<String>,
}

impl Context {
    /// The application these parts make (one per process).
    pub fn app(&self) -> crate::app::App {
        crate::app::App::new(
            self.settings.clone(),
            self.pool.clone(),
            self.keys.clone(),
            self.providers.clone(),
            crate::crypto::key_fingerprint(self.session_key.expose()),
            crate::platforms::all(),
        )
    }
}

/// Stores the refreshed token sets an earlier stop left in the spill folder
/// (it could not reach the database), before this instance serves: until
/// they are stored, a refresh of those connections would send a refresh
/// token the provider has retired.
pub fn store_spilled(ctx: &Context) -> Result<(), String> {
    let dir = ctx.settings.spill_dir();
    let mut conn = ctx
        .pool
        .get()
        .map_err(|e| format!("cannot reach the {} database: {e}", ctx.backend))?;
    let notify = ctx.settings.webhook.is_some();
    let stored = crate::refresh::keeper::store_spilled(&mut conn, &ctx.keys, &dir, notify)
        .map_err(|e| format!("{e}; the spill file is kept, start again once this is fixed"))?;
    if stored > 0 {
        log::info!(
            "stored {stored} refreshed token set(s) a stop had spilled to {}",
            dir.display()
        );
    }
    Ok(())
}

/// What a command does with the database, which decides what opening it may
/// do. Only `serve` and `migrate` migrate; the others find the schema current
/// or stop (`doctor` reports instead), and the read-only ones write nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// `serve`: migrates, needs the session key; records key checks once it
    /// listens (`record_key_checks`).
    Serve,
    /// `migrate`: migrates and records key checks.
    Migrate,
    /// Commands that change rows: records key checks for the ring's new ids.
    Write,
    /// Listing and diagnosis: writes nothing, not even a key check.
    Read,
}

impl Use {
    fn migrates(self) -> bool {
        matches!(self, Use::Serve | Use::Migrate)
    }
}

/// Opens the database, applies migrations, proves the key ring opens the
/// data (stopping with a message naming the key id when it does not) and
/// records the checks of its new key ids, as `serve` does.
pub fn prepare(settings: Settings) -> Result<Context, String> {
    let ctx = prepare_for(settings, Use::Serve)?;
    record_key_checks(&ctx)?;
    Ok(ctx)
}

/// Records a check value for each key id of the ring the database has none
/// for, once nothing can refuse the start any more: a refused start must not
/// tie a key id to a key nobody uses (see `keys::ensure_checks`).
pub fn record_key_checks(ctx: &Context) -> Result<(), String> {
    let mut conn = ctx
        .pool
        .get()
        .map_err(|e| format!("cannot reach the {} database: {e}", ctx.backend))?;
    crate::keys::ensure_checks(&mut conn, &ctx.keys)
        .map_err(|e| format!("key ring check failed: {e}"))
}

/// As [`prepare`], for a command that uses the database as `purpose` says.
pub fn prepare_for(settings: Settings, purpose: Use) -> Result<Context, String> {
    let ctx = open_for(settings, purpose)?;
    if let Some(first) = ctx.pending_migrations.first() {
        return Err(format!(
            "the {} database lacks {} migration(s) of this version of Tether (from {first}): run `tether migrate` first",
            ctx.backend,
            ctx.pending_migrations.len()
        ));
    }
    let mut conn = ctx
        .pool
        .get()
        .map_err(|e| format!("cannot reach the {} database: {e}", ctx.backend))?;
    // `serve` records its checks only once it listens (`record_key_checks`).
    let checked = match purpose {
        Use::Read | Use::Serve => crate::keys::verify(&mut conn, &ctx.keys),
        Use::Migrate | Use::Write => crate::keys::ensure_checks(&mut conn, &ctx.keys),
    };
    checked.map_err(|e| format!("key ring check failed: {e}"))?;
    drop(conn);
    Ok(ctx)
}

/// As [`prepare`], without checking the key ring against the data (for
/// commands that diagnose it), and without migrating: pending migrations are
/// in [`Context::pending_migrations`].
pub fn open(settings: Settings) -> Result<Context, String> {
    open_for(settings, Use::Read)
}

/// Whether the database is the development SQLite file in the data folder,
/// the only one development keys are generated for: keys generated for
/// another database (a production one named by TETHER_DATABASE_URL) would be
/// recorded in it for good, and live only in this folder.
pub fn is_own_development_database(settings: &Settings) -> bool {
    if settings.is_production() {
        return false;
    }
    let Ok(Backend::Sqlite(path)) = Backend::from_url(settings.database_url.expose()) else {
        return false;
    };
    let folder = path.parent().unwrap_or(Path::new(""));
    let folder = if folder.as_os_str().is_empty() {
        Path::new(".")
    } else {
        folder
    };
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    };
    same(folder, &settings.data_dir)
}

/// What a platform says must not serve in production (app webhooks
/// that cannot tell this app's from another's): refused there, a warning in development.
fn refuse_unsafe_platforms(settings: &Settings, providers: &Catalogue) -> Result<(), String> {
    let platforms = crate::platforms::all();
    for provider in providers.all().filter(|p| p.enabled()) {
        let Some(why) = platforms
            .of(provider)
            .and_then(|platform| platform.refused_in_production(provider))
        else {
            continue;
        };
        if settings.is_production() {
            return Err(why);
        }
        log::warn!("{why} (development starts anyway; production refuses to)");
    }
    Ok(())
}

/// Opens the database for `purpose`, migrating only for `serve` and `migrate`.
/// Development keys are generated into the data dir on first use, and only
/// for the development SQLite there.
pub fn open_for(settings: Settings, purpose: Use) -> Result<Context, String> {
    // First, so that a refused catalogue leaves no key file behind.
    let providers = Catalogue::load(&settings).map_err(|e| e.to_string())?;
    if purpose == Use::Serve {
        refuse_unsafe_platforms(&settings, &providers)?;
    }
    let dev_keys = is_own_development_database(&settings);
    let not_generated = |variable: &str| {
        if settings.is_production() {
            format!("{variable} is required")
        } else {
            format!(
                "{variable} is required: development keys are generated only for the development SQLite in the data folder ({}), and TETHER_DATABASE_URL names another database",
                settings.data_dir.display()
            )
        }
    };
    let keys = match &settings.encryption_keys {
        Some(ring) => ring.clone(),
        None if dev_keys => {
            let spec = load_or_create_key_file(&settings.data_dir, DEV_KEY_FILE, || {
                KeyRing::generate("dev1").1.expose().clone()
            })?;
            parse_dev_key_ring(&settings.data_dir, &spec)?
        }
        None => return Err(not_generated("TETHER_ENCRYPTION_KEYS")),
    };
    let session_key = match &settings.session_key {
        Some(k) => k.clone(),
        None if dev_keys => {
            let b64 = load_or_create_key_file(&settings.data_dir, "session.key", || {
                B64.encode(crate::crypto::random_bytes(64))
            })?;
            Secret::new(
                B64.decode(b64.expose().trim())
                    .ok()
                    .filter(|k| k.len() >= 64)
                    .ok_or_else(|| {
                        format!(
                            "{} is not 64 bytes of base64",
                            settings.data_dir.join("session.key").display()
                        )
                    })?,
            )
        }
        None if purpose == Use::Serve => return Err(not_generated("TETHER_SESSION_KEY")),
        // Commands other than `serve` sign no session.
        None => Secret::new(crate::crypto::random_bytes(64)),
    };
    let backend = Backend::from_url(settings.database_url.expose())?.name();
    let pool = db::connect(settings.database_url.expose(), settings.db_pool_size)?;
    let pending_migrations = {
        let mut conn = pool
            .get()
            .map_err(|e| format!("cannot reach the {backend} database: {e}"))?;
        if purpose.migrates() {
            let applied = db::migrate(&mut conn).map_err(|e| format!("migrations failed: {e}"))?;
            for version in applied {
                log::info!("applied migration {version}");
            }
            Vec::new()
        } else {
            db::pending_migrations(&mut conn)
                .map_err(|e| format!("cannot read the {backend} database's migrations: {e}"))?
        }
    };
    Ok(Context {
        settings: Arc::new(settings),
        pool,
        keys: Arc::new(keys),
        session_key: Arc::new(session_key),
        backend,
        providers: Arc::new(providers),
        pending_migrations,
    })
}

/// The development key ring's file in the data dir.
pub const DEV_KEY_FILE: &str = "encryption.key";

/// The key ring the settings give, or in development the one kept in the
/// data dir; `None` when there is neither (nothing is generated).
pub fn existing_key_ring(settings: &Settings) -> Result<Option<KeyRing>, String> {
    if let Some(ring) = &settings.encryption_keys {
        return Ok(Some(ring.clone()));
    }
    let path = settings.data_dir.join(DEV_KEY_FILE);
    if settings.is_production() || !path.exists() {
        return Ok(None);
    }
    let spec = std::fs::read_to_string(&path)
        .map(Secret::new)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse_dev_key_ring(&settings.data_dir, &spec).map(Some)
}

fn parse_dev_key_ring(dir: &Path, spec: &Secret<String>) -> Result<KeyRing, String> {
    KeyRing::parse(spec.expose().trim())
        .map_err(|e| format!("{}: {e}", dir.join(DEV_KEY_FILE).display()))
}

/// Reads a key file from the data dir, or creates it (mode 0600) with `make`.
/// The key is written whole to a private temporary file and then linked into
/// place: the link is atomic and fails if another process got there first,
/// so two processes starting at once agree on one key and never read half of it.
fn load_or_create_key_file(
    dir: &Path,
    name: &str,
    make: impl FnOnce() -> String,
) -> Result<Secret<String>, String> {
    let path = dir.join(name);
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let read = |path: &Path| {
        std::fs::read_to_string(path)
            .map(Secret::new)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    if path.exists() {
        return read(&path);
    }
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let value = make();
    options
        .open(&tmp)
        .and_then(|mut file| {
            file.write_all(value.as_bytes())?;
            file.sync_all()
        })
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    let linked = std::fs::hard_link(&tmp, &path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            log::info!("generated development key {}", path.display());
            Ok(Secret::new(value))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read(&path),
        Err(e) => Err(format!("cannot create {}: {e}", path.display())),
    }
}

/// The first admin, created on a fresh development database.
pub struct FirstAdmin {
    pub tenant: String,
    pub email: String,
    pub password: Secret<String>,
}

pub const FIRST_TENANT: &str = "default";
pub const FIRST_ADMIN: &str = "admin@tether.local";

/// On a database with no tenant yet, in development, creates the `default`
/// tenant and an admin with a random password. `None` when there was nothing to do.
pub fn bootstrap(ctx: &Context) -> Result<Option<FirstAdmin>, String> {
    if ctx.settings.is_production() {
        return Ok(None);
    }
    let mut conn = ctx.pool.get().map_err(|e| e.to_string())?;
    if Tenant::count(&mut conn).map_err(|e| e.to_string())? > 0 {
        return Ok(None);
    }
    // Another instance may win this race; its admin is then the first one.
    let Ok(tenant) = Tenant::create(&mut conn, FIRST_TENANT, "Default tenant") else {
        return Ok(None);
    };
    let password = random_token(15);
    let hash = crate::auth::hash_password(&password).map_err(|e| e.to_string())?;
    User::create(&mut conn, &tenant.id, FIRST_ADMIN, Some(&hash)).map_err(|e| e.to_string())?;
    Ok(Some(FirstAdmin {
        tenant: tenant.external_id.to_string(),
        email: FIRST_ADMIN.into(),
        password: Secret::new(password),
    }))
}

/// `Strict-Transport-Security`, sent on every response in production.
pub const HSTS: &str = "max-age=63072000; includeSubDomains";

/// The HTTP server, bound and ready to run.
pub struct Application {
    port: u16,
    server: Server,
    app: Arc<crate::app::App>,
    workers: Workers,
}

impl Application {
    /// Binds `settings.bind` (port 0 picks a free port).
    pub fn build(ctx: Context) -> std::io::Result<Application> {
        let listener = TcpListener::bind(ctx.settings.bind)?;
        Application::build_on(ctx, listener)
    }

    pub fn build_on(ctx: Context, listener: TcpListener) -> std::io::Result<Application> {
        let port = listener.local_addr()?.port();
        let session_key = actix_web::cookie::Key::from(ctx.session_key.expose());
        let secure = ctx.settings.is_production();
        // `__Host-`: the browser keeps it only if Secure, for this host, path `/`.
        let cookie_name = if secure {
            "__Host-tether_session"
        } else {
            "tether_session"
        };
        let session_ttl = CookieDuration::seconds(
            i64::try_from(ctx.settings.session.max_age.as_secs()).unwrap_or(i64::MAX),
        );
        let app = Arc::new(ctx.app());
        let state = actix_web::web::Data::from(app.clone());
        let demo_store = crate::demo::new_store(&state.settings);
        let demo_config = crate::demo::DemoConfig::new(&state.settings, &state.providers);
        let server = HttpServer::new(move || {
            // Sessions live in an encrypted cookie: any instance can read them.
            let sessions = SessionMiddleware::builder(CookieSessionStore::default(), session_key.clone())
                .cookie_name(cookie_name.into())
                .cookie_secure(secure)
                .cookie_http_only(true)
                .cookie_same_site(SameSite::Lax)
                .cookie_content_security(CookieContentSecurity::Private)
                .session_lifecycle(PersistentSession::default().session_ttl(session_ttl))
                .build();
            // Production is served over https only: browsers are told to
            // never try plain http again (two years, subdomains too).
            let hsts = middleware::Condition::new(
                secure,
                middleware::DefaultHeaders::new().add(("Strict-Transport-Security", HSTS)),
            );
            App::new()
                .wrap(sessions)
                .wrap(hsts)
                .wrap(
                    middleware::DefaultHeaders::new()
                        .add(("X-Content-Type-Options", "nosniff"))
                        .add(("X-Frame-Options", "DENY"))
                        .add(("Referrer-Policy", "same-origin"))
                        .add((
                            "Content-Security-Policy",
                            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                             object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
                        )),
                )
                .wrap(middleware::from_fn(web::access_log::access_log))
                .app_data(state.clone())
                .app_data(demo_store.clone())
                .app_data(demo_config.clone())
                .configure(web::routes)
        })
        // Database work runs on the blocking pool; a few threads per worker
        // keep up with the pool of connections, and many more only contend.
        .worker_max_blocking_threads(4)
        // Signals are ours (`run_until_signalled`): a stop must first end
        // refresh claims, and wait for refreshes in flight after the server.
        .disable_signals()
        .listen(listener)?
        .run();
        // Beside the server, on the same runtime; supervised by `run_until_*`.
        let workers = Workers::start(&app);
        Ok(Application {
            port,
            server,
            app,
            workers,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The application its handlers share (tests drive the scheduler through it).
    pub fn state(&self) -> Arc<crate::app::App> {
        self.app.clone()
    }

    /// Serves until the server stops, or fails as soon as a worker stops.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let Application {
            server,
            mut workers,
            ..
        } = self;
        tokio::select! {
            served = server => served,
            stopped = workers.first_to_stop() => Err(worker_failure(stopped)),
        }
    }

    /// Serves until SIGTERM or SIGINT, then stops gracefully: no new refresh
    /// claims, requests in flight answered, refreshes in flight finished
    /// (bounded by the provider timeout), this instance's leases released.
    /// A rolling deploy loses nothing.
    pub async fn run_until_signalled(self) -> std::io::Result<()> {
        let Application {
            server,
            app,
            mut workers,
            ..
        } = self;
        let handle = server.handle();
        let mut server = std::pin::pin!(server);
        tokio::select! {
            stopped = &mut server => return stopped,
            signal = stop_signal() => log::info!("{signal}: stopping gracefully"),
            stopped = workers.first_to_stop() => {
                // Stop as for a signal (requests in hand answered, leases
                // released), then exit with the error.
                app.stopping.store(true, std::sync::atomic::Ordering::SeqCst);
                let (_, served) = tokio::join!(handle.stop(true), server);
                served?;
                flush_usage(&app).await;
                crate::refresh::keeper::drain(&app).await;
                return Err(worker_failure(stopped));
            }
        }
        // The scheduler claims nothing more; requests in hand are answered
        // (refreshing if they must), then the refreshes still at a provider.
        app.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        // The server's own future carries out the stop: poll both.
        let (_, served) = tokio::join!(handle.stop(true), server);
        served?;
        flush_usage(&app).await;
        crate::refresh::keeper::drain(&app).await;
        log::info!("stopped");
        Ok(())
    }
}

/// Writes the uses counted since the last flush, once no request can add
/// any: only a crash loses counts.
async fn flush_usage(app: &crate::app::App) {
    if let Err(e) = crate::workers::flush_usage(app).await {
        log::warn!("shutdown: usage counts lost: {}", e.message());
    }
}

/// A worker ended while the process was not stopping: logged, and the
/// process exits with an error rather than running on half alive.
fn worker_failure(stopped: crate::workers::Stopped) -> std::io::Error {
    log::error!("{stopped}: stopping the process");
    std::io::Error::other(stopped.to_string())
}

/// Waits for SIGTERM (what orchestrators send) or SIGINT (Ctrl-C).
async fn stop_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = tokio::signal::ctrl_c() => "SIGINT",
            },
            Err(e) => {
                log::warn!("cannot listen for SIGTERM ({e}); only Ctrl-C stops gracefully");
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}
