//! Load and drain benchmarks (see BENCHMARKS.md for method and figures).
//!
//!   cargo bench --bench load -- token [--rows N] [--secs S]
//!   cargo bench --bench load -- wrk   [--rows N] [--secs S] [--rounds R]
//!   cargo bench --bench load -- drain [--rows N] [--latency-ms L] [--concurrency C]
//!   cargo bench --bench load -- plan  [--rows N]
//!   cargo bench --bench load -- relay [--rows N] [--events E] [--latency-ms L] [--concurrency C] [--kill]
//!   cargo bench --bench load -- proxy [--secs S] [--rounds R] [--calls N] [--window W] [--budget-secs B]
//!
//! SQLite by default; PostgreSQL when TETHER_BENCH_POSTGRES_URL is set (a
//! server URL such as postgres://postgres@127.0.0.1:5432/postgres: a fresh
//! database is created and dropped). Everything talks to 127.0.0.1 only.

use diesel::prelude::*;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tether::crypto::{Aad, KeyRing, Secret};
use tether::db::models::api_key::{ApiKey, Rights};
use tether::db::models::connection::TokenSet;
use tether::db::models::tenant::Tenant;
use tether::db::schema::connections;

#[path = "load/proxy.rs"]
mod proxy;
#[path = "load/relay.rs"]
mod relay;

const KEYS: &str = "k1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
const SESSION_KEY: &str =
    "c2Vzc2lvbi1rZXktZm9yLWJlbmNobWFya3Mtb25seS0wMTIzNDU2Nzg5YWJjZGVmMDEyMzQ1Njc4OWFiY2RlZg==";

struct Db {
    url: String,
    _dir: tempfile::TempDir,
    pg: Option<(String, String)>,
}

impl Db {
    fn new() -> Db {
        let dir = tempfile::tempdir().expect("temp dir");
        match std::env::var("TETHER_BENCH_POSTGRES_URL")
            .ok()
            .filter(|u| !u.is_empty())
        {
            Some(admin) => {
                let name = format!("tether_bench_{}", uuid::Uuid::new_v4().simple());
                let mut c =
                    PgConnection::establish(&admin).expect("connect to TETHER_BENCH_POSTGRES_URL");
                diesel::sql_query(format!("CREATE DATABASE {name}"))
                    .execute(&mut c)
                    .expect("create database");
                let mut url = url::Url::parse(&admin).expect("URL");
                url.set_path(&name);
                Db {
                    url: url.to_string(),
                    _dir: dir,
                    pg: Some((admin, name)),
                }
            }
            None => Db {
                url: format!("sqlite://{}", dir.path().join("tether.db").display()),
                _dir: dir,
                pg: None,
            },
        }
    }

    fn backend(&self) -> &'static str {
        if self.pg.is_some() {
            "postgres"
        } else {
            "sqlite"
        }
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Some((admin, name)) = &self.pg {
            if let Ok(mut c) = PgConnection::establish(admin) {
                let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut c);
            }
        }
    }
}

#[derive(Insertable)]
#[diesel(table_name = connections, treat_none_as_default_value = false)]
struct Row {
    id: String,
    tenant_id: String,
    provider: String,
    account_id: String,
    account_name: Option<String>,
    status: String,
    scopes: String,
    token_ciphertext: Option<Vec<u8>>,
    key_id: Option<String>,
    expires_at: Option<chrono::NaiveDateTime>,
    next_refresh_at: Option<chrono::NaiveDateTime>,
    version: i64,
    failure_count: i32,
    metadata: String,
    /// The first row of each (tenant, provider) is its default account.
    is_default: bool,
    created_at: chrono::NaiveDateTime,
    updated_at: chrono::NaiveDateTime,
}

/// Inserts `n` sealed connections spread over `tenants`, due at `due`, in
/// batches, with a progress line. `provider_of(i)` names row i's provider.
fn seed(
    db: &Db,
    ring: &KeyRing,
    provider_of: &dyn Fn(usize) -> String,
    n: usize,
    tenants: &[Tenant],
    due: chrono::NaiveDateTime,
) {
    let pool = tether::db::connect(&db.url, 2).expect("pool");
    let mut c = pool.get().expect("connection");
    let now = tether::db::now();
    let started = Instant::now();
    let mut seen = std::collections::HashSet::new();
    for chunk_start in (0..n).step_by(1000) {
        let rows: Vec<Row> = (chunk_start..(chunk_start + 1000).min(n))
            .map(|i| {
                let id = uuid::Uuid::new_v4().to_string();
                let tenant = &tenants[i % tenants.len()];
                let tokens = TokenSet {
                    access_token: Secret::new(format!("seed-at-{i}")),
                    refresh_token: Some(Secret::new(format!("seed-rt-{i}"))),
                    token_type: "Bearer".into(),
                    raw: Secret::new(serde_json::json!({})),
                };
                let provider = provider_of(i);
                let is_default = seen.insert((tenant.id.clone(), provider.clone()));
                let sealed = ring.seal(
                    &serde_json::to_vec(&tokens).expect("json"),
                    Aad::Connection {
                        id: &id,
                        tenant_id: &tenant.id,
                        provider: &provider,
                    },
                );
                Row {
                    id,
                    tenant_id: tenant.id.to_string(),
                    provider,
                    account_id: format!("acct-{i}"),
                    account_name: Some(format!("Account {i}")),
                    status: "connected".into(),
                    scopes: "[]".into(),
                    token_ciphertext: Some(sealed.bytes),
                    key_id: Some(sealed.key_id),
                    expires_at: Some(now + chrono::Duration::hours(1)),
                    next_refresh_at: Some(due),
                    version: 0,
                    failure_count: 0,
                    metadata: "{}".into(),
                    is_default,
                    created_at: now,
                    updated_at: now,
                }
            })
            .collect();
        // Multi-row inserts are spelled per backend.
        match &mut *c {
            tether::db::DbConn::Postgres(pg) => diesel::insert_into(connections::table)
                .values(&rows)
                .execute(pg),
            tether::db::DbConn::Sqlite(lite) => diesel::insert_into(connections::table)
                .values(&rows)
                .execute(lite),
        }
        .expect("insert batch");
        if (chunk_start / 1000) % 100 == 99 {
            eprintln!(
                "  seeded {} of {n} rows ({:.0} rows/s)",
                chunk_start + 1000,
                (chunk_start + 1000) as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    if matches!(&*c, tether::db::DbConn::Postgres(_)) {
        diesel::sql_query("ANALYZE connections")
            .execute(&mut *c)
            .expect("analyze");
    } else {
        diesel::sql_query("ANALYZE")
            .execute(&mut *c)
            .expect("analyze");
    }
}

/// Prepares the schema and returns the pool, tenants and key ring.
fn prepare(db: &Db, tenants: usize) -> (tether::db::Pool, Vec<Tenant>, KeyRing) {
    let ring = KeyRing::parse(KEYS).expect("ring");
    let pool = tether::db::connect(&db.url, 2).expect("pool");
    let mut c = pool.get().expect("connection");
    tether::db::migrate(&mut c).expect("migrate");
    tether::keys::ensure_checks(&mut c, &ring).expect("key check");
    let list = (0..tenants)
        .map(|i| {
            Tenant::create(&mut c, &format!("tenant-{i}"), &format!("Tenant {i}")).expect("tenant")
        })
        .collect();
    drop(c);
    (pool, list, ring)
}

/// The real `tether serve`, as an operator runs it, on a free port.
// The child is returned to the caller, which kills and waits on it.
#[allow(clippy::zombie_processes)]
fn serve(db: &Db, extra: &[(&str, String)]) -> (Child, u16) {
    // TETHER_BENCH_WRAP runs the server under a tool (valgrind --tool=callgrind ...).
    let mut cmd = match std::env::var("TETHER_BENCH_WRAP")
        .ok()
        .filter(|w| !w.is_empty())
    {
        Some(wrap) => {
            let mut parts = wrap.split_whitespace();
            let mut c = Command::new(parts.next().expect("a command"));
            c.args(parts).arg(env!("CARGO_BIN_EXE_tether"));
            c
        }
        None => Command::new(env!("CARGO_BIN_EXE_tether")),
    };
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TETHER_BIND", "127.0.0.1:0")
        .env("TETHER_DATABASE_URL", &db.url)
        .env("TETHER_DATA_DIR", db._dir.path())
        .env("TETHER_ENCRYPTION_KEYS", KEYS)
        .env("TETHER_SESSION_KEY", SESSION_KEY)
        .env(
            "TETHER_DB_POOL_SIZE",
            std::env::var("TETHER_DB_POOL_SIZE").unwrap_or_else(|_| "16".into()),
        )
        .env(
            "RUST_LOG",
            std::env::var("TETHER_BENCH_LOG").unwrap_or_else(|_| "error".into()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("start tether");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    loop {
        let mut line = String::new();
        if out.read_line(&mut line).expect("read") == 0 {
            let _ = child.wait();
            panic!("tether exited before listening");
        }
        assert!(
            out.read_line(&mut line).expect("read") > 0,
            "tether exited before listening"
        );
        if let Some(rest) = line.strip_prefix("Tether is listening on http://127.0.0.1:") {
            let port = rest
                .split(' ')
                .next()
                .and_then(|p| p.parse().ok())
                .expect("port");
            // Keep draining stdout so the child never blocks on a full pipe.
            std::thread::spawn(move || for _ in out.lines() {});
            return (child, port);
        }
    }
}

/// CPU seconds (user + system) the process has used so far.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces) start at ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of /proc/pid/stat: 11 and 12 here. Clock ticks are 100 Hz on Linux.
    (ticks(11) + ticks(12)) / 100.0
}

fn peak_rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

struct Load {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: usize,
}

/// `concurrency` connections requesting `url` in a loop for `secs` seconds
/// (after a 2 s warm-up); every response must be 200.
fn load(
    rt: &tokio::runtime::Runtime,
    url: &str,
    bearer: Option<&str>,
    concurrency: usize,
    secs: u64,
) -> Load {
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(concurrency)
            .build()
            .expect("client");
        let run = |d: Duration| {
            let mut tasks = Vec::new();
            for _ in 0..concurrency {
                let (client, url, bearer) =
                    (client.clone(), url.to_string(), bearer.map(str::to_string));
                tasks.push(tokio::spawn(async move {
                    let end = Instant::now() + d;
                    let mut lat = Vec::new();
                    let mut errors = 0;
                    while Instant::now() < end {
                        let t = Instant::now();
                        let mut req = client.get(&url);
                        if let Some(b) = &bearer {
                            req = req.bearer_auth(b);
                        }
                        match req.send().await {
                            Ok(r) if r.status() == 200 => {
                                let _ = r.bytes().await;
                                lat.push(t.elapsed().as_secs_f64() * 1000.0);
                            }
                            _ => errors += 1,
                        }
                    }
                    (lat, errors)
                }));
            }
            tasks
        };
        for t in run(Duration::from_secs(2)) {
            let _ = t.await;
        }
        let mut all = Vec::new();
        let mut errors = 0;
        for t in run(Duration::from_secs(secs)) {
            let (lat, e) = t.await.expect("task");
            all.extend(lat);
            errors += e;
        }
        all.sort_by(|a, b| a.total_cmp(b));
        let pct = |p: f64| {
            all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
                .copied()
                .unwrap_or(f64::NAN)
        };
        Load {
            rps: all.len() as f64 / secs as f64,
            p50_ms: pct(0.50),
            p99_ms: pct(0.99),
            errors,
        }
    })
}

/// 1,000 tenants and `rows` connections with tokens valid for an hour, one
/// account per tenant and provider, as tenants have: row i is tenant i % 1000's
/// connection to provider i / 1000 ("demo" for the first 1000). Returns an
/// API key for every tenant.
fn seed_warm_tokens(db: &Db, rows: usize) -> Secret<String> {
    let (pool, tenants, ring) = prepare(db, 1000);
    let due_later = tether::db::now() + chrono::Duration::days(365);
    let provider_of = |i: usize| match i / 1000 {
        0 => "demo".to_string(),
        p => format!("p{p}"),
    };
    seed(db, &ring, &provider_of, rows, &tenants, due_later);
    let mut c = pool.get().expect("connection");
    ApiKey::create(&mut c, "bench", None, &Rights::unlimited(false))
        .expect("api key")
        .1
}

fn token_bench(rows: usize, secs: u64) {
    let db = Db::new();
    println!(
        "token API vs /healthz, {} with {rows} connection rows, 64 connections, {secs} s each",
        db.backend()
    );
    let key = seed_warm_tokens(&db, rows);
    let (mut child, port) = serve(&db, &[("TETHER_REFRESH_ENABLED", "false".into())]);
    let base = format!("http://127.0.0.1:{port}");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let token_url = format!("{base}/api/v1/tenants/tenant-7/connections/demo/token");
    let check = rt.block_on(async {
        reqwest::Client::new()
            .get(&token_url)
            .bearer_auth(key.expose())
            .send()
            .await
            .expect("token")
            .status()
    });
    assert_eq!(check, 200, "token endpoint must answer before measuring");
    let pid = child.id();
    let c0 = cpu_secs(pid);
    let health = load(&rt, &format!("{base}/healthz"), None, 64, secs);
    let c1 = cpu_secs(pid);
    let token = load(&rt, &token_url, Some(key.expose()), 64, secs);
    let c2 = cpu_secs(pid);
    // Warm-up requests are not counted in rps, so this slightly overstates the cost.
    let per_req = |cpu: f64, l: &Load| cpu / (l.rps * (secs + 2) as f64) * 1e6;
    let _ = child.kill();
    let _ = child.wait();
    // The same server without the token cache: every request reads the row.
    let (mut child, port) = serve(
        &db,
        &[
            ("TETHER_REFRESH_ENABLED", "false".into()),
            ("TETHER_TOKEN_CACHE_MS", "0".into()),
        ],
    );
    let uncached_url = token_url.replace(&base, &format!("http://127.0.0.1:{port}"));
    let c3 = cpu_secs(child.id());
    let uncached = load(&rt, &uncached_url, Some(key.expose()), 64, secs);
    let c4 = cpu_secs(child.id());
    let _ = child.kill();
    let _ = child.wait();
    println!("| endpoint | req/s | p50 ms | p99 ms | errors | server CPU µs/req |");
    println!("|---|---|---|---|---|---|");
    for (name, l, cpu) in [
        ("/healthz", &health, c1 - c0),
        ("token API", &token, c2 - c1),
        ("token API, cache off", &uncached, c4 - c3),
    ] {
        println!(
            "| {name} | {:.0} | {:.2} | {:.2} | {} | {:.0} |",
            l.rps,
            l.p50_ms,
            l.p99_ms,
            l.errors,
            per_req(cpu, l)
        );
    }
    println!(
        "ratio token/healthz throughput: {:.2} (cache off: {:.2})",
        token.rps / health.rps,
        uncached.rps / health.rps
    );
}

/// What wrk measured for one URL.
struct WrkRun {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    non_2xx: u64,
}

/// Runs `wrk` (Debian package `wrk`) against `url`: 2 threads, 64
/// connections, `secs` seconds, after a 2 s warm-up of the same.
fn wrk(url: &str, bearer: Option<&str>, secs: u64) -> WrkRun {
    let run = |d: u64| {
        let mut cmd = Command::new("wrk");
        cmd.args(["-t2", "-c64", &format!("-d{d}s"), "--latency"]);
        if let Some(b) = bearer {
            cmd.args(["-H", &format!("Authorization: Bearer {b}")]);
        }
        let out = cmd
            .arg(url)
            .output()
            .expect("run wrk (apt-get install wrk)");
        assert!(out.status.success(), "wrk failed");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    run(2);
    let text = run(secs);
    let ms = |v: &str| -> f64 {
        let v = v.trim();
        if let Some(us) = v.strip_suffix("us") {
            us.parse::<f64>().unwrap_or(f64::NAN) / 1000.0
        } else if let Some(m) = v.strip_suffix("ms") {
            m.parse().unwrap_or(f64::NAN)
        } else if let Some(s) = v.strip_suffix('s') {
            s.parse::<f64>().unwrap_or(f64::NAN) * 1000.0
        } else {
            f64::NAN
        }
    };
    let field = |prefix: &str| {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix))
            .map(|rest| rest.trim().to_string())
            .unwrap_or_default()
    };
    WrkRun {
        rps: field("Requests/sec:").parse().unwrap_or(f64::NAN),
        p50_ms: ms(&field("50%")),
        p99_ms: ms(&field("99%")),
        non_2xx: field("Non-2xx or 3xx responses:").parse().unwrap_or(0),
    }
}

/// The token API against `/healthz` with wrk as the load generator, both on
/// one server in one run, so the generator is not the ceiling.
fn wrk_bench(rows: usize, secs: u64, rounds: usize) {
    let db = Db::new();
    println!(
        "token API vs /healthz with wrk, {} with {rows} connection rows, 64 connections, {rounds} rounds of {secs} s each",
        db.backend()
    );
    let key = seed_warm_tokens(&db, rows);
    let (mut child, port) = serve(&db, &[("TETHER_REFRESH_ENABLED", "false".into())]);
    let base = format!("http://127.0.0.1:{port}");
    let token_url = format!("{base}/api/v1/tenants/tenant-7/connections/demo/token");
    let check = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H"])
        .arg(format!("Authorization: Bearer {}", key.expose()))
        .arg(&token_url)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    if let Ok(code) = check {
        assert_eq!(code, "200", "token endpoint must answer before measuring");
    }
    // Rounds alternate the two endpoints, so that a drift of this virtual
    // machine's speed during the run falls on both alike.
    let pid = child.id();
    let per_req = |cpu: f64, l: &WrkRun| cpu / (l.rps * (secs + 2) as f64) * 1e6;
    println!("| round | endpoint | req/s | p50 ms | p99 ms | non-2xx | server CPU µs/req |");
    println!("|---|---|---|---|---|---|---|");
    let mut ratios = Vec::new();
    for round in 1..=rounds {
        let c0 = cpu_secs(pid);
        let health = wrk(&format!("{base}/healthz"), None, secs);
        let c1 = cpu_secs(pid);
        let token = wrk(&token_url, Some(key.expose()), secs);
        let c2 = cpu_secs(pid);
        for (name, l, cpu) in [
            ("/healthz", &health, c1 - c0),
            ("token API", &token, c2 - c1),
        ] {
            println!(
                "| {round} | {name} | {:.0} | {:.2} | {:.2} | {} | {:.1} |",
                l.rps,
                l.p50_ms,
                l.p99_ms,
                l.non_2xx,
                per_req(cpu, l)
            );
        }
        ratios.push(token.rps / health.rps);
    }
    // A graceful stop, so that a wrapping profiler writes its output.
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = child.wait();
    let listed: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
    ratios.sort_by(f64::total_cmp);
    println!(
        "ratio token/healthz throughput by round: {}; median {:.2}",
        listed.join(", "),
        ratios[ratios.len() / 2]
    );
}

/// A local token endpoint answering each refresh after `latency`.
fn fake_token_endpoint(latency: Duration) -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = calls.clone();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            actix_web::HttpServer::new(move || {
                let counter = counter.clone();
                actix_web::App::new().route(
                    "/token",
                    actix_web::web::post().to(move || {
                        let counter = counter.clone();
                        async move {
                            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            tokio::time::sleep(latency).await;
                            actix_web::HttpResponse::Ok().json(serde_json::json!({
                                "access_token": tether::crypto::random_token(24),
                                "refresh_token": tether::crypto::random_token(24),
                                "token_type": "Bearer",
                                "expires_in": 3600
                            }))
                        }
                    }),
                )
            })
            .workers(1)
            .listen(listener)
            .expect("listen")
            .run()
            .await
        })
    });
    (port, calls)
}

/// Providers the drain spreads its connections over: with the defaults
/// (16 in flight, 4 per provider) four providers fill every slot.
const DRAIN_PROVIDERS: usize = 4;

/// `concurrency`: refreshes in flight per process (`None`: Tether's default,
/// 16, and 4 per provider); the per-provider limit is a quarter of it.
fn drain_bench(rows: usize, latency_ms: u64, concurrency: Option<usize>) {
    let db = Db::new();
    let in_flight = concurrency.unwrap_or(16);
    let bound = in_flight as f64 / (latency_ms.max(1) as f64 / 1000.0);
    println!(
        "scheduler drain, {}: {rows} connections of {DRAIN_PROVIDERS} providers due at once, token endpoint ~{latency_ms} ms, {in_flight} in flight{}; bound {bound:.0}/s",
        db.backend(),
        if concurrency.is_none() { " (the defaults)" } else { "" }
    );
    let (pool, tenants, ring) = prepare(&db, 100);
    let (fake_port, calls) = fake_token_endpoint(Duration::from_millis(latency_ms));
    let providers = db._dir.path().join("providers.toml");
    let mut toml = String::new();
    for p in 0..DRAIN_PROVIDERS {
        toml.push_str(&format!(
            "[providers.bench{p}]\ndisplay_name = \"Bench {p}\"\nauthorize_url = \"http://127.0.0.1:{fake_port}/authorize\"\ntoken_url = \"http://127.0.0.1:{fake_port}/token\"\nclient_id_env = \"BENCH_CLIENT_ID\"\nclient_secret_env = \"BENCH_CLIENT_SECRET\"\n"
        ));
    }
    std::fs::write(&providers, toml).expect("providers file");
    seed(
        &db,
        &ring,
        &|i| format!("bench{}", i % DRAIN_PROVIDERS),
        rows,
        &tenants,
        tether::db::now() - chrono::Duration::seconds(1),
    );
    let mut env = vec![
        ("TETHER_PROVIDERS_FILE", providers.display().to_string()),
        ("BENCH_CLIENT_ID", "bench".into()),
        ("BENCH_CLIENT_SECRET", "bench-secret".into()),
        ("TETHER_DEMO_PROVIDER", "false".into()),
        ("TETHER_REFRESH_INTERVAL_SECS", "1".into()),
    ];
    if let Some(c) = concurrency {
        env.push(("TETHER_REFRESH_CONCURRENCY", c.to_string()));
        env.push((
            "TETHER_REFRESH_PER_PROVIDER",
            c.div_ceil(DRAIN_PROVIDERS).to_string(),
        ));
    }
    let started = Instant::now();
    let (mut child, _) = serve(&db, &env);
    let mut c = pool.get().expect("connection");
    let done = loop {
        let n: i64 = connections::table
            .filter(connections::version.gt(0))
            .count()
            .get_result(&mut c)
            .expect("count");
        if n as usize >= rows {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "drain did not finish in 10 minutes ({n} of {rows})"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let rss = peak_rss_mb(child.id());
    let _ = child.kill();
    let _ = child.wait();
    let failed: i64 = connections::table
        .filter(connections::status.ne("connected"))
        .count()
        .get_result(&mut c)
        .expect("count");
    let rate = rows as f64 / done.as_secs_f64();
    println!("| rows | in flight | latency ms | seconds | refreshes/s | bound/s | of bound | provider calls | not connected | peak RSS MB |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {rows} | {in_flight} | {latency_ms} | {:.2} | {rate:.0} | {bound:.0} | {:.2} | {} | {failed} | {rss:.1} |",
        done.as_secs_f64(),
        rate / bound,
        calls.load(std::sync::atomic::Ordering::Relaxed)
    );
}

fn plan_bench(rows: usize) {
    let db = Db::new();
    println!(
        "due-for-refresh query plan, {} with {rows} rows",
        db.backend()
    );
    let (pool, tenants, ring) = prepare(&db, 1000);
    let later = tether::db::now() + chrono::Duration::days(1);
    seed(
        &db,
        &ring,
        &|i| format!("p{}", i / 1000),
        rows,
        &tenants,
        later,
    );
    let mut c = pool.get().expect("connection");
    #[derive(QueryableByName)]
    struct Line {
        #[diesel(sql_type = diesel::sql_types::Text, column_name = "QUERY PLAN")]
        line: String,
    }
    let due = "SELECT id FROM connections WHERE next_refresh_at <= CURRENT_TIMESTAMP AND status IN ('connected', 'error') \
               AND token_ciphertext IS NOT NULL AND (lease_until IS NULL OR lease_until < CURRENT_TIMESTAMP) \
               ORDER BY next_refresh_at LIMIT 32";
    let lines: Vec<String> = match &mut *c {
        tether::db::DbConn::Postgres(pg) => {
            diesel::sql_query(format!("EXPLAIN {due} FOR UPDATE SKIP LOCKED"))
                .load::<Line>(pg)
                .expect("explain")
                .into_iter()
                .map(|l| l.line)
                .collect()
        }
        tether::db::DbConn::Sqlite(lite) => {
            #[derive(QueryableByName)]
            struct Plan {
                #[diesel(sql_type = diesel::sql_types::Text)]
                detail: String,
            }
            diesel::sql_query(format!("EXPLAIN QUERY PLAN {due}"))
                .load::<Plan>(lite)
                .expect("explain")
                .into_iter()
                .map(|p| p.detail)
                .collect()
        }
    };
    for l in lines {
        println!("    {l}");
    }
}

/// Times each step of a warm token request in a loop, single-threaded.
fn parts_bench() {
    let db = Db::new();
    let (pool, tenants, ring) = prepare(&db, 10);
    seed(
        &db,
        &ring,
        &|_| "demo".to_string(),
        100,
        &tenants,
        tether::db::now() + chrono::Duration::days(1),
    );
    let tenant = &tenants[3];
    let settings = tether::config::Settings::from_vars(&Default::default()).expect("settings");
    let catalogue =
        tether::providers::Catalogue::build(&settings, None, &|_| None).expect("catalogue");
    let n = 20_000;
    let time = |name: &str, f: &mut dyn FnMut()| {
        let t = Instant::now();
        for _ in 0..n {
            f();
        }
        println!(
            "| {name} | {:.1} |",
            t.elapsed().as_secs_f64() / n as f64 * 1e6
        );
    };
    println!(
        "steps of a warm token request on {}, µs each (mean of {n})",
        db.backend()
    );
    println!("| step | µs |");
    println!("|---|---|");
    let mut c = pool.get().expect("connection");
    let demo = tether::ids::ProviderKey::known("demo");
    time("pool checkout + return", &mut || {
        let _c = pool.get().expect("connection");
    });
    time("Connection::default_for (query + row decode)", &mut || {
        let _ = tether::db::models::connection::Connection::default_for(&mut c, &tenant.id, &demo)
            .expect("query");
    });
    let row = tether::db::models::connection::Connection::default_for(&mut c, &tenant.id, &demo)
        .expect("query")
        .expect("row");
    time("open the token set (decrypt + JSON)", &mut || {
        let _ = row.tokens(&ring).expect("open");
    });
    time("provider lookup + clone", &mut || {
        let _ = catalogue.enabled("demo").cloned();
    });
    let tokens = row.tokens(&ring).expect("open").expect("tokens");
    time("response body (scopes, metadata, JSON)", &mut || {
        let body = serde_json::json!({
            "access_token": tokens.access_token.expose(),
            "token_type": tokens.token_type,
            "expires_at": row.expires_at.map(|t| t.and_utc().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            "scopes": row.scopes(),
            "metadata": row.metadata(),
        });
        let _ = serde_json::to_vec(&body);
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    time("spawn_blocking round trip", &mut || {
        rt.block_on(async { tokio::task::spawn_blocking(|| 1).await.expect("join") });
    });
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let flag = |name: &str, default: u64| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    match args.first().map(String::as_str) {
        Some("token") => token_bench(flag("--rows", 10_000) as usize, flag("--secs", 10)),
        Some("wrk") => wrk_bench(
            flag("--rows", 10_000) as usize,
            flag("--secs", 10),
            flag("--rounds", 3).max(1) as usize,
        ),
        Some("drain") => drain_bench(
            flag("--rows", 10_000) as usize,
            flag("--latency-ms", 1),
            args.iter()
                .position(|a| a == "--concurrency")
                .map(|_| flag("--concurrency", 16) as usize),
        ),
        Some("plan") => plan_bench(flag("--rows", 1_000_000) as usize),
        Some("relay") => relay::relay_bench(
            flag("--rows", 1_000) as usize,
            flag("--events", 10_000) as usize,
            flag("--latency-ms", 50),
            flag("--concurrency", 16) as usize,
            args.iter().any(|a| a == "--kill"),
        ),
        Some("parts") => parts_bench(),
        Some("proxy") => proxy::proxy_bench(
            flag("--secs", 10),
            flag("--rounds", 3).max(1) as usize,
            flag("--calls", 100).max(1),
            flag("--window", 10).max(1),
            flag("--budget-secs", 25).max(1),
        ),
        _ => {
            eprintln!(
                "usage: cargo bench --bench load -- token|wrk|drain|plan|parts|relay|proxy [--rows N] [--secs S] [--rounds R] [--latency-ms L] [--concurrency C] [--events E] [--kill] [--calls N] [--window W] [--budget-secs B]"
            );
            std::process::exit(2);
        }
    }
}
