//! The connect flow against a provider faked at the HTTP level: authorize,
//! callback with PKCE, refresh, reconnect, disconnect.

use crate::backend_tests;
use crate::helpers::{
    connect, mount_exchange, signed_in, start, Backend, TestApp, ACCOUNT, ACME_ISSUER,
};
use std::time::{Duration, Instant};
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, ResponseTemplate};

async fn status(app: &TestApp) -> serde_json::Value {
    app.client
        .get(format!("{}/oauth/acme/status", app.address))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

backend_tests!(
    a_whole_page_connect_comes_back_to_the_card_with_its_outcome,
    lapsing_and_long_failing_accounts_need_the_admin_and_an_expired_token_says_so,
    a_reconnect_of_one_account_refuses_another_account_naming_both,
    an_admin_connects_a_provider_with_pkce_and_sees_it_connected,
    basic_client_authentication_sends_the_credentials_in_the_header,
    refresh_rotates_the_tokens_and_keeps_the_refresh_token_when_none_comes_back,
    a_refresh_refused_with_invalid_grant_marks_the_connection_needs_reconnect,
    disconnect_revokes_the_refresh_token_and_erases_the_tokens,
    disconnect_erases_the_tokens_even_when_revocation_fails_and_says_so,
    a_connection_whose_tokens_no_longer_open_can_still_be_disconnected,
    reconnecting_replaces_the_tokens_and_records_a_reconnect,
    a_popup_flow_ends_on_a_page_that_tells_the_opener_and_closes,
    a_client_secret_refused_at_connect_flags_the_provider,
);

async fn a_client_secret_refused_at_connect_flags_the_provider(backend: Backend) {
    let (app, fake) = signed_in(backend, "post").await;
    let (state, _) = start(&app, &[]).await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_string_contains("grant_type=authorization_code"))
        .respond_with(
            ResponseTemplate::new(401)
                .set_body_json(serde_json::json!({"error": "invalid_client"})),
        )
        .expect(1)
        .mount(&fake.server)
        .await;
    let res = app
        .get(&format!(
            "/oauth/acme/callback?code=the-code&state={state}&iss={ACME_ISSUER}"
        ))
        .await;
    let page = res.text().await.unwrap();
    assert!(
        page.contains("provider_error") && page.contains("client credentials"),
        "{page}"
    );
    assert!(
        !page.contains("acme-secret-value"),
        "no secret is shown: {page}"
    );

    // The flag is raised off the request path.
    let deadline = Instant::now() + Duration::from_secs(10);
    let ready = loop {
        let ready: serde_json::Value = app.get("/readyz").await.json().await.unwrap();
        if ready["misconfigured_providers"].get("acme").is_some() {
            break ready;
        }
        assert!(Instant::now() < deadline, "no flag in /readyz: {ready}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(ready["misconfigured_providers"]["acme"]
        .as_str()
        .unwrap()
        .contains("invalid_client"));
}

async fn an_admin_connects_a_provider_with_pkce_and_sees_it_connected(backend: Backend) {
    let (app, fake) = signed_in(backend, "post").await;
    let res = connect(&app, &fake, "at-1-secret", "rt-1-secret").await;
    assert_eq!(res.status(), 303, "{:?}", res.text().await);
    assert_eq!(res.headers()["location"], "/settings/integrations");
    assert_eq!(res.headers()["referrer-policy"], "no-referrer");

    let token_request = &fake.requests().await[0];
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&token_request.body)
        .into_owned()
        .collect();
    assert!(form.contains(&("client_id".into(), "acme-client".into())));
    assert!(form.contains(&("client_secret".into(), "acme-secret-value".into())));
    assert!(form.contains(&("redirect_uri".into(), app.ctx.settings.redirect_uri("acme"))));

    let s = status(&app).await;
    assert_eq!(s["status"], "connected");
    assert_eq!(s["account"]["id"], "acct-42");
    assert_eq!(s["account"]["name"], "Main Street Dental");
    assert_eq!(s["scopes"], serde_json::json!(["contacts.read"]));
    assert_eq!(s["metadata"], serde_json::json!({"locationId": "loc_9"}));
    assert!(s["expires_at"].as_str().unwrap().ends_with('Z'));

    let page = app.page("/settings/integrations").await;
    assert!(
        page.contains("Connected Acme CRM as Main Street Dental."),
        "flash: {page}"
    );
    assert!(page.contains(r#"data-provider="acme" data-status="connected""#));
    assert!(page.contains("Main Street Dental") && page.contains("contacts.read"));
    assert!(
        page.contains("Connected</span>"),
        "the connected event is listed"
    );
    for secret in ["at-1-secret", "rt-1-secret", "acme-secret-value"] {
        assert!(!page.contains(secret) && !s.to_string().contains(secret));
    }
    let tokens = app
        .acme_account("acme", ACCOUNT)
        .tokens(&app.ctx.keys)
        .unwrap()
        .unwrap();
    assert_eq!(tokens.access_token.expose(), "at-1-secret");
}

async fn basic_client_authentication_sends_the_credentials_in_the_header(backend: Backend) {
    let (app, fake) = signed_in(backend, "basic").await;
    let res = connect(&app, &fake, "at-1", "rt-1").await;
    assert_eq!(res.status(), 303);
    let token_request = &fake.requests().await[0];
    use base64::Engine;
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("acme-client:acme-secret-value")
    );
    assert_eq!(
        token_request.headers["authorization"].to_str().unwrap(),
        expected
    );
    let body = String::from_utf8_lossy(&token_request.body);
    assert!(!body.contains("client_secret"), "{body}");
}

async fn refresh_rotates_the_tokens_and_keeps_the_refresh_token_when_none_comes_back(
    backend: Backend,
) {
    let (app, fake) = signed_in(backend, "post").await;
    connect(&app, &fake, "at-1", "rt-1").await;
    let before = app.acme_account("acme", ACCOUNT);
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_string_contains("grant_type=refresh_token"))
        .and(body_string_contains("refresh_token=rt-1"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"access_token": "at-2", "expires_in": 7200})),
        )
        .expect(1)
        .mount(&fake.server)
        .await;
    let csrf = app.csrf("/settings/integrations").await;
    let res = app
        .post_form("/oauth/acme/refresh", &[("csrf", &csrf)])
        .await;
    assert_eq!(res.status(), 303);
    let after = app.acme_account("acme", ACCOUNT);
    assert_eq!(after.version, before.version + 1);
    let tokens = after.tokens(&app.ctx.keys).unwrap().unwrap();
    assert_eq!(tokens.access_token.expose(), "at-2");
    assert_eq!(
        tokens.refresh_token.unwrap().expose(),
        "rt-1",
        "kept: the response had none"
    );
    assert!(after.expires_at.unwrap() > before.expires_at.unwrap());
    assert!(after.lease_owner.is_none());
    let page = app.page("/settings/integrations").await;
    assert!(
        page.contains("Access to Main Street Dental at Acme CRM is renewed.")
            && page.contains("Refreshed</span>"),
        "{page}"
    );
}

async fn a_refresh_refused_with_invalid_grant_marks_the_connection_needs_reconnect(
    backend: Backend,
) {
    let (app, fake) = signed_in(backend, "post").await;
    connect(&app, &fake, "at-1", "rt-1").await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_string_contains("grant_type=refresh_token"))
        .respond_with(
            ResponseTemplate::new(400).set_body_json(serde_json::json!({"error": "invalid_grant"})),
        )
        .expect(1)
        .mount(&fake.server)
        .await;
    let csrf = app.csrf("/settings/integrations").await;
    app.post_form("/oauth/acme/refresh", &[("csrf", &csrf)])
        .await;
    assert_eq!(status(&app).await["status"], "needs_reconnect");
    let page = app.page("/settings/integrations").await;
    assert!(
        page.contains("no longer accepts this connection"),
        "banner: {page}"
    );
    assert!(page.contains("Could not renew access:"), "{page}");
    // No more tries: a second click does not reach the provider (expect(1) above).
    app.post_form("/oauth/acme/refresh", &[("csrf", &csrf)])
        .await;
    assert!(app.acme_account("acme", ACCOUNT).next_refresh_at.is_none());
}

async fn disconnect_revokes_the_refresh_token_and_erases_the_tokens(backend: Backend) {
    let (app, fake) = signed_in(backend, "post").await;
    connect(&app, &fake, "at-1", "rt-1").await;
    Mock::given(method("POST"))
        .and(path("/revoke"))
        .and(body_string_contains("token=rt-1"))
        .and(body_string_contains("token_type_hint=refresh_token"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&fake.server)
        .await;
    let csrf = app.csrf("/settings/integrations").await;
    let res = app
        .post_form("/oauth/acme/disconnect", &[("csrf", &csrf)])
        .await;
    assert_eq!(res.status(), 303);
    assert_eq!(status(&app).await["status"], "not_connected");
    let row = app.acme_account("acme", ACCOUNT);
    assert!(row.token_ciphertext.is_none() && row.key_id.is_none());
    let page = app.page("/settings/integrations").await;
    assert!(page.contains("the provider revoked the access"), "{page}");
    assert!(page.contains("Revoked at the provider") && page.contains("Disconnected</span>"));
}

async fn disconnect_erases_the_tokens_even_when_revocation_fails_and_says_so(backend: Backend) {
    let (app, fake) = signed_in(backend, "post").await;
    connect(&app, &fake, "at-1", "rt-1").await;
    Mock::given(method("POST"))
        .and(path("/revoke"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&fake.server)
        .await;
    let csrf = app.csrf("/settings/integrations").await;
    app.post_form("/oauth/acme/disconnect", &[("csrf", &csrf)])
        .await;
    assert!(app.acme_account("acme", ACCOUNT).token_ciphertext.is_none());
    let page = app.page("/settings/integrations").await;
    assert!(page.contains("did not confirm the revocation"), "{page}");
}

async fn reconnecting_replaces_the_tokens_and_records_a_reconnect(backend: Backend) {
    let (app, fake) = signed_in(backend, "post").await;
    connect(&app, &fake, "at-1", "rt-1").await;
    let first = app.acme_account("acme", ACCOUNT);
    fake.server.reset().await;
    let res = connect(&app, &fake, "at-2", "rt-2").await;
    assert_eq!(res.status(), 303);
    let second = app.acme_account("acme", ACCOUNT);
    assert_eq!(first.id, second.id);
    assert_eq!(
        second
            .tokens(&app.ctx.keys)
            .unwrap()
            .unwrap()
            .refresh_token
            .unwrap()
            .expose(),
        "rt-2"
    );
    let page = app.page("/settings/integrations").await;
    assert!(
        page.contains("Reconnected Acme CRM as Main Street Dental."),
        "{page}"
    );
    assert!(
        page.contains(r#"data-action="connect">Add another account"#),
        "the card offers another account; choosing a connected one reconnects it"
    );
}

async fn a_popup_flow_ends_on_a_page_that_tells_the_opener_and_closes(backend: Backend) {
    let (app, fake) = signed_in(backend, "post").await;
    let (state, challenge) = start(&app, &[("popup", "1")]).await;
    mount_exchange(&fake, &challenge, "at-popup-secret", "rt-popup-secret").await;
    let res = app
        .get(&format!("/oauth/acme/callback?code=the-code&state={state}"))
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["referrer-policy"], "no-referrer");
    let csp = res.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let html = res.text().await.unwrap();
    assert!(html.contains(r#"<script src="/static/popup.js" defer></script>"#));
    assert!(html.contains(r#"data-ok="true""#) && html.contains(r#"data-provider="acme""#));
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "nothing third-party: {html}"
    );
    assert!(!html.contains("at-popup-secret") && !html.contains("rt-popup-secret"));
    let script = app.get("/static/popup.js").await.text().await.unwrap();
    assert!(script.contains("postMessage") && script.contains("window.location.origin"));
}

async fn a_connection_whose_tokens_no_longer_open_can_still_be_disconnected(backend: Backend) {
    let (app, fake) = signed_in(backend, "post").await;
    connect(&app, &fake, "at-1", "rt-1").await;
    let row = app.acme_account("acme", ACCOUNT);
    {
        use diesel::prelude::*;
        use tether::db::schema::connections;
        let mut damaged = row.token_ciphertext.clone().unwrap();
        damaged[40] ^= 0xff;
        diesel::update(connections::table.find(&row.id))
            .set(connections::token_ciphertext.eq(Some(damaged)))
            .execute(&mut app.conn())
            .unwrap();
    }
    Mock::given(method("POST"))
        .and(path("/revoke"))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&fake.server)
        .await;
    let csrf = app.csrf("/settings/integrations").await;
    let res = app
        .post_form("/oauth/acme/disconnect", &[("csrf", &csrf)])
        .await;
    assert_eq!(res.status(), 303);
    assert!(
        app.acme_account("acme", ACCOUNT).token_ciphertext.is_none(),
        "erased"
    );
    let page = app.page("/settings/integrations").await;
    assert!(page.contains("did not confirm the revocation"), "{page}");
}

/// Without script (or with the popup blocked), Connect is a whole-page trip:
/// the card's form asks to come back to the card's anchor, and the outcome,
/// connected or declined, is shown on that card rather than at the top.
async fn a_whole_page_connect_comes_back_to_the_card_with_its_outcome(backend: Backend) {
    let (app, fake) = signed_in(backend, "post").await;
    let page = app.page("/settings/integrations").await;
    let card = &page[page.find(r#"id="card-acme""#).expect("the acme card")..];
    let form = &card[card.find(r#"data-form="connect""#).expect("its Connect")..];
    let form = &form[..form.find("</form>").unwrap()];
    let back = "/settings/integrations#card-acme";
    assert!(
        form.contains(&format!(r#"name="return_to" value="{back}""#)),
        "{form}"
    );
    for (answer, says) in [
        (
            "error=access_denied",
            "You declined the connection at Acme CRM.",
        ),
        ("code=the-code", "Connected Acme CRM as Main Street Dental."),
    ] {
        let res = app
            .authorize("acme", &[("return_to", back), ("popup", "0")])
            .await;
        let location = res.headers()["location"].to_str().unwrap().to_string();
        let state = crate::helpers::query_param(&location, "state").unwrap();
        let challenge = crate::helpers::query_param(&location, "code_challenge").unwrap();
        if answer.starts_with("code") {
            crate::helpers::mount_exchange(&fake, &challenge, "at-1", "rt-1").await;
        }
        let res = app
            .get(&format!(
                "/oauth/acme/callback?{answer}&state={state}&iss={}",
                crate::helpers::ACME_ISSUER
            ))
            .await;
        assert_eq!(res.status(), 303);
        assert_eq!(res.headers()["location"], back);
        let page = app.page("/settings/integrations").await;
        let card = &page[page.find(r#"id="card-acme""#).unwrap()..];
        let card = &card[..card.find("</article>").unwrap()];
        assert!(card.contains(says), "on the card: {card}");
        let top = &page[page.find(r#"id="flash""#).unwrap()..];
        let top = &top[..top.find("</div>").unwrap()];
        assert!(!top.contains(says), "not at the top: {top}");
    }
}

/// A reconnect started from an account's own Reconnect (`account`) that
/// comes back with another account at the provider is refused, naming both,
/// and changes nothing: the other account is not added beside the broken
/// one. The same reconnect with the right account goes through.
async fn a_reconnect_of_one_account_refuses_another_account_naming_both(backend: Backend) {
    use wiremock::matchers::header;
    let (app, fake) = signed_in(backend, "post").await;
    connect(&app, &fake, "at-1", "rt-1").await;
    let back = "/settings/integrations#card-acme";
    // At the provider the person picks another account.
    let (state, challenge) = reconnect(&app, back).await;
    Mock::given(method("GET"))
        .and(path("/me"))
        .and(header("authorization", "Bearer at-other"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"sub": "acct-other", "name": "Harbour Road"})),
        )
        .mount(&fake.server)
        .await;
    mount_exchange(&fake, &challenge, "at-other", "rt-other").await;
    let before = connection_rows(&app);
    let res = app
        .get(&format!(
            "/oauth/acme/callback?code=the-code&state={state}&iss={ACME_ISSUER}"
        ))
        .await;
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], back);
    let page = app.page("/settings/integrations").await;
    assert!(
        page.contains(
            "You chose Harbour Road at Acme CRM, but this was a reconnect of Main Street Dental. Nothing changed"
        ),
        "{page}"
    );
    assert_eq!(
        connection_rows(&app),
        before,
        "no account added, none changed"
    );
    assert!(!page.contains(r#"data-account="acct-other""#), "{page}");

    // The right account reconnects.
    let (state, challenge) = reconnect(&app, back).await;
    mount_exchange(&fake, &challenge, "at-2", "rt-2").await;
    let res = app
        .get(&format!(
            "/oauth/acme/callback?code=the-code&state={state}&iss={ACME_ISSUER}"
        ))
        .await;
    assert_eq!(res.status(), 303);
    let page = app.page("/settings/integrations").await;
    assert!(
        page.contains("Reconnected Acme CRM as Main Street Dental."),
        "{page}"
    );
}

/// Starts a reconnect of `ACCOUNT` from its own Reconnect; the state and
/// PKCE challenge of the authorize URL.
async fn reconnect(app: &TestApp, back: &str) -> (String, String) {
    let res = app
        .authorize(
            "acme",
            &[("return_to", back), ("popup", "0"), ("account", ACCOUNT)],
        )
        .await;
    let location = res.headers()["location"].to_str().unwrap().to_string();
    (
        crate::helpers::query_param(&location, "state").unwrap(),
        crate::helpers::query_param(&location, "code_challenge").unwrap(),
    )
}

/// Every connection row: account, status and version.
fn connection_rows(app: &TestApp) -> Vec<(String, String, i64)> {
    use diesel::prelude::*;
    use tether::db::schema::connections as c;
    c::table
        .select((c::account_id, c::status, c::version))
        .order(c::account_id)
        .load(&mut app.conn())
        .unwrap()
}

/// Besides a refused grant and missing permissions (tested where they are
/// made), the list of what needs the admin holds an account whose access
/// lapses within the warning window (fix: reconnect) and one whose renewals
/// have failed for longer than TETHER_REFRESH_FAILING_AFTER (fix: try now),
/// most urgent first; one failing for a moment is not listed. An access
/// token already expired reads "expired ... ago" in the error colour.
async fn lapsing_and_long_failing_accounts_need_the_admin_and_an_expired_token_says_so(
    backend: Backend,
) {
    use diesel::prelude::*;
    use tether::db::schema::connections as c;
    let (app, _fake) = signed_in(backend, "post").await;
    let tenant = app.ensure_tenant("acme");
    let t = tether::db::now();
    let hour = chrono::Duration::hours(1);
    for (account, lapses, failing_since, expires) in [
        (
            "acct-lapsing",
            Some(t + chrono::Duration::days(3)),
            None,
            t + hour,
        ),
        (
            "acct-failing",
            None,
            Some(t - hour * 2),
            t - hour * 2 - chrono::Duration::minutes(5),
        ),
        (
            "acct-blip",
            None,
            Some(t - chrono::Duration::minutes(5)),
            t + hour,
        ),
    ] {
        let row = app.seed(&tenant.id, account, &format!("rt-{account}"), 3600, 3000);
        diesel::update(c::table.find(&row.id))
            .set((
                c::scopes.eq(r#"["contacts.read","contacts.write"]"#),
                c::refresh_expires_at.eq(lapses),
                c::error_since.eq(failing_since),
                c::status.eq(if failing_since.is_some() {
                    "error"
                } else {
                    "connected"
                }),
                c::expires_at.eq(Some(expires)),
            ))
            .execute(&mut app.conn())
            .unwrap();
    }
    let page = app.page("/settings/integrations").await;
    let attention = &page[page.find(r#"class="attention""#).expect("the list")..];
    let attention = &attention[..attention.find("</section>").unwrap()];
    let lapsing = attention
        .find(r#"data-account="acct-lapsing""#)
        .expect("the lapsing one");
    let failing = attention
        .find(r#"data-account="acct-failing""#)
        .expect("the failing one");
    assert!(lapsing < failing, "most urgent first: {attention}");
    assert!(
        !attention.contains("acct-blip"),
        "a passing fault needs nobody: {attention}"
    );
    assert!(
        attention.contains("ends access to acct-lapsing in 2 days"),
        "{attention}"
    );
    let try_now = &attention[failing..];
    assert!(
        try_now.contains("has not answered for acct-failing since")
            && try_now.contains(r#"data-action="refresh">Try now"#),
        "{try_now}"
    );
    let card = &page[page.find(r#"id="card-acme""#).unwrap()..];
    let failing_item = &card[card.find(r#"data-account="acct-failing""#).unwrap()..];
    let failing_item = &failing_item[..failing_item.find("</dl>").unwrap()];
    assert!(
        failing_item.contains(r#"<span class="error-text">expired <time datetime=""#)
            && failing_item.contains(">2 h ago</time>"),
        "{failing_item}"
    );
}
