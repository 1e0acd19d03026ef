//! Connect from the CRM's own page (README, "Connect from your own page"):
//! `/static/connect.js` opens a connect link in a popup with the page's
//! origin as `embed`; only an origin listed in TETHER_EMBED_ORIGINS is
//! taken, and the popup's last page posts the outcome to exactly that
//! origin, with a CSP of its own. Here over HTTP on both backends; in
//! `browser.rs` in the real Chromium, with the CRM's page on a second origin.

mod browser;

use crate::backend_tests;
use crate::helpers::{
    csrf_in, mount_exchange, new_browser, query_param, run, spawn_app, spawn_app_with_acme, stderr,
    Backend, FakeProvider, TestApp, ACME_ISSUER,
};
use std::process::Command;
use tether::db::models::tenant::Tenant;

backend_tests!(
    a_link_opened_by_a_listed_page_ends_on_a_popup_that_posts_to_that_origin_only,
    an_unlisted_page_origin_is_refused_by_the_link_page_and_its_form_and_uses_nothing,
    without_embed_origins_every_embed_parameter_is_refused,
    two_link_popups_in_one_browser_each_report_to_the_page_that_opened_it,
);

/// The CRM page's origin the apps below list.
const CRM: &str = "http://127.0.0.1:3900";
/// The popup's last page's policy: our script and stylesheet, nothing else.
const POPUP_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// An app with `acme` against a fake, tenant `acme` (not connected), a
/// global API key, and `origins` as TETHER_EMBED_ORIGINS (None: unset).
async fn app_listing(backend: Backend, origins: Option<&str>) -> (TestApp, FakeProvider, String) {
    let fake = FakeProvider::start().await;
    let extra: Vec<(&str, &str)> = origins
        .map(|o| ("TETHER_EMBED_ORIGINS", o))
        .into_iter()
        .collect();
    let app = spawn_app_with_acme(backend, &fake, "", &extra).await;
    Tenant::create(&mut app.conn(), "acme", "Acme").unwrap();
    let key = app.api_key(None, false);
    (app, fake, key)
}

/// `link` with `embed=origin`, as connect.js opens it.
fn embedded(link: &str, origin: &str) -> String {
    let mut url = url::Url::parse(link).unwrap();
    url.query_pairs_mut().append_pair("embed", origin);
    url.to_string()
}

/// Whether the link was used up.
fn link_used(app: &TestApp) -> bool {
    use diesel::prelude::*;
    use tether::db::schema::connect_links;
    let used: Vec<Option<chrono::NaiveDateTime>> = connect_links::table
        .select(connect_links::used_at)
        .load(&mut app.conn())
        .unwrap();
    assert_eq!(used.len(), 1);
    used[0].is_some()
}

async fn a_link_opened_by_a_listed_page_ends_on_a_popup_that_posts_to_that_origin_only(
    backend: Backend,
) {
    let (app, fake, key) =
        app_listing(backend, Some(&format!("https://other.example,{CRM}"))).await;
    let link = app.connect_link(&key, "acme").await;
    let person = new_browser();

    // The page keeps the origin in its form, which posts to the page itself.
    let res = person.get(embedded(&link, CRM)).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["referrer-policy"], "no-referrer");
    let page = res.text().await.unwrap();
    assert!(
        page.contains(&format!(
            r#"<input type="hidden" name="embed" value="{CRM}">"#
        )),
        "{page}"
    );
    let csrf = csrf_in(&page).expect("the page's form");
    let res = person
        .post(embedded(&link, CRM))
        .form(&[("csrf", csrf.as_str()), ("embed", CRM)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    let location = res.headers()["location"].to_str().unwrap().to_string();
    assert!(
        location.starts_with(&format!("{}/authorize?", fake.server.uri())),
        "{location}"
    );
    assert!(
        !location.contains("embed") && !location.contains("3900"),
        "{location}"
    );
    let state = query_param(&location, "state").unwrap();
    let challenge = query_param(&location, "code_challenge").unwrap();
    mount_exchange(&fake, &challenge, "at-embed-secret", "rt-embed-secret").await;

    let res = person
        .get(format!(
            "{}/oauth/acme/callback?code=the-code&state={state}&iss={ACME_ISSUER}",
            app.address
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "the popup page, not /connect/done");
    assert_eq!(res.headers()["content-security-policy"], POPUP_CSP);
    assert_eq!(res.headers()["referrer-policy"], "no-referrer");
    assert_eq!(res.headers()["x-frame-options"], "DENY");
    assert_eq!(res.headers()["cache-control"], "no-store");
    let html = res.text().await.unwrap();
    assert!(html.contains(&format!(r#"data-target="{CRM}""#)), "{html}");
    assert!(
        html.contains(r#"data-ok="true""#) && html.contains(r#"data-provider="acme""#),
        "{html}"
    );
    assert!(
        html.contains(r#"data-account=""#),
        "the account's name: {html}"
    );
    assert!(!html.contains("other.example"), "one origin only: {html}");
    assert!(!html.contains("at-embed-secret") && !html.contains("rt-embed-secret"));
    assert!(
        !html.contains("/settings/integrations"),
        "a link's popup has no dashboard to go back to: {html}"
    );
    assert!(link_used(&app));
    let (_, status) = app
        .get_json("/api/v1/tenants/acme/connections/acme", &key)
        .await;
    assert_eq!(status["status"], "connected");

    // The script posts to the origin the page names, and to nothing else.
    let script = app.get("/static/popup.js").await.text().await.unwrap();
    assert!(script.contains("result.dataset.target"), "{script}");
    assert!(
        !script.contains(r#""*""#) && !script.contains("'*'"),
        "{script}"
    );
}

/// Opens `link` as connect.js does from a page of `origin` and goes on;
/// returns the authorize URL's state and PKCE challenge.
async fn begin_embedded(person: &reqwest::Client, link: &str, origin: &str) -> (String, String) {
    let page = person
        .get(embedded(link, origin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = csrf_in(&page).expect("the page's form");
    let res = person
        .post(embedded(link, origin))
        .form(&[("csrf", csrf.as_str()), ("embed", origin)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    let location = res.headers()["location"].to_str().unwrap().to_string();
    (
        query_param(&location, "state").unwrap(),
        query_param(&location, "code_challenge").unwrap(),
    )
}

/// Two CRM pages (two listed origins) open a link each in one browser; the
/// second flow starts before the first ends. Each popup still completes and
/// posts to the origin that opened it: the origin is kept with the flow's
/// state, and the browser's binding is shared by its flows, not replaced.
async fn two_link_popups_in_one_browser_each_report_to_the_page_that_opened_it(backend: Backend) {
    const OTHER_CRM: &str = "http://127.0.0.1:3901";
    let (app, fake, key) = app_listing(backend, Some(&format!("{CRM},{OTHER_CRM}"))).await;
    let first_link = app.connect_link(&key, "acme").await;
    let second_link = app.connect_link(&key, "acme").await;
    let person = new_browser();
    let (first_state, first_challenge) = begin_embedded(&person, &first_link, CRM).await;
    let (second_state, second_challenge) = begin_embedded(&person, &second_link, OTHER_CRM).await;

    for (state, challenge, origin, other, flow) in [
        (&first_state, &first_challenge, CRM, OTHER_CRM, "first"),
        (&second_state, &second_challenge, OTHER_CRM, CRM, "second"),
    ] {
        mount_exchange(
            &fake,
            challenge,
            &format!("at-{flow}"),
            &format!("rt-{flow}"),
        )
        .await;
        let res = person
            .get(format!(
                "{}/oauth/acme/callback?code=the-code&state={state}&iss={ACME_ISSUER}",
                app.address
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{flow}: the popup page");
        let html = res.text().await.unwrap();
        assert!(
            html.contains(&format!(r#"data-target="{origin}""#)),
            "{flow}: {html}"
        );
        assert!(!html.contains(other), "{flow}: one origin only: {html}");
        assert!(html.contains(r#"data-ok="true""#), "{flow}: {html}");
        let (_, status) = app
            .get_json("/api/v1/tenants/acme/connections/acme", &key)
            .await;
        assert_eq!(status["status"], "connected", "{flow}");
    }
}

async fn an_unlisted_page_origin_is_refused_by_the_link_page_and_its_form_and_uses_nothing(
    backend: Backend,
) {
    let (app, fake, key) = app_listing(backend, Some(CRM)).await;
    let link = app.connect_link(&key, "acme").await;
    let person = new_browser();
    let before = app.snapshot();
    for other in [
        "http://127.0.0.1:3901",
        "https://127.0.0.1:3900",
        "http://127.0.0.1:3900/",
        "*",
        "null",
        "",
    ] {
        let res = person.get(embedded(&link, other)).send().await.unwrap();
        let page = crate::helpers::assert_error_page(res, 400, "invalid_embed_origin").await;
        assert!(page.contains("TETHER_EMBED_ORIGINS"), "{other}: {page}");
    }

    // The form refuses it too, even with a good CSRF token: the link stays.
    let page = person
        .get(&link)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !page.contains(r#"name="embed""#),
        "no embed field without one: {page}"
    );
    let csrf = csrf_in(&page).unwrap();
    let res = person
        .post(&link)
        .form(&[("csrf", csrf.as_str()), ("embed", "http://evil.example")])
        .send()
        .await
        .unwrap();
    crate::helpers::assert_error_page(res, 400, "invalid_embed_origin").await;
    assert_eq!(app.snapshot(), before, "no state, the link not used");
    assert!(!link_used(&app));
    assert_eq!(fake.calls().await, 0);

    // Opened directly, the same link still works, and ends as before.
    let res = person
        .post(&link)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    let location = res.headers()["location"].to_str().unwrap().to_string();
    let state = query_param(&location, "state").unwrap();
    let challenge = query_param(&location, "code_challenge").unwrap();
    mount_exchange(&fake, &challenge, "at-1", "rt-1").await;
    let res = person
        .get(format!(
            "{}/oauth/acme/callback?code=the-code&state={state}&iss={ACME_ISSUER}",
            app.address
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "/connect/done");
}

async fn without_embed_origins_every_embed_parameter_is_refused(backend: Backend) {
    let (app, _fake, key) = app_listing(backend, None).await;
    let link = app.connect_link(&key, "acme").await;
    let res = new_browser()
        .get(embedded(&link, CRM))
        .send()
        .await
        .unwrap();
    let page = crate::helpers::assert_error_page(res, 400, "invalid_embed_origin").await;
    assert!(
        page.contains("TETHER_EMBED_ORIGINS lists no page"),
        "{page}"
    );
    assert!(!link_used(&app));
}

#[actix_web::test]
async fn connect_js_is_served_for_pages_on_other_origins() {
    let app = spawn_app(Backend::Sqlite).await;
    let res = app.get("/static/connect.js").await;
    assert_eq!(res.status(), 200);
    let headers = res.headers().clone();
    assert_eq!(headers["content-type"], "text/javascript; charset=utf-8");
    assert_eq!(headers["cross-origin-resource-policy"], "cross-origin");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["cache-control"], "public, max-age=300");
    let script = res.text().await.unwrap();
    assert!(
        script.contains("root.TetherConnect = { open: open }"),
        "{script}"
    );
    assert!(script.contains(r#"searchParams.set("embed", root.location.origin)"#));
    // Only its own popup, on the link's origin, is believed.
    assert!(script.contains("event.origin !== link.origin || event.source !== popup"));
    // The other static files say nothing about other origins.
    let res = app.get("/static/popup.js").await;
    assert!(res.headers().get("cross-origin-resource-policy").is_none());
}

#[test]
fn a_bad_embed_origin_stops_tether_at_start_naming_the_variable() {
    for (value, why) in [
        (
            "https://crm.example.com/settings",
            "entry 1 must be only scheme://host[:port]",
        ),
        (
            "https://crm.example.com,https://*.example.com",
            "entry 2 has a wildcard",
        ),
    ] {
        let out = run(
            Command::new(env!("CARGO_BIN_EXE_tether"))
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .env("TETHER_EMBED_ORIGINS", value)
                .current_dir(std::env::temp_dir())
                .arg("migrate"),
            "",
        );
        assert_eq!(out.status.code(), Some(1), "{value}");
        let err = stderr(&out);
        assert!(
            err.contains(&format!("TETHER_EMBED_ORIGINS: {why}")),
            "{value}: {err}"
        );
    }
}
