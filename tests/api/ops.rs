//! Liveness, readiness and error rendering.

use crate::backend_tests;
use crate::helpers::{spawn_app, Backend};
use diesel::prelude::*;
use tether::db::models::key_check::KeyCheck;
use tether::db::models::tenant::Tenant;

backend_tests!(
    healthz_is_ok,
    readyz_is_ready_on_a_healthy_database,
    readyz_reports_a_key_id_the_ring_lacks,
    unknown_routes_are_json_under_api_and_a_page_elsewhere,
);

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
}

async fn readyz_reports_a_key_id_the_ring_lacks(backend: Backend) {
    let app = spawn_app(backend).await;
    // Data sealed under a key id the running ring does not hold.
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
    assert_eq!(res.status(), 503);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["status"], "unavailable");
    assert!(
        body["reason"].as_str().unwrap().contains("'gone'"),
        "{body}"
    );
    // Liveness does no I/O and stays up.
    assert_eq!(app.get("/healthz").await.status(), 200);
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
    if crate::helpers::postgres_url().is_none() {
        eprintln!("skipped: TETHER_TEST_POSTGRES_URL is not set");
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
    let body: serde_json::Value = res.json().await.unwrap();
    assert!(
        body["reason"].as_str().unwrap().contains("database"),
        "{body}"
    );
    assert_eq!(app.get("/healthz").await.status(), 200);
}
