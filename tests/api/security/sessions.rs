//! The session cookie: signing in renews it (HttpOnly, SameSite=Lax), so
//! that a cookie from before the sign-in, replayed elsewhere, opens nothing;
//! a session past its absolute or idle limit is refused however valid its
//! cookie, and in production the cookie is `__Host-` prefixed and Secure.

use crate::backend_tests;
use crate::helpers::{
    csrf_in, spawn_app_with, spawn_app_with_provider, Backend, FakeProvider, TestApp, TestDb,
    OWNER, PASSWORD,
};
use actix_web::cookie::{Cookie, CookieJar, Key};
use tether::db::models::user::User;

backend_tests!(
    signing_in_renews_the_session_cookie,
    a_session_past_its_absolute_or_idle_limit_is_refused,
    limits_are_configurable,
    in_production_the_cookie_is_host_prefixed_and_secure,
);

/// A session cookie as the server would make it (encrypted with its key),
/// for OWNER, made `age` seconds ago and last used `idle` seconds ago.
fn forged_session(app: &TestApp, age: i64, idle: i64) -> String {
    let user = User::by_email(&mut app.conn(), OWNER).unwrap().unwrap();
    let now = chrono::Utc::now().timestamp();
    let json = |v: &str| serde_json::to_string(v).unwrap();
    let state: std::collections::HashMap<&str, String> = [
        ("uid", json(&user.id)),
        ("tid", json(&user.tenant_id)),
        ("email", json(&user.email)),
        ("iat", (now - age).to_string()),
        ("seen", (now - idle).to_string()),
        ("gen", user.session_generation.to_string()),
    ]
    .into();
    let key = Key::from(app.ctx.session_key.expose());
    let mut jar = CookieJar::new();
    jar.private_mut(&key).add(Cookie::new(
        "tether_session",
        serde_json::to_string(&state).unwrap(),
    ));
    let cookie = jar.get("tether_session").unwrap();
    format!("tether_session={}", cookie.value())
}

async fn a_session_past_its_absolute_or_idle_limit_is_refused(backend: Backend) {
    let fake = FakeProvider::start().await;
    let app = spawn_app_with_provider(backend, &fake, "post").await;
    app.create_admin("acme", OWNER);
    let hour = 3600;
    // The forgery is what the server makes: a fresh one opens the dashboard.
    assert_eq!(
        app.dashboard_with(&forged_session(&app, hour, 60)).await,
        200
    );
    // Defaults: 12 hours from sign-in, 2 hours without a request.
    assert_eq!(
        app.dashboard_with(&forged_session(&app, 11 * hour, 60))
            .await,
        200
    );
    assert_eq!(
        app.dashboard_with(&forged_session(&app, 12 * hour + 60, 60))
            .await,
        303
    );
    assert_eq!(
        app.dashboard_with(&forged_session(&app, 3 * hour, 2 * hour + 60))
            .await,
        303
    );
    // A session of an earlier generation (its user signed out since) is refused.
    let stale = forged_session(&app, hour, 60);
    let user = User::by_email(&mut app.conn(), OWNER).unwrap().unwrap();
    assert!(User::end_sessions(&mut app.conn(), &user.id).unwrap());
    assert_eq!(app.dashboard_with(&stale).await, 303);
}

async fn limits_are_configurable(backend: Backend) {
    let app = spawn_app_with(
        TestDb::new(backend),
        &[
            ("TETHER_SESSION_MAX_AGE_SECS", "3600"),
            ("TETHER_SESSION_IDLE_SECS", "600"),
        ],
    )
    .await;
    app.create_admin("acme", OWNER);
    assert_eq!(
        app.dashboard_with(&forged_session(&app, 500, 60)).await,
        200
    );
    assert_eq!(
        app.dashboard_with(&forged_session(&app, 3660, 60)).await,
        303
    );
    assert_eq!(
        app.dashboard_with(&forged_session(&app, 1200, 660)).await,
        303
    );
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

async fn in_production_the_cookie_is_host_prefixed_and_secure(backend: Backend) {
    use base64::Engine;
    let session_key = base64::engine::general_purpose::STANDARD.encode([7u8; 64]);
    let app = spawn_app_with(
        TestDb::new(backend),
        &[
            ("TETHER_ENV", "production"),
            ("TETHER_PUBLIC_URL", "https://tether.example"),
            ("TETHER_SESSION_KEY", &session_key),
            ("TETHER_DEMO_PROVIDER", "false"),
            ("TETHER_METRICS_TOKEN", "a-metrics-token-of-length"),
        ],
    )
    .await;
    let res = app.get("/login").await;
    assert_eq!(res.status(), 200);
    let cookie = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.contains("tether_session="))
        .expect("a session cookie");
    assert!(cookie.starts_with("__Host-tether_session="), "{cookie}");
    assert!(
        cookie.contains("Secure") && cookie.contains("Path=/"),
        "{cookie}"
    );
    assert!(!cookie.contains("Domain"), "{cookie}");
}
