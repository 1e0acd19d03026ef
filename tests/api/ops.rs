//! Liveness, readiness, the metrics token and error rendering.

use crate::backend_tests;
use crate::helpers::{
    failing, spawn_app, spawn_app_with, spawn_app_with_acme, tokens, Backend, FakeProvider, TestDb,
};
use diesel::prelude::*;
use tether::db::models::key_check::KeyCheck;
use tether::db::models::tenant::Tenant;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

backend_tests!(
    healthz_is_ok,
    readyz_is_ready_on_a_healthy_database,
    readyz_reports_a_key_id_the_ring_lacks,
    readyz_names_a_failing_database_check_without_its_error_text,
    metrics_are_open_without_a_configured_token,
    metrics_with_a_token_answer_only_a_scraper_presenting_it,
    unknown_routes_are_json_under_api_and_a_page_elsewhere,
    provider_health_shows_a_successful_refresh,
    provider_health_shows_an_open_circuit,
    provider_health_with_a_metrics_token_answers_only_a_scraper_presenting_it,
    request_lines_are_json_objects_naming_the_client_the_request_and_the_tenant,
);

async fn provider_health(app: &crate::helpers::TestApp) -> serde_json::Value {
    let res = app.get("/readyz/providers").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    res.json().await.unwrap()
}

async fn provider_health_shows_a_successful_refresh(backend: Backend) {
    let answer =
        ResponseTemplate::new(200).set_body_json(tokens("at-1", Some("rt-1"), 3600.into()));
    let (app, _fake, _c, key) = failing(backend, answer, &[]).await;
    let before = provider_health(&app).await;
    assert_eq!(before["database"], "ok");
    assert_eq!(before["providers"]["acme"]["status"], "ok");
    assert!(before["providers"]["acme"]["last_success"].is_null());

    assert_eq!(app.token(&key, "acme").await.status(), 200);
    let after = provider_health(&app).await;
    let acme = &after["providers"]["acme"];
    assert_eq!(acme["status"], "ok", "{after}");
    assert_eq!(acme["circuit"], "closed");
    assert_eq!(acme["consecutive_failures"], 0);
    assert!(acme["misconfigured"].is_null());
    assert!(acme["last_failure"].is_null());
    let at = acme["last_success"].as_str().expect("a last success");
    let at = chrono::DateTime::parse_from_rfc3339(at).unwrap();
    assert!((chrono::Utc::now() - at.to_utc()).num_seconds().abs() < 60);
}

async fn provider_health_shows_an_open_circuit(backend: Backend) {
    let fake = FakeProvider::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&fake.server)
        .await;
    let app = spawn_app_with_acme(backend, &fake, "", &[]).await;
    for i in 0..5 {
        let t = app.ensure_tenant(&format!("c{i}"));
        app.seed(&t.id, "acct", &format!("rt-c{i}"), -60, 3600);
    }
    let key = app.api_key(None, false);
    for i in 0..2 {
        assert_eq!(app.token(&key, &format!("c{i}")).await.status(), 503);
    }
    let failing = provider_health(&app).await;
    let acme = &failing["providers"]["acme"];
    assert_eq!(acme["status"], "failing", "{failing}");
    assert_eq!(acme["consecutive_failures"], 2);
    assert_eq!(acme["last_failure"]["outcome"], "transient");
    for i in 2..5 {
        assert_eq!(app.token(&key, &format!("c{i}")).await.status(), 503);
    }
    let open = provider_health(&app).await;
    let acme = &open["providers"]["acme"];
    assert_eq!(acme["status"], "circuit_open", "{open}");
    assert_eq!(acme["circuit"], "open");
    assert_eq!(acme["consecutive_failures"], 5);
    let wait = acme["next_probe_in_secs"].as_u64().expect("a wait");
    assert!(wait <= 30, "{wait}");
    assert!(acme["last_success"].is_null());
}

async fn provider_health_with_a_metrics_token_answers_only_a_scraper_presenting_it(
    backend: Backend,
) {
    let token = "a-scraper-token-0123456789";
    let app = spawn_app_with(TestDb::new(backend), &[("TETHER_METRICS_TOKEN", token)]).await;
    let res = app.get("/readyz/providers").await;
    assert_eq!(res.status(), 401);
    let res = app
        .client
        .get(format!("{}/readyz/providers", app.address))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

async fn healthz_is_ok(backend: Backend) {
    let app = spawn_app(backend).await;
    let res = app.get("/healthz").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "ok\n");
}

async fn readyz_is_ready_on_a_healthy_database(backend: Backend) {
    let app = spawn_app(backend).await;
    let res = app.get("/readyz").await;
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["checks"]["database"], "ok");
    assert_eq!(body["checks"]["encryption_keys"], "ok");
}

async fn readyz_reports_a_key_id_the_ring_lacks(backend: Backend) {
    let app = spawn_app(backend).await;
    // Data sealed under a key id the running ring does not hold (another
    // instance seals with it): only those rows fail here, so the instance
    // stays ready and says why.
    {
        let mut conn = app.conn();
        let tenant = Tenant::create(&mut conn, "acme", "Acme").unwrap();
        crate::helpers::store(&app, &tenant.id, "acct", "at-1", "rt-1");
        let check = KeyCheck {
            key_id: "gone".into(),
            ciphertext: vec![0; 40],
            created_at: tether::db::now(),
        };
        tether::db::insert_key_check_if_absent(&mut conn, &check).unwrap();
        diesel::sql_query("UPDATE connections SET key_id = 'gone'")
            .execute(&mut conn)
            .unwrap();
    }
    let res = app.get("/readyz").await;
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    let warnings = body["warnings"].as_array().expect("warnings");
    assert!(
        warnings.len() == 1 && warnings[0].as_str().unwrap().contains("'gone'"),
        "{body}"
    );

    // A ring key that is not the key that wrote under its id is this
    // instance's own fault, and every row it seals would be unreadable to
    // the others: not ready, naming the key id.
    diesel::sql_query(
        "UPDATE key_checks SET ciphertext = ciphertext || ciphertext WHERE key_id = 'k1'",
    )
    .execute(&mut app.conn())
    .unwrap();
    let res = app.get("/readyz").await;
    assert_eq!(res.status(), 503);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["failed_check"], "encryption_keys", "{body}");
    assert_eq!(body["checks"]["encryption_keys"], "failed", "{body}");
    assert!(body["reason"].as_str().unwrap().contains("'k1'"), "{body}");
    // Liveness does no I/O and stays up.
    assert_eq!(app.get("/healthz").await.status(), 200);
}

async fn readyz_names_a_failing_database_check_without_its_error_text(backend: Backend) {
    let app = spawn_app(backend).await;
    // The database answers `SELECT 1` but fails the key check's query: the
    // driver's message would name the table ("no such table: key_checks",
    // `relation "key_checks" does not exist`).
    diesel::sql_query("DROP TABLE key_checks")
        .execute(&mut app.conn())
        .unwrap();
    let res = app.get("/readyz").await;
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let text = res.text().await.unwrap();
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["failed_check"], "database", "{body}");
    assert_eq!(body["checks"]["database"], "failed", "{body}");
    assert_eq!(body["checks"]["encryption_keys"], "not_run", "{body}");
    for raw in ["key_checks", "no such table", "does not exist", "relation"] {
        assert!(!text.contains(raw), "raw error text {raw:?} in {text}");
    }
}

async fn metrics_are_open_without_a_configured_token(backend: Backend) {
    let app = spawn_app(backend).await;
    let res = app.get("/metrics").await;
    assert_eq!(res.status(), 200);
    assert!(res
        .text()
        .await
        .unwrap()
        .contains("# TYPE tether_connections gauge"));
}

async fn metrics_with_a_token_answer_only_a_scraper_presenting_it(backend: Backend) {
    const TOKEN: &str = "scrape-token-0123456789";
    let app = spawn_app_with(TestDb::new(backend), &[("TETHER_METRICS_TOKEN", TOKEN)]).await;
    let url = format!("{}/metrics", app.address);
    let scrape = |auth: Option<&str>| {
        let mut req = app.client.get(&url);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        req.send()
    };
    for auth in [
        None,
        Some("Bearer wrong-token-0123456789".to_string()),
        Some(format!("Bearer {TOKEN}x")),
        Some(format!("Basic {TOKEN}")),
        Some("Bearer ".to_string()),
    ] {
        let res = scrape(auth.as_deref()).await.unwrap();
        assert_eq!(res.status(), 401, "{auth:?}");
        assert!(res.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer"));
        let text = res.text().await.unwrap();
        let body: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(body["error"]["code"], "unauthorized");
        assert!(!text.contains("tether_"), "no metrics without the token");
        assert!(!text.contains(TOKEN), "the token is never echoed");
    }
    let res = scrape(Some(&format!("Bearer {TOKEN}"))).await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res
        .text()
        .await
        .unwrap()
        .contains("# TYPE tether_connections gauge"));
    // The other operations endpoints stay open: orchestrators probe them.
    assert_eq!(app.get("/healthz").await.status(), 200);
    assert_eq!(app.get("/readyz").await.status(), 200);
}

async fn unknown_routes_are_json_under_api_and_a_page_elsewhere(backend: Backend) {
    let app = spawn_app(backend).await;
    let res = app.get("/api/v1/nothing-here").await;
    assert_eq!(res.status(), 404);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
    assert!(body["error"]["message"].is_string());

    let res = app.get("/nothing-here").await;
    assert_eq!(res.status(), 404);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = res.text().await.unwrap();
    assert!(
        html.contains("404 Not Found") && html.contains("not_found"),
        "{html}"
    );
}

#[actix_web::test]
async fn readyz_reports_an_unreachable_database() {
    if crate::helpers::skipped_without_postgres() {
        return;
    }
    let app = spawn_app(Backend::Postgres).await;
    assert_eq!(app.get("/readyz").await.status(), 200);
    // Take the database away under the running server.
    let admin = crate::helpers::postgres_url().unwrap();
    let name = app.db.url.rsplit('/').next().unwrap().to_string();
    let mut conn = PgConnection::establish(&admin).unwrap();
    diesel::sql_query(format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&mut conn)
        .unwrap();
    let res = app.get("/readyz").await;
    assert_eq!(res.status(), 503);
    let text = res.text().await.unwrap();
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["failed_check"], "database", "{body}");
    assert!(
        body["reason"].as_str().unwrap().contains("database"),
        "{body}"
    );
    // The driver's text (it names the database and the server) stays in the log.
    assert!(!text.contains(&name), "{text}");
    assert!(
        !text.contains("FATAL") && !text.contains("does not exist"),
        "{text}"
    );
    assert_eq!(app.get("/healthz").await.status(), 200);
}

async fn request_lines_are_json_objects_naming_the_client_the_request_and_the_tenant(
    backend: Backend,
) {
    use crate::helpers::{tether, Server, KEY_K1};
    let app = spawn_app(backend).await;
    app.create_admin("acme", "admin@acme.example");
    let key = app.api_key(None, false);
    let server = Server::start(
        tether(&app.db, KEY_K1)
            .env("TETHER_LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .env("TETHER_TRUSTED_PROXIES", "127.0.0.1/32")
            .arg("serve"),
    )
    .expect("tether serve");
    let base = format!("http://127.0.0.1:{}", server.port);
    let client = reqwest::Client::new();
    // Through a trusted proxy that names the client and the request.
    let res = client
        .get(format!(
            "{base}/api/v1/tenants/acme/connections/nowhere/token"
        ))
        .bearer_auth(&key)
        .header("X-Forwarded-For", "203.0.113.7")
        .header("X-Request-Id", "req-42.a_b")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "req-42.a_b");
    let status = res.status().as_u16().to_string();
    // A probe: at debug only. An id no proxy would send: replaced.
    assert_eq!(
        client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let res = client
        .get(format!("{base}/nowhere"))
        .header("X-Request-Id", "two words")
        .send()
        .await
        .unwrap();
    let fresh = res.headers()["x-request-id"].to_str().unwrap().to_string();
    assert!(
        fresh.len() == 16 && fresh.bytes().all(|b| b.is_ascii_hexdigit()),
        "{fresh}"
    );
    // A signed-in admin's page names the admin's tenant.
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = browser.get(format!("{base}/login")).send().await.unwrap();
    let csrf = crate::helpers::csrf_in(&login.text().await.unwrap()).expect("a csrf field");
    let signed_in = browser
        .post(format!("{base}/login"))
        .form(&[
            ("email", "admin@acme.example"),
            ("password", crate::helpers::PASSWORD),
            ("csrf", &csrf),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 303);
    let page = browser
        .get(format!("{base}/settings/integrations"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let log = server.stop();

    let events: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not one JSON object ({e}): {l}"))
        })
        .collect();
    for e in &events {
        for field in ["ts", "level", "target", "message"] {
            assert!(e[field].is_string(), "{field} missing: {e}");
        }
    }
    let access: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["target"] == "tether::access")
        .collect();
    let token = access
        .iter()
        .find(|e| e["request_id"] == "req-42.a_b")
        .unwrap_or_else(|| panic!("no line for the request: {log}"));
    assert_eq!(token["client"], "203.0.113.7", "{token}");
    assert_eq!(token["tenant"], "acme", "{token}");
    assert_eq!(token["status"], status.as_str(), "{token}");
    assert_eq!(token["method"], "GET", "{token}");
    assert!(
        access
            .iter()
            .any(|e| e["request_id"] == fresh.as_str() && e["tenant"] == "-"),
        "{log}"
    );
    assert!(!access.iter().any(|e| e["path"] == "/healthz"), "{log}");
    let page = access
        .iter()
        .find(|e| e["path"] == "/settings/integrations")
        .unwrap_or_else(|| panic!("no line for the page: {log}"));
    assert_eq!(page["tenant"], "acme", "{page}");
}
