//! API keys and tenant isolation: a request without a valid key is a 401,
//! a key for one tenant gets the same 403 on every route of another tenant
//! (existing or not) and changes nothing, and a global key gets 404 for an
//! unknown tenant and for unknown or disabled providers.

use super::{connected, link_count, API};
use crate::backend_tests;
use crate::helpers::{error_of, service, spawn_app_with, Backend, TestDb, ACCOUNT};
use serde_json::{json, Value};
use tether::db::models::api_key::{ApiKey, Rights};
use tether::db::models::tenant::Tenant;

backend_tests!(
    requests_without_a_valid_api_key_get_401_unauthorized_json,
    a_key_for_one_tenant_gets_403_on_every_route_of_another_tenant_and_changes_nothing,
    a_tenant_scoped_key_gets_the_same_403_for_a_tenant_that_does_not_exist,
    a_global_key_gets_404_for_an_unknown_tenant_and_for_unknown_or_disabled_providers,
    a_client_presenting_many_bad_keys_waits_while_keys_in_use_and_other_clients_go_on,
    a_tenant_key_over_its_rate_waits_while_other_keys_and_all_tenants_keys_go_on,
);

/// Every route of the API for `tenant`, with a body where one is needed.
fn every_route(tenant: &str) -> Vec<(reqwest::Method, String, Option<Value>)> {
    use reqwest::Method;
    let t = format!("{API}/{tenant}");
    vec![
        (Method::GET, format!("{t}/connections"), None),
        (Method::GET, format!("{t}/connections/acme"), None),
        (Method::GET, format!("{t}/connections/acme/token"), None),
        (
            Method::GET,
            format!("{t}/connections/acme/token?min_ttl=0"),
            None,
        ),
        (Method::POST, format!("{t}/connections/acme/refresh"), None),
        (Method::DELETE, format!("{t}/connections/acme"), None),
        (
            Method::POST,
            format!("{t}/connect-links"),
            Some(json!({"provider": "acme"})),
        ),
        (
            Method::GET,
            format!("{t}/proxy/acme/contacts?limit=5"),
            None,
        ),
        (
            Method::POST,
            format!("{t}/proxy/acme/contacts"),
            Some(json!({"name": "Ada"})),
        ),
        (Method::PUT, t.clone(), Some(json!({"name": "Taken Over"}))),
    ]
}

async fn requests_without_a_valid_api_key_get_401_unauthorized_json(backend: Backend) {
    let (app, fake, _) = connected(backend).await;
    let acme = app.tenant("acme");
    // Revoked before its first use: validated keys are cached for a few seconds.
    let (revoked, revoked_secret) = ApiKey::create(
        &mut app.conn(),
        "old",
        Some(&acme.id),
        &Rights::unlimited(false),
    )
    .unwrap();
    ApiKey::revoke(&mut app.conn(), &revoked.prefix).unwrap();
    let url = format!("{}{API}/acme/connections/acme/token", app.address);
    let before = fake.calls().await;

    let none = service().get(&url).send().await.unwrap();
    assert_eq!(error_of(none).await, (401, "unauthorized".into()));
    for authorization in [
        "Basic Y3JtOnNlY3JldA==".to_string(),
        "Bearer".to_string(),
        "Bearer not-a-key".to_string(),
        "bearer tth_abc_def".to_string(),
        format!("Bearer tth_zzzzzz_{}", "x".repeat(43)),
        format!("Bearer {}", revoked_secret.expose()),
    ] {
        let res = service()
            .get(&url)
            .header("authorization", &authorization)
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_of(res).await,
            (401, "unauthorized".into()),
            "{authorization}"
        );
    }
    assert_eq!(fake.calls().await, before);
}

async fn a_key_for_one_tenant_gets_403_on_every_route_of_another_tenant_and_changes_nothing(
    backend: Backend,
) {
    let (app, fake, _) = connected(backend).await;
    Tenant::create(&mut app.conn(), "other", "Other").unwrap();
    let others = app.api_key(Some("other"), false);
    let others_admin = app.api_key(Some("other"), true);
    // The keys work for their own tenant.
    let own = app
        .api_get(&format!("{API}/other/connections"), &others)
        .await;
    assert_eq!(own.status(), 200);
    let before = app.snapshot();
    let provider_calls = fake.calls().await;

    for key in [&others, &others_admin] {
        for (m, p, body) in every_route("acme") {
            let res = app.api(m.clone(), &p, key, body).await;
            let (status, code) = error_of(res).await;
            assert_eq!(status, 403, "{m} {p}");
            // A key without the admin scope is refused for that first on
            // the admin routes; every other refusal is the tenant's.
            let admin_route = code == "missing_scope" && key == &others;
            assert!(code == "forbidden" || admin_route, "{m} {p}: {code}");
        }
    }

    assert_eq!(app.snapshot(), before, "acme's connection is unchanged");
    assert_eq!(
        app.acme_account("acme", ACCOUNT)
            .tokens(&app.ctx.keys)
            .unwrap()
            .unwrap()
            .access_token
            .expose(),
        "at-1"
    );
    let acme = app.tenant("acme");
    assert_eq!(acme.name, "acme", "not renamed");
    assert_eq!(link_count(&app), 0);
    assert_eq!(
        fake.calls().await,
        provider_calls,
        "no refresh, revocation or proxied call reached the provider"
    );
}

async fn a_tenant_scoped_key_gets_the_same_403_for_a_tenant_that_does_not_exist(backend: Backend) {
    let (app, _fake, _) = connected(backend).await;
    Tenant::create(&mut app.conn(), "other", "Other").unwrap();
    let others = app.api_key(Some("other"), false);
    let others_admin = app.api_key(Some("other"), true);
    let before = app.snapshot();
    for key in [&others, &others_admin] {
        for ((m, existing, body), (_, missing, _)) in
            every_route("acme").into_iter().zip(every_route("ghost"))
        {
            let a = app.api(m.clone(), &existing, key, body.clone()).await;
            let (a_status, a_body) = (a.status(), a.text().await.unwrap());
            let b = app.api(m.clone(), &missing, key, body).await;
            let (b_status, b_body) = (b.status(), b.text().await.unwrap());
            assert_eq!(b_status, 403, "{m} {missing}: {b_body}");
            assert_eq!(
                (a_status, a_body),
                (b_status, b_body),
                "{m}: an existing tenant and a missing one look the same"
            );
        }
    }
    assert_eq!(app.snapshot(), before, "no tenant was created");
}

async fn a_global_key_gets_404_for_an_unknown_tenant_and_for_unknown_or_disabled_providers(
    backend: Backend,
) {
    let (app, _fake, _) = connected(backend).await;
    let global = app.api_key(None, false);
    for p in [
        format!("{API}/ghost/connections"),
        format!("{API}/ghost/connections/acme"),
        format!("{API}/ghost/connections/acme/token"),
        format!("{API}/ghost/proxy/acme/contacts"),
    ] {
        let res = app.api_get(&p, &global).await;
        assert_eq!(error_of(res).await, (404, "not_found".into()), "{p}");
    }
    // `nosuch` is in no catalogue; `hubspot` is a preset without credentials here.
    for provider in ["nosuch", "hubspot", "NOT-A-KEY"] {
        for p in [
            format!("{API}/acme/connections/{provider}"),
            format!("{API}/acme/connections/{provider}/token"),
            format!("{API}/acme/proxy/{provider}/contacts"),
        ] {
            let res = app.api_get(&p, &global).await;
            assert_eq!(error_of(res).await, (404, "not_found".into()), "{p}");
        }
        let res = app
            .api_post(
                &format!("{API}/acme/connect-links"),
                &global,
                Some(json!({"provider": provider})),
            )
            .await;
        assert_eq!(error_of(res).await, (404, "not_found".into()), "{provider}");
    }
    assert_eq!(link_count(&app), 0);
}

async fn a_client_presenting_many_bad_keys_waits_while_keys_in_use_and_other_clients_go_on(
    backend: Backend,
) {
    // Behind a proxy, so that each test client is an address of its own.
    let app = spawn_app_with(
        TestDb::new(backend),
        &[("TETHER_TRUSTED_PROXIES", "127.0.0.1/32")],
    )
    .await;
    Tenant::create(&mut app.conn(), "acme", "Acme").unwrap();
    let in_use = app.api_key(None, false);
    let unused = app.api_key(None, false);
    let url = format!("{}{API}/acme/connections", app.address);
    let get = |client: &'static str, key: String| {
        service()
            .get(&url)
            .bearer_auth(key)
            .header("x-forwarded-for", client)
            .send()
    };
    let guesser = "198.51.100.66";
    assert_eq!(get(guesser, in_use.clone()).await.unwrap().status(), 200);
    let before = app.snapshot();
    for i in 0..tether::api_keys::REFUSALS_PER_CLIENT {
        // Well formed, so each would be a lookup; and one key twice, which
        // is refused again without one.
        let guess = format!("tth_guess{}_{}", i / 2, "x".repeat(43));
        let res = get(guesser, guess).await.unwrap();
        assert_eq!(
            error_of(res).await,
            (401, "unauthorized".into()),
            "guess {i}"
        );
    }
    let res = get(guesser, format!("tth_guess_{}", "y".repeat(43)))
        .await
        .unwrap();
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(error_of(res).await, (429, "rate_limited".into()));
    // A key the address used lately goes on working; one it never used waits.
    assert_eq!(get(guesser, in_use.clone()).await.unwrap().status(), 200);
    let res = get(guesser, unused.clone()).await.unwrap();
    assert_eq!(error_of(res).await, (429, "rate_limited".into()));
    // Another address is not held up.
    assert_eq!(get("192.0.2.7", unused).await.unwrap().status(), 200);
    assert_eq!(app.snapshot(), before);
}

async fn a_tenant_key_over_its_rate_waits_while_other_keys_and_all_tenants_keys_go_on(
    backend: Backend,
) {
    let app = spawn_app_with(TestDb::new(backend), &[("TETHER_API_KEY_RATE_LIMIT", "5")]).await;
    Tenant::create(&mut app.conn(), "acme", "Acme").unwrap();
    let runaway = app.api_key(Some("acme"), false);
    let sibling = app.api_key(Some("acme"), false);
    let crm = app.api_key(None, true);
    let url = format!("{API}/acme/connections");
    for i in 0..5 {
        assert_eq!(
            app.api_get(&url, &runaway).await.status(),
            200,
            "request {i}"
        );
    }
    let before = app.snapshot();
    let res = app.api_get(&url, &runaway).await;
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(error_of(res).await, (429, "rate_limited".into()));
    assert_eq!(app.snapshot(), before);
    // The limit is the key's: another key of the tenant is not held up, and
    // the CRM's all-tenants key is never limited.
    assert_eq!(app.api_get(&url, &sibling).await.status(), 200);
    for i in 0..10 {
        assert_eq!(app.api_get(&url, &crm).await.status(), 200, "crm {i}");
    }
}
