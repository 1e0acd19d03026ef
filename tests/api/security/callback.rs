//! What else a callback may bring: an issuer other than the provider's, or
//! the answer to one provider's flow on another provider's path, is rejected
//! before any token request (mix-up); a callback without `iss` is accepted,
//! unless the provider declares that it always sends one (RFC 9207), when it
//! is refused and changes nothing;
//! a declined consent (access_denied) leaves the existing connection
//! untouched, uses up the state, says so and records `connect_failed`.

use super::{fingerprint, forbid_token_requests};
use crate::backend_tests;
use crate::helpers::{
    assert_error_page, connect, mount_exchange, query_param, signed_in, spawn_app_with_acme, start,
    Backend, FakeProvider, ACME_ISSUER, OWNER, PASSWORD,
};
use diesel::prelude::*;
use tether::db::schema::oauth_states;

backend_tests!(
    callback_with_a_foreign_issuer_is_rejected_before_any_token_request,
    callback_without_iss_is_accepted,
    callback_without_iss_is_refused_from_a_provider_that_declares_it_sends_one,
    callback_on_another_providers_path_is_rejected_as_provider_mismatch,
    access_denied_leaves_the_existing_connection_untouched_and_says_so,
);

async fn callback_with_a_foreign_issuer_is_rejected_before_any_token_request(backend: Backend) {
    let (app, fake) = signed_in(backend, "post").await;
    let (state, _) = start(&app, &[]).await;
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
    let (state, challenge) = start(&app, &[]).await;
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

async fn callback_without_iss_is_refused_from_a_provider_that_declares_it_sends_one(
    backend: Backend,
) {
    // Both spellings: Tether's, and the metadata name copied from a discovery document.
    for flag in [
        "iss_required = true",
        "authorization_response_iss_parameter_supported = true",
    ] {
        let fake = FakeProvider::start().await;
        let app = spawn_app_with_acme(backend, &fake, flag, &[]).await;
        app.create_admin("acme", OWNER);
        assert_eq!(app.login(OWNER, PASSWORD).await.status(), 303);
        let (state, challenge) = start(&app, &[]).await;
        let before = app.snapshot();
        let res = app
            .get(&format!("/oauth/acme/callback?code=the-code&state={state}"))
            .await;
        let html = assert_error_page(res, 400, "issuer_missing").await;
        assert!(html.contains("no iss"), "{flag}: {html}");
        assert_eq!(app.snapshot(), before, "{flag}: nothing changed");
        assert_eq!(fake.calls_to("/token").await, 0, "{flag}");
        // The state was not used up: the real answer, with iss, still connects.
        mount_exchange(&fake, &challenge, "at-1", "rt-1").await;
        let res = app
            .client
            .get(format!("{}/oauth/acme/callback", app.address))
            .query(&[
                ("code", "the-code"),
                ("state", &state),
                ("iss", ACME_ISSUER),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 303, "{flag}");
        assert_eq!(
            app.default_connection("acme", "acme").unwrap().status,
            "connected",
            "{flag}"
        );
    }
}

async fn callback_on_another_providers_path_is_rejected_as_provider_mismatch(backend: Backend) {
    let (app, fake) = signed_in(backend, "post").await;
    forbid_token_requests(&fake).await;

    // Started for acme, answered on demo's path.
    let (acme_state, _) = start(&app, &[]).await;
    // Started for demo, answered on acme's path.
    let res = app.authorize("demo", &[]).await;
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

async fn access_denied_leaves_the_existing_connection_untouched_and_says_so(backend: Backend) {
    let (app, fake) = signed_in(backend, "post").await;
    assert_eq!(
        connect(&app, &fake, "at-old-secret", "rt-old-secret")
            .await
            .status(),
        303
    );
    let old = app.default_connection("acme", "acme").unwrap();
    let (state, _) = start(&app, &[]).await;
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

    // Only the state changed, used up, and the refusal is recorded.
    let after = app.snapshot();
    let (before, after): (Vec<&str>, Vec<&str>) =
        (before.lines().collect(), after.lines().collect());
    for i in [0, 3, 4] {
        assert_eq!(before[i], after[i], "snapshot line {i}");
    }
    assert_ne!(before[1], after[1], "the state is consumed");
    let events = |line: &str| line.parse::<i64>().unwrap();
    assert_eq!(events(after[2]), events(before[2]) + 1, "one event");
    let failed: i64 = tether::db::schema::events::table
        .filter(tether::db::schema::events::kind.eq("connect_failed"))
        .filter(tether::db::schema::events::connection_id.is_null())
        .count()
        .get_result(&mut *app.conn())
        .unwrap();
    assert_eq!(failed, 1, "a connect_failed, of no connection");
    let unconsumed: i64 = oauth_states::table
        .filter(oauth_states::consumed_at.is_null())
        .count()
        .get_result(&mut *app.conn())
        .unwrap();
    assert_eq!(unconsumed, 0);
    assert_eq!(fake.calls_to("/token").await, 0);

    let page = app.page("/settings/integrations").await;
    assert!(
        page.contains("You declined the connection at Acme CRM. Nothing was changed."),
        "{page}"
    );
    assert!(page.contains(r#"data-provider="acme" data-status="connected""#));
}
