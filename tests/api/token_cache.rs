//! The per-process token cache: warm requests skip the database, local writes
//! take effect at once, other instances' writes within the cache's lifetime.

use crate::backend_tests;
use crate::flow::{connect, mount_exchange, start, tokens};
use crate::helpers::{
    spawn_app_with, Backend, FakeProvider, TestApp, TestDb, ACME_ISSUER, PASSWORD,
};
use diesel::prelude::*;
use tether::db::models::connection::Connection;
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, ResponseTemplate};

async fn app_with_cache(backend: Backend, ttl_ms: &str) -> (TestApp, FakeProvider, String) {
    let fake = FakeProvider::start().await;
    let db = TestDb::new(backend);
    let file = db.data_dir().join("providers.toml");
    std::fs::write(&file, fake.providers_toml("post")).unwrap();
    let file = file.display().to_string();
    let app = spawn_app_with(
        db,
        &[
            ("TETHER_PROVIDERS_FILE", &file),
            ("ACME_CLIENT_ID", "acme-client"),
            ("ACME_CLIENT_SECRET", "acme-secret-value"),
            ("TETHER_TOKEN_CACHE_MS", ttl_ms),
        ],
    )
    .await;
    app.create_admin("acme", "owner@acme.example");
    assert_eq!(
        app.login("owner@acme.example", PASSWORD).await.status(),
        303
    );
    let (_, key) =
        tether::db::models::api_key::ApiKey::create(&mut app.conn(), "bot", None, false).unwrap();
    (app, fake, key.expose().clone())
}

async fn token(app: &TestApp, key: &str) -> reqwest::Response {
    app.client
        .get(format!(
            "{}/api/v1/tenants/acme/connections/acme/token",
            app.address
        ))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
}

fn row(app: &TestApp) -> Connection {
    let t = tether::db::models::tenant::Tenant::by_external_id(&mut app.conn(), "acme")
        .unwrap()
        .unwrap();
    Connection::default_for(&mut app.conn(), &t.id, "acme")
        .unwrap()
        .unwrap()
}

backend_tests!(
    a_cached_token_is_served_until_the_cache_lapses_and_a_local_disconnect_is_seen_at_once,
    a_token_about_to_expire_is_not_served_from_the_cache,
);

async fn a_cached_token_is_served_until_the_cache_lapses_and_a_local_disconnect_is_seen_at_once(
    backend: Backend,
) {
    // A long lifetime, so that the test does not race the clock.
    let (app, fake, key) = app_with_cache(backend, "60000").await;
    connect(&app, &fake, "at-1", "rt-1").await;
    assert_eq!(token(&app, &key).await.status(), 200);
    // Another instance replaces the token set (here: behind Tether's back).
    let id = row(&app).id;
    {
        use tether::db::schema::connections;
        diesel::update(connections::table.find(&id))
            .set(connections::account_name.eq(Some("Changed elsewhere")))
            .execute(&mut app.conn())
            .unwrap();
    }
    let body: serde_json::Value = token(&app, &key).await.json().await.unwrap();
    assert_eq!(
        body["access_token"], "at-1",
        "served from this process's cache"
    );
    // A disconnect in this process takes effect at once.
    Mock::given(method("POST"))
        .and(path("/revoke"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&fake.server)
        .await;
    let csrf = app.csrf("/settings/integrations").await;
    app.post_form("/oauth/acme/disconnect", &[("csrf", &csrf)])
        .await;
    assert_eq!(token(&app, &key).await.status(), 404);
    // So does a reconnect with new tokens.
    fake.server.reset().await;
    let (state, challenge) = start(&app, "").await;
    mount_exchange(&fake, &challenge, "at-2", "rt-2").await;
    app.get(&format!(
        "/oauth/acme/callback?code=the-code&state={state}&iss={ACME_ISSUER}"
    ))
    .await;
    let body: serde_json::Value = token(&app, &key).await.json().await.unwrap();
    assert_eq!(body["access_token"], "at-2");
}

async fn a_token_about_to_expire_is_not_served_from_the_cache(backend: Backend) {
    let (app, fake, key) = app_with_cache(backend, "60000").await;
    connect(&app, &fake, "at-1", "rt-1").await;
    assert_eq!(token(&app, &key).await.status(), 200);
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_string_contains("grant_type=refresh_token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(tokens(
            "at-2",
            Some("rt-2"),
            3600.into(),
        )))
        .expect(1)
        .mount(&fake.server)
        .await;
    // The cached entry expires within min_ttl: it is not served, a refresh happens.
    let res = app
        .client
        .get(format!(
            "{}/api/v1/tenants/acme/connections/acme/token?min_ttl=7200",
            app.address
        ))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["access_token"], "at-2");
    assert_eq!(
        row(&app)
            .tokens(&app.ctx.keys)
            .unwrap()
            .unwrap()
            .access_token
            .expose(),
        "at-2"
    );
}
