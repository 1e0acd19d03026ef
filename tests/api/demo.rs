//! The demo provider: a strict OAuth 2.0 authorization server inside the binary.

use crate::backend_tests;
use crate::helpers::{spawn_app, spawn_app_with, Backend, TestApp, TestDb};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use reqwest::Response;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::HashMap;

const CLIENT_ID: &str = "tether-demo";
const CLIENT_SECRET: &str = "demo-secret-not-for-production";
const VERIFIER: &str = "the-code-verifier-of-this-test-long-enough-for-pkce";
const STATE: &str = "state with spaces & symbols=1";

backend_tests!(
    code_flow_with_pkce_gives_tokens_that_open_the_api,
    client_secret_in_the_body_authenticates_too,
    a_wrong_redirect_uri_or_client_renders_400_and_never_redirects,
    a_bad_request_goes_back_to_the_client_with_state_and_iss,
    posted_hidden_fields_are_checked_again,
    deny_sends_access_denied_with_the_state,
    a_decision_posted_from_another_site_is_refused,
    a_wrong_code_verifier_is_invalid_grant,
    a_reused_code_is_invalid_grant_and_revokes_the_grant_it_produced,
    refresh_rotates_and_a_reused_refresh_token_revokes_the_grant,
    revoke_kills_the_whole_grant,
    a_wrong_client_secret_is_invalid_client,
    bad_token_requests_get_rfc_6749_errors,
    the_api_refuses_missing_and_unknown_tokens_with_a_bearer_challenge,
    every_demo_route_is_404_when_the_demo_provider_is_off,
);

fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn redirect_uri(app: &TestApp) -> String {
    app.ctx.settings.redirect_uri("demo")
}

fn issuer(app: &TestApp) -> String {
    format!("{}/demo", app.ctx.settings.base_url())
}

/// A valid authorization request, with `changes` applied ("" removes).
fn authorize_params(app: &TestApp, changes: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut params: Vec<(String, String)> = [
        ("response_type", "code".to_string()),
        ("client_id", CLIENT_ID.to_string()),
        ("redirect_uri", redirect_uri(app)),
        ("state", STATE.to_string()),
        ("scope", "profile contacts.read".to_string()),
        ("code_challenge", challenge(VERIFIER)),
        ("code_challenge_method", "S256".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for (name, value) in changes {
        params.retain(|(k, _)| k != name);
        if !value.is_empty() {
            params.push((name.to_string(), value.to_string()));
        }
    }
    params
}

async fn consent_page(app: &TestApp, params: &[(String, String)]) -> Response {
    app.client
        .get(format!("{}/demo/oauth/authorize", app.address))
        .query(params)
        .send()
        .await
        .expect("request")
}

async fn decide(app: &TestApp, decision: &str, params: &[(String, String)]) -> Response {
    let mut form = params.to_vec();
    form.push(("decision".into(), decision.into()));
    app.client
        .post(format!("{}/demo/oauth/authorize", app.address))
        .form(&form)
        .send()
        .await
        .expect("request")
}

/// The query of a redirect to the demo's redirect URI.
fn redirected_to_client(app: &TestApp, res: &Response) -> HashMap<String, String> {
    assert_eq!(res.status(), 303);
    let location = res.headers()["location"].to_str().unwrap();
    let url = url::Url::parse(location).unwrap();
    assert_eq!(
        format!("{}{}", url.origin().ascii_serialization(), url.path()),
        redirect_uri(app)
    );
    url.query_pairs().into_owned().collect()
}

/// Approves a valid request and returns the code.
async fn code(app: &TestApp) -> String {
    let res = decide(app, "approve", &authorize_params(app, &[])).await;
    let query = redirected_to_client(app, &res);
    query["code"].clone()
}

async fn token_request(app: &TestApp, form: &[(&str, &str)]) -> Response {
    app.client
        .post(format!("{}/demo/oauth/token", app.address))
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .form(form)
        .send()
        .await
        .expect("request")
}

async fn exchange(app: &TestApp, code: &str, verifier: &str) -> Response {
    let redirect = redirect_uri(app);
    token_request(
        app,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", &redirect),
            ("code_verifier", verifier),
        ],
    )
    .await
}

async fn refresh(app: &TestApp, refresh_token: &str) -> Response {
    token_request(
        app,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ],
    )
    .await
}

/// Runs the whole code flow and returns the token response.
async fn tokens(app: &TestApp) -> Value {
    let code = code(app).await;
    let res = exchange(app, &code, VERIFIER).await;
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

async fn api(app: &TestApp, path: &str, access_token: &str) -> Response {
    app.client
        .get(format!("{}{path}", app.address))
        .bearer_auth(access_token)
        .send()
        .await
        .expect("request")
}

async fn revoke(app: &TestApp, token: &str) -> Response {
    app.client
        .post(format!("{}/demo/oauth/revoke", app.address))
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .form(&[("token", token), ("token_type_hint", "refresh_token")])
        .send()
        .await
        .expect("request")
}

async fn oauth_error(res: Response) -> String {
    let body: Value = res.json().await.unwrap();
    body["error"].as_str().unwrap_or_default().to_string()
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap()
}

async fn code_flow_with_pkce_gives_tokens_that_open_the_api(backend: Backend) {
    let app = spawn_app(backend).await;
    let params = authorize_params(&app, &[]);

    let res = consent_page(&app, &params).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["referrer-policy"], "no-referrer");
    let html = res.text().await.unwrap();
    assert!(
        html.contains("<title>Demo: authorize Tether</title>"),
        "{html}"
    );
    assert!(html.contains("contacts.read") && html.contains("profile"));
    assert!(
        html.contains(r#"<button id="approve" name="decision" value="approve">Approve</button>"#)
    );
    assert!(html.contains(
        r#"<button id="deny" name="decision" value="deny" class="secondary">Deny</button>"#
    ));
    assert!(html.contains(r#"method="post" action="/demo/oauth/authorize""#));
    assert!(
        !html.contains("<script") && !html.contains("src="),
        "no scripts or third-party resources"
    );

    let res = decide(&app, "approve", &params).await;
    let query = redirected_to_client(&app, &res);
    assert_eq!(query["state"], STATE);
    assert_eq!(query["iss"], issuer(&app));
    assert!(query["code"].len() >= 43);

    let res = exchange(&app, &query["code"], VERIFIER).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(body["scope"], "profile contacts.read");
    assert!(body["refresh_token"].is_string());

    let res = api(&app, "/demo/api/me", s(&body["access_token"])).await;
    assert_eq!(res.status(), 200);
    let me: Value = res.json().await.unwrap();
    assert_eq!(
        me,
        serde_json::json!({"id": "demo-user-1", "name": "Demo Account", "email": "demo@example.com"})
    );
    let res = api(&app, "/demo/api/contacts", s(&body["access_token"])).await;
    assert_eq!(res.status(), 200);
    let contacts: Value = res.json().await.unwrap();
    assert!(!contacts.as_array().unwrap().is_empty());
}

async fn client_secret_in_the_body_authenticates_too(backend: Backend) {
    let app = spawn_app(backend).await;
    let code = code(&app).await;
    let redirect = redirect_uri(&app);
    let res = app
        .client
        .post(format!("{}/demo/oauth/token", app.address))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &redirect),
            ("code_verifier", VERIFIER),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        api(&app, "/demo/api/me", s(&body["access_token"]))
            .await
            .status(),
        200
    );
}

async fn a_wrong_redirect_uri_or_client_renders_400_and_never_redirects(backend: Backend) {
    let app = spawn_app(backend).await;
    let trailing_slash = format!("{}/", redirect_uri(&app));
    let bad = [
        ("redirect_uri", "https://attacker.example/callback"),
        ("redirect_uri", trailing_slash.as_str()),
        ("redirect_uri", ""),
        ("client_id", "someone-else"),
        ("client_id", ""),
    ];
    for change in bad {
        let params = authorize_params(&app, &[change]);
        for res in [
            consent_page(&app, &params).await,
            decide(&app, "approve", &params).await,
        ] {
            assert_eq!(res.status(), 400, "{change:?}");
            assert!(res.headers().get("location").is_none(), "{change:?}");
            let html = res.text().await.unwrap();
            assert!(html.contains("400 Bad Request"), "{html}");
            assert!(!html.contains("attacker.example"), "{html}");
        }
    }
}

async fn a_bad_request_goes_back_to_the_client_with_state_and_iss(backend: Backend) {
    let app = spawn_app(backend).await;
    let cases = [
        (("code_challenge", ""), "invalid_request"),
        (("code_challenge_method", "plain"), "invalid_request"),
        (("code_challenge_method", ""), "invalid_request"),
        (("code_challenge", "too-short"), "invalid_request"),
        (("response_type", ""), "invalid_request"),
        (("response_type", "token"), "unsupported_response_type"),
        (("scope", "admin"), "invalid_scope"),
    ];
    for (change, error) in cases {
        let res = consent_page(&app, &authorize_params(&app, &[change])).await;
        let query = redirected_to_client(&app, &res);
        assert_eq!(query["error"], error, "{change:?}");
        assert_eq!(query["state"], STATE);
        assert_eq!(query["iss"], issuer(&app));
        assert!(!query.contains_key("code"));
    }
    let res = consent_page(&app, &authorize_params(&app, &[("state", "")])).await;
    let query = redirected_to_client(&app, &res);
    assert_eq!(query["error"], "invalid_request");
    assert_eq!(query["iss"], issuer(&app));
}

async fn posted_hidden_fields_are_checked_again(backend: Backend) {
    let app = spawn_app(backend).await;
    // The browser sends the hidden fields back; a changed one is refused.
    let res = decide(
        &app,
        "approve",
        &authorize_params(&app, &[("scope", "profile admin")]),
    )
    .await;
    let query = redirected_to_client(&app, &res);
    assert_eq!(query["error"], "invalid_scope");
    assert!(!query.contains_key("code"));

    let res = decide(
        &app,
        "approve",
        &authorize_params(&app, &[("code_challenge_method", "plain")]),
    )
    .await;
    assert_eq!(redirected_to_client(&app, &res)["error"], "invalid_request");

    let res = decide(&app, "maybe", &authorize_params(&app, &[])).await;
    assert_eq!(res.status(), 400);
    assert!(res.headers().get("location").is_none());
}

async fn deny_sends_access_denied_with_the_state(backend: Backend) {
    let app = spawn_app(backend).await;
    let res = decide(&app, "deny", &authorize_params(&app, &[])).await;
    let query = redirected_to_client(&app, &res);
    assert_eq!(query["error"], "access_denied");
    assert_eq!(query["state"], STATE);
    assert_eq!(query["iss"], issuer(&app));
    assert!(!query.contains_key("code"));
}

async fn a_decision_posted_from_another_site_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let ours = app.ctx.settings.public_url.origin().ascii_serialization();
    let post = |headers: &'static [(&'static str, &'static str)], origin: Option<String>| {
        let mut form = authorize_params(&app, &[]);
        form.push(("decision".into(), "approve".into()));
        let mut req = app
            .client
            .post(format!("{}/demo/oauth/authorize", app.address))
            .form(&form);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        if let Some(origin) = origin {
            req = req.header("origin", origin);
        }
        req.send()
    };
    for (headers, origin) in [
        (&[("sec-fetch-site", "cross-site")][..], None),
        (&[("sec-fetch-site", "same-site")][..], None),
        (&[][..], Some("https://attacker.example".to_string())),
    ] {
        let res = post(headers, origin).await.unwrap();
        assert_eq!(res.status(), 403);
        assert!(res.headers().get("location").is_none());
    }
    // What browsers send from the consent page itself (no-referrer makes
    // Origin null on a POST).
    for (headers, origin) in [
        (
            &[("sec-fetch-site", "same-origin")][..],
            Some("null".to_string()),
        ),
        (&[][..], Some("null".to_string())),
        (&[][..], Some(ours)),
    ] {
        let res = post(headers, origin).await.unwrap();
        assert!(redirected_to_client(&app, &res).contains_key("code"));
    }
}

async fn a_wrong_code_verifier_is_invalid_grant(backend: Backend) {
    let app = spawn_app(backend).await;
    let code = code(&app).await;
    let wrong = "another-code-verifier-that-is-also-long-enough-for-pkce";
    let res = exchange(&app, &code, wrong).await;
    assert_eq!(res.status(), 400);
    assert_eq!(res.headers()["cache-control"], "no-store");
    assert_eq!(oauth_error(res).await, "invalid_grant");
}

async fn a_reused_code_is_invalid_grant_and_revokes_the_grant_it_produced(backend: Backend) {
    let app = spawn_app(backend).await;
    let code = code(&app).await;
    let res = exchange(&app, &code, VERIFIER).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let access = s(&body["access_token"]);
    assert_eq!(api(&app, "/demo/api/me", access).await.status(), 200);

    let res = exchange(&app, &code, VERIFIER).await;
    assert_eq!(res.status(), 400);
    assert_eq!(oauth_error(res).await, "invalid_grant");
    assert_eq!(api(&app, "/demo/api/me", access).await.status(), 401);
    let res = refresh(&app, s(&body["refresh_token"])).await;
    assert_eq!(oauth_error(res).await, "invalid_grant");
}

async fn refresh_rotates_and_a_reused_refresh_token_revokes_the_grant(backend: Backend) {
    let app = spawn_app(backend).await;
    let first = tokens(&app).await;

    let res = refresh(&app, s(&first["refresh_token"])).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let second: Value = res.json().await.unwrap();
    assert_ne!(second["access_token"], first["access_token"]);
    assert_ne!(second["refresh_token"], first["refresh_token"]);
    assert_eq!(second["expires_in"], 3600);
    assert_eq!(second["scope"], "profile contacts.read");
    assert_eq!(
        api(&app, "/demo/api/me", s(&second["access_token"]))
            .await
            .status(),
        200
    );

    // The rotated-away token, presented again: the whole grant goes.
    let res = refresh(&app, s(&first["refresh_token"])).await;
    assert_eq!(res.status(), 400);
    assert_eq!(oauth_error(res).await, "invalid_grant");
    let res = api(&app, "/demo/api/me", s(&second["access_token"])).await;
    assert_eq!(res.status(), 401);
    assert_eq!(
        api(&app, "/demo/api/me", s(&first["access_token"]))
            .await
            .status(),
        401
    );
    let res = refresh(&app, s(&second["refresh_token"])).await;
    assert_eq!(oauth_error(res).await, "invalid_grant");
}

async fn revoke_kills_the_whole_grant(backend: Backend) {
    let app = spawn_app(backend).await;
    let body = tokens(&app).await;
    let other = tokens(&app).await;

    let res = revoke(&app, s(&body["refresh_token"])).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        api(&app, "/demo/api/me", s(&body["access_token"]))
            .await
            .status(),
        401
    );
    let res = refresh(&app, s(&body["refresh_token"])).await;
    assert_eq!(oauth_error(res).await, "invalid_grant");
    // Another grant is untouched.
    assert_eq!(
        api(&app, "/demo/api/me", s(&other["access_token"]))
            .await
            .status(),
        200
    );

    // By access token, too; unknown tokens are fine (RFC 7009 section 2.2).
    assert_eq!(revoke(&app, s(&other["access_token"])).await.status(), 200);
    let res = refresh(&app, s(&other["refresh_token"])).await;
    assert_eq!(oauth_error(res).await, "invalid_grant");
    assert_eq!(revoke(&app, "no-such-token").await.status(), 200);

    let res = app
        .client
        .post(format!("{}/demo/oauth/revoke", app.address))
        .basic_auth(CLIENT_ID, Some("wrong"))
        .form(&[("token", "no-such-token")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(oauth_error(res).await, "invalid_client");
}

async fn a_wrong_client_secret_is_invalid_client(backend: Backend) {
    let app = spawn_app(backend).await;
    let code = code(&app).await;
    let redirect = redirect_uri(&app);
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", &redirect),
        ("code_verifier", VERIFIER),
    ];
    let url = format!("{}/demo/oauth/token", app.address);

    let res = app
        .client
        .post(&url)
        .basic_auth(CLIENT_ID, Some("not-the-secret"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert!(res.headers().contains_key("www-authenticate"));
    assert_eq!(oauth_error(res).await, "invalid_client");

    let mut in_body = form.to_vec();
    in_body.extend([
        ("client_id", CLIENT_ID),
        ("client_secret", "not-the-secret"),
    ]);
    let res = app.client.post(&url).form(&in_body).send().await.unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(oauth_error(res).await, "invalid_client");

    let res = app.client.post(&url).form(&form).send().await.unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(oauth_error(res).await, "invalid_client");

    // A failed client authentication does not use the code up.
    assert_eq!(exchange(&app, &code, VERIFIER).await.status(), 200);
}

async fn bad_token_requests_get_rfc_6749_errors(backend: Backend) {
    let app = spawn_app(backend).await;
    let url = format!("{}/demo/oauth/token", app.address);

    let res = token_request(&app, &[("grant_type", "password")]).await;
    assert_eq!(res.status(), 400);
    assert_eq!(oauth_error(res).await, "unsupported_grant_type");

    let res = token_request(&app, &[("code", "x")]).await;
    assert_eq!(res.status(), 400);
    assert_eq!(oauth_error(res).await, "invalid_request");

    let res = token_request(&app, &[("grant_type", "authorization_code")]).await;
    assert_eq!(oauth_error(res).await, "invalid_request");

    let res = token_request(&app, &[("grant_type", "refresh_token")]).await;
    assert_eq!(oauth_error(res).await, "invalid_request");

    let res = refresh(&app, "never-issued").await;
    assert_eq!(oauth_error(res).await, "invalid_grant");

    let res = exchange(&app, "never-issued", VERIFIER).await;
    assert_eq!(oauth_error(res).await, "invalid_grant");

    let res = exchange(&app, "x", "short").await;
    assert_eq!(oauth_error(res).await, "invalid_request");

    // Not a form, a repeated parameter, bytes that are not UTF-8, too large.
    let bodies: [(&str, Vec<u8>, u16); 4] = [
        ("application/json", br#"{"grant_type":"x"}"#.to_vec(), 400),
        (
            "application/x-www-form-urlencoded",
            b"grant_type=refresh_token&grant_type=password".to_vec(),
            400,
        ),
        (
            "application/x-www-form-urlencoded",
            b"grant_type=refresh_token&refresh_token=%FF%FE".to_vec(),
            400,
        ),
        (
            "application/x-www-form-urlencoded",
            format!(
                "grant_type=refresh_token&refresh_token={}",
                "a".repeat(20_000)
            )
            .into_bytes(),
            413,
        ),
    ];
    for (content_type, body, status) in bodies {
        let res = app
            .client
            .post(&url)
            .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), status, "{content_type}");
        assert_eq!(oauth_error(res).await, "invalid_request");
    }

    // One client authentication method only.
    let res = app
        .client
        .post(&url)
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", "x"),
            ("client_secret", CLIENT_SECRET),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(oauth_error(res).await, "invalid_request");
}

async fn the_api_refuses_missing_and_unknown_tokens_with_a_bearer_challenge(backend: Backend) {
    let app = spawn_app(backend).await;
    for path in ["/demo/api/me", "/demo/api/contacts"] {
        for res in [app.get(path).await, api(&app, path, "not-a-token").await] {
            assert_eq!(res.status(), 401, "{path}");
            assert_eq!(
                res.headers()["www-authenticate"],
                r#"Bearer error="invalid_token""#
            );
            assert_eq!(oauth_error(res).await, "invalid_token");
        }
    }

    // A token without contacts.read cannot read contacts.
    let params = authorize_params(&app, &[("scope", "profile")]);
    let res = decide(&app, "approve", &params).await;
    let code = redirected_to_client(&app, &res)["code"].clone();
    let body: Value = exchange(&app, &code, VERIFIER).await.json().await.unwrap();
    assert_eq!(body["scope"], "profile");
    let access = s(&body["access_token"]);
    assert_eq!(api(&app, "/demo/api/me", access).await.status(), 200);
    let res = api(&app, "/demo/api/contacts", access).await;
    assert_eq!(res.status(), 403);
    assert_eq!(oauth_error(res).await, "insufficient_scope");
}

async fn every_demo_route_is_404_when_the_demo_provider_is_off(backend: Backend) {
    let app = spawn_app_with(TestDb::new(backend), &[("TETHER_DEMO_PROVIDER", "false")]).await;
    let params = authorize_params(&app, &[]);

    let res = consent_page(&app, &params).await;
    assert_eq!(res.status(), 404);
    assert!(res.text().await.unwrap().contains("404 Not Found"));
    let res = decide(&app, "approve", &params).await;
    assert_eq!(res.status(), 404);
    assert!(res.headers().get("location").is_none());

    for path in ["/demo/oauth/token", "/demo/oauth/revoke"] {
        let res = app
            .client
            .post(format!("{}{path}", app.address))
            .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
            .form(&[("grant_type", "refresh_token"), ("token", "x")])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 404, "{path}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], "not_found");
    }
    for path in ["/demo/api/me", "/demo/api/contacts"] {
        let res = api(&app, path, "x").await;
        assert_eq!(res.status(), 404, "{path}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], "not_found");
    }
    // Other methods, too: nothing says the demo exists.
    assert_eq!(app.get("/demo/oauth/token").await.status(), 404);
}
