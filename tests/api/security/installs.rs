//! Provider-initiated installs (Wix): a site is bound to a tenant only from
//! the `instance` Wix signs with the app's secret, after the tenant's admin
//! signs in and confirms on a page that names the site; a forged, tampered,
//! expired or missing artefact, or a site another tenant holds, is refused
//! with a clear error and changes nothing. No route takes a bare instance id,
//! and only the site's owner's artefact binds a site.

use crate::backend_tests;
use crate::helpers::{csrf_in, spawn_app_with, Backend, Browser, TestApp, TestDb, PASSWORD};
use chrono::{Duration, Utc};
use tether::platforms::wix::sign_instance as sign_wix_instance;
use wiremock::matchers::{body_partial_json, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

backend_tests!(
    a_signed_install_connects_the_site_after_sign_in_and_confirmation,
    forged_tampered_expired_or_missing_artefacts_are_refused_and_change_nothing,
    a_site_bound_to_one_tenant_is_refused_for_another,
    only_the_sites_owner_binds_it_and_anyone_else_changes_nothing,
);

const SECRET: &str = "wix-app-secret";

/// An app whose Wix preset points at a fake, with admins of `acme` and `beta`.
async fn wix_app(backend: Backend) -> (TestApp, MockServer) {
    let fake = MockServer::start().await;
    let db = TestDb::new(backend);
    let file = db.data_dir().join("providers.toml");
    let base = fake.uri();
    std::fs::write(
        &file,
        format!("[providers.wix]\ntoken_url = \"{base}/oauth2/token\"\nuserinfo_url = \"{base}/apps/v1/instance\"\n"),
    )
    .unwrap();
    let app = spawn_app_with(
        db,
        &[
            ("TETHER_PROVIDERS_FILE", &file.display().to_string()),
            ("WIX_CLIENT_ID", "wix-app"),
            ("WIX_CLIENT_SECRET", SECRET),
        ],
    )
    .await;
    app.create_admin("acme", "owner@acme.example");
    app.create_admin("beta", "owner@beta.example");
    (app, fake)
}

/// Wix's token and instance endpoints for site `instance_id`.
async fn mount_site(fake: &MockServer, instance_id: &str) {
    Mock::given(method("POST"))
        .and(path("/oauth2/token"))
        .and(body_partial_json(
            serde_json::json!({"instance_id": instance_id}),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            serde_json::json!({"access_token": format!("at-{instance_id}"), "expires_in": 14400}),
        ))
        .mount(fake)
        .await;
    Mock::given(method("GET"))
        .and(path("/apps/v1/instance"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "instance": {"instanceId": instance_id}, "site": {"url": "https://mainstreet.example"}
        })))
        .mount(fake)
        .await;
}

/// What Wix adds to the app's dashboard URL for the site's owner, signed
/// `ago` before now.
fn signed(secret: &str, instance_id: &str, ago: Duration) -> String {
    signed_as(
        secret,
        serde_json::json!({
            "instanceId": instance_id,
            "signDate": (Utc::now() - ago).to_rfc3339(),
            "uid": "wix-user-1",
            "permissions": "OWNER",
            "siteMemberId": "member-9",
        }),
    )
}

fn signed_as(secret: &str, payload: serde_json::Value) -> String {
    sign_wix_instance(secret.as_bytes(), &payload)
}

fn install_url(instance: &str) -> String {
    format!(
        "/oauth/wix/install?instance={}",
        url::form_urlencoded::byte_serialize(instance.as_bytes()).collect::<String>()
    )
}

/// Signs `email` in through the login form, with `next`.
async fn login(browser: &Browser, email: &str, next: &str) -> reqwest::Response {
    let csrf = browser.csrf("/login").await;
    browser
        .post_form(
            "/login",
            &[
                ("email", email),
                ("password", PASSWORD),
                ("csrf", &csrf),
                ("next", next),
            ],
        )
        .await
}

/// A signed-in admin opens the install link and confirms; returns the answer.
async fn install_as(app: &TestApp, email: &str, instance: &str) -> reqwest::Response {
    let browser = Browser::new(app);
    assert_eq!(
        login(&browser, email, "/settings/integrations")
            .await
            .status(),
        303
    );
    let page = browser.get(&install_url(instance)).await;
    assert_eq!(page.status(), 200);
    let csrf = csrf_in(&page.text().await.unwrap()).unwrap();
    browser
        .post_form("/oauth/wix/install", &[("csrf", &csrf)])
        .await
}

async fn wix_connection(app: &TestApp, tenant: &str) -> Option<String> {
    app.default_connection(tenant, "wix")
        .map(|c| c.account_id.to_string())
}

async fn a_signed_install_connects_the_site_after_sign_in_and_confirmation(backend: Backend) {
    let (app, fake) = wix_app(backend).await;
    mount_site(&fake, "inst-1").await;
    let instance = signed(SECRET, "inst-1", Duration::minutes(1));

    // From Wix, not signed in: to the sign-in page, the artefact kept aside.
    let browser = Browser::new(&app);
    let res = browser.get(&install_url(&instance)).await;
    assert_eq!(res.status(), 303);
    let next = res.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(next, "/login?next=/oauth/wix/install");
    let res = login(&browser, "owner@acme.example", "/oauth/wix/install").await;
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "/oauth/wix/install");
    let before = app.snapshot();

    // The page names the site and the tenant, and changes nothing.
    let page = browser.get("/oauth/wix/install").await;
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    assert!(
        page.contains("<code>inst-1</code>") && page.contains("acme"),
        "{page}"
    );
    assert_eq!(app.snapshot(), before);
    assert!(fake.received_requests().await.unwrap().is_empty());

    // Another site's form without the page's token: refused.
    let res = browser.post_form("/oauth/wix/install", &[]).await;
    assert_eq!(res.status(), 403);
    assert_eq!(app.snapshot(), before);

    let csrf = csrf_in(&page).unwrap();
    let res = browser
        .post_form("/oauth/wix/install", &[("csrf", &csrf)])
        .await;
    assert_eq!(res.status(), 303);
    assert_eq!(
        wix_connection(&app, "acme").await.as_deref(),
        Some("inst-1")
    );
    let c = app.default_connection("acme", "wix").unwrap();
    assert_eq!(
        c.account_name.as_deref(),
        Some("https://mainstreet.example")
    );
    // Who opened it, from the signed artefact.
    let metadata = c.metadata();
    assert_eq!(metadata["ownerUid"], "wix-user-1");
    assert_eq!(metadata["siteMemberId"], "member-9");
    // The artefact is used up in this session.
    assert_eq!(
        browser
            .post_form("/oauth/wix/install", &[("csrf", &csrf)])
            .await
            .status(),
        400
    );
}

async fn forged_tampered_expired_or_missing_artefacts_are_refused_and_change_nothing(
    backend: Backend,
) {
    let (app, fake) = wix_app(backend).await;
    mount_site(&fake, "inst-1").await;
    let browser = Browser::new(&app);
    assert_eq!(
        login(&browser, "owner@acme.example", "/settings/integrations")
            .await
            .status(),
        303
    );
    let csrf = browser.csrf("/settings/integrations").await;
    let before = app.snapshot();

    let genuine = signed(SECRET, "inst-1", Duration::minutes(1));
    let (sig, _) = genuine.split_once('.').unwrap();
    let other = signed(SECRET, "inst-2", Duration::minutes(1));
    let (_, other_payload) = other.split_once('.').unwrap();
    let cases = [
        (
            "another secret",
            signed("not-the-app-secret", "inst-1", Duration::minutes(1)),
        ),
        ("tampered payload", format!("{sig}.{other_payload}")),
        ("expired", signed(SECRET, "inst-1", Duration::hours(2))),
        ("garbage", "garbage".to_string()),
        ("empty", String::new()),
    ];
    for (why, instance) in &cases {
        let res = browser.get(&install_url(instance)).await;
        assert_eq!(res.status(), 400, "{why}");
        let body = res.text().await.unwrap();
        assert!(body.contains("invalid_install"), "{why}: {body}");
        // Nothing was kept for the confirmation either.
        let res = browser
            .post_form("/oauth/wix/install", &[("csrf", &csrf)])
            .await;
        assert_eq!(res.status(), 400, "{why}: confirm");
    }
    // No artefact at all, and the old route that took a typed instance id.
    assert_eq!(browser.get("/oauth/wix/install").await.status(), 400);
    let res = browser
        .post_form(
            "/oauth/wix/instance",
            &[("csrf", &csrf), ("instance_id", "inst-1")],
        )
        .await;
    assert!(res.status().is_client_error(), "{}", res.status());
    assert_eq!(app.snapshot(), before);
    assert!(fake.received_requests().await.unwrap().is_empty());
    let page = browser
        .get("/settings/integrations")
        .await
        .text()
        .await
        .unwrap();
    assert!(!page.contains("instance_id"), "no instance id form: {page}");
}

async fn a_site_bound_to_one_tenant_is_refused_for_another(backend: Backend) {
    let (app, fake) = wix_app(backend).await;
    mount_site(&fake, "inst-1").await;
    let res = install_as(
        &app,
        "owner@acme.example",
        &signed(SECRET, "inst-1", Duration::minutes(1)),
    )
    .await;
    assert_eq!(res.status(), 303);
    let calls = fake.received_requests().await.unwrap().len();
    let before = app.snapshot();

    // Beta's admin holds a genuine artefact for the same site.
    let res = install_as(
        &app,
        "owner@beta.example",
        &signed(SECRET, "inst-1", Duration::minutes(1)),
    )
    .await;
    assert_eq!(res.status(), 409);
    let body = res.text().await.unwrap();
    assert!(body.contains("account_bound_elsewhere"), "{body}");
    assert!(body.contains("connected to another business"), "{body}");
    assert_eq!(app.snapshot(), before);
    assert_eq!(
        fake.received_requests().await.unwrap().len(),
        calls,
        "no token minted for beta"
    );
    assert!(wix_connection(&app, "beta").await.is_none());

    // The tenant that holds it may install it again (a reconnect).
    let res = install_as(
        &app,
        "owner@acme.example",
        &signed(SECRET, "inst-1", Duration::minutes(1)),
    )
    .await;
    assert_eq!(res.status(), 303);
}

async fn only_the_sites_owner_binds_it_and_anyone_else_changes_nothing(backend: Backend) {
    let (app, fake) = wix_app(backend).await;
    mount_site(&fake, "inst-1").await;
    let browser = Browser::new(&app);
    assert_eq!(
        login(&browser, "owner@acme.example", "/settings/integrations")
            .await
            .status(),
        303
    );
    let csrf = browser.csrf("/settings/integrations").await;
    let before = app.snapshot();
    let date = (Utc::now() - Duration::minutes(1)).to_rfc3339();
    // Each signed by Wix with the app's secret, none by the site's owner.
    let cases = [
        (
            "an anonymous visitor of the site",
            serde_json::json!({"instanceId": "inst-1", "signDate": date, "aid": "visitor-1"}),
        ),
        (
            "a collaborator",
            serde_json::json!({"instanceId": "inst-1", "signDate": date, "uid": "u2", "permissions": "CONTRIBUTOR"}),
        ),
        (
            "no permissions",
            serde_json::json!({"instanceId": "inst-1", "signDate": date, "uid": "u2"}),
        ),
        (
            "OWNER without a user",
            serde_json::json!({"instanceId": "inst-1", "signDate": date, "permissions": "OWNER"}),
        ),
        (
            "OWNER beside a visitor id",
            serde_json::json!({"instanceId": "inst-1", "signDate": date, "uid": "u2", "permissions": "OWNER", "aid": "visitor-1"}),
        ),
    ];
    for (why, payload) in cases {
        let res = browser.get(&install_url(&signed_as(SECRET, payload))).await;
        assert_eq!(res.status(), 403, "{why}");
        let body = res.text().await.unwrap();
        assert!(body.contains("not_site_owner"), "{why}: {body}");
        assert!(body.contains("Only the site&#39;s owner"), "{why}: {body}");
        // Nothing was kept for the confirmation.
        let res = browser
            .post_form("/oauth/wix/install", &[("csrf", &csrf)])
            .await;
        assert_eq!(res.status(), 400, "{why}: confirm");
    }
    assert_eq!(app.snapshot(), before);
    assert!(fake.received_requests().await.unwrap().is_empty());
    assert!(wix_connection(&app, "acme").await.is_none());
}
