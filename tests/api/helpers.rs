//! Test harness: a throwaway database per test (a temp SQLite file, or a fresh
//! PostgreSQL database when TETHER_TEST_POSTGRES_URL is set), the real server
//! on port 0, and the real binary for CLI tests.

use diesel::prelude::*;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use tether::config::Settings;
use tether::startup::{self, Application, Context};

/// A fixed test key ring, so tests can build rings that include or lack it.
pub const KEY_K1: &str = "k1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
pub const KEY_K2: &str = "k2:AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";
/// k1's id with other key material.
pub const KEY_K1_OTHER: &str = "k1:AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM=";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Generates one test per backend from `async fn name(backend: Backend)`.
/// The PostgreSQL variant says it is skipped when no server is configured.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[actix_web::test]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[actix_web::test]
                async fn $name() {
                    if $crate::helpers::postgres_url().is_none() {
                        eprintln!("skipped: TETHER_TEST_POSTGRES_URL is not set");
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

/// A database that exists for one test: a file in a temp dir, or a PostgreSQL
/// database dropped when the test ends.
pub struct TestDb {
    pub url: String,
    pub dir: tempfile::TempDir,
    pg_name: Option<String>,
}

impl TestDb {
    pub fn new(backend: Backend) -> TestDb {
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
        ("TETHER_DB_POOL_SIZE", "4".to_string()),
        ("TETHER_REFRESH_ENABLED", "false".to_string()),
        // Tests that change rows behind Tether's back must not see a cached
        // token set; tests/api/token_cache.rs turns it on.
        ("TETHER_TOKEN_CACHE_MS", "0".to_string()),
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

/// The `tether` binary with a clean environment pointed at `db`.
pub fn tether(db: &TestDb, keys: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tether"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TETHER_BIND", "127.0.0.1:0")
        .env("TETHER_DATA_DIR", db.data_dir())
        .env("TETHER_DATABASE_URL", &db.url)
        .env("RUST_LOG", "warn")
        .current_dir(db.data_dir());
    if !keys.is_empty() {
        cmd.env("TETHER_ENCRYPTION_KEYS", keys);
    }
    cmd
}

/// Runs a command with `stdin` as its input and returns its output.
pub fn run(cmd: &mut Command, stdin: &str) -> Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tether");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait for tether")
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A `tether serve` process, read up to the line that says it listens.
pub struct Server {
    pub child: Child,
    pub port: u16,
    /// Everything printed on stdout up to and including the listening line,
    /// and the lines after it that belong to the start banner.
    pub banner: Vec<String>,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Server {
    /// Starts `cmd` and blocks until it prints its listening line (or exits).
    pub fn start(cmd: &mut Command) -> Result<Server, String> {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut banner = Vec::new();
        loop {
            let mut line = String::new();
            if stdout.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut err);
                }
                let _ = child.wait();
                return Err(format!("tether exited before listening: {err}"));
            }
            let line = line.trim_end().to_string();
            banner.push(line.clone());
            if let Some(rest) = line.strip_prefix("Tether is listening on http://127.0.0.1:") {
                let port = rest
                    .split(' ')
                    .next()
                    .and_then(|p| p.parse().ok())
                    .ok_or("no port")?;
                // The banner's next line is always printed with it.
                let mut next = String::new();
                stdout.read_line(&mut next).map_err(|e| e.to_string())?;
                banner.push(next.trim_end().to_string());
                if next.starts_with("First start") {
                    for _ in 0..3 {
                        let mut l = String::new();
                        stdout.read_line(&mut l).map_err(|e| e.to_string())?;
                        banner.push(l.trim_end().to_string());
                    }
                }
                return Ok(Server {
                    child,
                    port,
                    banner,
                    stdout,
                });
            }
        }
    }

    /// Stops the server and returns what it wrote to stderr.
    pub fn stop(mut self) -> String {
        use std::io::Read;
        let _ = self.child.kill();
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        let _ = self.child.wait();
        let mut rest = String::new();
        let _ = self.stdout.read_to_string(&mut rest);
        err
    }
}

/// Every file under `dir`, concatenated (SQLite keeps recent pages in -wal).
pub fn all_bytes_under(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir").flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                out.extend(bytes);
            }
        }
    }
    out
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The password of admins made by [`TestApp::create_admin`].
pub const PASSWORD: &str = "correct horse battery";

impl TestApp {
    /// A tenant with one admin (password [`PASSWORD`]).
    pub fn create_admin(&self, tenant: &str, email: &str) -> tether::db::models::tenant::Tenant {
        let mut conn = self.conn();
        let t = match tether::db::models::tenant::Tenant::by_external_id(&mut conn, tenant).unwrap()
        {
            Some(t) => t,
            None => tether::db::models::tenant::Tenant::create(&mut conn, tenant, tenant).unwrap(),
        };
        let hash = tether::auth::hash_password(PASSWORD).unwrap();
        tether::db::models::user::User::create(&mut conn, &t.id, email, Some(&hash)).unwrap();
        t
    }

    /// The CSRF token of the form on `path`.
    pub async fn csrf(&self, path: &str) -> String {
        let html = self.get(path).await.text().await.unwrap();
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

    pub async fn post_form(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.address))
            .form(form)
            .send()
            .await
            .unwrap()
    }

    /// Everything a rejected request must leave alone, as one comparable string.
    pub fn snapshot(&self) -> String {
        #[derive(QueryableByName)]
        struct Row {
            #[diesel(sql_type = diesel::sql_types::Text)]
            v: String,
        }
        let queries = [
            "SELECT id || '|' || status || '|' || CAST(version AS TEXT) || '|' || COALESCE(key_id, '-') || '|' || CAST(updated_at AS TEXT) AS v FROM connections ORDER BY id",
            "SELECT id || '|' || COALESCE(CAST(consumed_at AS TEXT), '-') AS v FROM oauth_states ORDER BY id",
            "SELECT CAST(COUNT(*) AS TEXT) AS v FROM events",
            "SELECT CAST(COUNT(*) AS TEXT) AS v FROM users",
            "SELECT CAST(COUNT(*) AS TEXT) AS v FROM tenants",
        ];
        let mut conn = self.conn();
        queries
            .iter()
            .map(|q| {
                let rows = diesel::sql_query(*q).load::<Row>(&mut conn).unwrap();
                rows.into_iter().map(|r| r.v).collect::<Vec<_>>().join(",")
            })
            .collect::<Vec<_>>()
            .join("\n")
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

/// An OAuth provider faked at the HTTP level, configured into Tether through a
/// real providers file as `acme`.
pub struct FakeProvider {
    pub server: wiremock::MockServer,
}

pub const ACME_ISSUER: &str = "https://auth.acme.example";

impl FakeProvider {
    pub async fn start() -> FakeProvider {
        FakeProvider {
            server: wiremock::MockServer::start().await,
        }
    }

    /// The providers file declaring `acme` against this server.
    pub fn providers_toml(&self, client_auth: &str) -> String {
        let base = self.server.uri();
        format!(
            r#"
[providers.acme]
display_name = "Acme CRM"
authorize_url = "{base}/authorize"
token_url = "{base}/token"
revocation_url = "{base}/revoke"
userinfo_url = "{base}/me"
account_id = "/sub"
account_name = "/name"
issuer = "{ACME_ISSUER}"
scopes = ["contacts.read", "contacts.write"]
client_auth = "{client_auth}"
keep_fields = ["locationId"]
api_base_url = "{base}/api"
"#
        )
    }
}

/// A running app with `acme` enabled against `fake` (client auth `post` or `basic`).
pub async fn spawn_app_with_provider(
    backend: Backend,
    fake: &FakeProvider,
    client_auth: &str,
) -> TestApp {
    let db = TestDb::new(backend);
    let file = db.data_dir().join("providers.toml");
    std::fs::write(&file, fake.providers_toml(client_auth)).unwrap();
    let file = file.display().to_string();
    spawn_app_with(
        db,
        &[
            ("TETHER_PROVIDERS_FILE", &file),
            ("ACME_CLIENT_ID", "acme-client"),
            ("ACME_CLIENT_SECRET", "acme-secret-value"),
        ],
    )
    .await
}
