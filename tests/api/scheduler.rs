//! The refresh scheduler: due connections are leased and refreshed.

use crate::backend_tests;
use crate::helpers::{
    connect, signed_in, spawn_app_with_acme, tokens, Backend, FakeProvider, TestApp, OWNER,
    PASSWORD,
};
use diesel::prelude::*;
use tether::db::models::connection::Connection;
use tether::refresh::scheduler::Scheduler;
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, ResponseTemplate};

backend_tests!(
    a_scheduler_tick_refreshes_a_due_connection_and_plans_the_next,
    a_refresh_token_about_to_lapse_is_announced_once_and_shown_on_the_card,
    old_events_and_finished_deliveries_are_pruned_and_the_rest_kept,
    the_card_shows_the_newest_activity_and_all_activity_the_rest,
    the_lapse_warning_window_is_configurable,
);

/// Records an event `days` old, with a webhook delivery that is `delivery`.
fn old_event(
    app: &TestApp,
    c: &Connection,
    kind: &str,
    days: i64,
    delivery: Option<&str>,
) -> String {
    use tether::db::schema::{events, webhook_outbox};
    let mut conn = app.conn();
    use tether::db::models::event::{Actor, Event, EventKind, NewEvent};
    let e = Event::record(
        &mut conn,
        &NewEvent {
            tenant_id: &c.tenant_id,
            connection_id: Some(&c.id),
            provider: &c.provider,
            kind: EventKind::parse(kind).expect("a known event kind"),
            actor: &Actor::Scheduler,
            detail: None,
        },
    )
    .unwrap();
    let at = tether::db::now() - chrono::Duration::days(days);
    diesel::update(events::table.find(&e.id))
        .set(events::created_at.eq(at))
        .execute(&mut conn)
        .unwrap();
    if let Some(state) = delivery {
        tether::db::models::webhook::notify(&mut conn, &e).unwrap();
        let (delivered, attempts) = match state {
            "delivered" => (Some(at), 1),
            "given_up" => (None, tether::webhooks::MAX_ATTEMPTS),
            _ => (None, 3),
        };
        diesel::update(webhook_outbox::table.filter(webhook_outbox::event_id.eq(&e.id)))
            .set((
                webhook_outbox::created_at.eq(at),
                webhook_outbox::delivered_at.eq(delivered),
                webhook_outbox::attempts.eq(attempts),
            ))
            .execute(&mut conn)
            .unwrap();
    }
    e.id
}

async fn old_events_and_finished_deliveries_are_pruned_and_the_rest_kept(backend: Backend) {
    let (app, fake) = signed_in(backend, "post").await;
    connect(&app, &fake, "at-1", "rt-1").await;
    let c = app.acme_connection("acme");
    let gone = [
        old_event(&app, &c, "refreshed", 91, None),
        old_event(&app, &c, "needs_reconnect", 200, Some("delivered")),
        old_event(&app, &c, "disconnected", 120, Some("given_up")),
    ];
    let kept = [
        old_event(&app, &c, "refreshed", 89, None),
        old_event(&app, &c, "connected", 10, Some("delivered")),
    ];
    // Old, but its webhook is not delivered yet: the event goes, the
    // delivery (whose payload holds all of it) stays until it is done.
    let pending = old_event(&app, &c, "revoked", 150, Some("pending"));
    Scheduler::new(app.state.clone()).tick().await.unwrap();

    use tether::db::schema::{events, webhook_outbox};
    let ids: Vec<String> = events::table
        .select(events::id)
        .load(&mut app.conn())
        .unwrap();
    for id in gone.iter().chain([&pending]) {
        assert!(!ids.contains(id), "pruned: {id}");
    }
    for id in &kept {
        assert!(ids.contains(id), "kept: {id}");
    }
    let outbox: Vec<(Option<String>, String)> = webhook_outbox::table
        .select((webhook_outbox::event_id, webhook_outbox::payload))
        .load(&mut app.conn())
        .unwrap();
    assert_eq!(
        outbox.len(),
        2,
        "the recent delivery and the pending one: {outbox:?}"
    );
    assert!(outbox
        .iter()
        .any(|(e, _)| e.as_deref() == Some(kept[1].as_str())));
    assert!(outbox.iter().any(|(_, p)| p.contains(&pending)));
}

/// Activity is listed strictly by time (issue 22): the card's five lines
/// are the newest, routine refreshes included, and an older failure is one
/// click away on the full list.
async fn the_card_shows_the_newest_activity_and_all_activity_the_rest(backend: Backend) {
    let (app, fake) = signed_in(backend, "post").await;
    connect(&app, &fake, "at-1", "rt-1").await;
    let c = app.acme_connection("acme");
    old_event(&app, &c, "refresh_failed", 2, None);
    for _ in 0..6 {
        old_event(&app, &c, "refreshed", 0, None);
    }
    let line = "<li class=\"activity-line\" data-event=\"";
    let page = app.page("/settings/integrations").await;
    let kinds: Vec<&str> = page
        .split(line)
        .skip(1)
        .map(|l| &l[..l.find('"').unwrap()])
        .collect();
    assert_eq!(kinds, ["refreshed"; 5], "{page}");
    let all = app.page("/settings/integrations/acme/activity").await;
    let kinds: Vec<&str> = all
        .split(line)
        .skip(1)
        .map(|l| &l[..l.find('"').unwrap()])
        .collect();
    let mut expected = vec!["refreshed"; 6];
    expected.extend(["connected", "refresh_failed"]);
    assert_eq!(kinds, expected, "{all}");
}

async fn a_refresh_token_about_to_lapse_is_announced_once_and_shown_on_the_card(backend: Backend) {
    let (app, fake) = signed_in(backend, "post").await;
    connect(&app, &fake, "at-1", "rt-1").await;
    let row = app.acme_connection("acme");
    {
        use tether::db::schema::connections;
        diesel::update(connections::table.find(&row.id))
            .set(
                connections::refresh_expires_at
                    .eq(Some(tether::db::now() + chrono::Duration::days(3))),
            )
            .execute(&mut app.conn())
            .unwrap();
    }
    // Two schedulers, as two instances would run: the second finds the
    // warning already recorded for this window.
    Scheduler::new(app.state.clone()).tick().await.unwrap();
    Scheduler::new(app.state.clone()).tick().await.unwrap();
    let events = tether::db::models::event::Event::recent(
        &mut app.conn(),
        &row.tenant_id,
        &row.provider,
        10,
    )
    .unwrap();
    let warnings: Vec<_> = events
        .iter()
        .filter(|e| e.kind.as_str() == "refresh_token_expiring")
        .collect();
    assert_eq!(warnings.len(), 1, "announced once: {events:?}");
    assert!(warnings[0]
        .detail
        .as_deref()
        .unwrap()
        .contains("reconnect before then"));
    let page = app.page("/settings/integrations").await;
    assert!(
        // The fake grants one of the two scopes asked for: the banner asks
        // for the permissions first and says the access ends too.
        page.contains(r#"data-need="permissions""#)
            && page.contains("Its access also ends in 2 days.")
            && page.contains("Access lapses soon"),
        "{page}"
    );
}

/// Connects `acme` on an app with `extra` settings, makes its refresh token
/// lapse in `days` days, runs one scheduler tick and counts the
/// `refresh_token_expiring` events.
async fn lapse_warnings_after_a_tick(backend: Backend, extra: &[(&str, &str)], days: i64) -> usize {
    let fake = FakeProvider::start().await;
    let app = spawn_app_with_acme(backend, &fake, "", extra).await;
    app.create_admin("acme", OWNER);
    assert_eq!(app.login(OWNER, PASSWORD).await.status(), 303);
    connect(&app, &fake, "at-1", "rt-1").await;
    let row = app.acme_connection("acme");
    {
        use tether::db::schema::connections;
        diesel::update(connections::table.find(&row.id))
            .set(
                connections::refresh_expires_at
                    .eq(Some(tether::db::now() + chrono::Duration::days(days))),
            )
            .execute(&mut app.conn())
            .unwrap();
    }
    Scheduler::new(app.state.clone()).tick().await.unwrap();
    tether::db::models::event::Event::recent(&mut app.conn(), &row.tenant_id, &row.provider, 10)
        .unwrap()
        .iter()
        .filter(|e| e.kind.as_str() == "refresh_token_expiring")
        .count()
}

async fn the_lapse_warning_window_is_configurable(backend: Backend) {
    let wide = [("TETHER_REFRESH_TOKEN_LAPSE_WARNING_DAYS", "30")];
    assert_eq!(
        lapse_warnings_after_a_tick(backend, &wide, 20).await,
        1,
        "20 days ahead is within a 30-day window"
    );
    assert_eq!(
        lapse_warnings_after_a_tick(backend, &[], 20).await,
        0,
        "20 days ahead is outside the default 14-day window"
    );
}

async fn a_scheduler_tick_refreshes_a_due_connection_and_plans_the_next(backend: Backend) {
    let (app, fake) = signed_in(backend, "post").await;
    connect(&app, &fake, "at-1", "rt-1").await;
    let before = app.acme_connection("acme");
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_string_contains("refresh_token=rt-1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(tokens(
            "at-2",
            Some("rt-2"),
            3600.into(),
        )))
        .expect(1)
        .mount(&fake.server)
        .await;
    let scheduler = Scheduler::new(app.state.clone());
    assert_eq!(scheduler.tick().await.unwrap(), 0, "nothing is due yet");
    app.make_due(&before.id);
    assert_eq!(scheduler.tick().await.unwrap(), 1);
    let after = app
        .until(&before.id, |c| {
            c.version > before.version && c.lease_owner.is_none()
        })
        .await;
    let tokens = after.tokens(&app.ctx.keys).unwrap().unwrap();
    assert_eq!(tokens.refresh_token.unwrap().expose(), "rt-2");
    let next = after.next_refresh_at.unwrap();
    let in_secs = (next - tether::db::now()).num_seconds();
    assert!(
        (2_800..=2_880).contains(&in_secs),
        "80% of 3600 s: {in_secs}"
    );
    assert_eq!(scheduler.tick().await.unwrap(), 0, "not due again");
}
