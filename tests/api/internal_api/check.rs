//! Checking a connection with its provider now (`POST .../check`, issue 23
//! point 8): the provider's account lookup is asked with the stored access
//! token and the answer says what it found. A valid token, a provider that
//! does not answer, or one without a lookup change nothing; a refused
//! access token is refreshed, which tells a lapsed token (renewed) from a
//! revoked grant (the connection then needs reconnecting, with an event);
//! a refused token that cannot be refreshed is the grant itself.

use super::{connected, mount_refresh, API};
use crate::backend_tests;
use crate::helpers::{
    error_of, invalid_grant, spawn_app_with_acme, spawn_app_with_providers, Backend, FakeProvider,
    TestApp, TestDb, ACCOUNT,
};
use serde_json::{json, Value};
use wiremock::matchers::{body_string_contains, header, method, path};
use wiremock::{Mock, ResponseTemplate};

backend_tests!(
    a_valid_token_is_said_valid_with_the_account_the_provider_names_and_nothing_changes,
    a_refused_token_whose_refresh_is_refused_leaves_the_connection_needing_reconnect_with_an_event,
    a_refused_token_that_refreshes_was_only_lapsed_and_is_valid_again,
    a_provider_that_does_not_answer_the_lookup_changes_nothing,
    a_refused_token_whose_refresh_fails_for_now_is_unreachable_not_revoked,
    a_refused_token_that_cannot_be_refreshed_is_the_grant_gone,
    a_provider_without_an_account_lookup_is_a_409_that_asks_nothing,
    another_tenants_key_may_not_check_a_connection,
);

const CHECK: &str = "/api/v1/tenants/acme/connections/acme/check";

/// The lookup's answer to `token`, over the one the connect mounted.
async fn lookup_answers(fake: &FakeProvider, token: &str, answer: ResponseTemplate) {
    Mock::given(method("GET"))
        .and(path("/me"))
        .and(header("authorization", format!("Bearer {token}").as_str()))
        .respond_with(answer)
        .with_priority(1)
        .mount(&fake.server)
        .await;
}

/// A resource server's refusal of a token (RFC 6750): 401, no body.
fn unauthorized() -> ResponseTemplate {
    ResponseTemplate::new(401).insert_header("www-authenticate", r#"Bearer error="invalid_token""#)
}

async fn check(app: &TestApp, key: &str) -> Value {
    let (status, body) = app.post_json(CHECK, key, None).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// The tenant's events of `kind`, as the events API lists them.
async fn events_of(app: &TestApp, key: &str, kind: &str) -> Vec<Value> {
    let (status, body) = app
        .get_json(&format!("{API}/acme/events?kind={kind}"), key)
        .await;
    assert_eq!(status, 200, "{body}");
    body["events"].as_array().unwrap().clone()
}

async fn a_valid_token_is_said_valid_with_the_account_the_provider_names_and_nothing_changes(
    backend: Backend,
) {
    let (app, fake, key) = connected(backend).await;
    let before = app.snapshot();
    let asked = fake.calls_to("/me").await;
    let body = check(&app, &key).await;
    assert_eq!(body["outcome"], "valid", "{body}");
    assert_eq!(
        body["account"],
        json!({"id": ACCOUNT, "name": "Main Street Dental"})
    );
    assert_eq!(body["same_account"], true);
    assert_eq!(body["connection_account"], ACCOUNT);
    assert_eq!(body["refreshed"], false);
    assert_eq!(body["status"], "connected");
    assert!(
        body["checked_at"].as_str().unwrap().ends_with('Z'),
        "{body}"
    );
    assert!(!body.to_string().contains("at-1"), "{body}");
    assert_eq!(fake.calls_to("/me").await, asked + 1, "asked once, now");
    assert_eq!(app.snapshot(), before, "nothing changed");

    // The provider now names another account for the same token.
    lookup_answers(
        &fake,
        "at-1",
        ResponseTemplate::new(200).set_body_json(json!({"sub": "acct-other", "name": "Other"})),
    )
    .await;
    let body = check(&app, &key).await;
    assert_eq!(body["outcome"], "valid");
    assert_eq!(body["account"]["id"], "acct-other");
    assert_eq!(body["same_account"], false);
    assert!(
        body["message"].as_str().unwrap().contains("acct-other"),
        "{body}"
    );
    assert_eq!(app.snapshot(), before, "nothing changed");
    assert_eq!(fake.refresh_calls().await, 0);
}

async fn a_refused_token_whose_refresh_is_refused_leaves_the_connection_needing_reconnect_with_an_event(
    backend: Backend,
) {
    let (app, fake, key) = connected(backend).await;
    lookup_answers(&fake, "at-1", unauthorized()).await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_string_contains("grant_type=refresh_token"))
        .respond_with(invalid_grant())
        .expect(1)
        .mount(&fake.server)
        .await;
    let body = check(&app, &key).await;
    assert_eq!(body["outcome"], "revoked", "{body}");
    assert_eq!(body["refreshed"], true);
    assert_eq!(body["status"], "needs_reconnect");
    assert_eq!(body["account"], Value::Null);
    assert_eq!(app.acme_connection("acme").status, "needs_reconnect");
    let events = events_of(&app, &key, "needs_reconnect").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["actor"], "api:crm");
    assert_eq!(events[0]["account"]["id"], ACCOUNT);

    // Checked again: still revoked, and nothing more is sent or recorded.
    let before = app.snapshot();
    let body = check(&app, &key).await;
    assert_eq!(body["outcome"], "revoked");
    assert_eq!(body["refreshed"], false);
    assert_eq!(fake.refresh_calls().await, 1);
    assert_eq!(app.snapshot(), before);
}

async fn a_refused_token_that_refreshes_was_only_lapsed_and_is_valid_again(backend: Backend) {
    let (app, fake, key) = connected(backend).await;
    lookup_answers(&fake, "at-1", unauthorized()).await;
    mount_refresh(&fake, "at-2").await;
    // Below the refusal mounted for at-2 further down.
    Mock::given(method("GET"))
        .and(path("/me"))
        .and(header("authorization", "Bearer at-2"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"sub": ACCOUNT, "name": "Renamed"})),
        )
        .with_priority(2)
        .mount(&fake.server)
        .await;
    let body = check(&app, &key).await;
    assert_eq!(body["outcome"], "valid", "{body}");
    assert_eq!(body["refreshed"], true);
    assert_eq!(body["same_account"], true);
    assert_eq!(body["account"]["name"], "Renamed");
    assert_eq!(body["status"], "connected");
    assert_eq!(fake.refresh_calls().await, 1);
    let (status, token) = app
        .get_json(&format!("{API}/acme/connections/acme/token"), &key)
        .await;
    assert_eq!(
        (status, token["access_token"].as_str()),
        (200, Some("at-2"))
    );
    assert!(events_of(&app, &key, "needs_reconnect").await.is_empty());

    // A token the lookup still refuses after a refresh that worked: the
    // grant holds, so the check says it was refused and marks nothing.
    lookup_answers(&fake, "at-2", unauthorized()).await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_string_contains("grant_type=refresh_token"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"access_token": "at-3", "expires_in": 3600})),
        )
        .with_priority(1)
        .mount(&fake.server)
        .await;
    lookup_answers(&fake, "at-3", unauthorized()).await;
    let body = check(&app, &key).await;
    assert_eq!(body["outcome"], "refused", "{body}");
    assert_eq!(body["status"], "connected");
    assert_eq!(app.acme_connection("acme").status, "connected");
    assert!(events_of(&app, &key, "needs_reconnect").await.is_empty());
}

async fn a_provider_that_does_not_answer_the_lookup_changes_nothing(backend: Backend) {
    let (app, fake, key) = connected(backend).await;
    let before = app.snapshot();
    lookup_answers(&fake, "at-1", ResponseTemplate::new(503)).await;
    let body = check(&app, &key).await;
    assert_eq!(body["outcome"], "unreachable", "{body}");
    assert_eq!(body["status"], "connected");
    assert_eq!(body["account"], Value::Null);
    assert!(
        body["message"].as_str().unwrap().contains("HTTP 503"),
        "{body}"
    );
    // Throttled is no answer either.
    lookup_answers(&fake, "at-1", ResponseTemplate::new(429)).await;
    assert_eq!(check(&app, &key).await["outcome"], "unreachable");
    assert_eq!(fake.refresh_calls().await, 0);
    assert_eq!(app.snapshot(), before, "nothing changed");
}

async fn a_refused_token_whose_refresh_fails_for_now_is_unreachable_not_revoked(backend: Backend) {
    let (app, fake, key) = connected(backend).await;
    lookup_answers(&fake, "at-1", unauthorized()).await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_string_contains("grant_type=refresh_token"))
        .respond_with(ResponseTemplate::new(503))
        .expect(1)
        .mount(&fake.server)
        .await;
    let body = check(&app, &key).await;
    assert_eq!(body["outcome"], "unreachable", "{body}");
    assert_eq!(body["refreshed"], true);
    // Recorded as any failed refresh is: retried later, not given up.
    assert_eq!(body["status"], "error");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("Check again later"),
        "{body}"
    );
    assert!(events_of(&app, &key, "needs_reconnect").await.is_empty());
    assert_eq!(events_of(&app, &key, "refresh_failed").await.len(), 1);
}

async fn a_refused_token_that_cannot_be_refreshed_is_the_grant_gone(backend: Backend) {
    let fake = FakeProvider::start().await;
    let app = spawn_app_with_acme(backend, &fake, r#"refresh = "none""#, &[]).await;
    let t = app.ensure_tenant("acme");
    let c = app.seed(&t.id, "acct-1", "rt-0", 3600, 3000);
    let key = app.api_key(Some("acme"), false);
    lookup_answers(&fake, "at-seed-rt-0", unauthorized()).await;
    let body = check(&app, &key).await;
    assert_eq!(body["outcome"], "revoked", "{body}");
    assert_eq!(body["refreshed"], false);
    assert_eq!(body["status"], "needs_reconnect");
    assert_eq!(fake.refresh_calls().await, 0, "nothing to refresh with");
    assert_eq!(app.connection(&c.id).status, "needs_reconnect");
    let events = events_of(&app, &key, "needs_reconnect").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["actor"], "api:crm");
    assert!(
        events[0]["detail"].as_str().unwrap().contains("check"),
        "{events:?}"
    );
    let (status, _) = app
        .get_json(&format!("{API}/acme/connections/acme/token"), &key)
        .await;
    assert_eq!(status, 409, "the token is not served any more");
}

async fn a_provider_without_an_account_lookup_is_a_409_that_asks_nothing(backend: Backend) {
    let fake = FakeProvider::start().await;
    let toml = fake
        .providers_toml("post")
        .lines()
        .filter(|l| !l.starts_with("userinfo_url"))
        .collect::<Vec<_>>()
        .join("\n");
    let app = spawn_app_with_providers(TestDb::new(backend), &toml, &[]).await;
    let t = app.ensure_tenant("acme");
    app.seed(&t.id, "acct-1", "rt-0", 3600, 3000);
    let key = app.api_key(Some("acme"), false);
    let before = app.snapshot();
    let res = app.api_post(CHECK, &key, None).await;
    assert_eq!(error_of(res).await, (409, "no_identity_lookup".to_string()));
    assert_eq!(fake.calls().await, 0);
    assert_eq!(app.snapshot(), before);
}

async fn another_tenants_key_may_not_check_a_connection(backend: Backend) {
    let (app, fake, _key) = connected(backend).await;
    app.ensure_tenant("other");
    let others = app.api_key(Some("other"), false);
    let asked = fake.calls().await;
    let res = app.api_post(CHECK, &others, None).await;
    assert_eq!(error_of(res).await, (403, "forbidden".to_string()));
    assert_eq!(fake.calls().await, asked, "the provider was not asked");
}
