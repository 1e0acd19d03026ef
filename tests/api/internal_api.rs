//! The internal API for the CRM's services (DESIGN.md section 5): API keys,
//! tenant isolation, fresh tokens, refresh and disconnect, connect links,
//! provisioning, the proxy, the OpenAPI document and the metrics it feeds.

use crate::backend_tests;
use crate::helpers::{
    connect, mount_exchange, query_param, signed_in, spawn_app_with_provider, Backend,
    FakeProvider, TestApp, ACCOUNT, ACME_ISSUER,
};
use diesel::prelude::*;
use serde_json::{json, Value};
use tether::db::models::api_key::ApiKey;
use tether::db::models::tenant::Tenant;
use tether::db::schema::{connect_links, connections};
use wiremock::matchers::{body_json, body_string_contains, header, method, path};
use wiremock::{Mock, ResponseTemplate};

backend_tests!(
    requests_without_a_valid_api_key_get_401_unauthorized_json,
    a_key_for_one_tenant_gets_403_on_every_route_of_another_tenant_and_changes_nothing,
    a_tenant_scoped_key_gets_the_same_403_for_a_tenant_that_does_not_exist,
    a_global_key_gets_404_for_an_unknown_tenant_and_for_unknown_or_disabled_providers,
    a_warm_token_is_returned_as_stored_with_no_store_and_no_provider_call,
    a_token_expiring_within_min_ttl_is_refreshed_once_first_and_keeps_the_refresh_token,
    an_invalid_min_ttl_is_a_400,
    a_connection_that_needs_reconnect_gets_409_needs_reconnect,
    a_still_valid_token_is_handed_out_while_the_provider_fails_to_refresh_it,
    an_expired_token_while_the_provider_is_down_gets_503_with_retry_after,
    a_tenant_without_a_connection_gets_404_for_its_token,
    post_refresh_forces_exactly_one_refresh,
    delete_revokes_at_the_provider_and_leaves_the_tenant_not_connected,
    a_connect_link_connects_the_tenant_in_a_browser_without_signing_in,
    a_connect_link_works_only_once,
    an_expired_connect_link_is_refused,
    a_connect_links_callback_in_another_browser_is_rejected_and_stores_nothing,
    a_bad_connect_link_request_is_a_400_and_creates_no_link,
    an_admin_key_provisions_a_tenant_then_renames_it,
    a_non_admin_key_cannot_provision_a_tenant,
    a_malformed_tenant_id_is_refused_with_400_and_creates_nothing,
    the_proxy_forwards_method_query_and_body_with_the_connections_token_not_the_api_key,
    a_provider_401_through_the_proxy_refreshes_once_and_retries_with_the_new_token,
    a_provider_redirect_through_the_proxy_is_returned_not_followed,
    proxy_paths_that_escape_the_api_base_are_400_and_reach_no_provider,
    the_openapi_document_is_public_json_and_documents_every_api_route,
    metrics_count_token_requests_and_connections_by_status,
);

const API: &str = "/api/v1/tenants";

/// An app with tenant `acme` connected to the fake `acme` (tokens at-1 /
/// rt-1, an hour to live) and an API key scoped to `acme`.
async fn connected(backend: Backend) -> (TestApp, FakeProvider, String) {
    let (app, fake) = signed_in(backend, "post").await;
    let res = connect(&app, &fake, "at-1", "rt-1").await;
    assert_eq!(res.status(), 303, "{:?}", res.text().await);
    let key = app.api_key(Some("acme"), false);
    (app, fake, key)
}

/// An app with tenant `acme` (not connected) and a global API key.
async fn unconnected(backend: Backend) -> (TestApp, FakeProvider, String) {
    let fake = FakeProvider::start().await;
    let app = spawn_app_with_provider(backend, &fake, "post").await;
    Tenant::create(&mut app.conn(), "acme", "Acme").unwrap();
    let key = app.api_key(None, false);
    (app, fake, key)
}

/// A client like the CRM's services: no cookies, no redirects followed.
fn service() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A new browser: its own cookie jar, redirects not followed.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .build()
        .unwrap()
}

async fn send(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    key: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut req = service()
        .request(method, format!("{}{path}", app.address))
        .bearer_auth(key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.unwrap()
}

async fn get(app: &TestApp, path: &str, key: &str) -> reqwest::Response {
    send(app, reqwest::Method::GET, path, key, None).await
}

/// The status and error code of a JSON error response.
async fn error_of(res: reqwest::Response) -> (u16, String) {
    let status = res.status().as_u16();
    let content_type = res.headers()["content-type"].to_str().unwrap().to_string();
    let body = res.text().await.unwrap();
    assert!(
        content_type.starts_with("application/json"),
        "{status} {content_type}: {body}"
    );
    let v: Value = serde_json::from_str(&body).unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    (status, v["error"]["code"].as_str().unwrap().to_string())
}

/// Makes the stored access token expire `secs` seconds from now (negative: ago).
/// Makes the access token one issued an hour ago that expires in `secs`.
fn expire_in(app: &TestApp, secs: i64) {
    let id = app.acme_account("acme", ACCOUNT).id;
    let t = tether::db::now();
    diesel::update(connections::table.find(&id))
        .set((
            connections::expires_at.eq(Some(t + chrono::Duration::seconds(secs))),
            connections::last_refreshed_at.eq(Some(t - chrono::Duration::hours(1))),
        ))
        .execute(&mut app.conn())
        .unwrap();
}

fn link_count(app: &TestApp) -> i64 {
    connect_links::table
        .count()
        .get_result(&mut app.conn())
        .unwrap()
}

/// The provider's answer to a refresh with rt-1: a new access token, no new refresh token.
async fn mount_refresh(fake: &FakeProvider, access: &str) {
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_string_contains("grant_type=refresh_token"))
        .and(body_string_contains("refresh_token=rt-1"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"access_token": access, "expires_in": 7200})),
        )
        .expect(1)
        .named("refresh")
        .mount(&fake.server)
        .await;
}

// ---------------------------------------------------------------- auth

async fn requests_without_a_valid_api_key_get_401_unauthorized_json(backend: Backend) {
    let (app, fake, _) = connected(backend).await;
    let acme = app.tenant("acme");
    // Revoked before its first use: validated keys are cached for a few seconds.
    let (revoked, revoked_secret) =
        ApiKey::create(&mut app.conn(), "old", Some(&acme.id), false).unwrap();
    ApiKey::revoke(&mut app.conn(), &revoked.prefix).unwrap();
    let url = format!("{}{API}/acme/connections/acme/token", app.address);
    let before = fake.calls().await;

    let none = service().get(&url).send().await.unwrap();
    assert_eq!(error_of(none).await, (401, "unauthorized".into()));
    for authorization in [
        "Basic Y3JtOnNlY3JldA==".to_string(),
        "Bearer".to_string(),
        "Bearer not-a-key".to_string(),
        "bearer tth_abc_def".to_string(),
        format!("Bearer tth_zzzzzz_{}", "x".repeat(43)),
        format!("Bearer {}", revoked_secret.expose()),
    ] {
        let res = service()
            .get(&url)
            .header("authorization", &authorization)
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_of(res).await,
            (401, "unauthorized".into()),
            "{authorization}"
        );
    }
    assert_eq!(fake.calls().await, before);
}

/// Every route of the API for `tenant`, with a body where one is needed.
fn every_route(tenant: &str) -> Vec<(reqwest::Method, String, Option<Value>)> {
    use reqwest::Method;
    let t = format!("{API}/{tenant}");
    vec![
        (Method::GET, format!("{t}/connections"), None),
        (Method::GET, format!("{t}/connections/acme"), None),
        (Method::GET, format!("{t}/connections/acme/token"), None),
        (
            Method::GET,
            format!("{t}/connections/acme/token?min_ttl=0"),
            None,
        ),
        (Method::POST, format!("{t}/connections/acme/refresh"), None),
        (Method::DELETE, format!("{t}/connections/acme"), None),
        (
            Method::POST,
            format!("{t}/connect-links"),
            Some(json!({"provider": "acme"})),
        ),
        (
            Method::GET,
            format!("{t}/proxy/acme/contacts?limit=5"),
            None,
        ),
        (
            Method::POST,
            format!("{t}/proxy/acme/contacts"),
            Some(json!({"name": "Ada"})),
        ),
        (Method::PUT, t.clone(), Some(json!({"name": "Taken Over"}))),
    ]
}

async fn a_key_for_one_tenant_gets_403_on_every_route_of_another_tenant_and_changes_nothing(
    backend: Backend,
) {
    let (app, fake, _) = connected(backend).await;
    Tenant::create(&mut app.conn(), "other", "Other").unwrap();
    let others = app.api_key(Some("other"), false);
    let others_admin = app.api_key(Some("other"), true);
    // The keys work for their own tenant.
    let own = get(&app, &format!("{API}/other/connections"), &others).await;
    assert_eq!(own.status(), 200);
    let before = app.snapshot();
    let provider_calls = fake.calls().await;

    for key in [&others, &others_admin] {
        for (m, p, body) in every_route("acme") {
            let res = send(&app, m.clone(), &p, key, body).await;
            assert_eq!(error_of(res).await, (403, "forbidden".into()), "{m} {p}");
        }
    }

    assert_eq!(app.snapshot(), before, "acme's connection is unchanged");
    assert_eq!(
        app.acme_account("acme", ACCOUNT)
            .tokens(&app.ctx.keys)
            .unwrap()
            .unwrap()
            .access_token
            .expose(),
        "at-1"
    );
    let acme = app.tenant("acme");
    assert_eq!(acme.name, "acme", "not renamed");
    assert_eq!(link_count(&app), 0);
    assert_eq!(
        fake.calls().await,
        provider_calls,
        "no refresh, revocation or proxied call reached the provider"
    );
}

async fn a_tenant_scoped_key_gets_the_same_403_for_a_tenant_that_does_not_exist(backend: Backend) {
    let (app, _fake, _) = connected(backend).await;
    Tenant::create(&mut app.conn(), "other", "Other").unwrap();
    let others = app.api_key(Some("other"), false);
    let others_admin = app.api_key(Some("other"), true);
    let before = app.snapshot();
    for key in [&others, &others_admin] {
        for ((m, existing, body), (_, missing, _)) in
            every_route("acme").into_iter().zip(every_route("ghost"))
        {
            let a = send(&app, m.clone(), &existing, key, body.clone()).await;
            let (a_status, a_body) = (a.status(), a.text().await.unwrap());
            let b = send(&app, m.clone(), &missing, key, body).await;
            let (b_status, b_body) = (b.status(), b.text().await.unwrap());
            assert_eq!(b_status, 403, "{m} {missing}: {b_body}");
            assert_eq!(
                (a_status, a_body),
                (b_status, b_body),
                "{m}: an existing tenant and a missing one look the same"
            );
        }
    }
    assert_eq!(app.snapshot(), before, "no tenant was created");
}

async fn a_global_key_gets_404_for_an_unknown_tenant_and_for_unknown_or_disabled_providers(
    backend: Backend,
) {
    let (app, _fake, _) = connected(backend).await;
    let global = app.api_key(None, false);
    for p in [
        format!("{API}/ghost/connections"),
        format!("{API}/ghost/connections/acme"),
        format!("{API}/ghost/connections/acme/token"),
        format!("{API}/ghost/proxy/acme/contacts"),
    ] {
        let res = get(&app, &p, &global).await;
        assert_eq!(error_of(res).await, (404, "not_found".into()), "{p}");
    }
    // `nosuch` is in no catalogue; `hubspot` is a preset without credentials here.
    for provider in ["nosuch", "hubspot", "NOT-A-KEY"] {
        for p in [
            format!("{API}/acme/connections/{provider}"),
            format!("{API}/acme/connections/{provider}/token"),
            format!("{API}/acme/proxy/{provider}/contacts"),
        ] {
            let res = get(&app, &p, &global).await;
            assert_eq!(error_of(res).await, (404, "not_found".into()), "{p}");
        }
        let res = send(
            &app,
            reqwest::Method::POST,
            &format!("{API}/acme/connect-links"),
            &global,
            Some(json!({"provider": provider})),
        )
        .await;
        assert_eq!(error_of(res).await, (404, "not_found".into()), "{provider}");
    }
    assert_eq!(link_count(&app), 0);
}

// ---------------------------------------------------------------- token

async fn a_warm_token_is_returned_as_stored_with_no_store_and_no_provider_call(backend: Backend) {
    let (app, fake, key) = connected(backend).await;
    let before = app.snapshot();
    let provider_calls = fake.calls().await;
    let res = get(&app, &format!("{API}/acme/connections/acme/token"), &key).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["access_token"], "at-1");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scopes"], json!(["contacts.read"]));
    assert_eq!(body["metadata"], json!({"locationId": "loc_9"}));
    let expires_in = body["expires_in"].as_i64().unwrap();
    assert!((3590..=3600).contains(&expires_in), "{body}");
    let expires_at = body["expires_at"].as_str().unwrap();
    assert!(expires_at.ends_with('Z'), "{expires_at}");
    let stored = app.acme_account("acme", ACCOUNT).expires_at.unwrap();
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(expires_at)
            .unwrap()
            .timestamp(),
        stored.and_utc().timestamp()
    );
    assert!(
        !body.to_string().contains("rt-1"),
        "never the refresh token"
    );
    assert_eq!(fake.calls().await, provider_calls, "no provider call");
    assert_eq!(app.snapshot(), before);
}

async fn a_token_expiring_within_min_ttl_is_refreshed_once_first_and_keeps_the_refresh_token(
    backend: Backend,
) {
    let (app, fake, key) = connected(backend).await;
    expire_in(&app, 30);
    mount_refresh(&fake, "at-2").await;
    let res = get(&app, &format!("{API}/acme/connections/acme/token"), &key).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["access_token"], "at-2");
    assert!(body["expires_in"].as_i64().unwrap() > 7000, "{body}");
    assert_eq!(body["metadata"], json!({"locationId": "loc_9"}));
    // Warm again: asking once more does not refresh again.
    let again: Value = get(&app, &format!("{API}/acme/connections/acme/token"), &key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["access_token"], "at-2");
    assert_eq!(fake.refresh_calls().await, 1, "exactly one provider call");
    let tokens = app
        .acme_account("acme", ACCOUNT)
        .tokens(&app.ctx.keys)
        .unwrap()
        .unwrap();
    assert_eq!(tokens.access_token.expose(), "at-2");
    assert_eq!(
        tokens.refresh_token.unwrap().expose(),
        "rt-1",
        "kept: the response had none"
    );
}

async fn an_invalid_min_ttl_is_a_400(backend: Backend) {
    let (app, fake, key) = connected(backend).await;
    let provider_calls = fake.calls().await;
    for q in ["-1", "abc", "86401", "1.5", ""] {
        let res = get(
            &app,
            &format!("{API}/acme/connections/acme/token?min_ttl={q}"),
            &key,
        )
        .await;
        let (status, code) = error_of(res).await;
        assert_eq!(status, 400, "min_ttl={q}");
        assert!(
            code == "invalid_min_ttl" || code == "invalid_query",
            "{q}: {code}"
        );
    }
    let ok = get(
        &app,
        &format!("{API}/acme/connections/acme/token?min_ttl=0"),
        &key,
    )
    .await;
    assert_eq!(ok.status(), 200);
    assert_eq!(fake.calls().await, provider_calls);
}

async fn a_connection_that_needs_reconnect_gets_409_needs_reconnect(backend: Backend) {
    let (app, fake, key) = connected(backend).await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_string_contains("grant_type=refresh_token"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"error": "invalid_grant"})))
        .expect(1)
        .mount(&fake.server)
        .await;
    let res = send(
        &app,
        reqwest::Method::POST,
        &format!("{API}/acme/connections/acme/refresh"),
        &key,
        None,
    )
    .await;
    assert_eq!(error_of(res).await, (409, "needs_reconnect".into()));
    // Even a token that looks valid is not handed out, and the provider is not asked again.
    for q in ["", "?min_ttl=0", "?min_ttl=86400"] {
        let res = get(&app, &format!("{API}/acme/connections/acme/token{q}"), &key).await;
        assert_eq!(error_of(res).await, (409, "needs_reconnect".into()), "{q}");
    }
    let status: Value = get(&app, &format!("{API}/acme/connections/acme"), &key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["status"], "needs_reconnect");
}

async fn a_still_valid_token_is_handed_out_while_the_provider_fails_to_refresh_it(
    backend: Backend,
) {
    let (app, fake, key) = connected(backend).await;
    expire_in(&app, 30);
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(503))
        .expect(1)
        .mount(&fake.server)
        .await;
    let res = get(&app, &format!("{API}/acme/connections/acme/token"), &key).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["access_token"], "at-1");
    let expires_in = body["expires_in"].as_i64().unwrap();
    assert!((1..=30).contains(&expires_in), "{body}");
}

async fn an_expired_token_while_the_provider_is_down_gets_503_with_retry_after(backend: Backend) {
    let (app, fake, key) = connected(backend).await;
    expire_in(&app, -5);
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(503))
        .expect(1)
        .mount(&fake.server)
        .await;
    let res = get(&app, &format!("{API}/acme/connections/acme/token"), &key).await;
    assert_eq!(res.status(), 503);
    let retry_after: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1, "{retry_after}");
    let (_, code) = error_of(res).await;
    assert_eq!(code, "refresh_failed");
}

async fn a_tenant_without_a_connection_gets_404_for_its_token(backend: Backend) {
    let (app, fake, key) = unconnected(backend).await;
    for (m, p) in [
        (
            reqwest::Method::GET,
            format!("{API}/acme/connections/acme/token"),
        ),
        (
            reqwest::Method::POST,
            format!("{API}/acme/connections/acme/refresh"),
        ),
        (
            reqwest::Method::DELETE,
            format!("{API}/acme/connections/acme"),
        ),
        (
            reqwest::Method::GET,
            format!("{API}/acme/proxy/acme/contacts"),
        ),
    ] {
        let res = send(&app, m.clone(), &p, &key, None).await;
        assert_eq!(error_of(res).await, (404, "not_found".into()), "{m} {p}");
    }
    let status: Value = get(&app, &format!("{API}/acme/connections/acme"), &key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["status"], "not_connected");
    assert_eq!(fake.calls().await, 0);
}

// ------------------------------------------------------ refresh, disconnect

async fn post_refresh_forces_exactly_one_refresh(backend: Backend) {
    let (app, fake, key) = connected(backend).await;
    let version = app.acme_account("acme", ACCOUNT).version;
    mount_refresh(&fake, "at-2").await;
    let res = send(
        &app,
        reqwest::Method::POST,
        &format!("{API}/acme/connections/acme/refresh"),
        &key,
        None,
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "connected");
    assert!(
        !body.to_string().contains("at-2"),
        "status, not the token: {body}"
    );
    assert_eq!(app.acme_account("acme", ACCOUNT).version, version + 1);
    let token: Value = get(&app, &format!("{API}/acme/connections/acme/token"), &key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(token["access_token"], "at-2");
    assert_eq!(
        fake.calls_to("/token").await,
        2,
        "the exchange and one refresh"
    );
}

async fn delete_revokes_at_the_provider_and_leaves_the_tenant_not_connected(backend: Backend) {
    let (app, fake, key) = connected(backend).await;
    Mock::given(method("POST"))
        .and(path("/revoke"))
        .and(body_string_contains("token=rt-1"))
        .and(body_string_contains("token_type_hint=refresh_token"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&fake.server)
        .await;
    let res = send(
        &app,
        reqwest::Method::DELETE,
        &format!("{API}/acme/connections/acme"),
        &key,
        None,
    )
    .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "not_connected");
    assert_eq!(fake.calls_to("/revoke").await, 1);
    let status: Value = get(&app, &format!("{API}/acme/connections/acme"), &key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["status"], "not_connected");
    assert!(status["account"].is_null());
    let list: Value = get(&app, &format!("{API}/acme/connections"), &key)
        .await
        .json()
        .await
        .unwrap();
    let acme = list["connections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["provider"] == "acme")
        .unwrap()
        .clone();
    assert_eq!(acme["status"], "not_connected");
    assert!(app.acme_account("acme", ACCOUNT).token_ciphertext.is_none());
    let token = get(&app, &format!("{API}/acme/connections/acme/token"), &key).await;
    assert_eq!(error_of(token).await, (404, "not_found".into()));
}

// ---------------------------------------------------------- connect links

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

// ---------------------------------------------------------- provisioning

async fn an_admin_key_provisions_a_tenant_then_renames_it(backend: Backend) {
    let (app, _fake, _) = unconnected(backend).await;
    let admin = app.api_key(None, true);
    let put = |name: &'static str| {
        send(
            &app,
            reqwest::Method::PUT,
            "/api/v1/tenants/crm-client-7",
            &admin,
            Some(json!({ "name": name })),
        )
    };
    let res = put("Main Street Dental").await;
    assert_eq!(res.status(), 201);
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body,
        json!({"tenant": "crm-client-7", "name": "Main Street Dental", "created": true})
    );
    let created = app.tenant("crm-client-7");

    let res = put("Main Street Dental & Co").await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["created"], false);
    assert_eq!(body["name"], "Main Street Dental & Co");
    let renamed = app.tenant("crm-client-7");
    assert_eq!(renamed.id, created.id, "the same tenant");
    assert_eq!(renamed.name, "Main Street Dental & Co");
    // The provisioned tenant is usable at once.
    let list = get(&app, &format!("{API}/crm-client-7/connections"), &admin).await;
    assert_eq!(list.status(), 200);
}

async fn a_non_admin_key_cannot_provision_a_tenant(backend: Backend) {
    let (app, _fake, global) = unconnected(backend).await;
    let scoped = app.api_key(Some("acme"), false);
    let before = app.snapshot();
    for (key, tenant) in [(&global, "newco"), (&global, "acme"), (&scoped, "acme")] {
        let res = send(
            &app,
            reqwest::Method::PUT,
            &format!("{API}/{tenant}"),
            key,
            Some(json!({"name": "Renamed"})),
        )
        .await;
        assert_eq!(error_of(res).await, (403, "forbidden".into()), "{tenant}");
    }
    assert_eq!(app.snapshot(), before);
    assert!(Tenant::by_external_id(&mut app.conn(), "newco")
        .unwrap()
        .is_none());
    let acme = app.tenant("acme");
    assert_eq!(acme.name, "Acme");
}

/// `a b` is not a tenant id. Provisioning answers 400 `invalid_tenant`: the
/// id is input that would be stored, and the caller must learn it is
/// malformed. (The read routes answer 404 for the same id instead, since a
/// malformed id cannot name an existing tenant.)
async fn a_malformed_tenant_id_is_refused_with_400_and_creates_nothing(backend: Backend) {
    let (app, _fake, _) = unconnected(backend).await;
    let admin = app.api_key(None, true);
    let before = app.snapshot();
    for id in ["a%20b", "a%2Fb", "%C3%A9t%C3%A9", &"x".repeat(129)] {
        let res = send(
            &app,
            reqwest::Method::PUT,
            &format!("{API}/{id}"),
            &admin,
            Some(json!({"name": "Bad"})),
        )
        .await;
        let (status, code) = error_of(res).await;
        assert_eq!((status, code.as_str()), (400, "invalid_tenant"), "{id}");
    }
    let res = get(&app, &format!("{API}/a%20b/connections"), &admin).await;
    assert_eq!(error_of(res).await, (404, "not_found".into()));
    assert_eq!(app.snapshot(), before, "no tenant was created");
}

// ---------------------------------------------------------------- proxy

async fn the_proxy_forwards_method_query_and_body_with_the_connections_token_not_the_api_key(
    backend: Backend,
) {
    let (app, fake, key) = connected(backend).await;
    Mock::given(method("GET"))
        .and(path("/api/contacts"))
        .and(wiremock::matchers::query_param("limit", "5"))
        .and(header("authorization", "Bearer at-1"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            r#"{"contacts":[{"id":"c1"}]}"#,
            "application/json; charset=utf-8",
        ))
        .expect(1)
        .mount(&fake.server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/contacts"))
        .and(header("authorization", "Bearer at-1"))
        .and(header("content-type", "application/json"))
        .and(body_json(json!({"name": "Ada"})))
        .respond_with(
            ResponseTemplate::new(201).set_body_raw(r#"{"id":"c2"}"#, "application/vnd.acme+json"),
        )
        .expect(1)
        .mount(&fake.server)
        .await;

    let res = get(
        &app,
        &format!("{API}/acme/proxy/acme/contacts?limit=5"),
        &key,
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-type"],
        "application/json; charset=utf-8"
    );
    assert_eq!(res.text().await.unwrap(), r#"{"contacts":[{"id":"c1"}]}"#);

    let res = send(
        &app,
        reqwest::Method::POST,
        &format!("{API}/acme/proxy/acme/contacts"),
        &key,
        Some(json!({"name": "Ada"})),
    )
    .await;
    assert_eq!(res.status(), 201);
    assert_eq!(res.headers()["content-type"], "application/vnd.acme+json");
    assert_eq!(res.text().await.unwrap(), r#"{"id":"c2"}"#);

    let proxied: Vec<_> = fake
        .requests()
        .await
        .into_iter()
        .filter(|r| r.url.path().starts_with("/api/"))
        .collect();
    assert_eq!(proxied.len(), 2);
    // It arrived at the fake provider, under its API base, with the query as sent.
    assert_eq!(proxied[0].url.path(), "/api/contacts");
    assert_eq!(proxied[0].url.query(), Some("limit=5"));
    for r in &proxied {
        assert_eq!(r.headers["authorization"], "Bearer at-1");
        for (name, value) in &r.headers {
            assert!(
                !String::from_utf8_lossy(value.as_bytes()).contains(&key),
                "the API key leaked to the provider in {name}"
            );
        }
        assert!(!String::from_utf8_lossy(&r.body).contains(&key));
    }
    assert_eq!(
        fake.calls_to("/token").await,
        1,
        "only the exchange: no refresh"
    );
}

async fn a_provider_401_through_the_proxy_refreshes_once_and_retries_with_the_new_token(
    backend: Backend,
) {
    let (app, fake, key) = connected(backend).await;
    Mock::given(method("GET"))
        .and(path("/api/contacts"))
        .and(header("authorization", "Bearer at-1"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({"error": "expired"})))
        .expect(1)
        .mount(&fake.server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/contacts"))
        .and(header("authorization", "Bearer at-2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"contacts": []})))
        .expect(1)
        .mount(&fake.server)
        .await;
    mount_refresh(&fake, "at-2").await;
    let res = get(&app, &format!("{API}/acme/proxy/acme/contacts"), &key).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body, json!({"contacts": []}));
    assert_eq!(
        fake.calls_to("/api/contacts").await,
        2,
        "one call, one retry"
    );
    assert_eq!(
        fake.calls_to("/token").await,
        2,
        "the exchange and one refresh"
    );
    let tokens = app
        .acme_account("acme", ACCOUNT)
        .tokens(&app.ctx.keys)
        .unwrap()
        .unwrap();
    assert_eq!(tokens.access_token.expose(), "at-2");
}

async fn a_provider_redirect_through_the_proxy_is_returned_not_followed(backend: Backend) {
    let (app, fake, key) = connected(backend).await;
    let elsewhere = format!("{}/api/elsewhere", fake.server.uri());
    Mock::given(method("GET"))
        .and(path("/api/moved"))
        .respond_with(ResponseTemplate::new(302).insert_header("location", elsewhere.as_str()))
        .expect(1)
        .mount(&fake.server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/elsewhere"))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&fake.server)
        .await;
    let res = get(&app, &format!("{API}/acme/proxy/acme/moved"), &key).await;
    assert_eq!(res.status(), 302);
    assert_eq!(res.headers()["location"], elsewhere.as_str());
    assert_eq!(fake.calls_to("/api/elsewhere").await, 0, "not followed");
}

/// Sends `GET {target}` byte for byte, as a client that does not normalise
/// dot segments would (reqwest resolves `..` and `%2e%2e` before sending).
async fn raw_get(app: &TestApp, target: &str, key: &str) -> (u16, String) {
    let addr = app.address.trim_start_matches("http://").to_string();
    let request = format!(
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n"
    );
    actix_web::rt::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(&addr).unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut out = Vec::new();
        stream.read_to_end(&mut out).unwrap();
        let out = String::from_utf8_lossy(&out).into_owned();
        let status = out
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status line: {out}"));
        (status, out)
    })
    .await
    .unwrap()
}

async fn proxy_paths_that_escape_the_api_base_are_400_and_reach_no_provider(backend: Backend) {
    let (app, fake, key) = connected(backend).await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(200))
        .mount(&fake.server)
        .await;
    let provider_calls = fake.calls().await;
    let proxy = format!("{API}/acme/proxy/acme");
    for tail in [
        "../token",
        "contacts/../../token",
        "%2e%2e/token",
        "%2E%2E/%2e%2e/token",
        "..%2Ftoken",
        "https://evil.example/x",
        "http:%2F%2Fevil.example/x",
        "//evil.example/x",
    ] {
        let (status, response) = raw_get(&app, &format!("{proxy}/{tail}"), &key).await;
        assert_eq!(status, 400, "{tail}: {response}");
        assert!(response.contains("invalid_path"), "{tail}: {response}");
    }
    assert_eq!(
        fake.calls().await,
        provider_calls,
        "no request reached the provider"
    );
}

// ------------------------------------------------------- openapi, metrics

/// The routes registered in src/web/api.rs, as (method, path with `{}` for
/// each parameter); `to` means any method.
fn registered_routes() -> Vec<(String, String)> {
    let src = include_str!("../../src/web/api.rs");
    let start = src.find("pub fn routes").expect("routes()");
    let body = &src[start..start + src[start..].find("\n}\n").expect("end of routes()")];
    let scope = body
        .split("web::scope(\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("the tenant scope");
    // Resources registered on their own: `web::resource("/path")` followed
    // by `.route(web::verb()...)`.
    let resources = body.split("web::resource(\"").skip(1).flat_map(|chunk| {
        let (p, rest) = chunk.split_once('"').unwrap();
        let rest = rest.split("web::resource(").next().unwrap();
        rest.split(".route(web::")
            .skip(1)
            .map(|r| (r.split('(').next().unwrap().to_string(), generic(p)))
            .collect::<Vec<_>>()
    });
    // rustfmt may put a route's arguments on lines of their own.
    body.split(".route(")
        .skip(1)
        .filter(|chunk| chunk.trim_start().starts_with('"'))
        .map(|chunk| {
            let chunk = chunk.trim_start().strip_prefix('"').expect("a route path");
            let (p, rest) = chunk.split_once('"').unwrap();
            let verb = rest
                .split("web::")
                .nth(1)
                .and_then(|s| s.split('(').next())
                .unwrap()
                .to_string();
            let full = if p.starts_with("/api/") {
                p.to_string()
            } else {
                format!("{scope}{p}")
            };
            (verb, generic(&full))
        })
        .chain(resources)
        .collect()
}

/// A path template with every `{name}` or `{name:regex}` as `{}`.
fn generic(template: &str) -> String {
    let mut out = String::new();
    let mut depth = 0;
    for c in template.chars() {
        match c {
            '{' => {
                if depth == 0 {
                    out.push_str("{}");
                }
                depth += 1;
            }
            '}' => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

async fn the_openapi_document_is_public_json_and_documents_every_api_route(backend: Backend) {
    let (app, _fake, _) = unconnected(backend).await;
    let res = service()
        .get(format!("{}/api/v1/openapi.json", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "no key needed");
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let doc: Value = serde_json::from_str(&res.text().await.unwrap()).expect("valid JSON");
    assert!(doc["openapi"].as_str().unwrap().starts_with('3'));
    let paths = doc["paths"].as_object().expect("paths");
    let documented: std::collections::BTreeMap<String, &Value> =
        paths.iter().map(|(k, v)| (generic(k), v)).collect();

    let routes = registered_routes();
    assert_eq!(routes.len(), 10, "parsed every route: {routes:?}");
    for (verb, p) in &routes {
        let item = documented
            .get(p)
            .unwrap_or_else(|| panic!("{p} is not in openapi.json"));
        let verbs: Vec<&str> = if verb == "to" {
            vec!["get", "post", "put", "patch", "delete"]
        } else {
            vec![verb.as_str()]
        };
        for v in verbs {
            assert!(item.get(v).is_some(), "{v} {p} is not documented");
        }
    }
    for p in documented.keys() {
        assert!(
            routes.iter().any(|(_, r)| r == p),
            "{p} is documented but not registered"
        );
    }
}

async fn metrics_count_token_requests_and_connections_by_status(backend: Backend) {
    let (app, _fake, key) = connected(backend).await;
    let res = get(&app, &format!("{API}/acme/connections/acme/token"), &key).await;
    assert_eq!(res.status(), 200);
    let text = app.get("/metrics").await.text().await.unwrap();
    let count: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("tether_token_api_duration_seconds_count "))
        .unwrap_or_else(|| panic!("no token API count: {text}"))
        .trim()
        .parse()
        .unwrap();
    assert!(count >= 1, "{text}");
    assert!(
        text.lines()
            .any(|l| l == r#"tether_connections{status="connected"} 1"#),
        "{text}"
    );
}
