//! The first run, and several instances starting together.

use crate::backend_tests;
use crate::helpers::{tether, Backend, Server, TestDb, KEY_K1};
use std::process::Command;
use tether::db::models::{tenant::Tenant, user::User};

/// `tether` in an empty folder with no configuration at all (but port 0).
fn fresh(dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tether"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TETHER_BIND", "127.0.0.1:0")
        .env("RUST_LOG", "info")
        .current_dir(dir);
    cmd
}

#[cfg(unix)]
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[actix_web::test]
async fn a_first_start_creates_the_data_dir_keys_and_an_admin_and_a_second_reuses_them() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&mut fresh(dir.path())).unwrap();
    let banner = server.banner.join("\n");
    let base = format!("http://127.0.0.1:{}", server.port);
    assert!(banner.contains("(sqlite, development)"), "{banner}");
    assert!(
        banner.contains("Log in at http://127.0.0.1:8080/login"),
        "{banner}"
    );
    assert!(banner.contains("email:    admin@tether.local"), "{banner}");
    let password = banner
        .lines()
        .find_map(|l| l.trim().strip_prefix("password: "))
        .expect("a password line")
        .to_string();

    // One log line per request: method, path without the query, status,
    // latency, client and request id (probes such as /healthz log at debug).
    let res = reqwest::get(format!("{base}/login?token=hunter2-secret"))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let log = server.stop();
    let line = log
        .lines()
        .find(|l| l.contains(" tether::access GET /login 200 "))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        line.contains(" client=127.0.0.1 ") && line.contains(" request_id="),
        "{line}"
    );
    assert!(!log.contains("hunter2"), "{log}");

    let data = dir.path().join("data");
    for file in ["tether.db", "encryption.key", "session.key"] {
        assert!(data.join(file).is_file(), "{file}");
    }
    #[cfg(unix)]
    {
        assert_eq!(mode(&data.join("encryption.key")), 0o600);
        assert_eq!(mode(&data.join("session.key")), 0o600);
    }
    let key_before = std::fs::read(data.join("encryption.key")).unwrap();

    // The printed password is the admin's.
    let pool =
        tether::db::connect(&format!("sqlite://{}", data.join("tether.db").display()), 1).unwrap();
    let admin = User::by_email(&mut pool.get().unwrap(), "admin@tether.local")
        .unwrap()
        .unwrap();
    assert!(tether::auth::verify_password(
        &password,
        admin.password_hash.as_deref().unwrap()
    ));

    let second = Server::start(&mut fresh(dir.path())).unwrap();
    let banner = second.banner.join("\n");
    second.stop();
    assert!(!banner.contains("password"), "{banner}");
    assert!(banner.contains("Log in at"), "{banner}");
    assert_eq!(
        std::fs::read(data.join("encryption.key")).unwrap(),
        key_before
    );
    assert_eq!(Tenant::count(&mut pool.get().unwrap()).unwrap(), 1);
}

backend_tests!(two_servers_started_together_on_one_database_both_come_up);

async fn two_servers_started_together_on_one_database_both_come_up(backend: Backend) {
    let db = TestDb::new(backend);
    // Generated development keys would differ per process: share a ring, as
    // production does.
    let a = std::thread::spawn({
        let mut cmd = tether(&db, KEY_K1);
        move || Server::start(cmd.arg("serve"))
    });
    let b = std::thread::spawn({
        let mut cmd = tether(&db, KEY_K1);
        move || Server::start(cmd.arg("serve"))
    });
    let a = a.join().unwrap().expect("first instance");
    let b = b.join().unwrap().expect("second instance");
    let firsts = [&a, &b]
        .iter()
        .filter(|s| s.banner.iter().any(|l| l.starts_with("First start")))
        .count();
    a.stop();
    b.stop();
    assert_eq!(firsts, 1, "exactly one instance creates the first admin");
    let pool = tether::db::connect(&db.url, 1).unwrap();
    assert_eq!(Tenant::count(&mut pool.get().unwrap()).unwrap(), 1);
    assert_eq!(User::count(&mut pool.get().unwrap()).unwrap(), 1);
}

#[test]
fn production_refuses_a_misspelt_variable_naming_it_and_the_nearest_name_without_its_value() {
    let dir = tempfile::tempdir().unwrap();
    let session_key = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [9u8; 64]);
    let out = crate::helpers::run(
        fresh(dir.path())
            .env("TETHER_ENV", "production")
            .env("TETHER_PUBLIC_URL", "https://tether.example.com")
            .env("TETHER_ENCRYPTION_KEYS", KEY_K1)
            .env("TETHER_SESSION_KEY", &session_key)
            .env(
                "TETHER_DATABSE_URL",
                "postgres://tether:pw-in-the-typo@127.0.0.1:1/tether",
            )
            .arg("serve"),
        "",
    );
    assert_eq!(out.status.code(), Some(1));
    let err = crate::helpers::stderr(&out);
    assert!(
        err.contains(
            "TETHER_DATABSE_URL: is not a Tether variable; did you mean TETHER_DATABASE_URL?"
        ),
        "{err}"
    );
    // The variable it was meant to be is missing, and production needs it.
    assert!(
        err.contains("TETHER_DATABASE_URL: is required in production"),
        "{err}"
    );
    assert!(!err.contains("pw-in-the-typo"), "{err}");
    assert!(!dir.path().join("data").exists(), "nothing was created");
}

#[test]
fn production_without_a_database_url_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let session_key = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [9u8; 64]);
    let out = crate::helpers::run(
        fresh(dir.path())
            .env("TETHER_ENV", "production")
            .env("TETHER_PUBLIC_URL", "https://tether.example.com")
            .env("TETHER_ENCRYPTION_KEYS", KEY_K1)
            .env("TETHER_SESSION_KEY", &session_key)
            .env("TETHER_METRICS_TOKEN", "a-metrics-token-of-length")
            .arg("serve"),
        "",
    );
    assert_eq!(out.status.code(), Some(1));
    let err = crate::helpers::stderr(&out);
    assert!(
        err.contains("TETHER_DATABASE_URL: is required in production"),
        "{err}"
    );
    assert_eq!(err.matches("  - ").count(), 1, "only the database: {err}");
    assert!(!dir.path().join("data").exists(), "nothing was created");
}

#[test]
fn production_without_a_metrics_token_is_refused_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let session_key = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [9u8; 64]);
    let db = format!("sqlite://{}", dir.path().join("tether.db").display());
    let out = crate::helpers::run(
        fresh(dir.path())
            .env("TETHER_ENV", "production")
            .env("TETHER_PUBLIC_URL", "https://tether.example.com")
            .env("TETHER_ENCRYPTION_KEYS", KEY_K1)
            .env("TETHER_SESSION_KEY", &session_key)
            .env("TETHER_DATABASE_URL", &db)
            // Settings are checked before any command; `migrate` (rather
            // than `serve`) ends on its own should they ever pass.
            .arg("migrate"),
        "",
    );
    assert_eq!(out.status.code(), Some(1));
    let err = crate::helpers::stderr(&out);
    assert!(
        err.contains("TETHER_METRICS_TOKEN: is required in production"),
        "{err}"
    );
    assert_eq!(err.matches("  - ").count(), 1, "only the token: {err}");
    assert!(
        !dir.path().join("tether.db").exists(),
        "nothing was created"
    );
}

/// `tether migrate` in development with `url`: its standard error (the
/// warnings come before the database is reached, so an unreachable host
/// serves).
fn migrate_with_database(url: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = crate::helpers::run(
        fresh(dir.path())
            .env("TETHER_DATABASE_URL", url)
            .env("TETHER_ENCRYPTION_KEYS", KEY_K1)
            .arg("migrate"),
        "",
    );
    crate::helpers::stderr(&out)
}

#[test]
fn a_remote_postgres_url_without_required_tls_is_warned_of_naming_the_fix_not_the_password() {
    let warned = |err: &str| err.lines().any(|l| l.contains("sslmode=require"));
    for url in [
        "postgres://tether:pw-in-the-url@db.invalid:5432/tether",
        "postgresql://tether:pw-in-the-url@db.invalid/tether?sslmode=prefer",
        "postgres://tether:pw-in-the-url@192.0.2.1:5432/tether?sslmode=disable",
    ] {
        let err = migrate_with_database(url);
        let line = err
            .lines()
            .find(|l| l.contains("sslmode=require"))
            .unwrap_or_else(|| panic!("{url}: {err}"));
        assert!(line.contains("WARN"), "{line}");
        assert!(line.contains("TETHER_DATABASE_URL"), "{line}");
        assert!(!err.contains("pw-in-the-url"), "{err}");
    }
    // TLS required, or a database on this machine: no warning.
    for url in [
        "postgres://tether:pw@db.invalid:5432/tether?sslmode=require",
        "postgres://tether:pw@db.invalid:5432/tether?sslmode=verify-full&sslrootcert=/x.pem",
        "postgres://tether:pw@db.invalid:5432/tether?sslmode=verify-ca",
        "postgres://tether:pw@127.0.0.1:1/tether",
        "postgres://tether:pw@localhost:1/tether",
        "postgres://tether:pw@[::1]:1/tether",
        "postgres:///tether?host=/var/run/postgresql",
    ] {
        let err = migrate_with_database(url);
        assert!(!warned(&err), "{url}: {err}");
    }
}

#[test]
fn development_warns_of_a_misspelt_variable_and_starts() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        fresh(dir.path())
            .env("TETHER_REFRESH_INTERVL_SECS", "value-not-shown")
            .env("TETHER_TEST_POSTGRES_URL", "postgres://not-configuration")
            .env("TETHER_DEMO_CLIENT_ID", "demo-client"),
    )
    .expect("development starts");
    let log = server.stop();
    let warning = log
        .lines()
        .find(|l| l.contains("TETHER_REFRESH_INTERVL_SECS"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(warning.contains("WARN"), "{warning}");
    assert!(
        warning.contains("did you mean TETHER_REFRESH_INTERVAL_SECS?"),
        "{warning}"
    );
    assert!(!log.contains("value-not-shown"), "{log}");
    // Test and provider variables are known, not warned about.
    assert!(!log.contains("TETHER_TEST_POSTGRES_URL"), "{log}");
    assert!(!log.contains("TETHER_DEMO_CLIENT_ID"), "{log}");
}

#[test]
fn a_provider_with_half_its_credentials_stops_serve_and_fails_doctor_in_the_same_words() {
    let dir = tempfile::tempdir().unwrap();
    let said = "provider hubspot: HUBSPOT_CLIENT_SECRET is missing while HUBSPOT_CLIENT_ID is set; set both to enable it, or neither";
    let serve = crate::helpers::run(
        fresh(dir.path())
            .env("HUBSPOT_CLIENT_ID", "an-id")
            .arg("serve"),
        "",
    );
    assert_eq!(serve.status.code(), Some(1));
    let err = crate::helpers::stderr(&serve);
    assert!(err.contains(said), "{err}");
    assert!(!dir.path().join("data").exists(), "nothing was created");

    let doctor = crate::helpers::run(
        fresh(dir.path())
            .env("HUBSPOT_CLIENT_ID", "an-id")
            .arg("doctor"),
        "",
    );
    assert_eq!(doctor.status.code(), Some(1));
    let out = crate::helpers::stdout(&doctor);
    assert!(out.contains(&format!("FAIL  {said}")), "{out}");
    assert_eq!(out.matches(said).count(), 1, "said once: {out}");

    // The other half alone is refused the same way.
    let serve = crate::helpers::run(
        fresh(dir.path())
            .env("HUBSPOT_CLIENT_SECRET", "secret-not-shown")
            .arg("serve"),
        "",
    );
    assert_eq!(serve.status.code(), Some(1));
    let err = crate::helpers::stderr(&serve);
    assert!(
        err.contains(
            "provider hubspot: HUBSPOT_CLIENT_ID is missing while HUBSPOT_CLIENT_SECRET is set"
        ),
        "{err}"
    );
    assert!(!err.contains("secret-not-shown"), "{err}");
}
