//! Connect links: a link connects the tenant in a browser without signing
//! in, works only once, expires, binds its flow to the browser that followed
//! it, and a bad request for one is a 400 that creates no link. Its page
//! names the tenant and the provider and changes nothing: only the page's
//! form (a POST with this browser's CSRF token) uses the link up, and the
//! provider is asked for its consent screen.

use super::{link_count, unconnected, API};
use crate::backend_tests;
use crate::helpers::{
    csrf_in, error_of, mount_exchange, new_browser, query_param, service, Backend, FakeProvider,
    TestApp, ACME_ISSUER,
};
use diesel::prelude::*;
use serde_json::{json, Value};
use tether::db::schema::connect_links;
use wiremock::matchers::{method, path};
use wiremock::{Mock, Request, ResponseTemplate};

backend_tests!(
    a_connect_link_connects_the_tenant_in_a_browser_without_signing_in,
    a_connect_link_works_only_once,
    an_expired_connect_link_is_refused,
    a_connect_links_callback_in_another_browser_is_rejected_and_stores_nothing,
    a_bad_connect_link_request_is_a_400_and_creates_no_link,
    a_links_page_names_tenant_provider_and_person_and_previews_leave_it_usable,
    a_bare_get_gets_an_instantly_approving_provider_nothing,
    a_cross_site_post_without_the_pages_csrf_token_uses_nothing,
);

/// Opens a link's page in `browser`; returns the page.
pub(super) async fn open_page(browser: &reqwest::Client, link: &str) -> String {
    let res = browser.get(link).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["referrer-policy"], "no-referrer");
    assert!(res.headers().get("location").is_none());
    res.text().await.unwrap()
}

/// Follows a link in `browser` as a person does: its page, then the page's
/// form; returns the state and PKCE challenge it was sent off with.
pub(super) async fn follow(
    fake: &FakeProvider,
    browser: &reqwest::Client,
    link: &str,
) -> (String, String) {
    let page = open_page(browser, link).await;
    let csrf = csrf_in(&page).expect("the page's form");
    let res = browser
        .post(link)
        .form(&[("csrf", csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    let location = res.headers()["location"].to_str().unwrap().to_string();
    assert!(
        location.starts_with(&format!("{}/authorize?", fake.server.uri())),
        "{location}"
    );
    assert_eq!(
        query_param(&location, "code_challenge_method").as_deref(),
        Some("S256")
    );
    assert_eq!(
        query_param(&location, "prompt").as_deref(),
        Some("consent"),
        "a link's flow asks for the consent screen: {location}"
    );
    (
        query_param(&location, "state").expect("state"),
        query_param(&location, "code_challenge").expect("challenge"),
    )
}

pub(super) fn callback_url(app: &TestApp, state: &str) -> String {
    format!(
        "{}/oauth/acme/callback?code=the-code&state={state}&iss={ACME_ISSUER}",
        app.address
    )
}

async fn a_connect_link_connects_the_tenant_in_a_browser_without_signing_in(backend: Backend) {
    let (app, fake, key) = unconnected(backend).await;
    let res = app
        .api_post(
            &format!("{API}/acme/connect-links"),
            &key,
            Some(json!({"provider": "acme"})),
        )
        .await;
    assert_eq!(res.status(), 201);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let body: Value = res.json().await.unwrap();
    let link = body["url"].as_str().unwrap().to_string();
    let token = link
        .strip_prefix(&format!("{}/connect/", app.address))
        .unwrap_or_else(|| panic!("{link} is not under {}", app.address));
    assert!(token.len() >= 32 && !token.contains('/'), "{link}");
    let expires_at = chrono::DateTime::parse_from_rfc3339(body["expires_at"].as_str().unwrap())
        .unwrap()
        .timestamp();
    let ttl = expires_at - chrono::Utc::now().timestamp();
    assert!((880..=901).contains(&ttl), "default 15 minutes: {ttl}");

    let person = new_browser();
    let (state, challenge) = follow(&fake, &person, &link).await;
    mount_exchange(&fake, &challenge, "at-link", "rt-link").await;
    let res = person.get(callback_url(&app, &state)).send().await.unwrap();
    assert_eq!(res.status(), 303, "{:?}", res.text().await);
    assert_eq!(res.headers()["location"], "/connect/done");
    let page = person
        .get(format!("{}/connect/done", app.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("Connected Acme CRM as Main Street Dental."),
        "{page}"
    );
    assert!(!page.contains("at-link") && !page.contains("rt-link"));

    let (_, status) = app
        .get_json(&format!("{API}/acme/connections/acme"), &key)
        .await;
    assert_eq!(status["status"], "connected");
    assert_eq!(status["account"]["id"], "acct-42");
    let (_, token) = app
        .get_json(&format!("{API}/acme/connections/acme/token"), &key)
        .await;
    assert_eq!(token["access_token"], "at-link");
}

async fn a_connect_link_works_only_once(backend: Backend) {
    let (app, fake, key) = unconnected(backend).await;
    let link = app.connect_link(&key, "acme").await;
    follow(&fake, &new_browser(), &link).await;
    for client in [new_browser(), new_browser()] {
        let res = client.get(&link).send().await.unwrap();
        assert_eq!(res.status(), 400);
        let page = res.text().await.unwrap();
        assert!(page.contains("invalid_link"), "{page}");
    }
}

async fn an_expired_connect_link_is_refused(backend: Backend) {
    let (app, _fake, key) = unconnected(backend).await;
    let link = app.connect_link(&key, "acme").await;
    diesel::update(connect_links::table)
        .set(connect_links::expires_at.eq(tether::db::now() - chrono::Duration::seconds(1)))
        .execute(&mut app.conn())
        .unwrap();
    let before = app.snapshot();
    let res = new_browser().get(&link).send().await.unwrap();
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("invalid_link"));
    assert_eq!(app.snapshot(), before, "no flow was started");
}

async fn a_connect_links_callback_in_another_browser_is_rejected_and_stores_nothing(
    backend: Backend,
) {
    let (app, fake, key) = unconnected(backend).await;
    let link = app.connect_link(&key, "acme").await;
    let (state, _) = follow(&fake, &new_browser(), &link).await;
    let before = app.snapshot();
    let res = new_browser()
        .get(callback_url(&app, &state))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let page = res.text().await.unwrap();
    assert!(page.contains("invalid_state"), "{page}");
    assert_eq!(
        app.snapshot(),
        before,
        "nothing stored, the state not used up"
    );
    assert_eq!(fake.calls_to("/token").await, 0, "no code exchange");
    let (_, status) = app
        .get_json(&format!("{API}/acme/connections/acme"), &key)
        .await;
    assert_eq!(status["status"], "not_connected");
}

async fn a_bad_connect_link_request_is_a_400_and_creates_no_link(backend: Backend) {
    let (app, _fake, key) = unconnected(backend).await;
    for (body, expected) in [
        (json!({"provider": 1}), "invalid_json"),
        (json!({"provider": "acme", "admin": true}), "invalid_json"),
        (json!({}), "invalid_json"),
        (
            json!({"provider": "acme", "expires_in": 5}),
            "invalid_expires_in",
        ),
        (
            json!({"provider": "acme", "expires_in": 86401}),
            "invalid_expires_in",
        ),
        (
            json!({"provider": "acme", "email": "not an email"}),
            "invalid_email",
        ),
    ] {
        let res = app
            .api_post(
                &format!("{API}/acme/connect-links"),
                &key,
                Some(body.clone()),
            )
            .await;
        assert_eq!(error_of(res).await, (400, expected.into()), "{body}");
    }
    let res = service()
        .post(format!("{}{API}/acme/connect-links", app.address))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(res).await, (400, "invalid_json".into()));
    assert_eq!(link_count(&app), 0);
}

async fn a_links_page_names_tenant_provider_and_person_and_previews_leave_it_usable(
    backend: Backend,
) {
    let (app, fake, key) = unconnected(backend).await;
    let res = app
        .api_post(
            &format!("{API}/acme/connect-links"),
            &key,
            Some(json!({"provider": "acme", "email": "Jane@Acme.example", "expires_in": 900})),
        )
        .await;
    assert_eq!(res.status(), 201);
    let body: Value = res.json().await.unwrap();
    let link = body["url"].as_str().unwrap().to_string();
    let before = app.snapshot();
    // How long it lasts, as a person is told it, and the CRM by its name.
    let page = open_page(&new_browser(), &link).await;
    assert!(
        page.contains("The link works once and expires in 15 minutes"),
        "{page}"
    );
    assert!(
        page.contains("in the CRM, so the CRM can work with it"),
        "{page}"
    );
    assert!(page.contains("<time datetime=\""), "{page}");
    // Chat apps and mail scanners fetch the link, each in its own "browser".
    for _ in 0..3 {
        let page = open_page(&new_browser(), &link).await;
        assert!(page.contains("Connect Acme CRM to Acme"), "{page}");
        assert!(
            page.contains("<strong>Acme</strong>"),
            "the tenant's name: {page}"
        );
        assert!(page.contains("jane@acme.example"), "the person: {page}");
    }
    assert_eq!(app.snapshot(), before, "a page view changes nothing");
    assert!(fake.requests().await.is_empty());
    // The person it is for still gets through.
    let person = new_browser();
    let (state, challenge) = follow(&fake, &person, &link).await;
    mount_exchange(&fake, &challenge, "at-link", "rt-link").await;
    let res = person.get(callback_url(&app, &state)).send().await.unwrap();
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "/connect/done");
}

/// An authorization server that answers at once for an app the user already
/// approved: the authorize request goes straight back to the callback with a
/// code, no page in between.
struct InstantApproval {
    callback: String,
}

impl wiremock::Respond for InstantApproval {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let state = request
            .url
            .query_pairs()
            .find(|(k, _)| k == "state")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        ResponseTemplate::new(302).insert_header(
            "location",
            format!(
                "{}?code=the-code&state={state}&iss={ACME_ISSUER}",
                self.callback
            )
            .as_str(),
        )
    }
}

async fn a_bare_get_gets_an_instantly_approving_provider_nothing(backend: Backend) {
    let (app, fake, key) = unconnected(backend).await;
    Mock::given(method("GET"))
        .and(path("/authorize"))
        .respond_with(InstantApproval {
            callback: app.ctx.settings.redirect_uri("acme"),
        })
        .mount(&fake.server)
        .await;
    let link = app.connect_link(&key, "acme").await;
    let before = app.snapshot();
    // A victim's browser sent to the link follows every redirect it is given.
    let victim = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    let res = victim.get(&link).send().await.unwrap();
    assert_eq!(res.status(), 200, "the link's page, not a redirect");
    assert_eq!(res.url().as_str(), link);
    assert_eq!(fake.calls_to("/authorize").await, 0);
    assert_eq!(fake.calls_to("/token").await, 0);
    assert_eq!(app.snapshot(), before);
    let (_, status) = app
        .get_json(&format!("{API}/acme/connections/acme"), &key)
        .await;
    assert_eq!(status["status"], "not_connected");
}

async fn a_cross_site_post_without_the_pages_csrf_token_uses_nothing(backend: Backend) {
    let (app, fake, key) = unconnected(backend).await;
    let link = app.connect_link(&key, "acme").await;
    let before = app.snapshot();
    // Another site's auto-submitting form: no token, or one from another browser.
    let elsewhere = csrf_in(&open_page(&new_browser(), &link).await).unwrap();
    for form in [vec![], vec![("csrf", elsewhere.as_str())]] {
        let victim = new_browser();
        let res = victim.post(&link).form(&form).send().await.unwrap();
        assert_eq!(res.status(), 403);
        assert!(res.headers().get("location").is_none());
    }
    assert_eq!(app.snapshot(), before);
    assert!(fake.requests().await.is_empty());
    follow(&fake, &new_browser(), &link).await;
}
