//! Connect links: a link connects the tenant in a browser without signing
//! in, works only once, expires, binds its flow to the browser that followed
//! it, and a bad request for one is a 400 that creates no link.

use super::{error_of, get, link_count, send, service, unconnected, API};
use crate::backend_tests;
use crate::helpers::{mount_exchange, query_param, Backend, FakeProvider, TestApp, ACME_ISSUER};
use diesel::prelude::*;
use serde_json::{json, Value};
use tether::db::schema::connect_links;

backend_tests!(
    a_connect_link_connects_the_tenant_in_a_browser_without_signing_in,
    a_connect_link_works_only_once,
    an_expired_connect_link_is_refused,
    a_connect_links_callback_in_another_browser_is_rejected_and_stores_nothing,
    a_bad_connect_link_request_is_a_400_and_creates_no_link,
);

/// A new browser: its own cookie jar, redirects not followed.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .build()
        .unwrap()
}

/// Creates a connect link for `acme` and returns its URL.
async fn new_link(app: &TestApp, key: &str) -> String {
    let res = send(
        app,
        reqwest::Method::POST,
        &format!("{API}/acme/connect-links"),
        key,
        Some(json!({"provider": "acme"})),
    )
    .await;
    assert_eq!(res.status(), 201);
    let body: Value = res.json().await.unwrap();
    body["url"].as_str().unwrap().to_string()
}

/// Follows a link in `browser`; returns the state and PKCE challenge it was sent off with.
async fn follow(fake: &FakeProvider, browser: &reqwest::Client, link: &str) -> (String, String) {
    let res = browser.get(link).send().await.unwrap();
    assert_eq!(res.status(), 303);
    let location = res.headers()["location"].to_str().unwrap().to_string();
    assert!(
        location.starts_with(&format!("{}/authorize?", fake.server.uri())),
        "{location}"
    );
    assert_eq!(
        query_param(&location, "code_challenge_method").as_deref(),
        Some("S256")
    );
    (
        query_param(&location, "state").expect("state"),
        query_param(&location, "code_challenge").expect("challenge"),
    )
}

fn callback_url(app: &TestApp, state: &str) -> String {
    format!(
        "{}/oauth/acme/callback?code=the-code&state={state}&iss={ACME_ISSUER}",
        app.address
    )
}

async fn a_connect_link_connects_the_tenant_in_a_browser_without_signing_in(backend: Backend) {
    let (app, fake, key) = unconnected(backend).await;
    let res = send(
        &app,
        reqwest::Method::POST,
        &format!("{API}/acme/connect-links"),
        &key,
        Some(json!({"provider": "acme"})),
    )
    .await;
    assert_eq!(res.status(), 201);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let body: Value = res.json().await.unwrap();
    let link = body["url"].as_str().unwrap().to_string();
    let token = link
        .strip_prefix(&format!("{}/connect/", app.address))
        .unwrap_or_else(|| panic!("{link} is not under {}", app.address));
    assert!(token.len() >= 32 && !token.contains('/'), "{link}");
    let expires_at = chrono::DateTime::parse_from_rfc3339(body["expires_at"].as_str().unwrap())
        .unwrap()
        .timestamp();
    let ttl = expires_at - chrono::Utc::now().timestamp();
    assert!((880..=901).contains(&ttl), "default 15 minutes: {ttl}");

    let person = browser();
    let (state, challenge) = follow(&fake, &person, &link).await;
    mount_exchange(&fake, &challenge, "at-link", "rt-link").await;
    let res = person.get(callback_url(&app, &state)).send().await.unwrap();
    assert_eq!(res.status(), 303, "{:?}", res.text().await);
    assert_eq!(res.headers()["location"], "/connect/done");
    let page = person
        .get(format!("{}/connect/done", app.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("Connected Acme CRM as Main Street Dental."),
        "{page}"
    );
    assert!(!page.contains("at-link") && !page.contains("rt-link"));

    let status: Value = get(&app, &format!("{API}/acme/connections/acme"), &key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["status"], "connected");
    assert_eq!(status["account"]["id"], "acct-42");
    let token: Value = get(&app, &format!("{API}/acme/connections/acme/token"), &key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(token["access_token"], "at-link");
}

async fn a_connect_link_works_only_once(backend: Backend) {
    let (app, fake, key) = unconnected(backend).await;
    let link = new_link(&app, &key).await;
    follow(&fake, &browser(), &link).await;
    for client in [browser(), browser()] {
        let res = client.get(&link).send().await.unwrap();
        assert_eq!(res.status(), 400);
        let page = res.text().await.unwrap();
        assert!(page.contains("invalid_link"), "{page}");
    }
}

async fn an_expired_connect_link_is_refused(backend: Backend) {
    let (app, _fake, key) = unconnected(backend).await;
    let link = new_link(&app, &key).await;
    diesel::update(connect_links::table)
        .set(connect_links::expires_at.eq(tether::db::now() - chrono::Duration::seconds(1)))
        .execute(&mut app.conn())
        .unwrap();
    let before = app.snapshot();
    let res = browser().get(&link).send().await.unwrap();
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("invalid_link"));
    assert_eq!(app.snapshot(), before, "no flow was started");
}

async fn a_connect_links_callback_in_another_browser_is_rejected_and_stores_nothing(
    backend: Backend,
) {
    let (app, fake, key) = unconnected(backend).await;
    let link = new_link(&app, &key).await;
    let (state, _) = follow(&fake, &browser(), &link).await;
    let before = app.snapshot();
    let res = browser()
        .get(callback_url(&app, &state))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let page = res.text().await.unwrap();
    assert!(page.contains("invalid_state"), "{page}");
    assert_eq!(
        app.snapshot(),
        before,
        "nothing stored, the state not used up"
    );
    assert_eq!(fake.calls_to("/token").await, 0, "no code exchange");
    let status: Value = get(&app, &format!("{API}/acme/connections/acme"), &key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["status"], "not_connected");
}

async fn a_bad_connect_link_request_is_a_400_and_creates_no_link(backend: Backend) {
    let (app, _fake, key) = unconnected(backend).await;
    for (body, expected) in [
        (json!({"provider": 1}), "invalid_json"),
        (json!({"provider": "acme", "admin": true}), "invalid_json"),
        (json!({}), "invalid_json"),
        (
            json!({"provider": "acme", "expires_in": 5}),
            "invalid_expires_in",
        ),
        (
            json!({"provider": "acme", "expires_in": 86401}),
            "invalid_expires_in",
        ),
    ] {
        let res = send(
            &app,
            reqwest::Method::POST,
            &format!("{API}/acme/connect-links"),
            &key,
            Some(body.clone()),
        )
        .await;
        assert_eq!(error_of(res).await, (400, expected.into()), "{body}");
    }
    let res = service()
        .post(format!("{}{API}/acme/connect-links", app.address))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(res).await, (400, "invalid_json".into()));
    assert_eq!(link_count(&app), 0);
}
