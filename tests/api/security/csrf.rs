//! CSRF: a POST to any form route (connect, refresh, disconnect, logout, login)
//! without its session's CSRF token, or with a wrong one (another session's
//! among them), is refused with 403 and changes nothing; no call reaches the
//! provider, and the admin stays signed in and connected.

use super::forbid_token_requests;
use crate::backend_tests;
use crate::helpers::{
    connect, signed_in, Backend, Browser, FakeProvider, TestApp, OWNER, PASSWORD,
};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

backend_tests!(
    posts_without_a_csrf_token_are_forbidden,
    posts_with_a_wrong_csrf_token_are_forbidden_and_change_nothing,
    posts_without_a_csrf_token_are_refused_and_change_nothing,
    a_cross_site_get_to_connect_starts_no_flow,
);

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
        "/oauth/acme/authorize",
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

async fn posts_without_a_csrf_token_are_forbidden(backend: Backend) {
    let (app, fake) = connected_with_tripwires(backend).await;
    let forms: Vec<Vec<(&str, &str)>> = vec![vec![], vec![("token", "x")]];
    assert_csrf_refused(&app, &fake, &forms, Some(403)).await;
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

/// Connect is a form: a link or an image on another site that points at it
/// (a forced reconnect) reaches no provider and records no state.
async fn a_cross_site_get_to_connect_starts_no_flow(backend: Backend) {
    let (app, fake) = connected_with_tripwires(backend).await;
    let before = app.snapshot();
    for path in [
        "/oauth/acme/authorize",
        "/oauth/acme/authorize?return_to=/settings/integrations&popup=1",
    ] {
        let res = app.get(path).await;
        assert!(res.status().is_client_error(), "{path}: {}", res.status());
        assert!(res.headers().get("location").is_none(), "{path}");
    }
    assert_eq!(app.snapshot(), before);
    assert!(fake.requests().await.is_empty());
}
