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
    an_uninstall_gohighlevel_does_not_confirm_erases_nothing,
    production_refuses_app_webhooks_without_an_app_id,
    an_install_that_does_not_re_authorise_the_holder_s_business_is_held,
    a_planted_install_needs_confirming_lapses_from_the_browser_and_cannot_be_repeated_cheaply,
    a_held_install_lapses_from_the_browser_after_the_claim_window,
    the_directory_finds_a_company_s_accounts_by_its_indexed_column,
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

pub(crate) async fn ghl_app_revoking(
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
/// From GoHighLevel's install page (the authorize URL's origin is the
/// `Referer`, as a browser sends it), so the claim needs no confirmation.
pub(crate) async fn marketplace_callback(
    browser: &Browser,
    fake: &FakeProvider,
    code: &str,
) -> reqwest::Response {
    browser
        .client
        .get(format!(
            "{}/oauth/gohighlevel/callback?code={code}",
            browser.address
        ))
        .header("referer", format!("{}/", fake.server.uri()))
        .send()
        .await
        .unwrap()
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
    let res = marketplace_callback(browser, fake, &code).await;
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
    let res = marketplace_callback(&browser, &fake, "code-2").await;
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
        // A key for all tenants without the admin scope lists, never assigns.
        (
            &reader,
            id.as_str(),
            serde_json::json!({"tenant": "beta"}),
            403,
            "missing_scope",
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

/// GoHighLevel's token endpoint answering a refresh of these locations'
/// tokens (as [`bind`] stores them) with `invalid_grant`: the app was
/// uninstalled there.
pub(crate) async fn grant_gone(fake: &FakeProvider, locations: &[&str]) {
    for location in locations {
        Mock::given(method("POST"))
            .and(path("/oauth/token"))
            .and(body_string_contains(format!(
                "refresh_token=old-rt-{location}"
            )))
            .respond_with(ResponseTemplate::new(400).set_body_json(serde_json::json!({
                "error": "invalid_grant", "error_description": "Invalid refresh token"
            })))
            .mount(&fake.server)
            .await;
    }
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

    grant_gone(&fake, &["loc_1"]).await;
    let res = deliver(&app, &webhook("UNINSTALL", "loc_1", "wh-1"), Some(&key)).await;
    assert_eq!(res.status(), 200);
    let doc: serde_json::Value = res.json().await.unwrap();
    assert_eq!(doc["disconnected"], 1);
    assert_eq!(fake.refresh_calls().await, 1, "confirmed with GoHighLevel");
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
            Some(
                "the app was uninstalled at GoHighLevel (confirmed: its grant is gone)".to_string()
            )
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
    grant_gone(&fake, &["loc_1", "loc_2"]).await;
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

async fn an_uninstall_gohighlevel_does_not_confirm_erases_nothing(backend: Backend) {
    let fake = FakeProvider::start().await;
    let app = ghl_app(backend, &fake, false).await;
    let c = bind(&app, "acme", "loc_1", "c_9");
    // The location's token still refreshes: the app is installed.
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .and(body_string_contains("grant_type=refresh_token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "access_token": "ghl-at-fresh", "token_type": "Bearer", "expires_in": 86399,
            "refresh_token": "ghl-rt-fresh", "userType": "Location",
            "companyId": "c_9", "locationId": "loc_1"
        })))
        .mount(&fake.server)
        .await;
    // A captured UNINSTALL replayed (GoHighLevel's carries no id nor time).
    let replayed = serde_json::json!({
        "type": "UNINSTALL", "appId": APP_ID, "locationId": "loc_1", "companyId": "c_9",
    });
    let res = deliver(&app, &replayed, Some(&ghl_key())).await;
    assert_eq!(res.status(), 200);
    let doc: serde_json::Value = res.json().await.unwrap();
    assert_eq!(doc["disconnected"], 0, "{doc}");
    let row = app.connection(&c.id);
    assert_eq!(row.status, "connected");
    assert!(row.has_tokens());
    assert_eq!(fake.refresh_calls().await, 1, "asked GoHighLevel once");
    assert!(
        !events(&app, "gohighlevel")
            .iter()
            .any(|e| e.0 == "disconnected"),
        "nothing recorded as disconnected"
    );
    // The CRM still hears of it (relayed), as of the tenant holding it.
    let queued: Vec<serde_json::Value> = outbox(&mut app.conn())
        .iter()
        .map(|o| serde_json::from_str(&o.payload).unwrap())
        .collect();
    assert!(
        queued.iter().any(|p| p["type"] == "provider_event"
            && p["event_type"] == "UNINSTALL"
            && p["tenant"] == "acme"),
        "{queued:?}"
    );
}

async fn production_refuses_app_webhooks_without_an_app_id(backend: Backend) {
    let db = TestDb::new(backend);
    let key = base64::engine::general_purpose::STANDARD.encode([9u8; 64]);
    let mut vars = vec![
        ("TETHER_ENV", "production"),
        ("TETHER_SESSION_KEY", key.as_str()),
        ("TETHER_PUBLIC_URL", "https://tether.example.com"),
        ("TETHER_DEMO_PROVIDER", "false"),
        ("TETHER_METRICS_TOKEN", "a-metrics-token-of-some-length"),
        ("GOHIGHLEVEL_CLIENT_ID", "ghl-client"),
        ("GOHIGHLEVEL_CLIENT_SECRET", "ghl-secret"),
    ];
    let refused = tether::startup::prepare(crate::helpers::settings_for(&db, &vars))
        .err()
        .expect("production refuses GoHighLevel without an app id");
    assert!(
        refused.contains("TETHER_GOHIGHLEVEL_APP_ID is required in production"),
        "{refused}"
    );
    // Development starts, warning.
    let dev = crate::helpers::settings_for(&db, &vars[5..]);
    assert!(tether::startup::prepare(dev).is_ok());
    vars.push(("TETHER_GOHIGHLEVEL_APP_ID", APP_ID));
    let answer = tether::startup::prepare(crate::helpers::settings_for(&db, &vars));
    assert!(
        answer
            .as_ref()
            .err()
            .is_none_or(|e| !e.contains("TETHER_GOHIGHLEVEL_APP_ID")),
        "{:?}",
        answer.err()
    );
}

async fn an_install_that_does_not_re_authorise_the_holder_s_business_is_held(backend: Backend) {
    let fake = FakeProvider::start().await;
    let app = ghl_app(backend, &fake, false).await;
    // acme holds loc_1 through a grant of company c_10; the install comes
    // from company c_9 (mount_exchange's).
    let c = bind(&app, "acme", "loc_1", "c_10");
    let browser = Browser::new(&app);
    hold(&app, &fake, &browser, "loc_1", 1).await;
    let row = app.connection(&c.id);
    assert_eq!(row.version, c.version, "acme's grant untouched");
    let key = app.api_key(Some("acme"), false);
    let (_, token) = app
        .get_json(
            "/api/v1/tenants/acme/connections/gohighlevel/token?account=loc_1",
            &key,
        )
        .await;
    assert_eq!(token["access_token"], "old-at-loc_1");
}

async fn a_planted_install_needs_confirming_lapses_from_the_browser_and_cannot_be_repeated_cheaply(
    backend: Backend,
) {
    let fake = FakeProvider::start().await;
    let app = ghl_app(backend, &fake, false).await;
    // An admin's browser opened at a callback someone else sent it to: no
    // Referer from GoHighLevel's install page.
    let browser = Browser::new(&app);
    mount_exchange(&fake, "code-1", "loc_1", 1).await;
    let res = browser.get("/oauth/gohighlevel/callback?code=code-1").await;
    assert_eq!(res.status(), 303);
    assert_eq!(
        browser.login("owner@acme.example", PASSWORD).await.status(),
        303
    );
    let page = browser.get("/oauth/gohighlevel/claim").await;
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    assert!(page.contains(r#"id="claim-unvouched""#), "{page}");
    assert!(
        page.contains(r#"<strong id="claim-installer">u_1</strong>"#),
        "{page}"
    );
    assert!(
        page.contains(r#"<strong id="claim-business">c_9</strong>"#),
        "{page}"
    );
    let csrf = csrf_in(&page).unwrap();
    let before = snapshot(&app);
    let res = browser
        .post_form("/oauth/gohighlevel/claim", &[("csrf", &csrf)])
        .await;
    let text = crate::helpers::assert_error_page(res, 400, "invalid_form").await;
    assert!(text.contains("tick the box"), "{text}");
    assert_eq!(snapshot(&app), before, "nothing claimed");
    let res = browser
        .post_form(
            "/oauth/gohighlevel/claim",
            &[("csrf", &csrf), ("confirm", "yes")],
        )
        .await;
    assert_eq!(res.status(), 303);
    assert!(app.default_connection("acme", "gohighlevel").is_some());

    // From GoHighLevel's own page: no confirmation asked.
    let vouched = Browser::new(&app);
    hold(&app, &fake, &vouched, "loc_2", 2).await;
    vouched.login("owner@acme.example", PASSWORD).await;
    let page = vouched
        .get("/oauth/gohighlevel/claim")
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("claim-location"), "{page}");
    assert!(!page.contains("claim-unvouched"), "{page}");

    // Repeated state-less attempts from one client stop before the exchange.
    let exchanges = fake.calls_to("/oauth/token").await;
    let mut refused = 0;
    for n in 0..12 {
        let res = Browser::new(&app)
            .get(&format!("/oauth/gohighlevel/callback?code=junk-{n}"))
            .await;
        if res.status() == 429 {
            refused += 1;
        }
    }
    // Ten per client address in ten minutes; two were spent above.
    assert_eq!(refused, 4);
    assert_eq!(
        fake.calls_to("/oauth/token").await - exchanges,
        12 - refused,
        "a refused attempt costs no exchange"
    );
}

async fn a_held_install_lapses_from_the_browser_after_the_claim_window(backend: Backend) {
    let fake = FakeProvider::start().await;
    let app = ghl_app_with(backend, &fake, &[("TETHER_INSTALL_CLAIM_WINDOW_SECS", "0")]).await;
    let browser = Browser::new(&app);
    hold(&app, &fake, &browser, "loc_1", 1).await;
    browser.login("owner@acme.example", PASSWORD).await;
    let res = browser.get("/oauth/gohighlevel/claim").await;
    crate::helpers::assert_error_page(res, 404, "unknown_install").await;
    // The CRM may still assign it.
    assert_eq!(pending(&app).len(), 1);
}

async fn the_directory_finds_a_company_s_accounts_by_its_indexed_column(backend: Backend) {
    let fake = FakeProvider::start().await;
    let app = ghl_app(backend, &fake, false).await;
    bind(&app, "acme", "loc_1", "c_9");
    bind(&app, "beta", "loc_2", "c_9");
    bind(&app, "beta", "loc_3", "c_10");
    let key = app.api_key(None, false);
    let (code, body) = app
        .get_json(
            "/api/v1/connections?provider=gohighlevel&companyId=c_9",
            &key,
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let mut found: Vec<String> = body["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{}/{}",
                c["tenant"].as_str().unwrap(),
                c["account"]["id"].as_str().unwrap()
            )
        })
        .collect();
    found.sort();
    assert_eq!(found, ["acme/loc_1", "beta/loc_2"]);
    let (_, body) = app
        .get_json(
            "/api/v1/connections?provider=gohighlevel&companyId=c_9&locationId=loc_2",
            &key,
        )
        .await;
    assert_eq!(body["connections"].as_array().unwrap().len(), 1, "{body}");
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
