//! Test harness: a throwaway database per test (a temp SQLite file, or a fresh
//! PostgreSQL database when TETHER_TEST_POSTGRES_URL is set), the real server
//! on port 0 as a [`TestApp`], and the real binary for CLI tests.
//!
//! - this file: backends and `backend_tests!`, the test database, the app and
//!   what a browser or a service does with it (pages, forms, the token API);
//! - `api.rs`: the JSON API as a service calls it (a bearer key, no cookies),
//!   its answers as (status, JSON) and its errors as (status, code);
//! - `db.rs`: the rows a test reads or seeds (a tenant, its acme connection,
//!   a due connection, an API key, a grant stored through Tether's model);
//! - `fake_provider.rs`: the `acme` provider faked at the HTTP level, the
//!   calls it received, and apps (or second instances) configured against it;
//! - `rotating.rs`: a token endpoint that rotates refresh tokens and keeps a
//!   ledger of what it was sent;
//! - `held.rs`: a token endpoint in front of the fake's that holds each
//!   refresh's answer until the test lets it go;
//! - `flow.rs`: an admin signed in, and the connect flow driven through it;
//! - `browser.rs`: another browser (or a new one's client), and the HTML
//!   error page it is shown;
//! - `webhooks.rs`: the outbox and a receiver's signed requests;
//! - `process.rs`: the `tether` binary, `tether serve` as a process, and a
//!   request to such a process by URL;
//! - `fault_proxy.rs`: a TCP proxy that cuts the database for a while;
//! - `tls.rs`: a test CA, and a TLS proxy with its certificate in front of a fake.

use diesel::prelude::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};
use tether::config::Settings;
use tether::startup::{self, Application, Context};

mod api;
mod browser;
mod db;
mod fake_provider;
mod fault_proxy;
mod flow;
mod held;
mod process;
mod rotating;
mod tls;
mod webhooks;

pub use api::*;
pub use browser::*;
pub use db::*;
pub use fake_provider::*;
pub use fault_proxy::*;
pub use flow::*;
pub use held::*;
pub use process::*;
pub use rotating::*;
pub use tls::*;
pub use webhooks::*;

/// A fixed test key ring, so tests can build rings that include or lack it.
pub const KEY_K1: &str = "k1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
/// The session key of test servers: a database other than the data folder's
/// development SQLite gets no generated keys (see `startup::open_for`).
pub const SESSION_KEY: &str =
    "BQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQ==";
pub const KEY_K2: &str = "k2:AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";
/// k1's id with other key material.
pub const KEY_K1_OTHER: &str = "k1:AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM=";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Generates one test per backend from `async fn name(backend: Backend)`:
/// `sqlite::name` and `postgres::name`. The PostgreSQL variant says it is
/// skipped when no server is configured. Attributes written before a name
/// (`#[ignore = "..."]`) go on both.
#[macro_export]
macro_rules! backend_tests {
    ($($(#[$meta:meta])* $name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[actix_web::test]
                $(#[$meta])*
                async fn $name() {
                    super::$name($crate::helpers::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[actix_web::test]
                $(#[$meta])*
                async fn $name() {
                    if $crate::helpers::skipped_without_postgres() {
                        return;
                    }
                    super::$name($crate::helpers::Backend::Postgres).await
                }
            )*
        }
    };
}

pub fn postgres_url() -> Option<String> {
    std::env::var("TETHER_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
}

/// Whether a test that needs PostgreSQL is skipped (and says so): true when
/// no server is configured.
pub fn skipped_without_postgres() -> bool {
    if postgres_url().is_none() {
        eprintln!("skipped: TETHER_TEST_POSTGRES_URL is not set");
        return true;
    }
    false
}

/// A database that exists for one test: a file in a temp dir, or a PostgreSQL
/// database dropped when the test ends.
pub struct TestDb {
    pub url: String,
    pub dir: tempfile::TempDir,
    pg_name: Option<String>,
}

impl TestDb {
    pub fn new(backend: Backend) -> TestDb {
        // As `tether::db::connect` does, before this test's first libpq
        // connection: no OpenSSL exit handler to crash the test binary's exit.
        openssl_sys::init();
        let dir = tempfile::tempdir().expect("temp dir");
        match backend {
            Backend::Sqlite => TestDb {
                url: format!("sqlite://{}", dir.path().join("tether.db").display()),
                dir,
                pg_name: None,
            },
            Backend::Postgres => {
                let admin = postgres_url().expect("TETHER_TEST_POSTGRES_URL");
                let name = format!("tether_test_{}", uuid::Uuid::new_v4().simple());
                let mut conn =
                    PgConnection::establish(&admin).expect("connect to TETHER_TEST_POSTGRES_URL");
                diesel::sql_query(format!("CREATE DATABASE {name}"))
                    .execute(&mut conn)
                    .expect("create test database");
                let mut url = url::Url::parse(&admin).expect("TETHER_TEST_POSTGRES_URL is a URL");
                url.set_path(&name);
                TestDb {
                    url: url.to_string(),
                    dir,
                    pg_name: Some(name),
                }
            }
        }
    }

    /// A database with Tether's schema, as `tether migrate` leaves it (only
    /// `serve` and `migrate` migrate; other commands need it done).
    pub fn migrated(backend: Backend) -> TestDb {
        let db = TestDb::new(backend);
        let pool = tether::db::connect(&db.url, 1).expect("connect to the test database");
        tether::db::migrate(&mut pool.get().expect("a connection")).expect("migrate");
        db
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs raw SQL against the test database, outside Tether.
    pub fn raw_pg(&self) -> PgConnection {
        PgConnection::establish(&self.url).expect("connect to the test database")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let (Some(name), Some(admin)) = (&self.pg_name, postgres_url()) {
            if let Ok(mut conn) = PgConnection::establish(&admin) {
                let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn);
            }
        }
    }
}

/// Settings for a test: port 0, the test database, the k1 key ring, and `extra`.
pub fn settings_for(db: &TestDb, extra: &[(&str, &str)]) -> Settings {
    let mut vars: BTreeMap<String, String> = [
        ("TETHER_BIND", "127.0.0.1:0".to_string()),
        ("TETHER_DATA_DIR", db.data_dir().display().to_string()),
        ("TETHER_DATABASE_URL", db.url.clone()),
        ("TETHER_ENCRYPTION_KEYS", KEY_K1.to_string()),
        ("TETHER_SESSION_KEY", SESSION_KEY.to_string()),
        ("TETHER_DB_POOL_SIZE", "4".to_string()),
        ("TETHER_REFRESH_ENABLED", "false".to_string()),
        // Tests that change rows behind Tether's back must not see a cached
        // token set; tests/api/token_cache.rs turns it on.
        ("TETHER_TOKEN_CACHE_MS", "0".to_string()),
        // Tests force refreshes back to back to see each call;
        // internal_api/refresh_and_disconnect.rs turns the cooldown on.
        ("TETHER_FORCED_REFRESH_COOLDOWN_SECS", "0".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for (k, v) in extra {
        vars.insert(k.to_string(), v.to_string());
    }
    Settings::from_vars(&vars).expect("valid test settings")
}

/// A running Tether server on a throwaway database.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub ctx: Context,
    /// The running server's shared state (scheduler, breakers, metrics).
    pub state: std::sync::Arc<tether::app::App>,
    pub db: TestDb,
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(TestDb::new(backend), &[]).await
}

/// A running app on `db`. Its listener is bound first, so that
/// TETHER_PUBLIC_URL (the base of redirect URIs) is its real address, unless
/// `extra` sets one.
pub async fn spawn_app_with(db: TestDb, extra: &[(&str, &str)]) -> TestApp {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = format!(
        "http://127.0.0.1:{}",
        listener.local_addr().expect("address").port()
    );
    let mut vars = vec![("TETHER_PUBLIC_URL", address.as_str())];
    vars.extend_from_slice(extra);
    let ctx = startup::prepare(settings_for(&db, &vars)).expect("prepare");
    let app = Application::build_on(ctx.clone(), listener).expect("serve");
    let state = app.state();
    actix_web::rt::spawn(app.run_until_stopped());
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .build()
        .expect("client");
    TestApp {
        address,
        client,
        ctx,
        state,
        db,
    }
}

impl TestApp {
    pub fn conn(&self) -> tether::db::PooledConn {
        self.ctx.pool.get().expect("pooled connection")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("request")
    }
}

/// The password of admins made by [`TestApp::create_admin`].
pub const PASSWORD: &str = "correct horse battery";

impl TestApp {
    /// A tenant with one admin (password [`PASSWORD`]).
    pub fn create_admin(&self, tenant: &str, email: &str) -> tether::db::models::tenant::Tenant {
        let t = self.ensure_tenant(tenant);
        let hash = tether::auth::hash_password(PASSWORD).unwrap();
        tether::db::models::user::User::create(&mut self.conn(), &t.id, email, Some(&hash))
            .unwrap();
        t
    }

    /// The HTML of the page at `path`, as the signed-in browser gets it.
    pub async fn page(&self, path: &str) -> String {
        self.get(path).await.text().await.unwrap()
    }

    /// The CSRF token of the form on `path`.
    pub async fn csrf(&self, path: &str) -> String {
        let html = self.page(path).await;
        csrf_in(&html).unwrap_or_else(|| panic!("no csrf field on {path}: {html}"))
    }

    /// Signs in through the login form; returns the response (303 on success).
    pub async fn login(&self, email: &str, password: &str) -> reqwest::Response {
        let csrf = self.csrf("/login").await;
        self.client
            .post(format!("{}/login", self.address))
            .form(&[("email", email), ("password", password), ("csrf", &csrf)])
            .send()
            .await
            .unwrap()
    }

    /// The dashboard's status code for a request carrying only `cookie`
    /// (as a thief replaying a copied cookie would send it).
    pub async fn dashboard_with(&self, cookie: &str) -> u16 {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
            .get(format!("{}/settings/integrations", self.address))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// Runs the `tether` binary against this app's database.
    pub fn run_cli(&self, args: &[&str]) -> std::process::Output {
        run(tether(&self.db, KEY_K1).args(args), "")
    }

    /// Connect (or Reconnect) `provider` as the card's form does: a POST with
    /// this browser's CSRF token and `fields` (`return_to`, `popup`).
    pub async fn authorize(&self, provider: &str, fields: &[(&str, &str)]) -> reqwest::Response {
        let csrf = self.csrf("/login").await;
        let mut form = vec![("csrf", csrf.as_str())];
        form.extend_from_slice(fields);
        self.post_form(&format!("/oauth/{provider}/authorize"), &form)
            .await
    }

    /// POSTs a form body exactly as given (for bytes a form encoder would escape).
    pub async fn post_raw_form(&self, path: &str, body: String) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.address))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn post_form(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.address))
            .form(form)
            .send()
            .await
            .unwrap()
    }
}

/// The value of the first `name="csrf"` hidden field in a page.
pub fn csrf_in(html: &str) -> Option<String> {
    let at = html.find("name=\"csrf\" value=\"")? + "name=\"csrf\" value=\"".len();
    Some(html[at..].split('"').next()?.to_string())
}

/// A query parameter of a URL.
pub fn query_param(url: &str, name: &str) -> Option<String> {
    url::Url::parse(url)
        .ok()?
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// A token request as a service sends it: `GET .../connections/acme/token`
/// for `tenant` with `key`, to the instance at `address`.
pub async fn token_at(
    client: &reqwest::Client,
    address: &str,
    key: &str,
    tenant: &str,
) -> reqwest::Response {
    client
        .get(format!(
            "{address}/api/v1/tenants/{tenant}/connections/acme/token"
        ))
        .bearer_auth(key)
        .send()
        .await
        .expect("token request")
}

impl TestApp {
    /// `GET /api/v1/tenants/{tenant}/connections/acme/token` with `key`.
    pub async fn token(&self, key: &str, tenant: &str) -> reqwest::Response {
        token_at(&self.client, &self.address, key, tenant).await
    }
}

/// Waits for `done` to hold, failing after `secs` seconds.
pub async fn eventually<F, Fut>(secs: u64, what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
