//! Instances on one database cooperate through leases: a live lease is
//! respected, the lapsed lease of a dead instance is taken over with the
//! refresh token sent once, and two instances refreshing 200 connections at
//! once never reuse a refresh token.

use super::refresh_token_of;
use crate::backend_tests;
use crate::helpers::{seed_on, spawn_app_with_acme, token_at, Backend, FakeProvider, Rotating};
use diesel::prelude::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tether::db::models::connection::{Connection, Status};
use tether::db::models::instance::Takeover;
use tether::db::models::tenant::Tenant;
use tether::db::now;
use tether::ids::ConnectionId;
use tether::refresh::scheduler::Scheduler;

backend_tests!(
    an_expired_lease_of_a_dead_instance_is_taken_over_and_the_refresh_token_sent_once,
    two_instances_refresh_200_connections_without_reusing_a_refresh_token,
);

async fn an_expired_lease_of_a_dead_instance_is_taken_over_and_the_refresh_token_sent_once(
    backend: Backend,
) {
    let fake = FakeProvider::start().await;
    let rotating = Rotating::new(true);
    rotating.mount(&fake).await;
    let app = spawn_app_with_acme(backend, &fake, "", &[]).await;
    let t = app.ensure_tenant("acme");
    rotating.grant("rt-0");
    let c = app.seed(&t.id, "acct-1", "rt-0", 600, -1);
    // An instance leased it and stopped before finishing.
    let leased = Connection::claim(
        &mut app.conn(),
        &c.id,
        "dead-instance",
        now() + chrono::Duration::seconds(60),
        &Takeover::new("dead-instance", None, now()),
    )
    .unwrap();
    assert!(leased.is_some());
    let scheduler = Scheduler::new(app.state.clone());
    assert_eq!(
        scheduler.tick().await.unwrap(),
        0,
        "a live lease is respected"
    );
    assert_eq!(rotating.calls(), 0);

    // The lease lapses.
    {
        use tether::db::schema::connections;
        diesel::update(connections::table.find(&c.id))
            .set(connections::lease_until.eq(Some(now() - chrono::Duration::seconds(1))))
            .execute(&mut app.conn())
            .unwrap();
    }
    assert_eq!(
        scheduler.tick().await.unwrap(),
        1,
        "the lapsed lease is taken over"
    );
    let after = app
        .until(&c.id, |r| r.version > c.version && r.lease_owner.is_none())
        .await;
    assert_eq!(after.status(), Status::Connected);
    assert_eq!(refresh_token_of(&app, &after), "rt-1");
    assert_eq!(rotating.seen("rt-0"), 1, "the refresh token went out once");
    assert_eq!(rotating.calls(), 1);
    assert!(rotating.reuses().is_empty());
}

/// Two instances, 200 due connections, both schedulers and the token API at once.
async fn two_instances_refresh_200_connections_without_reusing_a_refresh_token(backend: Backend) {
    let fake = FakeProvider::start().await;
    let rotating = Rotating::new(true);
    rotating.set_delay(Duration::from_millis(20));
    rotating.mount(&fake).await;
    let app = spawn_app_with_acme(backend, &fake, "", &[]).await;
    let (second_address, second_state) = app.second_instance(&[]).await;

    const TENANTS: usize = 20;
    const ACCOUNTS: usize = 10;
    let mut seeded = Vec::new();
    {
        let mut conn = app.conn();
        for t in 0..TENANTS {
            let ext = format!("t{t:02}");
            let tenant = Tenant::create(&mut conn, &ext, &ext).unwrap();
            for a in 0..ACCOUNTS {
                let rt = format!("rt-seed-{t}-{a}");
                rotating.grant(&rt);
                let c = seed_on(
                    &mut conn,
                    &app.ctx.keys,
                    &tenant.id,
                    &format!("acct-{a}"),
                    &rt,
                    30,
                    -1,
                );
                seeded.push((c, rt));
            }
        }
    }
    let key = app.api_key(None, false);
    let started = Instant::now();

    // Both schedulers tick until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let loops: Vec<_> = [app.state.clone(), second_state.clone()]
        .into_iter()
        .map(|state| {
            let stop = stop.clone();
            actix_web::rt::spawn(async move {
                let scheduler = Scheduler::new(state);
                while !stop.load(Ordering::SeqCst) {
                    scheduler.tick().await.expect("tick");
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
            })
        })
        .collect();

    // Meanwhile, token requests for every tenant hit both instances at once.
    let mut requests = Vec::new();
    for _round in 0..2 {
        for t in 0..TENANTS {
            for address in [app.address.clone(), second_address.clone()] {
                let (client, key, tenant) = (app.client.clone(), key.clone(), format!("t{t:02}"));
                requests.push(actix_web::rt::spawn(async move {
                    let res = token_at(&client, &address, &key, &tenant).await;
                    let status = res.status().as_u16();
                    (status, res.text().await.unwrap())
                }));
            }
        }
    }
    for answer in futures_util::future::join_all(requests).await {
        let (status, body) = answer.unwrap();
        assert_eq!(status, 200, "{body}");
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        let at = body["access_token"].as_str().unwrap();
        assert!(!at.starts_with("at-seed"), "a refreshed token: {at}");
    }

    let ids: Vec<ConnectionId> = seeded.iter().map(|(c, _)| c.id.clone()).collect();
    let deadline = Instant::now() + Duration::from_secs(90);
    let rows = loop {
        use tether::db::schema::connections;
        let rows: Vec<Connection> = connections::table
            .filter(connections::id.eq_any(&ids))
            .select(Connection::as_select())
            .load(&mut app.conn())
            .unwrap();
        let done = rows
            .iter()
            .all(|r| r.lease_owner.is_none() && r.next_refresh_at.is_some_and(|t| t > now()));
        if done || Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    stop.store(true, Ordering::SeqCst);
    for l in loops {
        l.await.unwrap();
    }
    eprintln!(
        "{backend:?}: 200 connections refreshed by two instances in {:?} ({} refresh calls)",
        started.elapsed(),
        rotating.calls()
    );

    assert!(
        rotating.reuses().is_empty(),
        "refresh tokens reused: {:?}",
        rotating.reuses()
    );
    assert!(
        rotating.unknown().is_empty(),
        "unknown refresh tokens: {:?}",
        rotating.unknown()
    );
    assert_eq!(rotating.revoked(), 0);
    // Each connection refreshed exactly once: a caller that finds a refresh
    // done since it looked takes that outcome instead of refreshing again.
    assert_eq!(rotating.calls(), 200, "refresh calls for 200 connections");
    let mut seen: HashMap<String, usize> = HashMap::new();
    for rt in rotating.sent().iter() {
        *seen.entry(rt.clone()).or_default() += 1;
    }
    assert!(
        seen.values().all(|n| *n == 1),
        "a refresh token was sent twice"
    );
    assert_eq!(rows.len(), 200);
    let by_id: HashMap<ConnectionId, Connection> =
        rows.into_iter().map(|r| (r.id.clone(), r)).collect();
    for (before, first_rt) in &seeded {
        let after = &by_id[&before.id];
        assert_eq!(after.status(), Status::Connected, "{after:?}");
        assert!(after.version > before.version, "not refreshed: {after:?}");
        assert!(after.lease_owner.is_none(), "{after:?}");
        let rt = refresh_token_of(&app, after);
        assert_ne!(&rt, first_rt);
        assert_eq!(
            Some(rt),
            rotating.live(first_rt),
            "the stored refresh token is the live one"
        );
    }
}
