//! DESIGN.md section 8, one promise at a time: every rejected request is
//! refused with a clear 4xx and leaves the database exactly as it was.

use crate::backend_tests;
use crate::helpers::{
    assert_error_page, connect, csrf_in, mount_exchange, query_param, signed_in,
    spawn_app_with_acme, spawn_app_with_provider, start, tokens, Backend, Browser, FakeProvider,
    TestApp, VerifierMatches, ACME_ISSUER, OWNER, PASSWORD,
};
use diesel::prelude::*;
use tether::db::models::connection::Connection;
use tether::db::schema::oauth_states;
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, ResponseTemplate};

backend_tests!(
    posts_without_a_csrf_token_are_forbidden,
    callback_without_state_is_rejected_and_stores_nothing,
    callback_with_unknown_state_is_rejected_and_stores_nothing,
    callback_with_reused_state_is_rejected_and_stores_nothing,
    callback_with_expired_state_is_rejected_and_stores_nothing,
    callback_in_another_browser_session_is_rejected_and_stores_nothing,
    every_flow_of_a_pkce_provider_sends_an_s256_challenge_and_its_verifier,
    a_provider_without_pkce_gets_neither_challenge_nor_verifier,
    callback_with_a_foreign_issuer_is_rejected_before_any_token_request,
    callback_without_iss_is_accepted,
    callback_on_another_providers_path_is_rejected_as_provider_mismatch,
    unsafe_return_to_is_rejected_and_starts_nothing,
    a_relative_return_to_is_honoured_at_the_end_of_the_flow,
    access_denied_leaves_the_existing_connection_untouched_and_says_so,
    an_admin_never_reads_refreshes_or_disconnects_another_tenants_connection,
    tokens_never_reach_the_browser_across_a_whole_flow,
    passwords_are_stored_as_argon2id,
    login_is_rate_limited_per_email_even_with_the_right_password,
    oauth_routes_are_rate_limited_per_client,
    signing_in_renews_the_session_cookie,
    api_keys_are_stored_as_sha256_and_a_wrong_secret_with_a_right_prefix_is_refused,
    oversized_and_badly_encoded_input_gets_a_clear_4xx_and_changes_nothing,
    posts_with_a_wrong_csrf_token_are_forbidden_and_change_nothing,
    posts_without_a_csrf_token_are_refused_and_change_nothing,
);

/// The token endpoint must not be called at all.
async fn forbid_token_requests(fake: &FakeProvider) {
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .named("no token request")
        .mount(&fake.server)
        .await;
}

/// What identifies a stored grant: any write changes one of these.
fn fingerprint(c: &Connection) -> String {
    format!(
        "{}|{}|{}|{:?}|{:?}|{}|{:?}",
        c.id, c.status, c.version, c.token_ciphertext, c.key_id, c.updated_at, c.expires_at
    )
}

fn state_count(app: &TestApp) -> i64 {
    oauth_states::table
        .count()
        .get_result(&mut *app.conn())
        .unwrap()
}

fn expire_all_states(app: &TestApp) {
    diesel::update(oauth_states::table)
        .set(oauth_states::expires_at.eq(tether::db::now() - chrono::Duration::seconds(1)))
        .execute(&mut *app.conn())
        .unwrap();
}

async fn callback_without_state_is_rejected_and_stores_nothing(backend: Backend) {
    let (app, fake) = signed_in(backend, "post").await;
    start(&app, "").await;
    forbid_token_requests(&fake).await;
    let before = app.snapshot();
    for query in ["code=the-code", "code=the-code&state=", "state=&error=x"] {
        let res = app.get(&format!("/oauth/acme/callback?{query}")).await;
        assert_eq!(res.headers()["referrer-policy"], "no-referrer");
        assert_error_page(res, 400, "invalid_state").await;
    }
    assert_eq!(app.snapshot(), before);
    assert_eq!(fake.calls_to("/token").await, 0);
}

async fn callback_with_unknown_state_is_rejected_and_stores_nothing(backend: Backend) {
    let (app, fake) = signed_in(backend, "post").await;
    let (state, _) = start(&app, "").await;
    forbid_token_requests(&fake).await;
    let before = app.snapshot();
    // One character off a real state, and one that never existed.
    let mut near = state.clone();
    let last = near.pop().unwrap();
    near.push(if last == 'A' { 'B' } else { 'A' });
    for unknown in [near.as_str(), "never-issued-state"] {
        let res = app
            .get(&format!(
                "/oauth/acme/callback?code=the-code&state={unknown}&iss={ACME_ISSUER}"
            ))
            .await;
        assert_error_page(res, 400, "invalid_state").await;
    }
    assert_eq!(app.snapshot(), before);
    assert_eq!(fake.calls_to("/token").await, 0);
}

async fn callback_with_reused_state_is_rejected_and_stores_nothing(backend: Backend) {
    let (app, fake) = signed_in(backend, "post").await;
    let (state, challenge) = start(&app, "").await;
    // Answers exactly one exchange (verified when the fake provider drops).
    mount_exchange(&fake, &challenge, "at-1", "rt-1").await;
    let callback = format!("/oauth/acme/callback?code=the-code&state={state}&iss={ACME_ISSUER}");
    assert_eq!(app.get(&callback).await.status(), 303);
    let before = app.snapshot();

    let res = app.get(&callback).await;
    let body = assert_error_page(res, 400, "invalid_state").await;
    assert!(body.contains("already used"), "{body}");
    assert_eq!(app.snapshot(), before);
    assert_eq!(fake.calls_to("/token").await, 1);
}

async fn callback_with_expired_state_is_rejected_and_stores_nothing(backend: Backend) {
    let (app, fake) = signed_in(backend, "post").await;
    let (state, _) = start(&app, "").await;
    forbid_token_requests(&fake).await;
    expire_all_states(&app);
    let before = app.snapshot();
    let res = app
        .get(&format!(
            "/oauth/acme/callback?code=the-code&state={state}&iss={ACME_ISSUER}"
        ))
        .await;
    let body = assert_error_page(res, 400, "invalid_state").await;
    assert!(body.contains("expired"), "{body}");
    assert_eq!(app.snapshot(), before);
    assert_eq!(fake.calls_to("/token").await, 0);
}

async fn callback_in_another_browser_session_is_rejected_and_stores_nothing(backend: Backend) {
    let (app, fake) = signed_in(backend, "post").await;
    let (state, challenge) = start(&app, "").await;
    let callback = format!("/oauth/acme/callback?code=the-code&state={state}&iss={ACME_ISSUER}");

    // Another admin of the same tenant, in their own browser.
    app.create_admin("acme", "colleague@acme.example");
    let colleague = Browser::new(&app);
    assert_eq!(
        colleague
            .login("colleague@acme.example", PASSWORD)
            .await
            .status(),
        303
    );
    // A browser nobody signed in on.
    let stranger = Browser::new(&app);

    forbid_token_requests(&fake).await;
    let before = app.snapshot();
    for browser in [&colleague, &stranger] {
        let res = browser.get(&callback).await;
        let body = assert_error_page(res, 400, "invalid_state").await;
        assert!(body.contains("another browser session"), "{body}");
    }
    assert_eq!(app.snapshot(), before);
    assert_eq!(fake.calls_to("/token").await, 0);

    // The state is still the starter's to finish.
    fake.server.reset().await;
    mount_exchange(&fake, &challenge, "at-1", "rt-1").await;
    assert_eq!(app.get(&callback).await.status(), 303);
    assert!(app.default_connection("acme", "acme").is_some());
}

async fn every_flow_of_a_pkce_provider_sends_an_s256_challenge_and_its_verifier(backend: Backend) {
    let (app, fake) = signed_in(backend, "post").await;
    // Two flows: each has its own verifier, and each verifier hashes to its challenge.
    let (state_1, challenge_1) = start(&app, "").await;
    let (state_2, challenge_2) = start(&app, "&popup=1").await;
    assert_ne!(challenge_1, challenge_2);
    assert!(challenge_1.len() >= 43, "{challenge_1}");
    for (challenge, access) in [(&challenge_1, "at-1"), (&challenge_2, "at-2")] {
        Mock::given(method("POST"))
            .and(path("/token"))
            .and(VerifierMatches(challenge.clone()))
            .respond_with(ResponseTemplate::new(200).set_body_json(tokens(
                access,
                Some("rt"),
                "3600".into(),
            )))
            .expect(1)
            .mount(&fake.server)
            .await;
    }
    Mock::given(method("GET"))
        .and(path("/me"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"sub": "acct-42", "name": "Main Street Dental"})),
        )
        .mount(&fake.server)
        .await;
    for state in [&state_2, &state_1] {
        let res = app
            .get(&format!("/oauth/acme/callback?code=the-code&state={state}"))
            .await;
        assert!(matches!(res.status().as_u16(), 200 | 303), "{res:?}");
    }
    for request in fake.requests().await {
        if request.url.path() == "/token" {
            let body = String::from_utf8_lossy(&request.body).to_string();
            assert!(body.contains("code_verifier="), "{body}");
        }
    }
    assert_eq!(fake.calls_to("/token").await, 2);

    // The built-in demo provider does PKCE too.
    let res = app.get("/oauth/demo/authorize").await;
    assert_eq!(res.status(), 303);
    let location = res.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(
        query_param(&location, "code_challenge_method").as_deref(),
        Some("S256")
    );
    assert!(query_param(&location, "code_challenge").is_some_and(|c| c.len() >= 43));
}

async fn a_provider_without_pkce_gets_neither_challenge_nor_verifier(backend: Backend) {
    let fake = FakeProvider::start().await;
    let app = spawn_app_with_acme(backend, &fake, "pkce = false", &[]).await;
    app.create_admin("acme", OWNER);
    assert_eq!(app.login(OWNER, PASSWORD).await.status(), 303);

    let res = app.get("/oauth/acme/authorize").await;
    assert_eq!(res.status(), 303);
    let location = res.headers()["location"].to_str().unwrap().to_string();
    assert!(
        query_param(&location, "code_challenge").is_none(),
        "{location}"
    );
    assert!(
        query_param(&location, "code_challenge_method").is_none(),
        "{location}"
    );
    let state = query_param(&location, "state").unwrap();
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_string_contains("code=the-code"))
        .respond_with(ResponseTemplate::new(200).set_body_json(tokens(
            "at-1",
            Some("rt-1"),
            "3600".into(),
        )))
        .expect(1)
        .mount(&fake.server)
        .await;
    Mock::given(method("GET"))
        .and(path("/me"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"sub": "a"})))
        .mount(&fake.server)
        .await;
    let res = app
        .get(&format!("/oauth/acme/callback?code=the-code&state={state}"))
        .await;
    assert_eq!(res.status(), 303);
    let request = fake
        .requests()
        .await
        .into_iter()
        .find(|r| r.url.path() == "/token")
        .unwrap();
    let body = String::from_utf8_lossy(&request.body).to_string();
    assert!(!body.contains("code_verifier"), "{body}");
}

async fn callback_with_a_foreign_issuer_is_rejected_before_any_token_request(backend: Backend) {
    let (app, fake) = signed_in(backend, "post").await;
    let (state, _) = start(&app, "").await;
    forbid_token_requests(&fake).await;
    let before = app.snapshot();
    for iss in [
        "https://evil.example",
        "https://auth.acme.example/",
        "https://auth.acme.example.evil.example",
        "",
    ] {
        let res = app
            .client
            .get(format!("{}/oauth/acme/callback", app.address))
            .query(&[("code", "the-code"), ("state", &state), ("iss", iss)])
            .send()
            .await
            .unwrap();
        assert_error_page(res, 400, "issuer_mismatch").await;
    }
    assert_eq!(app.snapshot(), before);
    assert_eq!(fake.calls_to("/token").await, 0);
}

async fn callback_without_iss_is_accepted(backend: Backend) {
    let (app, fake) = signed_in(backend, "post").await;
    let (state, challenge) = start(&app, "").await;
    mount_exchange(&fake, &challenge, "at-1", "rt-1").await;
    let res = app
        .get(&format!("/oauth/acme/callback?code=the-code&state={state}"))
        .await;
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "/settings/integrations");
    assert_eq!(
        app.default_connection("acme", "acme").unwrap().status,
        "connected"
    );
}

async fn callback_on_another_providers_path_is_rejected_as_provider_mismatch(backend: Backend) {
    let (app, fake) = signed_in(backend, "post").await;
    forbid_token_requests(&fake).await;

    // Started for acme, answered on demo's path.
    let (acme_state, _) = start(&app, "").await;
    // Started for demo, answered on acme's path.
    let res = app.get("/oauth/demo/authorize").await;
    assert_eq!(res.status(), 303);
    let location = res.headers()["location"].to_str().unwrap().to_string();
    let demo_state = query_param(&location, "state").unwrap();

    let before = app.snapshot();
    for (provider, state) in [("demo", &acme_state), ("acme", &demo_state)] {
        let res = app
            .get(&format!(
                "/oauth/{provider}/callback?code=the-code&state={state}"
            ))
            .await;
        assert_error_page(res, 400, "provider_mismatch").await;
    }
    assert_eq!(app.snapshot(), before);
    assert_eq!(fake.calls_to("/token").await, 0);
}

async fn unsafe_return_to_is_rejected_and_starts_nothing(backend: Backend) {
    let (app, fake) = signed_in(backend, "post").await;
    let before = app.snapshot();
    for bad in [
        "//evil.example",
        "https://evil.example",
        "\\\\evil.example",
        "/\\evil.example",
        "javascript:alert(1)",
        "evil.example/path",
        "/settings/../../evil",
        "/line\r\nLocation: https://evil.example",
    ] {
        let res = app
            .client
            .get(format!("{}/oauth/acme/authorize", app.address))
            .query(&[("return_to", bad)])
            .send()
            .await
            .unwrap();
        assert!(res.headers().get("location").is_none(), "{bad}");
        assert_error_page(res, 400, "invalid_return_to").await;
    }
    assert_eq!(app.snapshot(), before);
    assert_eq!(state_count(&app), 0);
    assert!(fake.requests().await.is_empty());
}

async fn a_relative_return_to_is_honoured_at_the_end_of_the_flow(backend: Backend) {
    let (app, fake) = signed_in(backend, "post").await;
    let target = "/settings/integrations?tab=acme";
    let res = app
        .client
        .get(format!("{}/oauth/acme/authorize", app.address))
        .query(&[("return_to", target)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    let location = res.headers()["location"].to_str().unwrap().to_string();
    let state = query_param(&location, "state").unwrap();
    let challenge = query_param(&location, "code_challenge").unwrap();
    mount_exchange(&fake, &challenge, "at-1", "rt-1").await;
    let res = app
        .get(&format!(
            "/oauth/acme/callback?code=the-code&state={state}&iss={ACME_ISSUER}"
        ))
        .await;
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], target);
}

async fn access_denied_leaves_the_existing_connection_untouched_and_says_so(backend: Backend) {
    let (app, fake) = signed_in(backend, "post").await;
    assert_eq!(
        connect(&app, &fake, "at-old-secret", "rt-old-secret")
            .await
            .status(),
        303
    );
    let old = app.default_connection("acme", "acme").unwrap();
    let (state, _) = start(&app, "").await;
    fake.server.reset().await;
    forbid_token_requests(&fake).await;
    let before = app.snapshot();

    let res = app
        .get(&format!(
            "/oauth/acme/callback?error=access_denied&state={state}&iss={ACME_ISSUER}"
        ))
        .await;
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "/settings/integrations");

    let now = app.default_connection("acme", "acme").unwrap();
    assert_eq!(fingerprint(&now), fingerprint(&old));
    assert_eq!(now.version, old.version);
    assert_eq!(now.token_ciphertext, old.token_ciphertext);
    let tokens = now.tokens(&app.ctx.keys).unwrap().unwrap();
    assert_eq!(tokens.access_token.expose(), "at-old-secret");
    assert_eq!(tokens.refresh_token.unwrap().expose(), "rt-old-secret");

    // Only the state changed: it is used up.
    let after = app.snapshot();
    let (before, after): (Vec<&str>, Vec<&str>) =
        (before.lines().collect(), after.lines().collect());
    for i in [0, 2, 3, 4] {
        assert_eq!(before[i], after[i], "snapshot line {i}");
    }
    assert_ne!(before[1], after[1], "the state is consumed");
    let unconsumed: i64 = oauth_states::table
        .filter(oauth_states::consumed_at.is_null())
        .count()
        .get_result(&mut *app.conn())
        .unwrap();
    assert_eq!(unconsumed, 0);
    assert_eq!(fake.calls_to("/token").await, 0);

    let page = app
        .get("/settings/integrations")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("You declined the connection at Acme CRM. Nothing was changed."),
        "{page}"
    );
    assert!(page.contains(r#"data-provider="acme" data-status="connected""#));
}

async fn an_admin_never_reads_refreshes_or_disconnects_another_tenants_connection(
    backend: Backend,
) {
    // Tenant "acme" (B) is connected, in app.client.
    let (app, fake) = signed_in(backend, "post").await;
    assert_eq!(
        connect(&app, &fake, "at-b-secret", "rt-b-secret")
            .await
            .status(),
        303
    );
    let b_tenant = app.tenant("acme");
    let b_row = app.default_connection("acme", "acme").unwrap();
    fake.server.reset().await;
    forbid_token_requests(&fake).await;
    Mock::given(method("POST"))
        .and(path("/revoke"))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&fake.server)
        .await;

    // Tenant "beta" (A), in its own browser.
    app.create_admin("beta", "admin@beta.example");
    let a = Browser::new(&app);
    assert_eq!(a.login("admin@beta.example", PASSWORD).await.status(), 303);
    let csrf = a.csrf("/settings/integrations").await;
    let before = app.snapshot();

    let mut seen = Vec::new();
    // Ids of B in the URL change nothing: the tenant comes from the session.
    let foreign = format!(
        "?tenant={}&tenant_id={}&connection={}",
        b_tenant.external_id, b_tenant.id, b_row.id
    );
    let res = a
        .client
        .get(format!("{}/oauth/acme/status{foreign}", a.address))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let status: serde_json::Value = res.json().await.unwrap();
    assert_eq!(status["status"], "not_connected");
    assert!(status["account"].is_null());
    seen.push(status.to_string());

    for page in [
        format!("/settings/integrations{foreign}"),
        format!("/settings/integrations/cards/acme{foreign}"),
    ] {
        let res = a.get(&page).await;
        assert_eq!(res.status(), 200, "{page}");
        let html = res.text().await.unwrap();
        assert!(
            html.contains(r#"data-provider="acme" data-status="not_connected""#),
            "{page}: {html}"
        );
        seen.push(html);
    }

    for action in ["refresh", "disconnect"] {
        for route in [
            format!("/oauth/acme/{action}"),
            format!("/oauth/acme/{action}{foreign}"),
        ] {
            let res = a.post_form(&route, &[("csrf", &csrf)]).await;
            assert!(
                res.status().is_client_error() || res.status() == 303,
                "{route}: {res:?}"
            );
            if let Some(l) = res.headers().get("location") {
                seen.push(l.to_str().unwrap().to_string());
            }
            seen.push(res.text().await.unwrap());
        }
    }
    let dashboard = a.get("/settings/integrations").await.text().await.unwrap();
    seen.push(dashboard);

    // A may start its own flow; it is A's state, not B's.
    let res = a.get(&format!("/oauth/acme/authorize{foreign}")).await;
    assert_eq!(res.status(), 303);
    seen.push(res.headers()["location"].to_str().unwrap().to_string());

    for text in &seen {
        assert!(!text.contains("Main Street Dental"), "{text}");
        assert!(!text.contains("acct-42"), "{text}");
        assert!(!text.contains(&b_row.id), "{text}");
    }
    let after = app.snapshot();
    let (before, after): (Vec<&str>, Vec<&str>) =
        (before.lines().collect(), after.lines().collect());
    assert_eq!(before[0], after[0], "connections unchanged");
    assert_eq!(before[2], after[2], "no events");
    assert_eq!(
        fingerprint(&app.default_connection("acme", "acme").unwrap()),
        fingerprint(&b_row)
    );
    let a_tenant = app.tenant("beta");
    let started: Vec<String> = oauth_states::table
        .filter(oauth_states::consumed_at.is_null())
        .select(oauth_states::tenant_id)
        .load(&mut *app.conn())
        .unwrap();
    assert_eq!(started, vec![a_tenant.id]);
    assert!(app.default_connection("beta", "acme").is_none());
    assert_eq!(fake.calls_to("/token").await, 0);
    assert_eq!(fake.calls_to("/revoke").await, 0);
}

/// Everything a response shows the browser: Location, Set-Cookie and body.
async fn exposed(res: reqwest::Response) -> String {
    let mut out = String::new();
    for name in ["location", "set-cookie"] {
        for v in res.headers().get_all(name) {
            out.push_str(&String::from_utf8_lossy(v.as_bytes()));
            out.push('\n');
        }
    }
    out.push_str(&res.text().await.unwrap());
    out
}

async fn tokens_never_reach_the_browser_across_a_whole_flow(backend: Backend) {
    const SECRETS: [&str; 6] = [
        "at-1-leakcheck",
        "rt-1-leakcheck",
        "at-2-leakcheck",
        "rt-2-leakcheck",
        "at-3-leakcheck",
        "rt-3-leakcheck",
    ];
    let (app, fake) = signed_in(backend, "post").await;
    let mut seen = Vec::new();

    let res = connect(&app, &fake, SECRETS[0], SECRETS[1]).await;
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["referrer-policy"], "no-referrer");
    seen.push(exposed(res).await);
    seen.push(exposed(app.get("/settings/integrations").await).await);
    seen.push(exposed(app.get("/oauth/acme/status").await).await);
    seen.push(exposed(app.get("/settings/integrations/cards/acme").await).await);

    // Reconnect in a popup: the result page is tiny and loads nothing third-party.
    let (state, challenge) = start(&app, "&popup=1").await;
    mount_exchange(&fake, &challenge, SECRETS[2], SECRETS[3]).await;
    let res = app
        .get(&format!(
            "/oauth/acme/callback?code=the-code&state={state}&iss={ACME_ISSUER}"
        ))
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["referrer-policy"], "no-referrer");
    let popup = exposed(res).await;
    assert!(
        !popup.contains("http://") && !popup.contains("https://"),
        "{popup}"
    );
    seen.push(popup);

    // A refresh that works, then one the provider refuses while echoing the token.
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_string_contains("grant_type=refresh_token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(tokens(
            SECRETS[4],
            Some(SECRETS[5]),
            "3600".into(),
        )))
        .up_to_n_times(1)
        .expect(1)
        .mount(&fake.server)
        .await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_string_contains("grant_type=refresh_token"))
        .respond_with(ResponseTemplate::new(400).set_body_json(serde_json::json!({
            "error": "invalid_grant",
            "error_description": format!("refresh token {} is revoked; access token {}", SECRETS[5], SECRETS[4]),
        })))
        .mount(&fake.server)
        .await;
    for _ in 0..2 {
        let csrf = app.csrf("/settings/integrations").await;
        let res = app
            .post_form("/oauth/acme/refresh", &[("csrf", &csrf)])
            .await;
        assert_eq!(res.status(), 303);
        seen.push(exposed(res).await);
        seen.push(exposed(app.get("/settings/integrations").await).await);
        seen.push(exposed(app.get("/oauth/acme/status").await).await);
    }

    Mock::given(method("POST"))
        .and(path("/revoke"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&fake.server)
        .await;
    let csrf = app.csrf("/settings/integrations").await;
    let res = app
        .post_form("/oauth/acme/disconnect", &[("csrf", &csrf)])
        .await;
    assert_eq!(res.status(), 303);
    seen.push(exposed(res).await);
    seen.push(exposed(app.get("/settings/integrations").await).await);
    seen.push(exposed(app.get("/oauth/acme/status").await).await);

    for text in &seen {
        for secret in SECRETS.iter().chain(&["acme-secret-value"]) {
            assert!(
                !text.contains(secret),
                "{secret} reached the browser: {text}"
            );
        }
    }
    // Nor did it reach the stored error or the activity log.
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        v: String,
    }
    let stored: Vec<Row> = diesel::sql_query(
        "SELECT COALESCE(last_error, '') AS v FROM connections \
         UNION ALL SELECT COALESCE(detail, '') AS v FROM events",
    )
    .load(&mut *app.conn())
    .unwrap();
    for row in stored {
        for secret in SECRETS {
            assert!(!row.v.contains(secret), "{}", row.v);
        }
    }
}

async fn passwords_are_stored_as_argon2id(backend: Backend) {
    let (app, _fake) = signed_in(backend, "post").await;
    let user = tether::db::models::user::User::by_email(&mut app.conn(), OWNER)
        .unwrap()
        .unwrap();
    let hash = user.password_hash.unwrap();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(!hash.contains(PASSWORD));
}

async fn login_is_rate_limited_per_email_even_with_the_right_password(backend: Backend) {
    let fake = FakeProvider::start().await;
    let app = spawn_app_with_provider(backend, &fake, "post").await;
    app.create_admin("acme", "victim@acme.example");
    let attacker = Browser::new(&app);
    let csrf = attacker.csrf("/login").await;
    let attempt = |password: &'static str| {
        let csrf = csrf.clone();
        let attacker = &attacker;
        async move {
            attacker
                .post_form(
                    "/login",
                    &[
                        ("email", "victim@acme.example"),
                        ("password", password),
                        ("csrf", &csrf),
                    ],
                )
                .await
        }
    };
    for _ in 0..10 {
        assert_eq!(attempt("wrong password!").await.status(), 401);
    }
    let before = app.snapshot();
    let res = attempt(PASSWORD).await;
    assert_eq!(res.status(), 429);
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=300).contains(&retry), "{retry}");
    assert_ne!(attacker.get("/settings/integrations").await.status(), 200);
    assert_eq!(app.snapshot(), before);
}

async fn oauth_routes_are_rate_limited_per_client(backend: Backend) {
    let (app, _fake) = signed_in(backend, "post").await;
    for _ in 0..60 {
        assert_eq!(app.get("/oauth/acme/authorize").await.status(), 303);
    }
    let before = app.snapshot();
    let res = app.get("/oauth/acme/authorize").await;
    assert_eq!(res.status(), 429);
    assert!(res.headers().contains_key("retry-after"));
    let res = app
        .get("/oauth/acme/callback?code=the-code&state=anything")
        .await;
    assert_eq!(res.status(), 429);
    assert_eq!(app.snapshot(), before);
}

fn session_cookie(res: &reqwest::Response) -> Option<String> {
    res.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("tether_session="))
        .map(|c| c.split(';').next().unwrap().to_string())
}

async fn signing_in_renews_the_session_cookie(backend: Backend) {
    let fake = FakeProvider::start().await;
    let app = spawn_app_with_provider(backend, &fake, "post").await;
    app.create_admin("acme", OWNER);
    let page = app.get("/login").await;
    let before_login = session_cookie(&page).expect("the login page starts a session");
    let csrf = csrf_in(&page.text().await.unwrap()).unwrap();
    let res = app
        .post_form(
            "/login",
            &[("email", OWNER), ("password", PASSWORD), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(res.status(), 303);
    let after_login = session_cookie(&res).expect("login sets a new session cookie");
    assert_ne!(before_login, after_login);
    let cookie = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("tether_session="))
        .unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );

    // The pre-login cookie, replayed elsewhere, opens nothing.
    let replay = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let res = replay
        .get(format!("{}/settings/integrations", app.address))
        .header("cookie", &before_login)
        .send()
        .await
        .unwrap();
    assert_ne!(res.status(), 200);
    assert_eq!(app.get("/settings/integrations").await.status(), 200);
}

async fn api_keys_are_stored_as_sha256_and_a_wrong_secret_with_a_right_prefix_is_refused(
    backend: Backend,
) {
    use tether::db::models::api_key::ApiKey;
    let (app, _fake) = signed_in(backend, "post").await;
    let tenant = app.tenant("acme");
    let (row, key) = ApiKey::create(&mut app.conn(), "crm", Some(&tenant.id), false).unwrap();
    let key = key.expose().clone();
    assert_eq!(row.secret_hash, tether::crypto::sha256_hex(key.as_bytes()));
    let secret_part = key.splitn(3, '_').nth(2).unwrap();
    assert!(secret_part.len() >= 32, "{key}");
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        v: String,
    }
    let stored: Vec<Row> = diesel::sql_query(
        "SELECT id || '|' || name || '|' || prefix || '|' || secret_hash AS v FROM api_keys",
    )
    .load(&mut *app.conn())
    .unwrap();
    assert_eq!(stored.len(), 1);
    assert!(!stored[0].v.contains(secret_part), "{}", stored[0].v);

    assert_eq!(
        ApiKey::authenticate(&mut app.conn(), &key).unwrap().id,
        row.id
    );
    let mut wrong = key.clone();
    let last = wrong.pop().unwrap();
    wrong.push(if last == 'a' { 'b' } else { 'a' });
    for presented in [
        wrong,
        format!("tth_{}_{}", row.prefix, "x".repeat(43)),
        format!("tth_{}_", row.prefix),
        format!("tth_{}", row.prefix),
        row.secret_hash.clone(),
    ] {
        let err = ApiKey::authenticate(&mut app.conn(), &presented).unwrap_err();
        assert_eq!(err.status(), 401, "{presented}");
    }
}

/// The status code of a GET sent over a plain socket, whatever its size.
fn raw_get(app: &TestApp, path: &str) -> u16 {
    use std::io::{Read, Write};
    let addr = app.address.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    // The server may answer and close before reading it all.
    let _ = stream.write_all(request.as_bytes());
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).unwrap();
    let line = String::from_utf8_lossy(&head).to_string();
    line[9..12].parse().unwrap_or_else(|_| panic!("{line}"))
}

async fn oversized_and_badly_encoded_input_gets_a_clear_4xx_and_changes_nothing(backend: Backend) {
    let (app, fake) = signed_in(backend, "post").await;
    start(&app, "").await;
    forbid_token_requests(&fake).await;
    let before = app.snapshot();
    let big_state = "s".repeat(100 * 1024);
    let big_return_to = format!("/{}", "r".repeat(10 * 1024));
    // Longer than any client library will send: spoken over a raw socket.
    let status = raw_get(
        &app,
        &format!("/oauth/acme/callback?code=the-code&state={big_state}"),
    );
    assert!((400..500).contains(&status), "100 kB state: {status}");
    assert_eq!(app.get("/healthz").await.status(), 200);
    let gets = [
        format!(
            "/oauth/acme/callback?code=the-code&state={}",
            "s".repeat(40 * 1024)
        ),
        "/oauth/acme/callback?code=the-code&state=%FF%FE".to_string(),
        "/oauth/acme/callback?code=%FF%FE&state=%FF%FE%00".to_string(),
        "/oauth/acme/callback?code=the-code&state=%".to_string(),
        format!("/oauth/acme/authorize?return_to={big_return_to}"),
        "/oauth/acme/authorize?return_to=%FF%FE".to_string(),
        "/oauth/acme/authorize?return_to=%FF%FE//evil.example".to_string(),
        "/oauth/acme/authorize?return_to=/a%00b".to_string(),
        "/oauth/acme%00/authorize".to_string(),
        "/oauth/%00/callback?state=x".to_string(),
        "/oauth/%FF%FE/status".to_string(),
        "/settings/integrations/cards/%00".to_string(),
        "/login?next=%FF%FE".to_string(),
        "/sso?token=%FF%FE".to_string(),
    ];
    for path in &gets {
        let res = app.get(path).await;
        let status = res.status();
        let body = res.text().await.unwrap_or_default();
        let shown: String = path.chars().take(80).collect();
        // /login renders its form (the bad `next` is dropped); everything else is refused.
        if path.starts_with("/login") {
            assert!(status == 200 || status.is_client_error(), "{shown}");
        } else {
            assert!(status.is_client_error(), "{shown}: {status} {body}");
        }
        assert_eq!(
            app.get("/healthz").await.status(),
            200,
            "alive after {shown}"
        );
    }

    let csrf = app.csrf("/settings/integrations").await;
    let mut non_utf8 = b"email=".to_vec();
    non_utf8.extend_from_slice(&[0xff, 0xfe, 0xfd]);
    non_utf8.extend_from_slice(format!("&password=%FF%FE&csrf={csrf}").as_bytes());
    let mut raw_non_utf8 = b"email=a@b.example&password=".to_vec();
    raw_non_utf8.extend_from_slice(&[0xc3, 0x28, 0xa0, 0xa1]);
    raw_non_utf8.extend_from_slice(format!("&csrf={csrf}").as_bytes());
    let huge = format!(
        "email=a@b.example&password={}&csrf={csrf}",
        "p".repeat(1024 * 1024)
    )
    .into_bytes();
    for body in [non_utf8, raw_non_utf8, huge] {
        let res = app
            .client
            .post(format!("{}/login", app.address))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = res.status();
        assert!(
            status.is_client_error(),
            "{status} {}",
            res.text().await.unwrap_or_default()
        );
        assert_eq!(app.get("/healthz").await.status(), 200);
    }
    // A password far longer than any real one is refused before hashing.
    let long = "p".repeat(2000);
    let res = app
        .post_form(
            "/login",
            &[("email", OWNER), ("password", &long), ("csrf", &csrf)],
        )
        .await;
    assert!(res.status().is_client_error(), "{:?}", res.status());

    assert_eq!(app.snapshot(), before);
    assert_eq!(fake.calls_to("/token").await, 0);
    // Still signed in and working.
    assert_eq!(app.get("/settings/integrations").await.status(), 200);
}

/// A connected tenant with its refresh and revoke endpoints armed to notice any call.
async fn connected_with_tripwires(backend: Backend) -> (TestApp, FakeProvider) {
    let (app, fake) = signed_in(backend, "post").await;
    assert_eq!(connect(&app, &fake, "at-1", "rt-1").await.status(), 303);
    // Reading the flash once so later pages are stable.
    app.get("/settings/integrations").await;
    fake.server.reset().await;
    forbid_token_requests(&fake).await;
    Mock::given(method("POST"))
        .and(path("/revoke"))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&fake.server)
        .await;
    (app, fake)
}

/// Posts each form to every POST route; each must get `expected` (any 4xx when `None`).
async fn assert_csrf_refused(
    app: &TestApp,
    fake: &FakeProvider,
    forms: &[Vec<(&str, &str)>],
    expected: Option<u16>,
) {
    let before = app.snapshot();
    for route in [
        "/oauth/acme/refresh",
        "/oauth/acme/disconnect",
        "/logout",
        "/login",
    ] {
        for form in forms {
            let mut form = form.clone();
            if route == "/login" {
                form.extend([("email", OWNER), ("password", PASSWORD)]);
            }
            let res = app.post_form(route, &form).await;
            let status = res.status().as_u16();
            let body = res.text().await.unwrap();
            match expected {
                Some(code) => assert_eq!(status, code, "{route} {form:?}: {body}"),
                None => assert!((400..500).contains(&status), "{route} {form:?}: {body}"),
            }
        }
    }
    assert_eq!(app.snapshot(), before);
    assert_eq!(fake.calls_to("/token").await, 0);
    assert_eq!(fake.calls_to("/revoke").await, 0);
    // Still signed in (logout did not happen), still connected.
    let page = app.get("/settings/integrations").await;
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    assert!(page.contains(r#"data-provider="acme" data-status="connected""#));
    assert!(!page.contains("signed out"));
}

async fn posts_with_a_wrong_csrf_token_are_forbidden_and_change_nothing(backend: Backend) {
    let (app, fake) = connected_with_tripwires(backend).await;
    let real = app.csrf("/settings/integrations").await;
    let mut off_by_one = real.clone();
    let last = off_by_one.pop().unwrap();
    off_by_one.push(if last == 'A' { 'B' } else { 'A' });
    // Another session's valid token is wrong here too.
    let other = Browser::new(&app).csrf("/login").await;
    let forms: Vec<Vec<(&str, &str)>> = vec![
        vec![("csrf", "")],
        vec![("csrf", "not-the-token")],
        vec![("csrf", &off_by_one)],
        vec![("csrf", &other)],
        vec![("csrf", &real[..real.len() - 1])],
    ];
    assert_csrf_refused(&app, &fake, &forms, Some(403)).await;
}

async fn posts_without_a_csrf_token_are_refused_and_change_nothing(backend: Backend) {
    let (app, fake) = connected_with_tripwires(backend).await;
    let forms: Vec<Vec<(&str, &str)>> = vec![vec![], vec![("token", "x")]];
    assert_csrf_refused(&app, &fake, &forms, None).await;
}

async fn posts_without_a_csrf_token_are_forbidden(backend: Backend) {
    let (app, fake) = connected_with_tripwires(backend).await;
    let forms: Vec<Vec<(&str, &str)>> = vec![vec![], vec![("token", "x")]];
    assert_csrf_refused(&app, &fake, &forms, Some(403)).await;
}
