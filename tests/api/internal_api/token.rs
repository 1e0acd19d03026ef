//! The token route: a warm token is returned as stored (no-store, no
//! provider call), one expiring within min_ttl is refreshed once first, a
//! still valid token is handed out while the provider fails, and otherwise
//! the answer says why not: 400 for a bad min_ttl, 409 needs_reconnect, 503
//! with Retry-After while the provider is down, 404 without a connection.

use super::{connected, mount_refresh, unconnected, API};
use crate::backend_tests;
use crate::helpers::{error_of, Backend, TestApp, ACCOUNT};
use diesel::prelude::*;
use serde_json::{json, Value};
use tether::db::schema::connections;
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, ResponseTemplate};

backend_tests!(
    a_warm_token_is_returned_as_stored_with_no_store_and_no_provider_call,
    a_token_expiring_within_min_ttl_is_refreshed_once_first_and_keeps_the_refresh_token,
    an_invalid_min_ttl_is_a_400,
    a_connection_that_needs_reconnect_gets_409_needs_reconnect,
    a_still_valid_token_is_handed_out_while_the_provider_fails_to_refresh_it,
    an_expired_token_while_the_provider_is_down_gets_503_with_retry_after,
    a_tenant_without_a_connection_gets_404_for_its_token,
    scopes_added_since_the_grant_are_listed_as_missing_and_the_card_asks_to_reconnect,
    offline_access_never_echoed_by_the_provider_is_not_missing,
);

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

async fn a_warm_token_is_returned_as_stored_with_no_store_and_no_provider_call(backend: Backend) {
    let (app, fake, key) = connected(backend).await;
    let before = app.snapshot();
    let provider_calls = fake.calls().await;
    let res = app
        .api_get(&format!("{API}/acme/connections/acme/token"), &key)
        .await;
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
    let res = app
        .api_get(&format!("{API}/acme/connections/acme/token"), &key)
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["access_token"], "at-2");
    assert!(body["expires_in"].as_i64().unwrap() > 7000, "{body}");
    assert_eq!(body["metadata"], json!({"locationId": "loc_9"}));
    // Warm again: asking once more does not refresh again.
    let (_, again) = app
        .get_json(&format!("{API}/acme/connections/acme/token"), &key)
        .await;
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
        let res = app
            .api_get(
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
    let ok = app
        .api_get(
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
    let res = app
        .api_post(&format!("{API}/acme/connections/acme/refresh"), &key, None)
        .await;
    assert_eq!(error_of(res).await, (409, "needs_reconnect".into()));
    // Even a token that looks valid is not handed out, and the provider is not asked again.
    for q in ["", "?min_ttl=0", "?min_ttl=86400"] {
        let res = app
            .api_get(&format!("{API}/acme/connections/acme/token{q}"), &key)
            .await;
        assert_eq!(error_of(res).await, (409, "needs_reconnect".into()), "{q}");
    }
    let (_, status) = app
        .get_json(&format!("{API}/acme/connections/acme"), &key)
        .await;
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
    let res = app
        .api_get(&format!("{API}/acme/connections/acme/token"), &key)
        .await;
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
    let res = app
        .api_get(&format!("{API}/acme/connections/acme/token"), &key)
        .await;
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

/// A missing connection is `not_connected`, naming the connect-link route,
/// distinct from an unknown tenant or provider (`not_found`): the chatbot
/// can tell "ask the person to connect" from "wrong id".
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
        let res = app.api(m.clone(), &p, &key, None).await;
        assert_eq!(res.status(), 404, "{m} {p}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], "not_connected", "{m} {p}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("/connect-links"), "{message}");
    }
    for p in [
        format!("{API}/nosuch/connections/acme/token"),
        format!("{API}/acme/connections/nosuch/token"),
    ] {
        let res = app.api_get(&p, &key).await;
        assert_eq!(error_of(res).await, (404, "not_found".into()), "{p}");
    }
    let (_, status) = app
        .get_json(&format!("{API}/acme/connections/acme"), &key)
        .await;
    assert_eq!(status["status"], "not_connected");
    assert_eq!(fake.calls().await, 0);
}

/// The provider asks for `contacts.read contacts.write`; the fake grants only
/// `contacts.read` (as an operator who added a scope after the tenant
/// connected would see): the token, the status and the card say so.
async fn scopes_added_since_the_grant_are_listed_as_missing_and_the_card_asks_to_reconnect(
    backend: Backend,
) {
    let (app, _fake, key) = connected(backend).await;
    let (_, token) = app
        .get_json(&format!("{API}/acme/connections/acme/token"), &key)
        .await;
    assert_eq!(token["scopes"], json!(["contacts.read"]));
    assert_eq!(token["missing_scopes"], json!(["contacts.write"]));
    let (_, status) = app
        .get_json(&format!("{API}/acme/connections/acme"), &key)
        .await;
    assert_eq!(status["missing_scopes"], json!(["contacts.write"]));
    let page = app.page("/settings/integrations").await;
    assert!(page.contains(r#"data-need="permissions""#), "{page}");
    assert!(
        page.contains("now asks Main Street Dental for more: contacts.write."),
        "{page}"
    );
    assert!(
        page.contains(r#"data-action="reconnect-account">Reconnect Main Street Dental"#),
        "the fix beside the account: {page}"
    );

    // Granted in full (a reconnect with the new scope): nothing is missing.
    let id = app.acme_account("acme", ACCOUNT).id;
    diesel::update(connections::table.find(&id))
        .set(connections::scopes.eq(r#"["contacts.read","contacts.write"]"#))
        .execute(&mut app.conn())
        .unwrap();
    let (_, status) = app
        .get_json(&format!("{API}/acme/connections/acme"), &key)
        .await;
    assert_eq!(status["missing_scopes"], json!([]));
    let page = app.page("/settings/integrations").await;
    assert!(!page.contains(r#"data-need="permissions""#), "{page}");
}

/// An OpenID provider asked for `offline_access` never echoes it in the token
/// answer's `scope` (oidc-provider, Okta and Auth0 leave it out); the fake
/// grants `contacts.read` alone. Nothing is missing, and the card asks for
/// no reconnect. A providers file that empties `request_only_scopes` makes
/// it count again, so the rule is the list's, not a special case.
async fn offline_access_never_echoed_by_the_provider_is_not_missing(backend: Backend) {
    for (extra, missing) in [
        ("", json!([])),
        ("request_only_scopes = []\n", json!(["offline_access"])),
    ] {
        let fake = crate::helpers::FakeProvider::start().await;
        let toml = fake.providers_toml("post").replace(
            r#"scopes = ["contacts.read", "contacts.write"]"#,
            r#"scopes = ["contacts.read", "offline_access"]"#,
        ) + extra;
        let app = crate::helpers::spawn_app_with_providers(
            crate::helpers::TestDb::new(backend),
            &toml,
            &[],
        )
        .await;
        app.create_admin("acme", crate::helpers::OWNER);
        let signed_in = app
            .login(crate::helpers::OWNER, crate::helpers::PASSWORD)
            .await;
        assert_eq!(signed_in.status(), 303);
        let res = app
            .authorize("acme", &[("return_to", "/settings/integrations")])
            .await;
        let location = res.headers()["location"].to_str().unwrap().to_string();
        let asked = crate::helpers::query_param(&location, "scope");
        assert_eq!(asked.as_deref(), Some("contacts.read offline_access"));
        let state = crate::helpers::query_param(&location, "state").unwrap();
        let challenge = crate::helpers::query_param(&location, "code_challenge").unwrap();
        crate::helpers::mount_exchange(&fake, &challenge, "at-1", "rt-1").await;
        let res = app
            .get(&format!(
                "/oauth/acme/callback?code=the-code&state={state}&iss={}",
                crate::helpers::ACME_ISSUER
            ))
            .await;
        assert_eq!(res.status(), 303, "{:?}", res.text().await);
        let key = app.api_key(Some("acme"), false);
        let (_, token) = app
            .get_json(&format!("{API}/acme/connections/acme/token"), &key)
            .await;
        assert_eq!(token["scopes"], json!(["contacts.read"]), "{extra}");
        assert_eq!(token["missing_scopes"], missing, "{extra}");
        let page = app.page("/settings/integrations").await;
        assert_eq!(
            page.contains(r#"data-need="permissions""#),
            missing != json!([]),
            "{extra}: {page}"
        );
    }
}
