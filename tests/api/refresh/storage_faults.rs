//! SQLite's own faults: another process holds the write lock (a long
//! `tether connections import`, a backup tool) while a provider's answer
//! arrives (a refresh's, a code exchange's). Tether waits for the lock
//! within its busy timeout, then holds the answer (serving a refreshed token
//! set meanwhile), and stores it once the lock is gone; the provider sees
//! the refresh token once.

use crate::helpers::*;
use std::time::{Duration, Instant};
use tether::db::models::connection::{Connection, Status};

/// A token request whose refresh is at the rotating provider, its answer
/// held there until the test lets it go, on a SQLite app.
struct InFlight {
    app: TestApp,
    rotating: Rotating,
    held: HeldAnswers,
    seeded: Connection,
    key: String,
    first: actix_web::rt::task::JoinHandle<(u16, serde_json::Value)>,
    _fake: FakeProvider,
}

async fn in_flight() -> InFlight {
    let fake = FakeProvider::start().await;
    let rotating = Rotating::new(true);
    rotating.mount(&fake).await;
    let held = HeldAnswers::start(&fake).await;
    let app = spawn_app_with_providers(
        TestDb::new(Backend::Sqlite),
        &held.providers_toml(&fake),
        &[],
    )
    .await;
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
    InFlight {
        app,
        rotating,
        held,
        seeded,
        key,
        first,
        _fake: fake,
    }
}

#[actix_web::test]
async fn a_locked_sqlite_file_holds_the_answer_serves_it_and_stores_it_once_unlocked() {
    let InFlight {
        app,
        rotating,
        held,
        seeded,
        key,
        first,
        _fake,
    } = in_flight().await;

    // The answer arrives while another process holds the write lock.
    let lock = WriteLock::take(&app.db.url);
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

/// The same for a new connection: the code exchange's answer arrives while
/// another process holds the write lock. The person is told the connection
/// is kept and shows once stored; it is stored once the lock goes.
#[actix_web::test]
async fn a_connection_made_while_sqlite_is_locked_is_stored_once_unlocked() {
    use wiremock::matchers::{method, path};
    let (app, fake) = signed_in(Backend::Sqlite, "post").await;
    let (state, challenge) = start(&app, &[]).await;
    // The account lookup answers late: time to take the lock after the
    // exchange, before the save.
    wiremock::Mock::given(method("GET"))
        .and(path("/me"))
        .respond_with(
            wiremock::ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"sub": ACCOUNT, "name": "Main Street Dental"}))
                .set_delay(Duration::from_millis(500)),
        )
        .with_priority(1)
        .mount(&fake.server)
        .await;
    mount_exchange(&fake, &challenge, "at-new", "rt-new").await;
    let callback = {
        let (client, url) = (
            app.client.clone(),
            format!(
                "{}/oauth/acme/callback?code=the-code&state={state}&iss={ACME_ISSUER}",
                app.address
            ),
        );
        actix_web::rt::spawn(async move {
            let res = client.get(url).send().await.unwrap();
            (res.status().as_u16(), res.text().await.unwrap())
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let exchanged = fake
            .server
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .any(|r| r.url.path() == "/token");
        if exchanged {
            break;
        }
        assert!(Instant::now() < deadline, "the code was never exchanged");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let lock = WriteLock::take(&app.db.url);
    let (status, page) = callback.await.expect("the callback ends");
    assert_eq!(status, 503, "{page}");
    assert!(
        page.contains("stores it as soon as the database is back"),
        "{page}"
    );
    let tenant = app.tenant("acme");
    let acme = tether::ids::ProviderKey::known("acme");
    let account = tether::ids::AccountId::known(ACCOUNT);
    let missing = Connection::find(&mut app.conn(), &tenant.id, &acme, &account).unwrap();
    assert!(missing.is_none(), "stored under the lock: {missing:?}");

    drop(lock);
    let deadline = Instant::now() + Duration::from_secs(10);
    let stored = loop {
        if let Some(c) = Connection::find(&mut app.conn(), &tenant.id, &acme, &account).unwrap() {
            break c;
        }
        assert!(
            Instant::now() < deadline,
            "the held connection was never stored"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let tokens = stored.tokens(&app.ctx.keys).unwrap().expect("tokens");
    assert_eq!(tokens.access_token.expose(), "at-new");
    assert_eq!(stored.status(), Status::Connected);
}

/// Files made immutable (`chattr +i`: not even root may write them) for as
/// long as `Immutable` lives; `None` where the file system or the user may
/// not set the flag.
struct Immutable(Vec<std::path::PathBuf>);

impl Immutable {
    fn make(files: Vec<std::path::PathBuf>) -> Option<Immutable> {
        let set = std::process::Command::new("chattr")
            .arg("+i")
            .args(&files)
            .status()
            .is_ok_and(|s| s.success());
        set.then_some(Immutable(files))
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .args(&self.0)
            .status();
    }
}

/// The database file and its WAL made read-only while a refresh's answer
/// arrives: the write fails at once (no busy wait), the answer is held and
/// served, and stored once the files can be written again.
#[actix_web::test]
async fn a_read_only_sqlite_file_holds_the_answer_and_stores_it_once_writable() {
    let InFlight {
        app,
        rotating,
        held,
        seeded,
        key: _,
        first,
        _fake,
    } = in_flight().await;
    let dir = app.db.data_dir().to_path_buf();
    let files = ["tether.db", "tether.db-wal"]
        .iter()
        .map(|f| dir.join(f))
        .filter(|p| p.exists())
        .collect();
    let Some(read_only) = Immutable::make(files) else {
        eprintln!("skipped: chattr +i is not permitted here (needs root on ext4 or the like)");
        held.release_one();
        return;
    };
    held.release_one();
    let (status, body) = first.await.expect("the token request ends");
    assert_eq!(
        status, 200,
        "the refreshed token is served while held: {body}"
    );
    assert_eq!(body["access_token"], "at-1", "{body}");
    assert_eq!(app.connection(&seeded.id).version, seeded.version);

    drop(read_only);
    let stored = app.until(&seeded.id, |r| r.version > seeded.version).await;
    let tokens = stored.tokens(&app.ctx.keys).unwrap().expect("tokens");
    assert_eq!(
        tokens.refresh_token.map(|t| t.expose().clone()),
        rotating.live("rt-0")
    );
    assert_eq!(rotating.sent(), ["rt-0"], "one refresh at the provider");
}
