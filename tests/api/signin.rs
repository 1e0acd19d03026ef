//! Signing in: local accounts through the login form, and the CRM's SSO handoff.

use crate::backend_tests;
use crate::helpers::{
    assert_error_page, csrf_in, spawn_app, spawn_app_with, Backend, Browser, TestApp, TestDb,
    PASSWORD,
};
use reqwest::cookie::CookieStore;
use tether::db::models::tenant::Tenant;
use tether::db::models::user::User;
use tether::sso::{sign, Claims};

const OWNER: &str = "owner@acme.example";
const SECRET: &str = "an-sso-secret-of-at-least-32-characters";
const BAD_LOGIN: &str = "That email and password do not match an account.";

backend_tests!(
    a_wrong_password_gets_a_401_page_that_says_so_and_no_session,
    an_unknown_email_gets_the_same_message_as_a_wrong_password,
    the_right_password_signs_in_and_lands_on_the_dashboard,
    the_dashboard_without_a_session_sends_the_browser_to_login,
    logout_with_csrf_ends_the_session,
    sso_signs_the_admin_in_and_creates_the_user_on_first_use,
    an_sso_token_works_only_once,
    expired_far_future_forged_or_foreign_sso_tokens_are_refused_and_create_nothing,
    sso_is_not_found_without_a_secret,
    an_sso_link_alone_signs_nobody_in_and_leaves_the_token_unspent,
    sso_posted_from_outside_the_crms_origins_signs_nobody_in_and_leaves_the_token_unspent,
    a_sign_in_waiting_for_its_password_check_holds_no_database_connection,
    a_cookie_saved_before_sign_out_is_refused_after_it,
    signing_out_everywhere_or_removing_the_user_ends_every_copy,
);

async fn app_with_admin(backend: Backend) -> TestApp {
    let app = spawn_app(backend).await;
    app.create_admin("acme", OWNER);
    app
}

async fn login_failure_page(app: &TestApp, email: &str, password: &str) -> String {
    let res = app.login(email, password).await;
    assert_eq!(res.status(), 401);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(res.headers().get("location").is_none());
    let page = res.text().await.unwrap();
    assert!(page.contains(BAD_LOGIN), "{page}");
    assert!(csrf_in(&page).is_some(), "the form is shown again: {page}");
    page
}

async fn a_wrong_password_gets_a_401_page_that_says_so_and_no_session(backend: Backend) {
    let app = app_with_admin(backend).await;
    let before = app.snapshot();
    let page = login_failure_page(&app, OWNER, "not the password").await;
    assert!(
        page.contains(&format!("value=\"{OWNER}\"")),
        "the email is kept"
    );
    assert!(!page.contains("not the password"));
    assert_ne!(app.get("/settings/integrations").await.status(), 200);
    assert_eq!(app.snapshot(), before);
}

async fn an_unknown_email_gets_the_same_message_as_a_wrong_password(backend: Backend) {
    let app = app_with_admin(backend).await;
    let before = app.snapshot();
    let unknown = login_failure_page(&app, "nobody@acme.example", PASSWORD).await;
    let wrong = login_failure_page(&app, OWNER, "not the password").await;
    let message = |page: &str| {
        page.lines()
            .find(|l| l.contains("id=\"login-error\"") && l.contains("<p"))
            .map(str::trim)
            .map(str::to_string)
    };
    assert!(message(&unknown).is_some(), "{unknown}");
    assert_eq!(message(&unknown), message(&wrong));
    assert_ne!(app.get("/settings/integrations").await.status(), 200);
    assert_eq!(app.snapshot(), before);
}

async fn the_right_password_signs_in_and_lands_on_the_dashboard(backend: Backend) {
    let app = app_with_admin(backend).await;
    // Emails are matched case-insensitively.
    let res = app.login("  Owner@ACME.example ", PASSWORD).await;
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "/settings/integrations");
    let page = app.get("/settings/integrations").await;
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains(OWNER));
    let user = User::by_email(&mut app.conn(), OWNER).unwrap().unwrap();
    assert!(user.last_login_at.is_some());
}

async fn the_dashboard_without_a_session_sends_the_browser_to_login(backend: Backend) {
    let app = app_with_admin(backend).await;
    for path in [
        "/settings/integrations",
        "/settings/integrations/cards/demo",
    ] {
        let res = app.get(path).await;
        assert_eq!(res.status(), 303, "{path}");
        let location = res.headers()["location"].to_str().unwrap().to_string();
        assert!(location.starts_with("/login"), "{path}: {location}");
    }
    // JSON callers get a 401, not a redirect.
    let res = app
        .client
        .get(format!("{}/oauth/demo/status", app.address))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
    assert_eq!(
        oauth_state_count(&app),
        0,
        "no flow starts without a session"
    );
}

fn oauth_state_count(app: &TestApp) -> i64 {
    use diesel::prelude::*;
    tether::db::schema::oauth_states::table
        .count()
        .get_result(&mut *app.conn())
        .unwrap()
}

async fn logout_with_csrf_ends_the_session(backend: Backend) {
    let app = app_with_admin(backend).await;
    assert_eq!(app.login(OWNER, PASSWORD).await.status(), 303);
    assert_eq!(app.get("/settings/integrations").await.status(), 200);
    let csrf = app.csrf("/settings/integrations").await;
    let res = app.post_form("/logout", &[("csrf", &csrf)]).await;
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "/login");
    let before = app.snapshot();
    let login = app.get("/login").await.text().await.unwrap();
    assert!(login.contains("You are signed out"), "{login}");
    assert_ne!(app.get("/settings/integrations").await.status(), 200);
    // The old CSRF token died with the session.
    let res = app.post_form("/logout", &[("csrf", &csrf)]).await;
    assert_eq!(res.status(), 403);
    assert_eq!(app.snapshot(), before);
}

async fn sso_app(backend: Backend) -> TestApp {
    let app = spawn_app_with(TestDb::new(backend), &[("TETHER_SSO_SECRET", SECRET)]).await;
    Tenant::create(&mut app.conn(), "acme", "Acme Dental").unwrap();
    app
}

fn claims(tenant: &str, email: &str, exp_in: i64) -> Claims {
    Claims {
        tenant: tenant.into(),
        email: email.into(),
        exp: chrono::Utc::now().timestamp() + exp_in,
        nonce: uuid::Uuid::new_v4().simple().to_string(),
    }
}

fn token(claims: &Claims) -> String {
    sign(SECRET.as_bytes(), claims)
}

async fn sso_signs_the_admin_in_and_creates_the_user_on_first_use(backend: Backend) {
    let app = sso_app(backend).await;
    assert!(User::by_email(&mut app.conn(), "crm-admin@acme.example")
        .unwrap()
        .is_none());
    let res = app
        .post_form(
            "/sso",
            &[(
                "token",
                &token(&claims("acme", "CRM-Admin@acme.example", 120)),
            )],
        )
        .await;
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "/settings/integrations");
    let page = app.get("/settings/integrations").await;
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("Acme Dental"));

    let user = User::by_email(&mut app.conn(), "crm-admin@acme.example")
        .unwrap()
        .expect("created on first use");
    let tenant = app.tenant("acme");
    assert_eq!(user.tenant_id, tenant.id);
    assert!(
        user.password_hash.is_none(),
        "SSO-only admins have no password"
    );

    // A second handoff (a new token) signs the same admin in; no second user.
    let other = Browser::new(&app);
    let res = other
        .post_form(
            "/sso",
            &[(
                "token",
                &token(&claims("acme", "crm-admin@acme.example", 120)),
            )],
        )
        .await;
    assert_eq!(res.status(), 303);
    assert_eq!(other.get("/settings/integrations").await.status(), 200);
    assert_eq!(User::count(&mut app.conn()).unwrap(), 1);
}

async fn an_sso_token_works_only_once(backend: Backend) {
    let app = sso_app(backend).await;
    let form = [(
        "token",
        token(&claims("acme", "crm-admin@acme.example", 120)),
    )];
    let form = [(form[0].0, form[0].1.as_str())];
    assert_eq!(app.post_form("/sso", &form).await.status(), 303);
    let before = app.snapshot();
    let replay = Browser::new(&app);
    let body = assert_error_page(
        replay.post_form("/sso", &form).await,
        400,
        "invalid_sso_token",
    )
    .await;
    assert!(body.contains("already used"), "{body}");
    assert_ne!(replay.get("/settings/integrations").await.status(), 200);
    assert_eq!(app.snapshot(), before);
}

async fn expired_far_future_forged_or_foreign_sso_tokens_are_refused_and_create_nothing(
    backend: Backend,
) {
    let app = sso_app(backend).await;
    app.create_admin("beta", "admin@beta.example");
    let before = app.snapshot();
    let email = "crm-admin@acme.example";

    let mut tampered = claims("acme", email, 120);
    let genuine = token(&tampered);
    tampered.email = "admin@beta.example".into();
    let tampered_payload = {
        let forged = token(&tampered);
        let (payload, _) = forged.split_once('.').unwrap();
        let (_, sig) = genuine.split_once('.').unwrap();
        format!("{payload}.{sig}")
    };
    let mut short_nonce = claims("acme", email, 120);
    short_nonce.nonce = "short".into();

    let cases: Vec<(&str, String, u16)> = vec![
        ("expired", token(&claims("acme", email, -1)), 400),
        ("expires now", token(&claims("acme", email, 0)), 400),
        (
            "more than 5 minutes ahead",
            token(&claims("acme", email, 301 + 60)),
            400,
        ),
        (
            "bad signature",
            sign(
                b"another-secret-of-at-least-32-characters",
                &claims("acme", email, 120),
            ),
            400,
        ),
        ("tampered claims", tampered_payload, 400),
        ("unknown tenant", token(&claims("nosuch", email, 120)), 404),
        (
            "another tenant's admin",
            token(&claims("acme", "admin@beta.example", 120)),
            403,
        ),
        ("short nonce", token(&short_nonce), 400),
        ("garbage", "garbage".into(), 400),
        ("empty", String::new(), 400),
    ];
    for (why, token, status) in cases {
        let browser = Browser::new(&app);
        let res = browser.post_form("/sso", &[("token", &token)]).await;
        let got = res.status().as_u16();
        let body = res.text().await.unwrap();
        assert_eq!(got, status, "{why}: {body}");
        assert!(
            body.contains("<code>"),
            "{why}: an error page with a code: {body}"
        );
        assert_ne!(
            browser.get("/settings/integrations").await.status(),
            200,
            "{why}: not signed in"
        );
    }
    // No token at all.
    assert!(app.post_form("/sso", &[]).await.status().is_client_error());
    assert_eq!(app.snapshot(), before);
    assert!(User::by_email(&mut app.conn(), email).unwrap().is_none());
}

async fn sso_is_not_found_without_a_secret(backend: Backend) {
    let app = spawn_app(backend).await;
    Tenant::create(&mut app.conn(), "acme", "Acme Dental").unwrap();
    let before = app.snapshot();
    let res = app
        .post_form(
            "/sso",
            &[(
                "token",
                &token(&claims("acme", "crm-admin@acme.example", 120)),
            )],
        )
        .await;
    assert_eq!(res.status(), 404);
    assert_ne!(app.get("/settings/integrations").await.status(), 200);
    assert_eq!(app.snapshot(), before);
}

async fn an_sso_link_alone_signs_nobody_in_and_leaves_the_token_unspent(backend: Backend) {
    let app = sso_app(backend).await;
    let token = token(&claims("acme", "crm-admin@acme.example", 120));
    let before = app.snapshot();
    let res = app
        .client
        .get(format!("{}/sso", app.address))
        .query(&[("token", &token)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 405);
    assert!(res.headers().get("location").is_none());
    assert!(res.text().await.unwrap().contains("a form the CRM posts"));
    assert_ne!(app.get("/settings/integrations").await.status(), 200);
    assert_eq!(app.snapshot(), before);
    // The CRM's form still works with the same token.
    assert_eq!(
        app.post_form("/sso", &[("token", &token)]).await.status(),
        303
    );
    assert_eq!(app.get("/settings/integrations").await.status(), 200);
}

/// The session cookie a browser holds now (as a `cookie` header value).
async fn saved_cookie(browser: &Browser) -> String {
    let res = browser.get("/settings/integrations").await;
    assert_eq!(res.status(), 200);
    let url = reqwest::Url::parse(&browser.address).unwrap();
    browser
        .jar
        .cookies(&url)
        .expect("a session cookie")
        .to_str()
        .unwrap()
        .to_string()
}

async fn a_cookie_saved_before_sign_out_is_refused_after_it(backend: Backend) {
    let app = app_with_admin(backend).await;
    let browser = Browser::new(&app);
    assert_eq!(browser.login(OWNER, PASSWORD).await.status(), 303);
    let copied = saved_cookie(&browser).await;
    assert_eq!(
        app.dashboard_with(&copied).await,
        200,
        "the copy works while signed in"
    );
    let csrf = browser.csrf("/settings/integrations").await;
    assert_eq!(
        browser
            .post_form("/logout", &[("csrf", &csrf)])
            .await
            .status(),
        303
    );
    assert_eq!(
        app.dashboard_with(&copied).await,
        303,
        "the copy ends with sign-out"
    );
    // Signing in again makes a new session; the old copy stays refused.
    assert_eq!(browser.login(OWNER, PASSWORD).await.status(), 303);
    assert_eq!(browser.get("/settings/integrations").await.status(), 200);
    assert_eq!(app.dashboard_with(&copied).await, 303);
}

async fn signing_out_everywhere_or_removing_the_user_ends_every_copy(backend: Backend) {
    let app = app_with_admin(backend).await;
    let (laptop, phone) = (Browser::new(&app), Browser::new(&app));
    for b in [&laptop, &phone] {
        assert_eq!(b.login(OWNER, PASSWORD).await.status(), 303);
    }
    let copies = [saved_cookie(&laptop).await, saved_cookie(&phone).await];
    let out = app.run_cli(&["user", "sign-out", OWNER]);
    assert!(out.status.success(), "{out:?}");
    for copy in &copies {
        assert_eq!(app.dashboard_with(copy).await, 303);
    }
    assert_eq!(laptop.login(OWNER, PASSWORD).await.status(), 303);
    let copy = saved_cookie(&laptop).await;
    let out = app.run_cli(&["user", "remove", OWNER]);
    assert_eq!(out.status.code(), Some(2), "no terminal: --yes is needed");
    assert!(User::by_email(&mut app.conn(), OWNER).unwrap().is_some());
    let out = app.run_cli(&["user", "remove", OWNER, "--yes"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(app.dashboard_with(&copy).await, 303);
    assert!(User::by_email(&mut app.conn(), OWNER).unwrap().is_none());
    let out = app.run_cli(&["user", "remove", OWNER, "--yes"]);
    assert_eq!(out.status.code(), Some(1), "removing nobody is an error");
}

/// The CRM's page, as `TETHER_EMBED_ORIGINS` lists it.
const CRM: &str = "https://crm.example.com";

async fn sso_posted_from_outside_the_crms_origins_signs_nobody_in_and_leaves_the_token_unspent(
    backend: Backend,
) {
    let app = spawn_app_with(
        TestDb::new(backend),
        &[("TETHER_SSO_SECRET", SECRET), ("TETHER_EMBED_ORIGINS", CRM)],
    )
    .await;
    Tenant::create(&mut app.conn(), "acme", "Acme Dental").unwrap();
    let token = token(&claims("acme", "crm-admin@acme.example", 120));
    let post = |browser: &Browser, headers: &[(&'static str, &'static str)]| {
        let mut req = browser
            .client
            .post(format!("{}/sso", app.address))
            .form(&[("token", &token)]);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        req.send()
    };
    let before = app.snapshot();
    // An auto-submitted form on another site (login CSRF), an opaque
    // origin, and browsers that say only that the page was another site's.
    let foreign: [&[(&str, &str)]; 5] = [
        &[
            ("origin", "https://evil.example"),
            ("sec-fetch-site", "cross-site"),
        ],
        &[("origin", "https://crm.example.com.evil.example")],
        &[("origin", "null"), ("sec-fetch-site", "cross-site")],
        &[("sec-fetch-site", "cross-site")],
        &[("sec-fetch-site", "same-site")],
    ];
    for headers in foreign {
        let browser = Browser::new(&app);
        let body = assert_error_page(
            post(&browser, headers).await.unwrap(),
            403,
            "sso_origin_refused",
        )
        .await;
        assert!(body.contains("from the CRM"), "{body}");
        assert!(!body.contains(&token));
        assert_ne!(
            browser.get("/settings/integrations").await.status(),
            200,
            "{headers:?} signed nobody in"
        );
    }
    assert_eq!(app.snapshot(), before, "no user, no spent token");
    // The CRM's own page hands the admin over, with the same token.
    let browser = Browser::new(&app);
    let res = post(
        &browser,
        &[("origin", CRM), ("sec-fetch-site", "cross-site")],
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 303);
    assert_eq!(browser.get("/settings/integrations").await.status(), 200);
}

async fn a_sign_in_waiting_for_its_password_check_holds_no_database_connection(backend: Backend) {
    // One connection: a sign-in that held it would stop the API.
    let app = spawn_app_with(TestDb::new(backend), &[("TETHER_DB_POOL_SIZE", "1")]).await;
    app.create_admin("acme", OWNER);
    let key = app.api_key(None, false);
    // Every password check is busy (a flood of sign-ins, say).
    let checks = &app.state.password_checks;
    let busy = checks
        .permits
        .acquire_many(checks.permits.available_permits() as u32)
        .await
        .unwrap();
    let browser = Browser::new(&app);
    let csrf = browser.csrf("/login").await;
    let sign_in = tokio::spawn(async move {
        browser
            .post_form(
                "/login",
                &[("email", OWNER), ("password", PASSWORD), ("csrf", &csrf)],
            )
            .await
            .status()
    });
    // The sign-in has read its hash and waits for a check...
    while checks.waiting() == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // ...without the connection: the API answers meanwhile.
    let (status, body) = app.get_json("/api/v1/tenants/acme/connections", &key).await;
    assert_eq!(status, 200, "{body}");
    drop(busy);
    assert_eq!(sign_in.await.unwrap(), 303);
}
