//! The session cookie: signing in renews it (HttpOnly, SameSite=Lax), so
//! that a cookie from before the sign-in, replayed elsewhere, opens nothing.

use crate::backend_tests;
use crate::helpers::{csrf_in, spawn_app_with_provider, Backend, FakeProvider, OWNER, PASSWORD};

backend_tests!(signing_in_renews_the_session_cookie,);

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
