//! Connect sessions (README, "Connect from your own page"): one token,
//! fetched when the CRM's page loads, serves its Connect buttons: each
//! listed provider, as many connects as it allows, until it expires. Its
//! page changes nothing; only its form spends a use, and a refusal spends
//! none. A bad request for one is a 400 that creates nothing.

use super::connect_links::{callback_url, follow, open_page};
use super::{unconnected, API};
use crate::backend_tests;
use crate::helpers::{error_of, mount_exchange, new_browser, Backend, TestApp};
use diesel::prelude::*;
use serde_json::{json, Value};
use tether::db::schema::connect_sessions;

backend_tests!(
    a_session_connects_its_providers_as_often_as_it_allows_with_its_tags,
    a_session_refuses_what_it_does_not_cover_and_spends_nothing,
    an_expired_session_is_refused,
    a_bad_session_request_is_a_400_that_creates_nothing,
);

/// Opens a session with `body`; returns its answer.
async fn open_session(app: &TestApp, key: &str, body: Value) -> Value {
    let res = app
        .api_post(&format!("{API}/acme/connect-sessions"), key, Some(body))
        .await;
    assert_eq!(res.status(), 201, "{:?}", res.text().await);
    assert_eq!(res.headers()["cache-control"], "no-store");
    res.json().await.unwrap()
}

fn page(app: &TestApp, token: &str, provider: &str) -> String {
    format!("{}/connect/session/{token}/{provider}", app.address)
}

fn uses_left(app: &TestApp) -> Vec<i32> {
    connect_sessions::table
        .select(connect_sessions::uses_left)
        .load(&mut app.conn())
        .unwrap()
}

async fn a_session_connects_its_providers_as_often_as_it_allows_with_its_tags(backend: Backend) {
    let (app, fake, key) = unconnected(backend).await;
    let tags = json!({"user": "u-7"});
    let session = open_session(
        &app,
        &key,
        json!({"providers": ["acme"], "uses": 2, "tags": tags, "email": "Owner@Acme.example"}),
    )
    .await;
    assert_eq!(session["providers"], json!(["acme"]));
    assert_eq!(session["uses"], 2);
    let token = session["token"].as_str().unwrap();
    assert!(token.len() >= 32, "{session}");
    let url = page(&app, token, "acme");

    // The page names tenant, provider and person, any number of times.
    let person = new_browser();
    for _ in 0..3 {
        let text = open_page(&person, &url).await;
        assert!(text.contains("Connect Acme CRM to Acme"), "{text}");
        assert!(text.contains("owner@acme.example"), "{text}");
        assert!(!text.contains("works once"), "{text}");
    }
    assert_eq!(uses_left(&app), vec![2], "a page view spends nothing");

    let (state, challenge) = follow(&fake, &person, &url).await;
    assert_eq!(uses_left(&app), vec![1]);
    mount_exchange(&fake, &challenge, "at-s", "rt-s").await;
    let res = person.get(callback_url(&app, &state)).send().await.unwrap();
    assert_eq!(res.status(), 303, "{:?}", res.text().await);
    let (_, token_body) = app
        .get_json(&format!("{API}/acme/connections/acme/token"), &key)
        .await;
    assert_eq!(token_body["access_token"], "at-s");
    let c = app.acme_connection("acme");
    assert_eq!(c.tags().map(|t| t.to_value()), Some(tags));

    // A second click (another browser, say the popup was closed) goes on;
    // a third finds the session used up.
    let other = new_browser();
    follow(&fake, &other, &url).await;
    assert_eq!(uses_left(&app), vec![0]);
    let res = new_browser().get(&url).send().await.unwrap();
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("used up"), "{text}");
}

async fn a_session_refuses_what_it_does_not_cover_and_spends_nothing(backend: Backend) {
    let (app, _fake, key) = unconnected(backend).await;
    let session = open_session(&app, &key, json!({"providers": ["acme"]})).await;
    let token = session["token"].as_str().unwrap();
    let person = new_browser();
    let csrf = crate::helpers::csrf_in(&open_page(&person, &page(&app, token, "acme")).await)
        .unwrap()
        .to_string();
    for (t, provider) in [(token, "demo"), (token, "nope"), ("not-a-session", "acme")] {
        let url = page(&app, t, provider);
        let res = person.get(&url).send().await.unwrap();
        assert!(
            [400, 404].contains(&res.status().as_u16()),
            "{url}: {}",
            res.status()
        );
        let res = person
            .post(&url)
            .form(&[("csrf", csrf.as_str())])
            .send()
            .await
            .unwrap();
        assert!(
            [400, 404].contains(&res.status().as_u16()),
            "{url}: {}",
            res.status()
        );
    }
    assert_eq!(uses_left(&app), vec![10], "the default, unspent");
}

async fn an_expired_session_is_refused(backend: Backend) {
    let (app, _fake, key) = unconnected(backend).await;
    let session = open_session(&app, &key, json!({})).await;
    let expires = chrono::DateTime::parse_from_rfc3339(session["expires_at"].as_str().unwrap())
        .unwrap()
        .timestamp();
    let ttl = expires - chrono::Utc::now().timestamp();
    assert!((1780..=1801).contains(&ttl), "default 30 minutes: {ttl}");
    assert!(
        session["providers"]
            .as_array()
            .unwrap()
            .contains(&json!("acme")),
        "every provider connected by a link, by default: {session}"
    );
    diesel::update(connect_sessions::table)
        .set(connect_sessions::expires_at.eq(tether::db::now() - chrono::Duration::seconds(1)))
        .execute(&mut app.conn())
        .unwrap();
    let url = page(&app, session["token"].as_str().unwrap(), "acme");
    let res = new_browser().get(&url).send().await.unwrap();
    assert_eq!(res.status(), 400);
}

async fn a_bad_session_request_is_a_400_that_creates_nothing(backend: Backend) {
    let (app, _fake, key) = unconnected(backend).await;
    for (body, status, code) in [
        (json!({"expires_in": 10}), 400, "invalid_expires_in"),
        (json!({"uses": 0}), 400, "invalid_request"),
        (json!({"uses": 101}), 400, "invalid_request"),
        (json!({"providers": ["nope"]}), 404, "not_found"),
        (json!({"tags": {"a": {"nested": 1}}}), 400, "invalid_tags"),
        (json!({"email": "not an email"}), 400, "invalid_email"),
        (json!({"colour": "red"}), 400, "invalid_json"),
    ] {
        let res = app
            .api_post(
                &format!("{API}/acme/connect-sessions"),
                &key,
                Some(body.clone()),
            )
            .await;
        assert_eq!(error_of(res).await, (status, code.into()), "{body}");
    }
    assert!(uses_left(&app).is_empty(), "no session was created");
}
