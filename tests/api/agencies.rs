//! GoHighLevel agencies: an agency (Company) connection mints each
//! location's token (`POST /oauth/locationToken`) on the token API's first
//! request for the location and, for bulk installs, through the scheduler;
//! each location is then an account of its own. GoHighLevel is faked at the
//! HTTP level with what its API reference documents.

use crate::backend_tests;
use crate::helpers::{query_param, Backend, TestApp};
use crate::presets::{app_with_preset, authorize_url};
use tether::platforms::gohighlevel::agency::mint_approved;
use tether::refresh::scheduler::Scheduler;
use wiremock::matchers::{body_string_contains, header, method, path, query_param as q};
use wiremock::{Mock, MockServer, ResponseTemplate};

backend_tests!(
    an_agency_mints_a_location_token_once_on_first_request_and_serves_it_as_its_own_account,
    a_location_token_minted_without_a_refresh_token_is_minted_again_by_the_scheduler_when_due,
    the_location_minter_mints_the_approved_locations_of_a_bulk_install_once,
    installed_locations_are_listed_with_the_agency_token_and_what_the_tenant_holds,
    a_location_the_agency_may_not_serve_or_cannot_name_changes_nothing_and_says_why,
);

/// GoHighLevel pointed at `fake`, its tokens exchanged as the agency's.
async fn agency_app(backend: Backend, fake: &MockServer) -> TestApp {
    let base = fake.uri();
    app_with_preset(
        backend,
        "gohighlevel",
        &format!(
            "authorize_url = \"{base}/oauth/chooselocation\"\ntoken_url = \"{base}/oauth/token\"\napi_base_url = \"{base}\"\nuserinfo_url = \"{base}/locations/{{locationId}}\"\ntoken_params = {{ user_type = \"Company\" }}\n"
        ),
    )
    .await
}

/// Connects the agency (company `c_9`); `extra` joins its token response.
async fn connect_agency(app: &TestApp, fake: &MockServer, extra: serde_json::Value) {
    let url = authorize_url(app, "gohighlevel").await;
    let mut answer = serde_json::json!({
        "access_token": "agency-at", "token_type": "Bearer", "expires_in": 86399,
        "refresh_token": "agency-rt", "scope": "oauth.write oauth.readonly locations.readonly",
        "userType": "Company", "companyId": "c_9", "userId": "u_1"
    });
    answer
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .and(body_string_contains("user_type=Company"))
        .and(body_string_contains("grant_type=authorization_code"))
        .respond_with(ResponseTemplate::new(200).set_body_json(answer))
        .expect(1)
        .mount(fake)
        .await;
    let state = query_param(&url, "state").unwrap();
    let res = app
        .get(&format!("/oauth/gohighlevel/callback?code=c&state={state}"))
        .await;
    assert_eq!(res.status(), 303, "{:?}", res.text().await);
}

/// A location token as `POST /oauth/locationToken` answers it.
fn location_token(location: &str, access: &str, refresh: Option<&str>) -> serde_json::Value {
    let mut t = serde_json::json!({
        "access_token": access, "token_type": "Bearer", "expires_in": 86399,
        "scope": "contacts.readonly locations.readonly", "userType": "Location",
        "companyId": "c_9", "locationId": location, "userId": "u_1"
    });
    if let Some(rt) = refresh {
        t["refresh_token"] = rt.into();
    }
    t
}

async fn mount_location_name(fake: &MockServer, location: &str, name: &str) {
    Mock::given(method("GET"))
        .and(path(format!("/locations/{location}")))
        .and(header("version", "2021-07-28"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            serde_json::json!({"location": {"id": location, "companyId": "c_9", "name": name}}),
        ))
        .mount(fake)
        .await;
}

async fn token_for(app: &TestApp, key: &str, query: &str) -> reqwest::Response {
    app.client
        .get(format!(
            "{}/api/v1/tenants/acme/connections/gohighlevel/token?{query}",
            app.address
        ))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
}

/// Requests `POST /oauth/locationToken` received.
async fn mints(fake: &MockServer) -> usize {
    fake.received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path() == "/oauth/locationToken")
        .count()
}

async fn an_agency_mints_a_location_token_once_on_first_request_and_serves_it_as_its_own_account(
    backend: Backend,
) {
    let fake = MockServer::start().await;
    let app = agency_app(backend, &fake).await;
    connect_agency(&app, &fake, serde_json::json!({})).await;
    let agency = app.default_connection("acme", "gohighlevel").unwrap();
    assert_eq!(agency.account_id, "c_9", "an agency token is its company");
    Mock::given(method("POST"))
        .and(path("/oauth/locationToken"))
        .and(header("authorization", "Bearer agency-at"))
        .and(header("version", "2021-07-28"))
        .and(body_string_contains("companyId=c_9"))
        .and(body_string_contains("locationId=loc_1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(location_token(
            "loc_1",
            "loc1-at",
            Some("loc1-rt"),
        )))
        .mount(&fake)
        .await;
    mount_location_name(&fake, "loc_1", "Downtown Dental").await;
    let key = app.api_key(Some("acme"), false);
    // Concurrent first requests: one mint.
    let answers =
        futures_util::future::join_all((0..4).map(|_| token_for(&app, &key, "location=loc_1")))
            .await;
    for res in answers {
        assert_eq!(res.status(), 200);
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(body["access_token"], "loc1-at");
        assert_eq!(body["account"]["id"], "loc_1");
        assert_eq!(body["account"]["name"], "Downtown Dental");
        assert_eq!(body["api_headers"]["Version"], "2021-07-28");
    }
    assert_eq!(token_for(&app, &key, "location=loc_1").await.status(), 200);
    assert_eq!(mints(&fake).await, 1, "stored after the first mint");
    // The location is an account of its own: named, served by `account` too.
    let res = token_for(&app, &key, "account=loc_1").await;
    assert_eq!(
        res.json::<serde_json::Value>().await.unwrap()["access_token"],
        "loc1-at"
    );
    let loc = tether::db::models::connection::Connection::for_account(
        &mut app.conn(),
        &agency.tenant_id,
        &tether::ids::ProviderKey::known("gohighlevel"),
        &tether::ids::AccountId::known("loc_1"),
    )
    .unwrap()
    .unwrap();
    assert_eq!(loc.metadata()["agency"], "c_9");
    assert!(
        loc.next_refresh_at.is_some(),
        "refreshed like any connection"
    );
    assert_eq!(
        app.default_connection("acme", "gohighlevel")
            .unwrap()
            .account_id,
        "c_9",
        "the agency stays the default"
    );
}

async fn a_location_token_minted_without_a_refresh_token_is_minted_again_by_the_scheduler_when_due(
    backend: Backend,
) {
    let fake = MockServer::start().await;
    let app = agency_app(backend, &fake).await;
    connect_agency(&app, &fake, serde_json::json!({})).await;
    mount_location_name(&fake, "loc_1", "Downtown Dental").await;
    Mock::given(method("POST"))
        .and(path("/oauth/locationToken"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(location_token("loc_1", "loc1-at", None)),
        )
        .up_to_n_times(1)
        .mount(&fake)
        .await;
    let key = app.api_key(Some("acme"), false);
    assert_eq!(token_for(&app, &key, "location=loc_1").await.status(), 200);
    Mock::given(method("POST"))
        .and(path("/oauth/locationToken"))
        .and(header("authorization", "Bearer agency-at"))
        .and(body_string_contains("locationId=loc_1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(location_token(
            "loc_1",
            "loc1-at-2",
            None,
        )))
        .mount(&fake)
        .await;
    let agency = app.default_connection("acme", "gohighlevel").unwrap();
    let loc = tether::db::models::connection::Connection::for_account(
        &mut app.conn(),
        &agency.tenant_id,
        &tether::ids::ProviderKey::known("gohighlevel"),
        &tether::ids::AccountId::known("loc_1"),
    )
    .unwrap()
    .unwrap();
    app.make_due(&loc.id);
    Scheduler::new(app.state.clone()).tick().await.unwrap();
    let after = app.until(&loc.id, |c| c.version > loc.version).await;
    assert_eq!(after.status, "connected", "{after:?}");
    let res = token_for(&app, &key, "location=loc_1").await;
    assert_eq!(
        res.json::<serde_json::Value>().await.unwrap()["access_token"],
        "loc1-at-2"
    );
    assert_eq!(mints(&fake).await, 2);
    let refreshes = fake
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| String::from_utf8_lossy(&r.body).contains("grant_type=refresh_token"))
        .count();
    assert_eq!(refreshes, 0, "no refresh without a refresh token");
}

async fn the_location_minter_mints_the_approved_locations_of_a_bulk_install_once(backend: Backend) {
    let fake = MockServer::start().await;
    let app = agency_app(backend, &fake).await;
    connect_agency(
        &app,
        &fake,
        serde_json::json!({"isBulkInstallation": true, "approvedLocations": ["loc_1", "loc_2"]}),
    )
    .await;
    for (loc, name) in [("loc_1", "Downtown Dental"), ("loc_2", "Uptown Dental")] {
        mount_location_name(&fake, loc, name).await;
        Mock::given(method("POST"))
            .and(path("/oauth/locationToken"))
            .and(body_string_contains(format!("locationId={loc}")))
            .respond_with(ResponseTemplate::new(200).set_body_json(location_token(
                loc,
                &format!("{loc}-at"),
                Some(&format!("{loc}-rt")),
            )))
            .mount(&fake)
            .await;
    }
    // The minter is a worker of its own, registered for a provider that
    // mints location tokens; here one round of it is run by hand.
    let workers: Vec<&str> = app
        .state
        .platforms
        .workers(&app.state)
        .iter()
        .map(|w| w.name)
        .collect();
    assert_eq!(workers, ["location minter"]);
    mint_approved(&app.state).await.unwrap();
    assert_eq!(mints(&fake).await, 2);
    let key = app.api_key(Some("acme"), false);
    for (loc, name) in [("loc_1", "Downtown Dental"), ("loc_2", "Uptown Dental")] {
        let body: serde_json::Value = token_for(&app, &key, &format!("account={loc}"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(body["access_token"], format!("{loc}-at"));
        assert_eq!(body["account"]["name"], name);
    }
    // A later round finds nothing left to mint.
    mint_approved(&app.state).await.unwrap();
    assert_eq!(mints(&fake).await, 2);
}

async fn installed_locations_are_listed_with_the_agency_token_and_what_the_tenant_holds(
    backend: Backend,
) {
    let fake = MockServer::start().await;
    let app = agency_app(backend, &fake).await;
    connect_agency(&app, &fake, serde_json::json!({})).await;
    Mock::given(method("GET"))
        .and(path("/oauth/installedLocations"))
        .and(header("authorization", "Bearer agency-at"))
        .and(header("version", "2021-07-28"))
        .and(q("companyId", "c_9"))
        .and(q("appId", "preset"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "locations": [
                {"_id": "loc_1", "name": "Downtown Dental", "address": "1 Main St", "isInstalled": true},
                {"_id": "loc_2", "name": "Uptown Dental", "address": "9 High St", "isInstalled": false}
            ],
            "count": 2, "installToFutureLocations": false
        })))
        .mount(&fake)
        .await;
    Mock::given(method("POST"))
        .and(path("/oauth/locationToken"))
        .respond_with(ResponseTemplate::new(200).set_body_json(location_token(
            "loc_1",
            "loc1-at",
            Some("rt"),
        )))
        .mount(&fake)
        .await;
    mount_location_name(&fake, "loc_1", "Downtown Dental").await;
    let key = app.api_key(Some("acme"), false);
    assert_eq!(token_for(&app, &key, "location=loc_1").await.status(), 200);
    let res = app
        .client
        .get(format!(
            "{}/api/v1/tenants/acme/connections/gohighlevel/locations",
            app.address
        ))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<serde_json::Value>().await.unwrap(),
        serde_json::json!({"locations": [
            {"id": "loc_1", "name": "Downtown Dental", "installed": true, "connected": true},
            {"id": "loc_2", "name": "Uptown Dental", "installed": false, "connected": false}
        ]})
    );
}

async fn a_location_the_agency_may_not_serve_or_cannot_name_changes_nothing_and_says_why(
    backend: Backend,
) {
    let fake = MockServer::start().await;
    let app = agency_app(backend, &fake).await;
    let key = app.api_key(Some("acme"), false);
    // No agency connection yet.
    let res = token_for(&app, &key, "location=loc_1").await;
    assert_eq!(res.status(), 404);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_connected");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("agency"));
    connect_agency(&app, &fake, serde_json::json!({})).await;
    Mock::given(method("POST"))
        .and(path("/oauth/locationToken"))
        .respond_with(ResponseTemplate::new(400).set_body_json(serde_json::json!({
            "statusCode": 400, "message": "Location not found or app not installed"
        })))
        .mount(&fake)
        .await;
    let before = app.snapshot();
    let res = token_for(&app, &key, "location=loc_9").await;
    assert_eq!(res.status(), 409);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "location_unavailable");
    assert!(!body.to_string().contains("agency-at"));
    for (query, code) in [
        ("location=..%2Fadmin", "invalid_account"),
        ("location=loc_1&account=c_9", "invalid_query"),
    ] {
        let res = token_for(&app, &key, query).await;
        assert_eq!(res.status(), 400, "{query}");
        assert_eq!(
            res.json::<serde_json::Value>().await.unwrap()["error"]["code"],
            code,
            "{query}"
        );
    }
    assert_eq!(app.snapshot(), before, "a refused location changes nothing");
    assert_eq!(
        mints(&fake).await,
        1,
        "only the refused one reached GoHighLevel"
    );
    // `location` belongs to GoHighLevel.
    let res = app
        .client
        .get(format!(
            "{}/api/v1/tenants/acme/connections/demo/token?location=loc_1",
            app.address
        ))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
}
