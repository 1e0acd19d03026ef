//! GoHighLevel Marketplace installs and app webhooks (issue 10 point 4),
//! against GoHighLevel faked at the HTTP level: a callback with a code and
//! no state is taken only from a provider that declares provider-initiated
//! installs; the grant refreshes the tenant the location is bound to, or is
//! held (sealed) until an admin claims it on its page or the CRM assigns
//! it; unclaimed ones are swept and revoked; signed `INSTALL`/`UNINSTALL`
//! webhooks are applied, and every refusal says why and changes nothing.

use crate::backend_tests;
use crate::helpers::{
    acme_vars, csrf_in, outbox, spawn_app_with, Backend, Browser, FakeProvider, TestApp, TestDb,
    KEY_K1, KEY_K2, PASSWORD, WEBHOOK_SECRET,
};
use base64::Engine;
use diesel::prelude::*;
use ring::signature::{Ed25519KeyPair, KeyPair};
use tether::crypto::Secret;
use tether::db::models::connection::{Connection, Grant, TokenSet};
use tether::db::models::pending_install::PendingInstall;
use tether::db::now;
use tether::ids::{ProviderKey, TenantId};
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, ResponseTemplate};

backend_tests!(
    a_stateless_callback_is_held_for_gohighlevel_sealed_and_refused_for_acme,
    a_held_install_is_logged_by_a_digest_of_its_id_never_the_id,
    an_install_of_a_bound_location_refreshes_that_tenant_s_connection,
    a_held_install_is_claimed_on_its_page_after_signing_in,
    a_location_bound_to_another_tenant_meanwhile_is_refused_on_claim,
    the_crm_lists_and_assigns_held_installs_through_the_api,
    unclaimed_installs_expire_and_are_revoked_by_the_sweep,
    unclaimed_installs_without_a_revocation_url_are_dropped_unrevoked,
    an_uninstall_webhook_disconnects_the_location_with_an_event_and_a_webhook,
    an_agency_uninstall_disconnects_every_location_of_the_company,
    webhook_refusals_say_why_and_change_nothing,
    held_installs_need_their_key_and_are_rotated_with_the_connections,
);

/// The GoHighLevel app's webhook signing key in the tests (GoHighLevel's own
/// is the default).
pub(crate) fn ghl_key() -> Ed25519KeyPair {
    Ed25519KeyPair::from_seed_unchecked(&[42u8; 32]).unwrap()
}

fn public_key_of(pair: &Ed25519KeyPair) -> String {
    let mut raw = [0u8; 32];
    raw.copy_from_slice(pair.public_key().as_ref());
    tether::crypto::ed25519_spki_base64(&raw)
}

pub(crate) const APP_ID: &str = "app-tether-1";

/// An app with `acme` and `gohighlevel` against `fake` (GoHighLevel's token
/// endpoint at `/oauth/token`, its revocation endpoint at `/oauth/revoke`
/// when `revocation` is set), outgoing webhooks on, and admins of `acme`
/// and `beta`.
pub(crate) async fn ghl_app(backend: Backend, fake: &FakeProvider, revocation: bool) -> TestApp {
    ghl_app_revoking(backend, fake, revocation, &[]).await
}

/// [`ghl_app`] with more variables.
pub(crate) async fn ghl_app_with(
    backend: Backend,
    fake: &FakeProvider,
    extra: &[(&str, &str)],
) -> TestApp {
    ghl_app_revoking(backend, fake, false, extra).await
}

async fn ghl_app_revoking(
    backend: Backend,
    fake: &FakeProvider,
    revocation: bool,
    extra: &[(&str, &str)],
) -> TestApp {
    let base = fake.server.uri();
    let revoke = if revocation {
        format!("revocation_url = \"{base}/oauth/revoke\"\n")
    } else {
        String::new()
    };
    let toml = format!(
        "{}\n[providers.gohighlevel]\nauthorize_url = \"{base}/oauth/chooselocation\"\ntoken_url = \"{base}/oauth/token\"\nuserinfo_url = \"{base}/locations/{{locationId}}\"\n{revoke}",
        fake.providers_toml("post")
    );
    let db = TestDb::new(backend);
    let file = crate::helpers::write_providers(&db, &toml);
    let hook = format!("{base}/hooks");
    let key = public_key_of(&ghl_key());
    let mut vars = acme_vars(&file).to_vec();
    vars.extend_from_slice(&[
        ("GOHIGHLEVEL_CLIENT_ID", "ghl-client"),
        ("GOHIGHLEVEL_CLIENT_SECRET", "ghl-secret"),
        ("TETHER_GOHIGHLEVEL_WEBHOOK_PUBLIC_KEY", key.as_str()),
        ("TETHER_GOHIGHLEVEL_APP_ID", APP_ID),
        ("TETHER_WEBHOOK_URL", hook.as_str()),
        ("TETHER_WEBHOOK_SECRET", WEBHOOK_SECRET),
    ]);
    vars.extend_from_slice(extra);
    let app = spawn_app_with(db, &vars).await;
    app.create_admin("acme", "owner@acme.example");
    app.create_admin("beta", "owner@beta.example");
    Mock::given(method("POST"))
        .and(path("/hooks"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&fake.server)
        .await;
    app
}

/// GoHighLevel's token endpoint answering the code `code` with a location
/// token for `location` (tokens `ghl-at-<n>` / `ghl-rt-<n>`), once.
pub(crate) async fn mount_exchange(fake: &FakeProvider, code: &str, location: &str, n: u32) {
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .and(body_string_contains(format!("code={code}&")))
        .and(body_string_contains("grant_type=authorization_code"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "access_token": format!("ghl-at-{n}"), "token_type": "Bearer", "expires_in": 86399,
            "refresh_token": format!("ghl-rt-{n}"), "scope": "contacts.readonly",
            "userType": "Location", "companyId": "c_9", "locationId": location, "userId": "u_1"
        })))
        .expect(1)
        .named(format!("exchange of {code}"))
        .mount(&fake.server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("/locations/{location}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "location": {"id": location, "companyId": "c_9", "name": format!("Dental {location}")}
        })))
        .mount(&fake.server)
        .await;
}

/// The state-less callback a Marketplace install sends `browser` to.
pub(crate) async fn marketplace_callback(browser: &Browser, code: &str) -> reqwest::Response {
    browser
        .get(&format!("/oauth/gohighlevel/callback?code={code}"))
        .await
}

/// Holds an install of `location` through the callback, in `browser`.
pub(crate) async fn hold(
    app: &TestApp,
    fake: &FakeProvider,
    browser: &Browser,
    location: &str,
    n: u32,
) {
    let code = format!("code-{n}");
    mount_exchange(fake, &code, location, n).await;
    let res = marketplace_callback(browser, &code).await;
    assert_eq!(res.status(), 303, "{:?}", res.text().await);
    assert_eq!(res.headers()["location"], "/oauth/gohighlevel/claim");
    assert!(pending(app).iter().any(|p| p.account_id == location));
}

pub(crate) fn pending(app: &TestApp) -> Vec<PendingInstall> {
    use tether::db::schema::pending_installs as p;
    p::table
        .order(p::created_at.asc())
        .select(PendingInstall::as_select())
        .load(&mut app.conn())
        .unwrap()
}

/// Everything a refused request must leave alone: Tether's rows, unclaimed
/// installs, webhook ids seen, and the outbox.
pub(crate) fn snapshot(app: &TestApp) -> String {
    use tether::db::schema::{pending_installs as p, seen_webhooks as s, webhook_outbox as o};
    let mut conn = app.conn();
    let installs: Vec<(String, String)> = p::table
        .select((p::id, p::account_id))
        .order(p::id.asc())
        .load(&mut conn)
        .unwrap();
    let seen: Vec<String> = s::table.select(s::webhook_id).load(&mut conn).unwrap();
    let queued: i64 = o::table.count().get_result(&mut conn).unwrap();
    format!("{}\n{installs:?}\n{seen:?}\n{queued}", app.snapshot())
}

/// The events of `provider` (kind, actor, detail), oldest first.
pub(crate) fn events(app: &TestApp, provider: &str) -> Vec<(String, String, Option<String>)> {
    use tether::db::schema::events as e;
    e::table
        .filter(e::provider.eq(provider))
        .order((e::created_at.asc(), e::id.asc()))
        .select((e::kind, e::actor, e::detail))
        .load(&mut app.conn())
        .unwrap()
}

/// Stores a connected GoHighLevel location for `tenant`, as a grant would.
pub(crate) fn bind(app: &TestApp, tenant: &str, location: &str, company: &str) -> Connection {
    let t = app.tenant(tenant);
    let tokens = TokenSet {
        access_token: Secret::new(format!("old-at-{location}")),
        refresh_token: Some(Secret::new(format!("old-rt-{location}"))),
        token_type: "Bearer".into(),
        raw: Secret::new(serde_json::json!({})),
    };
    let metadata = serde_json::json!({ "locationId": location, "companyId": company });
    Connection::store_grant(
        &mut app.conn(),
        &app.ctx.keys,
        &Grant {
            kind: tether::db::models::connection::Kind::OAuth,
            tenant_id: &TenantId::known(t.id.to_string()),
            provider: &ProviderKey::known("gohighlevel"),
            account_id: &tether::ids::AccountId::known(location),
            account_name: None,
            scopes: &["contacts.readonly".to_string()],
            tokens: &tokens,
            expires_at: Some(now() + chrono::Duration::hours(1)),
            refresh_expires_at: None,
            next_refresh_at: Some(now() + chrono::Duration::minutes(48)),
            metadata: &metadata,
            parent_account_id: Some(&tether::ids::AccountId::known(company)),
            tags: None,
        },
    )
    .unwrap()
}

fn access_token(app: &TestApp, c: &Connection) -> Option<String> {
    app.connection(&c.id)
        .tokens(&app.ctx.keys)
        .unwrap()
        .map(|t| t.access_token.expose().clone())
}

async fn signed_in(app: &TestApp, email: &str) -> Browser {
    let browser = Browser::new(app);
    assert_eq!(browser.login(email, PASSWORD).await.status(), 303);
    browser
}

async fn a_stateless_callback_is_held_for_gohighlevel_sealed_and_refused_for_acme(
    backend: Backend,
) {
    let fake = FakeProvider::start().await;
    let app = ghl_app(backend, &fake, false).await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .named("no acme token request")
        .mount(&fake.server)
        .await;

    // acme did not declare provider-initiated installs: refused, no token call.
    let before = snapshot(&app);
    let browser = Browser::new(&app);
    let res = browser.get("/oauth/acme/callback?code=c1").await;
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("invalid_state"));
    assert_eq!(snapshot(&app), before);

    // GoHighLevel: exchanged once (exchange_of expects 1), held, no connection.
    hold(&app, &fake, &browser, "loc_1", 1).await;
    let held = pending(&app);
    assert_eq!(held.len(), 1);
    let install = &held[0];
    assert_eq!(install.provider.as_str(), "gohighlevel");
    assert_eq!(install.metadata()["companyId"], "c_9");
    let hold_hours = (install.expires_at - install.created_at).num_hours();
    assert_eq!(hold_hours, 24);
    for secret in [&b"ghl-at-1"[..], b"ghl-rt-1"] {
        assert!(
            !install
                .token_ciphertext
                .windows(secret.len())
                .any(|w| w == secret),
            "the row's ciphertext holds no token bytes"
        );
    }
    let tokens = install.tokens(&app.ctx.keys).unwrap();
    assert_eq!(tokens.access_token.expose(), "ghl-at-1");
    assert!(app.default_connection("acme", "gohighlevel").is_none());
    assert!(app.default_connection("beta", "gohighlevel").is_none());
    // The exchange used the callback URI as its redirect_uri, without a verifier.
    let exchange = fake
        .requests()
        .await
        .into_iter()
        .find(|r| r.url.path() == "/oauth/token")
        .unwrap();
    let form = String::from_utf8(exchange.body).unwrap();
    let redirect = format!("{}/oauth/gohighlevel/callback", app.address);
    assert!(
        form.contains(&format!(
            "redirect_uri={}",
            url::form_urlencoded::byte_serialize(redirect.as_bytes()).collect::<String>()
        )),
        "{form}"
    );
    assert!(!form.contains("code_verifier"), "{form}");
}

async fn an_install_of_a_bound_location_refreshes_that_tenant_s_connection(backend: Backend) {
    let fake = FakeProvider::start().await;
    let app = ghl_app(backend, &fake, false).await;
    let bound = bind(&app, "beta", "loc_1", "c_9");
    mount_exchange(&fake, "code-2", "loc_1", 2).await;

    let browser = Browser::new(&app);
    let res = marketplace_callback(&browser, "code-2").await;
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "/connect/done");
    let page = browser.get("/connect/done").await.text().await.unwrap();
    assert!(
        page.contains("loc_1 is connected to beta; its access was renewed"),
        "{page}"
    );
    assert!(pending(&app).is_empty(), "nothing held");
    assert_eq!(access_token(&app, &bound).as_deref(), Some("ghl-at-2"));
    assert_eq!(app.connection(&bound.id).status, "connected");
    assert!(app.default_connection("acme", "gohighlevel").is_none());
    assert_eq!(
        events(&app, "gohighlevel"),
        [(
            "reconnected".into(),
            "provider:gohighlevel".into(),
            Some("Dental loc_1".into())
        )]
    );
}

async fn a_held_install_is_claimed_on_its_page_after_signing_in(backend: Backend) {
    let fake = FakeProvider::start().await;
    let app = ghl_app(backend, &fake, false).await;
    // The installer's browser, not signed in.
    let browser = Browser::new(&app);
    hold(&app, &fake, &browser, "loc_1", 1).await;
    let res = browser.get("/oauth/gohighlevel/claim").await;
    assert_eq!(res.status(), 303);
    assert_eq!(
        res.headers()["location"],
        "/login?next=/oauth/gohighlevel/claim"
    );
    let login_page = browser
        .get("/login?next=/oauth/gohighlevel/claim")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        login_page.contains("GoHighLevel Dental loc_1 was installed"),
        "{login_page}"
    );
    let csrf = csrf_in(&login_page).unwrap();
    let res = browser
        .post_form(
            "/login",
            &[
                ("email", "owner@acme.example"),
                ("password", PASSWORD),
                ("csrf", &csrf),
                ("next", "/oauth/gohighlevel/claim"),
            ],
        )
        .await;
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "/oauth/gohighlevel/claim");

    // The page names the location and the tenant, and changes nothing.
    let before = snapshot(&app);
    let page = browser.get("/oauth/gohighlevel/claim").await;
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    assert!(
        page.contains("<strong id=\"claim-location\">Dental loc_1</strong>"),
        "{page}"
    );
    assert!(
        page.contains("<strong id=\"claim-tenant\">acme</strong>"),
        "{page}"
    );
    assert!(
        !page.contains(&pending(&app)[0].id),
        "the id stays in the session"
    );
    assert_eq!(snapshot(&app), before);

    // Another admin's browser has no install to claim; a form without the
    // page's token is refused.
    let beta = signed_in(&app, "owner@beta.example").await;
    let beta_csrf = beta.csrf("/settings/integrations").await;
    let res = beta.get("/oauth/gohighlevel/claim").await;
    assert_eq!(res.status(), 404);
    assert!(res.text().await.unwrap().contains("unknown_install"));
    let res = beta
        .post_form("/oauth/gohighlevel/claim", &[("csrf", &beta_csrf)])
        .await;
    assert_eq!(res.status(), 404);
    let res = browser.post_form("/oauth/gohighlevel/claim", &[]).await;
    assert_eq!(res.status(), 403);
    assert_eq!(snapshot(&app), before);

    let csrf = csrf_in(&page).unwrap();
    let res = browser
        .post_form("/oauth/gohighlevel/claim", &[("csrf", &csrf)])
        .await;
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "/settings/integrations");
    let c = app.default_connection("acme", "gohighlevel").unwrap();
    assert_eq!(c.account_id, "loc_1");
    assert_eq!(c.metadata()["companyId"], "c_9");
    assert_eq!(access_token(&app, &c).as_deref(), Some("ghl-at-1"));
    let lifetime = (c.expires_at.unwrap() - now()).num_seconds();
    assert!((86_000..=86_400).contains(&lifetime), "{lifetime}");
    assert!(c.next_refresh_at.is_some());
    assert!(pending(&app).is_empty());
    assert_eq!(
        events(&app, "gohighlevel"),
        [(
            "connected".into(),
            "admin:owner@acme.example".into(),
            Some("Dental loc_1".into())
        )]
    );
    let payloads: Vec<serde_json::Value> = outbox(&mut app.conn())
        .iter()
        .map(|o| serde_json::from_str(&o.payload).unwrap())
        .collect();
    assert!(payloads
        .iter()
        .any(|p| p["type"] == "connected" && p["tenant"] == "acme"));
    // Used up.
    let res = browser
        .post_form("/oauth/gohighlevel/claim", &[("csrf", &csrf)])
        .await;
    assert_eq!(res.status(), 404);
}

async fn a_location_bound_to_another_tenant_meanwhile_is_refused_on_claim(backend: Backend) {
    let fake = FakeProvider::start().await;
    let app = ghl_app(backend, &fake, false).await;
    let browser = Browser::new(&app);
    hold(&app, &fake, &browser, "loc_1", 1).await;
    assert_eq!(
        browser.login("owner@acme.example", PASSWORD).await.status(),
        303
    );
    let page = browser
        .get("/oauth/gohighlevel/claim")
        .await
        .text()
        .await
        .unwrap();
    let csrf = csrf_in(&page).unwrap();
    // Meanwhile beta connected the same location.
    let theirs = bind(&app, "beta", "loc_1", "c_9");
    let before = snapshot(&app);
    let res = browser
        .post_form("/oauth/gohighlevel/claim", &[("csrf", &csrf)])
        .await;
    assert_eq!(res.status(), 409);
    let body = res.text().await.unwrap();
    assert!(body.contains("account_bound_elsewhere"), "{body}");
    assert_eq!(snapshot(&app), before);
    assert!(app.default_connection("acme", "gohighlevel").is_none());
    assert_eq!(access_token(&app, &theirs).as_deref(), Some("old-at-loc_1"));
    assert_eq!(pending(&app).len(), 1, "still held");
}

async fn the_crm_lists_and_assigns_held_installs_through_the_api(backend: Backend) {
    let fake = FakeProvider::start().await;
    let app = ghl_app(backend, &fake, false).await;
    hold(&app, &fake, &Browser::new(&app), "loc_1", 1).await;
    hold(&app, &fake, &Browser::new(&app), "loc_2", 2).await;
    // Listing takes any key for all tenants; assigning, an admin one.
    let reader = app.api_key(None, false);
    let key = app.api_key(None, true);
    let scoped = app.api_key(Some("acme"), true);
    let list = |key: String| {
        let (client, url) = (
            app.client.clone(),
            format!("{}/api/v1/installs", app.address),
        );
        async move { client.get(url).bearer_auth(key).send().await.unwrap() }
    };
    let res = list(reader.clone()).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let text = res.text().await.unwrap();
    assert!(
        !text.contains("ghl-at") && !text.contains("ghl-rt"),
        "{text}"
    );
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let installs = doc["installs"].as_array().unwrap();
    assert_eq!(installs.len(), 2);
    let first = installs
        .iter()
        .find(|i| i["account"]["id"] == "loc_1")
        .unwrap();
    assert_eq!(first["provider"], "gohighlevel");
    assert_eq!(
        first["account"]["name"], "Dental loc_1",
        "named from the location"
    );
    let (created, expires) = (
        chrono::DateTime::parse_from_rfc3339(first["created_at"].as_str().unwrap()).unwrap(),
        chrono::DateTime::parse_from_rfc3339(first["expires_at"].as_str().unwrap()).unwrap(),
    );
    assert_eq!((expires - created).num_hours(), 24);
    let id = first["id"].as_str().unwrap().to_string();

    // A key of one tenant sees none and assigns none.
    assert_eq!(list(scoped.clone()).await.status(), 403);
    let assign = |key: &str, id: &str, body: serde_json::Value| {
        app.client
            .post(format!("{}/api/v1/installs/{id}/assign", app.address))
            .bearer_auth(key)
            .json(&body)
            .send()
    };
    let before = snapshot(&app);
    for (key, id, body, status, code) in [
        (
            &scoped,
            id.as_str(),
            serde_json::json!({"tenant": "acme"}),
            403,
            "forbidden",
        ),
        // A key for all tenants made without --admin lists, never assigns.
        (
            &reader,
            id.as_str(),
            serde_json::json!({"tenant": "beta"}),
            403,
            "forbidden",
        ),
        (
            &key,
            id.as_str(),
            serde_json::json!({"tenant": "nobody"}),
            404,
            "not_found",
        ),
        (
            &key,
            id.as_str(),
            serde_json::json!({"tenant": 7}),
            400,
            "invalid_json",
        ),
        (
            &key,
            id.as_str(),
            serde_json::json!({"tenant": "acme", "x": 1}),
            400,
            "invalid_json",
        ),
        (
            &key,
            "no-such-install",
            serde_json::json!({"tenant": "acme"}),
            404,
            "unknown_install",
        ),
    ] {
        let res = assign(key, id, body.clone()).await.unwrap();
        assert_eq!(res.status(), status, "{body}");
        let err: serde_json::Value = res.json().await.unwrap();
        assert_eq!(err["error"]["code"], code, "{body}");
    }
    assert_eq!(snapshot(&app), before);

    let res = assign(&key, &id, serde_json::json!({"tenant": "beta"}))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let doc: serde_json::Value = res.json().await.unwrap();
    assert_eq!(doc["tenant"], "beta");
    assert_eq!(doc["connection"]["status"], "connected");
    assert_eq!(doc["connection"]["account"]["id"], "loc_1");
    let c = app.default_connection("beta", "gohighlevel").unwrap();
    assert_eq!(access_token(&app, &c).as_deref(), Some("ghl-at-1"));
    assert_eq!(
        events(&app, "gohighlevel"),
        [(
            "connected".into(),
            "api:crm".into(),
            Some("Dental loc_1".into())
        )]
    );
    // Gone from the list, and not assigned twice.
    let doc: serde_json::Value = list(key.clone()).await.json().await.unwrap();
    assert_eq!(doc["installs"].as_array().unwrap().len(), 1);
    let res = assign(&key, &id, serde_json::json!({"tenant": "acme"}))
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert!(app.default_connection("acme", "gohighlevel").is_none());
}

/// Makes every unclaimed install's day over.
fn expire_all(app: &TestApp) {
    use tether::db::schema::pending_installs as p;
    diesel::update(p::table)
        .set(p::expires_at.eq(now() - chrono::Duration::minutes(1)))
        .execute(&mut app.conn())
        .unwrap();
}

async fn unclaimed_installs_expire_and_are_revoked_by_the_sweep(backend: Backend) {
    let fake = FakeProvider::start().await;
    let app = ghl_app(backend, &fake, true).await;
    Mock::given(method("POST"))
        .and(path("/oauth/revoke"))
        .and(body_string_contains("token=ghl-rt-1"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .named("revocation of the expired install")
        .mount(&fake.server)
        .await;
    hold(&app, &fake, &Browser::new(&app), "loc_1", 1).await;
    let sweep = tether::connections::installs::sweep;
    assert_eq!(sweep(&app.state).await.unwrap().expired, 0, "not yet");
    assert_eq!(pending(&app).len(), 1);
    expire_all(&app);
    let swept = sweep(&app.state).await.unwrap();
    assert_eq!((swept.expired, swept.revoked), (1, 1));
    assert!(pending(&app).is_empty());
    assert_eq!(fake.calls_to("/oauth/revoke").await, 1);
    // Nothing left: a second sweep does nothing.
    assert_eq!(sweep(&app.state).await.unwrap().expired, 0);
    assert_eq!(fake.calls_to("/oauth/revoke").await, 1);
}

async fn unclaimed_installs_without_a_revocation_url_are_dropped_unrevoked(backend: Backend) {
    let fake = FakeProvider::start().await;
    let app = ghl_app(backend, &fake, false).await;
    hold(&app, &fake, &Browser::new(&app), "loc_1", 1).await;
    expire_all(&app);
    let swept = tether::connections::installs::sweep(&app.state)
        .await
        .unwrap();
    assert_eq!((swept.expired, swept.revoked), (1, 0));
    assert!(pending(&app).is_empty());
    assert_eq!(fake.calls_to("/oauth/revoke").await, 0);
}

/// A GoHighLevel app webhook as it is delivered: `doc` signed with `pair`.
pub(crate) async fn deliver(
    app: &TestApp,
    doc: &serde_json::Value,
    pair: Option<&Ed25519KeyPair>,
) -> reqwest::Response {
    let body = serde_json::to_vec(doc).unwrap();
    let mut req = app
        .client
        .post(format!("{}/webhooks/gohighlevel", app.address))
        .header("content-type", "application/json");
    if let Some(pair) = pair {
        let sig = base64::engine::general_purpose::STANDARD.encode(pair.sign(&body));
        req = req.header("x-ghl-signature", sig);
    }
    req.body(body).send().await.unwrap()
}

pub(crate) fn webhook(kind: &str, location: &str, id: &str) -> serde_json::Value {
    serde_json::json!({
        "type": kind, "appId": APP_ID, "locationId": location, "companyId": "c_9",
        "userId": "u_1", "planId": "p_1", "webhookId": id,
        "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    })
}

async fn an_uninstall_webhook_disconnects_the_location_with_an_event_and_a_webhook(
    backend: Backend,
) {
    let fake = FakeProvider::start().await;
    let app = ghl_app(backend, &fake, true).await;
    let c = bind(&app, "acme", "loc_1", "c_9");
    let other = bind(&app, "acme", "loc_3", "c_9");
    hold(&app, &fake, &Browser::new(&app), "loc_2", 2).await;
    let key = ghl_key();

    let res = deliver(&app, &webhook("UNINSTALL", "loc_1", "wh-1"), Some(&key)).await;
    assert_eq!(res.status(), 200);
    let doc: serde_json::Value = res.json().await.unwrap();
    assert_eq!(doc["disconnected"], 1);
    let row = app.connection(&c.id);
    assert_eq!(row.status, "disconnected");
    assert!(row.token_ciphertext.is_none() && row.key_id.is_none());
    assert_eq!(app.connection(&other.id).status, "connected", "only loc_1");
    assert_eq!(
        fake.calls_to("/oauth/revoke").await,
        0,
        "no revocation: it is uninstalled"
    );
    let recorded = events(&app, "gohighlevel");
    assert_eq!(
        recorded.last().unwrap(),
        &(
            "disconnected".to_string(),
            "provider:gohighlevel".to_string(),
            Some("the app was uninstalled at GoHighLevel".to_string())
        )
    );
    let queued: Vec<serde_json::Value> = outbox(&mut app.conn())
        .iter()
        .map(|o| serde_json::from_str(&o.payload).unwrap())
        .collect();
    let sent = queued
        .iter()
        .find(|p| p["type"] == "disconnected")
        .expect("a disconnected webhook is queued");
    assert_eq!(sent["tenant"], "acme");
    assert_eq!(sent["connection_id"], c.id.as_str());
    assert_eq!(sent["actor"], "provider:gohighlevel");
    // The token API knows it is gone (the default moved to loc_3).
    let api = app.api_key(None, false);
    let res = app
        .client
        .get(format!(
            "{}/api/v1/tenants/acme/connections/gohighlevel/token?account=loc_1",
            app.address
        ))
        .bearer_auth(&api)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);

    // An uninstall of a held location drops the install.
    let res = deliver(&app, &webhook("UNINSTALL", "loc_2", "wh-2"), Some(&key)).await;
    assert_eq!(res.status(), 200);
    assert!(pending(&app).is_empty());
    // A second uninstall of loc_1 (a new delivery) changes nothing more.
    let before = snapshot(&app);
    let res = deliver(&app, &webhook("UNINSTALL", "loc_1", "wh-3"), Some(&key)).await;
    assert_eq!(res.status(), 200);
    let doc: serde_json::Value = res.json().await.unwrap();
    assert_eq!(doc["disconnected"], 0);
    assert_eq!(snapshot(&app).lines().next(), before.lines().next());
}

async fn an_agency_uninstall_disconnects_every_location_of_the_company(backend: Backend) {
    let fake = FakeProvider::start().await;
    let app = ghl_app(backend, &fake, false).await;
    let a = bind(&app, "acme", "loc_1", "c_9");
    let b = bind(&app, "beta", "loc_2", "c_9");
    let other_agency = bind(&app, "beta", "loc_3", "c_10");
    let doc = serde_json::json!({
        "type": "UNINSTALL", "appId": APP_ID, "companyId": "c_9", "webhookId": "wh-agency",
    });
    let res = deliver(&app, &doc, Some(&ghl_key())).await;
    assert_eq!(res.status(), 200);
    assert_eq!(app.connection(&a.id).status, "disconnected");
    assert_eq!(app.connection(&b.id).status, "disconnected");
    assert_eq!(app.connection(&other_agency.id).status, "connected");
}

async fn webhook_refusals_say_why_and_change_nothing(backend: Backend) {
    let fake = FakeProvider::start().await;
    let app = ghl_app(backend, &fake, false).await;
    let c = bind(&app, "acme", "loc_1", "c_9");
    let key = ghl_key();

    // Accepted: an INSTALL on a bound location records an event.
    let res = deliver(&app, &webhook("INSTALL", "loc_1", "wh-1"), Some(&key)).await;
    assert_eq!(res.status(), 200);
    assert_eq!(events(&app, "gohighlevel").last().unwrap().0, "installed");
    assert_eq!(app.connection(&c.id).status, "connected");
    // One on a location nobody holds is acknowledged, and changes nothing.
    let before = snapshot(&app);
    let res = deliver(&app, &webhook("INSTALL", "loc_9", "wh-9"), Some(&key)).await;
    assert_eq!(res.status(), 200);
    let after = snapshot(&app);
    assert_eq!(after.lines().next(), before.lines().next());

    let before = snapshot(&app);
    let stranger = Ed25519KeyPair::from_seed_unchecked(&[7u8; 32]).unwrap();
    let mut stale = webhook("UNINSTALL", "loc_1", "wh-stale");
    stale["timestamp"] = (chrono::Utc::now() - chrono::Duration::hours(7))
        .to_rfc3339()
        .into();
    let mut other_app = webhook("UNINSTALL", "loc_1", "wh-app");
    other_app["appId"] = "someone-elses-app".into();
    let cases: Vec<(&str, serde_json::Value, Option<&Ed25519KeyPair>, u16, &str)> = vec![
        (
            "no signature",
            webhook("UNINSTALL", "loc_1", "wh-a"),
            None,
            401,
            "invalid_webhook_signature",
        ),
        (
            "another key",
            webhook("UNINSTALL", "loc_1", "wh-b"),
            Some(&stranger),
            401,
            "invalid_webhook_signature",
        ),
        ("stale", stale, Some(&key), 400, "webhook_stale"),
        ("another app", other_app, Some(&key), 403, "wrong_app"),
        (
            "no type",
            serde_json::json!({"appId": APP_ID, "locationId": "loc_1"}),
            Some(&key),
            400,
            "invalid_webhook",
        ),
    ];
    for (why, doc, pair, status, code) in cases {
        let res = deliver(&app, &doc, pair).await;
        assert_eq!(res.status(), status, "{why}");
        let err: serde_json::Value = res.json().await.unwrap();
        assert_eq!(err["error"]["code"], code, "{why}");
        assert!(
            !err["error"]["message"].as_str().unwrap().is_empty(),
            "{why}"
        );
        assert_eq!(snapshot(&app), before, "{why} changed something");
    }

    // The retired RSA header alone is refused too, and a body signed for
    // another body does not pass.
    let body = serde_json::to_vec(&webhook("UNINSTALL", "loc_1", "wh-d")).unwrap();
    let sig = base64::engine::general_purpose::STANDARD.encode(key.sign(b"{}"));
    for (name, value) in [
        ("x-wh-signature", "c2lnbmF0dXJl"),
        ("x-ghl-signature", sig.as_str()),
    ] {
        let res = app
            .client
            .post(format!("{}/webhooks/gohighlevel", app.address))
            .header(name, value)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "{name}");
    }
    let too_big = vec![b' '; 70 * 1024];
    let res = app
        .client
        .post(format!("{}/webhooks/gohighlevel", app.address))
        .body(too_big)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    assert_eq!(snapshot(&app), before);
    assert_eq!(app.connection(&c.id).status, "connected");
}

async fn held_installs_need_their_key_and_are_rotated_with_the_connections(backend: Backend) {
    use tether::crypto::KeyRing;
    let fake = FakeProvider::start().await;
    let app = ghl_app(backend, &fake, false).await;
    hold(&app, &fake, &Browser::new(&app), "loc_1", 1).await;
    let mut conn = app.conn();
    // Only the held install is sealed (no connection, no OAuth state): a
    // ring without its key is refused, naming it.
    let k2_only = KeyRing::parse(KEY_K2).unwrap();
    let err = tether::keys::check(&mut conn, &k2_only)
        .unwrap()
        .unwrap_err();
    assert!(err.contains("'k1'"), "{err}");
    let both = KeyRing::parse(&format!("{KEY_K2},{KEY_K1}")).unwrap();
    let usage = tether::keys::usage(&mut conn, &both).unwrap();
    let k1 = usage.iter().find(|u| u.key_id == "k1").unwrap();
    assert_eq!((k1.connections, k1.pending_installs), (0, 1));
    let report = tether::keys::rotate(&mut conn, &both, 10, |_| {}).unwrap();
    assert_eq!(report.rotated, 1);
    let held = &pending(&app)[0];
    assert_eq!(held.key_id, "k2");
    assert_eq!(
        held.tokens(&k2_only).unwrap().access_token.expose(),
        "ghl-at-1"
    );
}

async fn a_held_install_is_logged_by_a_digest_of_its_id_never_the_id(backend: Backend) {
    // The id claims the install (through an all-tenants key or the session
    // it rides in): `tether serve`'s own log must not carry it.
    let fake = FakeProvider::start().await;
    let base = fake.server.uri();
    let db = TestDb::new(backend);
    let file = crate::helpers::write_providers(
        &db,
        &format!(
            "[providers.gohighlevel]\ntoken_url = \"{base}/oauth/token\"\nuserinfo_url = \"{base}/locations/{{locationId}}\"\n"
        ),
    );
    mount_exchange(&fake, "code-1", "loc_1", 1).await;
    let server = crate::helpers::Server::start(
        crate::helpers::tether(&db, KEY_K1)
            .env("RUST_LOG", "info")
            .env("TETHER_PROVIDERS_FILE", &file)
            .env("GOHIGHLEVEL_CLIENT_ID", "ghl-client")
            .env("GOHIGHLEVEL_CLIENT_SECRET", "ghl-secret")
            .env("TETHER_GOHIGHLEVEL_APP_ID", APP_ID)
            .arg("serve"),
    )
    .expect("serve starts");
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let res = client
        .get(format!(
            "http://127.0.0.1:{}/oauth/gohighlevel/callback?code=code-1",
            server.port
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    let log = server.stop();
    let id = {
        use tether::db::schema::pending_installs as p;
        let pool = tether::db::connect(&db.url, 1).unwrap();
        let ids: Vec<String> = p::table
            .select(p::id)
            .load(&mut pool.get().unwrap())
            .unwrap();
        assert_eq!(ids.len(), 1, "{log}");
        ids[0].clone()
    };
    let line = log
        .lines()
        .find(|l| l.contains("install held"))
        .unwrap_or_else(|| panic!("{log}"));
    let digest = tether::crypto::sha256_hex(id.as_bytes());
    assert!(
        line.contains(&format!("install=sha256:{}", &digest[..16])),
        "{line}"
    );
    assert!(!log.contains(&id), "{log}");
}
