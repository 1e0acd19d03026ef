//! Refresh and disconnect through the API: POST refresh forces exactly one
//! refresh and answers the status, not the token, unless the last refresh
//! was moments ago (then the provider is not called); DELETE revokes at the
//! provider and leaves the tenant not connected, its tokens erased.

use super::{connected, mount_refresh, API};
use crate::backend_tests;
use crate::helpers::{error_of, spawn_app_with_acme, Backend, FakeProvider, ACCOUNT, PASSWORD};
use serde_json::Value;
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, ResponseTemplate};

backend_tests!(
    post_refresh_forces_exactly_one_refresh,
    forced_refreshes_moments_after_a_refresh_answer_the_current_status_without_a_call,
    delete_revokes_at_the_provider_and_leaves_the_tenant_not_connected,
);

async fn post_refresh_forces_exactly_one_refresh(backend: Backend) {
    let (app, fake, key) = connected(backend).await;
    let version = app.acme_account("acme", ACCOUNT).version;
    mount_refresh(&fake, "at-2").await;
    let res = app
        .api_post(&format!("{API}/acme/connections/acme/refresh"), &key, None)
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "connected");
    assert!(
        !body.to_string().contains("at-2"),
        "status, not the token: {body}"
    );
    assert_eq!(app.acme_account("acme", ACCOUNT).version, version + 1);
    let (_, token) = app
        .get_json(&format!("{API}/acme/connections/acme/token"), &key)
        .await;
    assert_eq!(token["access_token"], "at-2");
    assert_eq!(
        fake.calls_to("/token").await,
        2,
        "the exchange and one refresh"
    );
}

async fn delete_revokes_at_the_provider_and_leaves_the_tenant_not_connected(backend: Backend) {
    let (app, fake, key) = connected(backend).await;
    Mock::given(method("POST"))
        .and(path("/revoke"))
        .and(body_string_contains("token=rt-1"))
        .and(body_string_contains("token_type_hint=refresh_token"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&fake.server)
        .await;
    let res = app
        .api_delete(&format!("{API}/acme/connections/acme"), &key)
        .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "not_connected");
    assert_eq!(fake.calls_to("/revoke").await, 1);
    let (_, status) = app
        .get_json(&format!("{API}/acme/connections/acme"), &key)
        .await;
    assert_eq!(status["status"], "not_connected");
    assert!(status["account"].is_null());
    let (_, list) = app.get_json(&format!("{API}/acme/connections"), &key).await;
    let acme = list["connections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["provider"] == "acme")
        .unwrap()
        .clone();
    assert_eq!(acme["status"], "not_connected");
    assert!(app.acme_account("acme", ACCOUNT).token_ciphertext.is_none());
    let token = app
        .api_get(&format!("{API}/acme/connections/acme/token"), &key)
        .await;
    assert_eq!(error_of(token).await, (404, "not_connected".into()));
}

async fn forced_refreshes_moments_after_a_refresh_answer_the_current_status_without_a_call(
    backend: Backend,
) {
    let fake = FakeProvider::start().await;
    mount_refresh(&fake, "at-2").await;
    let app = spawn_app_with_acme(
        backend,
        &fake,
        "",
        &[("TETHER_FORCED_REFRESH_COOLDOWN_SECS", "30")],
    )
    .await;
    let t = app.ensure_tenant("acme");
    // Refreshed an hour ago: the first forced refresh calls the provider.
    app.seed(&t.id, ACCOUNT, "rt-1", 600, 300);
    let key = app.api_key(Some("acme"), false);
    let refresh = format!("{API}/acme/connections/acme/refresh");
    let res = app.api_post(&refresh, &key, None).await;
    assert_eq!(res.status(), 200);
    assert_eq!(fake.calls_to("/token").await, 1);
    let after_one = app.snapshot();
    // A loop of forced refreshes is answered from the row.
    for i in 0..5 {
        let res = app.api_post(&refresh, &key, None).await;
        assert_eq!(res.status(), 200, "refresh {i}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["status"], "connected");
    }
    assert_eq!(
        fake.calls_to("/token").await,
        1,
        "no call within the cooldown"
    );
    assert_eq!(app.snapshot(), after_one);
    // So is the card's Refresh.
    app.create_admin("acme", "owner@acme.example");
    assert_eq!(
        app.login("owner@acme.example", PASSWORD).await.status(),
        303
    );
    let after_sign_in = app.snapshot();
    let csrf = app.csrf("/settings/integrations").await;
    let res = app
        .post_form("/oauth/acme/refresh", &[("csrf", &csrf)])
        .await;
    assert_eq!(res.status(), 303);
    assert_eq!(fake.calls_to("/token").await, 1, "the card's Refresh");
    assert_eq!(app.snapshot(), after_sign_in);
    let (_, token) = app
        .get_json(&format!("{API}/acme/connections/acme/token"), &key)
        .await;
    assert_eq!(token["access_token"], "at-2");
}
