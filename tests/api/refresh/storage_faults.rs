//! SQLite's own faults: another process holds the write lock (a long
//! `tether connections import`, a backup tool) while a refresh's answer
//! arrives. Tether waits for the lock within its busy timeout, then holds
//! the answer, serves it, and stores it once the lock is gone; the provider
//! sees the refresh token once.

use crate::helpers::*;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use std::time::{Duration, Instant};

/// A writer outside Tether holding SQLite's write lock until dropped.
struct WriteLock(SqliteConnection);

impl WriteLock {
    fn take(url: &str) -> WriteLock {
        let path = url.strip_prefix("sqlite://").expect("a SQLite URL");
        let mut c = SqliteConnection::establish(path).expect("open the database");
        c.batch_execute("BEGIN IMMEDIATE")
            .expect("take the write lock");
        WriteLock(c)
    }
}

impl Drop for WriteLock {
    fn drop(&mut self) {
        let _ = self.0.batch_execute("ROLLBACK");
    }
}

#[actix_web::test]
async fn a_locked_sqlite_file_holds_the_answer_serves_it_and_stores_it_once_unlocked() {
    let fake = FakeProvider::start().await;
    let rotating = Rotating::new(true);
    rotating.mount(&fake).await;
    let held = HeldAnswers::start(&fake).await;
    let db = TestDb::new(Backend::Sqlite);
    let url = db.url.clone();
    let app = spawn_app_with_providers(db, &held.providers_toml(&fake), &[]).await;
    let tenant = app.ensure_tenant("acme");
    rotating.grant("rt-0");
    let seeded = app.seed(&tenant.id, "acct-1", "rt-0", -60, -1);
    let key = app.api_key(None, false);
    let first = {
        let (client, address, key) = (app.client.clone(), app.address.clone(), key.clone());
        actix_web::rt::spawn(async move {
            let res = token_at(&client, &address, &key, "acme").await;
            (
                res.status().as_u16(),
                res.json::<serde_json::Value>().await.unwrap(),
            )
        })
    };
    held.until_held(1).await;

    // The answer arrives while another process holds the write lock.
    let lock = WriteLock::take(&url);
    held.release_one();
    let (status, body) = first.await.expect("the token request ends");
    assert_eq!(
        status, 200,
        "the refreshed token is served while held: {body}"
    );
    assert_eq!(body["access_token"], "at-1", "{body}");
    let row = app.connection(&seeded.id);
    assert_eq!(
        row.version, seeded.version,
        "nothing was written under the lock"
    );
    // Again, at once: the held answer, not a wait for the lock.
    let started = Instant::now();
    let res = token_at(&app.client, &app.address, &key, "acme").await;
    assert_eq!(res.status(), 200);
    let again: serde_json::Value = res.json().await.unwrap();
    assert_eq!(again["access_token"], "at-1", "{again}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "waited {:?}",
        started.elapsed()
    );

    // The lock goes: the keeper stores the answer.
    drop(lock);
    let stored = app.until(&seeded.id, |r| r.version > seeded.version).await;
    let tokens = stored.tokens(&app.ctx.keys).unwrap().expect("tokens");
    assert_eq!(
        tokens.refresh_token.map(|t| t.expose().clone()),
        rotating.live("rt-0"),
        "the provider's live refresh token is stored"
    );
    assert_eq!(stored.failure_count, 0);
    assert!(stored.lease_owner.is_none(), "{stored:?}");
    assert_eq!(rotating.sent(), ["rt-0"], "one refresh at the provider");
    assert!(rotating.reuses().is_empty());
}
