//! Several accounts of one provider per tenant (two GoHighLevel locations,
//! two Google accounts): one is the default, chosen by an admin and never
//! moved by a refresh; callers may name any connected account.

use crate::backend_tests;
use crate::helpers::{
    csrf_in, json_of, spawn_app_with_acme, start, tokens, Backend, FakeProvider, TestApp, TestDb,
    VerifierMatches, ACME_ISSUER, OWNER, PASSWORD,
};
use diesel::prelude::*;
use serde_json::{json, Value};
use tether::db::models::connection::Connection;
use tether::db::models::tenant::Tenant;
use tether::refresh::scheduler::Scheduler;
use wiremock::matchers::{body_string_contains, header, method, path};
use wiremock::{Mock, ResponseTemplate};

backend_tests!(
    the_first_account_connected_is_the_default_and_a_second_one_is_added_beside_it,
    a_refresh_of_the_other_account_by_the_scheduler_or_the_api_leaves_the_default_and_its_token,
    naming_an_account_returns_its_token_status_and_proxied_calls,
    put_default_switches_the_account_the_token_api_serves_even_from_a_warm_cache,
    choosing_a_default_while_one_of_the_two_accounts_is_being_refreshed_is_a_503_and_changes_nothing,
    deleting_the_default_names_the_earliest_connected_other_account_as_the_new_default,
    deleting_the_last_account_answers_default_null_and_the_token_api_404s_until_a_reconnect,
    an_unknown_account_is_a_404_everywhere_and_a_malformed_one_a_400_and_nothing_changes,
    the_dashboard_shows_each_account_with_its_own_forms_and_make_default_switches_it,
    the_migration_makes_the_row_the_old_rule_served_the_default_if_it_holds_tokens,
);

const ACCOUNTS: &str = "/api/v1/tenants/acme/connections/acme";

/// A signed-in admin of tenant `acme`, `acme` enabled against a fake
/// provider, and a global API key. `extra` adds settings.
async fn app(backend: Backend, extra: &[(&str, &str)]) -> (TestApp, FakeProvider, String) {
    let fake = FakeProvider::start().await;
    let app = spawn_app_with_acme(backend, &fake, "", extra).await;
    app.create_admin("acme", OWNER);
    assert_eq!(app.login(OWNER, PASSWORD).await.status(), 303);
    let key = app.api_key(None, false);
    (app, fake, key)
}

/// The admin approves `account` at the provider: the exchange answers
/// `at-{account}` / `rt-{account}` and the identity names the account.
async fn connect_account(app: &TestApp, fake: &FakeProvider, account: &str, name: &str) {
    let (state, challenge) = start(app, &[]).await;
    let access = format!("at-{account}");
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_string_contains("grant_type=authorization_code"))
        .and(VerifierMatches(challenge))
        .respond_with(ResponseTemplate::new(200).set_body_json(tokens(
            &access,
            Some(&format!("rt-{account}")),
            "3600".into(),
        )))
        .expect(1)
        .mount(&fake.server)
        .await;
    Mock::given(method("GET"))
        .and(path("/me"))
        .and(header("authorization", format!("Bearer {access}").as_str()))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"sub": account, "name": name})),
        )
        .mount(&fake.server)
        .await;
    let res = app
        .get(&format!(
            "/oauth/acme/callback?code=the-code&state={state}&iss={ACME_ISSUER}"
        ))
        .await;
    assert_eq!(res.status(), 303, "{:?}", res.text().await);
}

/// Two accounts: `loc-a` (connected first: the default) and `loc-b`.
async fn two_accounts(backend: Backend, extra: &[(&str, &str)]) -> (TestApp, FakeProvider, String) {
    let (app, fake, key) = app(backend, extra).await;
    connect_account(&app, &fake, "loc-a", "Main Street").await;
    connect_account(&app, &fake, "loc-b", "Harbour Road").await;
    (app, fake, key)
}

/// The provider's answer to a refresh with `rt-{account}`: `access`.
async fn mount_refresh(fake: &FakeProvider, account: &str, access: &str) {
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_string_contains("grant_type=refresh_token"))
        .and(body_string_contains(
            format!("refresh_token=rt-{account}").as_str(),
        ))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"access_token": access, "expires_in": 7200})),
        )
        .expect(1)
        .mount(&fake.server)
        .await;
}

/// The access token the token API hands out (`query`: e.g. `?account=loc-b`).
async fn token(app: &TestApp, key: &str, query: &str) -> String {
    let (status, body) = app.get_json(&format!("{ACCOUNTS}/token{query}"), key).await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_string()
}

async fn status(app: &TestApp, key: &str, query: &str) -> Value {
    let (code, body) = app.get_json(&format!("{ACCOUNTS}{query}"), key).await;
    assert_eq!(code, 200, "{body}");
    body
}

fn default_account(app: &TestApp) -> Option<String> {
    app.default_connection("acme", "acme")
        .map(|c| c.account_id.to_string())
}

fn ids(list: &Value) -> Vec<(String, bool)> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["id"].as_str().unwrap().to_string(),
                a["default"].as_bool().unwrap(),
            )
        })
        .collect()
}

// ---------------------------------------------------------------- tests

async fn the_first_account_connected_is_the_default_and_a_second_one_is_added_beside_it(
    backend: Backend,
) {
    let (app, fake, key) = two_accounts(backend, &[]).await;
    assert!(app.acme_account("acme", "loc-a").is_default);
    assert!(!app.acme_account("acme", "loc-b").is_default);
    let doc = status(&app, &key, "").await;
    assert_eq!(doc["account"]["id"], "loc-a", "{doc}");
    assert_eq!(doc["default"], true);
    assert_eq!(
        ids(&doc["accounts"]),
        vec![("loc-a".into(), true), ("loc-b".into(), false)]
    );
    assert_eq!(doc["accounts"][1]["name"], "Harbour Road");
    assert_eq!(doc["accounts"][1]["status"], "connected");

    // Reconnecting the second account keeps it beside the default.
    connect_account(&app, &fake, "loc-b", "Harbour Road").await;
    assert_eq!(default_account(&app).as_deref(), Some("loc-a"));
    assert_eq!(token(&app, &key, "").await, "at-loc-a");

    // The list of every provider carries the accounts too.
    let (code, all) = app.get_json("/api/v1/tenants/acme/connections", &key).await;
    assert_eq!(code, 200);
    let acme = all["connections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["provider"] == "acme")
        .unwrap()
        .clone();
    assert_eq!(acme["account"]["id"], "loc-a");
    assert_eq!(
        ids(&acme["accounts"]),
        vec![("loc-a".into(), true), ("loc-b".into(), false)]
    );
}

async fn a_refresh_of_the_other_account_by_the_scheduler_or_the_api_leaves_the_default_and_its_token(
    backend: Backend,
) {
    let (app, fake, key) = two_accounts(backend, &[]).await;
    assert_eq!(token(&app, &key, "").await, "at-loc-a");

    // The scheduler refreshes loc-b: it becomes the most recently updated row.
    mount_refresh(&fake, "loc-b", "at-loc-b-2").await;
    let before = app.acme_account("acme", "loc-b");
    app.make_due(&before.id);
    assert_eq!(Scheduler::new(app.state.clone()).tick().await.unwrap(), 1);
    app.until(&before.id, |c| {
        c.version > before.version && c.lease_owner.is_none()
    })
    .await;
    assert_eq!(token(&app, &key, "").await, "at-loc-a");
    assert_eq!(default_account(&app).as_deref(), Some("loc-a"));

    // So does a forced refresh through the API.
    fake.server.reset().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_string_contains("refresh_token=rt-loc-b"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"access_token": "at-loc-b-3", "expires_in": 7200})),
        )
        .expect(1)
        .mount(&fake.server)
        .await;
    let (code, body) = app
        .post_json(&format!("{ACCOUNTS}/refresh?account=loc-b"), &key, None)
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["account"]["id"], "loc-b");
    assert_eq!(body["default"], false);
    assert_eq!(token(&app, &key, "").await, "at-loc-a");
    assert_eq!(token(&app, &key, "?account=loc-b").await, "at-loc-b-3");
    let doc = status(&app, &key, "").await;
    assert_eq!(doc["account"]["id"], "loc-a", "{doc}");
}

async fn naming_an_account_returns_its_token_status_and_proxied_calls(backend: Backend) {
    let (app, fake, key) = two_accounts(backend, &[]).await;
    assert_eq!(token(&app, &key, "?account=loc-b").await, "at-loc-b");
    assert_eq!(token(&app, &key, "?account=loc-a").await, "at-loc-a");
    assert_eq!(token(&app, &key, "").await, "at-loc-a");

    let doc = status(&app, &key, "?account=loc-b").await;
    assert_eq!(doc["account"]["id"], "loc-b");
    assert_eq!(doc["account"]["name"], "Harbour Road");
    assert_eq!(doc["default"], false);
    assert_eq!(doc["status"], "connected");

    // The proxy takes the account from a header, and forwards neither it nor
    // anything but the provider's own query.
    Mock::given(method("GET"))
        .and(path("/api/contacts"))
        .and(header("authorization", "Bearer at-loc-b"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"contacts": ["b"]})))
        .expect(1)
        .mount(&fake.server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/contacts"))
        .and(header("authorization", "Bearer at-loc-a"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"contacts": ["a"]})))
        .expect(1)
        .mount(&fake.server)
        .await;
    let proxied = |account: Option<&'static str>| {
        let mut req = reqwest::Client::new()
            .get(format!(
                "{}/api/v1/tenants/acme/proxy/acme/contacts?limit=5",
                app.address
            ))
            .bearer_auth(&key);
        if let Some(a) = account {
            req = req.header("Tether-Account", a);
        }
        req.send()
    };
    let (code, body) = json_of(proxied(Some("loc-b")).await.unwrap()).await;
    assert_eq!((code, body), (200, json!({"contacts": ["b"]})));
    let (code, body) = json_of(proxied(None).await.unwrap()).await;
    assert_eq!((code, body), (200, json!({"contacts": ["a"]})));
    for r in fake.requests().await {
        if r.url.path() == "/api/contacts" {
            assert_eq!(r.url.query(), Some("limit=5"));
            assert!(!r.headers.contains_key("tether-account"));
        }
    }
}

async fn put_default_switches_the_account_the_token_api_serves_even_from_a_warm_cache(
    backend: Backend,
) {
    // A long-lived token cache: the switch must drop what it holds.
    let (app, _fake, key) = two_accounts(backend, &[("TETHER_TOKEN_CACHE_MS", "60000")]).await;
    assert_eq!(token(&app, &key, "").await, "at-loc-a");
    assert_eq!(token(&app, &key, "?account=loc-b").await, "at-loc-b");
    let before_b = app.acme_account("acme", "loc-b");

    let (code, doc) = app
        .put_json(
            &format!("{ACCOUNTS}/default"),
            &key,
            json!({"account": "loc-b"}),
        )
        .await;
    assert_eq!(code, 200, "{doc}");
    assert_eq!(doc["account"]["id"], "loc-b");
    assert_eq!(doc["default"], true);
    assert_eq!(
        ids(&doc["accounts"]),
        vec![("loc-b".into(), true), ("loc-a".into(), false)]
    );
    assert_eq!(token(&app, &key, "").await, "at-loc-b");
    assert_eq!(token(&app, &key, "?account=loc-a").await, "at-loc-a");
    let after_b = app.acme_account("acme", "loc-b");
    assert!(after_b.version > before_b.version, "the change is visible");
    assert!(!app.acme_account("acme", "loc-a").is_default);

    // Choosing the default again changes nothing.
    let res = app
        .api_put(
            &format!("{ACCOUNTS}/default"),
            &key,
            json!({"account": "loc-b"}),
        )
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(app.acme_account("acme", "loc-b").version, after_b.version);
}

async fn choosing_a_default_while_one_of_the_two_accounts_is_being_refreshed_is_a_503_and_changes_nothing(
    backend: Backend,
) {
    use tether::db::schema::connections;
    let (app, _fake, key) = two_accounts(backend, &[]).await;
    // A refresh holds each account's lease in turn: moving the flag would bump
    // that row's version and make the refresh's compare-and-swap fail.
    for leased in ["loc-a", "loc-b"] {
        let id = app.acme_account("acme", leased).id;
        diesel::update(connections::table.find(&id))
            .set((
                connections::lease_owner.eq(Some("another-instance")),
                connections::lease_until
                    .eq(Some(tether::db::now() + chrono::Duration::seconds(30))),
            ))
            .execute(&mut app.conn())
            .unwrap();
        let before = app.snapshot();
        let res = app
            .api_put(
                &format!("{ACCOUNTS}/default"),
                &key,
                json!({"account": "loc-b"}),
            )
            .await;
        assert_eq!(res.headers()["retry-after"], "2");
        let (code, err) = json_of(res).await;
        assert_eq!(code, 503, "{err}");
        assert_eq!(err["error"]["code"], "refresh_in_progress");
        assert_eq!(app.snapshot(), before, "nothing changed");
        assert_eq!(default_account(&app).as_deref(), Some("loc-a"));
        diesel::update(connections::table.find(&id))
            .set((
                connections::lease_owner.eq(None::<String>),
                connections::lease_until.eq(None::<chrono::NaiveDateTime>),
            ))
            .execute(&mut app.conn())
            .unwrap();
    }
    let res = app
        .api_put(
            &format!("{ACCOUNTS}/default"),
            &key,
            json!({"account": "loc-b"}),
        )
        .await;
    assert_eq!(res.status(), 200, "once the refresh is done");
    assert_eq!(token(&app, &key, "").await, "at-loc-b");
}

async fn deleting_the_default_names_the_earliest_connected_other_account_as_the_new_default(
    backend: Backend,
) {
    let (app, fake, key) = two_accounts(backend, &[]).await;
    connect_account(&app, &fake, "loc-c", "Canal Street").await;
    // loc-c is the most recently updated account: recency must not pick it.
    mount_refresh(&fake, "loc-c", "at-loc-c-2").await;
    let res = app
        .api_post(&format!("{ACCOUNTS}/refresh?account=loc-c"), &key, None)
        .await;
    assert_eq!(res.status(), 200);
    Mock::given(method("POST"))
        .and(path("/revoke"))
        .and(body_string_contains("token=rt-loc-a"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&fake.server)
        .await;

    let (code, body) = app.delete_json(ACCOUNTS, &key).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["disconnected"], "loc-a");
    assert_eq!(body["default"], "loc-b", "{body}");
    assert_eq!(body["status"], "connected");
    assert_eq!(token(&app, &key, "").await, "at-loc-b");
    assert_eq!(token(&app, &key, "?account=loc-c").await, "at-loc-c-2");
    let doc = status(&app, &key, "").await;
    assert_eq!(
        ids(&doc["accounts"]),
        vec![("loc-b".into(), true), ("loc-c".into(), false)]
    );

    // Disconnecting a non-default account leaves the default where it is.
    let (code, body) = app
        .delete_json(&format!("{ACCOUNTS}?account=loc-c"), &key)
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["disconnected"], "loc-c");
    assert_eq!(body["default"], "loc-b");
    assert_eq!(token(&app, &key, "").await, "at-loc-b");
}

async fn deleting_the_last_account_answers_default_null_and_the_token_api_404s_until_a_reconnect(
    backend: Backend,
) {
    let (app, fake, key) = app(backend, &[]).await;
    connect_account(&app, &fake, "loc-a", "Main Street").await;
    let (code, body) = app.delete_json(ACCOUNTS, &key).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["disconnected"], "loc-a");
    assert_eq!(body["default"], Value::Null);
    assert_eq!(body["status"], "not_connected");
    let (code, body) = app.get_json(&format!("{ACCOUNTS}/token"), &key).await;
    assert_eq!(code, 404, "{body}");
    assert_eq!(body["error"]["code"], "not_connected");
    let doc = status(&app, &key, "").await;
    assert_eq!(doc["status"], "not_connected");
    assert_eq!(doc["accounts"], json!([]));
    assert!(!app.acme_account("acme", "loc-a").is_default);

    // The next account connected, even one seen before, is the default.
    connect_account(&app, &fake, "loc-b", "Harbour Road").await;
    assert_eq!(token(&app, &key, "").await, "at-loc-b");
}

async fn an_unknown_account_is_a_404_everywhere_and_a_malformed_one_a_400_and_nothing_changes(
    backend: Backend,
) {
    let (app, fake, key) = two_accounts(backend, &[]).await;
    // A disconnected account counts as unknown too.
    connect_account(&app, &fake, "loc-gone", "Closed Shop").await;
    Mock::given(method("POST"))
        .and(path("/revoke"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&fake.server)
        .await;
    let res = app
        .api_delete(&format!("{ACCOUNTS}?account=loc-gone"), &key)
        .await;
    assert_eq!(res.status(), 200);
    let provider_calls = fake.calls().await;
    let before = app.snapshot();
    let long = "x".repeat(300);
    for (account, expected) in [("loc-nope", 404), ("loc-gone", 404), (long.as_str(), 400)] {
        let q = format!("account={}", urlencoding(account));
        let attempts = [
            (reqwest::Method::GET, format!("{ACCOUNTS}?{q}"), None),
            (reqwest::Method::GET, format!("{ACCOUNTS}/token?{q}"), None),
            (
                reqwest::Method::POST,
                format!("{ACCOUNTS}/refresh?{q}"),
                None,
            ),
            (reqwest::Method::DELETE, format!("{ACCOUNTS}?{q}"), None),
            (
                reqwest::Method::PUT,
                format!("{ACCOUNTS}/default"),
                Some(json!({ "account": account })),
            ),
        ];
        for (m, p, body) in attempts {
            let (code, err) = json_of(app.api(m.clone(), &p, &key, body).await).await;
            assert_eq!(code, expected, "{m} {p}: {err}");
            let message = err["error"]["message"].as_str().unwrap();
            assert!(!message.contains("token"), "{message}");
            assert!(!message.contains("at-loc"), "{message}");
            if expected == 404 {
                assert_eq!(err["error"]["code"], "not_found");
                assert_eq!(
                    message,
                    "no account with that id is connected to this provider"
                );
            } else {
                assert_eq!(err["error"]["code"], "invalid_account");
            }
        }
        let res = reqwest::Client::new()
            .get(format!(
                "{}/api/v1/tenants/acme/proxy/acme/contacts",
                app.address
            ))
            .bearer_auth(&key)
            .header("Tether-Account", account)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), expected);
    }
    // An account id is counted in characters, as the message says: 256
    // two-byte characters are an id (not connected), 257 are not.
    for (account, expected) in [("é".repeat(256), 404), ("é".repeat(257), 400)] {
        let p = format!("{ACCOUNTS}?account={}", urlencoding(&account));
        let (code, err) = json_of(app.api(reqwest::Method::GET, &p, &key, None).await).await;
        assert_eq!(
            code,
            expected,
            "{} characters: {err}",
            account.chars().count()
        );
    }
    assert_eq!(app.snapshot(), before, "nothing changed");
    assert_eq!(fake.calls().await, provider_calls, "no provider was called");
    assert_eq!(default_account(&app).as_deref(), Some("loc-a"));
}

fn urlencoding(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

async fn the_dashboard_shows_each_account_with_its_own_forms_and_make_default_switches_it(
    backend: Backend,
) {
    let (app, fake, key) = two_accounts(backend, &[]).await;
    let page = app.page("/settings/integrations").await;
    let card = &page[page.find(r#"id="card-acme""#).unwrap()..];
    let card = &card[..card.find("</article>").unwrap()];
    let a = card.find(r#"data-account="loc-a""#).expect("loc-a listed");
    let b = card.find(r#"data-account="loc-b""#).expect("loc-b listed");
    assert!(a < b, "the default comes first");
    let end = card
        .find(r#"data-action="connect""#)
        .expect("the Connect button");
    let (item_a, item_b) = (&card[a..b], &card[b..end]);
    assert!(
        item_a.contains("Main Street")
            && item_a.contains("Default: used when the CRM names no account."),
        "{item_a}"
    );
    assert!(
        item_b.contains("Harbour Road") && !item_b.contains("Default: used when"),
        "{item_b}"
    );
    for (item, id) in [(item_a, "loc-a"), (item_b, "loc-b")] {
        let field = format!(r#"<input type="hidden" name="account" value="{id}">"#);
        for action in ["refresh", "disconnect"] {
            let form = &item[item
                .find(&format!(r#"action="/oauth/acme/{action}""#))
                .unwrap_or_else(|| panic!("{action} form for {id}: {item}"))..];
            let form = &form[..form.find("</form>").unwrap()];
            assert!(form.contains(&field), "{form}");
            assert!(form.contains(r#"name="csrf""#), "{form}");
        }
    }
    assert!(
        !item_a.contains("/oauth/acme/default"),
        "the default has no Make default"
    );
    let make = &item_b[item_b
        .find(r#"action="/oauth/acme/default""#)
        .expect("Make default")..];
    let make = &make[..make.find("</form>").unwrap()];
    assert!(make.contains(r#"name="account" value="loc-b""#) && make.contains("Make default"));
    assert_eq!(
        card.matches(r#"data-action="connect""#).count(),
        1,
        "one Connect"
    );

    // Without JavaScript: post, and back to the card's anchor, where the
    // outcome is shown.
    let csrf = csrf_in(&page).unwrap();
    let res = app
        .post_form(
            "/oauth/acme/default",
            &[("csrf", csrf.as_str()), ("account", "loc-b")],
        )
        .await;
    assert_eq!(res.status(), 303);
    assert_eq!(
        res.headers()["location"],
        "/settings/integrations#card-acme"
    );
    assert_eq!(token(&app, &key, "").await, "at-loc-b");
    let page = app.page("/settings/integrations").await;
    let card = &page[page.find(r#"id="card-acme""#).unwrap()..];
    let card = &card[..card.find("</article>").unwrap()];
    assert!(
        card.contains("Harbour Road is now the default Acme CRM account."),
        "the outcome is on the card: {page}"
    );
    assert!(
        card.find(r#"data-account="loc-b""#) < card.find(r#"data-account="loc-a""#),
        "the new default comes first"
    );

    // A wrong CSRF token changes nothing; neither does an unknown account.
    let before = app.snapshot();
    let res = app
        .post_form(
            "/oauth/acme/default",
            &[("csrf", "wrong"), ("account", "loc-a")],
        )
        .await;
    assert_eq!(res.status(), 403);
    let res = app
        .post_form(
            "/oauth/acme/default",
            &[("csrf", csrf.as_str()), ("account", "loc-nope")],
        )
        .await;
    assert_eq!(res.status(), 404);
    let res = app
        .post_form("/oauth/acme/default", &[("csrf", csrf.as_str())])
        .await;
    assert_eq!(res.status(), 400);
    assert_eq!(app.snapshot(), before);

    // The browser's Refresh and Disconnect act on the account they name.
    mount_refresh(&fake, "loc-a", "at-loc-a-2").await;
    let res = app
        .post_form(
            "/oauth/acme/refresh",
            &[("csrf", csrf.as_str()), ("account", "loc-a")],
        )
        .await;
    assert_eq!(res.status(), 303);
    assert_eq!(token(&app, &key, "?account=loc-a").await, "at-loc-a-2");
    assert_eq!(token(&app, &key, "").await, "at-loc-b");
    Mock::given(method("POST"))
        .and(path("/revoke"))
        .and(body_string_contains("token=rt-loc-a"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&fake.server)
        .await;
    let res = app
        .post_form(
            "/oauth/acme/disconnect",
            &[("csrf", csrf.as_str()), ("account", "loc-a")],
        )
        .await;
    assert_eq!(res.status(), 303);
    assert!(app.acme_account("acme", "loc-a").token_ciphertext.is_none());
    assert_eq!(token(&app, &key, "").await, "at-loc-b");
}

/// Seeds rows the way Tether wrote them before the default flag, then
/// applies the migration that adds it.
async fn the_migration_makes_the_row_the_old_rule_served_the_default_if_it_holds_tokens(
    backend: Backend,
) {
    use tether::db::schema::connections;
    let db = TestDb::new(backend);
    let pool = tether::db::connect(&db.url, 1).unwrap();
    let mut pooled = pool.get().unwrap();
    let conn: &mut tether::db::DbConn = &mut pooled;
    tether::db::migrate(conn).unwrap();
    let down = match backend {
        Backend::Sqlite => {
            include_str!("../../migrations/sqlite/2026-12-01-000005_default_account/down.sql")
        }
        Backend::Postgres => {
            include_str!("../../migrations/postgres/2026-12-01-000005_default_account/down.sql")
        }
    };
    let version = "20261201000005";
    diesel::connection::SimpleConnection::batch_execute(conn, down).unwrap();
    let removed = diesel::sql_query(format!(
        "DELETE FROM __diesel_schema_migrations WHERE version = '{version}'"
    ))
    .execute(conn)
    .unwrap();
    assert_eq!(removed, 1, "the migration's version");

    let one = Tenant::create(conn, "one", "One").unwrap();
    let two = Tenant::create(conn, "two", "Two").unwrap();
    let t0 = tether::db::now() - chrono::Duration::hours(3);
    let seed =
        |conn: &mut tether::db::DbConn, tenant: &str, account: &str, tokens: bool, age_h: i64| {
            let id = format!("{tenant}-{account}");
            diesel::insert_into(connections::table)
                .values((
                    connections::id.eq(&id),
                    connections::tenant_id.eq(tenant),
                    connections::provider.eq("acme"),
                    connections::account_id.eq(account),
                    connections::status.eq(if tokens { "connected" } else { "disconnected" }),
                    connections::scopes.eq("[]"),
                    connections::token_ciphertext.eq(tokens.then(|| vec![1u8, 2, 3])),
                    connections::key_id.eq(tokens.then_some("k1")),
                    connections::version.eq(0i64),
                    connections::failure_count.eq(0),
                    connections::metadata.eq("{}"),
                    connections::created_at.eq(t0),
                    connections::updated_at.eq(t0 + chrono::Duration::hours(age_h)),
                ))
                .execute(conn)
                .unwrap();
            id
        };
    // Tenant one: the most recently updated row holding tokens was served,
    // not the newer one without tokens nor the older one.
    let older = seed(conn, &one.id, "older", true, 0);
    let served = seed(conn, &one.id, "served", true, 1);
    let erased = seed(conn, &one.id, "erased", false, 2);
    // Tenant two: only an erased row, so no default.
    let lone = seed(conn, &two.id, "lone", false, 2);

    assert_eq!(tether::db::migrate(conn).unwrap().len(), 1);
    let flag = |conn: &mut tether::db::DbConn, id: &str| {
        Connection::by_id(conn, &tether::ids::ConnectionId::known(id))
            .unwrap()
            .is_default
    };
    assert!(flag(conn, &served));
    assert!(!flag(conn, &older));
    assert!(!flag(conn, &erased));
    assert!(!flag(conn, &lone));
    assert_eq!(
        Connection::default_for(conn, &one.id, &tether::ids::ProviderKey::known("acme"))
            .unwrap()
            .map(|c| c.account_id.to_string()),
        Some("served".to_string())
    );
    assert!(
        Connection::default_for(conn, &two.id, &tether::ids::ProviderKey::known("acme"))
            .unwrap()
            .is_none()
    );
    // The index allows one default per (tenant, provider).
    let second = diesel::update(connections::table.find(&older))
        .set(connections::is_default.eq(true))
        .execute(conn);
    assert!(second.is_err(), "a second default is refused");
}
