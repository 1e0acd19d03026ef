//! The relay of GoHighLevel app events (issue 20, point 2): signed webhooks
//! taken per second and their p99 with N connections stored, then every
//! accepted event delivered to a receiver answering in L ms: end-to-end
//! p99 and total time; with `--kill`, the server is killed with SIGKILL in
//! the middle of the burst and started again, and every accepted event
//! must still arrive.

use super::{prepare, seed, serve, Db};
use base64::Engine;
use ring::signature::{Ed25519KeyPair, KeyPair};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the receiver got: the GoHighLevel `webhookId` of each delivery,
/// the relay's `id`, and when it arrived.
type Arrivals = Arc<Mutex<Vec<(String, String, Instant)>>>;

/// A receiver answering 200 after `latency`, recording each arrival.
fn receiver(latency: Duration) -> (u16, Arrivals) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let arrivals: Arrivals = Arc::default();
    let kept = arrivals.clone();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            actix_web::HttpServer::new(move || {
                let kept = kept.clone();
                actix_web::App::new().route(
                    "/hooks",
                    actix_web::web::post().to(move |body: actix_web::web::Bytes| {
                        let kept = kept.clone();
                        async move {
                            let at = Instant::now();
                            tokio::time::sleep(latency).await;
                            let doc: serde_json::Value =
                                serde_json::from_slice(&body).unwrap_or_default();
                            if doc["type"] == "provider_event" {
                                kept.lock().unwrap().push((
                                    doc["body"]["webhookId"].as_str().unwrap_or("").to_string(),
                                    doc["id"].as_str().unwrap_or("").to_string(),
                                    at,
                                ));
                            }
                            actix_web::HttpResponse::Ok().finish()
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
    (port, arrivals)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or(f64::NAN)
}

/// "Which tenant holds location X", as every app event asks it: 10,000
/// lookups of random accounts on one pooled connection, p50 and p99 in µs.
fn lookup(pool: &tether::db::Pool, rows: usize) {
    use tether::db::models::connection::Connection;
    let mut c = pool.get().expect("connection");
    let provider = tether::ids::ProviderKey::known("gohighlevel");
    let mut took = Vec::with_capacity(10_000);
    for k in 0..10_000usize {
        let account = tether::ids::AccountId::known(format!("acct-{}", (k * 7919) % rows));
        let t = Instant::now();
        let held = Connection::holder(&mut c, &provider, &account).expect("lookup");
        took.push(t.elapsed().as_secs_f64() * 1e6);
        assert!(held.is_some(), "every seeded account is held");
    }
    took.sort_by(|a, b| a.total_cmp(b));
    println!(
        "holder lookup by account id, {rows} rows: p50 {:.0} µs, p99 {:.0} µs",
        pct(&took, 0.50),
        pct(&took, 0.99)
    );
}

pub fn relay_bench(rows: usize, events: usize, latency_ms: u64, concurrency: usize, kill: bool) {
    let db = Db::new();
    println!(
        "relay, {}: {rows} GoHighLevel connections, {events} signed InboundMessage events sent {concurrency} at a time, receiver ~{latency_ms} ms{}",
        db.backend(),
        if kill { ", SIGKILL half way" } else { "" }
    );
    let (pool, tenants, ring) = prepare(&db, 1000);
    seed(
        &db,
        &ring,
        &|_| "gohighlevel".to_string(),
        rows,
        &tenants,
        tether::db::now() + chrono::Duration::days(1),
    );
    lookup(&pool, rows);
    let pair = Ed25519KeyPair::from_seed_unchecked(&[9u8; 32]).expect("key");
    let mut raw = [0u8; 32];
    raw.copy_from_slice(pair.public_key().as_ref());
    let (port, arrivals) = receiver(Duration::from_millis(latency_ms));
    let env = vec![
        ("GOHIGHLEVEL_CLIENT_ID", "bench".to_string()),
        ("GOHIGHLEVEL_CLIENT_SECRET", "bench-secret".to_string()),
        (
            "TETHER_GOHIGHLEVEL_WEBHOOK_PUBLIC_KEY",
            tether::crypto::ed25519_spki_base64(&raw),
        ),
        ("TETHER_GOHIGHLEVEL_APP_ID", "bench-app".to_string()),
        (
            "TETHER_WEBHOOK_URL",
            format!("http://127.0.0.1:{port}/hooks"),
        ),
        ("TETHER_WEBHOOK_SECRET", "bench-webhook-secret".to_string()),
        ("TETHER_DEMO_PROVIDER", "false".to_string()),
        ("TETHER_REFRESH_ENABLED", "false".to_string()),
    ];
    let (child, tether_port) = serve(&db, &env);
    let child = Arc::new(Mutex::new(child));
    let accepted: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let sent = Arc::new(AtomicUsize::new(0));
    let killed = Arc::new(AtomicBool::new(false));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let started = Instant::now();
    let ingest: Vec<f64> = rt.block_on(async {
        let client = reqwest::Client::new();
        let pair = Arc::new(pair);
        let mut tasks = Vec::new();
        for _ in 0..concurrency {
            let (client, pair, accepted, sent, killed, child) = (
                client.clone(),
                pair.clone(),
                accepted.clone(),
                sent.clone(),
                killed.clone(),
                child.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                loop {
                    let k = sent.fetch_add(1, Ordering::SeqCst);
                    if k >= events {
                        return lat;
                    }
                    if kill && k == events / 2 && !killed.swap(true, Ordering::SeqCst) {
                        // SIGKILL: no drain, no goodbye.
                        let _ = child.lock().unwrap().kill();
                    }
                    let id = format!("wh-{k}");
                    let body = serde_json::to_vec(&serde_json::json!({
                        "type": "InboundMessage", "appId": "bench-app",
                        "locationId": format!("acct-{}", (k * 7919) % rows),
                        "contactId": "ct_1", "messageType": "SMS", "body": "Is Tuesday free?",
                        "webhookId": id,
                        "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    }))
                    .expect("json");
                    let sig = base64::engine::general_purpose::STANDARD.encode(pair.sign(&body));
                    let t = Instant::now();
                    let res = client
                        .post(format!("http://127.0.0.1:{tether_port}/webhooks/gohighlevel"))
                        .header("content-type", "application/json")
                        .header("x-ghl-signature", sig)
                        .body(body)
                        .send()
                        .await;
                    if matches!(&res, Ok(r) if r.status() == 200) {
                        lat.push(t.elapsed().as_secs_f64() * 1000.0);
                        accepted.lock().unwrap().insert(id, Instant::now());
                    }
                }
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.expect("task"));
        }
        all
    });
    let ingest_secs = started.elapsed().as_secs_f64();
    let mut ingest = ingest;
    ingest.sort_by(|a, b| a.total_cmp(b));
    // After a kill, the same database, a new process.
    let restarted = if kill {
        let _ = child.lock().unwrap().wait();
        Some(serve(&db, &env).0)
    } else {
        None
    };
    let accepted = accepted.lock().unwrap().clone();
    let deadline = Instant::now() + Duration::from_secs(900);
    let last = loop {
        let got = arrivals.lock().unwrap().clone();
        let delivered: std::collections::HashSet<&String> = got.iter().map(|(w, _, _)| w).collect();
        if accepted.keys().all(|w| delivered.contains(w)) {
            break got;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} accepted events never arrived",
            accepted.keys().filter(|w| !delivered.contains(w)).count(),
            accepted.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let total = last
        .iter()
        .map(|(_, _, at)| at.duration_since(started).as_secs_f64())
        .fold(0.0, f64::max);
    let mut e2e: Vec<f64> = last
        .iter()
        .filter_map(|(w, _, at)| {
            accepted
                .get(w)
                .map(|a| at.saturating_duration_since(*a).as_secs_f64() * 1000.0)
        })
        .collect();
    e2e.sort_by(|a, b| a.total_cmp(b));
    let mut ids: HashMap<&String, &String> = HashMap::new();
    let mut repeats = 0;
    for (w, id, _) in &last {
        if let Some(first) = ids.insert(w, id) {
            repeats += 1;
            assert_eq!(first, id, "a redelivery carries the same id");
        }
    }
    for mut c in [
        Some(Arc::try_unwrap(child).ok().map(|m| m.into_inner().unwrap())).flatten(),
        restarted,
    ]
    .into_iter()
    .flatten()
    {
        let _ = c.kill();
        let _ = c.wait();
    }
    println!("| rows | events | accepted | taken/s | take p50 ms | take p99 ms | delivered | redelivered | end-to-end p50 ms | end-to-end p99 ms | all delivered after s |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {rows} | {events} | {} | {:.0} | {:.1} | {:.1} | {} | {repeats} | {:.0} | {:.0} | {total:.1} |",
        accepted.len(),
        ingest.len() as f64 / ingest_secs,
        pct(&ingest, 0.50),
        pct(&ingest, 0.99),
        ids.len(),
        pct(&e2e, 0.50),
        pct(&e2e, 0.99),
    );
}
