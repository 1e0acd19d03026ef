//! The database: one connection enum over SQLite and PostgreSQL, an r2d2 pool
//! that picks the backend from the URL scheme, embedded migrations, and the
//! only place where SQL differs between the two backends.

pub mod health;
pub mod listen;
pub mod models;
pub mod schema;

use crate::ids::{ProviderKey, TenantId};
use chrono::{NaiveDateTime, SubsecRound, Utc};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::r2d2::R2D2Connection;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use std::path::PathBuf;
use std::time::Duration;

/// The schema's migrations, one set per backend with the same version names
/// (public for the upgrade tests, which apply them one at a time).
pub const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
pub const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// Held while migrating so that several instances starting together on one
/// PostgreSQL database do not race (the value is arbitrary but fixed).
const MIGRATION_LOCK: i64 = 0x7465_7468_6572; // "tether"

/// A connection to either backend. Queries written against it compile for both.
#[derive(diesel::MultiConnection)]
pub enum DbConn {
    Postgres(PgConnection),
    Sqlite(SqliteConnection),
}

pub type Pool = r2d2::Pool<Manager>;
pub type PooledConn = r2d2::PooledConnection<Manager>;

/// Which backend a database URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    Sqlite(PathBuf),
    Postgres(String),
}

impl Backend {
    /// `sqlite://path` (or `sqlite:path`) and `postgres://` / `postgresql://`.
    pub fn from_url(url: &str) -> Result<Backend, String> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Backend::Postgres(url.to_string()));
        }
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .ok_or("must start with sqlite:// or postgres://")?;
        if path.is_empty() {
            return Err("sqlite:// needs a file path, e.g. sqlite://./data/tether.db".into());
        }
        Ok(Backend::Sqlite(PathBuf::from(path)))
    }

    pub fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Which database, for people: `sqlite ./data/tether.db` or
    /// `postgres host:port/name`; never a user, password or query (which can
    /// hold a password).
    pub fn describe(&self) -> String {
        match self {
            Backend::Sqlite(path) => format!("sqlite {}", path.display()),
            Backend::Postgres(url) => {
                let Ok(url) = url::Url::parse(url) else {
                    return "postgres (an unparsable URL)".into();
                };
                let host = url
                    .host_str()
                    .filter(|h| !h.is_empty())
                    .unwrap_or("(socket)");
                let port = url.port().unwrap_or(5432);
                format!("postgres {host}:{port}{}", url.path())
            }
        }
    }
}

/// The r2d2 manager: opens the backend the URL names, with SQLite tuned for a
/// server (WAL, busy timeout, foreign keys).
#[derive(Debug)]
pub struct Manager {
    backend: Backend,
}

impl r2d2::ManageConnection for Manager {
    type Connection = DbConn;
    type Error = diesel::r2d2::Error;

    fn connect(&self) -> Result<DbConn, Self::Error> {
        match &self.backend {
            Backend::Postgres(url) => PgConnection::establish(url)
                .map(DbConn::Postgres)
                .map_err(diesel::r2d2::Error::ConnectionError),
            Backend::Sqlite(path) => open_sqlite(path),
        }
    }

    fn is_valid(&self, conn: &mut DbConn) -> Result<(), Self::Error> {
        conn.ping().map_err(diesel::r2d2::Error::QueryError)
    }

    fn has_broken(&self, conn: &mut DbConn) -> bool {
        // A PostgreSQL connection found dead was swapped for a placeholder
        // (see `poison`): diesel cannot tell a dead libpq session by itself.
        conn.is_broken()
            || matches!(
                (&self.backend, conn),
                (Backend::Postgres(_), DbConn::Sqlite(_))
            )
    }
}

/// Opens a SQLite connection tuned for a server (WAL, busy timeout, foreign keys).
fn open_sqlite(path: &std::path::Path) -> Result<DbConn, diesel::r2d2::Error> {
    let path = path.to_str().ok_or_else(|| {
        diesel::r2d2::Error::ConnectionError(diesel::ConnectionError::InvalidConnectionUrl(
            "the SQLite path is not valid UTF-8".into(),
        ))
    })?;
    let mut conn =
        SqliteConnection::establish(path).map_err(diesel::r2d2::Error::ConnectionError)?;
    // busy_timeout first: switching a new file to WAL takes a lock
    // that other pool connections opening at the same moment wait on.
    const SETUP: &str = "PRAGMA busy_timeout = 10000; PRAGMA journal_mode = WAL; \
         PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;";
    // Two processes opening a new file at once both switch it to WAL; the
    // loser's switch can fail at once with "database is locked" (SQLite
    // does not run the busy handler where waiting could deadlock), so it
    // tries again, within the busy timeout's 10 s.
    let started = std::time::Instant::now();
    loop {
        match conn.batch_execute(SETUP) {
            Ok(()) => return Ok(DbConn::Sqlite(conn)),
            Err(diesel::result::Error::DatabaseError(_, info))
                if info.message().contains("locked")
                    && started.elapsed() < Duration::from_secs(10) =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(diesel::r2d2::Error::QueryError(e)),
        }
    }
}

/// Replaces a pooled SQLite connection that failed a write with a fresh one
/// on the same file: after an I/O error SQLite may keep the connection in
/// its error state, failing every later write even once the file can be
/// written again. A no-op for PostgreSQL (see [`poison`]).
pub fn reopen_sqlite(conn: &mut DbConn, database_url: &str) {
    if let (DbConn::Sqlite(_), Ok(Backend::Sqlite(path))) =
        (&*conn, Backend::from_url(database_url))
    {
        if let Ok(fresh) = open_sqlite(&path) {
            *conn = fresh;
        }
    }
}

/// Marks a pooled connection dead so the pool drops it when it comes back
/// instead of handing it out again: diesel's `is_broken` does not see a
/// PostgreSQL session the server or the network closed, and it would fail
/// every request it is lent to until r2d2's idle timeout.
pub fn poison(conn: &mut DbConn) {
    if matches!(conn, DbConn::Postgres(_)) {
        if let Ok(placeholder) = SqliteConnection::establish(":memory:") {
            *conn = DbConn::Sqlite(placeholder);
        }
    }
}

/// The outage epoch a pooled connection was last known good in.
#[derive(Clone, Copy)]
struct CheckedIn(u64);

/// How long a checkout waits for a connection while the database is away.
const AWAY_PATIENCE: Duration = Duration::from_millis(300);

/// A connection from the pool, fit for use, within `patience`. While the
/// database is away this fails within a fraction of a second instead; after
/// an outage, each connection opened before it is pinged once before it is
/// lent, and dropped if it died meanwhile.
pub fn checkout(
    pool: &Pool,
    health: &health::Health,
    patience: Duration,
) -> Result<PooledConn, r2d2::Error> {
    let patience = if health.is_up() {
        patience
    } else {
        patience.min(AWAY_PATIENCE)
    };
    // Tried at most as many times as the pool can hold dead connections.
    for _ in 0..=pool.max_size() {
        let mut conn = pool.get_timeout(patience)?;
        if !matches!(*conn, DbConn::Postgres(_)) {
            return Ok(conn);
        }
        let epoch = health.epoch();
        let checked = r2d2::PooledConnection::extensions(&conn)
            .get::<CheckedIn>()
            .copied();
        if checked.is_some_and(|CheckedIn(e)| e == epoch) {
            return Ok(conn);
        }
        // Opened before the last outage (or just now: one ping in its life).
        if conn.ping().is_err() {
            poison(&mut conn);
            continue;
        }
        r2d2::PooledConnection::extensions_mut(&mut conn).insert(CheckedIn(epoch));
        return Ok(conn);
    }
    pool.get_timeout(patience)
}

/// Opens a pool on `url`. For SQLite, the file's folder is created first.
pub fn connect(url: &str, size: u32) -> Result<Pool, String> {
    // OpenSSL (libpq's TLS) initialised before libpq does it, without the
    // exit handler that frees it under threads still connecting: a process
    // exiting while the pool's threads shake hands would crash.
    openssl_sys::init();
    let backend = Backend::from_url(url)?;
    if let Backend::Sqlite(path) = &backend {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
    }
    let name = backend.name();
    let backend = match backend {
        Backend::Postgres(url) => Backend::Postgres(with_connect_timeout(&url)),
        sqlite => sqlite,
    };
    let manager = Manager { backend };
    // One direct attempt first: r2d2 would retry a refused connection until
    // its timeout, where the operator wants the reason at once.
    r2d2::ManageConnection::connect(&manager).map_err(|e| {
        format!(
            "cannot connect to the {name} database: {}",
            redact_url_error(&e.to_string())
        )
    })?;
    r2d2::Pool::builder()
        .max_size(size)
        .min_idle(Some(1))
        // No ping on every checkout (it doubles the queries of a token
        // request); a broken connection is dropped through `has_broken`.
        .test_on_check_out(false)
        // Also bounds r2d2's back-off between attempts to open a connection
        // (half of it): after an outage the pool is back within 2 s.
        .connection_timeout(Duration::from_secs(4))
        // r2d2 would log every failed connection attempt, several lines
        // each, for as long as an outage lasts; `health` says it once.
        .error_handler(Box::new(QuietErrors))
        .build(manager)
        .map_err(|e| {
            format!(
                "cannot connect to the {name} database: {}",
                redact_url_error(&e.to_string())
            )
        })
}

/// Failed connection attempts of the pool, at debug level on one line.
#[derive(Debug)]
struct QuietErrors;

impl r2d2::HandleError<diesel::r2d2::Error> for QuietErrors {
    fn handle_error(&self, error: diesel::r2d2::Error) {
        log::debug!(
            "database connection attempt failed: {}",
            redact_url_error(&error.to_string())
        );
    }
}

/// libpq waits for an unanswered connect as long as the operating system
/// does (minutes); a database that is away must be noticed in seconds.
pub fn with_connect_timeout(url: &str) -> String {
    if url.contains("connect_timeout=") {
        return url.to_string();
    }
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}connect_timeout={PG_CONNECT_TIMEOUT_SECS}")
}

/// Seconds libpq waits for a PostgreSQL connection to open, unless the
/// database URL says otherwise.
pub const PG_CONNECT_TIMEOUT_SECS: u32 = 3;

/// libpq errors may quote the connection string; keep a password out of them.
fn redact_url_error(message: &str) -> String {
    message
        .split_whitespace()
        .map(|w| {
            if w.contains("://") && w.contains('@') {
                "<database url>"
            } else {
                w
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The migrations this binary has that the database lacks, by name, without
/// changing anything: diesel's harness creates its bookkeeping table when it
/// is missing, so it is asked inside a transaction that is always rolled back
/// (both backends roll back DDL).
pub fn pending_migrations(conn: &mut DbConn) -> Result<Vec<String>, String> {
    fn names<C, DB>(c: &mut C, source: EmbeddedMigrations) -> Result<Vec<String>, String>
    where
        DB: diesel::backend::Backend,
        C: Connection<Backend = DB> + MigrationHarness<DB>,
        EmbeddedMigrations: diesel::migration::MigrationSource<DB>,
    {
        let mut found = Err("the migration check did not run".to_string());
        let _ = c.transaction::<(), diesel::result::Error, _>(|c| {
            found = c
                .pending_migrations(source)
                .map(|v| v.iter().map(|m| m.name().to_string()).collect())
                .map_err(|e| e.to_string());
            Err(diesel::result::Error::RollbackTransaction)
        });
        found
    }
    match conn {
        DbConn::Postgres(c) => names(c, POSTGRES_MIGRATIONS),
        DbConn::Sqlite(c) => names(c, SQLITE_MIGRATIONS),
    }
}

/// Applies pending migrations; returns the versions applied. On PostgreSQL an
/// advisory lock serialises instances that start at the same moment.
pub fn migrate(conn: &mut DbConn) -> Result<Vec<String>, String> {
    let applied = match conn {
        DbConn::Postgres(c) => {
            diesel::sql_query(format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))
                .execute(c)
                .map_err(|e| e.to_string())?;
            let result = c
                .run_pending_migrations(POSTGRES_MIGRATIONS)
                .map(|v| v.iter().map(ToString::to_string).collect::<Vec<_>>())
                .map_err(|e| e.to_string());
            diesel::sql_query(format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})"))
                .execute(c)
                .map_err(|e| e.to_string())?;
            result?
        }
        // An IMMEDIATE transaction takes the write lock first, so a second
        // process waits (busy_timeout) and then finds nothing pending; the
        // harness's own transactions nest inside as savepoints.
        DbConn::Sqlite(c) => c
            .immediate_transaction(|c| {
                c.run_pending_migrations(SQLITE_MIGRATIONS)
                    .map(|v| v.iter().map(ToString::to_string).collect::<Vec<_>>())
                    .map_err(diesel::result::Error::QueryBuilderError)
            })
            .map_err(|e| e.to_string())?,
    };
    Ok(applied)
}

/// Inserts a key check unless one exists for that key id. Upserts are the one
/// piece of SQL whose spelling differs between the backends.
pub fn insert_key_check_if_absent(
    conn: &mut DbConn,
    row: &models::key_check::KeyCheck,
) -> QueryResult<usize> {
    use schema::key_checks::dsl::*;
    match conn {
        DbConn::Postgres(c) => diesel::insert_into(key_checks)
            .values(row)
            .on_conflict(key_id)
            .do_nothing()
            .execute(c),
        DbConn::Sqlite(c) => diesel::insert_or_ignore_into(key_checks)
            .values(row)
            .execute(c),
    }
}

/// Makes the caller's transaction the only one, until it ends, that holds
/// the lock named `name`; call it first in the transaction. PostgreSQL: an
/// advisory transaction lock on a hash of the name, so that only
/// transactions about the same thing wait for each other. SQLite: the
/// database's write lock (a write that changes nothing takes it), which
/// serialises every writer anyway; taken first, a later write cannot fail
/// with `SQLITE_BUSY_SNAPSHOT` because another connection wrote meanwhile.
pub fn lock_for_write(conn: &mut DbConn, name: &str) -> QueryResult<()> {
    match conn {
        DbConn::Postgres(c) => {
            use sha2::Digest;
            let digest = sha2::Sha256::digest(name.as_bytes());
            let mut key = [0u8; 8];
            key.copy_from_slice(&digest[..8]);
            diesel::sql_query("SELECT pg_advisory_xact_lock($1)")
                .bind::<diesel::sql_types::BigInt, _>(i64::from_be_bytes(key))
                .execute(c)
                .map(|_| ())
        }
        DbConn::Sqlite(c) => diesel::sql_query("UPDATE instances SET id = id WHERE 0")
            .execute(c)
            .map(|_| ()),
    }
}

/// Inserts an integration-settings row with the defaults (enabled, no
/// settings) unless the tenant has one for the provider; returns whether it
/// inserted. A write either way, so that on SQLite the caller's transaction
/// holds the write lock from here on.
pub fn insert_integration_setting_if_absent(
    conn: &mut DbConn,
    tenant: &TenantId,
    provider_key: &ProviderKey,
    at: NaiveDateTime,
) -> QueryResult<bool> {
    use schema::integration_settings::dsl::*;
    let row = (
        tenant_id.eq(tenant),
        provider.eq(provider_key),
        enabled.eq(true),
        settings.eq("{}"),
        updated_at.eq(at),
    );
    let inserted = match conn {
        DbConn::Postgres(c) => diesel::insert_into(integration_settings)
            .values(row)
            .on_conflict((tenant_id, provider))
            .do_nothing()
            .execute(c)?,
        DbConn::Sqlite(c) => diesel::insert_or_ignore_into(integration_settings)
            .values(row)
            .execute(c)?,
    };
    Ok(inserted == 1)
}

/// Now, in UTC, at the microsecond precision both backends store.
pub fn now() -> NaiveDateTime {
    Utc::now().naive_utc().trunc_subsecs(6)
}

/// A fresh random id for a row.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}
