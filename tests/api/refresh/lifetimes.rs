//! Refresh tokens with a known lifetime, and tokens that cannot be
//! refreshed: a renewed refresh token moves its lapse date and a coming lapse
//! is announced as a webhook; a provider without refresh answers a refresh
//! with 409 not_refreshable and changes nothing.

use super::refresh_token_of;
use crate::backend_tests;
use crate::helpers::{
    assert_signed, eventually, received, spawn_app_with_acme, Backend, FakeProvider, Rotating,
    WEBHOOK_SECRET,
};
use diesel::prelude::*;
use tether::db::models::connection::Status;
use tether::db::now;
use tether::refresh::scheduler::Scheduler;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

backend_tests!(
    a_renewed_refresh_token_moves_its_lapse_date_and_a_lapse_warning_is_a_webhook,
    a_refresh_of_a_provider_without_refresh_is_a_409_that_changes_nothing,
);

async fn a_renewed_refresh_token_moves_its_lapse_date_and_a_lapse_warning_is_a_webhook(
    backend: Backend,
) {
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hooks"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    let hook = format!("{}/hooks", receiver.uri());
    let fake = FakeProvider::start().await;
    let rotating = Rotating::new(true);
    rotating.mount(&fake).await;
    let app = spawn_app_with_acme(
        backend,
        &fake,
        "refresh_token_lifetime_days = 365",
        &[
            ("TETHER_WEBHOOK_URL", &hook),
            ("TETHER_WEBHOOK_SECRET", WEBHOOK_SECRET),
        ],
    )
    .await;
    let t = app.ensure_tenant("acme");
    rotating.grant("rt-0");
    let c = app.seed(&t.id, "acct-1", "rt-0", 600, 3600);
    {
        use tether::db::schema::connections;
        diesel::update(connections::table.find(&c.id))
            .set(connections::refresh_expires_at.eq(Some(now() + chrono::Duration::days(3))))
            .execute(&mut app.conn())
            .unwrap();
    }
    // The scheduler's housekeeping announces the lapse, as a webhook too.
    Scheduler::new(app.state.clone()).tick().await.unwrap();
    let receiver = &receiver;
    eventually(10, "the lapse webhook", move || async move {
        !received(receiver).await.is_empty()
    })
    .await;
    let payload = assert_signed(&received(receiver).await[0]);
    assert_eq!(payload["type"], "refresh_token_expiring");
    assert_eq!(payload["connection_id"], c.id.as_str());

    // A refresh that brings a new refresh token starts its year afresh.
    app.make_due(&c.id);
    assert_eq!(Scheduler::new(app.state.clone()).tick().await.unwrap(), 1);
    let after = app
        .until(&c.id, |r| r.version > c.version && r.lease_owner.is_none())
        .await;
    let lapses = after.refresh_expires_at.expect("a lapse date");
    assert!(
        (364..=365).contains(&(lapses - now()).num_days()),
        "moved a year ahead: {lapses}"
    );
    assert_eq!(refresh_token_of(&app, &after), "rt-1");
}

async fn a_refresh_of_a_provider_without_refresh_is_a_409_that_changes_nothing(backend: Backend) {
    let fake = FakeProvider::start().await;
    let rotating = Rotating::new(true);
    rotating.mount(&fake).await;
    let app = spawn_app_with_acme(backend, &fake, r#"refresh = "none""#, &[]).await;
    let t = app.ensure_tenant("acme");
    let c = app.seed(&t.id, "acct-1", "rt-0", 600, 3600);
    let key = app.api_key(None, false);
    let res = app
        .client
        .post(format!(
            "{}/api/v1/tenants/acme/connections/acme/refresh",
            app.address
        ))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 409);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_refreshable", "{body}");
    let after = app.connection(&c.id);
    assert_eq!(after.status(), Status::Connected);
    assert_eq!(after.version, c.version);
    assert_eq!(after.updated_at, c.updated_at);
    assert_eq!(after.failure_count, 0);
    assert!(after.last_error.is_none() && after.lease_owner.is_none());
    assert_eq!(rotating.calls(), 0, "nothing sent");
    // The token API hands the stored token out as it is.
    assert_eq!(app.token(&key, "acme").await.status(), 200);
    // And the card offers no Refresh.
    app.create_admin("acme", "owner@acme.example");
    assert_eq!(
        app.login("owner@acme.example", crate::helpers::PASSWORD)
            .await
            .status(),
        303
    );
    let page = app.page("/settings/integrations").await;
    assert!(page.contains(r#"data-provider="acme""#), "{page}");
    assert!(page.contains(r#"data-action="disconnect""#), "{page}");
    assert!(!page.contains(r#"data-action="refresh""#), "{page}");
}
