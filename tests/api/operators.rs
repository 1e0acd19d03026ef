//! Operators (README, "Operators"): `GET /api/v1/connections` says which
//! tenant holds a provider account (by account id or a metadata field such
//! as GoHighLevel's `locationId`) and which connections need attention,
//! across tenants for an all-tenants key and within its tenant for a scoped
//! one; `tether connections list` prints the same; `tether tenant remove`
//! and `DELETE /api/v1/tenants/{t}` revoke at the provider and erase
//! everything the tenant had, and their dry run changes nothing.

use crate::backend_tests;
use crate::helpers::{
    acme_vars, assert_signed, connect, error_of, eventually, received, run, spawn_app_with_acme,
    spawn_app_with_provider, start, stderr, stdout, tether, Backend, FakeProvider, TestApp,
    ACCOUNT, KEY_K1, OWNER, PASSWORD, WEBHOOK_SECRET,
};
use diesel::prelude::*;
use serde_json::{json, Value};
use tether::crypto::Secret;
use tether::db::models::connection::{Connection, Grant, TokenSet};
use tether::db::models::event::{Actor, Event, EventKind, NewEvent};
use tether::db::now;
use tether::ids::{ProviderKey, TenantId};
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

backend_tests!(
    lookup_by_account_or_location_id_names_the_tenant_holding_it,
    a_tenant_scoped_key_sees_only_its_own_tenants_connections,
    filters_by_tenant_provider_and_status_and_the_answer_is_bounded,
    malformed_or_unknown_filters_are_clear_errors,
    cli_connections_list_prints_the_connections_needing_attention,
    removing_a_tenant_revokes_at_the_provider_and_erases_everything_it_had,
    a_removal_dry_run_says_what_would_be_done_and_changes_nothing,
    removing_an_unknown_tenant_or_without_an_all_tenants_admin_key_changes_nothing,
    a_connection_made_while_a_removal_revokes_is_erased_and_revoked_too,
    cli_tenant_remove_revokes_erases_and_prints_what_it_did,
    cli_connections_list_limit_returns_the_first_rows_in_the_lists_order,
    cli_tenant_remove_asks_or_needs_yes_and_a_failed_revocation_exits_3_with_a_warning,
    a_write_racing_a_tenant_removal_is_a_404_not_a_500,
);

/// Stores an `acme` grant for `account` of the tenant, through Tether's own
/// model, with refresh token `rt` and the given metadata.
fn grant(
    app: &TestApp,
    tenant_id: &str,
    account: &str,
    name: Option<&str>,
    metadata: Value,
    rt: &str,
) -> Connection {
    grant_on(&app.state, tenant_id, account, name, metadata, rt)
}

/// As [`grant`], through the running app's own pool and keys.
fn grant_on(
    app: &tether::app::App,
    tenant_id: &str,
    account: &str,
    name: Option<&str>,
    metadata: Value,
    rt: &str,
) -> Connection {
    let tokens = TokenSet {
        access_token: Secret::new(format!("at-{rt}")),
        refresh_token: Some(Secret::new(rt.to_string())),
        token_type: "Bearer".into(),
        raw: Secret::new(json!({ "refresh_token": rt })),
    };
    Connection::store_grant(
        &mut app.pool.get().expect("pooled connection"),
        &app.keys,
        &Grant {
            kind: tether::db::models::connection::Kind::OAuth,
            tenant_id: &TenantId::known(tenant_id),
            provider: &ProviderKey::known("acme"),
            account_id: &tether::ids::AccountId::known(account),
            account_name: name,
            scopes: &["contacts.read".to_string()],
            tokens: &tokens,
            expires_at: Some(now() + chrono::Duration::hours(1)),
            refresh_expires_at: None,
            next_refresh_at: Some(now() + chrono::Duration::minutes(48)),
            metadata: &metadata,
            parent_account_id: None,
            tags: None,
        },
    )
    .expect("store grant")
}

/// Puts a connection in `status` with `error` as its last error, as a
/// failed refresh would.
fn set_status(app: &TestApp, id: &str, status: &str, error: &str) {
    use tether::db::schema::connections;
    diesel::update(connections::table.find(id))
        .set((
            connections::status.eq(status),
            connections::last_error.eq(error),
        ))
        .execute(&mut app.conn())
        .unwrap();
}

/// Two GoHighLevel-like tenants on the fake `acme`: `dental-1` holds
/// location loc_1 (connected) and loc_3 (needs reconnecting), `dental-2`
/// holds loc_2 (refresh failing) and once held loc_4 (disconnected); every
/// location is of company c_9. Returns the app and a key for all tenants.
async fn two_tenants(backend: Backend) -> (TestApp, FakeProvider, String) {
    let fake = FakeProvider::start().await;
    let app = spawn_app_with_provider(backend, &fake, "post").await;
    let one = app.ensure_tenant("dental-1");
    let two = app.ensure_tenant("dental-2");
    let meta = |loc: &str| json!({"locationId": loc, "companyId": "c_9", "hubId": 42});
    grant(
        &app,
        &one.id,
        "loc_1",
        Some("Main Street Dental"),
        meta("loc_1"),
        "rt-1",
    );
    let stale = grant(&app, &one.id, "loc_3", None, meta("loc_3"), "rt-3");
    set_status(
        &app,
        &stale.id,
        "needs_reconnect",
        "invalid_grant: the grant was revoked",
    );
    let failing = grant(
        &app,
        &two.id,
        "loc_2",
        Some("Harbour Road"),
        meta("loc_2"),
        "rt-2",
    );
    set_status(&app, &failing.id, "error", "HTTP 503 from the provider");
    let gone = grant(&app, &two.id, "loc_4", None, meta("loc_4"), "rt-4");
    Connection::erase(&mut app.conn(), &gone.id).unwrap();
    let key = app.api_key(None, false);
    (app, fake, key)
}

/// The answer of `GET /api/v1/connections?{query}`; it must be a 200.
async fn found(app: &TestApp, query: &str, key: &str) -> Value {
    let res = app
        .api_get(&format!("/api/v1/connections?{query}"), key)
        .await;
    assert_eq!(res.status(), 200, "{query}");
    assert_eq!(res.headers()["cache-control"], "no-store");
    res.json().await.unwrap()
}

/// (tenant, account) of each connection in an answer.
fn holders(body: &Value) -> Vec<(String, String)> {
    body["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["tenant"].as_str().unwrap().to_string(),
                c["account"]["id"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(t, a)| (t.to_string(), a.to_string()))
        .collect()
}

async fn lookup_by_account_or_location_id_names_the_tenant_holding_it(backend: Backend) {
    let (app, _fake, key) = two_tenants(backend).await;

    let body = found(&app, "provider=acme&account=loc_2", &key).await;
    assert_eq!(
        body,
        json!({"connections": [{
            "tenant": "dental-2", "provider": "acme",
            "account": {"id": "loc_2", "name": "Harbour Road"}, "status": "error",
            "default": true, "expires_at": body["connections"][0]["expires_at"],
            "last_refreshed_at": body["connections"][0]["last_refreshed_at"],
            "lapses_at": null, "last_error": "HTTP 503 from the provider"}],
         "truncated": false})
    );
    assert!(!body.to_string().contains("rt-2"), "no token: {body}");

    let body = found(&app, "locationId=loc_1", &key).await;
    assert_eq!(holders(&body), pairs(&[("dental-1", "loc_1")]));
    assert_eq!(
        body["connections"][0]["account"]["name"],
        "Main Street Dental"
    );
    assert_eq!(body["connections"][0]["status"], "connected");

    // Every field must match; numbers match as written.
    let body = found(&app, "locationId=loc_3&companyId=c_9&hubId=42", &key).await;
    assert_eq!(holders(&body), pairs(&[("dental-1", "loc_3")]));
    let body = found(&app, "companyId=c_9", &key).await;
    assert_eq!(
        holders(&body),
        pairs(&[
            ("dental-1", "loc_1"),
            ("dental-1", "loc_3"),
            ("dental-2", "loc_2")
        ]),
        "in tenant and account order; the disconnected loc_4 is not a connection"
    );
    for nothing in [
        "locationId=loc_1&companyId=c_8",
        "locationId=loc_",
        "locationId=%25",
        "locationid=loc_1",
        "account=loc_4",
        "provider=acme&account=loc_9",
    ] {
        let body = found(&app, nothing, &key).await;
        assert_eq!(body["connections"], json!([]), "{nothing}");
    }
}

async fn a_tenant_scoped_key_sees_only_its_own_tenants_connections(backend: Backend) {
    let (app, _fake, _key) = two_tenants(backend).await;
    let scoped = app.api_key(Some("dental-1"), false);
    let body = found(&app, "companyId=c_9", &scoped).await;
    assert_eq!(
        holders(&body),
        pairs(&[("dental-1", "loc_1"), ("dental-1", "loc_3")])
    );
    let body = found(&app, "locationId=loc_2", &scoped).await;
    assert_eq!(body["connections"], json!([]), "another tenant's location");
    let body = found(&app, "tenant=dental-1&account=loc_1", &scoped).await;
    assert_eq!(holders(&body), pairs(&[("dental-1", "loc_1")]));
    for other in ["tenant=dental-2", "tenant=nobody"] {
        let res = app
            .api_get(&format!("/api/v1/connections?{other}"), &scoped)
            .await;
        assert_eq!(error_of(res).await, (403, "forbidden".into()), "{other}");
    }
    let res = reqwest::Client::new()
        .get(format!("{}/api/v1/connections", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}

async fn filters_by_tenant_provider_and_status_and_the_answer_is_bounded(backend: Backend) {
    let (app, _fake, key) = two_tenants(backend).await;
    let body = found(&app, "status=needs_reconnect", &key).await;
    assert_eq!(holders(&body), pairs(&[("dental-1", "loc_3")]));
    assert_eq!(
        body["connections"][0]["last_error"],
        "invalid_grant: the grant was revoked"
    );
    let body = found(&app, "status=needs_reconnect,error", &key).await;
    assert_eq!(
        holders(&body),
        pairs(&[("dental-1", "loc_3"), ("dental-2", "loc_2")])
    );
    let body = found(&app, "tenant=dental-1", &key).await;
    assert_eq!(
        holders(&body),
        pairs(&[("dental-1", "loc_1"), ("dental-1", "loc_3")])
    );
    let body = found(&app, "tenant=dental-1&status=connected&provider=acme", &key).await;
    assert_eq!(holders(&body), pairs(&[("dental-1", "loc_1")]));
    let body = found(&app, "provider=acme", &key).await;
    assert_eq!(body["connections"].as_array().unwrap().len(), 3);
    assert_eq!(body["truncated"], false);

    let body = found(&app, "provider=acme&limit=2", &key).await;
    assert_eq!(body["connections"].as_array().unwrap().len(), 2);
    assert_eq!(body["truncated"], true, "a third one matched");
    let body = found(&app, "provider=acme&limit=3", &key).await;
    assert_eq!(body["truncated"], false);
}

async fn malformed_or_unknown_filters_are_clear_errors(backend: Backend) {
    let (app, _fake, key) = two_tenants(backend).await;
    let before = app.snapshot();
    for (query, expected) in [
        ("tenant=nobody", (404, "not_found")),
        ("provider=nonesuch", (404, "not_found")),
        ("provider=Not%20A%20Key", (400, "invalid_query")),
        ("tenant=has%20space", (400, "invalid_tenant")),
        ("status=disconnected", (400, "invalid_status")),
        ("status=needs_reconnect,bogus", (400, "invalid_status")),
        ("limit=0", (400, "invalid_query")),
        ("limit=1001", (400, "invalid_query")),
        ("limit=ten", (400, "invalid_query")),
        ("account=", (400, "invalid_account")),
        ("locationId=loc_1&locationId=loc_2", (400, "invalid_query")),
        ("provider=acme&provider=acme", (400, "invalid_query")),
        ("loc%27Id=x", (400, "invalid_query")),
        ("1st=x", (400, "invalid_query")),
        ("locationId=", (400, "invalid_query")),
        ("locationId=%00", (400, "invalid_query")),
        ("locationId=%ff", (400, "invalid_query")),
        ("locationId=%zz", (400, "invalid_query")),
        (
            "a=1&b=1&c=1&d=1&e=1&f=1&g=1&h=1&i=1",
            (400, "invalid_query"),
        ),
    ] {
        let res = app
            .api_get(&format!("/api/v1/connections?{query}"), &key)
            .await;
        let (status, code) = error_of(res).await;
        assert_eq!((status, code.as_str()), expected, "{query}");
    }
    assert_eq!(app.snapshot(), before);
}

async fn cli_connections_list_prints_the_connections_needing_attention(backend: Backend) {
    let (app, _fake, _key) = two_tenants(backend).await;
    let file = app
        .db
        .data_dir()
        .join("providers.toml")
        .display()
        .to_string();
    let list = |args: &[&str]| {
        let mut cmd = tether(&app.db, KEY_K1);
        cmd.envs(acme_vars(&file))
            .args(["connections", "list"])
            .args(args);
        run(&mut cmd, "")
    };

    let out = list(&["--status", "needs_reconnect,error"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    for column in [
        "TENANT",
        "PROVIDER",
        "ACCOUNT",
        "STATUS",
        "EXPIRES",
        "LAST ERROR",
    ] {
        assert!(lines[0].contains(column), "{}", lines[0]);
    }
    assert!(lines[1].starts_with("dental-1") && lines[1].contains("loc_3"));
    assert!(lines[1].contains("needs_reconnect"));
    assert!(lines[1].contains("invalid_grant: the grant was revoked"));
    assert!(lines[2].starts_with("dental-2") && lines[2].contains("loc_2 (Harbour Road)"));
    assert!(lines[2].contains("error") && lines[2].contains("HTTP 503 from the provider"));
    assert_eq!(lines[3], "2 connection(s)");
    assert_eq!(lines.len(), 4);
    assert!(!text.contains("rt-"), "no token: {text}");

    let out = list(&["--tenant", "dental-1", "--provider", "acme"]);
    let text = stdout(&out);
    assert!(text.contains("loc_1 (Main Street Dental)") && text.contains("loc_3"));
    assert!(!text.contains("dental-2"));
    assert!(text.contains("2 connection(s)"));

    let out = list(&["--limit", "1"]);
    assert!(stdout(&out).contains("1 connection(s)"));
    assert!(stdout(&out).contains("more matched"));

    let out = list(&["--tenant", "nobody"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no tenant 'nobody'"),
        "{}",
        stderr(&out)
    );
    let out = list(&["--status", "bogus"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("status is connected"),
        "{}",
        stderr(&out)
    );
    let out = list(&["--limit", "0"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a bad argument is a usage error"
    );
}

/// Rows of every tenant-owned table for the tenant, by table.
fn rows_of(app: &TestApp, tenant_id: &str) -> Vec<(&'static str, i64)> {
    use tether::db::schema::*;
    let mut c = app.conn();
    vec![
        (
            "tenants",
            tenants::table
                .filter(tenants::id.eq(tenant_id))
                .count()
                .get_result(&mut c)
                .unwrap(),
        ),
        (
            "connections",
            connections::table
                .filter(connections::tenant_id.eq(tenant_id))
                .count()
                .get_result(&mut c)
                .unwrap(),
        ),
        (
            "users",
            users::table
                .filter(users::tenant_id.eq(tenant_id))
                .count()
                .get_result(&mut c)
                .unwrap(),
        ),
        (
            "connect_links",
            connect_links::table
                .filter(connect_links::tenant_id.eq(tenant_id))
                .count()
                .get_result(&mut c)
                .unwrap(),
        ),
        (
            "oauth_states",
            oauth_states::table
                .filter(oauth_states::tenant_id.eq(tenant_id))
                .count()
                .get_result(&mut c)
                .unwrap(),
        ),
        (
            "events",
            events::table
                .filter(events::tenant_id.eq(tenant_id))
                .count()
                .get_result(&mut c)
                .unwrap(),
        ),
        (
            "api_keys",
            api_keys::table
                .filter(api_keys::tenant_id.eq(tenant_id))
                .count()
                .get_result(&mut c)
                .unwrap(),
        ),
        (
            "integration_settings",
            integration_settings::table
                .filter(integration_settings::tenant_id.eq(tenant_id))
                .count()
                .get_result(&mut c)
                .unwrap(),
        ),
    ]
}

/// Tenant `acme` with everything a tenant can have: an admin signed in, the
/// acme account acct-42 connected through the flow (tokens at-1 / rt-1, a
/// `connected` event), a second account acct-2 (rt-2), a pending OAuth
/// state, a connect link and a key limited to it; and tenant `other` with
/// an admin, a connection (rt-9), an event, a link and a key of its own.
async fn offboarding_app(backend: Backend, extra: &[(&str, &str)]) -> (TestApp, FakeProvider) {
    let fake = FakeProvider::start().await;
    let app = spawn_app_with_acme(backend, &fake, "", extra).await;
    let acme = app.create_admin("acme", OWNER);
    assert_eq!(app.login(OWNER, PASSWORD).await.status(), 303);
    assert_eq!(connect(&app, &fake, "at-1", "rt-1").await.status(), 303);
    grant(&app, &acme.id, "acct-2", None, json!({}), "rt-2");
    start(&app, &[]).await;
    let scoped = app.api_key(Some("acme"), false);
    let link = app
        .api_post(
            "/api/v1/tenants/acme/connect-links",
            &scoped,
            Some(json!({"provider": "acme"})),
        )
        .await;
    assert_eq!(link.status(), 201);
    let put_settings = |tenant: &str, key: String| {
        let path = format!("/api/v1/tenants/{tenant}/integrations/acme");
        let app = &app;
        async move {
            let res = app
                .api_put(
                    &path,
                    &key,
                    json!({"enabled": true, "settings": {"pipeline": "p-1"}}),
                )
                .await;
            assert_eq!(res.status(), 200);
        }
    };
    put_settings("acme", scoped.clone()).await;

    let other = app.create_admin("other", "owner@other.example");
    let c = grant(&app, &other.id, "acct-9", None, json!({}), "rt-9");
    Event::record(
        &mut app.conn(),
        &NewEvent {
            tenant_id: &other.id,
            connection_id: Some(&c.id),
            provider: &ProviderKey::known("acme"),
            kind: EventKind::Connected,
            actor: &Actor::ConnectLink,
            detail: None,
        },
    )
    .unwrap();
    tether::db::models::connect_link::ConnectLink::create(
        &mut app.conn(),
        &other.id,
        &tether::ids::ProviderKey::known("acme"),
        &tether::db::models::connect_link::NewLink {
            created_by: "api:crm",
            email: None,
            tags: None,
            account: None,
            ttl: chrono::Duration::minutes(15),
        },
    )
    .unwrap();
    let other_key = app.api_key(Some("other"), false);
    put_settings("other", other_key).await;
    (app, fake)
}

async fn delete_tenant(app: &TestApp, tenant: &str, query: &str, key: &str) -> reqwest::Response {
    app.api_delete(&format!("/api/v1/tenants/{tenant}{query}"), key)
        .await
}

async fn removing_a_tenant_revokes_at_the_provider_and_erases_everything_it_had(backend: Backend) {
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hooks"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    let hook = format!("{}/hooks", receiver.uri());
    let (app, fake) = offboarding_app(
        backend,
        &[
            ("TETHER_WEBHOOK_URL", &hook),
            ("TETHER_WEBHOOK_SECRET", WEBHOOK_SECRET),
        ],
    )
    .await;
    Mock::given(method("POST"))
        .and(path("/revoke"))
        .and(body_string_contains("token=rt-1"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&fake.server)
        .await;
    Mock::given(method("POST"))
        .and(path("/revoke"))
        .and(body_string_contains("token=rt-2"))
        .respond_with(ResponseTemplate::new(503))
        .expect(1)
        .mount(&fake.server)
        .await;
    let acme = app.tenant("acme");
    let other = app.tenant("other");
    let others_before = rows_of(&app, &other.id);
    let acme_before = rows_of(&app, &acme.id);
    assert!(
        acme_before.iter().all(|(_, n)| *n > 0),
        "acme has a row in every table: {acme_before:?}"
    );
    let scoped = app.api_key(Some("acme"), false);
    assert_eq!(
        app.api_get("/api/v1/tenants/acme/connections", &scoped)
            .await
            .status(),
        200,
        "its key works (and is cached) before the removal"
    );

    // Deliveries of acme's events still queued (the receiver has not been
    // called yet), and one of other's.
    let queued = |tenant: &'static str| {
        use tether::db::schema::webhook_outbox as o;
        let rows: Vec<String> = o::table
            .filter(o::delivered_at.is_null())
            .select(o::payload)
            .load(&mut app.conn())
            .unwrap();
        rows.iter()
            .filter(|p| serde_json::from_str::<Value>(p).unwrap()["tenant"] == tenant)
            .count()
    };
    let acme_queued = queued("acme");
    assert!(acme_queued > 0, "acme's events wait to be delivered");
    let others_queued = queued("other");

    let admin = app.api_key(None, true);
    let res = delete_tenant(&app, "acme", "", &admin).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["tenant"], "acme");
    assert_eq!(body["dry_run"], false);
    let revocations = body["revocations"].as_array().unwrap();
    assert_eq!(revocations.len(), 2, "{body}");
    let of = |account: &str| {
        revocations
            .iter()
            .find(|r| r["account"] == account)
            .unwrap_or_else(|| panic!("no revocation of {account}: {body}"))
            .clone()
    };
    assert_eq!(of(ACCOUNT)["outcome"], "revoked");
    assert_eq!(of(ACCOUNT)["provider"], "acme");
    assert_eq!(of("acct-2")["outcome"], "failed", "reported, not fatal");
    assert!(of("acct-2")["detail"]
        .as_str()
        .is_some_and(|d| !d.is_empty()));
    let count = |table: &str| acme_before.iter().find(|(t, _)| *t == table).unwrap().1;
    assert_eq!(
        body["erased"],
        json!({"connections": 2, "tokens": 2, "users": 1,
               "connect_links": count("connect_links"), "oauth_states": count("oauth_states"),
               "events": count("events"), "api_keys": 2, "integration_settings": 1,
               "webhook_deliveries": acme_queued})
    );
    // Its queued deliveries went with it; other's and the operator's
    // notification stay.
    assert_eq!(queued("acme"), 1, "only tenant_removed names acme now");
    assert_eq!(queued("other"), others_queued);
    assert!(!body.to_string().contains("rt-1") && !body.to_string().contains("at-1"));
    assert_eq!(fake.calls_to("/revoke").await, 2, "each grant revoked once");

    assert!(
        rows_of(&app, &acme.id).iter().all(|(_, n)| *n == 0),
        "nothing of acme is left: {:?}",
        rows_of(&app, &acme.id)
    );
    assert_eq!(
        rows_of(&app, &other.id),
        others_before,
        "other is untouched"
    );
    let res = app
        .api_get("/api/v1/tenants/acme/connections", &admin)
        .await;
    assert_eq!(error_of(res).await, (404, "not_found".into()));
    let res = app
        .api_get("/api/v1/tenants/acme/connections", &scoped)
        .await;
    assert_eq!(res.status(), 401, "its keys went with it, cached or not");
    let dashboard = app.get("/settings/integrations").await;
    assert_eq!(dashboard.status(), 303, "its admin's session ended");

    // The operator is told, in a notification the tenant's rows do not hold.
    let (app, receiver) = (&app, &receiver);
    eventually(10, "the tenant_removed delivery", move || async move {
        tether::webhooks::deliver_due(&app.state).await.unwrap();
        received(receiver).await.iter().any(|r| {
            serde_json::from_slice::<Value>(&r.body).is_ok_and(|b| b["type"] == "tenant_removed")
        })
    })
    .await;
    let delivered = received(receiver).await;
    let removal = delivered
        .iter()
        .map(assert_signed)
        .find(|b| b["type"] == "tenant_removed")
        .unwrap();
    assert_eq!(removal["tenant"], "acme");
    assert_eq!(removal["erased"], body["erased"]);
    assert_eq!(removal["revocations"], body["revocations"]);
    assert!(!removal.to_string().contains("rt-"), "{removal}");
}

async fn a_removal_dry_run_says_what_would_be_done_and_changes_nothing(backend: Backend) {
    let (app, fake) = offboarding_app(backend, &[]).await;
    let before = app.snapshot();
    let acme = app.tenant("acme");
    let acme_before = rows_of(&app, &acme.id);
    let admin = app.api_key(None, true);

    let res = delete_tenant(&app, "acme", "?dry_run=true", &admin).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["dry_run"], true);
    let outcomes: Vec<&str> = body["revocations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["would_revoke", "would_revoke"]);
    assert_eq!(body["erased"]["connections"], 2);
    assert_eq!(body["erased"]["users"], 1);
    assert_eq!(body["erased"]["api_keys"], 1);

    let file = app
        .db
        .data_dir()
        .join("providers.toml")
        .display()
        .to_string();
    let mut cmd = tether(&app.db, KEY_K1);
    cmd.envs(acme_vars(&file))
        .args(["tenant", "remove", "acme", "--dry-run"]);
    let out = run(&mut cmd, "");
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("dry run: nothing was changed"), "{text}");
    assert!(text.contains(&format!("acme {ACCOUNT}: would be revoked at the provider")));
    assert!(text.contains("would erase 2 connection(s) (2 holding tokens), 1 admin(s)"));

    assert_eq!(fake.calls_to("/revoke").await, 0, "nothing was sent");
    assert_eq!(app.snapshot(), before);
    assert_eq!(rows_of(&app, &acme.id), acme_before);
}

async fn a_connection_made_while_a_removal_revokes_is_erased_and_revoked_too(backend: Backend) {
    let (app, fake) = offboarding_app(backend, &[]).await;
    let acme = app.tenant("acme");
    // While the provider is asked to revoke rt-1, a connect of acme's
    // finishes: a grant the revocation pass did not see.
    let state = app.state.clone();
    let tenant = acme.id.to_string();
    Mock::given(method("POST"))
        .and(path("/revoke"))
        .and(body_string_contains("token=rt-1"))
        .respond_with(move |_: &wiremock::Request| {
            grant_on(&state, &tenant, "acct-late", None, json!({}), "rt-late");
            ResponseTemplate::new(200)
        })
        .expect(1)
        .mount(&fake.server)
        .await;
    for token in ["token=rt-2", "token=rt-late"] {
        Mock::given(method("POST"))
            .and(path("/revoke"))
            .and(body_string_contains(token))
            .respond_with(ResponseTemplate::new(200))
            .expect(1)
            .mount(&fake.server)
            .await;
    }
    let admin = app.api_key(None, true);
    let res = delete_tenant(&app, "acme", "", &admin).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let late = body["revocations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["account"] == "acct-late")
        .unwrap_or_else(|| panic!("the late grant is reported: {body}"))
        .clone();
    assert_eq!(late["outcome"], "revoked", "{body}");
    assert_eq!(body["erased"]["connections"], 3, "{body}");
    assert_eq!(fake.calls_to("/revoke").await, 3, "each grant revoked once");
    assert!(
        rows_of(&app, &acme.id).iter().all(|(_, n)| *n == 0),
        "nothing of acme is left: {:?}",
        rows_of(&app, &acme.id)
    );
}

async fn removing_an_unknown_tenant_or_without_an_all_tenants_admin_key_changes_nothing(
    backend: Backend,
) {
    let (app, fake) = offboarding_app(backend, &[]).await;
    let before = app.snapshot();
    let admin = app.api_key(None, true);
    let plain = app.api_key(None, false);
    let scoped_admin = app.api_key(Some("acme"), true);

    let res = delete_tenant(&app, "nobody", "", &admin).await;
    assert_eq!(error_of(res).await, (404, "not_found".into()));
    let res = delete_tenant(&app, "bad$id", "", &admin).await;
    assert_eq!(error_of(res).await, (400, "invalid_tenant".into()));
    let res = delete_tenant(&app, "acme", "?dryrun=true", &admin).await;
    assert_eq!(
        error_of(res).await,
        (400, "invalid_query".into()),
        "a misspelt dry run is not a removal"
    );
    let res = delete_tenant(&app, "acme", "?dry_run=yes", &admin).await;
    assert_eq!(error_of(res).await, (400, "invalid_query".into()));
    // Without the admin scope, then limited to one tenant.
    for (key, code) in [(&plain, "missing_scope"), (&scoped_admin, "forbidden")] {
        let res = delete_tenant(&app, "acme", "", key).await;
        assert_eq!(error_of(res).await, (403, code.into()));
    }
    let res = reqwest::Client::new()
        .delete(format!("{}/api/v1/tenants/acme", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);

    let out = app.run_cli(&["tenant", "remove", "nobody"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no tenant 'nobody'"),
        "{}",
        stderr(&out)
    );

    assert_eq!(fake.calls_to("/revoke").await, 0);
    assert_eq!(app.snapshot(), before);
}

async fn cli_tenant_remove_revokes_erases_and_prints_what_it_did(backend: Backend) {
    let (app, fake) = offboarding_app(backend, &[]).await;
    Mock::given(method("POST"))
        .and(path("/revoke"))
        .respond_with(ResponseTemplate::new(200))
        .expect(2)
        .mount(&fake.server)
        .await;
    let acme = app.tenant("acme");
    let other = app.tenant("other");
    let others_before = rows_of(&app, &other.id);

    let file = app
        .db
        .data_dir()
        .join("providers.toml")
        .display()
        .to_string();
    let mut cmd = tether(&app.db, KEY_K1);
    cmd.envs(acme_vars(&file))
        .args(["tenant", "remove", "acme", "--yes"]);
    let out = run(&mut cmd, "");
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("removed tenant 'acme':"), "{text}");
    assert!(text.contains(&format!("acme {ACCOUNT}: revoked at the provider")));
    assert!(text.contains("acme acct-2: revoked at the provider"));
    assert!(text.contains("erased 2 connection(s) (2 holding tokens), 1 admin(s)"));
    assert!(!text.contains("rt-"), "{text}");

    assert_eq!(fake.calls_to("/revoke").await, 2);
    assert!(rows_of(&app, &acme.id).iter().all(|(_, n)| *n == 0));
    assert_eq!(rows_of(&app, &other.id), others_before);
    let again = run(
        tether(&app.db, KEY_K1).args(["tenant", "remove", "acme", "--yes"]),
        "",
    );
    assert_eq!(again.status.code(), Some(1), "it is gone");
}

async fn cli_connections_list_limit_returns_the_first_rows_in_the_lists_order(backend: Backend) {
    let fake = FakeProvider::start().await;
    let app = spawn_app_with_provider(backend, &fake, "post").await;
    let mut made = Vec::new();
    for n in 0..3 {
        let t = app.ensure_tenant(&format!("tenant-{n}"));
        let c = grant(&app, &t.id, "loc_1", None, json!({}), &format!("rt-{n}"));
        made.push((c.id.to_string(), t.id));
    }
    // Name the tenants against the row ids' order: the smallest row id
    // belongs to the last tenant of the list's order.
    made.sort();
    for ((_, tenant_id), name) in made.iter().zip(["zeta", "mu", "alpha"]) {
        use tether::db::schema::tenants;
        diesel::update(tenants::table.find(tenant_id))
            .set(tenants::external_id.eq(name))
            .execute(&mut app.conn())
            .unwrap();
    }
    let file = app
        .db
        .data_dir()
        .join("providers.toml")
        .display()
        .to_string();
    let list = |args: &[&str]| {
        let mut cmd = tether(&app.db, KEY_K1);
        cmd.envs(acme_vars(&file))
            .args(["connections", "list", "--json"])
            .args(args);
        let out = run(&mut cmd, "");
        assert!(out.status.success(), "{}", stderr(&out));
        let rows: Value = serde_json::from_str(&stdout(&out)).unwrap();
        rows.as_array()
            .unwrap()
            .iter()
            .map(|r| r["tenant"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(list(&[]), ["alpha", "mu", "zeta"]);
    assert_eq!(list(&["--limit", "1"]), ["alpha"]);
    assert_eq!(list(&["--limit", "2"]), ["alpha", "mu"]);
}

async fn cli_tenant_remove_asks_or_needs_yes_and_a_failed_revocation_exits_3_with_a_warning(
    backend: Backend,
) {
    let (app, fake) = offboarding_app(backend, &[]).await;
    Mock::given(method("POST"))
        .and(path("/revoke"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&fake.server)
        .await;
    let acme = app.tenant("acme");
    let before = app.snapshot();
    let file = app
        .db
        .data_dir()
        .join("providers.toml")
        .display()
        .to_string();
    let remove = |extra: &[&str]| {
        let mut cmd = tether(&app.db, KEY_K1);
        cmd.envs(acme_vars(&file))
            .args(["tenant", "remove", "acme"])
            .args(extra);
        cmd
    };

    // No terminal and no --yes: a usage error that names --yes; nothing sent or changed.
    let out = run(&mut remove(&[]), "acme\n");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("pass --yes"), "{}", stderr(&out));
    assert_eq!(fake.calls_to("/revoke").await, 0);
    assert_eq!(app.snapshot(), before);

    // On a terminal it asks; a wrong answer changes nothing.
    let on_terminal = |answer: &str| {
        let line = format!("{:?} tenant remove acme", env!("CARGO_BIN_EXE_tether"));
        let cmd = remove(&[]);
        let mut script = std::process::Command::new("script");
        script.args(["-qec", &line, "/dev/null"]);
        script.env_clear();
        for (k, v) in cmd.get_envs() {
            if let Some(v) = v {
                script.env(k, v);
            }
        }
        script.current_dir(app.db.data_dir());
        run(&mut script, answer)
    };
    let out = on_terminal("other\n");
    let text = stdout(&out);
    assert!(
        text.contains("Remove tenant 'acme' and its 2 connection(s), 1 user(s), 1 API key(s)? Type the tenant id to confirm:"),
        "{text}"
    );
    assert!(text.contains("not confirmed"), "{text}");
    assert_ne!(out.status.code(), Some(0));
    assert_eq!(fake.calls_to("/revoke").await, 0);
    assert_eq!(app.snapshot(), before);

    // --yes: removed, but the provider refused the revocations: exit 3, and
    // a WARN line per connection naming it and its provider, never a token.
    let out = run(remove(&["--yes"]).env("RUST_LOG", "warn"), "");
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!("acme {ACCOUNT}: revocation FAILED")),
        "{}",
        stdout(&out)
    );
    let err = stderr(&out);
    let warnings: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("revocation failed provider=acme connection="))
        .collect();
    assert_eq!(warnings.len(), 2, "{err}");
    assert!(
        !err.contains("rt-") && !stdout(&out).contains("rt-"),
        "{err}"
    );
    assert!(rows_of(&app, &acme.id).iter().all(|(_, n)| *n == 0));
}

/// A request that read the tenant before its removal and writes after it
/// (the fuzzer's concurrent DELETEs found one: a disconnect's event) hits
/// the foreign key: that is "removed meanwhile", a 404, not a server error.
async fn a_write_racing_a_tenant_removal_is_a_404_not_a_500(backend: Backend) {
    let app = crate::helpers::spawn_app(backend).await;
    let tenant = app.ensure_tenant("acme");
    let key = app.api_key(None, true);
    let res = delete_tenant(&app, "acme", "", &key).await;
    assert_eq!(res.status(), 200);
    let late = Event::record(
        &mut app.conn(),
        &NewEvent {
            tenant_id: &tenant.id,
            connection_id: None,
            provider: &ProviderKey::known("acme"),
            kind: EventKind::Disconnected,
            actor: &Actor::TokenApi,
            detail: None,
        },
    )
    .expect_err("the tenant is gone: the foreign key refuses the event");
    let e = tether::error::AppError::from(late);
    assert_eq!(e.status().as_u16(), 404);
    assert_eq!(e.code(), "not_found");
    assert!(e.message().contains("removed meanwhile"), "{}", e.message());
}
