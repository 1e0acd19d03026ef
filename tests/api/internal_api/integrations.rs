//! Integration settings (README, "Integration settings"): per tenant and
//! provider, `enabled` and a JSON `settings` object, read and written
//! through `GET`/`PUT /api/v1/tenants/{t}/integrations/{provider}` and the
//! card's forms. A refusal changes nothing; a switched-off provider is
//! hidden from the dashboard (listed under "Disabled") and its token API,
//! proxy and connect links answer 409 `provider_disabled`.

use super::API;
use crate::backend_tests;
use crate::helpers::{
    connect, csrf_in, error_of, json_of, service, spawn_app_with_acme, Backend, FakeProvider,
    TestApp, OWNER, PASSWORD,
};
use diesel::prelude::*;
use serde_json::{json, Value};
use tether::db::models::integration_setting::IntegrationSetting;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

backend_tests!(
    a_never_written_pair_answers_the_defaults_and_a_put_round_trips_with_an_event_per_change,
    every_refused_put_changes_nothing_and_says_why,
    a_scoped_key_reads_and_writes_only_its_own_tenants_settings,
    a_disabled_provider_answers_409_provider_disabled_to_the_token_api_proxy_and_links,
    the_dashboard_hides_a_disabled_provider_and_lists_it_under_disabled_with_enable,
    the_card_edits_settings_with_a_form_for_a_schema_and_none_without_one,
    the_card_edits_an_account_s_own_settings_over_the_provider_s,
    a_disabled_integration_is_still_refreshed_by_the_scheduler,
);

/// acme's settings schema in the providers file: three optional fields.
const SCHEMA: &str = r#"settings_schema = [
  { name = "pipeline_id", type = "string", label = "Default pipeline" },
  { name = "limit", type = "number" },
  { name = "notify", type = "boolean", label = "Notify the team" },
]"#;

/// An app whose `acme` declares [`SCHEMA`] (or none), the admin of tenant
/// `acme` signed in, acme connected (at-1 / rt-1), and a key scoped to `acme`.
pub(crate) async fn app(
    backend: Backend,
    schema: bool,
    extra: &[(&str, &str)],
) -> (TestApp, FakeProvider, String) {
    let fake = FakeProvider::start().await;
    let toml = if schema { SCHEMA } else { "" };
    let app = spawn_app_with_acme(backend, &fake, toml, extra).await;
    app.create_admin("acme", OWNER);
    assert_eq!(app.login(OWNER, PASSWORD).await.status(), 303);
    assert_eq!(connect(&app, &fake, "at-1", "rt-1").await.status(), 303);
    // Read the flash once, so that later pages are stable.
    app.get("/settings/integrations").await;
    let key = app.api_key(Some("acme"), false);
    (app, fake, key)
}

const ACME: &str = "/api/v1/tenants/acme/integrations/acme";

fn row(app: &TestApp, tenant: &str, provider: &str) -> Option<IntegrationSetting> {
    let t = app.tenant(tenant);
    IntegrationSetting::find(
        &mut app.conn(),
        &t.id,
        &tether::ids::ProviderKey::known(provider),
    )
    .unwrap()
}

/// The kinds of the tenant's events about `provider`, oldest first.
fn event_kinds(app: &TestApp, provider: &str) -> Vec<String> {
    use tether::db::schema::events;
    events::table
        .filter(events::provider.eq(provider))
        .order((events::created_at.asc(), events::id.asc()))
        .select(events::kind)
        .load(&mut app.conn())
        .unwrap()
        .into_iter()
        .filter(|k: &String| k.starts_with("integration_") || k == "settings_changed")
        .collect()
}

/// The dashboard's HTML.
async fn dashboard(app: &TestApp) -> String {
    let res = app.get("/settings/integrations").await;
    assert_eq!(res.status(), 200);
    res.text().await.unwrap()
}

/// The card of `provider` on a dashboard page, if it is shown.
fn card<'a>(page: &'a str, provider: &str) -> Option<&'a str> {
    let start = page.find(&format!(
        r#"id="card-{provider}" data-provider="{provider}""#
    ))?;
    let card = &page[start..];
    Some(&card[..card.find("</article>")?])
}

async fn a_never_written_pair_answers_the_defaults_and_a_put_round_trips_with_an_event_per_change(
    backend: Backend,
) {
    let (app, _fake, key) = app(backend, false, &[]).await;
    let res = app.api_get(ACME, &key).await;
    assert_eq!(res.headers()["cache-control"], "no-store");
    let (status, body) = json_of(res).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"provider": "acme", "enabled": true, "settings": {}, "updated_at": null, "schema": []})
    );
    assert!(row(&app, "acme", "acme").is_none(), "a GET writes nothing");

    let settings = json!({"pipeline": "p-1", "nested": {"stages": [1, 2.5, "x"]}, "on": true});
    let (status, body) = app
        .put_json(ACME, &key, json!({"enabled": true, "settings": settings}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["settings"], settings);
    assert_eq!(body["enabled"], true);
    let updated_at = body["updated_at"].as_str().expect("updated_at").to_string();
    assert!(updated_at.ends_with('Z'), "{updated_at}");
    let (_, again) = app.get_json(ACME, &key).await;
    assert_eq!(again, body, "GET answers what PUT stored");
    assert_eq!(event_kinds(&app, "acme"), ["settings_changed"]);

    // The same again changes nothing: no event, the same updated_at.
    let before = app.snapshot();
    let (status, same) = app
        .put_json(ACME, &key, json!({"enabled": true, "settings": settings}))
        .await;
    assert_eq!((status, &same), (200, &body));
    assert_eq!(app.snapshot(), before);

    // Both at once: two events.
    let (status, body) = app
        .put_json(ACME, &key, json!({"enabled": false, "settings": {}}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["enabled"].clone(), body["settings"].clone()),
        (json!(false), json!({}))
    );
    assert_eq!(
        event_kinds(&app, "acme"),
        [
            "settings_changed",
            "integration_disabled",
            "settings_changed"
        ]
    );
    let stored = row(&app, "acme", "acme").unwrap();
    assert!(!stored.enabled);
    assert_eq!(stored.settings, "{}");
    app.api_put(ACME, &key, json!({"enabled": true, "settings": {}}))
        .await;
    assert_eq!(
        event_kinds(&app, "acme").last().map(String::as_str),
        Some("integration_enabled")
    );
    // A PUT of the defaults on a pair never written leaves none written.
    let demo = "/api/v1/tenants/acme/integrations/demo";
    let (status, body) = app
        .put_json(demo, &key, json!({"enabled": true, "settings": {}}))
        .await;
    assert_eq!((status, body["updated_at"].clone()), (200, Value::Null));
    assert!(row(&app, "acme", "demo").is_none());
}

async fn every_refused_put_changes_nothing_and_says_why(backend: Backend) {
    let (app, _fake, _) = app(backend, true, &[]).await;
    let key = app.api_key(None, false);
    let (_, body) = app.get_json(ACME, &key).await;
    assert_eq!(
        body["schema"],
        json!([
            {"name": "pipeline_id", "type": "string", "label": "Default pipeline"},
            {"name": "limit", "type": "number", "label": "limit"},
            {"name": "notify", "type": "boolean", "label": "Notify the team"},
        ])
    );
    // 64 KiB exactly is taken: {"pipeline_id":"..."} is 18 bytes around the value.
    let fits = "a".repeat(64 * 1024 - 18);
    let res = app
        .api_put(
            ACME,
            &key,
            json!({"enabled": true, "settings": {"pipeline_id": fits}}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let res = app
        .api_put(
            ACME,
            &key,
            json!({"enabled": true, "settings": {"pipeline_id": "p-1", "limit": 3}}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let stored = row(&app, "acme", "acme").unwrap();
    let before = app.snapshot();
    let over = "a".repeat(64 * 1024 - 17);
    let cases: Vec<(&str, Value, u16, &str, &str)> = vec![
        (
            "an array",
            json!({"enabled": true, "settings": []}),
            400,
            "invalid_settings",
            "JSON object",
        ),
        (
            "a string",
            json!({"enabled": true, "settings": "x"}),
            400,
            "invalid_settings",
            "JSON object",
        ),
        (
            "null",
            json!({"enabled": true, "settings": null}),
            400,
            "invalid_settings",
            "JSON object",
        ),
        (
            "no settings",
            json!({"enabled": false}),
            400,
            "invalid_json",
            "settings",
        ),
        (
            "no enabled",
            json!({"settings": {}}),
            400,
            "invalid_json",
            "enabled",
        ),
        (
            "enabled a string",
            json!({"enabled": "no", "settings": {}}),
            400,
            "invalid_json",
            "boolean",
        ),
        (
            "an unknown field",
            json!({"enabled": true, "settings": {"colour": "red"}}),
            400,
            "invalid_settings",
            "'colour'",
        ),
        (
            "a number as text",
            json!({"enabled": true, "settings": {"limit": "3"}}),
            400,
            "invalid_settings",
            "'limit' must be a number",
        ),
        (
            "a string as number",
            json!({"enabled": true, "settings": {"pipeline_id": 7}}),
            400,
            "invalid_settings",
            "'pipeline_id' must be a string",
        ),
        (
            "a boolean as text",
            json!({"enabled": true, "settings": {"notify": "yes"}}),
            400,
            "invalid_settings",
            "'notify' must be a boolean",
        ),
        (
            "an unknown top-level key",
            json!({"enabled": true, "settings": {}, "more": 1}),
            400,
            "invalid_json",
            "more",
        ),
        (
            "over 64 KiB",
            json!({"enabled": false, "settings": {"pipeline_id": over}}),
            400,
            "settings_too_large",
            "65536",
        ),
    ];
    for (what, body, status, code, says) in cases {
        let res = app.api_put(ACME, &key, body).await;
        let got = res.status().as_u16();
        let text = res.text().await.unwrap();
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{what}: {text}"));
        assert_eq!(
            (got, v["error"]["code"].as_str().unwrap()),
            (status, code),
            "{what}: {text}"
        );
        assert!(
            v["error"]["message"].as_str().unwrap().contains(says),
            "{what}: {text}"
        );
    }
    // Not JSON at all, and a body past the route's limit.
    for body in [
        "{not json".to_string(),
        format!(
            "{{\"enabled\":true,\"settings\":{{\"pipeline_id\":\"{}\"}}}}",
            "a".repeat(300 * 1024)
        ),
    ] {
        let res = service()
            .put(format!("{}{ACME}", app.address))
            .bearer_auth(&key)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(error_of(res).await, (400, "invalid_json".to_string()));
    }
    // Unknown tenant, unknown provider, a provider the operator has not enabled.
    let ok = json!({"enabled": false, "settings": {}});
    for (path, status) in [
        ("/api/v1/tenants/nobody/integrations/acme", 404),
        ("/api/v1/tenants/acme/integrations/nope", 404),
        ("/api/v1/tenants/acme/integrations/hubspot", 404),
        ("/api/v1/tenants/acme/integrations/NOT_A_KEY", 404),
    ] {
        let res = app.api_put(path, &key, ok.clone()).await;
        assert_eq!(
            error_of(res).await,
            (status, "not_found".to_string()),
            "{path}"
        );
        assert_eq!(
            error_of(app.api_get(path, &key).await).await.0,
            status,
            "{path}"
        );
    }
    let res = app.api_delete(ACME, &key).await;
    assert_eq!(res.status(), 405);
    assert_eq!(res.headers()["allow"], "GET, PUT");
    assert_eq!(app.snapshot(), before);
    assert_eq!(row(&app, "acme", "acme").unwrap(), stored);
}

async fn a_scoped_key_reads_and_writes_only_its_own_tenants_settings(backend: Backend) {
    let (app, _fake, own) = app(backend, false, &[]).await;
    app.ensure_tenant("other");
    let other = "/api/v1/tenants/other/integrations/acme";
    let before = app.snapshot();
    for path in [other, "/api/v1/tenants/missing/integrations/acme"] {
        assert_eq!(
            error_of(app.api_get(path, &own).await).await,
            (403, "forbidden".to_string())
        );
        let res = app
            .api_put(path, &own, json!({"enabled": false, "settings": {}}))
            .await;
        assert_eq!(error_of(res).await, (403, "forbidden".to_string()));
    }
    let res = app
        .api_put(
            other,
            "tth_not-a-key",
            json!({"enabled": false, "settings": {}}),
        )
        .await;
    assert_eq!(res.status(), 401);
    assert_eq!(app.snapshot(), before);
    // Its own tenant, and a global key for the other one.
    assert_eq!(
        app.api_put(ACME, &own, json!({"enabled": false, "settings": {}}))
            .await
            .status(),
        200
    );
    let global = app.api_key(None, false);
    let (status, body) = app
        .put_json(
            other,
            &global,
            json!({"enabled": true, "settings": {"x": 1}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(!row(&app, "acme", "acme").unwrap().enabled);
    assert_eq!(row(&app, "other", "acme").unwrap().settings, r#"{"x":1}"#);
}

async fn a_disabled_provider_answers_409_provider_disabled_to_the_token_api_proxy_and_links(
    backend: Backend,
) {
    // With the token cache on: a switch-off must reach a warm entry too.
    let (app, fake, key) = app(backend, false, &[("TETHER_TOKEN_CACHE_MS", "60000")]).await;
    Mock::given(method("GET"))
        .and(path("/api/v1/me"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"ok": true})))
        .mount(&fake.server)
        .await;
    let token = format!("{API}/acme/connections/acme/token");
    let proxy = format!("{API}/acme/proxy/acme/v1/me");
    let (status, body) = app.get_json(&token, &key).await;
    assert_eq!((status, body["access_token"].clone()), (200, json!("at-1")));
    assert_eq!(app.api_get(&proxy, &key).await.status(), 200);
    let api_calls = fake.calls_to("/api/v1/me").await;

    assert_eq!(
        app.api_put(ACME, &key, json!({"enabled": false, "settings": {}}))
            .await
            .status(),
        200
    );
    let before = app.snapshot();
    for path in [&token, &proxy] {
        let res = app.api_get(path, &key).await;
        let text = res.text().await.unwrap();
        assert!(!text.contains("at-1"), "{path}: {text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["error"]["code"], "provider_disabled", "{path}: {text}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("switched Acme CRM off"),
            "{text}"
        );
    }
    let res = app.api_get(&token, &key).await;
    assert_eq!(res.status(), 409);
    let link = app
        .api_post(
            &format!("{API}/acme/connect-links"),
            &key,
            Some(json!({"provider": "acme"})),
        )
        .await;
    assert_eq!(error_of(link).await, (409, "provider_disabled".to_string()));
    assert_eq!(
        fake.calls_to("/api/v1/me").await,
        api_calls,
        "nothing reached the provider"
    );
    assert_eq!(fake.refresh_calls().await, 0);
    assert_eq!(app.snapshot(), before);
    // Distinct from a provider the operator has not enabled: that is a 404.
    let hubspot = app
        .api_get(&format!("{API}/acme/connections/hubspot/token"), &key)
        .await;
    assert_eq!(error_of(hubspot).await, (404, "not_found".to_string()));
    // The connection was kept: enabling again serves its token at once.
    assert_eq!(
        app.api_put(ACME, &key, json!({"enabled": true, "settings": {}}))
            .await
            .status(),
        200
    );
    let (status, body) = app.get_json(&token, &key).await;
    assert_eq!((status, body["access_token"].clone()), (200, json!("at-1")));
    assert_eq!(fake.refresh_calls().await, 0);
}

async fn the_dashboard_hides_a_disabled_provider_and_lists_it_under_disabled_with_enable(
    backend: Backend,
) {
    let (app, _fake, key) = app(backend, false, &[]).await;
    let page = dashboard(&app).await;
    let acme = card(&page, "acme").expect("the acme card");
    let switch = &acme[acme
        .find(r#"action="/settings/integrations/acme/enabled""#)
        .expect("the Disable switch")..];
    let switch = &switch[..switch.find("</form>").unwrap()];
    assert!(
        switch.contains(r#"name="csrf""#) && switch.contains(r#"name="enabled" value="false""#),
        "{switch}"
    );
    assert!(
        switch.contains(r#"data-action="disable">Disable Acme CRM<"#),
        "a plain button that says what it does: {switch}"
    );
    assert!(
        !page.contains("data-disabled-provider"),
        "nothing is disabled yet"
    );
    let csrf = csrf_in(&page).unwrap();

    // A wrong CSRF token, or a value that is not true/false, changes nothing.
    let before = app.snapshot();
    let res = app
        .post_form(
            "/settings/integrations/acme/enabled",
            &[("csrf", "wrong"), ("enabled", "false")],
        )
        .await;
    assert_eq!(res.status(), 403);
    let res = app
        .post_form(
            "/settings/integrations/acme/enabled",
            &[("csrf", &csrf), ("enabled", "off")],
        )
        .await;
    assert_eq!(res.status(), 400);
    let res = app
        .post_form(
            "/settings/integrations/nope/enabled",
            &[("csrf", &csrf), ("enabled", "false")],
        )
        .await;
    assert_eq!(res.status(), 404);
    assert_eq!(app.snapshot(), before);

    let res = app
        .post_form(
            "/settings/integrations/acme/enabled",
            &[("csrf", &csrf), ("enabled", "false")],
        )
        .await;
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "/settings/integrations");
    assert!(!row(&app, "acme", "acme").unwrap().enabled);
    let (_, body) = app.get_json(ACME, &key).await;
    assert_eq!(body["enabled"], false);
    let page = dashboard(&app).await;
    assert!(page.contains("Acme CRM is disabled"), "the flash: {page}");
    assert!(card(&page, "acme").is_none(), "hidden: {page}");
    assert!(card(&page, "demo").is_some(), "the others stay");
    let item = &page[page
        .find(r#"data-disabled-provider="acme""#)
        .expect("listed under Disabled")..];
    let item = &item[..item.find("</li>").unwrap()];
    assert!(
        item.contains("Acme CRM") && item.contains(">Enable<"),
        "{item}"
    );
    assert!(
        item.contains(r#"action="/settings/integrations/acme/enabled""#)
            && item.contains(r#"name="enabled" value="true""#),
        "{item}"
    );
    assert!(item.contains(r#"name="csrf""#), "{item}");
    assert_eq!(
        app.get("/settings/integrations/cards/acme").await.status(),
        404
    );

    let res = app
        .post_form(
            "/settings/integrations/acme/enabled",
            &[("csrf", &csrf), ("enabled", "true")],
        )
        .await;
    assert_eq!(res.status(), 303);
    let page = dashboard(&app).await;
    assert!(page.contains("Acme CRM is enabled again."), "{page}");
    let acme = card(&page, "acme").expect("shown again");
    assert!(
        acme.contains("Main Street Dental"),
        "its connection is kept: {acme}"
    );
    assert!(!page.contains("data-disabled-provider"));
    assert!(
        acme.contains("Disabled") && acme.contains("Enabled"),
        "both in its activity: {acme}"
    );
}

async fn the_card_edits_settings_with_a_form_for_a_schema_and_none_without_one(backend: Backend) {
    let (app, _fake, key) = app(backend, true, &[]).await;
    let page = dashboard(&app).await;
    let csrf = csrf_in(&page).unwrap();
    let acme = card(&page, "acme").unwrap();
    let form = &acme[acme
        .find(r#"action="/settings/integrations/acme/settings" class="settings-form" data-form="settings""#)
        .expect("a settings form")..];
    let form = &form[..form.find("</form>").unwrap()];
    assert!(form.contains(r#"name="csrf""#), "{form}");
    assert!(
        form.contains(r#"type="text" name="setting.pipeline_id" value="""#),
        "{form}"
    );
    assert!(
        form.contains(r#"type="number" step="any" name="setting.limit""#),
        "{form}"
    );
    assert!(
        form.contains(r#"type="checkbox" name="setting.notify" value="true">"#),
        "{form}"
    );
    assert!(
        form.contains("Default pipeline") && form.contains("Notify the team"),
        "{form}"
    );
    assert!(
        !form.contains("textarea"),
        "a schema gets a form, not a JSON box"
    );
    // A provider without a schema has no settings form: its free-form
    // settings are the CRM's to write, through the API.
    let demo = card(&page, "demo").unwrap();
    assert!(
        !demo.contains("/settings/integrations/demo/settings"),
        "{demo}"
    );
    assert!(!page.contains("textarea"), "no JSON box anywhere: {page}");

    let post = |path: &'static str, fields: Vec<(&'static str, String)>| {
        let mut form = vec![("csrf", csrf.clone())];
        form.extend(fields);
        let app = &app;
        async move {
            let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            app.post_form(path, &form).await
        }
    };
    let res = post(
        "/settings/integrations/acme/settings",
        vec![
            ("setting.pipeline_id", " pipe-7 ".into()),
            ("setting.limit", "5".into()),
            ("setting.notify", "true".into()),
        ],
    )
    .await;
    assert_eq!(res.status(), 303);
    let (_, body) = app.get_json(ACME, &key).await;
    assert_eq!(
        body["settings"],
        json!({"pipeline_id": "pipe-7", "limit": 5, "notify": true})
    );
    let page = dashboard(&app).await;
    assert!(page.contains("Acme CRM settings saved."), "{page}");
    let acme = card(&page, "acme").unwrap();
    assert!(
        acme.contains(r#"name="setting.pipeline_id" value="pipe-7""#),
        "{acme}"
    );
    assert!(acme.contains(r#"name="setting.limit" value="5""#), "{acme}");
    assert!(
        acme.contains(r#"name="setting.notify" value="true" checked>"#),
        "{acme}"
    );

    // Refusals draw the page again with the error on the card and what was
    // typed kept; nothing changes.
    let before = app.snapshot();
    let refused: Vec<Refused> = vec![
        (
            "/settings/integrations/acme/settings",
            vec![("setting.limit", "five".into())],
            "acme",
            "limit must be a number",
        ),
        (
            "/settings/integrations/acme/settings",
            vec![("setting.pipeline_id", "a".repeat(70 * 1024))],
            "acme",
            "at most 65536",
        ),
    ];
    for (path, fields, provider, says) in refused {
        let typed = fields[0].1.clone();
        let res = post(path, fields).await;
        assert_eq!(res.status(), 400, "{path} {says}");
        let page = res.text().await.unwrap();
        let shown = card(&page, provider).unwrap_or_else(|| panic!("{provider} card: {page}"));
        let alert = &shown[shown
            .find(r#"role="alert""#)
            .unwrap_or_else(|| panic!("an alert on {provider}: {shown}"))..];
        assert!(
            alert[..alert.find("</p>").unwrap()].contains(says),
            "{says}: {alert}"
        );
        let escaped = typed.replace('"', "&#34;");
        assert!(
            shown.contains(&escaped) || shown.contains(&typed.replace('"', "&quot;")),
            "kept what was typed: {path}"
        );
        assert!(
            shown.contains("<details class=\"settings\" open>"),
            "opened"
        );
    }
    assert_eq!(app.snapshot(), before);

    // A JSON box posted anyway is refused and changes nothing.
    let res = post(
        "/settings/integrations/demo/settings",
        vec![("settings_json", "{\"greeting\": \"hi\"}".into())],
    )
    .await;
    let refused = crate::helpers::assert_error_page(res, 400, "invalid_settings").await;
    assert!(
        refused.contains("Demo has no settings to change here."),
        "{refused}"
    );
    assert_eq!(app.snapshot(), before);
    let (_, body) = app
        .get_json("/api/v1/tenants/acme/integrations/demo", &key)
        .await;
    assert_eq!(body["settings"], json!({}));
    let res = app
        .post_form(
            "/settings/integrations/demo/settings",
            &[("csrf", "wrong"), ("settings_json", "{}")],
        )
        .await;
    assert_eq!(res.status(), 403);
    assert_eq!(
        body["settings"],
        app.get_json("/api/v1/tenants/acme/integrations/demo", &key)
            .await
            .1["settings"]
    );
}

/// A settings form that is refused: route, fields, the card, what it says.
type Refused = (
    &'static str,
    Vec<(&'static str, String)>,
    &'static str,
    &'static str,
);

/// The choice the README states: a switched-off integration's tokens are
/// kept fresh, so that enabling it again works at once.
async fn a_disabled_integration_is_still_refreshed_by_the_scheduler(backend: Backend) {
    let (app, fake, key) = app(backend, false, &[]).await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(wiremock::matchers::body_string_contains(
            "grant_type=refresh_token",
        ))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"access_token": "at-2", "expires_in": 3600})),
        )
        .expect(1)
        .mount(&fake.server)
        .await;
    assert_eq!(
        app.api_put(ACME, &key, json!({"enabled": false, "settings": {}}))
            .await
            .status(),
        200
    );
    let c = app.acme_connection("acme");
    crate::helpers::issued_ago(&mut app.conn(), &c.id, 3600);
    app.make_due(&c.id);
    tether::refresh::scheduler::Scheduler::new(app.state.clone())
        .tick()
        .await
        .unwrap();
    let row = app.until(&c.id, |r| r.version > c.version).await;
    assert!(row.last_error.is_none(), "{row:?}");
    assert_eq!(
        app.api_put(ACME, &key, json!({"enabled": true, "settings": {}}))
            .await
            .status(),
        200
    );
    let (status, body) = app
        .get_json(&format!("{API}/acme/connections/acme/token"), &key)
        .await;
    assert_eq!((status, body["access_token"].clone()), (200, json!("at-2")));
}

/// The `<li>` of `account` on a card.
fn account_item<'a>(card: &'a str, account: &str) -> &'a str {
    let start = card
        .find(&format!(r#"data-account="{account}""#))
        .unwrap_or_else(|| panic!("no item for {account}: {card}"));
    let item = &card[start..];
    &item[..item.find("\n    </li>").expect("the item's end")]
}

async fn the_card_edits_an_account_s_own_settings_over_the_provider_s(backend: Backend) {
    let (app, _fake, key) = app(backend, true, &[]).await;
    let account = app.acme_connection("acme").account_id.to_string();
    let page = dashboard(&app).await;
    let csrf = csrf_in(&page).unwrap();
    let post = |fields: Vec<(&'static str, String)>| {
        let mut form = vec![("csrf", csrf.clone())];
        form.extend(fields);
        let app = &app;
        async move {
            let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            app.post_form("/settings/integrations/acme/settings", &form)
                .await
        }
    };
    // The provider's settings, then the account's over them.
    let res = post(vec![
        ("setting.pipeline_id", "pipe-all".into()),
        ("setting.notify", "true".into()),
    ])
    .await;
    assert_eq!(res.status(), 303);
    let page = dashboard(&app).await;
    let item = account_item(card(&page, "acme").unwrap(), &account);
    assert!(item.contains(r#"data-form="account-settings""#), "{item}");
    assert!(
        item.contains(&format!(r#"name="account" value="{account}""#)),
        "{item}"
    );
    assert!(
        item.contains(r#"value="" placeholder="As for all accounts: pipe-all""#),
        "{item}"
    );
    assert!(
        item.contains(r#"<option value="" selected>As for all accounts (yes)</option>"#),
        "{item}"
    );
    let res = post(vec![
        ("account", account.clone()),
        ("setting.pipeline_id", " pipe-own ".into()),
        ("setting.limit", "".into()),
        ("setting.notify", "false".into()),
    ])
    .await;
    assert_eq!(res.status(), 303);
    let own = format!("{ACME}/accounts/{account}");
    let (code, body) = app.get_json(&own, &key).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body["settings"],
        json!({"pipeline_id": "pipe-own", "notify": false})
    );
    assert_eq!(
        body["effective"],
        json!({"pipeline_id": "pipe-own", "notify": false})
    );
    let (_, shared) = app.get_json(ACME, &key).await;
    assert_eq!(
        shared["settings"],
        json!({"pipeline_id": "pipe-all", "notify": true})
    );
    let page = dashboard(&app).await;
    assert!(page.contains("Acme CRM settings of"), "the flash: {page}");
    let item = account_item(card(&page, "acme").unwrap(), &account);
    assert!(item.contains(r#"value="pipe-own""#), "{item}");
    assert!(
        item.contains(r#"<option value="false" selected>No</option>"#),
        "{item}"
    );

    // Refusals draw the page again with the error in the account's form,
    // what was typed kept; nothing changes.
    let before = app.snapshot();
    for (fields, says) in [
        (
            vec![("setting.limit", "five".to_string())],
            "limit must be a number",
        ),
        (
            vec![("setting.notify", "maybe".to_string())],
            "is yes, no, or as for all accounts",
        ),
    ] {
        let typed = fields[0].1.clone();
        let mut fields = fields;
        fields.push(("account", account.clone()));
        let res = post(fields).await;
        assert_eq!(res.status(), 400, "{says}");
        let page = res.text().await.unwrap();
        let item = account_item(card(&page, "acme").unwrap(), &account);
        let alert = &item[item
            .find(r#"role="alert""#)
            .unwrap_or_else(|| panic!("an alert in the account's form: {item}"))..];
        assert!(
            alert[..alert.find("</p>").unwrap()].contains(says),
            "{alert}"
        );
        assert!(item.contains(r#"<details class="settings account-settings" open>"#));
        if typed == "five" {
            assert!(
                item.contains(r#"value="five""#),
                "kept what was typed: {item}"
            );
        }
    }
    for bad in ["", "a\nb", &"x".repeat(257)] {
        let res = post(vec![
            ("account", bad.to_string()),
            ("setting.limit", "1".into()),
        ])
        .await;
        crate::helpers::assert_error_page(res, 400, "invalid_account").await;
    }
    assert_eq!(app.snapshot(), before);

    // All left empty: the account follows the provider again.
    let res = post(vec![
        ("account", account.clone()),
        ("setting.pipeline_id", "".into()),
        ("setting.notify", "".into()),
    ])
    .await;
    assert_eq!(res.status(), 303);
    let (_, body) = app.get_json(&own, &key).await;
    assert_eq!(body["settings"], json!({}));
    assert_eq!(body["effective"], shared["settings"]);
}
