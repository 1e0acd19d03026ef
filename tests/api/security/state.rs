//! The OAuth state: a callback without a state, with one that was never
//! issued, with one already used or expired, or in another browser session
//! than the one that started the flow is rejected before any token request
//! and stores nothing.

use super::forbid_token_requests;
use crate::backend_tests;
use crate::helpers::{
    assert_error_page, mount_exchange, signed_in, start, Backend, Browser, TestApp, ACME_ISSUER,
    PASSWORD,
};
use diesel::prelude::*;
use tether::db::schema::oauth_states;

backend_tests!(
    callback_without_state_is_rejected_and_stores_nothing,
    callback_with_unknown_state_is_rejected_and_stores_nothing,
    callback_with_reused_state_is_rejected_and_stores_nothing,
    callback_with_expired_state_is_rejected_and_stores_nothing,
    callback_in_another_browser_session_is_rejected_and_stores_nothing,
);

fn expire_all_states(app: &TestApp) {
    diesel::update(oauth_states::table)
        .set(oauth_states::expires_at.eq(tether::db::now() - chrono::Duration::seconds(1)))
        .execute(&mut *app.conn())
        .unwrap();
}

async fn callback_without_state_is_rejected_and_stores_nothing(backend: Backend) {
    let (app, fake) = signed_in(backend, "post").await;
    start(&app, &[]).await;
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
    let (state, _) = start(&app, &[]).await;
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
    let (state, challenge) = start(&app, &[]).await;
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
    let (state, _) = start(&app, &[]).await;
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
    let (state, challenge) = start(&app, &[]).await;
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
