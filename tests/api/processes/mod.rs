//! The real `tether` binary as separate processes, against a strict fake
//! provider that counts what it saw: SIGTERM in the middle of a refresh storm
//! loses nothing, SIGKILL costs at most the refreshes whose answer died with
//! the process, and short-lived tokens get at most two refreshes per lifetime
//! across instances; `outages.rs`: the database cut (or SQLite locked) while
//! refreshes are at the provider loses nothing either. Verdicts come from the
//! provider's ledger and the rows, not from what Tether says about itself.
//!
//! Each instance is `tether serve` with a clean environment, its own data dir
//! (stderr in `tether.log` there, printed when a test fails) and its own port,
//! on the test's database. The tests take a module-wide lock so that they do
//! not load the machine at the same time; each takes under a minute.
//!
//! The `harness_check::*` tests (ignored; `cargo test --test api processes --
//! --ignored`) run the same machinery where today's code behaves (no kills, or
//! long-lived tokens, or a margin shorter than the tokens): when one of the
//! real tests fails, they tell a harness problem from a Tether one.

use crate::backend_tests;
use crate::helpers::{settings_for, Backend, TestDb, KEY_K1, SESSION_KEY};
use chrono::NaiveDateTime;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tether::crypto::{KeyRing, Secret};
use tether::db::models::api_key::ApiKey;
use tether::db::models::connection::{Connection, Grant, Status, TokenSet};
use tether::db::models::tenant::Tenant;
use tether::ids::{ProviderKey, TenantId};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// One process test at a time: they are timing-sensitive and heavy.
pub(crate) static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const CLIENT_ID: &str = "acme-client";
const CLIENT_SECRET: &str = "acme-secret-value";
/// Time limit of one provider call in the instances; the lease must be at
/// least this + 5 s (configuration refuses less), and a lease of a dead
/// instance lapses after that long.
const PROVIDER_TIMEOUT_SECS: u64 = 5;
const LEASE_SECS: u64 = 10;
/// A SIGTERMed instance must be gone this long after the signal.
pub(crate) const EXIT_WITHIN: Duration = Duration::from_secs(PROVIDER_TIMEOUT_SECS + 3);
/// Pause between two token requests of one load task.
const PACE: Duration = Duration::from_millis(200);

// ---------------------------------------------------------------------------
// The provider: a token endpoint as strict as the strictest real one.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A live refresh token: a new access token and a new refresh token.
    Rotated,
    /// A retired refresh token came back: the whole grant is revoked.
    Reuse,
    /// Any refresh token of a grant revoked before.
    Revoked,
    /// A refresh token it never issued.
    Unknown,
    /// Missing or wrong client credentials in the form.
    BadClient,
    /// Not a form, not `grant_type=refresh_token`, or no refresh token.
    BadRequest,
}

#[derive(Debug, Clone)]
pub(crate) struct Call {
    /// When the request was received (the answer leaves `delay` later).
    pub(crate) at: Instant,
    /// Which instance sent it (the `via` query parameter of its token URL).
    pub(crate) via: String,
    pub(crate) grant: Option<String>,
    pub(crate) outcome: Outcome,
}

#[derive(Default)]
struct Ledger {
    /// Refresh token -> (grant, still live).
    tokens: HashMap<String, (String, bool)>,
    revoked: HashSet<String>,
    /// Grant -> its live refresh token.
    live: HashMap<String, String>,
    calls: Vec<Call>,
    issued: u64,
}

struct StrictInner {
    ledger: Mutex<Ledger>,
    delay: Duration,
    expires_in: i64,
}

/// Rotates the refresh token on every refresh, revokes the whole grant when a
/// retired one comes back (`400 invalid_grant`), insists on the client
/// credentials in the form body, issues `expires_in`-second access tokens and
/// answers `delay` after receiving. The rotation happens on receipt: an answer
/// that dies on its way (the caller was killed) leaves the grant rotated.
#[derive(Clone)]
pub(crate) struct Strict(Arc<StrictInner>);

fn oauth_error(status: u16, error: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(serde_json::json!({ "error": error }))
}

impl Strict {
    pub(crate) async fn start(delay: Duration, expires_in: i64) -> (Strict, MockServer) {
        let server = MockServer::builder()
            .disable_request_recording()
            .start()
            .await;
        let strict = Strict(Arc::new(StrictInner {
            ledger: Mutex::new(Ledger::default()),
            delay,
            expires_in,
        }));
        Mock::given(method("POST"))
            .and(path("/token"))
            .respond_with(strict.clone())
            .named("strict token endpoint")
            .mount(&server)
            .await;
        (strict, server)
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.0.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a grant whose live refresh token is `rt` (the grant's name).
    pub(crate) fn grant(&self, rt: &str) {
        let mut l = self.ledger();
        l.tokens.insert(rt.to_string(), (rt.to_string(), true));
        l.live.insert(rt.to_string(), rt.to_string());
    }

    pub(crate) fn calls(&self) -> Vec<Call> {
        self.ledger().calls.clone()
    }

    pub(crate) fn live(&self) -> HashMap<String, String> {
        self.ledger().live.clone()
    }

    /// The grant `rt` was issued for (live or retired), if it issued it.
    pub(crate) fn issued_for(&self, rt: &str) -> Option<String> {
        self.ledger().tokens.get(rt).map(|(grant, _)| grant.clone())
    }

    /// Requests from `via` received in `(from, to]`.
    pub(crate) fn received(&self, via: Option<&str>, from: Instant, to: Instant) -> usize {
        self.ledger()
            .calls
            .iter()
            .filter(|c| via.is_none_or(|v| c.via == v) && c.at > from && c.at <= to)
            .count()
    }

    /// Requests from `via` whose answer has not left yet.
    fn in_flight(&self, via: &str) -> usize {
        let now = Instant::now();
        self.received(Some(via), now.checked_sub(self.0.delay).unwrap_or(now), now)
    }
}

impl Respond for Strict {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let at = Instant::now();
        let form: HashMap<String, String> = url::form_urlencoded::parse(&request.body)
            .into_owned()
            .collect();
        let via = request
            .url
            .query_pairs()
            .find(|(k, _)| k == "via")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        let is_form = request
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        let field = |k: &str| form.get(k).map(String::as_str);
        let rt = field("refresh_token").unwrap_or_default().to_string();
        let mut l = self.ledger();
        let (outcome, grant, answer) =
            if !is_form || field("grant_type") != Some("refresh_token") || rt.is_empty() {
                (
                    Outcome::BadRequest,
                    None,
                    oauth_error(400, "invalid_request"),
                )
            } else if field("client_id") != Some(CLIENT_ID)
                || field("client_secret") != Some(CLIENT_SECRET)
            {
                (Outcome::BadClient, None, oauth_error(401, "invalid_client"))
            } else {
                match l.tokens.get(&rt).cloned() {
                    None => (Outcome::Unknown, None, oauth_error(400, "invalid_grant")),
                    Some((grant, _)) if l.revoked.contains(&grant) => (
                        Outcome::Revoked,
                        Some(grant),
                        oauth_error(400, "invalid_grant"),
                    ),
                    Some((grant, false)) => {
                        l.revoked.insert(grant.clone());
                        l.live.remove(&grant);
                        (
                            Outcome::Reuse,
                            Some(grant),
                            oauth_error(400, "invalid_grant"),
                        )
                    }
                    Some((grant, true)) => {
                        l.issued += 1;
                        let n = l.issued;
                        let new_rt = format!("{grant}-rt{n}");
                        l.tokens.insert(rt.clone(), (grant.clone(), false));
                        l.tokens.insert(new_rt.clone(), (grant.clone(), true));
                        l.live.insert(grant.clone(), new_rt.clone());
                        let body = serde_json::json!({
                            "access_token": format!("at-{n}"),
                            "token_type": "Bearer",
                            "expires_in": self.0.expires_in,
                            "refresh_token": new_rt,
                            "scope": "contacts.read",
                        });
                        (
                            Outcome::Rotated,
                            Some(grant),
                            ResponseTemplate::new(200).set_body_json(body),
                        )
                    }
                }
            };
        l.calls.push(Call {
            at,
            via,
            grant,
            outcome,
        });
        answer.set_delay(self.0.delay)
    }
}

// ---------------------------------------------------------------------------
// Instances: `tether serve` processes.

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// One `tether serve` process (restartable on the same port and data dir),
/// killed when dropped; when the test is failing, the tail of its log is
/// printed.
pub(crate) struct Instance {
    name: &'static str,
    /// The provider's base URL.
    provider: String,
    port: u16,
    dir: PathBuf,
    env: Vec<(String, String)>,
    child: Option<Child>,
    starts: u32,
}

impl Instance {
    /// An instance on `db` with `acme` at `provider`, and `extra` settings.
    pub(crate) fn new(
        db: &TestDb,
        name: &'static str,
        provider: &str,
        extra: &[(&str, &str)],
    ) -> Instance {
        let port = free_port();
        let dir = db.data_dir().join(format!("instance-{name}"));
        std::fs::create_dir_all(&dir).expect("instance data dir");
        let providers = dir.join("providers.toml");
        let url = format!("http://127.0.0.1:{port}");
        let mut env: Vec<(String, String)> = [
            ("TETHER_BIND", format!("127.0.0.1:{port}")),
            ("TETHER_PUBLIC_URL", url),
            ("TETHER_DATABASE_URL", db.url.clone()),
            ("TETHER_DATA_DIR", dir.display().to_string()),
            ("TETHER_ENCRYPTION_KEYS", KEY_K1.to_string()),
            ("TETHER_SESSION_KEY", SESSION_KEY.to_string()),
            ("TETHER_PROVIDERS_FILE", providers.display().to_string()),
            ("ACME_CLIENT_ID", CLIENT_ID.to_string()),
            ("ACME_CLIENT_SECRET", CLIENT_SECRET.to_string()),
            ("TETHER_REFRESH_ENABLED", "true".to_string()),
            ("TETHER_REFRESH_INTERVAL_SECS", "1".to_string()),
            ("TETHER_TOKEN_CACHE_MS", "0".to_string()),
            (
                "TETHER_PROVIDER_TIMEOUT_SECS",
                PROVIDER_TIMEOUT_SECS.to_string(),
            ),
            ("TETHER_REFRESH_LEASE_SECS", LEASE_SECS.to_string()),
            ("TETHER_DEMO_PROVIDER", "false".to_string()),
            ("RUST_LOG", "info".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        for (k, v) in extra {
            env.retain(|(name, _)| name != k);
            env.push((k.to_string(), v.to_string()));
        }
        Instance {
            name,
            provider: provider.to_string(),
            port,
            dir,
            env,
            child: None,
            starts: 0,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Who the provider sees calling from the current process: the name and
    /// the start count (`a1`, `a2`, ...), so that a request a killed process
    /// sent is never taken for one of its successor's.
    fn via(&self) -> String {
        format!("{}{}", self.name, self.starts)
    }

    fn log(&self) -> PathBuf {
        self.dir.join("tether.log")
    }

    /// Starts the process and waits until `/healthz` answers.
    pub(crate) async fn start(&mut self) {
        assert!(self.child.is_none(), "instance {} is running", self.name);
        self.starts += 1;
        // The token URL names this process (see `via`); the path stays /token.
        std::fs::write(
            self.dir.join("providers.toml"),
            format!(
                r#"
[providers.acme]
display_name = "Acme CRM"
authorize_url = "{base}/authorize"
token_url = "{base}/token?via={via}"
scopes = ["contacts.read"]
client_auth = "post"
"#,
                base = self.provider,
                via = self.via()
            ),
        )
        .expect("providers file");
        let append = |file: PathBuf| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(file)
                .expect("instance log")
        };
        let mut log = append(self.log());
        writeln!(
            log,
            "=== harness: start {} of instance {}",
            self.starts, self.name
        )
        .expect("write log");
        let child = Command::new(env!("CARGO_BIN_EXE_tether"))
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(append(self.dir.join("stdout.log")))
            .stderr(log)
            .spawn()
            .expect("spawn tether serve");
        self.child = Some(child);
        self.wait_ready().await;
    }

    async fn wait_ready(&mut self) {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("client");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                panic!(
                    "instance {} exited before it was ready ({status})\n{}",
                    self.name,
                    self.tail(40)
                );
            }
            if let Ok(res) = client.get(format!("{}/healthz", self.url())).send().await {
                if res.status().is_success() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "instance {} not ready within 30 s\n{}",
                self.name,
                self.tail(40)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running instance").id()
    }

    /// Sets `key` for its next start.
    pub(crate) fn set(&mut self, key: &str, value: &str) {
        self.env.retain(|(name, _)| name != key);
        self.env.push((key.to_string(), value.to_string()));
    }

    /// Everything it logged so far, over all its starts.
    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }

    /// SIGTERM, then waits for the exit (a graceful stop drains first).
    pub(crate) async fn stop(&mut self) {
        self.sigterm();
        let exited = self.wait_exit(EXIT_WITHIN).await;
        assert!(
            exited.is_some_and(|(status, _)| status.success()),
            "instance {} did not stop cleanly within {EXIT_WITHIN:?}: {exited:?}\n{}",
            self.name,
            self.tail(40)
        );
    }

    pub(crate) fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-s", "TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -s TERM {}", self.pid());
    }

    fn sigkill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits up to `within` for the process to exit: its status and how long
    /// it took, or `None` (then it is killed).
    pub(crate) async fn wait_exit(&mut self, within: Duration) -> Option<(ExitStatus, Duration)> {
        let started = Instant::now();
        let child = self.child.as_mut().expect("running instance");
        loop {
            if let Some(status) = child.try_wait().expect("wait for tether") {
                self.child = None;
                return Some((status, started.elapsed()));
            }
            if started.elapsed() > within {
                self.sigkill();
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The last `lines` lines of its log that are not request lines, and
    /// where a copy of the whole log is kept (the data dir goes with the test).
    fn tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.log()).unwrap_or_default();
        let all: Vec<&str> = text
            .lines()
            .filter(|l| !l.contains(" tether::access "))
            .collect();
        let from = all.len().saturating_sub(lines);
        let keep = std::env::temp_dir().join(format!(
            "tether-processes-{}-{}.log",
            std::process::id(),
            self.dir
                .display()
                .to_string()
                .replace(|c: char| !c.is_ascii_alphanumeric(), "_")
        ));
        let kept = std::fs::write(&keep, &text).map_or(String::new(), |_| {
            format!(" (whole log kept in {})", keep.display())
        });
        format!(
            "--- instance {}: last {} non-request lines of its log{kept} ---\n{}",
            self.name,
            all.len() - from,
            all[from..].join("\n")
        )
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.sigkill();
        if std::thread::panicking() {
            eprintln!("{}", self.tail(40));
        }
    }
}

// ---------------------------------------------------------------------------
// Connections, seeded through the test's own pool.

pub(crate) struct Setup {
    /// Dropped last: the instances (declared after) are gone by then.
    pub(crate) db: TestDb,
    pub(crate) ctx: tether::startup::Context,
    pub(crate) provider: Strict,
    server: MockServer,
    /// Per connection: tenant external id, connection id, grant name.
    pub(crate) conns: Vec<(String, String, String)>,
    pub(crate) api_key: String,
    seeded_at: Instant,
}

impl Setup {
    /// `n` connections, each in its own tenant with a grant at the provider,
    /// expiring in `life` seconds.
    pub(crate) async fn new(backend: Backend, n: usize, life: i64, delay: Duration) -> Setup {
        let db = TestDb::new(backend);
        let ctx = tether::startup::prepare(settings_for(&db, &[])).expect("prepare the database");
        let (provider, server) = Strict::start(delay, life).await;
        let mut conn = ctx.pool.get().expect("pooled connection");
        let mut conns = Vec::new();
        for i in 0..n {
            let external = format!("proc-{i:02}");
            let tenant = Tenant::create(&mut conn, &external, &external).expect("tenant");
            let grant = format!("g{i:02}");
            provider.grant(&grant);
            let row = seed(&mut conn, &ctx.keys, &tenant.id, &grant, life);
            conns.push((external, row.id.to_string(), grant));
        }
        let (_, key) = ApiKey::create(&mut conn, "load", None, false).expect("api key");
        drop(conn);
        Setup {
            db,
            ctx,
            provider,
            server,
            conns,
            api_key: key.expose().clone(),
            seeded_at: Instant::now(),
        }
    }

    fn row(&self, i: usize) -> Connection {
        Connection::by_id(
            &mut self.ctx.pool.get().expect("pooled connection"),
            &self.conns[i].1,
        )
        .expect("connection row")
    }

    pub(crate) fn stored_rt(&self, row: &Connection) -> Option<String> {
        row.tokens(&self.ctx.keys)
            .ok()
            .flatten()
            .and_then(|t| t.refresh_token)
            .map(|t| t.expose().clone())
    }

    pub(crate) fn instance(&self, name: &'static str, extra: &[(&str, &str)]) -> Instance {
        Instance::new(&self.db, name, &self.server.uri(), extra)
    }

    pub(crate) fn tenants(&self) -> Vec<String> {
        self.conns.iter().map(|(t, _, _)| t.clone()).collect()
    }
}

/// A freshly connected `acme` grant whose live refresh token is `rt`.
pub(crate) fn seed(
    conn: &mut tether::db::PooledConn,
    keys: &KeyRing,
    tenant_id: &str,
    rt: &str,
    life: i64,
) -> Connection {
    let access = format!("at-seed-{rt}");
    let tokens = TokenSet {
        access_token: Secret::new(access.clone()),
        refresh_token: Some(Secret::new(rt.to_string())),
        token_type: "Bearer".into(),
        raw: Secret::new(serde_json::json!({ "access_token": access, "refresh_token": rt })),
    };
    let scopes = vec!["contacts.read".to_string()];
    let metadata = serde_json::json!({});
    let t = tether::db::now();
    Connection::store_grant(
        conn,
        keys,
        &Grant {
            tenant_id: &TenantId::known(tenant_id),
            provider: &ProviderKey::known("acme"),
            account_id: rt,
            account_name: None,
            scopes: &scopes,
            tokens: &tokens,
            expires_at: Some(t + chrono::Duration::seconds(life)),
            refresh_expires_at: None,
            // At 80% of its life: the tests measure what Tether plans after.
            next_refresh_at: Some(t + chrono::Duration::milliseconds(life * 800)),
            metadata: &metadata,
        },
    )
    .expect("store grant")
}

/// Where the rows ended up once nothing is in flight.
struct Settled {
    /// Connections that need a reconnect, with their rows.
    lost: BTreeMap<usize, Connection>,
    /// Connections that are unleased and hold the provider's live refresh
    /// token, with their rows.
    live: BTreeMap<usize, Connection>,
    /// Connections that never got there: why.
    unsettled: BTreeMap<usize, String>,
}

/// Polls the rows until each connection either needs a reconnect or, read
/// twice unleased at one version around a look at the provider, holds the
/// provider's live refresh token; gives up after `within`.
async fn settle(setup: &Setup, within: Duration) -> Settled {
    let deadline = Instant::now() + within;
    let mut lost = BTreeMap::new();
    let mut live = BTreeMap::new();
    let mut last = BTreeMap::new();
    let unleased = |r: &Connection| r.lease_until.is_none_or(|u| u < tether::db::now());
    loop {
        let n = setup.conns.len();
        let before: Vec<Connection> = (0..n).map(|i| setup.row(i)).collect();
        let provider = setup.provider.live();
        let after: Vec<Connection> = (0..n).map(|i| setup.row(i)).collect();
        for i in 0..n {
            if lost.contains_key(&i) || live.contains_key(&i) {
                continue;
            }
            let (r1, r2) = (&before[i], &after[i]);
            let grant = &setup.conns[i].2;
            if r2.status() == Status::NeedsReconnect {
                lost.insert(i, r2.clone());
            } else if r1.version == r2.version && unleased(r1) && unleased(r2) {
                let stored = setup.stored_rt(r2);
                if stored.is_some() && stored.as_ref() == provider.get(grant) {
                    live.insert(i, r2.clone());
                } else {
                    last.insert(
                        i,
                        format!(
                            "status {}, stores {stored:?}, the provider's live one is {:?}",
                            r2.status,
                            provider.get(grant)
                        ),
                    );
                }
            } else {
                last.insert(i, format!("status {}, leased or moving", r2.status));
            }
        }
        if lost.len() + live.len() == n || Instant::now() > deadline {
            last.retain(|i, _| !lost.contains_key(i) && !live.contains_key(i));
            return Settled {
                lost,
                live,
                unsettled: last,
            };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------
// Load: token API requests for every connection, continuously.

#[derive(Debug, Clone)]
pub(crate) enum Answer {
    /// An HTTP answer: status and, for errors, the error code.
    Http(u16, String),
    /// Nobody listening (the instance is down).
    Refused,
    /// Connected, but no answer came.
    Dropped(String),
}

#[derive(Debug, Clone)]
pub(crate) struct Sample {
    conn: usize,
    target: usize,
    sent: NaiveDateTime,
    pub(crate) answer: Answer,
}

pub(crate) struct Load {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// One task per connection, asking the `targets` in turn for its token every
/// [`PACE`] (`min_ttl` as given, else the API's default). A request nobody
/// answered is recorded and retried at once on the next target, or after a
/// short pause when there is only one.
pub(crate) fn start_load(
    targets: Vec<String>,
    tenants: Vec<String>,
    key: &str,
    min_ttl: Option<u32>,
) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(Mutex::new(Vec::new()));
    // A fresh connection per request: a refused or dropped request is then
    // the server's doing, never a race with an idle keep-alive connection.
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let query = min_ttl.map_or(String::new(), |s| format!("?min_ttl={s}"));
    let tasks = tenants
        .into_iter()
        .enumerate()
        .map(|(conn, tenant)| {
            let (stop, samples, client, targets) = (
                stop.clone(),
                samples.clone(),
                client.clone(),
                targets.clone(),
            );
            let (key, query) = (key.to_string(), query.clone());
            actix_web::rt::spawn(async move {
                let mut target = conn % targets.len();
                while !stop.load(Ordering::Relaxed) {
                    let sent = tether::db::now();
                    let url = format!(
                        "{}/api/v1/tenants/{tenant}/connections/acme/token{query}",
                        targets[target]
                    );
                    let answer = match client.get(url).bearer_auth(&key).send().await {
                        Ok(res) => {
                            let status = res.status().as_u16();
                            let body: serde_json::Value = res.json().await.unwrap_or_default();
                            let code = body["error"]["code"].as_str().unwrap_or_default();
                            Answer::Http(status, code.to_string())
                        }
                        Err(e) if e.is_connect() => Answer::Refused,
                        Err(e) => Answer::Dropped(causes(&e)),
                    };
                    let answered = matches!(answer, Answer::Http(..));
                    samples
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(Sample {
                            conn,
                            target,
                            sent,
                            answer,
                        });
                    target = (target + 1) % targets.len();
                    if answered {
                        tokio::time::sleep(PACE).await;
                    } else if targets.len() == 1 {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            })
        })
        .collect();
    Load {
        stop,
        samples,
        tasks,
    }
}

/// An error and its causes, on one line.
fn causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

impl Load {
    pub(crate) async fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        let samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        samples.clone()
    }
}

/// Answers by kind, for the figures: `200=.. 409 needs_reconnect=.. refused=..`.
pub(crate) fn tally<'a>(samples: impl Iterator<Item = &'a Sample>) -> String {
    let mut by: BTreeMap<String, usize> = BTreeMap::new();
    for s in samples {
        let k = match &s.answer {
            Answer::Http(200, _) => "200".to_string(),
            Answer::Http(status, code) => format!("{status} {code}"),
            Answer::Refused => "refused".to_string(),
            Answer::Dropped(_) => "dropped".to_string(),
        };
        *by.entry(k).or_default() += 1;
    }
    by.iter()
        .map(|(k, n)| format!("{k}={n}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// [`tally`] per target, and the dropped requests' errors.
fn per_target(samples: &[Sample], names: &[&str]) -> String {
    let mut out: Vec<String> = names
        .iter()
        .enumerate()
        .map(|(t, name)| {
            format!(
                "{name}: {}",
                tally(samples.iter().filter(|s| s.target == t))
            )
        })
        .collect();
    let dropped: Vec<&str> = samples
        .iter()
        .filter_map(|s| match &s.answer {
            Answer::Dropped(e) => Some(e.as_str()),
            _ => None,
        })
        .collect();
    if !dropped.is_empty() {
        out.push(format!("dropped: {dropped:?}"));
    }
    out.join("; ")
}

/// Waits up to `max` for a refresh from `via` to be at the provider, unanswered.
async fn refresh_in_flight(provider: &Strict, via: &str, max: Duration) -> bool {
    let deadline = Instant::now() + max;
    while Instant::now() < deadline {
        if provider.in_flight(via) > 0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    false
}

/// Sleeps until `at` (pacing a schedule, not synchronising).
async fn sleep_until(at: Instant) {
    tokio::time::sleep(at.saturating_duration_since(Instant::now())).await;
}

/// Provider calls Tether should never make, by outcome.
fn malformed(calls: &[Call]) -> Vec<Outcome> {
    calls
        .iter()
        .map(|c| c.outcome)
        .filter(|o| {
            matches!(
                o,
                Outcome::BadClient | Outcome::BadRequest | Outcome::Unknown
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------
// 1. SIGTERM in the middle of a refresh storm.

struct TermPlan {
    life: i64,
    sigterms: usize,
    /// Whether a SIGTERM must find a refresh of its instance in flight.
    require_in_flight: bool,
}

backend_tests!(
    sigterm_in_the_middle_of_a_refresh_storm_loses_nothing,
    sigkill_mid_storm_costs_at_most_the_refreshes_whose_answer_died_with_the_process,
    short_lived_tokens_get_at_most_two_refreshes_per_lifetime_across_two_instances,
);

/// 20 connections with 3 s tokens (margin 1 s; token API load with
/// `min_ttl=0`, so the schedulers do the refreshing and the token API only
/// refreshes what expired) on every instance (one on SQLite, two on
/// PostgreSQL) for 20 s, and three SIGTERMs (alternating on PostgreSQL), each
/// while a refresh of the signalled process is at the provider, unanswered;
/// each instance is restarted on its port. Nothing may be lost: no refresh
/// token reused, no connection needs a reconnect, every one is connected with
/// the provider's live refresh token, every HTTP answer to a token request is
/// 200, and every SIGTERMed process exits with success within the provider
/// timeout + 3 s. A request no server answered (refused while an instance is
/// down, or a fresh connection reset as a server stops accepting) is retried
/// at once on the other instance, or 100 ms later on the same one when it is
/// alone, and counted apart; at most two resets per SIGTERM are tolerated.
async fn sigterm_in_the_middle_of_a_refresh_storm_loses_nothing(backend: Backend) {
    sigterm_storm(
        backend,
        TermPlan {
            life: 3,
            sigterms: 3,
            require_in_flight: true,
        },
    )
    .await
}

async fn sigterm_storm(backend: Backend, plan: TermPlan) {
    let _serial = SERIAL.lock().await;
    let delay = Duration::from_millis(250);
    let setup = Setup::new(backend, 20, plan.life, delay).await;
    let names: &[&'static str] = match backend {
        Backend::Sqlite => &["a"],
        Backend::Postgres => &["a", "b"],
    };
    let mut instances: Vec<Instance> = names
        .iter()
        .map(|n| setup.instance(n, &[("TETHER_REFRESH_MARGIN_SECS", "1")]))
        .collect();
    for i in &mut instances {
        i.start().await;
    }
    let load = start_load(
        instances.iter().map(Instance::url).collect(),
        setup.tenants(),
        &setup.api_key,
        Some(0),
    );
    let t0 = Instant::now();
    let mut problems = Vec::new();
    let mut in_flight_at_term = Vec::new();
    let mut during_shutdown = Vec::new();
    let mut restarted = t0;
    for round in 0..plan.sigterms {
        // Every 6 s, and at least 3 s after the last restart.
        let at = (t0 + Duration::from_secs(4 + 6 * round as u64))
            .max(restarted + Duration::from_secs(3));
        sleep_until(at).await;
        let target = &mut instances[round % names.len()];
        let via = target.via();
        let found = refresh_in_flight(&setup.provider, &via, Duration::from_secs(3)).await;
        let at = Instant::now();
        target.sigterm();
        let exit = target.wait_exit(EXIT_WITHIN).await;
        let in_flight = setup.provider.received(Some(&via), at - delay, at);
        in_flight_at_term.push(in_flight);
        // Refreshes it had at the provider from then until it exited.
        during_shutdown.push(
            setup
                .provider
                .received(Some(&via), at - delay, Instant::now()),
        );
        match exit {
            Some((status, took)) => {
                eprintln!(
                    "SIGTERM {} to instance {}: {in_flight} refresh(es) in flight (looked: {found}), {} at the provider until it exited {status} after {took:?}",
                    round + 1,
                    target.name,
                    during_shutdown[round],
                );
                if !status.success() {
                    problems.push(format!(
                        "instance {} exited with {status} after SIGTERM {}",
                        target.name,
                        round + 1
                    ));
                }
            }
            None => problems.push(format!(
                "instance {} had not exited {EXIT_WITHIN:?} after SIGTERM {} (killed)",
                target.name,
                round + 1
            )),
        }
        target.start().await;
        restarted = Instant::now();
    }
    sleep_until(t0 + Duration::from_secs(20)).await;
    let samples = load.stop().await;
    let settled = settle(&setup, Duration::from_secs(LEASE_SECS + 15)).await;
    let calls = setup.provider.calls();
    let reuses = calls.iter().filter(|c| c.outcome == Outcome::Reuse).count();
    let refused = samples
        .iter()
        .filter(|s| matches!(s.answer, Answer::Refused))
        .count();
    let dropped = samples
        .iter()
        .filter(|s| matches!(s.answer, Answer::Dropped(_)))
        .count();
    let not_ok: Vec<&Sample> = samples
        .iter()
        .filter(|s| matches!(s.answer, Answer::Http(status, _) if status != 200))
        .collect();
    eprintln!(
        "sigterm storm ({backend:?}, {} instance(s), {} s tokens): SIGTERMs={} in_flight_at_sigterm={:?} \
         at_provider_until_exit={:?} provider_refreshes={} reuses={reuses} needs_reconnect={} unsettled={} \
         token_requests={} [{}] (refused and dropped ones were retried)",
        names.len(),
        plan.life,
        plan.sigterms,
        in_flight_at_term,
        during_shutdown,
        calls.len(),
        settled.lost.len(),
        settled.unsettled.len(),
        samples.len(),
        per_target(&samples, names)
    );

    if plan.require_in_flight {
        assert!(
            in_flight_at_term.iter().sum::<usize>() > 0,
            "harness: no SIGTERM found a refresh in flight, so nothing was tested"
        );
    }
    assert!(problems.is_empty(), "{problems:#?}");
    assert_eq!(malformed(&calls), vec![], "requests the provider refused");
    assert_eq!(reuses, 0, "refresh tokens sent again at the provider");
    assert!(
        settled.lost.is_empty(),
        "connections that need a reconnect: {:#?}",
        settled
            .lost
            .values()
            .map(|r| (&r.tenant_id, &r.last_error))
            .collect::<Vec<_>>()
    );
    assert!(
        settled.unsettled.is_empty(),
        "connections not holding the provider's live refresh token: {:#?}",
        settled.unsettled
    );
    for (i, row) in &settled.live {
        assert_eq!(row.status(), Status::Connected, "connection {i}: {row:?}");
    }
    assert!(
        not_ok.is_empty(),
        "{} token request(s) not answered 200, e.g. {:#?}",
        not_ok.len(),
        &not_ok[..not_ok.len().min(10)]
    );
    // A fresh connection closed before any answer as a server stops accepting
    // (its backlog is reset) is retried like a refused one. How many sit in
    // the backlog at that moment depends on the machine's load: up to 7 in
    // 3 SIGTERMs were seen while the whole suite ran on 2 cores. More than a
    // few per SIGTERM would mean that accepted requests are dropped.
    assert!(
        dropped <= 4 * plan.sigterms,
        "{dropped} token request(s) connected but got no answer ({refused} refused)"
    );
}

// ---------------------------------------------------------------------------
// 2. SIGKILL mid-storm.

struct KillPlan {
    life: i64,
    sigkills: usize,
}

/// Two instances on one PostgreSQL database, 20 connections with 3 s tokens
/// (margin 1 s), a provider answering after 300 ms, token API load
/// (`min_ttl=0`) on instance B for every connection for 40 s, and instance A
/// killed with SIGKILL (each time while a refresh of A's is at the provider,
/// if one comes within 3 s) and restarted every 6 s. What is lost is at most
/// the requests the killed process had at the provider from `kill - delay -
/// 200 ms` on (each process is told apart by its token URL, so this includes
/// what it sent just before dying that the provider read just after), summed
/// over kills: the answers arriving as it died. Every reuse at the provider is a lost
/// connection; every lost one needs a reconnect and says why; every other one
/// holds the provider's live refresh token; B answered 200 to every request
/// for a connection never lost, and 409 needs_reconnect to every request
/// sent more than 500 ms after its connection was lost.
async fn sigkill_mid_storm_costs_at_most_the_refreshes_whose_answer_died_with_the_process(
    backend: Backend,
) {
    if backend == Backend::Sqlite {
        eprintln!("skipped: several instances need PostgreSQL");
        return;
    }
    sigkill_storm(
        backend,
        KillPlan {
            life: 3,
            sigkills: 6,
        },
    )
    .await
}

async fn sigkill_storm(backend: Backend, plan: KillPlan) {
    let _serial = SERIAL.lock().await;
    let delay = Duration::from_millis(300);
    let setup = Setup::new(backend, 20, plan.life, delay).await;
    let margin = [("TETHER_REFRESH_MARGIN_SECS", "1")];
    let mut a = setup.instance("a", &margin);
    let mut b = setup.instance("b", &margin);
    a.start().await;
    b.start().await;
    let load = start_load(vec![b.url()], setup.tenants(), &setup.api_key, Some(0));
    let t0 = Instant::now();
    let mut kills = Vec::new();
    for round in 0..plan.sigkills {
        sleep_until(t0 + Duration::from_secs(5 + 6 * round as u64)).await;
        if !refresh_in_flight(&setup.provider, &a.via(), Duration::from_secs(3)).await {
            eprintln!("SIGKILL {}: no refresh of A's in flight", round + 1);
        }
        kills.push((Instant::now(), a.via()));
        a.sigkill();
        a.start().await;
    }
    sleep_until(t0 + Duration::from_secs(40)).await;
    let samples = load.stop().await;
    let settled = settle(&setup, Duration::from_secs(LEASE_SECS + 15)).await;

    let calls = setup.provider.calls();
    let window = delay + Duration::from_millis(200);
    let now = Instant::now();
    // What the killed process had at the provider from `window` before the
    // kill on (it sent nothing after, but the provider may read it after).
    let from_a: usize = kills
        .iter()
        .map(|(k, via)| setup.provider.received(Some(via), *k - window, now))
        .sum();
    let from_any: usize = kills
        .iter()
        .map(|(k, _)| setup.provider.received(None, *k - window, *k))
        .sum();
    let in_flight: usize = kills
        .iter()
        .map(|(k, via)| setup.provider.received(Some(via), *k - delay, now))
        .sum();
    let kills: Vec<Instant> = kills.into_iter().map(|(k, _)| k).collect();
    let reuses: Vec<&Call> = calls
        .iter()
        .filter(|c| c.outcome == Outcome::Reuse)
        .collect();
    let lost_grants: HashSet<&str> = settled
        .lost
        .keys()
        .map(|i| setup.conns[*i].2.as_str())
        .collect();
    let by_a = calls.iter().filter(|c| c.via.starts_with('a')).count();
    eprintln!(
        "sigkill storm: kills={} provider_refreshes={} (from A {by_a}) reuses={} lost={} in_flight_at_kill={in_flight} \
         in_window_from_a={from_a} in_window_from_any={from_any} unsettled={} B: token_requests={} [{}]",
        kills.len(),
        calls.len(),
        reuses.len(),
        settled.lost.len(),
        settled.unsettled.len(),
        samples.len(),
        tally(samples.iter())
    );

    let mut problems = Vec::new();
    if !malformed(&calls).is_empty() {
        problems.push(format!(
            "requests the provider refused: {:?}",
            malformed(&calls)
        ));
    }
    if settled.lost.len() > from_a {
        problems.push(format!(
            "{} connection(s) lost, more than the {from_a} refresh(es) of A's whose answer was arriving as it was killed; \
             how each was lost: {:#?}",
            settled.lost.len(),
            how_lost(&calls, &lost_grants, &kills)
        ));
    }
    for (i, row) in &settled.lost {
        if row.last_error.as_deref().is_none_or(str::is_empty) {
            problems.push(format!("lost connection {i} has no last_error: {row:?}"));
        }
    }
    for c in &reuses {
        if !c.grant.as_deref().is_some_and(|g| lost_grants.contains(g)) {
            problems.push(format!(
                "reuse at the provider for grant {:?}, whose connection is not lost",
                c.grant
            ));
        }
    }
    for (i, why) in &settled.unsettled {
        problems.push(format!("connection {i} neither lost nor live: {why}"));
    }
    for (i, row) in &settled.live {
        if row.status() != Status::Connected {
            problems.push(format!(
                "connection {i} is {}: {:?}",
                row.status, row.last_error
            ));
        }
    }
    let mut bad_answers = Vec::new();
    for s in &samples {
        let ok = match settled.lost.get(&s.conn) {
            None => matches!(s.answer, Answer::Http(200, _)),
            Some(row) if s.sent > row.updated_at + chrono::Duration::milliseconds(500) => {
                matches!(&s.answer, Answer::Http(409, code) if code == "needs_reconnect")
            }
            // Before it was lost: anything that is an answer.
            Some(_) => matches!(s.answer, Answer::Http(..)),
        };
        if !ok {
            bad_answers.push(s);
        }
    }
    if !bad_answers.is_empty() {
        problems.push(format!(
            "{} answer(s) of B break the promise [{}], e.g. {:#?}",
            bad_answers.len(),
            tally(bad_answers.iter().copied()),
            &bad_answers[..bad_answers.len().min(8)]
        ));
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

/// For each lost grant: its last rotation before the reuse (who asked, and
/// when, relative to the nearest kill) and the reuse.
fn how_lost(calls: &[Call], lost: &HashSet<&str>, kills: &[Instant]) -> Vec<String> {
    let relative = |at: Instant| {
        let (n, k) = kills
            .iter()
            .enumerate()
            .min_by_key(|(_, k)| if at > **k { at - **k } else { **k - at })
            .map(|(n, k)| (n + 1, *k))
            .unwrap_or((0, at));
        let ms = if at >= k {
            (at - k).as_millis() as i64
        } else {
            -((k - at).as_millis() as i64)
        };
        format!("kill {n} {ms:+} ms")
    };
    let mut out = Vec::new();
    let mut grants: Vec<&str> = lost.iter().copied().collect();
    grants.sort();
    for grant in grants {
        let of: Vec<&Call> = calls
            .iter()
            .filter(|c| c.grant.as_deref() == Some(grant))
            .collect();
        let reuse = of.iter().position(|c| c.outcome == Outcome::Reuse);
        let last_rotation = of[..reuse.unwrap_or(of.len())]
            .iter()
            .rev()
            .find(|c| c.outcome == Outcome::Rotated);
        out.push(format!(
            "{grant}: last rotation {}; reuse {}",
            last_rotation.map_or("none".into(), |c| format!(
                "via {} at {}",
                c.via,
                relative(c.at)
            )),
            reuse.map_or("none".into(), |i| format!(
                "via {} at {}",
                of[i].via,
                relative(of[i].at)
            ))
        ));
    }
    out
}

// ---------------------------------------------------------------------------
// 3. Short-lived tokens.

struct BudgetPlan {
    /// `TETHER_REFRESH_MARGIN_SECS`, or the default (300).
    margin: Option<i64>,
    /// The token API's `min_ttl`, or its default (60).
    min_ttl: Option<u32>,
}

/// 30 connections with 4 s access tokens, the default refresh margin (300 s)
/// and the token API's default `min_ttl` (60 s), both longer than the tokens,
/// load on every instance (two on PostgreSQL, one on SQLite) for 20 s. Each
/// connection gets at least one refresh and at most 2 per token lifetime + 2
/// over the time since it was seeded; no refresh token is reused.
async fn short_lived_tokens_get_at_most_two_refreshes_per_lifetime_across_two_instances(
    backend: Backend,
) {
    refresh_budget(
        backend,
        BudgetPlan {
            margin: None,
            min_ttl: None,
        },
    )
    .await
}

async fn refresh_budget(backend: Backend, plan: BudgetPlan) {
    let _serial = SERIAL.lock().await;
    const LIFE: i64 = 4;
    let margin = plan.margin.unwrap_or(300);
    let setup = Setup::new(backend, 30, LIFE, Duration::from_millis(200)).await;
    let margin_var = plan.margin.map(|m| m.to_string());
    let extra: Vec<(&str, &str)> = margin_var
        .iter()
        .map(|m| ("TETHER_REFRESH_MARGIN_SECS", m.as_str()))
        .collect();
    let names: &[&'static str] = match backend {
        Backend::Sqlite => &["a"],
        Backend::Postgres => &["a", "b"],
    };
    let mut instances: Vec<Instance> = names.iter().map(|n| setup.instance(n, &extra)).collect();
    for i in &mut instances {
        i.start().await;
    }
    let load = start_load(
        instances.iter().map(Instance::url).collect(),
        setup.tenants(),
        &setup.api_key,
        plan.min_ttl,
    );
    tokio::time::sleep(Duration::from_secs(20)).await;
    let end = Instant::now();
    let samples = load.stop().await;
    let elapsed = end - setup.seeded_at;
    let lifetimes = elapsed.as_secs_f64() / LIFE as f64;
    let budget = (2.0 * lifetimes).floor() as usize + 2;
    let calls: Vec<Call> = setup
        .provider
        .calls()
        .into_iter()
        .filter(|c| c.at <= end)
        .collect();
    let mut per_conn: BTreeMap<&str, usize> = setup
        .conns
        .iter()
        .map(|(_, _, g)| (g.as_str(), 0))
        .collect();
    for c in &calls {
        if let Some(n) = c.grant.as_deref().and_then(|g| per_conn.get_mut(g)) {
            *n += 1;
        }
    }
    let reuses = calls.iter().filter(|c| c.outcome == Outcome::Reuse).count();
    let max = per_conn.values().copied().max().unwrap_or(0);
    let min = per_conn.values().copied().min().unwrap_or(0);
    let mean = calls.len() as f64 / setup.conns.len() as f64;
    eprintln!(
        "refresh budget ({backend:?}, {} instance(s), {LIFE} s tokens, margin {margin} s, min_ttl {:?}): \
         {:.1} s = {lifetimes:.1} lifetimes, budget {budget} per connection; refreshes per connection \
         min={min} mean={mean:.1} max={max}, per connection per lifetime mean={:.2} max={:.2}; reuses={reuses}; \
         token_requests={} [{}]",
        names.len(),
        plan.min_ttl,
        elapsed.as_secs_f64(),
        mean / lifetimes,
        max as f64 / lifetimes,
        samples.len(),
        tally(samples.iter())
    );
    assert_eq!(malformed(&calls), vec![], "requests the provider refused");
    assert_eq!(reuses, 0, "refresh tokens sent again at the provider");
    let over: Vec<_> = per_conn.iter().filter(|(_, n)| **n > budget).collect();
    assert!(
        over.is_empty(),
        "{} connection(s) over the budget of {budget} refreshes in {:.1} s: {over:?}",
        over.len(),
        elapsed.as_secs_f64()
    );
    let never: Vec<_> = per_conn.iter().filter(|(_, n)| **n == 0).collect();
    assert!(never.is_empty(), "never refreshed: {never:?}");
}

// ---------------------------------------------------------------------------
// Harness checks: the same machinery where today's code behaves.

mod harness_check {
    use super::*;

    fn postgres() -> bool {
        let on = crate::helpers::postgres_url().is_some();
        if !on {
            eprintln!("skipped: TETHER_TEST_POSTGRES_URL is not set");
        }
        on
    }

    backend_tests!(
        #[ignore = "checks the harness, not Tether"]
        sigterm_storm_without_sigterms,
    );

    /// The storm without SIGTERMs: provider, load and settling agree.
    async fn sigterm_storm_without_sigterms(backend: Backend) {
        sigterm_storm(
            backend,
            TermPlan {
                life: 3,
                sigterms: 0,
                require_in_flight: false,
            },
        )
        .await
    }

    /// SIGTERMs and restarts with hour-long tokens: nothing to refresh, so
    /// nothing to lose; the signals, exits and restarts work.
    #[actix_web::test]
    #[ignore = "checks the harness, not Tether"]
    async fn sigterms_with_long_lived_tokens_postgres() {
        if postgres() {
            sigterm_storm(
                Backend::Postgres,
                TermPlan {
                    life: 3600,
                    sigterms: 3,
                    require_in_flight: false,
                },
            )
            .await
        }
    }

    /// SIGKILLs with hour-long tokens: nothing lost, B answers 200 throughout.
    #[actix_web::test]
    #[ignore = "checks the harness, not Tether"]
    async fn sigkills_with_long_lived_tokens_postgres() {
        if postgres() {
            sigkill_storm(
                Backend::Postgres,
                KillPlan {
                    life: 3600,
                    sigkills: 3,
                },
            )
            .await
        }
    }

    /// The storm without SIGKILLs.
    #[actix_web::test]
    #[ignore = "checks the harness, not Tether"]
    async fn sigkill_storm_without_sigkills_postgres() {
        if postgres() {
            sigkill_storm(
                Backend::Postgres,
                KillPlan {
                    life: 3,
                    sigkills: 0,
                },
            )
            .await
        }
    }

    /// The budget with a margin and min_ttl shorter than the tokens.
    #[actix_web::test]
    #[ignore = "checks the harness, not Tether"]
    async fn refresh_budget_with_short_margin_postgres() {
        if postgres() {
            refresh_budget(
                Backend::Postgres,
                BudgetPlan {
                    margin: Some(1),
                    min_ttl: Some(1),
                },
            )
            .await
        }
    }
}

mod keys;
mod outages;
