//! GoHighLevel as the CRM's app backend (issue 20, points 1 and 3): every
//! verified app event relayed to the CRM with its tenant and account, after
//! Tether acted on it; an event for a location nobody holds held until a
//! tenant does; a repeated `webhookId` relayed once; a receiver that is
//! down served when it is back; and one holder per business account across
//! every way a grant arrives. GoHighLevel is faked at the HTTP level and
//! signs with a test key; the CRM is a local receiver.

use crate::backend_tests;
use crate::helpers::{assert_signed, received, Backend, Browser, FakeProvider, TestApp, PASSWORD};
use crate::marketplace::{
    bind, deliver, ghl_app, ghl_key, hold, mount_exchange, pending, snapshot, APP_ID,
};
use diesel::prelude::*;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

backend_tests!(
    every_app_event_is_relayed_with_its_tenant_and_account_after_tether_acted,
    an_event_for_a_location_nobody_holds_is_held_then_relayed_to_the_tenant_that_connects_it,
    a_repeated_webhook_id_is_relayed_once,
    a_receiver_that_is_down_gets_the_event_with_the_same_id_when_it_is_back,
    one_tenant_holds_a_location_whichever_way_its_grant_arrives,
    an_account_s_events_go_in_order_and_a_poison_event_steps_aside,
    a_failing_receiver_is_probed_with_one_delivery_until_it_takes_one,
    an_account_s_settings_override_the_provider_s_and_travel_with_its_events,
);

/// The relayed events the receiver got (`/hooks`), signed, in order.
async fn relayed(fake: &FakeProvider) -> Vec<(serde_json::Value, String)> {
    received(&fake.server)
        .await
        .iter()
        .filter(|r| r.url.path() == "/hooks")
        .map(|r| (assert_signed(r), String::from_utf8(r.body.clone()).unwrap()))
        .filter(|(doc, _)| doc["type"] == "provider_event")
        .collect()
}

/// Runs the outbox until every relayed event is delivered (the server's
/// own delivery loop may be sending some meanwhile).
async fn drain(app: &TestApp) {
    use tether::db::schema::webhook_outbox as o;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        tether::webhooks::deliver_due(&app.state).await.unwrap();
        let left: i64 = o::table
            .filter(o::delivered_at.is_null())
            .filter(o::held_until.is_null())
            .count()
            .get_result(&mut app.conn())
            .unwrap();
        if left == 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{left} never delivered"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// An app event as GoHighLevel signs it, with its body bytes.
async fn send(app: &TestApp, doc: &serde_json::Value) -> serde_json::Value {
    let res = deliver(app, doc, Some(&ghl_key())).await;
    let status = res.status();
    let answer: serde_json::Value = res.json().await.unwrap();
    assert_eq!(status, 200, "{answer}");
    answer
}

fn inbound(location: &str, id: &str) -> serde_json::Value {
    serde_json::json!({
        "type": "InboundMessage", "locationId": location, "contactId": "ct_1",
        "conversationId": "cv_1", "messageType": "SMS", "body": "Is Tuesday free?",
        "direction": "inbound", "appId": APP_ID, "webhookId": id,
        "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    })
}

async fn every_app_event_is_relayed_with_its_tenant_and_account_after_tether_acted(
    backend: Backend,
) {
    let fake = FakeProvider::start().await;
    let app = ghl_app(backend, &fake, false).await;
    let c = bind(&app, "acme", "loc_1", "c_9");
    let message = inbound("loc_1", "wh-m1");
    assert_eq!(send(&app, &message).await["relayed"], "queued");
    let contact = serde_json::json!({
        "type": "ContactCreate", "locationId": "loc_1", "id": "ct_2",
        "appId": APP_ID, "webhookId": "wh-c1",
    });
    assert_eq!(send(&app, &contact).await["relayed"], "queued");
    let rename = serde_json::json!({
        "type": "LocationUpdate", "id": "loc_1", "companyId": "c_9",
        "name": "Main Street Dental", "appId": APP_ID, "webhookId": "wh-l1",
    });
    assert_eq!(send(&app, &rename).await["relayed"], "queued");
    assert_eq!(
        app.connection(&c.id).account_name.as_deref(),
        Some("Main Street Dental"),
        "the rename is applied"
    );
    drain(&app).await;

    let got = relayed(&fake).await;
    let types: Vec<&str> = got
        .iter()
        .map(|(d, _)| d["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["InboundMessage", "ContactCreate", "LocationUpdate"]);
    for ((doc, raw), sent) in got.iter().zip([&message, &contact, &rename]) {
        assert_eq!(doc["provider"], "gohighlevel");
        assert_eq!(doc["tenant"], "acme");
        assert_eq!(doc["account"]["id"], "loc_1");
        assert!(doc["id"].as_str().unwrap().starts_with("pev_"));
        assert!(chrono::DateTime::parse_from_rfc3339(doc["received_at"].as_str().unwrap()).is_ok());
        // GoHighLevel's body, byte for byte.
        let body = serde_json::to_string(sent).unwrap();
        assert!(raw.contains(&format!("\"body\":{body}")), "{raw}");
    }
    assert_eq!(
        got[2].0["account"]["name"], "Main Street Dental",
        "relayed after the rename was applied"
    );
    // The OpenAPI document describes what the CRM receives.
    let doc: serde_json::Value = app
        .client
        .get(format!("{}/api/v1/openapi.json", app.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let schema = &doc["components"]["schemas"]["ProviderEventPayload"]["properties"];
    for field in [
        "id",
        "type",
        "provider",
        "event_type",
        "tenant",
        "account",
        "received_at",
        "body",
    ] {
        assert!(schema.get(field).is_some(), "{field} in {schema}");
        assert!(got[0].0.get(field).is_some(), "{field} relayed");
    }
    assert_eq!(
        doc["webhooks"]["provider_event"]["post"]["requestBody"]["content"]["application/json"]
            ["schema"]["$ref"],
        "#/components/schemas/ProviderEventPayload"
    );
}

async fn an_event_for_a_location_nobody_holds_is_held_then_relayed_to_the_tenant_that_connects_it(
    backend: Backend,
) {
    let fake = FakeProvider::start().await;
    let app = ghl_app(backend, &fake, false).await;
    let answer = send(&app, &inbound("loc_7", "wh-h1")).await;
    assert!(answer["relayed"].as_str().unwrap().starts_with("held"));
    drain(&app).await;
    assert!(
        relayed(&fake).await.is_empty(),
        "nothing goes out for nobody"
    );

    let key = app.api_key(None, true);
    let (code, listed) = app.get_json("/api/v1/provider-events/held", &key).await;
    assert_eq!(code, 200, "{listed}");
    let events = listed["events"].as_array().unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["account_id"], "loc_7");
    assert_eq!(events[0]["event_type"], "InboundMessage");
    assert!(
        !listed.to_string().contains("Is Tuesday free"),
        "no body listed"
    );
    let scoped = app.api_key(Some("acme"), false);
    assert_eq!(
        app.get_json("/api/v1/provider-events/held", &scoped)
            .await
            .0,
        403
    );

    // The location is installed and the CRM assigns it to acme.
    hold(&app, &fake, &Browser::new(&app), "loc_7", 1).await;
    let id = pending(&app)[0].id.clone();
    let res = app
        .client
        .post(format!("{}/api/v1/installs/{id}/assign", app.address))
        .bearer_auth(&key)
        .json(&serde_json::json!({"tenant": "acme"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{:?}", res.text().await);
    drain(&app).await;
    let got = relayed(&fake).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0["tenant"], "acme");
    assert_eq!(got[0].0["account"]["name"], "Dental loc_7");
    assert_eq!(got[0].0["body"]["body"], "Is Tuesday free?");
    assert_eq!(
        app.get_json("/api/v1/provider-events/held", &key).await.1["events"],
        serde_json::json!([])
    );

    // One nobody comes for is dropped once its time is over.
    send(&app, &inbound("loc_8", "wh-h2")).await;
    {
        use tether::db::schema::webhook_outbox as o;
        diesel::update(o::table.filter(o::held_until.is_not_null()))
            .set(o::held_until.eq(Some(tether::db::now() - chrono::Duration::seconds(1))))
            .execute(&mut app.conn())
            .unwrap();
    }
    let dropped = tether::db::models::webhook::drop_expired_held(&mut app.conn(), 100).unwrap();
    assert_eq!(dropped, 1);
    assert_eq!(
        app.get_json("/api/v1/provider-events/held", &key).await.1["events"],
        serde_json::json!([])
    );
}

async fn a_repeated_webhook_id_is_relayed_once(backend: Backend) {
    let fake = FakeProvider::start().await;
    let app = ghl_app(backend, &fake, false).await;
    bind(&app, "acme", "loc_1", "c_9");
    let message = inbound("loc_1", "wh-r1");
    assert_eq!(send(&app, &message).await["relayed"], "queued");
    let before = snapshot(&app);
    let again = send(&app, &message).await;
    assert_eq!(again["relayed"], "no");
    assert!(again["message"]
        .as_str()
        .unwrap()
        .contains("received before"));
    assert_eq!(snapshot(&app), before, "the repeat changes nothing");
    // Without a webhookId each delivery is relayed as GoHighLevel sent it.
    let mut bare = inbound("loc_1", "unused");
    bare.as_object_mut().unwrap().remove("webhookId");
    send(&app, &bare).await;
    send(&app, &bare).await;
    drain(&app).await;
    assert_eq!(relayed(&fake).await.len(), 3);
}

async fn a_receiver_that_is_down_gets_the_event_with_the_same_id_when_it_is_back(backend: Backend) {
    let fake = FakeProvider::start().await;
    let down = wiremock::MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/relay"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .mount(&down)
        .await;
    Mock::given(method("POST"))
        .and(path("/relay"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&down)
        .await;
    let relay_url = format!("{}/relay", down.uri());
    let app =
        crate::marketplace::ghl_app_with(backend, &fake, &[("TETHER_RELAY_URL", &relay_url)]).await;
    bind(&app, "acme", "loc_1", "c_9");
    send(&app, &inbound("loc_1", "wh-d1")).await;
    {
        use tether::db::schema::webhook_outbox as o;
        // The refusal recorded (by this call or the server's own loop).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            tether::webhooks::deliver_due(&app.state).await.unwrap();
            let attempts: i32 = o::table.select(o::attempts).first(&mut app.conn()).unwrap();
            if attempts == 1 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "never attempted");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        diesel::update(o::table.filter(o::delivered_at.is_null()))
            .set(o::next_attempt_at.eq(tether::db::now()))
            .execute(&mut app.conn())
            .unwrap();
    }
    drain(&app).await;
    let got = received(&down).await;
    assert_eq!(got.len(), 2, "refused once, then taken");
    let (first, second) = (assert_signed(&got[0]), assert_signed(&got[1]));
    assert_eq!(
        first["id"], second["id"],
        "a redelivery carries the same id"
    );
    assert_eq!(second["tenant"], "acme");
    assert!(
        relayed(&fake).await.is_empty(),
        "relayed events go to TETHER_RELAY_URL, not the events URL"
    );
}

async fn one_tenant_holds_a_location_whichever_way_its_grant_arrives(backend: Backend) {
    let fake = FakeProvider::start().await;
    let app = ghl_app(backend, &fake, false).await;
    let held = bind(&app, "acme", "loc_1", "c_9");

    // beta connects loc_1 through its own callback.
    assert_eq!(
        app.login("owner@beta.example", PASSWORD).await.status(),
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
    mount_exchange(&fake, "beta-code", "loc_1", 5).await;
    let before = snapshot(&app);
    let res = app
        .get(&format!(
            "/oauth/gohighlevel/callback?code=beta-code&state={state}"
        ))
        .await;
    assert_eq!(res.status(), 409);
    let page = res.text().await.unwrap();
    assert!(page.contains("connected to another business"), "{page}");
    assert!(!page.contains("ghl-at-5"), "{page}");
    // The state was spent; nothing else changed.
    assert_eq!(snapshot(&app).lines().last(), before.lines().last());
    assert!(app.default_connection("beta", "gohighlevel").is_none());

    // beta imports tokens for loc_1.
    let key = app.api_key(Some("beta"), true);
    let import = serde_json::json!({
        "access_token": "imported-at", "refresh_token": "imported-rt",
        "expires_in": 3600, "account": {"id": "loc_1"},
    });
    let before = snapshot(&app);
    let (code, err) = app
        .post_json(
            "/api/v1/tenants/beta/connections/gohighlevel/import",
            &key,
            Some(import.clone()),
        )
        .await;
    assert_eq!(code, 409, "{err}");
    assert_eq!(err["error"]["code"], "account_bound_elsewhere");
    assert_eq!(snapshot(&app), before);

    // After acme disconnects, acme holds nothing: beta may connect it.
    let acme_key = app.api_key(Some("acme"), false);
    let res = app
        .api(
            reqwest::Method::DELETE,
            "/api/v1/tenants/acme/connections/gohighlevel?account=loc_1",
            &acme_key,
            None,
        )
        .await;
    assert_eq!(res.status(), 200);
    assert!(!app.connection(&held.id).has_tokens());
    let (code, body) = app
        .post_json(
            "/api/v1/tenants/beta/connections/gohighlevel/import",
            &key,
            Some(import.clone()),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    // An install of loc_1 goes neither to its former tenant nor to beta,
    // whose imported grant names no business to re-authorise: held.
    let browser = Browser::new(&app);
    mount_exchange(&fake, "code-9", "loc_1", 9).await;
    let res = crate::marketplace::marketplace_callback(&browser, &fake, "code-9").await;
    assert_eq!(res.status(), 303);
    assert_eq!(pending(&app).len(), 1, "held for a claim");
    assert!(!app.connection(&held.id).has_tokens(), "acme gets nothing");
    let beta_key = app.api_key(Some("beta"), false);
    let (_, token) = app
        .get_json(
            "/api/v1/tenants/beta/connections/gohighlevel/token?account=loc_1",
            &beta_key,
        )
        .await;
    assert_eq!(
        token["access_token"], "imported-at",
        "beta's grant untouched"
    );

    // An install held for loc_5, which acme connects meanwhile: the CRM
    // cannot assign it to beta.
    hold(&app, &fake, &Browser::new(&app), "loc_5", 10).await;
    bind(&app, "acme", "loc_5", "c_9");
    let id = pending(&app)
        .into_iter()
        .find(|p| p.account_id == "loc_5")
        .unwrap()
        .id;
    let admin = app.api_key(None, true);
    let before = snapshot(&app);
    let res = app
        .client
        .post(format!("{}/api/v1/installs/{id}/assign", app.address))
        .bearer_auth(&admin)
        .json(&serde_json::json!({"tenant": "beta"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 409);
    let err: serde_json::Value = res.json().await.unwrap();
    assert_eq!(err["error"]["code"], "account_bound_elsewhere");
    assert_eq!(snapshot(&app), before, "still held, nothing changed");
}

/// An instance without a server (so without a delivery loop of its own)
/// relaying to `receiver`, and its database (dropped with the test).
async fn quiet_instance(
    backend: Backend,
    receiver: &wiremock::MockServer,
) -> (std::sync::Arc<tether::app::App>, crate::helpers::TestDb) {
    let db = crate::helpers::TestDb::new(backend);
    let fake = FakeProvider::start().await;
    crate::helpers::write_providers(&db, &fake.providers_toml("post"));
    let hook = format!("{}/relay", receiver.uri());
    let ctx = tether::startup::prepare(crate::helpers::instance_settings(
        &db,
        &[
            ("TETHER_RELAY_URL", &hook),
            ("TETHER_WEBHOOK_SECRET", crate::helpers::WEBHOOK_SECRET),
        ],
    ))
    .unwrap();
    (std::sync::Arc::new(ctx.app()), db)
}

/// Queues an app event of `account` whose body says `word`, as the relay does.
fn queue(app: &tether::app::App, account: &str, word: &str) {
    let body =
        serde_json::value::RawValue::from_string(format!("{{\"word\":\"{word}\"}}")).unwrap();
    let mut conn = app.pool.get().unwrap();
    tether::db::models::webhook::enqueue_relay(
        &mut conn,
        &format!("pev_{word}"),
        &format!("{{\"id\":\"pev_{word}\",\"type\":\"provider_event\",\"body\":{body}}}"),
        &tether::ids::ProviderKey::known("gohighlevel"),
        Some(&tether::ids::AccountId::known(account)),
        None,
    )
    .unwrap();
}

/// Makes every undelivered row due now, as time passing would.
fn all_due(app: &tether::app::App) {
    use tether::db::schema::webhook_outbox as o;
    diesel::update(o::table.filter(o::delivered_at.is_null()))
        .set(o::next_attempt_at.eq(tether::db::now()))
        .execute(&mut app.pool.get().unwrap())
        .unwrap();
}

/// The words of the bodies the receiver got, in order.
async fn words(receiver: &wiremock::MockServer) -> Vec<String> {
    received(receiver)
        .await
        .iter()
        .map(|r| {
            assert_signed(r)["body"]["word"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

async fn an_account_s_events_go_in_order_and_a_poison_event_steps_aside(backend: Backend) {
    let receiver = wiremock::MockServer::start().await;
    Mock::given(method("POST"))
        .and(wiremock::matchers::body_string_contains("poison"))
        .respond_with(ResponseTemplate::new(422))
        .mount(&receiver)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    let (app, _db) = quiet_instance(backend, &receiver).await;
    for (account, word) in [
        ("loc_1", "a1"),
        ("loc_1", "poison"),
        ("loc_1", "a2"),
        ("loc_2", "b1"),
    ] {
        queue(&app, account, word);
    }
    tether::webhooks::deliver_due(&app).await.unwrap();
    let got = words(&receiver).await;
    assert!(
        got.contains(&"a1".to_string()) && got.contains(&"b1".to_string()),
        "{got:?}"
    );
    assert!(
        !got.contains(&"a2".to_string()),
        "a2 waits behind the refused one: {got:?}"
    );
    // The refused one is retried; a2 waits until its third failure...
    let step_aside = tether::db::models::webhook::STEP_ASIDE_AFTER;
    for _ in 1..step_aside {
        all_due(&app);
        tether::webhooks::deliver_due(&app).await.unwrap();
    }
    let got = words(&receiver).await;
    let refused = got.iter().filter(|w| *w == "poison").count() as i32;
    assert_eq!(refused, step_aside, "{got:?}");
    assert!(!got.contains(&"a2".to_string()), "{got:?}");
    // ...then it steps aside: a2 goes (the refused one is still retried).
    all_due(&app);
    tether::webhooks::deliver_due(&app).await.unwrap();
    let got = words(&receiver).await;
    let a2 = got
        .iter()
        .position(|w| w == "a2")
        .expect("a2 delivered at last");
    let poison_before = got[..a2].iter().filter(|w| *w == "poison").count() as i32;
    assert!(poison_before >= step_aside, "{got:?}");
    assert!(got.iter().position(|w| w == "a1").unwrap() < a2, "in order");
}

async fn a_failing_receiver_is_probed_with_one_delivery_until_it_takes_one(backend: Backend) {
    let receiver = wiremock::MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(6)
        .mount(&receiver)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    let (app, _db) = quiet_instance(backend, &receiver).await;
    for i in 0..5 {
        queue(&app, &format!("loc_{i}"), &format!("w{i}"));
    }
    assert_eq!(tether::webhooks::deliver_due(&app).await.unwrap(), 0);
    assert_eq!(
        received(&receiver).await.len(),
        5,
        "the first round tries each"
    );
    all_due(&app);
    assert_eq!(tether::webhooks::deliver_due(&app).await.unwrap(), 0);
    assert_eq!(
        received(&receiver).await.len(),
        6,
        "then one probe, not five"
    );
    all_due(&app);
    assert_eq!(
        tether::webhooks::deliver_due(&app).await.unwrap(),
        5,
        "a probe taken lets the rest go"
    );
    let mut got = words(&receiver).await[6..].to_vec();
    got.sort();
    assert_eq!(got, ["w0", "w1", "w2", "w3", "w4"]);
}

async fn an_account_s_settings_override_the_provider_s_and_travel_with_its_events(
    backend: Backend,
) {
    let fake = FakeProvider::start().await;
    let app = ghl_app(backend, &fake, false).await;
    bind(&app, "acme", "loc_1", "c_9");
    bind(&app, "acme", "loc_2", "c_9");
    let key = app.api_key(Some("acme"), false);
    let base = "/api/v1/tenants/acme/integrations/gohighlevel";
    let (code, _) = app
        .put_json(
            base,
            &key,
            serde_json::json!({"enabled": true, "settings": {
                "default_pipeline_id": "pipe-shared", "default_stage_id": "stage-shared"}}),
        )
        .await;
    assert_eq!(code, 200);
    // Never written: the provider's settings apply.
    let (code, view) = app.get_json(&format!("{base}/accounts/loc_2"), &key).await;
    assert_eq!(code, 200, "{view}");
    assert_eq!(view["settings"], serde_json::json!({}));
    assert_eq!(view["effective"]["default_pipeline_id"], "pipe-shared");
    // loc_1's own pipeline overrides the provider's; its stage does not.
    let (code, view) = app
        .put_json(
            &format!("{base}/accounts/loc_1"),
            &key,
            serde_json::json!({"settings": {"default_pipeline_id": "pipe-loc1"}}),
        )
        .await;
    assert_eq!(code, 200, "{view}");
    assert_eq!(view["effective"]["default_pipeline_id"], "pipe-loc1");
    assert_eq!(view["effective"]["default_stage_id"], "stage-shared");
    let changed = crate::marketplace::events(&app, "gohighlevel");
    let last = changed.last().unwrap();
    assert_eq!(last.0, "settings_changed");
    assert_eq!(last.2.as_deref(), Some("account loc_1"));
    // Refusals change nothing.
    let before = snapshot(&app);
    for (path, body, code) in [
        (
            format!("{base}/accounts/loc_1"),
            serde_json::json!({"settings": {"nope": 1}}),
            "invalid_settings",
        ),
        (
            format!("{base}/accounts/loc_1"),
            serde_json::json!({"settings": []}),
            "invalid_settings",
        ),
        (
            format!("{base}/accounts/%0A"),
            serde_json::json!({"settings": {}}),
            "invalid_account",
        ),
    ] {
        let (status, err) = app.put_json(&path, &key, body).await;
        assert_eq!(status, 400, "{path}: {err}");
        assert_eq!(err["error"]["code"], code, "{path}: {err}");
    }
    assert_eq!(snapshot(&app), before);
    // The relay carries each account's effective settings.
    send(&app, &inbound("loc_1", "wh-s1")).await;
    send(&app, &inbound("loc_2", "wh-s2")).await;
    drain(&app).await;
    let got = relayed(&fake).await;
    let of = |loc: &str| {
        got.iter()
            .find(|(d, _)| d["account"]["id"] == loc)
            .map(|(d, _)| d["settings"]["default_pipeline_id"].clone())
            .unwrap()
    };
    assert_eq!(of("loc_1"), "pipe-loc1");
    assert_eq!(of("loc_2"), "pipe-shared");
    // So does the token API, warm or not, and a change shows at once.
    let (app, key) = (&app, &key);
    let token = |account: &'static str| async move {
        let path = format!("/api/v1/tenants/acme/connections/gohighlevel/token?account={account}");
        let (code, body) = app.get_json(&path, key).await;
        assert_eq!(code, 200, "{body}");
        let s = &body["settings"];
        format!("{} {}", s["default_pipeline_id"], s["default_stage_id"])
    };
    assert_eq!(token("loc_1").await, r#""pipe-loc1" "stage-shared""#);
    assert_eq!(token("loc_1").await, r#""pipe-loc1" "stage-shared""#);
    assert_eq!(token("loc_2").await, r#""pipe-shared" "stage-shared""#);
    let (code, _) = app
        .put_json(
            &format!("{base}/accounts/loc_1"),
            key,
            serde_json::json!({"settings": {"default_pipeline_id": "pipe-loc1b"}}),
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(token("loc_1").await, r#""pipe-loc1b" "stage-shared""#);
    let (code, body) = app
        .put_json(
            base,
            key,
            serde_json::json!({"enabled": true, "settings": {"default_stage_id": "stage-2"}}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(token("loc_1").await, r#""pipe-loc1b" "stage-2""#);
    assert_eq!(token("loc_2").await, r#"null "stage-2""#);
    // Another tenant's key reads none of it.
    let other = app.api_key(Some("beta"), false);
    assert_eq!(
        app.get_json(&format!("{base}/accounts/loc_1"), &other)
            .await
            .0,
        403
    );
}
