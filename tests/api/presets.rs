//! Built-in presets behave as their platforms document, checked against
//! fakes at the HTTP level (the preset's URLs overridden by a providers file).

use crate::backend_tests;
use crate::helpers::{query_param, spawn_app_with, Backend, TestApp, TestDb, PASSWORD};
use wiremock::matchers::{body_json, body_string_contains, header, method, path, query_param as q};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// An app whose preset `key` points at `server`, with credentials, and a signed-in admin.
pub async fn app_with_preset(backend: Backend, key: &str, overrides: &str) -> TestApp {
    let db = TestDb::new(backend);
    let file = db.data_dir().join("providers.toml");
    std::fs::write(&file, format!("[providers.{key}]\n{overrides}")).unwrap();
    let upper = key.to_ascii_uppercase();
    let (id_var, secret_var) = (
        format!("{upper}_CLIENT_ID"),
        format!("{upper}_CLIENT_SECRET"),
    );
    let app = spawn_app_with(
        db,
        &[
            ("TETHER_PROVIDERS_FILE", &file.display().to_string()),
            (&id_var, "preset-client"),
            (&secret_var, "preset-secret"),
        ],
    )
    .await;
    app.create_admin("acme", "owner@acme.example");
    assert_eq!(
        app.login("owner@acme.example", PASSWORD).await.status(),
        303
    );
    app
}

/// Starts a connect; returns the provider's authorize URL.
pub async fn authorize_url(app: &TestApp, key: &str) -> String {
    let res = app.authorize(key, &[]).await;
    assert_eq!(res.status(), 303);
    res.headers()["location"].to_str().unwrap().to_string()
}

async fn status(app: &TestApp, key: &str) -> serde_json::Value {
    app.client
        .get(format!("{}/oauth/{key}/status", app.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

backend_tests!(
    gohighlevel_asks_no_scope_and_no_user_type_keeps_its_account_fields_and_refreshes_as_the_token_s_type,
    gohighlevel_api_calls_carry_its_version_header_through_the_proxy_and_the_token_api,
    instagram_trades_for_a_long_lived_token_and_an_expired_token_needs_reconnect,
    google_asks_for_offline_access_with_pkce,
    a_google_callback_must_name_google_as_its_issuer,
    every_preset_whose_platform_documents_pkce_sends_an_s256_challenge,
    wix_connects_a_site_instance_with_client_credentials_and_mints_again_to_refresh,
    a_gohighlevel_location_is_named_from_its_location_lookup_with_the_version_header,
    a_gohighlevel_location_lookup_refused_for_want_of_scope_keeps_the_connection_named_by_id,
    a_hubspot_connection_is_the_hub_named_by_introspection_with_the_token_in_the_body,
    a_bing_connection_is_named_after_the_platform_instead_of_default,
    calendly_revocation_sends_the_client_credentials_in_the_body_as_calendly_documents,
);

/// Connects `key` through its callback with `token` as the token endpoint's answer.
async fn connect_with_token_response(
    app: &TestApp,
    fake: &MockServer,
    key: &str,
    token: serde_json::Value,
) {
    let url = authorize_url(app, key).await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(token))
        .expect(1)
        .mount(fake)
        .await;
    let state = query_param(&url, "state").unwrap();
    let res = app
        .get(&format!("/oauth/{key}/callback?code=c&state={state}"))
        .await;
    assert_eq!(res.status(), 303, "{:?}", res.text().await);
}

fn ghl_overrides(base: &str) -> String {
    format!(
        "authorize_url = \"{base}/oauth/chooselocation\"\ntoken_url = \"{base}/oauth/token\"\napi_base_url = \"{base}\"\nuserinfo_url = \"{base}/locations/{{locationId}}\"\n"
    )
}

async fn a_gohighlevel_location_is_named_from_its_location_lookup_with_the_version_header(
    backend: Backend,
) {
    let fake = MockServer::start().await;
    let app = app_with_preset(backend, "gohighlevel", &ghl_overrides(&fake.uri())).await;
    // As GoHighLevel documents `GET /locations/{locationId}`: the location
    // under "location", and only for a call that names the API version.
    Mock::given(method("GET"))
        .and(path("/locations/loc_123"))
        .and(header("authorization", "Bearer ghl-at"))
        .and(header("version", "2021-07-28"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "location": {"id": "loc_123", "companyId": "c_9", "name": "Main Street Dental", "timezone": "US/Central"}
        })))
        .expect(1)
        .mount(&fake)
        .await;
    connect_with_token_response(
        &app,
        &fake,
        "gohighlevel",
        serde_json::json!({
            "access_token": "ghl-at", "token_type": "Bearer", "expires_in": 86399, "refresh_token": "ghl-rt",
            "scope": "contacts.readonly locations.readonly", "userType": "Location",
            "companyId": "c_9", "locationId": "loc_123"
        }),
    )
    .await;
    let s = status(&app, "gohighlevel").await;
    assert_eq!(s["account"]["id"], "loc_123");
    assert_eq!(s["account"]["name"], "Main Street Dental");
    let page = app.page("/settings/integrations").await;
    assert!(
        page.contains("<span class=\"account\">Main Street Dental</span>"),
        "{page}"
    );
}

async fn a_gohighlevel_location_lookup_refused_for_want_of_scope_keeps_the_connection_named_by_id(
    backend: Backend,
) {
    let fake = MockServer::start().await;
    let app = app_with_preset(backend, "gohighlevel", &ghl_overrides(&fake.uri())).await;
    Mock::given(method("GET"))
        .and(path("/locations/loc_123"))
        .respond_with(ResponseTemplate::new(403).set_body_json(serde_json::json!({
            "statusCode": 403, "message": "The token is not authorized for this scope."
        })))
        .expect(1)
        .mount(&fake)
        .await;
    connect_with_token_response(
        &app,
        &fake,
        "gohighlevel",
        serde_json::json!({
            "access_token": "ghl-at", "token_type": "Bearer", "expires_in": 86399, "refresh_token": "ghl-rt",
            "scope": "contacts.readonly", "userType": "Location", "companyId": "c_9", "locationId": "loc_123"
        }),
    )
    .await;
    let s = status(&app, "gohighlevel").await;
    assert_eq!(
        s["status"], "connected",
        "the code is spent: a name is not worth the connection"
    );
    assert_eq!(s["account"]["id"], "loc_123");
    assert!(s["account"]["name"].is_null(), "{s}");
    // The preset asks no scope of its own (the app's declared ones apply),
    // so none is missing from what was granted.
    assert_eq!(s["missing_scopes"], serde_json::json!([]));
}

async fn a_hubspot_connection_is_the_hub_named_by_introspection_with_the_token_in_the_body(
    backend: Backend,
) {
    let fake = MockServer::start().await;
    let base = fake.uri();
    let app = app_with_preset(
        backend,
        "hubspot",
        &format!(
            "authorize_url = \"{base}/oauth/authorize\"\ntoken_url = \"{base}/oauth/token\"\nuserinfo_url = \"{base}/oauth/2026-03/token/introspect\"\nscopes = [\"oauth\", \"crm.objects.contacts.read\"]\noptional_scopes = [\"crm.objects.deals.read\", \"tickets\"]\n"
        ),
    )
    .await;
    // Required scopes in `scope`, the ones the hub may lack in `optional_scope`.
    let url = authorize_url(&app, "hubspot").await;
    assert_eq!(
        query_param(&url, "scope").as_deref(),
        Some("oauth crm.objects.contacts.read")
    );
    assert_eq!(
        query_param(&url, "optional_scope").as_deref(),
        Some("crm.objects.deals.read tickets")
    );
    // The token's metadata as HubSpot documents it (hub_id, user, hub_domain).
    Mock::given(method("POST"))
        .and(path("/oauth/2026-03/token/introspect"))
        .and(body_string_contains("token=hs-at"))
        .and(body_string_contains("token_type_hint=access_token"))
        .and(body_string_contains("client_id=preset-client"))
        .and(body_string_contains("client_secret=preset-secret"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "active": true, "token": "hs-at", "token_type": "access", "app_id": 456789,
            "hub_id": 62515, "user_id": 123456, "user": "owner@dental.example",
            "hub_domain": "dental.hubspot.com", "scopes": ["oauth", "crm.objects.contacts.read"],
            "expires_in": 1800
        })))
        .expect(1)
        .mount(&fake)
        .await;
    connect_with_token_response(
        &app,
        &fake,
        "hubspot",
        serde_json::json!({
            "access_token": "hs-at", "token_type": "bearer", "expires_in": 1800, "refresh_token": "hs-rt"
        }),
    )
    .await;
    let s = status(&app, "hubspot").await;
    assert_eq!(s["account"]["id"], "62515");
    assert_eq!(
        s["account"]["name"],
        "owner@dental.example (dental.hubspot.com)"
    );
    for req in fake.received_requests().await.unwrap() {
        assert!(
            !req.url.as_str().contains("hs-at"),
            "a token in a URL: {}",
            req.url
        );
    }
}

async fn a_bing_connection_is_named_after_the_platform_instead_of_default(backend: Backend) {
    let fake = MockServer::start().await;
    let base = fake.uri();
    let app = app_with_preset(
        backend,
        "bing",
        &format!(
            "authorize_url = \"{base}/oauth/authorize\"\ntoken_url = \"{base}/oauth/token\"\n"
        ),
    )
    .await;
    connect_with_token_response(
        &app,
        &fake,
        "bing",
        serde_json::json!({"access_token": "b-at", "token_type": "bearer", "expires_in": 3599, "refresh_token": "b-rt"}),
    )
    .await;
    let s = status(&app, "bing").await;
    assert_eq!(s["account"]["name"], "Bing Webmaster");
    assert_eq!(s["account"]["id"], "default");
    let page = app.page("/settings/integrations").await;
    assert!(
        page.contains("<span class=\"account\">Bing Webmaster</span>"),
        "{page}"
    );
}

async fn gohighlevel_asks_no_scope_and_no_user_type_keeps_its_account_fields_and_refreshes_as_the_token_s_type(
    backend: Backend,
) {
    let fake = MockServer::start().await;
    let base = fake.uri();
    let app = app_with_preset(
        backend,
        "gohighlevel",
        &format!(
            "authorize_url = \"{base}/oauth/chooselocation\"\ntoken_url = \"{base}/oauth/token\"\nuserinfo_url = \"{base}/locations/{{locationId}}\"\n"
        ),
    )
    .await;
    let url = authorize_url(&app, "gohighlevel").await;
    assert!(url.starts_with(&format!("{base}/oauth/chooselocation?")));
    // The Marketplace app's own scopes apply: none is forced on the install.
    assert_eq!(query_param(&url, "scope"), None);
    // Nor is a user type: the install says whether it is a location's.
    let no_user_type =
        |r: &wiremock::Request| !String::from_utf8_lossy(&r.body).contains("user_type");
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .and(body_string_contains("grant_type=authorization_code"))
        .and(no_user_type)
        .and(body_string_contains("client_id=preset-client"))
        .and(body_string_contains("client_secret=preset-secret"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "access_token": "ghl-at", "token_type": "Bearer", "expires_in": 86399, "refresh_token": "ghl-rt",
            "scope": "contacts.readonly conversations/message.write", "userType": "Location",
            "companyId": "c_9", "locationId": "loc_123", "userId": "u_1", "isBulkInstallation": false,
            "planId": "p_1", "refreshTokenId": "rt_1"
        })))
        .expect(1)
        .mount(&fake)
        .await;
    let state = query_param(&url, "state").unwrap();
    let res = app
        .get(&format!("/oauth/gohighlevel/callback?code=c&state={state}"))
        .await;
    assert_eq!(res.status(), 303);
    let s = status(&app, "gohighlevel").await;
    assert_eq!(s["status"], "connected");
    assert_eq!(s["account"]["id"], "loc_123");
    assert_eq!(s["metadata"]["locationId"], "loc_123");
    assert_eq!(s["metadata"]["companyId"], "c_9");
    assert_eq!(s["metadata"]["userType"], "Location");
    assert_eq!(s["metadata"]["isBulkInstallation"], false);
    assert!(
        s["metadata"].get("refreshTokenId").is_none(),
        "only keep_fields are kept"
    );
    assert_eq!(
        s["scopes"],
        serde_json::json!(["contacts.readonly", "conversations/message.write"])
    );
    let expires = chrono::DateTime::parse_from_rfc3339(s["expires_at"].as_str().unwrap()).unwrap();
    let in_secs = (expires.timestamp() - chrono::Utc::now().timestamp()) as i64;
    assert!((86_000..=86_400).contains(&in_secs), "{in_secs}");
    // A refresh names the stored token's own type.
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .and(body_string_contains("grant_type=refresh_token"))
        .and(body_string_contains("refresh_token=ghl-rt"))
        .and(body_string_contains("user_type=Location"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "access_token": "ghl-at-2", "token_type": "Bearer", "expires_in": 86399,
            "refresh_token": "ghl-rt-2", "userType": "Location", "locationId": "loc_123"
        })))
        .expect(1)
        .mount(&fake)
        .await;
    let row = app.default_connection("acme", "gohighlevel").unwrap();
    let refreshed = tether::refresh::refresh_now(
        &app.state,
        &row.id,
        &tether::db::models::event::Actor::Scheduler,
        None,
    )
    .await
    .unwrap();
    assert!(refreshed.version > row.version);
}

async fn instagram_trades_for_a_long_lived_token_and_an_expired_token_needs_reconnect(
    backend: Backend,
) {
    let fake = MockServer::start().await;
    let base = fake.uri();
    let app = app_with_preset(
        backend,
        "instagram",
        &format!(
            "authorize_url = \"{base}/oauth/authorize\"\ntoken_url = \"{base}/oauth/access_token\"\napi_base_url = \"{base}\"\nuserinfo_url = \"{base}/me\"\nscopes = [\"instagram_business_basic\", \"instagram_business_content_publish\"]\n"
        ),
    )
    .await;
    let url = authorize_url(&app, "instagram").await;
    assert_eq!(
        query_param(&url, "scope").as_deref(),
        Some("instagram_business_basic,instagram_business_content_publish"),
        "comma-separated"
    );
    Mock::given(method("POST"))
        .and(path("/oauth/access_token"))
        .and(body_string_contains("code=ig-code&"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "access_token": "short-lived", "user_id": 17841400000u64, "permissions": ["instagram_business_basic"]
        })))
        .expect(1)
        .mount(&fake)
        .await;
    Mock::given(method("GET"))
        .and(path("/access_token"))
        .and(q("grant_type", "ig_exchange_token"))
        .and(q("client_secret", "preset-secret"))
        .and(q("access_token", "short-lived"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "access_token": "long-lived", "token_type": "bearer", "expires_in": 5183944
        })))
        .expect(1)
        .mount(&fake)
        .await;
    Mock::given(method("GET"))
        .and(path("/me"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            serde_json::json!({"user_id": "17841400000", "username": "mainstreetdental"}),
        ))
        .mount(&fake)
        .await;
    let state = query_param(&url, "state").unwrap();
    // Instagram appends "#_" to the code; the fragment reaches us percent-encoded at worst.
    let res = app
        .get(&format!(
            "/oauth/instagram/callback?code=ig-code%23_&state={state}"
        ))
        .await;
    assert_eq!(res.status(), 303, "{:?}", res.text().await);
    let s = status(&app, "instagram").await;
    assert_eq!(s["status"], "connected");
    assert_eq!(s["account"]["name"], "mainstreetdental");
    let expires = chrono::DateTime::parse_from_rfc3339(s["expires_at"].as_str().unwrap()).unwrap();
    assert!(
        expires.timestamp() - chrono::Utc::now().timestamp() > 59 * 86_400,
        "long-lived: 60 days"
    );
    let c = app.default_connection("acme", "instagram").unwrap();
    assert_eq!(
        c.tokens(&app.ctx.keys)
            .unwrap()
            .unwrap()
            .access_token
            .expose(),
        "long-lived"
    );

    // Instagram's refresh answers a revoked or expired token in the Graph
    // API's shape (code 190, "Handling Errors": get a new access token): the
    // person must connect again, not a refusal to retry for ever.
    Mock::given(method("GET"))
        .and(path("/refresh_access_token"))
        .and(q("grant_type", "ig_refresh_token"))
        .respond_with(ResponseTemplate::new(400).set_body_json(serde_json::json!({
            "error": {
                "message": "Error validating access token: The session has been invalidated because the user changed their password.",
                "type": "OAuthException", "code": 190, "error_subcode": 460,
                "fbtrace_id": "AbCdEf"
            }
        })))
        .expect(1)
        .mount(&fake)
        .await;
    let key = app.api_key(None, false);
    let res = app
        .client
        .post(format!(
            "{}/api/v1/tenants/acme/connections/instagram/refresh",
            app.address
        ))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 409);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "needs_reconnect", "{body}");
    let c = app.default_connection("acme", "instagram").unwrap();
    assert_eq!(c.status, "needs_reconnect");
    assert!(
        c.last_error
            .unwrap_or_default()
            .contains("OAuthException 190"),
        "the code is kept"
    );
}

async fn google_asks_for_offline_access_with_pkce(backend: Backend) {
    let app = app_with_preset(
        backend,
        "google",
        "display_name = \"Google Search Console\"\n",
    )
    .await;
    let url = authorize_url(&app, "google").await;
    assert!(url.starts_with("https://accounts.google.com/o/oauth2/v2/auth?"));
    assert_eq!(query_param(&url, "access_type").as_deref(), Some("offline"));
    assert_eq!(query_param(&url, "prompt").as_deref(), Some("consent"));
    assert_eq!(
        query_param(&url, "code_challenge_method").as_deref(),
        Some("S256")
    );
    assert!(query_param(&url, "scope")
        .unwrap()
        .contains("https://www.googleapis.com/auth/webmasters.readonly"));
}

/// Google documents RFC 9207 (its discovery document's
/// authorization_response_iss_parameter_supported): a callback without `iss`,
/// or naming another issuer, is refused before any exchange and leaves the
/// state for the real answer, which then connects.
async fn a_google_callback_must_name_google_as_its_issuer(backend: Backend) {
    let fake = MockServer::start().await;
    let base = fake.uri();
    let app = app_with_preset(
        backend,
        "google",
        &format!("token_url = \"{base}/token\"\nuserinfo_url = \"{base}/userinfo\"\n"),
    )
    .await;
    let url = authorize_url(&app, "google").await;
    let state = query_param(&url, "state").unwrap();
    let before = app.snapshot();
    for (iss, code) in [
        ("", "issuer_missing"),
        ("&iss=https%3A%2F%2Fevil.example", "issuer_mismatch"),
        ("&iss=accounts.google.com", "issuer_mismatch"),
    ] {
        let res = app
            .get(&format!("/oauth/google/callback?code=c&state={state}{iss}"))
            .await;
        crate::helpers::assert_error_page(res, 400, code).await;
    }
    assert_eq!(app.snapshot(), before, "nothing spent, nothing saved");
    assert!(fake.received_requests().await.unwrap().is_empty());

    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "access_token": "ya29.google-at", "refresh_token": "1//google-rt",
            "token_type": "Bearer", "expires_in": 3599,
            "scope": "openid email https://www.googleapis.com/auth/webmasters.readonly"
        })))
        .expect(1)
        .mount(&fake)
        .await;
    Mock::given(method("GET"))
        .and(path("/userinfo"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"sub": "1077", "email": "owner@acme.example"})),
        )
        .mount(&fake)
        .await;
    let res = app
        .get(&format!(
            "/oauth/google/callback?code=c&state={state}&iss=https%3A%2F%2Faccounts.google.com"
        ))
        .await;
    assert_eq!(res.status(), 303, "{:?}", res.text().await);
    let status = status(&app, "google").await;
    assert_eq!(status["status"], "connected", "{status}");
    assert_eq!(status["account"]["id"], "1077", "{status}");
}

async fn wix_connects_a_site_instance_with_client_credentials_and_mints_again_to_refresh(
    backend: Backend,
) {
    let fake = MockServer::start().await;
    let base = fake.uri();
    let app = app_with_preset(
        backend,
        "wix",
        &format!(
            "token_url = \"{base}/oauth2/token\"\nuserinfo_url = \"{base}/apps/v1/instance\"\n"
        ),
    )
    .await;
    let page = app.page("/settings/integrations").await;
    assert!(
        page.contains("open it from the site's dashboard"),
        "connected from Wix, not from a redirect or a typed id"
    );
    assert!(
        app.authorize("wix", &[]).await.status().is_client_error(),
        "no browser redirect for Wix"
    );
    let mint = |token: &str| {
        Mock::given(method("POST"))
            .and(path("/oauth2/token"))
            .and(body_json(serde_json::json!({
                "grant_type": "client_credentials", "instance_id": "inst-1",
                "client_id": "preset-client", "client_secret": "preset-secret"
            })))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(serde_json::json!({"access_token": token, "expires_in": 14400})),
            )
            .up_to_n_times(1)
    };
    mint("wix-at-1").mount(&fake).await;
    Mock::given(method("GET"))
        .and(path("/apps/v1/instance"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "instance": {"instanceId": "inst-1"}, "site": {"url": "https://mainstreet.example"}
        })))
        .mount(&fake)
        .await;
    // Wix sends the admin from the app's dashboard page with a signed instance.
    let instance = tether::platforms::wix::sign_instance(
        b"preset-secret",
        &serde_json::json!({
            "instanceId": "inst-1", "signDate": chrono::Utc::now().to_rfc3339(),
            "uid": "wix-owner-1", "permissions": "OWNER"
        }),
    );
    let page = app
        .client
        .get(format!("{}/oauth/wix/install", app.address))
        .query(&[("instance", &instance)])
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let csrf = crate::helpers::csrf_in(&page.text().await.unwrap()).unwrap();
    let res = app
        .post_form("/oauth/wix/install", &[("csrf", &csrf)])
        .await;
    assert_eq!(res.status(), 303);
    let s = status(&app, "wix").await;
    assert_eq!(s["status"], "connected");
    assert_eq!(s["account"]["id"], "inst-1");
    assert_eq!(s["account"]["name"], "https://mainstreet.example");
    assert_eq!(s["metadata"]["instanceId"], "inst-1");

    mint("wix-at-2").mount(&fake).await;
    let res = app
        .post_form("/oauth/wix/refresh", &[("csrf", &csrf)])
        .await;
    assert_eq!(res.status(), 303);
    let c = app.default_connection("acme", "wix").unwrap();
    assert_eq!(
        c.tokens(&app.ctx.keys)
            .unwrap()
            .unwrap()
            .access_token
            .expose(),
        "wix-at-2"
    );
}

/// PROVIDERS.md: the platforms that document PKCE. The others keep it off
/// and say why in the preset (src/providers/presets.rs).
const PKCE_DOCUMENTED: [&str; 5] = ["hubspot", "calendly", "google", "spotify", "microsoft"];

async fn every_preset_whose_platform_documents_pkce_sends_an_s256_challenge(backend: Backend) {
    let app = spawn_app_with(TestDb::new(backend), &[]).await;
    let tenant = app.ensure_tenant("acme");
    let who = tether::oauth::Initiator {
        tenant_id: &tenant.id,
        user_id: None,
        session_binding: None,
        ask_consent: false,
        tags: None,
        embed_origin: None,
        login_hint: None,
        reconnect_account: None,
    };
    for key in [
        "gohighlevel",
        "hubspot",
        "calendly",
        "google",
        "spotify",
        "instagram",
        "microsoft",
        "bing",
        "wordpress",
    ] {
        let provider = app.ctx.providers.get(key).unwrap();
        let url = tether::oauth::start(
            &mut app.conn(),
            &app.ctx.keys,
            &app.ctx.settings,
            provider,
            &who,
            None,
            false,
        )
        .unwrap();
        let documented = PKCE_DOCUMENTED.contains(&key);
        let challenge = query_param(&url, "code_challenge");
        assert_eq!(challenge.is_some(), documented, "{key}: {url}");
        if documented {
            assert_eq!(challenge.unwrap().len(), 43, "{key}: S256 is 43 characters");
            assert_eq!(
                query_param(&url, "code_challenge_method").as_deref(),
                Some("S256"),
                "{key}"
            );
        }
    }
}

async fn gohighlevel_api_calls_carry_its_version_header_through_the_proxy_and_the_token_api(
    backend: Backend,
) {
    let fake = MockServer::start().await;
    let base = fake.uri();
    let app = app_with_preset(
        backend,
        "gohighlevel",
        &format!(
            "authorize_url = \"{base}/oauth/chooselocation\"\ntoken_url = \"{base}/oauth/token\"\napi_base_url = \"{base}\"\nuserinfo_url = \"{base}/locations/{{locationId}}\"\n"
        ),
    )
    .await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "access_token": "ghl-at", "token_type": "Bearer", "expires_in": 86399,
            "refresh_token": "ghl-rt", "locationId": "loc_123", "userType": "Location"
        })))
        .mount(&fake)
        .await;
    let url = authorize_url(&app, "gohighlevel").await;
    let state = query_param(&url, "state").unwrap();
    let res = app
        .get(&format!("/oauth/gohighlevel/callback?code=c&state={state}"))
        .await;
    assert_eq!(res.status(), 303);
    // GoHighLevel rejects a call without `Version`: the fake does too.
    Mock::given(method("GET"))
        .and(path("/contacts/"))
        .and(wiremock::matchers::header("version", "2021-07-28"))
        .and(wiremock::matchers::header("authorization", "Bearer ghl-at"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"contacts": []})))
        .mount(&fake)
        .await;
    Mock::given(method("GET"))
        .and(path("/contacts/"))
        .respond_with(
            ResponseTemplate::new(401)
                .set_body_json(serde_json::json!({"message": "Version header was not found"})),
        )
        .mount(&fake)
        .await;
    let key = app.api_key(None, false);
    let service = reqwest::Client::new();
    let res = service
        .get(format!(
            "{}/api/v1/tenants/acme/proxy/gohighlevel/contacts/",
            app.address
        ))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{:?}", res.text().await);
    let token: serde_json::Value = service
        .get(format!(
            "{}/api/v1/tenants/acme/connections/gohighlevel/token",
            app.address
        ))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(token["access_token"], "ghl-at");
    assert_eq!(
        token["api_headers"],
        serde_json::json!({"Version": "2021-07-28"})
    );
}

/// Calendly's token endpoint takes Basic authentication, its revocation
/// endpoint the client id and secret as form fields beside the token
/// (developer.calendly.com, "Revoke Access/Refresh Token"): a revocation
/// sent with Basic would be refused and the grant left live.
async fn calendly_revocation_sends_the_client_credentials_in_the_body_as_calendly_documents(
    backend: Backend,
) {
    let fake = MockServer::start().await;
    let base = fake.uri();
    let app = app_with_preset(
        backend,
        "calendly",
        &format!(
            "authorize_url = \"{base}/oauth/authorize\"\ntoken_url = \"{base}/oauth/token\"\nrevocation_url = \"{base}/oauth/revoke\"\nuserinfo_url = \"{base}/users/me\"\n"
        ),
    )
    .await;
    Mock::given(method("GET"))
        .and(path("/users/me"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "resource": {"uri": "https://api.calendly.com/users/U1", "name": "Ann"}
        })))
        .mount(&fake)
        .await;
    connect_with_token_response(
        &app,
        &fake,
        "calendly",
        serde_json::json!({
            "access_token": "cal-at", "token_type": "Bearer", "expires_in": 7200,
            "refresh_token": "cal-rt", "owner": "https://api.calendly.com/users/U1"
        }),
    )
    .await;
    // As documented; anything else is refused as Calendly would refuse it.
    Mock::given(method("POST"))
        .and(path("/oauth/revoke"))
        .and(body_string_contains("client_id=preset-client"))
        .and(body_string_contains("client_secret=preset-secret"))
        .and(body_string_contains("token=cal-rt"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({})))
        .with_priority(1)
        .expect(1)
        .mount(&fake)
        .await;
    Mock::given(method("POST"))
        .and(path("/oauth/revoke"))
        .respond_with(ResponseTemplate::new(400).set_body_json(serde_json::json!({
            "error": "invalid_request", "error_description": "client_id and client_secret are required"
        })))
        .with_priority(2)
        .mount(&fake)
        .await;
    let key = app.api_key(None, false);
    let res = app
        .client
        .delete(format!(
            "{}/api/v1/tenants/acme/connections/calendly",
            app.address
        ))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("the provider revoked the access"),
        "{body}"
    );
    let revoke = fake
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.url.path() == "/oauth/revoke")
        .expect("a revocation");
    assert!(
        !revoke.headers.contains_key("authorization"),
        "no Basic authentication beside the form fields"
    );
}
