//! The per-process token cache: warm requests skip the database, local writes
//! take effect at once, and on PostgreSQL so do other instances' writes
//! (LISTEN/NOTIFY), also after the listener lost its session.

use crate::backend_tests;
use crate::helpers::{
    connect, mount_exchange, mount_exchange_lasting, spawn_app_with_acme, start, tokens, Backend,
    FakeProvider, TestApp, ACME_ISSUER, PASSWORD,
};
use diesel::prelude::*;
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, ResponseTemplate};

async fn app_with_cache(backend: Backend, ttl_ms: &str) -> (TestApp, FakeProvider, String) {
    let fake = FakeProvider::start().await;
    let app = spawn_app_with_acme(backend, &fake, "", &[("TETHER_TOKEN_CACHE_MS", ttl_ms)]).await;
    app.create_admin("acme", "owner@acme.example");
    assert_eq!(
        app.login("owner@acme.example", PASSWORD).await.status(),
        303
    );
    let key = app.api_key(None, false);
    (app, fake, key)
}

backend_tests!(
    a_cached_token_is_served_until_the_cache_lapses_and_a_local_disconnect_is_seen_at_once,
    a_token_about_to_expire_is_not_served_from_the_cache,
    another_instances_refresh_and_disconnect_are_seen_as_soon_as_their_notification_arrives,
    settings_changed_anywhere_are_served_with_the_next_token,
);

/// Waits until `app`'s token cache hears other instances (its listener is up).
async fn listening(app: &TestApp) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !app.state.tokens.is_coherent() {
        assert!(
            std::time::Instant::now() < deadline,
            "the listener never came up"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

async fn another_instances_refresh_and_disconnect_are_seen_as_soon_as_their_notification_arrives(
    backend: Backend,
) {
    if backend == Backend::Sqlite {
        // One instance per SQLite database: its cache is coherent by itself.
        let (app, _fake, _key) = app_with_cache(backend, "60000").await;
        assert!(app.state.tokens.is_coherent());
        eprintln!("skipped: several instances need PostgreSQL");
        return;
    }
    // Cached for up to a minute: only a notification can make A see B's writes.
    let (a, fake, key) = app_with_cache(backend, "60000").await;
    connect(&a, &fake, "at-1", "rt-1").await;
    let (b, _) = a
        .second_instance(&[("TETHER_TOKEN_CACHE_MS", "60000")])
        .await;
    listening(&a).await;
    assert_eq!(a.token(&key, "acme").await.status(), 200, "cached on A");

    let refresh_answers = |n: u32| {
        Mock::given(method("POST"))
            .and(path("/token"))
            .and(body_string_contains("grant_type=refresh_token"))
            .respond_with(ResponseTemplate::new(200).set_body_json(tokens(
                &format!("at-{n}"),
                Some(&format!("rt-{n}")),
                3600.into(),
            )))
            .up_to_n_times(1)
    };
    let on_b = |method: reqwest::Method, path: &str| {
        a.client
            .request(
                method,
                format!("{b}/api/v1/tenants/acme/connections/acme{path}"),
            )
            .bearer_auth(&key)
    };
    let access = |res: reqwest::Response| async move {
        let body: serde_json::Value = res.json().await.unwrap();
        body["access_token"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };

    // B refreshes: A's very next answer is B's new token.
    refresh_answers(2).mount(&fake.server).await;
    let res = on_b(reqwest::Method::POST, "/refresh")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    heard(&a, &key, "at-1", "at-2").await;

    // A's listener loses its session: A flushes, listens again, and still
    // sees B's next write at once.
    let killed: Vec<bool> = diesel::sql_query(
        "SELECT pg_terminate_backend(pid) AS killed FROM pg_stat_activity \
         WHERE application_name = 'tether-listener' AND datname = current_database()",
    )
    .load::<Killed>(&mut a.db.raw_pg())
    .unwrap()
    .into_iter()
    .map(|k| k.killed)
    .collect();
    assert!(
        !killed.is_empty() && killed.iter().all(|k| *k),
        "{killed:?}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while a.state.tokens.is_coherent() {
        assert!(
            std::time::Instant::now() < deadline,
            "the loss was never noticed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    listening(&a).await;
    assert_eq!(
        access(a.token(&key, "acme").await).await,
        "at-2",
        "cached again"
    );
    refresh_answers(3).mount(&fake.server).await;
    let res = on_b(reqwest::Method::POST, "/refresh")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    heard(&a, &key, "at-2", "at-3").await;

    // B disconnects: A's very next token request says not connected.
    Mock::given(method("POST"))
        .and(path("/revoke"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&fake.server)
        .await;
    let res = on_b(reqwest::Method::DELETE, "").send().await.unwrap();
    assert_eq!(res.status(), 200);
    heard(&a, &key, "at-3", "").await;
    let res = a.token(&key, "acme").await;
    assert_eq!(res.status(), 404);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_connected", "{body}");
}

/// Asks A for the token until it answers `now` (`""`: not connected). The
/// write was committed before B answered, and its NOTIFY is on its way to
/// A's listener: a request that races it may still get `before`, never
/// anything else, and once A heard it every answer is `now` (with the
/// cache's minute-long life, only the notification can make it so).
async fn heard(a: &TestApp, key: &str, before: &str, now: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let res = a.token(key, "acme").await;
        let body: serde_json::Value = res.json().await.unwrap();
        let answer = body["access_token"].as_str().unwrap_or_default();
        if answer == now {
            return;
        }
        assert_eq!(answer, before, "neither the old nor the new answer: {body}");
        assert!(
            std::time::Instant::now() < deadline,
            "A never heard B's write: still {before}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

#[derive(diesel::QueryableByName)]
struct Killed {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    killed: bool,
}

async fn a_cached_token_is_served_until_the_cache_lapses_and_a_local_disconnect_is_seen_at_once(
    backend: Backend,
) {
    // A long lifetime, so that the test does not race the clock.
    let (app, fake, key) = app_with_cache(backend, "60000").await;
    connect(&app, &fake, "at-1", "rt-1").await;
    assert_eq!(app.token(&key, "acme").await.status(), 200);
    // Another instance replaces the token set (here: behind Tether's back).
    let id = app.acme_connection("acme").id;
    {
        use tether::db::schema::connections;
        diesel::update(connections::table.find(&id))
            .set(connections::account_name.eq(Some("Changed elsewhere")))
            .execute(&mut app.conn())
            .unwrap();
    }
    let body: serde_json::Value = app.token(&key, "acme").await.json().await.unwrap();
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
    assert_eq!(app.token(&key, "acme").await.status(), 404);
    // So does a reconnect with new tokens.
    fake.server.reset().await;
    let (state, challenge) = start(&app, &[]).await;
    mount_exchange(&fake, &challenge, "at-2", "rt-2").await;
    app.get(&format!(
        "/oauth/acme/callback?code=the-code&state={state}&iss={ACME_ISSUER}"
    ))
    .await;
    let body: serde_json::Value = app.token(&key, "acme").await.json().await.unwrap();
    assert_eq!(body["access_token"], "at-2");
}

async fn a_token_about_to_expire_is_not_served_from_the_cache(backend: Backend) {
    let (app, fake, key) = app_with_cache(backend, "60000").await;
    // A 4-second token: the first request (min_ttl 0) caches it.
    let (state, challenge) = start(&app, &[]).await;
    mount_exchange_lasting(&fake, &challenge, "at-1", "rt-1", 4).await;
    app.get(&format!(
        "/oauth/acme/callback?code=the-code&state={state}&iss={ACME_ISSUER}"
    ))
    .await;
    let first = |min_ttl: u32| {
        let (app, key) = (&app, &key);
        async move {
            app.client
                .get(format!(
                    "{}/api/v1/tenants/acme/connections/acme/token?min_ttl={min_ttl}",
                    app.address
                ))
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    assert_eq!(first(0).await["access_token"], "at-1");
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
    // Before half its life, it is served even though min_ttl asks for more.
    assert_eq!(first(60).await["access_token"], "at-1");
    // Past half its life, the cached entry is not served: a refresh happens.
    while !app
        .acme_connection("acme")
        .past_half_life(tether::db::now())
    {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(first(60).await["access_token"], "at-2");
    assert_eq!(
        app.acme_connection("acme")
            .tokens(&app.ctx.keys)
            .unwrap()
            .unwrap()
            .access_token
            .expose(),
        "at-2"
    );
}

/// The token API serves the account's effective settings with the token: a
/// change in this process is served at once, and on PostgreSQL another
/// instance's change as soon as its notification arrives.
async fn settings_changed_anywhere_are_served_with_the_next_token(backend: Backend) {
    let (a, fake, key) = app_with_cache(backend, "60000").await;
    connect(&a, &fake, "at-1", "rt-1").await;
    let account = a.acme_connection("acme").account_id.to_string();
    let (a_ref, key_ref) = (&a, &key);
    let served = || async move {
        let body: serde_json::Value = a_ref.token(key_ref, "acme").await.json().await.unwrap();
        assert_eq!(body["access_token"], "at-1", "{body}");
        body["settings"].clone()
    };
    assert_eq!(served().await, serde_json::json!({}));
    assert_eq!(served().await, serde_json::json!({}), "cached");
    let base = "/api/v1/tenants/acme/integrations/acme";
    let put = |address: String, path: String, body: serde_json::Value| {
        let (a, key) = (&a, &key);
        async move {
            let res = a
                .client
                .put(format!("{address}{path}"))
                .bearer_auth(key)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
        }
    };
    put(
        a.address.clone(),
        base.into(),
        serde_json::json!({"enabled": true, "settings": {"team": "sales", "limit": 1}}),
    )
    .await;
    assert_eq!(
        served().await,
        serde_json::json!({"team": "sales", "limit": 1})
    );
    let own = format!("{base}/accounts/{account}");
    put(
        a.address.clone(),
        own.clone(),
        serde_json::json!({"settings": {"limit": 2}}),
    )
    .await;
    assert_eq!(
        served().await,
        serde_json::json!({"team": "sales", "limit": 2})
    );
    if backend == Backend::Sqlite {
        eprintln!("skipped: several instances need PostgreSQL");
        return;
    }
    let (b, _) = a
        .second_instance(&[("TETHER_TOKEN_CACHE_MS", "60000")])
        .await;
    listening(&a).await;
    assert_eq!(served().await["limit"], 2, "cached on A");
    put(b, own, serde_json::json!({"settings": {"limit": 3}})).await;
    // B committed before it answered; its NOTIFY is on its way to A.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let limit = served().await["limit"].clone();
        if limit == 3 {
            break;
        }
        assert_eq!(limit, 2, "neither the old nor the new settings");
        assert!(
            std::time::Instant::now() < deadline,
            "A never heard B's change"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}
