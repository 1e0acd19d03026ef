//! The proxy respects the provider (issue 23, point 7): an idempotent call
//! the provider answers 429 or 503 with a `Retry-After` within the cap is
//! retried after it, a bounded number of times, and `Tether-Proxy-Retries`
//! says how many; a POST never is, nor a call whose `Retry-After` is beyond
//! the cap or unreadable. A provider's declared per-account budget is spent
//! before the provider is called, by every instance together: past it,
//! Tether answers 429 `provider_budget_spent` itself.

use super::API;
use crate::backend_tests;
use crate::helpers::{
    error_of, service, spawn_app_with_acme, Backend, FakeProvider, TestApp, ACCOUNT,
};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

backend_tests!(
    a_429_with_retry_after_is_retried_after_it_and_the_caller_gets_the_answer,
    a_503_with_a_past_http_date_is_retried_and_one_without_retry_after_is_not,
    retries_stop_at_the_configured_number_and_the_last_429_goes_back_with_its_count,
    a_post_answered_429_is_never_retried,
    a_retry_after_beyond_the_cap_goes_back_at_once_as_the_provider_sent_it,
    an_unreadable_retry_after_is_not_retried,
    past_a_declared_budget_tether_answers_429_itself_without_calling_the_provider,
    two_instances_spend_one_budget_together,
    budget_buckets_no_window_counts_are_pruned_by_housekeeping,
    a_call_refused_by_one_budget_spends_none_of_the_others,
);

const CONTACTS: &str = "/api/contacts";

/// An app with `acme` (with `toml_extra` in its providers-file table and
/// `extra` settings), tenant `acme` connected (access token `at-seed-rt-1`,
/// fresh for an hour) and an API key for it.
async fn proxied(
    backend: Backend,
    toml_extra: &str,
    extra: &[(&str, &str)],
) -> (TestApp, FakeProvider, String) {
    let fake = FakeProvider::start().await;
    let app = spawn_app_with_acme(backend, &fake, toml_extra, extra).await;
    let tenant = app.ensure_tenant("acme");
    app.seed(&tenant.id, ACCOUNT, "rt-1", 3600, 3000);
    let key = app.api_key(Some("acme"), false);
    (app, fake, key)
}

/// The provider's answers to `verb /api/contacts`: `first` for the first
/// `times` calls, then a 200.
async fn answers(fake: &FakeProvider, verb: &str, first: ResponseTemplate, times: u64) {
    Mock::given(method(verb))
        .and(path(CONTACTS))
        .respond_with(first)
        .up_to_n_times(times)
        .with_priority(1)
        .mount(&fake.server)
        .await;
    ok(fake, verb).await;
}

/// The provider's 200 to `verb /api/contacts`.
async fn ok(fake: &FakeProvider, verb: &str) {
    Mock::given(method(verb))
        .and(path(CONTACTS))
        .respond_with(
            ResponseTemplate::new(200).set_body_raw(r#"{"contacts":[]}"#, "application/json"),
        )
        .with_priority(2)
        .mount(&fake.server)
        .await;
}

fn retries_of(res: &reqwest::Response) -> Option<String> {
    res.headers()
        .get("tether-proxy-retries")
        .map(|v| v.to_str().unwrap().to_string())
}

fn too_many(retry_after: &str) -> ResponseTemplate {
    ResponseTemplate::new(429)
        .insert_header("retry-after", retry_after)
        .set_body_raw(r#"{"message":"slow down"}"#, "application/json")
}

async fn a_429_with_retry_after_is_retried_after_it_and_the_caller_gets_the_answer(
    backend: Backend,
) {
    let (app, fake, key) = proxied(backend, "", &[]).await;
    answers(&fake, "GET", too_many("1"), 1).await;
    let res = app
        .api_get(&format!("{API}/acme/proxy/acme/contacts"), &key)
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(retries_of(&res).as_deref(), Some("1"));
    assert_eq!(res.text().await.unwrap(), r#"{"contacts":[]}"#);
    assert_eq!(fake.calls_to(CONTACTS).await, 2, "the call and one retry");
}

async fn a_503_with_a_past_http_date_is_retried_and_one_without_retry_after_is_not(
    backend: Backend,
) {
    let (app, fake, key) = proxied(backend, "", &[]).await;
    let past =
        ResponseTemplate::new(503).insert_header("retry-after", "Sun, 06 Nov 1994 08:49:37 GMT");
    answers(&fake, "GET", past, 1).await;
    let res = app
        .api_get(&format!("{API}/acme/proxy/acme/contacts"), &key)
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(retries_of(&res).as_deref(), Some("1"));
    assert_eq!(fake.calls_to(CONTACTS).await, 2);

    // A 503 that does not say when: the caller decides, at once.
    Mock::given(method("DELETE"))
        .and(path("/api/contacts/c1"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&fake.server)
        .await;
    let res = app
        .api_delete(&format!("{API}/acme/proxy/acme/contacts/c1"), &key)
        .await;
    assert_eq!(res.status(), 503);
    assert_eq!(retries_of(&res).as_deref(), Some("0"));
    assert_eq!(fake.calls_to("/api/contacts/c1").await, 1);
}

async fn retries_stop_at_the_configured_number_and_the_last_429_goes_back_with_its_count(
    backend: Backend,
) {
    let (app, fake, key) = proxied(backend, "", &[("TETHER_PROXY_RETRY_MAX", "3")]).await;
    answers(&fake, "PUT", too_many("0"), 100).await;
    let res = app
        .api_put(
            &format!("{API}/acme/proxy/acme/contacts"),
            &key,
            serde_json::json!({"name": "Ada"}),
        )
        .await;
    assert_eq!(res.status(), 429);
    assert_eq!(retries_of(&res).as_deref(), Some("3"));
    assert_eq!(res.headers()["retry-after"], "0");
    assert_eq!(res.text().await.unwrap(), r#"{"message":"slow down"}"#);
    assert_eq!(
        fake.calls_to(CONTACTS).await,
        4,
        "the call and three retries"
    );
}

async fn a_post_answered_429_is_never_retried(backend: Backend) {
    let (app, fake, key) = proxied(backend, "", &[]).await;
    answers(&fake, "POST", too_many("1"), 1).await;
    let res = app
        .api_post(
            &format!("{API}/acme/proxy/acme/contacts"),
            &key,
            Some(serde_json::json!({"name": "Ada"})),
        )
        .await;
    assert_eq!(res.status(), 429);
    assert_eq!(retries_of(&res).as_deref(), Some("0"));
    assert_eq!(res.headers()["retry-after"], "1");
    assert_eq!(fake.calls_to(CONTACTS).await, 1, "a POST is sent once");
}

async fn a_retry_after_beyond_the_cap_goes_back_at_once_as_the_provider_sent_it(backend: Backend) {
    let (app, fake, key) = proxied(backend, "", &[("TETHER_PROXY_RETRY_MAX_WAIT_SECS", "5")]).await;
    answers(&fake, "GET", too_many("6"), 1).await;
    let res = app
        .api_get(&format!("{API}/acme/proxy/acme/contacts"), &key)
        .await;
    assert_eq!(res.status(), 429);
    assert_eq!(res.headers()["retry-after"], "6");
    assert_eq!(retries_of(&res).as_deref(), Some("0"));
    assert_eq!(fake.calls_to(CONTACTS).await, 1);
}

async fn an_unreadable_retry_after_is_not_retried(backend: Backend) {
    let (app, fake, key) = proxied(backend, "", &[]).await;
    answers(&fake, "GET", too_many("soon"), 1).await;
    let res = app
        .api_get(&format!("{API}/acme/proxy/acme/contacts"), &key)
        .await;
    assert_eq!(res.status(), 429);
    assert_eq!(res.headers()["retry-after"], "soon");
    assert_eq!(retries_of(&res).as_deref(), Some("0"));
    assert_eq!(fake.calls_to(CONTACTS).await, 1);
}

/// A budget of `calls` per hour for `acme`'s accounts.
fn budget(calls: u32) -> String {
    format!("api_budgets = [{{ calls = {calls}, window = \"1h\" }}, {{ calls = 1000, window = \"10s\" }}]")
}

async fn past_a_declared_budget_tether_answers_429_itself_without_calling_the_provider(
    backend: Backend,
) {
    let (app, fake, key) = proxied(backend, &budget(3), &[]).await;
    ok(&fake, "GET").await;
    let url = format!("{API}/acme/proxy/acme/contacts");
    for _ in 0..3 {
        assert_eq!(app.api_get(&url, &key).await.status(), 200);
    }
    let res = app.api_get(&url, &key).await;
    let retry_after: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    // Room again once the first calls leave the hour (and their tenth of it).
    assert!((3_000..=3_960).contains(&retry_after), "{retry_after}");
    assert_eq!(
        error_of(res).await,
        (429, "provider_budget_spent".to_string())
    );
    assert_eq!(
        fake.calls_to(CONTACTS).await,
        3,
        "the fourth never left Tether"
    );
}

async fn two_instances_spend_one_budget_together(backend: Backend) {
    let (app, fake, key) = proxied(backend, &budget(5), &[]).await;
    ok(&fake, "GET").await;
    let (second, _state) = app.second_instance(&[]).await;
    let path = format!("{API}/acme/proxy/acme/contacts");
    let calls = (0..24).map(|i| {
        let base = if i % 2 == 0 {
            app.address.clone()
        } else {
            second.clone()
        };
        let (url, key) = (format!("{base}{path}"), key.clone());
        async move {
            let res = service().get(url).bearer_auth(key).send().await.unwrap();
            res.status().as_u16()
        }
    });
    let statuses = futures_util::future::join_all(calls).await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        19,
        "{statuses:?}"
    );
    assert_eq!(
        fake.calls_to(CONTACTS).await,
        5,
        "the provider saw the budget, no more"
    );
}

async fn budget_buckets_no_window_counts_are_pruned_by_housekeeping(backend: Backend) {
    use diesel::prelude::*;
    use tether::db::schema::proxy_budgets as pb;
    let (app, fake, key) = proxied(backend, &budget(5), &[]).await;
    ok(&fake, "GET").await;
    let url = format!("{API}/acme/proxy/acme/contacts");
    assert_eq!(app.api_get(&url, &key).await.status(), 200);
    let rows = |app: &TestApp| -> Vec<(i64, i64)> {
        pb::table
            .select((pb::window_secs, pb::bucket))
            .order((pb::window_secs, pb::bucket))
            .load(&mut *app.conn())
            .unwrap()
    };
    let live = rows(&app);
    assert_eq!(live.len(), 2, "one bucket of each budget: {live:?}");
    // A bucket of yesterday's hour, which no window counts any more.
    diesel::insert_into(pb::table)
        .values((
            pb::provider.eq("acme"),
            pb::account_id.eq(ACCOUNT),
            pb::window_secs.eq(3_600_i64),
            pb::bucket.eq(1_i64),
            pb::spent.eq(5_i64),
            pb::expires_at.eq(tether::db::now() - chrono::Duration::days(1)),
        ))
        .execute(&mut *app.conn())
        .unwrap();
    assert_eq!(rows(&app).len(), 3);
    tether::refresh::scheduler::Scheduler::new(app.state.clone())
        .tick()
        .await
        .unwrap();
    assert_eq!(rows(&app), live, "only the expired bucket went");
}

/// While SQLite refuses writes (another writer holds its lock past the
/// busy timeout), proxied calls go on: this instance keeps to the budget
/// with its own count. SQLite only: the outage is its write lock (on
/// PostgreSQL, the same fallback runs on the same `database_unavailable`).
#[actix_web::test]
async fn while_the_database_refuses_writes_each_instance_keeps_to_the_budget_alone() {
    let (app, fake, key) = proxied(Backend::Sqlite, &budget(3), &[]).await;
    ok(&fake, "GET").await;
    let lock = crate::helpers::WriteLock::take(&app.db.url);
    let url = format!("{}{API}/acme/proxy/acme/contacts", app.address);
    let calls = (0..5).map(|_| {
        let (url, key) = (url.clone(), key.clone());
        async move {
            let res = service().get(url).bearer_auth(key).send().await.unwrap();
            res.status().as_u16()
        }
    });
    let statuses = futures_util::future::join_all(calls).await;
    drop(lock);
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        3,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        2,
        "{statuses:?}"
    );
    assert_eq!(fake.calls_to(CONTACTS).await, 3);
}

async fn a_call_refused_by_one_budget_spends_none_of_the_others(backend: Backend) {
    use diesel::prelude::*;
    use tether::db::schema::proxy_budgets as pb;
    let budgets =
        r#"api_budgets = [{ calls = 1000, window = "1h" }, { calls = 3, window = "1d" }]"#;
    let (app, fake, key) = proxied(backend, budgets, &[]).await;
    ok(&fake, "GET").await;
    let url = format!("{API}/acme/proxy/acme/contacts");
    for _ in 0..3 {
        assert_eq!(app.api_get(&url, &key).await.status(), 200);
    }
    let res = app.api_get(&url, &key).await;
    assert_eq!(
        error_of(res).await,
        (429, "provider_budget_spent".to_string())
    );
    // The hour's budget took the fourth call before the day's refused it:
    // undone with it.
    let hour: Vec<i64> = pb::table
        .filter(pb::window_secs.eq(3_600_i64))
        .select(pb::spent)
        .load(&mut *app.conn())
        .unwrap();
    assert_eq!(hour.iter().sum::<i64>(), 3, "{hour:?}");
    assert_eq!(fake.calls_to(CONTACTS).await, 3);
}
