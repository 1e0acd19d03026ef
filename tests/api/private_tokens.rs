//! Private tokens (README, "Private tokens"): a GoHighLevel location's
//! Private Integration Token stored as a connection of its own kind,
//! checked with the location lookup, served by the token API, never
//! refreshed nor revoked, left alone by an app uninstall, and replaced in
//! place, without a gap, by an OAuth grant of the same location.

use crate::backend_tests;
use crate::helpers::{Backend, Browser, FakeProvider, TestApp, PASSWORD};
use crate::marketplace::{
    deliver, ghl_key, marketplace_callback, mount_exchange, snapshot, webhook,
};
use serde_json::json;
use wiremock::matchers::{header, method, path, path_regex};
use wiremock::{Mock, ResponseTemplate};

backend_tests!(
    a_location_s_private_token_is_checked_then_served_and_never_refreshed,
    every_refused_private_token_changes_nothing_and_says_why,
    an_oauth_grant_of_the_location_takes_the_private_token_s_place_without_a_gap,
    the_card_stores_a_private_token_and_shows_it_as_one,
);

const STORE: &str = "/api/v1/tenants/acme/connections/gohighlevel/private-token";
const TOKEN: &str = "/api/v1/tenants/acme/connections/gohighlevel/token?account=loc_1";

/// GoHighLevel's location lookup: `pit-good` reads loc_1; any other
/// token, or another location, is refused with 401 as GoHighLevel does.
async fn mount_lookup(fake: &FakeProvider) {
    Mock::given(method("GET"))
        .and(path("/locations/loc_1"))
        .and(header("authorization", "Bearer pit-good"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "location": {"id": "loc_1", "companyId": "c_9", "name": "Main Street Dental"}
        })))
        .with_priority(1)
        .mount(&fake.server)
        .await;
    Mock::given(method("GET"))
        .and(path_regex("^/locations/"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({
            "statusCode": 401, "message": "Invalid JWT"
        })))
        .with_priority(10)
        .mount(&fake.server)
        .await;
}

async fn app_with_lookup(backend: Backend) -> (TestApp, FakeProvider, String) {
    let fake = FakeProvider::start().await;
    // The forced-refresh cooldown on, as in production: a private token's
    // refresh is refused at once all the same.
    let app = crate::marketplace::ghl_app_revoking(
        backend,
        &fake,
        true,
        &[("TETHER_FORCED_REFRESH_COOLDOWN_SECS", "30")],
    )
    .await;
    mount_lookup(&fake).await;
    let key = app.api_key(Some("acme"), false);
    (app, fake, key)
}

async fn store(app: &TestApp, key: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    app.post_json(STORE, key, Some(body)).await
}

async fn a_location_s_private_token_is_checked_then_served_and_never_refreshed(backend: Backend) {
    let (app, fake, key) = app_with_lookup(backend).await;
    let (code, view) = store(&app, &key, json!({"token": "pit-good", "account": "loc_1"})).await;
    assert_eq!(code, 201, "{view}");
    assert_eq!(view["kind"], "private_token");
    assert_eq!(view["status"], "connected");
    assert_eq!(
        view["account"]["name"], "Main Street Dental",
        "named by its location"
    );
    assert_eq!(view["expires_at"], serde_json::Value::Null);
    assert!(!view.to_string().contains("pit-good"), "{view}");
    assert_eq!(fake.calls_to("/locations/loc_1").await, 1, "checked once");

    let (code, token) = app.get_json(TOKEN, &key).await;
    assert_eq!(code, 200, "{token}");
    assert_eq!(token["access_token"], "pit-good");
    assert_eq!(token["kind"], "private_token");
    assert_eq!(token["api_headers"]["Version"], "2021-07-28");

    // A refresh is refused, and nothing is sent to GoHighLevel's token
    // endpoint; nor does the scheduler plan one.
    let res = app
        .api(
            reqwest::Method::POST,
            "/api/v1/tenants/acme/connections/gohighlevel/refresh?account=loc_1",
            &key,
            None,
        )
        .await;
    assert_eq!(res.status(), 409);
    let err: serde_json::Value = res.json().await.unwrap();
    assert_eq!(err["error"]["code"], "not_refreshable", "{err}");
    assert_eq!(fake.calls_to("/oauth/token").await, 0);
    let row = app.default_connection("acme", "gohighlevel").unwrap();
    assert!(row.next_refresh_at.is_none() && row.expires_at.is_none());
    assert_eq!(row.status, "connected", "a refused refresh changes nothing");

    // Storing it again replaces the token (200); a GoHighLevel app
    // UNINSTALL leaves the location's own token alone.
    let (code, view) = store(&app, &key, json!({"token": "pit-good", "account": "loc_1"})).await;
    assert_eq!(code, 200, "{view}");
    let res = deliver(
        &app,
        &webhook("UNINSTALL", "loc_1", "wh-u1"),
        Some(&ghl_key()),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        app.get_json(TOKEN, &key).await.1["access_token"],
        "pit-good"
    );

    // A disconnect forgets it without asking GoHighLevel to revoke it.
    let res = app
        .api(
            reqwest::Method::DELETE,
            "/api/v1/tenants/acme/connections/gohighlevel?account=loc_1",
            &key,
            None,
        )
        .await;
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    assert!(
        body.to_string().contains("forgot its private token"),
        "{body}"
    );
    assert_eq!(fake.calls_to("/oauth/revoke").await, 0);
    assert_eq!(app.get_json(TOKEN, &key).await.0, 404);
}

async fn every_refused_private_token_changes_nothing_and_says_why(backend: Backend) {
    let (app, fake, key) = app_with_lookup(backend).await;
    let before = snapshot(&app);
    let refused: Vec<(serde_json::Value, u16, &str)> = vec![
        (
            json!({"token": "pit-bad", "account": "loc_1"}),
            400,
            "token_refused",
        ),
        (
            json!({"token": "pit-good", "account": "loc_2"}),
            400,
            "token_refused",
        ),
        (json!({"token": "pit-good"}), 400, "invalid_account"),
        (
            json!({"token": "pit good", "account": "loc_1"}),
            400,
            "invalid_request",
        ),
        (
            json!({"token": "", "account": "loc_1"}),
            400,
            "invalid_request",
        ),
        (json!({"account": "loc_1"}), 400, "invalid_request"),
        (
            json!({"token": "pit-good", "account": "loc_1", "x": 1}),
            400,
            "invalid_request",
        ),
        (
            json!({"token": "pit-good", "account": "a\nb"}),
            400,
            "invalid_account",
        ),
        (
            json!({"token": "pit-good", "account": "../x"}),
            400,
            "invalid_account",
        ),
        (json!(["pit-good"]), 400, "invalid_request"),
    ];
    for (body, status, code) in refused {
        let (got, err) = store(&app, &key, body.clone()).await;
        assert_eq!(got, status, "{body}: {err}");
        assert_eq!(err["error"]["code"], code, "{body}: {err}");
        assert!(!err.to_string().contains("pit-"), "no token in {err}");
    }
    // Only the two well-formed requests reached GoHighLevel.
    let lookups = fake
        .requests()
        .await
        .iter()
        .filter(|r| r.url.path().starts_with("/locations/"))
        .count();
    assert_eq!(lookups, 2);
    // A provider that takes no private tokens.
    let (code, err) = app
        .post_json(
            "/api/v1/tenants/acme/connections/acme/private-token",
            &key,
            Some(json!({"token": "pit-good", "account": "loc_1"})),
        )
        .await;
    assert_eq!(
        (code, err["error"]["code"].as_str()),
        (400, Some("unsupported_flow")),
        "{err}"
    );
    // GoHighLevel failing: 502, nothing stored.
    Mock::given(method("GET"))
        .and(path("/locations/loc_7"))
        .respond_with(ResponseTemplate::new(503))
        .with_priority(1)
        .mount(&fake.server)
        .await;
    let (code, err) = store(&app, &key, json!({"token": "pit-good", "account": "loc_7"})).await;
    assert_eq!(code, 502, "{err}");
    assert_eq!(snapshot(&app), before);

    // Another tenant's location, and a location connected through OAuth.
    crate::marketplace::bind(&app, "beta", "loc_1", "c_9");
    let before = snapshot(&app);
    let (code, err) = store(&app, &key, json!({"token": "pit-good", "account": "loc_1"})).await;
    assert_eq!(
        (code, err["error"]["code"].as_str()),
        (409, Some("account_bound_elsewhere")),
        "{err}"
    );
    let beta = app.api_key(Some("beta"), false);
    let (code, err) = app
        .post_json(
            "/api/v1/tenants/beta/connections/gohighlevel/private-token",
            &beta,
            Some(json!({"token": "pit-good", "account": "loc_1"})),
        )
        .await;
    assert_eq!(
        (code, err["error"]["code"].as_str()),
        (409, Some("oauth_connected")),
        "{err}"
    );
    // And a key of another tenant stores nothing for acme.
    let (code, _) = app
        .post_json(
            STORE,
            &beta,
            Some(json!({"token": "pit-good", "account": "loc_1"})),
        )
        .await;
    assert_eq!(code, 403);
    assert_eq!(snapshot(&app), before);
}

async fn an_oauth_grant_of_the_location_takes_the_private_token_s_place_without_a_gap(
    backend: Backend,
) {
    let (app, fake, key) = app_with_lookup(backend).await;
    let (code, view) = store(&app, &key, json!({"token": "pit-good", "account": "loc_1"})).await;
    assert_eq!(code, 201, "{view}");
    let before = app.default_connection("acme", "gohighlevel").unwrap();

    // A Marketplace install names a business the private token does not:
    // held for a claim, and the private token keeps serving.
    mount_exchange(&fake, "code-0", "loc_1", 0).await;
    let res = marketplace_callback(&Browser::new(&app), &fake, "code-0").await;
    assert_eq!(res.status(), 303, "{:?}", res.text().await);
    assert_eq!(crate::marketplace::pending(&app).len(), 1, "held");
    assert_eq!(
        app.get_json(TOKEN, &key).await.1["access_token"],
        "pit-good"
    );

    // The CRM keeps asking for the location's token while its admin
    // connects it with OAuth: every answer is a token, the private one,
    // then the OAuth one.
    let asking = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let poller = {
        let (client, url, key, asking) = (
            app.client.clone(),
            format!("{}{TOKEN}", app.address),
            key.clone(),
            asking.clone(),
        );
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while asking.load(std::sync::atomic::Ordering::SeqCst) || seen.is_empty() {
                let res = client.get(&url).bearer_auth(&key).send().await.unwrap();
                let status = res.status().as_u16();
                let body: serde_json::Value = res.json().await.unwrap();
                seen.push((
                    status,
                    body["access_token"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                ));
            }
            seen
        })
    };
    assert_eq!(
        app.login("owner@acme.example", PASSWORD).await.status(),
        303
    );
    let res = app
        .authorize("gohighlevel", &[("return_to", "/settings/integrations")])
        .await;
    assert_eq!(res.status(), 303);
    let location = res.headers()["location"].to_str().unwrap().to_string();
    let state = url::Url::parse(&location)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.to_string())
        .unwrap();
    mount_exchange(&fake, "code-1", "loc_1", 1).await;
    let res = app
        .get(&format!(
            "/oauth/gohighlevel/callback?code=code-1&state={state}"
        ))
        .await;
    assert_eq!(res.status(), 303, "{:?}", res.text().await);
    asking.store(false, std::sync::atomic::Ordering::SeqCst);
    let seen = poller.await.unwrap();
    assert!(seen.iter().all(|(s, _)| *s == 200), "a gap: {seen:?}");
    assert!(
        seen.iter().all(|(_, t)| t == "pit-good" || t == "ghl-at-1"),
        "{seen:?}"
    );

    let after = app.default_connection("acme", "gohighlevel").unwrap();
    assert_eq!(
        after.id, before.id,
        "the same connection, replaced in place"
    );
    let (_, token) = app.get_json(TOKEN, &key).await;
    assert_eq!(token["access_token"], "ghl-at-1");
    assert_eq!(token["kind"], "oauth");
    assert!(
        after.next_refresh_at.is_some(),
        "an OAuth grant is refreshed"
    );
    // The private token cannot come back over it.
    let (code, err) = store(&app, &key, json!({"token": "pit-good", "account": "loc_1"})).await;
    assert_eq!(
        (code, err["error"]["code"].as_str()),
        (409, Some("oauth_connected")),
        "{err}"
    );
}

async fn the_card_stores_a_private_token_and_shows_it_as_one(backend: Backend) {
    let (app, _fake, key) = app_with_lookup(backend).await;
    assert_eq!(
        app.login("owner@acme.example", PASSWORD).await.status(),
        303
    );
    let page = app.page("/settings/integrations").await;
    assert!(
        page.contains(r#"data-form="private-token""#),
        "offered on the card"
    );
    assert!(page.contains("Use a Private Integration Token instead"));
    let csrf = app.csrf("/settings/integrations").await;
    let form = |token: &'static str| {
        let csrf = csrf.clone();
        let app = &app;
        async move {
            app.post_form(
                "/settings/integrations/gohighlevel/private-token",
                &[("csrf", &csrf), ("account", " loc_1 "), ("token", token)],
            )
            .await
        }
    };
    // Refused: said on the page, nothing stored.
    let before = snapshot(&app);
    assert_eq!(form("pit-bad").await.status(), 303);
    let page = app.page("/settings/integrations").await;
    assert!(
        page.contains("The Private Integration Token was not stored"),
        "{page}"
    );
    assert!(!page.contains("pit-bad"));
    assert_eq!(snapshot(&app).lines().next(), before.lines().next());
    assert_eq!(app.get_json(TOKEN, &key).await.0, 404);

    assert_eq!(form("pit-good").await.status(), 303);
    let page = app.page("/settings/integrations").await;
    assert!(
        page.contains("connected with its Private Integration Token"),
        "{page}"
    );
    assert!(!page.contains("pit-good"), "the token is never shown");
    let card = &page[page.find(r#"data-provider="gohighlevel""#).unwrap()..];
    let item = &card[card.find(r#"data-account="loc_1""#).unwrap()..];
    let item = &item[..item.find("\n    </li>").unwrap()];
    assert!(item.contains("Main Street Dental"), "{item}");
    assert!(item.contains(">Private token</span>"), "{item}");
    assert!(
        !item.contains(r#"data-action="refresh""#),
        "never refreshed: {item}"
    );
    assert_eq!(
        app.get_json(TOKEN, &key).await.1["access_token"],
        "pit-good"
    );
}
