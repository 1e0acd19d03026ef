//! Concurrent callers share one refresh: fifty token requests for one
//! connection cause one call to the provider and all get its one new token,
//! and an instance waiting on another's lease takes that refresh's failure as
//! its own outcome instead of sending the refresh again.

use super::refresh_token_of;
use crate::backend_tests;
use crate::helpers::{spawn_app_with_acme, token_at, Backend, FakeProvider, Rotating};
use std::collections::HashSet;
use std::time::{Duration, Instant};
use tether::db::models::connection::Status;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

backend_tests!(
    fifty_concurrent_token_requests_share_one_refresh_and_one_new_token,
    a_waiting_instance_shares_a_failed_refresh_instead_of_sending_another,
);

async fn fifty_concurrent_token_requests_share_one_refresh_and_one_new_token(backend: Backend) {
    let fake = FakeProvider::start().await;
    let rotating = Rotating::new(true);
    rotating.set_delay(Duration::from_millis(200));
    rotating.mount(&fake).await;
    let app = spawn_app_with_acme(backend, &fake, "", &[]).await;
    let t = app.ensure_tenant("acme");
    rotating.grant("rt-0");
    // Expires within the default min_ttl (60 s): every request wants a refresh.
    let c = app.seed(&t.id, "acct-1", "rt-0", 30, 3600);
    let key = app.api_key(None, false);

    let started = Instant::now();
    let requests = (0..50).map(|_| {
        let (client, address, key) = (app.client.clone(), app.address.clone(), key.clone());
        actix_web::rt::spawn(async move {
            let res = token_at(&client, &address, &key, "acme").await;
            let status = res.status().as_u16();
            let body: serde_json::Value = res.json().await.unwrap();
            (status, body)
        })
    });
    let answers = futures_util::future::join_all(requests).await;
    eprintln!("50 concurrent token requests: {:?}", started.elapsed());

    assert_eq!(rotating.calls(), 1, "one call to the token endpoint");
    let tokens: HashSet<String> = answers
        .into_iter()
        .map(|a| {
            let (status, body) = a.unwrap();
            assert_eq!(status, 200, "{body}");
            body["access_token"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(
        tokens,
        HashSet::from(["at-1".to_string()]),
        "one new access token for all"
    );
    let after = app.connection(&c.id);
    assert_eq!(after.version, c.version + 1);
    assert_eq!(refresh_token_of(&app, &after), "rt-1");
    assert!(rotating.reuses().is_empty());
}

/// docs/design.md section 9: concurrent requests share one refresh across
/// processes. An instance waiting on another's lease must take that refresh's
/// failure as its own outcome, not send the refresh again at once (which
/// skips the back-off and, with N instances, multiplies the calls by N).
async fn a_waiting_instance_shares_a_failed_refresh_instead_of_sending_another(backend: Backend) {
    let fake = FakeProvider::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(500).set_delay(Duration::from_millis(500)))
        .mount(&fake.server)
        .await;
    let app = spawn_app_with_acme(backend, &fake, "", &[]).await;
    let (second_address, _second_state) = app.second_instance(&[]).await;
    let t = app.ensure_tenant("acme");
    let c = app.seed(&t.id, "acct-1", "rt-0", -60, 3600);
    let key = app.api_key(None, false);

    let first = {
        let (client, address, key) = (app.client.clone(), app.address.clone(), key.clone());
        actix_web::rt::spawn(async move { token_at(&client, &address, &key, "acme").await })
    };
    // The first instance holds the lease and is talking to the provider.
    app.until(&c.id, |r| r.lease_owner.is_some()).await;
    let second = token_at(&app.client, &second_address, &key, "acme").await;
    let first = first.await.unwrap();
    assert_eq!(first.status(), 503);
    assert_eq!(second.status(), 503, "the failure is shared");
    let after = app.connection(&c.id);
    assert_eq!(after.status(), Status::Error);
    assert_eq!(
        fake.calls_to("/token").await,
        1,
        "one refresh for both instances; failure_count {}",
        after.failure_count
    );
    assert_eq!(after.failure_count, 1);
}
