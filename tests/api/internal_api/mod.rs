//! The internal API for the CRM's services (README, "The internal API"): only a
//! valid API key gets in, and only to its own tenant; the token route hands
//! out a fresh token (refreshing it first when it must) or says why not;
//! refresh and disconnect do exactly one thing at the provider; connect links
//! connect a tenant in a browser, once; admin keys provision tenants; the
//! proxy forwards with the connection's token and never leaves the API base;
//! the OpenAPI document is the routes; the metrics count the API's use; a
//! tenant's events are read a page at a time; a connection is checked with
//! its provider.
//! Each family is a file with its own `backend_tests!` list; this file holds
//! the set-ups and requests they share.

mod auth;
mod check;
mod connect_links;
mod connect_sessions;
mod events;
pub(crate) mod integrations;
mod metrics;
mod openapi;
mod provisioning;
mod proxy;
mod proxy_limits;
mod refresh_and_disconnect;
mod scopes;
mod token;

use crate::helpers::{connect, signed_in, spawn_app_with_provider, Backend, FakeProvider, TestApp};
use diesel::prelude::*;
use serde_json::json;
use tether::db::models::tenant::Tenant;
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, ResponseTemplate};

const API: &str = "/api/v1/tenants";

/// An app with tenant `acme` connected to the fake `acme` (tokens at-1 /
/// rt-1, an hour to live) and an API key scoped to `acme`.
async fn connected(backend: Backend) -> (TestApp, FakeProvider, String) {
    let (app, fake) = signed_in(backend, "post").await;
    let res = connect(&app, &fake, "at-1", "rt-1").await;
    assert_eq!(res.status(), 303, "{:?}", res.text().await);
    let key = app.api_key(Some("acme"), false);
    (app, fake, key)
}

/// An app with tenant `acme` (not connected) and a global API key.
async fn unconnected(backend: Backend) -> (TestApp, FakeProvider, String) {
    let fake = FakeProvider::start().await;
    let app = spawn_app_with_provider(backend, &fake, "post").await;
    Tenant::create(&mut app.conn(), "acme", "Acme").unwrap();
    let key = app.api_key(None, false);
    (app, fake, key)
}

fn link_count(app: &TestApp) -> i64 {
    use tether::db::schema::connect_links;
    connect_links::table
        .count()
        .get_result(&mut app.conn())
        .unwrap()
}

/// The provider's answer to a refresh with rt-1: a new access token, no new refresh token.
async fn mount_refresh(fake: &FakeProvider, access: &str) {
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_string_contains("grant_type=refresh_token"))
        .and(body_string_contains("refresh_token=rt-1"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"access_token": access, "expires_in": 7200})),
        )
        .expect(1)
        .named("refresh")
        .mount(&fake.server)
        .await;
}
