//! A tenant's events (`GET /api/v1/tenants/{tenant}/events`, issue 23 point
//! 8): newest first, a page at a time by an opaque cursor that neither
//! repeats nor skips an event when new ones arrive between pages; filtered
//! by provider, account and kind; bad filters and cursors are a 400 that
//! says why; another tenant's key gets a 403; no event carries a secret.

use super::{connected, mount_refresh, unconnected, API};
use crate::backend_tests;
use crate::helpers::{error_of, Backend, TestApp};
use diesel::prelude::*;
use serde_json::Value;
use tether::db::models::connection::Connection;
use tether::db::models::event::{Actor, Event, EventKind, NewEvent};
use tether::ids::ProviderKey;

backend_tests!(
    events_come_newest_first_a_page_at_a_time_without_a_gap_or_a_repeat_while_new_ones_arrive,
    each_filter_narrows_the_events_and_filters_combine,
    bad_filters_and_a_bad_cursor_are_a_400_that_says_why,
    another_tenants_key_may_not_read_a_tenants_events,
    the_events_of_a_connect_and_a_refresh_carry_no_secret,
);

const EVENTS: &str = "/api/v1/tenants/acme/events";
/// When the events a test records happened, less their `secs_ago`: a
/// fixed moment (2026-12-07 12:00 UTC), not the clock.
const BASE: i64 = 1_796_644_800;

/// Records an event of tenant `acme`'s `provider` (of `connection`, if
/// any) as Tether does, then dates it `secs_ago` seconds before [`BASE`]
/// (so that two events can have the same time).
fn record(
    app: &TestApp,
    connection: Option<&Connection>,
    provider: &str,
    kind: EventKind,
    secs_ago: i64,
) -> Event {
    use tether::db::schema::events;
    let tenant = app.tenant("acme").id;
    let event = Event::record(
        &mut app.conn(),
        &NewEvent {
            tenant_id: &tenant,
            connection_id: connection.map(|c| &c.id),
            provider: &ProviderKey::known(provider),
            kind,
            actor: &Actor::Scheduler,
            detail: Some("what happened"),
        },
    )
    .unwrap();
    let base = chrono::DateTime::from_timestamp(BASE, 0)
        .unwrap()
        .naive_utc();
    let at = base - chrono::Duration::seconds(secs_ago);
    diesel::update(events::table.find(&event.id))
        .set(events::created_at.eq(at))
        .execute(&mut app.conn())
        .unwrap();
    Event {
        created_at: at,
        ..event
    }
}

/// A page: the events' ids and the `next` cursor.
async fn page(app: &TestApp, key: &str, query: &str) -> (Vec<String>, Option<String>) {
    let (status, body) = app.get_json(&format!("{EVENTS}?{query}"), key).await;
    assert_eq!(status, 200, "{query}: {body}");
    (ids(&body), body["next"].as_str().map(str::to_string))
}

fn ids(body: &Value) -> Vec<String> {
    body["events"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect()
}

async fn events_come_newest_first_a_page_at_a_time_without_a_gap_or_a_repeat_while_new_ones_arrive(
    backend: Backend,
) {
    let (app, _fake, key) = unconnected(backend).await;
    let t = app.tenant("acme");
    let c = app.seed(&t.id, "acct-1", "rt-1", 3600, 3000);
    let e1 = record(&app, Some(&c), "acme", EventKind::Connected, 50);
    let e2 = record(&app, Some(&c), "acme", EventKind::Refreshed, 40);
    let e3 = record(&app, Some(&c), "acme", EventKind::Refreshed, 40);
    let e4 = record(&app, None, "acme", EventKind::SettingsChanged, 30);
    let e5 = record(&app, Some(&c), "acme", EventKind::RefreshFailed, 20);
    // e2 and e3 have the same time: the id orders them, the newer first.
    let (tied_first, tied_second) = if e2.id > e3.id {
        (&e2, &e3)
    } else {
        (&e3, &e2)
    };
    let newest_first = [&e5, &e4, tied_first, tied_second, &e1].map(|e| e.id.clone());

    let (first, next) = page(&app, &key, "limit=2").await;
    assert_eq!(first, newest_first[..2]);
    let next = next.expect("a next page");
    // An event arrives between the pages: it is newer than every page
    // handed out, so it shifts none of them.
    let arrived = record(&app, Some(&c), "acme", EventKind::Refreshed, 0);
    let (second, next) = page(&app, &key, &format!("limit=2&cursor={next}")).await;
    assert_eq!(second, newest_first[2..4], "no gap, no repeat");
    let (third, next) = page(&app, &key, &format!("limit=2&cursor={}", next.unwrap())).await;
    assert_eq!(third, newest_first[4..]);
    assert_eq!(next, None, "the last page says so");
    // The tie is crossed one event a page as well.
    let (one, next) = page(&app, &key, "limit=1").await;
    assert_eq!(
        one,
        [arrived.id.as_str()],
        "a new first page starts with it"
    );
    let mut seen = one;
    let mut cursor = next;
    while let Some(c) = cursor {
        let (events, next) = page(&app, &key, &format!("limit=1&cursor={c}")).await;
        seen.extend(events);
        cursor = next;
    }
    let mut all = vec![arrived.id.clone()];
    all.extend(newest_first.iter().cloned());
    assert_eq!(seen, all);

    // Each event as the API tells it.
    let (status, body) = app.get_json(EVENTS, &key).await;
    assert_eq!(status, 200);
    assert_eq!(body["next"], Value::Null, "six events fit the default page");
    let failed = &body["events"][1];
    assert_eq!(failed["id"], e5.id.as_str());
    assert_eq!(failed["kind"], "refresh_failed");
    assert_eq!(failed["provider"], "acme");
    assert_eq!(failed["account"]["id"], "acct-1");
    assert_eq!(failed["actor"], "scheduler");
    assert_eq!(failed["detail"], "what happened");
    let at = e5.created_at.and_utc().format("%Y-%m-%dT%H:%M:%SZ");
    assert_eq!(failed["created_at"], at.to_string());
    assert_eq!(
        body["events"][2]["account"],
        Value::Null,
        "of no connection"
    );
}

async fn each_filter_narrows_the_events_and_filters_combine(backend: Backend) {
    let (app, _fake, key) = unconnected(backend).await;
    let t = app.tenant("acme");
    let one = app.seed(&t.id, "acct-1", "rt-1", 3600, 3000);
    let two = app.seed(&t.id, "acct-2", "rt-2", 3600, 3000);
    let a = record(&app, Some(&one), "acme", EventKind::Connected, 60);
    let b = record(&app, Some(&two), "acme", EventKind::Connected, 50);
    let c = record(&app, Some(&one), "acme", EventKind::NeedsReconnect, 40);
    let d = record(&app, None, "demo", EventKind::SettingsChanged, 30);
    let e = record(&app, Some(&two), "acme", EventKind::Revoked, 20);

    let (all, _) = page(&app, &key, "").await;
    assert_eq!(all, [&e, &d, &c, &b, &a].map(|x| x.id.clone()));
    let (acme, _) = page(&app, &key, "provider=acme").await;
    assert_eq!(acme, [&e, &c, &b, &a].map(|x| x.id.clone()));
    let (demo, _) = page(&app, &key, "provider=demo").await;
    assert_eq!(demo, [d.id.as_str()]);
    let (first, _) = page(&app, &key, "account=acct-1").await;
    assert_eq!(first, [&c, &a].map(|x| x.id.clone()));
    let (connected, _) = page(&app, &key, "kind=connected").await;
    assert_eq!(connected, [&b, &a].map(|x| x.id.clone()));
    let (attention, _) = page(&app, &key, "kind=needs_reconnect,revoked").await;
    assert_eq!(attention, [&e, &c].map(|x| x.id.clone()));
    let (both, _) = page(&app, &key, "provider=acme&account=acct-2&kind=connected").await;
    assert_eq!(both, [b.id.as_str()]);
    let (none, next) = page(&app, &key, "account=acct-9").await;
    assert!(none.is_empty());
    assert_eq!(next, None);
}

async fn bad_filters_and_a_bad_cursor_are_a_400_that_says_why(backend: Backend) {
    let (app, _fake, key) = unconnected(backend).await;
    let t = app.tenant("acme");
    let c = app.seed(&t.id, "acct-1", "rt-1", 3600, 3000);
    record(&app, Some(&c), "acme", EventKind::Connected, 10);
    let refused = |query: &'static str, code: &'static str, says: &'static str| {
        let app = &app;
        let key = &key;
        async move {
            let res = app.api_get(&format!("{EVENTS}?{query}"), key).await;
            let status = res.status().as_u16();
            let body: Value = res.json().await.unwrap();
            assert_eq!(status, 400, "{query}: {body}");
            assert_eq!(body["error"]["code"], code, "{query}: {body}");
            let message = body["error"]["message"].as_str().unwrap();
            assert!(message.contains(says), "{query}: {message}");
        }
    };
    refused("provider=nope", "invalid_query", "provider 'nope'").await;
    refused("provider=nope", "invalid_query", "acme").await;
    refused(
        "kind=connected,nonsense",
        "invalid_query",
        "kind 'nonsense'",
    )
    .await;
    refused("kind=nonsense", "invalid_query", "needs_reconnect").await;
    refused("limit=0", "invalid_query", "limit").await;
    refused("limit=201", "invalid_query", "1 to 200").await;
    refused("limit=many", "invalid_query", "limit is a number").await;
    refused("cursor=garbage", "invalid_cursor", "next").await;
    refused("cursor=MTIzLnh5eg", "invalid_cursor", "next").await;
    let long = format!("{EVENTS}?account={}", "a".repeat(300));
    assert_eq!(
        error_of(app.api_get(&long, &key).await).await,
        (400, "invalid_account".to_string())
    );
}

async fn another_tenants_key_may_not_read_a_tenants_events(backend: Backend) {
    let (app, _fake, global) = unconnected(backend).await;
    let t = app.tenant("acme");
    let c = app.seed(&t.id, "acct-1", "rt-1", 3600, 3000);
    record(&app, Some(&c), "acme", EventKind::Connected, 10);
    app.ensure_tenant("other");
    let others = app.api_key(Some("other"), false);
    let own = app.api_key(Some("acme"), false);
    assert_eq!(
        error_of(app.api_get(EVENTS, &others).await).await,
        (403, "forbidden".to_string())
    );
    let (status, body) = app.get_json(EVENTS, &own).await;
    assert_eq!(status, 200);
    assert_eq!(ids(&body).len(), 1);
    let (status, body) = app.get_json(&format!("{API}/other/events"), &others).await;
    assert_eq!((status, ids(&body).len()), (200, 0), "its own tenant's");
    assert_eq!(
        error_of(app.api_get(&format!("{API}/nobody/events"), &global).await).await,
        (404, "not_found".to_string())
    );
}

async fn the_events_of_a_connect_and_a_refresh_carry_no_secret(backend: Backend) {
    let (app, fake, key) = connected(backend).await;
    mount_refresh(&fake, "at-2").await;
    let res = app
        .api_post(&format!("{API}/acme/connections/acme/refresh"), &key, None)
        .await;
    assert_eq!(res.status(), 200);
    let res = app.api_get(EVENTS, &key).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let text = res.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap();
    let kinds: Vec<&str> = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["refreshed", "connected"], "{text}");
    assert_eq!(body["events"][0]["actor"], "api:crm");
    for secret in ["at-1", "rt-1", "at-2", key.as_str(), "acme-secret-value"] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
}
