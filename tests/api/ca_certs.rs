//! An operator's CA (issue 18, point 5): providers and webhook receivers
//! behind a certificate from a CA no bundle knows are refused with a
//! certificate error, and reached once `TETHER_CA_CERTS` names that CA. The
//! same refresh and the same delivery, on one database, from an instance
//! without it and then one with it (instances with no server, so no loop of
//! their own races the test).

use crate::backend_tests;
use crate::helpers::{
    assert_signed, instance_settings, outbox, received, seed_on, write_providers, Backend,
    FakeProvider, TestCa, TestDb, TlsProxy, WEBHOOK_SECRET,
};
use diesel::prelude::*;
use std::sync::Arc;
use tether::app::App;
use tether::db::models::event::Actor;
use tether::db::models::tenant::Tenant;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

backend_tests!(refreshes_and_webhooks_over_https_trust_the_ca_named_by_tether_ca_certs,);

/// An instance on `db` (acme from its providers file), webhooks to `hook`;
/// `extra` adds settings.
fn instance(db: &TestDb, hook: &str, extra: &[(&str, &str)]) -> Arc<App> {
    let mut vars = vec![
        ("TETHER_WEBHOOK_URL", hook),
        ("TETHER_WEBHOOK_SECRET", WEBHOOK_SECRET),
    ];
    vars.extend_from_slice(extra);
    let ctx = tether::startup::prepare(instance_settings(db, &vars)).expect("prepare");
    Arc::new(ctx.app())
}

async fn refreshes_and_webhooks_over_https_trust_the_ca_named_by_tether_ca_certs(backend: Backend) {
    let ca = TestCa::new();
    let fake = FakeProvider::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "access_token": "at-1",
            "refresh_token": "rt-1",
            "expires_in": 3600,
            "token_type": "bearer",
        })))
        .mount(&fake.server)
        .await;
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hooks"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    let provider_tls = TlsProxy::start(&ca, *fake.server.address()).await;
    let receiver_tls = TlsProxy::start(&ca, *receiver.address()).await;
    let hook = format!("{}/hooks", receiver_tls.uri());

    let db = TestDb::new(backend);
    let toml = fake
        .providers_toml("post")
        .replace(&fake.server.uri(), &provider_tls.uri());
    assert!(toml.contains("token_url = \"https://127.0.0.1:"));
    write_providers(&db, &toml);
    let ca_file = ca.write_pem(db.data_dir());

    // Without TETHER_CA_CERTS: the bundled roots only.
    let without = instance(&db, &hook, &[]);
    let c = {
        let mut conn = without.pool.get().unwrap();
        let t = Tenant::create(&mut conn, "acme", "acme").unwrap();
        tether::db::models::webhook::enqueue(
            &mut conn,
            "ca-test",
            None,
            r#"{"id":"ca-test","type":"ca_test"}"#,
        )
        .unwrap();
        seed_on(&mut conn, &without.keys, &t.id, "acct-1", "rt-0", -60, -1)
    };
    let err = tether::refresh::refresh_now(&without, &c.id, &Actor::Scheduler, None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "refresh_failed");
    let why: Option<String> = {
        use tether::db::schema::connections as k;
        k::table
            .find(c.id.as_str())
            .select(k::last_error)
            .first(&mut without.pool.get().unwrap())
            .unwrap()
    };
    let why = why.unwrap_or_default();
    assert!(why.contains("certificate"), "a certificate error: {why}");
    assert_eq!(fake.calls().await, 0, "no request reached the provider");
    assert_eq!(tether::webhooks::deliver_due(&without).await.unwrap(), 0);
    assert!(received(&receiver).await.is_empty());
    let rows = outbox(&mut without.pool.get().unwrap());
    let why = rows[0].last_error.clone().unwrap_or_default();
    assert!(why.contains("certificate"), "a certificate error: {why}");
    drop(without);

    // With it: the same refresh and the same delivery go through.
    let with = instance(&db, &hook, &[("TETHER_CA_CERTS", &ca_file)]);
    let refreshed = tether::refresh::refresh_now(&with, &c.id, &Actor::Scheduler, None)
        .await
        .expect("the refresh reaches the provider over https");
    assert_eq!(refreshed.id, c.id);
    assert_eq!(fake.refresh_calls().await, 1);
    {
        use tether::db::schema::webhook_outbox as o;
        diesel::update(o::table)
            .set(o::next_attempt_at.eq(tether::db::now()))
            .execute(&mut with.pool.get().unwrap())
            .unwrap();
    }
    // The refresh that worked after the failing one also says `recovered`.
    assert_eq!(tether::webhooks::deliver_due(&with).await.unwrap(), 2);
    let delivered = received(&receiver).await;
    let mut types: Vec<String> = delivered
        .iter()
        .map(|r| assert_signed(r)["type"].as_str().unwrap().to_string())
        .collect();
    types.sort();
    assert_eq!(types, ["ca_test", "recovered"]);
}
