//! Where a flow may return to: a return_to that is not a plain path on
//! Tether itself (another origin, a scheme, backslashes, dot segments, a
//! header injection) is rejected and starts nothing; a relative one is
//! honoured at the end of the flow.

use crate::backend_tests;
use crate::helpers::{
    assert_error_page, mount_exchange, query_param, signed_in, Backend, TestApp, ACME_ISSUER,
};
use diesel::prelude::*;
use tether::db::schema::oauth_states;

backend_tests!(
    unsafe_return_to_is_rejected_and_starts_nothing,
    a_relative_return_to_is_honoured_at_the_end_of_the_flow,
);

fn state_count(app: &TestApp) -> i64 {
    oauth_states::table
        .count()
        .get_result(&mut *app.conn())
        .unwrap()
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
        let res = app.authorize("acme", &[("return_to", bad)]).await;
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
    let res = app.authorize("acme", &[("return_to", target)]).await;
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
