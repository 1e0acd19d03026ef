//! The proxy's own cost and its budgets (issue 23, point 7). Part one: wrk
//! against a local fake provider directly, then through Tether's proxy to
//! the same fake (without budgets, then with budgets that never run out, so
//! that the budget's database spend is priced apart), rounds alternating, in
//! one run: the difference is what the proxy adds per call. Part two: two
//! `tether serve` processes on one database spend one budget (by default
//! GoHighLevel's 100 calls per 10 s) while wrk hammers both (25 s, so that
//! the budget's window turns over twice; `--budget-secs`):
//! what the provider saw, and the most it saw in any 10-second stretch.

use super::{prepare, seed, serve, wrk, Db, WrkRun};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tether::db::models::api_key::{ApiKey, Rights};

/// What the fake provider received: per first path segment, the arrival
/// times.
type Seen = Arc<Mutex<HashMap<String, Vec<Instant>>>>;

/// A provider API answering every GET with a small JSON 200, recording
/// arrivals by the path's first segment (`/a/...`, `/b/...`, `/c/...`).
fn fake_api() -> (u16, Seen) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen: Seen = Arc::default();
    let kept = seen.clone();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            actix_web::HttpServer::new(move || {
                let kept = kept.clone();
                actix_web::App::new().default_service(actix_web::web::to(
                    move |req: actix_web::HttpRequest| {
                        let kept = kept.clone();
                        async move {
                            let first = req.path().split('/').nth(1).unwrap_or("").to_string();
                            kept.lock()
                                .unwrap()
                                .entry(first)
                                .or_default()
                                .push(Instant::now());
                            actix_web::HttpResponse::Ok()
                                .content_type("application/json")
                                .body(r#"{"contacts":[{"id":"c1","name":"Ada"}]}"#)
                        }
                    },
                ))
            })
            .workers(1)
            .listen(listener)
            .expect("listen")
            .run()
            .await
        })
    });
    (port, seen)
}

/// The providers file: `a` (no budget), `b` (budgets that never run out),
/// `c` (`calls` per `window` s), all against the fake at `port`.
fn providers_file(db: &Db, port: u16, calls: u64, window: u64) -> String {
    let mut toml = String::new();
    for (key, budgets) in [
        ("a", String::new()),
        (
            "b",
            "api_budgets = [{ calls = 1000000000, window = \"10s\" }, { calls = 1000000000, window = \"1d\" }]".into(),
        ),
        (
            "c",
            format!("api_budgets = [{{ calls = {calls}, window = \"{window}s\" }}]"),
        ),
    ] {
        toml.push_str(&format!(
            "[providers.{key}]\ndisplay_name = \"{key}\"\nauthorize_url = \"http://127.0.0.1:{port}/authorize\"\ntoken_url = \"http://127.0.0.1:{port}/token\"\napi_base_url = \"http://127.0.0.1:{port}/{key}\"\n{budgets}\n\n"
        ));
    }
    let path = db._dir.path().join("providers.toml");
    std::fs::write(&path, toml).expect("write providers file");
    path.display().to_string()
}

/// Settings that enable `a`, `b` and `c` from the providers file.
fn provider_env(file: &str) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("TETHER_PROVIDERS_FILE", file.to_string()),
        ("TETHER_REFRESH_ENABLED", "false".into()),
    ];
    for key in ["A", "B", "C"] {
        env.push((leak(format!("{key}_CLIENT_ID")), "bench-client".into()));
        env.push((leak(format!("{key}_CLIENT_SECRET")), "bench-secret".into()));
    }
    env
}

/// A variable name that lives as long as the benchmark.
fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// One call after another on one kept-alive connection, `n` of them after
/// 50 unmeasured: the p50 and p99 latency in ms. Nothing queues, so the
/// difference between two URLs is what one call costs more.
fn sequential(url: &str, bearer: Option<&str>, n: usize) -> (f64, f64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let client = reqwest::Client::new();
        let mut took = Vec::with_capacity(n);
        for i in 0..n + 50 {
            let mut req = client.get(url);
            if let Some(b) = bearer {
                req = req.bearer_auth(b);
            }
            let t = Instant::now();
            let res = req.send().await.expect("call");
            assert_eq!(res.status(), 200, "{url}");
            let _ = res.bytes().await;
            if i >= 50 {
                took.push(t.elapsed().as_secs_f64() * 1000.0);
            }
        }
        took.sort_by(|a, b| a.total_cmp(b));
        let pct = |p: f64| took[((took.len() as f64 * p) as usize).min(took.len() - 1)];
        (pct(0.50), pct(0.99))
    })
}

fn row(name: &str, l: &WrkRun, cpu_us: Option<f64>) {
    println!(
        "| {name} | {:.0} | {:.2} | {:.2} | {} | {} |",
        l.rps,
        l.p50_ms,
        l.p99_ms,
        l.non_2xx,
        cpu_us.map_or("-".into(), |c| format!("{c:.0}"))
    );
}

pub fn proxy_bench(secs: u64, rounds: usize, calls: u64, window: u64, budget_secs: u64) {
    let db = Db::new();
    println!(
        "proxy overhead and budgets, {}, wrk 2 threads 64 connections, {rounds} rounds of {secs} s",
        db.backend()
    );
    let (fake, seen) = fake_api();
    let file = providers_file(&db, fake, calls, window);
    // Tenant-0 holds one connection to each of a, b and c.
    let (pool, tenants, ring) = prepare(&db, 1);
    let providers = ["a", "b", "c"];
    seed(
        &db,
        &ring,
        &|i| providers[i].to_string(),
        3,
        &tenants,
        tether::db::now() + chrono::Duration::days(365),
    );
    let key = {
        let mut c = pool.get().expect("connection");
        ApiKey::create(&mut c, "bench", None, &Rights::unlimited(false))
            .expect("api key")
            .1
    };
    let env = provider_env(&file);
    let (mut child, port) = serve(&db, &env);
    let base = format!("http://127.0.0.1:{port}/api/v1/tenants/tenant-0/proxy");
    let direct = format!("http://127.0.0.1:{fake}/a/contacts?limit=5");
    let plain = format!("{base}/a/contacts?limit=5");
    let budgeted = format!("{base}/b/contacts?limit=5");
    let pid = child.id();
    let per_req = |cpu: f64, l: &WrkRun| cpu / (l.rps * (secs + 2) as f64) * 1e6;
    println!("| round / path | req/s | p50 ms | p99 ms | non-2xx | Tether CPU µs/req |");
    println!("|---|---|---|---|---|---|");
    let (mut added_plain, mut added_budget) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let d = wrk(&direct, None, secs);
        let c0 = super::cpu_secs(pid);
        let p = wrk(&plain, Some(key.expose()), secs);
        let c1 = super::cpu_secs(pid);
        let b = wrk(&budgeted, Some(key.expose()), secs);
        let c2 = super::cpu_secs(pid);
        row(&format!("{round}: fake directly"), &d, None);
        row(
            &format!("{round}: through the proxy"),
            &p,
            Some(per_req(c1 - c0, &p)),
        );
        row(
            &format!("{round}: through the proxy, 2 budgets"),
            &b,
            Some(per_req(c2 - c1, &b)),
        );
        added_plain.push(p.p50_ms - d.p50_ms);
        added_budget.push(b.p50_ms - p.p50_ms);
    }
    println!("one call at a time, 1,000 calls each (latency ms):");
    println!("| path | p50 ms | p99 ms |");
    println!("|---|---|---|");
    let mut p50s = Vec::new();
    for (name, url, bearer) in [
        ("fake directly", &direct, None),
        ("through the proxy", &plain, Some(key.expose().as_str())),
        (
            "through the proxy, 2 budgets",
            &budgeted,
            Some(key.expose().as_str()),
        ),
    ] {
        let (p50, p99) = sequential(url, bearer, 1_000);
        println!("| {name} | {p50:.3} | {p99:.3} |");
        p50s.push(p50);
    }
    println!(
        "one at a time, the proxy adds {:.3} ms at p50 per call; two budgets {:.3} ms more",
        p50s[1] - p50s[0],
        p50s[2] - p50s[1]
    );
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    println!(
        "under wrk's 64 connections, the proxy adds {:.2} ms at p50 per call (median of rounds); two budgets {:.2} ms more",
        median(&mut added_plain),
        median(&mut added_budget)
    );

    // Part two: a second instance on the same database, both hammered.
    let (mut second, port2) = serve(&db, &env);
    let urls = [port, port2]
        .map(|p| format!("http://127.0.0.1:{p}/api/v1/tenants/tenant-0/proxy/c/contacts"));
    seen.lock().unwrap().remove("c");
    let started = Instant::now();
    let runs: Vec<_> = urls
        .iter()
        .map(|url| {
            let (url, key) = (url.clone(), key.expose().clone());
            std::thread::spawn(move || wrk(&url, Some(&key), budget_secs))
        })
        .collect();
    let runs: Vec<WrkRun> = runs.into_iter().map(|t| t.join().expect("wrk")).collect();
    let elapsed = started.elapsed();
    let mut arrivals = seen.lock().unwrap().remove("c").unwrap_or_default();
    arrivals.sort();
    let span = Duration::from_secs(window);
    let most = (0..arrivals.len())
        .map(|i| {
            arrivals[i..]
                .iter()
                .take_while(|t| **t < arrivals[i] + span)
                .count()
        })
        .max()
        .unwrap_or(0);
    println!(
        "two instances, one budget of {calls} per {window} s, {:.0} s of wrk on each (with its 2 s warm-up):",
        elapsed.as_secs_f64()
    );
    for (i, r) in runs.iter().enumerate() {
        println!(
            "  instance {}: {:.0} answers/s, {} of them non-2xx (429 provider_budget_spent)",
            i + 1,
            r.rps,
            r.non_2xx
        );
    }
    let bound = calls as f64 * (elapsed.as_secs_f64() / window as f64).ceil();
    println!(
        "  the provider saw {} calls (at most {bound:.0} in {:.0} s at {calls} per {window} s); the most in any {window} s stretch: {most} (budget {calls})",
        arrivals.len(),
        elapsed.as_secs_f64()
    );
    for c in [&mut child, &mut second] {
        let _ = c.kill();
        let _ = c.wait();
    }
    assert!(
        most as u64 <= calls,
        "the budget was passed: {most} > {calls}"
    );
}
