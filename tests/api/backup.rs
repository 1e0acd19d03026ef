//! `tether backup` and `tether restore` on the embedded SQLite database, run
//! as the real binary beside a real `tether serve`: a backup taken in the
//! middle of a refresh storm is whole (every row opens, every refresh token is
//! one the provider issued for that grant), restores into a fresh folder, and
//! there every token is served and refreshes; a restore is refused while a
//! server has the database open, or under a key ring lacking the backup's
//! key, and both commands refuse PostgreSQL. SQLite only: PostgreSQL is
//! backed up with its own tools.

use crate::helpers::{
    run, settings_for, stderr, stdout, tether, Backend, TestDb, KEY_K1, KEY_K1_OTHER, KEY_K2,
};
use crate::processes::instance::Instance;
use crate::processes::load::{start_load, tally, Answer};
use crate::processes::setup::{seed, Setup};
use crate::processes::strict_provider::{Outcome, Strict};
use crate::processes::{EXIT_WITHIN, SERIAL};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};
use tether::db::models::connection::Connection;

/// Runs the binary on the blocking pool, so that the test's own tasks (the
/// token load) keep running meanwhile.
async fn run_blocking(mut cmd: std::process::Command) -> Output {
    tokio::task::spawn_blocking(move || run(&mut cmd, ""))
        .await
        .expect("tether ran")
}

fn backup_cmd(db: &TestDb, keys: &str, file: &Path, extra: &[&str]) -> std::process::Command {
    let mut cmd = tether(db, keys);
    cmd.arg("backup").arg(file).args(extra);
    cmd
}

fn restore_cmd(db: &TestDb, keys: &str, file: &Path) -> std::process::Command {
    let mut cmd = tether(db, keys);
    cmd.arg("restore").arg(file);
    cmd
}

/// The refresh token each connection of `db` stores, opened with k1, by
/// connection id (a pool opened and closed here).
fn stored_refresh_tokens(db_url: &str, ids: &[String]) -> Vec<String> {
    let pool = tether::db::connect(db_url, 1).expect("open the copy");
    let ring = tether::crypto::KeyRing::parse(KEY_K1).unwrap();
    let mut conn = pool.get().unwrap();
    ids.iter()
        .map(|id| {
            let row = Connection::by_id(&mut conn, &tether::ids::ConnectionId::known(id.as_str()))
                .expect("every connection is in the copy");
            let tokens = row
                .tokens(&ring)
                .expect("its token set opens")
                .expect("it holds tokens");
            tokens
                .refresh_token
                .expect("a refresh token")
                .expose()
                .clone()
        })
        .collect()
}

/// Files in `dir` whose name contains `part`.
fn files_named(dir: &Path, part: &str) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().contains(part))
        .collect()
}

#[actix_web::test]
async fn a_backup_taken_in_a_refresh_storm_restores_into_a_fresh_folder_where_every_token_opens_and_refreshes(
) {
    let _serial = SERIAL.lock().await;
    // 3 s tokens refreshed by the scheduler at 80% of their life, and the
    // token API asked for each one continuously.
    let setup = Setup::new(Backend::Sqlite, 30, 3, Duration::from_millis(50)).await;
    let ids: Vec<String> = setup.conns.iter().map(|(_, id, _)| id.clone()).collect();
    let mut a = setup.instance("a", &[]);
    a.start().await;
    let load = start_load(vec![a.url()], setup.tenants(), &setup.api_key, None);

    // Backups one after another until three of them were taken while the
    // provider was answering refreshes (and so rows were being rewritten).
    let folder = tempfile::tempdir().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut taken, mut overlapped) = (0, Vec::new());
    while overlapped.len() < 3 {
        assert!(
            Instant::now() < deadline,
            "no backup overlapped a refresh in 60 s ({taken} taken)"
        );
        let file = folder.path().join(format!("backup-{taken}.db"));
        taken += 1;
        let from = Instant::now();
        let out = run_blocking(backup_cmd(
            &setup.db,
            KEY_K1,
            &file,
            &["--pages-per-step", "2"],
        ))
        .await;
        let to = Instant::now();
        assert!(out.status.success(), "backup failed: {}", stderr(&out));
        assert!(
            stderr(&out).contains("backup: 2 of "),
            "a progress line per step: {}",
            stderr(&out)
        );
        assert!(
            stdout(&out).contains(
                "keep the encryption keys with these ids beside it (TETHER_ENCRYPTION_KEYS): k1;"
            ),
            "{}",
            stdout(&out)
        );
        // Whole: every row opens, and holds a refresh token the provider
        // issued for that very grant (live then, or rotated since).
        let url = format!("sqlite://{}", file.display());
        for (i, rt) in stored_refresh_tokens(&url, &ids).iter().enumerate() {
            assert_eq!(
                setup.provider.issued_for(rt).as_deref(),
                Some(setup.conns[i].2.as_str()),
                "backup {file:?}: connection {i} holds {rt}, not one of its grant's tokens"
            );
        }
        if setup.provider.received(None, from, to) > 0 {
            overlapped.push(file);
        }
    }
    let samples = load.stop().await;
    a.sigterm();
    assert!(a.wait_exit(EXIT_WITHIN).await.is_some(), "a stops");
    assert!(
        samples
            .iter()
            .all(|s| matches!(s.answer, Answer::Http(200, _))),
        "the token API answered 200 throughout the backups: {}",
        tally(samples.iter())
    );
    let calls = setup.provider.calls();
    assert!(
        calls.iter().all(|c| c.outcome == Outcome::Rotated),
        "the storm itself was clean"
    );
    eprintln!(
        "{taken} backups, {} of them while refreshes were answered; {} refreshes in all",
        overlapped.len(),
        calls.len()
    );

    // Restore the last one into a fresh folder.
    let fresh = TestDb::new(Backend::Sqlite);
    let backup = overlapped.last().unwrap();
    let out = run_blocking(restore_cmd(&fresh, KEY_K1, backup)).await;
    assert!(out.status.success(), "restore failed: {}", stderr(&out));
    assert!(
        stdout(&out).contains("key ids in it: k1"),
        "{}",
        stdout(&out)
    );
    assert!(
        !stdout(&out).contains("kept as"),
        "nothing was there to keep"
    );
    // Since the backup, the provider rotated some of these refresh tokens
    // (what a backup of rotating tokens always costs: README, Backups), so
    // the restored Tether talks to a provider whose grants are where the
    // backup left them.
    let restored = stored_refresh_tokens(&fresh.url, &ids);
    let (provider, server) = Strict::start(Duration::ZERO, 3600).await;
    for rt in &restored {
        provider.grant(rt);
    }
    let mut r = Instance::new(
        &fresh,
        "restored",
        &server.uri(),
        &[
            ("TETHER_REFRESH_ENABLED", "false"),
            // Rows the storm refreshed moments ago must still be sent.
            ("TETHER_FORCED_REFRESH_COOLDOWN_SECS", "0"),
        ],
    );
    r.start().await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    for (tenant, _, _) in &setup.conns {
        let token = client
            .get(format!(
                "{}/api/v1/tenants/{tenant}/connections/acme/token",
                r.url()
            ))
            .bearer_auth(&setup.api_key)
            .send()
            .await
            .unwrap();
        assert_eq!(
            token.status(),
            200,
            "{tenant}: {}",
            token.text().await.unwrap()
        );
        let refreshed = client
            .post(format!(
                "{}/api/v1/tenants/{tenant}/connections/acme/refresh",
                r.url()
            ))
            .bearer_auth(&setup.api_key)
            .send()
            .await
            .unwrap();
        assert_eq!(
            refreshed.status(),
            200,
            "{tenant}: {}",
            refreshed.text().await.unwrap()
        );
    }
    let calls = provider.calls();
    assert!(
        calls.iter().all(|c| c.outcome == Outcome::Rotated),
        "every refresh sent a restored refresh token, once: {:?}",
        calls.iter().map(|c| c.outcome).collect::<Vec<_>>()
    );
    let refreshed: std::collections::HashSet<_> =
        calls.iter().filter_map(|c| c.grant.clone()).collect();
    assert_eq!(
        refreshed.len(),
        restored.len(),
        "every connection refreshed"
    );
    drop(r);
    drop(server);
}

/// A database with `n` connections under k1, made and closed by the test
/// (no handle of the test's stays open on it).
fn database_with_connections(n: usize) -> (TestDb, Vec<String>) {
    use tether::db::models::tenant::Tenant;
    let db = TestDb::new(Backend::Sqlite);
    let ctx = tether::startup::prepare(settings_for(&db, &[])).expect("prepare");
    let mut conn = ctx.pool.get().unwrap();
    let mut ids = Vec::new();
    for i in 0..n {
        let t = Tenant::create(&mut conn, &format!("t{i}"), "T").unwrap();
        let row = seed(&mut conn, &ctx.keys, &t.id, &format!("rt-{i}"), 3600);
        ids.push(row.id.to_string());
    }
    (db, ids)
}

#[actix_web::test]
async fn restore_is_refused_while_a_server_runs_on_the_target_and_works_once_it_stopped() {
    let _serial = SERIAL.lock().await;
    let (db, ids) = database_with_connections(3);
    let folder = tempfile::tempdir().unwrap();
    let file = folder.path().join("tether-backup.db");
    let out = run_blocking(backup_cmd(&db, KEY_K1, &file, &[])).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("pages ("),
        "no progress line for a database of one step: {}",
        stderr(&out)
    );

    let (_provider, server) = Strict::start(Duration::ZERO, 3600).await;
    let mut a = Instance::new(&db, "a", &server.uri(), &[]);
    a.start().await;
    // A tenant the backup does not have: still there after a refused restore.
    let out = run_blocking({
        let mut cmd = tether(&db, KEY_K1);
        cmd.args(["tenant", "add", "after-the-backup"]);
        cmd
    })
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let tenants = || {
        let mut cmd = tether(&db, KEY_K1);
        cmd.args(["tenant", "list"]);
        run_blocking(cmd)
    };
    let out = run_blocking(restore_cmd(&db, KEY_K1, &file)).await;
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("is open in another process")
            && stderr(&out).contains("Nothing was changed"),
        "{}",
        stderr(&out)
    );
    assert!(
        stdout(&tenants().await).contains("after-the-backup"),
        "the database was not replaced"
    );
    assert!(files_named(db.data_dir(), "before-restore").is_empty());
    assert!(
        files_named(db.data_dir(), ".restore-").is_empty(),
        "no scratch copy left behind"
    );

    a.sigterm();
    assert!(a.wait_exit(EXIT_WITHIN).await.is_some(), "a stops");
    let out = run_blocking(restore_cmd(&db, KEY_K1, &file)).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("kept as"), "{}", stdout(&out));
    // Checked before anything else opens the file: a later process's own
    // WAL (one whose pool was still connecting as it exited) is not restore's.
    for leftover in ["tether.db-journal", "tether.db-wal"] {
        assert!(!db.data_dir().join(leftover).exists(), "{leftover} is left");
    }
    assert!(
        !stdout(&tenants().await).contains("after-the-backup"),
        "the backup is back"
    );
    let kept = files_named(db.data_dir(), "before-restore");
    assert_eq!(kept.len(), 1, "the replaced database is kept aside");
    // Both open, and the restored one serves again.
    stored_refresh_tokens(&format!("sqlite://{}", kept[0].display()), &ids);
    stored_refresh_tokens(&db.url, &ids);
    let mut again = Instance::new(&db, "again", &server.uri(), &[]);
    again.start().await;
}

#[actix_web::test]
async fn restore_is_refused_under_a_key_ring_that_lacks_the_backups_key_and_names_only_its_id() {
    let (db, ids) = database_with_connections(2);
    let folder = tempfile::tempdir().unwrap();
    let file = folder.path().join("tether-backup.db");
    let out = run_blocking(backup_cmd(&db, KEY_K1, &file, &[])).await;
    assert!(out.status.success(), "{}", stderr(&out));

    for ring in [KEY_K2, KEY_K1_OTHER] {
        let fresh = TestDb::new(Backend::Sqlite);
        let out = run_blocking(restore_cmd(&fresh, ring, &file)).await;
        assert_eq!(out.status.code(), Some(1), "{ring}: {}", stdout(&out));
        let err = stderr(&out);
        assert!(
            err.contains("key ring cannot open") && err.contains("'k1'"),
            "{ring}: {err}"
        );
        for material in [KEY_K1, KEY_K2, KEY_K1_OTHER] {
            let secret = material.split_once(':').unwrap().1;
            assert!(!err.contains(secret), "no key material in: {err}");
        }
        assert!(
            !fresh.data_dir().join("tether.db").exists(),
            "{ring}: nothing was written"
        );
        assert!(files_named(fresh.data_dir(), ".restore-").is_empty());
    }

    // A ring that holds k1, whatever else it holds, restores it.
    let fresh = TestDb::new(Backend::Sqlite);
    let ring = format!("{KEY_K2},{KEY_K1}");
    let out = run_blocking(restore_cmd(&fresh, &ring, &file)).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let left: Vec<String> = std::fs::read_dir(fresh.data_dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        left,
        ["tether.db"],
        "the database alone, no journal or scratch copy"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(fresh.data_dir().join("tether.db")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "private");
        let meta = std::fs::metadata(&file).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "the backup too");
    }
    stored_refresh_tokens(&fresh.url, &ids);
}

#[actix_web::test]
async fn restore_refuses_a_file_that_is_not_a_tether_database() {
    let folder = tempfile::tempdir().unwrap();
    let text = folder.path().join("notes.txt");
    std::fs::write(&text, "not a database at all").unwrap();
    let other = folder.path().join("other.db");
    let pool = tether::db::connect(&format!("sqlite://{}", other.display()), 1).unwrap();
    diesel::connection::SimpleConnection::batch_execute(
        &mut *pool.get().unwrap(),
        "CREATE TABLE t (x INTEGER)",
    )
    .unwrap();
    drop(pool);
    let fresh = TestDb::new(Backend::Sqlite);
    let out = run_blocking(restore_cmd(&fresh, KEY_K1, &text)).await;
    assert!(
        stderr(&out).contains("is not a SQLite database"),
        "{}",
        stderr(&out)
    );
    let out = run_blocking(restore_cmd(&fresh, KEY_K1, &other)).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("is not a Tether database"),
        "{}",
        stderr(&out)
    );
    assert!(!fresh.data_dir().join("tether.db").exists());
}

/// Refused before any connection is attempted, so the URL need not answer.
#[actix_web::test]
async fn backup_and_restore_refuse_postgresql_and_point_at_its_tools() {
    let db = TestDb::new(Backend::Sqlite);
    let file = db.data_dir().join("backup.db");
    std::fs::write(db.data_dir().join("existing.db"), b"x").unwrap();
    for args in [
        vec!["backup", file.to_str().unwrap()],
        vec![
            "restore",
            db.data_dir().join("existing.db").to_str().unwrap(),
        ],
    ] {
        let out = run_blocking({
            let mut cmd = tether(&db, KEY_K1);
            cmd.env(
                "TETHER_DATABASE_URL",
                "postgres://tether@127.0.0.1:1/tether",
            )
            .args(&args);
            cmd
        })
        .await;
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&out).contains("pg_dump") && stderr(&out).contains("pg_restore"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    assert!(!file.exists(), "no backup file was written");
}
