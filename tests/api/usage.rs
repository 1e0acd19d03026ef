//! What the CRM does with each connection, as a client admin sees it on the
//! Integrations page: each account's last use and its uses over 7 days
//! (counted in memory, written by a flush), and the activity list with the
//! account each event concerns and who did it, in people's words, newest
//! first, on the card and on a paged page of its own.

use crate::backend_tests;
use crate::helpers::{
    assert_error_page, spawn_app_with_acme, Backend, Browser, FakeProvider, TestApp, OWNER,
    PASSWORD,
};
use diesel::prelude::*;
use std::time::{Duration, Instant};
use tether::db::models::api_key::{ApiKey, Rights};
use tether::db::models::event::{Actor, Event, EventKind, NewEvent};
use tether::db::now;
use tether::ids::{ConnectionId, ProviderKey, TenantId};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

backend_tests!(
    token_reads_and_proxy_calls_of_two_keys_show_as_last_use_and_seven_day_count,
    uses_stay_in_memory_until_a_flush_adds_them_to_the_rows,
    activity_is_newest_first_with_accounts_human_actors_and_folded_failures,
    the_full_activity_page_is_paged_by_cursor_and_shows_only_the_sessions_tenant,
    the_activity_page_of_an_unknown_or_disabled_provider_is_a_404_page,
    usage_older_than_eight_days_is_pruned_by_housekeeping,
);

const TOKEN: &str = "/api/v1/tenants/acme/connections/acme/token";

/// An app with `acme` against a fake provider, `TETHER_CRM_NAME` "zest
/// CRM" (lower case, to see it capitalised where a line starts), the admin
/// of tenant `acme` signed in, and two acme accounts: `acct-1` ("Main
/// Street Dental", the default) and `acct-2` (no name).
async fn app(backend: Backend, flush_ms: &str) -> (TestApp, FakeProvider, [ConnectionId; 2]) {
    let fake = FakeProvider::start().await;
    let vars = [
        ("TETHER_CRM_NAME", "zest CRM"),
        ("TETHER_USAGE_FLUSH_MS", flush_ms),
    ];
    let app = spawn_app_with_acme(backend, &fake, "", &vars).await;
    let tenant = app.create_admin("acme", OWNER);
    assert_eq!(app.login(OWNER, PASSWORD).await.status(), 303);
    let one = app.seed(tenant.id.as_str(), "acct-1", "rt-1", 3600, 3000);
    let two = app.seed(tenant.id.as_str(), "acct-2", "rt-2", 3600, 3000);
    use tether::db::schema::connections;
    diesel::update(connections::table.find(one.id.as_str()))
        .set(connections::account_name.eq(Some("Main Street Dental")))
        .execute(&mut app.conn())
        .unwrap();
    (app, fake, [one.id, two.id])
}

/// A new API key of tenant `acme` named `name`; its secret.
fn key(app: &TestApp, name: &str) -> String {
    let tenant = app.tenant("acme");
    let (_, secret) = ApiKey::create(
        &mut app.conn(),
        name,
        Some(&tenant.id),
        &Rights::unlimited(false),
    )
    .unwrap();
    secret.expose().clone()
}

async fn read_token(app: &TestApp, key: &str, account: &str) {
    let res = app
        .api_get(&format!("{TOKEN}?account={account}"), key)
        .await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
}

async fn proxy_call(app: &TestApp, key: &str, account: &str) {
    let res = app
        .client
        .get(format!(
            "{}/api/v1/tenants/acme/proxy/acme/contacts",
            app.address
        ))
        .bearer_auth(key)
        .header("tether-account", account)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
}

/// What the card says of an account's use: its `data-usage` paragraph.
fn usage_of(html: &str, account: &str) -> String {
    // On its card (the list of what needs the admin names accounts too).
    let cards = html.find("<article").expect("a card");
    let at = cards
        + html[cards..]
            .find(&format!("data-account=\"{account}\""))
            .unwrap_or_else(|| panic!("no account {account} on the page: {html}"));
    let rest = &html[at..];
    let start = rest.find("data-usage>").expect("a usage line") + "data-usage>".len();
    let end = rest[start..].find("</p>").unwrap();
    rest[start..start + end].to_string()
}

/// Polls the dashboard until `account`'s usage line contains `wanted`
/// (the flusher runs on its own interval); fails after 20 s.
async fn until_usage(app: &TestApp, account: &str, wanted: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let html = app.page("/settings/integrations").await;
        let line = usage_of(&html, account);
        if line.contains(wanted) {
            return line;
        }
        assert!(Instant::now() < deadline, "never got {wanted:?}: {line}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn token_reads_and_proxy_calls_of_two_keys_show_as_last_use_and_seven_day_count(
    backend: Backend,
) {
    let (app, fake, _) = app(backend, "20").await;
    Mock::given(method("GET"))
        .and(path("/api/contacts"))
        .respond_with(ResponseTemplate::new(200).set_body_string("[]"))
        .mount(&fake.server)
        .await;
    let html = app.page("/settings/integrations").await;
    assert_eq!(usage_of(&html, "acct-1"), "Not used by zest CRM yet");
    assert_eq!(usage_of(&html, "acct-2"), "Not used by zest CRM yet");

    let (chatbot, sync) = (key(&app, "chatbot"), key(&app, "sync"));
    for _ in 0..3 {
        read_token(&app, &chatbot, "acct-1").await;
    }
    proxy_call(&app, &sync, "acct-1").await;
    proxy_call(&app, &sync, "acct-1").await;

    let line = until_usage(&app, "acct-1", "5 uses in the last 7 days").await;
    assert!(
        line.starts_with("Last used by zest CRM: proxy call, key sync, <time datetime=\""),
        "{line}"
    );
    assert!(line.contains("\" data-rel>"), "{line}");
    assert!(line.contains(" UTC</time>"), "{line}");
    let html = app.page("/settings/integrations").await;
    assert_eq!(usage_of(&html, "acct-2"), "Not used by zest CRM yet");

    // The other key reads the other account's token: its own line.
    read_token(&app, &chatbot, "acct-2").await;
    let line = until_usage(&app, "acct-2", "1 use in the last 7 days").await;
    assert!(
        line.starts_with("Last used by zest CRM: token, key chatbot, <time"),
        "{line}"
    );
    // The first account's line is unchanged.
    let html = app.page("/settings/integrations").await;
    assert!(usage_of(&html, "acct-1").contains("5 uses in the last 7 days"));
}

async fn uses_stay_in_memory_until_a_flush_adds_them_to_the_rows(backend: Backend) {
    // A flush interval longer than the test: only the explicit flushes write.
    let (app, _fake, [one, _]) = app(backend, "600000").await;
    let chatbot = key(&app, "chatbot");
    // The flusher's first tick runs at its start; let it pass.
    tether::workers::flush_usage(&app.state).await.unwrap();
    for _ in 0..4 {
        read_token(&app, &chatbot, "acct-1").await;
    }
    #[derive(QueryableByName)]
    struct Uses {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        uses: i64,
    }
    let stored = |app: &TestApp| -> Vec<i64> {
        diesel::sql_query("SELECT uses FROM connection_usage")
            .load::<Uses>(&mut app.conn())
            .unwrap()
            .into_iter()
            .map(|u| u.uses)
            .collect()
    };
    assert!(
        stored(&app).is_empty(),
        "a token read wrote to the database"
    );
    tether::workers::flush_usage(&app.state).await.unwrap();
    assert_eq!(stored(&app), [4]);
    // A second flush adds to the same row, and so does another instance's.
    read_token(&app, &chatbot, "acct-1").await;
    tether::workers::flush_usage(&app.state).await.unwrap();
    assert_eq!(stored(&app), [5]);
    let (second, second_state) = app
        .second_instance(&[("TETHER_USAGE_FLUSH_MS", "600000")])
        .await;
    tether::workers::flush_usage(&second_state).await.unwrap();
    for _ in 0..2 {
        let res = app
            .client
            .get(format!("{second}{TOKEN}?account=acct-1"))
            .bearer_auth(&chatbot)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    read_token(&app, &chatbot, "acct-1").await;
    assert_eq!(stored(&app), [5]);
    tether::workers::flush_usage(&second_state).await.unwrap();
    tether::workers::flush_usage(&app.state).await.unwrap();
    assert_eq!(stored(&app), [8]);
    // Uses of a connection removed before the flush leave nothing behind.
    read_token(&app, &chatbot, "acct-1").await;
    use tether::db::schema::connections;
    diesel::delete(connections::table.find(one.as_str()))
        .execute(&mut app.conn())
        .unwrap();
    tether::workers::flush_usage(&app.state).await.unwrap();
    assert!(stored(&app).is_empty());
}

/// Records an event `minutes` ago.
fn event(
    app: &TestApp,
    tenant: &TenantId,
    connection: Option<&ConnectionId>,
    kind: EventKind,
    actor: Actor,
    minutes: i64,
) -> Event {
    let e = Event::record(
        &mut app.conn(),
        &NewEvent {
            tenant_id: tenant,
            connection_id: connection,
            provider: &ProviderKey::known("acme"),
            kind,
            actor: &actor,
            detail: None,
        },
    )
    .unwrap();
    use tether::db::schema::events;
    let at = now() - chrono::Duration::minutes(minutes);
    diesel::update(events::table.find(&e.id))
        .set(events::created_at.eq(at))
        .execute(&mut app.conn())
        .unwrap();
    Event {
        created_at: at,
        ..e
    }
}

/// The activity lines of a page, as (what, account, who) texts.
fn lines_of(html: &str) -> Vec<(String, String, String)> {
    let text_of = |s: &str, open: &str| -> String {
        let Some(at) = s.find(open) else {
            return String::new();
        };
        let rest = &s[at + open.len()..];
        rest[..rest.find("</span>").unwrap()].to_string()
    };
    html.split("<li class=\"activity-line\"")
        .skip(1)
        .map(|li| {
            let li = &li[..li.find("</li>").unwrap()];
            (
                text_of(li, "<span class=\"event\">"),
                text_of(li, "data-account-label>"),
                text_of(li, "<span data-actor>"),
            )
        })
        .collect()
}

/// A time as the pages write it.
fn at(t: chrono::NaiveDateTime) -> String {
    format!(
        "<time datetime=\"{}\" data-rel>{}</time>",
        t.and_utc().format("%Y-%m-%dT%H:%M:%SZ"),
        t.format("%Y-%m-%d %H:%M UTC")
    )
}

async fn activity_is_newest_first_with_accounts_human_actors_and_folded_failures(backend: Backend) {
    let (app, _fake, [one, two]) = app(backend, "20").await;
    let t = app.tenant("acme").id;
    let (one, two) = (Some(&one), Some(&two));
    let admin = |email: &str| Actor::Admin {
        email: email.into(),
    };
    event(&app, &t, one, EventKind::Connected, admin(OWNER), 60);
    event(
        &app,
        &t,
        two,
        EventKind::Connected,
        admin("ann@acme.example"),
        55,
    );
    // Routine refreshes are listed in time order, not last.
    event(&app, &t, one, EventKind::Refreshed, Actor::Scheduler, 50);
    let first_failure = event(
        &app,
        &t,
        two,
        EventKind::RefreshFailed,
        Actor::Scheduler,
        40,
    );
    let since = at(first_failure.created_at);
    for m in [35, 30, 25] {
        event(&app, &t, two, EventKind::RefreshFailed, Actor::Scheduler, m);
    }
    event(&app, &t, one, EventKind::Refreshed, Actor::TokenApi, 20);
    let by_key = Actor::ApiKey {
        name: "chatbot".into(),
    };
    event(&app, &t, None, EventKind::SettingsChanged, by_key, 15);
    let import = Actor::Import {
        by: "api:sync".into(),
    };
    event(&app, &t, one, EventKind::Reconnected, import, 10);
    let provider = Actor::Provider { key: "acme".into() };
    event(&app, &t, one, EventKind::Installed, provider, 5);
    event(&app, &t, two, EventKind::Disconnected, Actor::Cli, 3);
    let newest = event(&app, &t, two, EventKind::Connected, Actor::ConnectLink, 2);
    // The failing account's next try.
    let next = now() + chrono::Duration::minutes(7);
    use tether::db::schema::connections;
    diesel::update(connections::table.find(two.unwrap().as_str()))
        .set(connections::next_refresh_at.eq(Some(next)))
        .execute(&mut app.conn())
        .unwrap();

    let s = |v: &str| v.to_string();
    let line = |what: &str, account: &str, who: &str| (s(what), s(account), s(who));
    let folded = format!(
        "Refresh failed 4 times since {since}; next try {}",
        at(next)
    );
    let all = vec![
        line("Connected", "acct-2", "Someone with a connect link"),
        line("Disconnected", "acct-2", "An operator"),
        line(
            "Installed at the provider",
            "Main Street Dental",
            "Acme CRM",
        ),
        line("Reconnected", "Main Street Dental", "Zest CRM (key sync)"),
        line("Settings changed", "", "Zest CRM (key chatbot)"),
        line(
            "Refreshed",
            "Main Street Dental",
            "Zest CRM (token request)",
        ),
        line(&folded, "acct-2", "Automatic refresh"),
        line("Refreshed", "Main Street Dental", "Automatic refresh"),
        line("Connected", "acct-2", "ann@acme.example"),
        line("Connected", "Main Street Dental", "You"),
    ];
    let card = app.page("/settings/integrations").await;
    assert_eq!(lines_of(&card), all[..5].to_vec(), "{card}");
    assert!(card.contains("href=\"/settings/integrations/acme/activity\""));
    assert!(
        card.contains(&at(newest.created_at)),
        "each line carries its time: {card}"
    );

    let res = app.get("/settings/integrations/acme/activity").await;
    assert_eq!(res.status(), 200);
    let page = res.text().await.unwrap();
    assert_eq!(lines_of(&page), all, "{page}");
    assert!(!page.contains("rel=\"next\""), "one page holds it all");
}

async fn the_full_activity_page_is_paged_by_cursor_and_shows_only_the_sessions_tenant(
    backend: Backend,
) {
    let (app, _fake, [one, _]) = app(backend, "20").await;
    let t = app.tenant("acme").id;
    for m in 1..=120 {
        let email = format!("admin{m}@acme.example");
        let actor = Actor::Admin { email };
        event(&app, &t, Some(&one), EventKind::SettingsChanged, actor, m);
    }
    let mut seen = Vec::new();
    let mut next = Some("/settings/integrations/acme/activity".to_string());
    let mut pages = 0;
    while let Some(address) = next.take() {
        let res = app.get(&address).await;
        assert_eq!(res.status(), 200, "{address}");
        let html = res.text().await.unwrap();
        let lines = lines_of(&html);
        pages += 1;
        assert_eq!(lines.len(), if pages < 3 { 50 } else { 20 }, "page {pages}");
        seen.extend(lines.into_iter().map(|(_, _, who)| who));
        next = html.find("rel=\"next\"").map(|_| {
            let start = html.find("?before=").unwrap();
            let end = start + html[start..].find('"').unwrap();
            format!("/settings/integrations/acme/activity{}", &html[start..end])
        });
    }
    assert_eq!(pages, 3);
    let expected: Vec<String> = (1..=120)
        .map(|m| format!("admin{m}@acme.example"))
        .collect();
    assert_eq!(seen, expected, "every event once, newest first");

    // Another tenant's admin sees none of these, and acme's cursors are
    // none of its pages.
    let beta = app.create_admin("beta", "boss@beta.example");
    let other = Browser::new(&app);
    assert_eq!(
        other.login("boss@beta.example", PASSWORD).await.status(),
        303
    );
    let res = other.get("/settings/integrations/acme/activity").await;
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    assert!(lines_of(&html).is_empty(), "{html}");
    assert!(!html.contains("acme.example"), "{html}");
    let acme_event = event(
        &app,
        &t,
        Some(&one),
        EventKind::Refreshed,
        Actor::Scheduler,
        0,
    );
    let res = other
        .get(&format!(
            "/settings/integrations/acme/activity?before={}",
            acme_event.id
        ))
        .await;
    assert_error_page(res, 404, "not_found").await;
    let dashboard = other
        .get("/settings/integrations")
        .await
        .text()
        .await
        .unwrap();
    assert!(!dashboard.contains("acme.example"), "{dashboard}");
    let _ = beta;
}

async fn the_activity_page_of_an_unknown_or_disabled_provider_is_a_404_page(backend: Backend) {
    let (app, _fake, _) = app(backend, "20").await;
    let res = app.get("/settings/integrations/acme/activity").await;
    assert_eq!(res.status(), 200, "the page exists while acme is enabled");
    let res = app.get("/settings/integrations/nope/activity").await;
    assert_error_page(res, 404, "not_found").await;
    let csrf = app.csrf("/settings/integrations").await;
    let res = app
        .post_form(
            "/settings/integrations/acme/enabled",
            &[("csrf", &csrf), ("enabled", "false")],
        )
        .await;
    assert_eq!(res.status(), 303);
    let res = app.get("/settings/integrations/acme/activity").await;
    assert_error_page(res, 404, "not_found").await;
    // Signed out: asked to sign in, as for the dashboard.
    let res = Browser::new(&app)
        .get("/settings/integrations/acme/activity")
        .await;
    let dashboard = Browser::new(&app).get("/settings/integrations").await;
    assert_eq!(res.status(), dashboard.status());
    assert_ne!(res.status(), 200);
}

async fn usage_older_than_eight_days_is_pruned_by_housekeeping(backend: Backend) {
    use tether::db::models::usage::{Usage, UsageKind};
    let (app, _fake, [one, _]) = app(backend, "600000").await;
    let today = now().date();
    let row = |days_ago: i64| Usage {
        connection_id: one.clone(),
        key_name: "chatbot".into(),
        kind: UsageKind::Token,
        day: today - chrono::Duration::days(days_ago),
        uses: 1,
        last_at: now() - chrono::Duration::days(days_ago),
    };
    Usage::add(&mut app.conn(), &[row(9), row(7), row(0)]).unwrap();
    tether::refresh::scheduler::Scheduler::new(app.state.clone())
        .tick()
        .await
        .unwrap();
    let kept =
        Usage::of_connections(&mut app.conn(), &[one], today - chrono::Duration::days(30)).unwrap();
    let mut days: Vec<_> = kept.iter().map(|u| (today - u.day).num_days()).collect();
    days.sort();
    assert_eq!(days, [0, 7]);
}
