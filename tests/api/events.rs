//! Events name what they concern (issue 20, point 5): every notification
//! names its connection's account, and the tags the CRM set on the connect
//! link travel with the connect to the connection and are echoed by each of
//! its events; bad tags are a 400 that changes nothing. A connect that makes
//! no connection is `connect_failed` with the link's tags; refreshing that
//! fails without a break past TETHER_REFRESH_FAILING_AFTER is
//! `refresh_failing`, said once per streak, and the refresh that works again
//! is `recovered`. The OpenAPI document describes the payload.

use crate::backend_tests;
use crate::helpers::{
    assert_signed, csrf_in, eventually, mount_exchange, new_browser, outbox, query_param, received,
    spawn_app_with_acme, Backend, FakeProvider, TestApp, ACCOUNT, ACME_ISSUER, WEBHOOK_SECRET,
};
use diesel::prelude::*;
use serde_json::{json, Value};
use tether::db::models::event::Actor;
use tether::db::models::tenant::Tenant;
use tether::refresh::scheduler::Scheduler;
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

backend_tests!(
    every_event_of_a_connection_names_its_account,
    a_links_tags_are_echoed_by_every_event_of_the_connection_it_made,
    bad_tags_are_a_400_that_changes_nothing,
    a_declined_connect_is_connect_failed_with_the_links_tags,
    a_code_exchange_the_provider_refuses_is_connect_failed,
    refreshing_that_keeps_failing_is_announced_once_and_its_recovery_too,
    the_openapi_document_describes_the_event_payload_under_webhooks,
);

/// An app with tenant `acme` (not connected), a global API key, and a
/// webhook receiver answering 200; `extra` adds settings.
async fn with_receiver(
    backend: Backend,
    extra: &[(&str, &str)],
) -> (TestApp, FakeProvider, String, MockServer) {
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hooks"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    let hook = format!("{}/hooks", receiver.uri());
    let mut vars = vec![
        ("TETHER_WEBHOOK_URL", hook.as_str()),
        ("TETHER_WEBHOOK_SECRET", WEBHOOK_SECRET),
    ];
    vars.extend_from_slice(extra);
    let fake = FakeProvider::start().await;
    let app = spawn_app_with_acme(backend, &fake, "", &vars).await;
    Tenant::create(&mut app.conn(), "acme", "Acme").unwrap();
    let key = app.api_key(None, false);
    (app, fake, key, receiver)
}

/// A connect link for `acme` with this body (beside the provider): its URL.
async fn link_with(app: &TestApp, key: &str, extra: Value) -> String {
    let mut body = json!({"provider": "acme"});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let (status, answer) = app
        .post_json("/api/v1/tenants/acme/connect-links", key, Some(body))
        .await;
    assert_eq!(status, 201, "{answer}");
    answer["url"].as_str().unwrap().to_string()
}

/// Follows a link in a new browser: its page, then its form. Returns the
/// browser, the state and the PKCE challenge it was sent off with.
async fn follow(link: &str) -> (reqwest::Client, String, String) {
    let browser = new_browser();
    let page = browser
        .get(link)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = csrf_in(&page).expect("the page's form");
    let res = browser
        .post(link)
        .form(&[("csrf", csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    let location = res.headers()["location"].to_str().unwrap().to_string();
    let state = query_param(&location, "state").expect("state");
    let challenge = query_param(&location, "code_challenge").expect("challenge");
    (browser, state, challenge)
}

/// The provider's redirect back to Tether with `query` (after the state).
async fn callback(app: &TestApp, browser: &reqwest::Client, state: &str, query: &str) -> u16 {
    browser
        .get(format!(
            "{}/oauth/acme/callback?state={state}&iss={ACME_ISSUER}&{query}",
            app.address
        ))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Connects `acme` through a link created with `extra` (tags, say).
async fn connect_by_link(app: &TestApp, fake: &FakeProvider, key: &str, extra: Value) {
    let link = link_with(app, key, extra).await;
    let (browser, state, challenge) = follow(&link).await;
    mount_exchange(fake, &challenge, "at-1", "rt-1").await;
    assert_eq!(callback(app, &browser, &state, "code=the-code").await, 303);
}

/// Every notification queued so far, delivered to the receiver: their
/// payloads (signatures checked), in the order they were received.
async fn delivered(app: &TestApp, receiver: &MockServer) -> Vec<Value> {
    // The app's own delivery loop may get there first; either way all go.
    eventually(10, "every webhook delivered", move || async move {
        tether::webhooks::deliver_due(&app.state).await.unwrap();
        outbox(&mut app.conn())
            .iter()
            .all(|row| row.delivered_at.is_some())
    })
    .await;
    received(receiver).await.iter().map(assert_signed).collect()
}

/// The delivered payloads of `kind`.
fn of_type<'a>(payloads: &'a [Value], kind: &str) -> Vec<&'a Value> {
    payloads.iter().filter(|p| p["type"] == kind).collect()
}

async fn every_event_of_a_connection_names_its_account(backend: Backend) {
    let (app, fake, key, receiver) = with_receiver(backend, &[]).await;
    connect_by_link(&app, &fake, &key, json!({})).await;
    let c = app.acme_connection("acme");
    let payloads = delivered(&app, &receiver).await;
    let connected = of_type(&payloads, "connected");
    assert_eq!(connected.len(), 1, "{payloads:?}");
    let event = connected[0];
    assert_eq!(event["connection_id"], c.id.as_str());
    assert_eq!(
        event["account"],
        json!({"id": ACCOUNT, "name": "Main Street Dental"})
    );
    assert_eq!(event["tags"], Value::Null, "a link without tags");
    // The fields every receiver already reads are all still there.
    for field in ["id", "tenant", "provider", "actor", "detail", "occurred_at"] {
        assert!(event.get(field).is_some(), "{field} in {event}");
    }
    assert_eq!(event["tenant"], "acme");
    assert_eq!(event["actor"], "connect-link");
}

async fn a_links_tags_are_echoed_by_every_event_of_the_connection_it_made(backend: Backend) {
    let (app, fake, key, receiver) = with_receiver(backend, &[]).await;
    let tags = json!({"conversation": "c-42"});
    connect_by_link(&app, &fake, &key, json!({ "tags": tags })).await;
    let c = app.acme_connection("acme");
    assert_eq!(c.tags().map(|t| t.to_value()), Some(tags.clone()));

    Mock::given(method("POST"))
        .and(path("/revoke"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&fake.server)
        .await;
    let res = app
        .api_delete("/api/v1/tenants/acme/connections/acme", &key)
        .await;
    assert_eq!(res.status(), 200, "{:?}", res.text().await);

    let payloads = delivered(&app, &receiver).await;
    for kind in ["connected", "disconnected"] {
        let events = of_type(&payloads, kind);
        assert_eq!(events.len(), 1, "one {kind}: {payloads:?}");
        assert_eq!(events[0]["tags"], tags, "{kind} echoes the link's tags");
        assert_eq!(events[0]["account"]["id"], ACCOUNT, "{kind}");
        assert_eq!(events[0]["connection_id"], c.id.as_str(), "{kind}");
    }
}

async fn bad_tags_are_a_400_that_changes_nothing(backend: Backend) {
    let (app, _fake, key, _receiver) = with_receiver(backend, &[]).await;
    let many: serde_json::Map<String, Value> =
        (0..17).map(|i| (format!("k{i}"), json!("v"))).collect();
    let huge: serde_json::Map<String, Value> = (0..16)
        .map(|i| (format!("k{i}"), json!("v".repeat(200))))
        .collect();
    for tags in [
        json!("c-42"),
        json!(["c-42"]),
        json!(42),
        Value::Object(many),
        json!({"conversation": "x".repeat(257)}),
        json!({"conversation": {"id": "c-42"}}),
        json!({"conversation": null}),
        json!({"k".repeat(65): "v"}),
        Value::Object(huge),
    ] {
        let before = app.snapshot();
        let (status, body) = app
            .post_json(
                "/api/v1/tenants/acme/connect-links",
                &key,
                Some(json!({"provider": "acme", "tags": tags})),
            )
            .await;
        assert_eq!(status, 400, "{tags}: {body}");
        assert_eq!(body["error"]["code"], "invalid_tags", "{tags}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("tag")),
            "a message that says what is wrong: {body}"
        );
        assert_eq!(app.snapshot(), before, "{tags} changed nothing");
    }
}

async fn a_declined_connect_is_connect_failed_with_the_links_tags(backend: Backend) {
    let (app, fake, key, receiver) = with_receiver(backend, &[]).await;
    let tags = json!({"conversation": "c-42", "user": 7});
    let link = link_with(&app, &key, json!({ "tags": tags })).await;
    let (browser, state, _) = follow(&link).await;
    assert_eq!(
        callback(&app, &browser, &state, "error=access_denied").await,
        303
    );
    assert!(app.default_connection("acme", "acme").is_none());
    assert_eq!(fake.calls_to("/token").await, 0);

    let payloads = delivered(&app, &receiver).await;
    let failed = of_type(&payloads, "connect_failed");
    assert_eq!(failed.len(), 1, "{payloads:?}");
    let event = failed[0];
    assert_eq!(event["tags"], tags);
    assert_eq!(event["tenant"], "acme");
    assert_eq!(event["provider"], "acme");
    assert_eq!(event["connection_id"], Value::Null);
    assert_eq!(event["account"], Value::Null);
    assert_eq!(event["actor"], "connect-link");
    assert!(
        event["detail"]
            .as_str()
            .is_some_and(|d| d.contains("access_denied")),
        "{event}"
    );
}

async fn a_code_exchange_the_provider_refuses_is_connect_failed(backend: Backend) {
    let (app, fake, key, receiver) = with_receiver(backend, &[]).await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_string_contains("grant_type=authorization_code"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"error": "invalid_grant"})))
        .expect(1)
        .mount(&fake.server)
        .await;
    let tags = json!({"conversation": "c-7"});
    let link = link_with(&app, &key, json!({ "tags": tags })).await;
    let (browser, state, _) = follow(&link).await;
    let status = callback(&app, &browser, &state, "code=the-secret-code").await;
    assert!(status >= 400, "the person is told it failed: {status}");
    assert!(app.default_connection("acme", "acme").is_none());

    let payloads = delivered(&app, &receiver).await;
    let failed = of_type(&payloads, "connect_failed");
    assert_eq!(failed.len(), 1, "{payloads:?}");
    let event = failed[0];
    assert_eq!(event["tags"], tags);
    assert_eq!(event["connection_id"], Value::Null);
    let detail = event["detail"].as_str().unwrap();
    assert!(detail.contains("refused"), "{detail}");
    assert!(
        !detail.contains("the-secret-code"),
        "never the code: {detail}"
    );
}

/// Moves the connection's failing streak `secs` into the past, and its next
/// refresh an hour out so that a scheduler tick only keeps house.
fn failing_for(app: &TestApp, id: &str, secs: i64) {
    use tether::db::schema::connections;
    let row = app.connection(id);
    let since = row.error_since.expect("a failing streak") - chrono::Duration::seconds(secs);
    diesel::update(connections::table.find(id))
        .set((
            connections::error_since.eq(since),
            connections::next_refresh_at.eq(tether::db::now() + chrono::Duration::hours(1)),
        ))
        .execute(&mut app.conn())
        .unwrap();
}

/// How many events of `kind` the connection has.
fn events_of(app: &TestApp, id: &str, kind: &str) -> i64 {
    use tether::db::schema::events;
    events::table
        .filter(events::connection_id.eq(id))
        .filter(events::kind.eq(kind))
        .count()
        .get_result(&mut app.conn())
        .unwrap()
}

async fn refreshing_that_keeps_failing_is_announced_once_and_its_recovery_too(backend: Backend) {
    let (app, fake, key, receiver) =
        with_receiver(backend, &[("TETHER_REFRESH_FAILING_AFTER", "30s")]).await;
    let tags = json!({"conversation": "c-42"});
    connect_by_link(&app, &fake, &key, json!({ "tags": tags })).await;
    let c = app.acme_connection("acme");
    fake.server.reset().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_string_contains("grant_type=refresh_token"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&fake.server)
        .await;
    let refresh = || tether::refresh::refresh_now(&app.state, &c.id, &Actor::Scheduler, None);

    let err = refresh().await.unwrap_err();
    assert_eq!(err.code(), "refresh_failed");
    let started = app.connection(&c.id).error_since.expect("the streak began");
    // Failing, but not for long yet: nothing to announce.
    failing_for(&app, &c.id, 0);
    Scheduler::new(app.state.clone()).tick().await.unwrap();
    assert_eq!(events_of(&app, &c.id, "refresh_failing"), 0);

    // Past the configured time: announced once.
    failing_for(&app, &c.id, 31);
    Scheduler::new(app.state.clone()).tick().await.unwrap();
    assert_eq!(events_of(&app, &c.id, "refresh_failing"), 1);
    // The streak goes on: another failure keeps its start, and the next
    // rounds say nothing new.
    app.make_due(&c.id);
    refresh().await.unwrap_err();
    let row = app.connection(&c.id);
    assert_eq!(row.status, "error");
    assert_eq!(
        row.error_since,
        Some(started - chrono::Duration::seconds(31))
    );
    failing_for(&app, &c.id, 0);
    Scheduler::new(app.state.clone()).tick().await.unwrap();
    Scheduler::new(app.state.clone()).tick().await.unwrap();
    assert_eq!(
        events_of(&app, &c.id, "refresh_failing"),
        1,
        "once a streak"
    );

    // The provider works again.
    fake.server.reset().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_string_contains("grant_type=refresh_token"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"access_token": "at-2", "expires_in": 3600})),
        )
        .mount(&fake.server)
        .await;
    app.make_due(&c.id);
    let row = refresh().await.unwrap();
    assert_eq!(row.status, "connected");
    assert_eq!(row.error_since, None, "the streak is over");
    assert_eq!(events_of(&app, &c.id, "recovered"), 1);
    // A routine refresh after that is no recovery.
    app.make_due(&c.id);
    refresh().await.unwrap();
    assert_eq!(events_of(&app, &c.id, "recovered"), 1);

    let payloads = delivered(&app, &receiver).await;
    for kind in ["refresh_failing", "recovered"] {
        let events = of_type(&payloads, kind);
        assert_eq!(events.len(), 1, "one {kind}: {payloads:?}");
        assert_eq!(events[0]["connection_id"], c.id.as_str(), "{kind}");
        assert_eq!(events[0]["account"]["id"], ACCOUNT, "{kind}");
        assert_eq!(events[0]["tags"], tags, "{kind}");
    }
    assert!(of_type(&payloads, "refresh_failing")[0]["detail"]
        .as_str()
        .is_some_and(|d| d.contains("failed since")));
    assert!(
        of_type(&payloads, "refresh_failed").is_empty(),
        "transient failures stay quiet"
    );
}

async fn the_openapi_document_describes_the_event_payload_under_webhooks(backend: Backend) {
    let (app, _fake, _key, _receiver) = with_receiver(backend, &[]).await;
    let doc: Value = reqwest::get(format!("{}/api/v1/openapi.json", app.address))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let body = &doc["webhooks"]["event"]["post"]["requestBody"]["content"]["application/json"];
    assert_eq!(
        body["schema"]["$ref"], "#/components/schemas/EventPayload",
        "{}",
        doc["webhooks"]
    );
    let payload = &doc["components"]["schemas"]["EventPayload"];
    let properties = payload["properties"].as_object().expect("properties");
    for field in [
        "id",
        "type",
        "tenant",
        "provider",
        "connection_id",
        "account",
        "tags",
        "actor",
        "detail",
        "occurred_at",
    ] {
        assert!(properties.contains_key(field), "{field} in {payload}");
    }
    let types: Vec<&str> = properties["type"]["enum"]
        .as_array()
        .expect("the type's values")
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for kind in [
        "connected",
        "disconnected",
        "needs_reconnect",
        "connect_failed",
        "refresh_failing",
        "recovered",
    ] {
        assert!(types.contains(&kind), "{kind} in {types:?}");
    }
    assert!(!types.contains(&"refreshed"), "never sent: {types:?}");
    let account = &doc["components"]["schemas"]["EventAccount"]["properties"];
    assert!(account.get("id").is_some() && account.get("name").is_some());
}
