//! The command line: each command does what it says, prints it, and turns
//! bad input into a usage message or a clear error.

use crate::backend_tests;
use crate::helpers::{
    run, stderr, stdout, tether, Backend, TestDb, KEY_K1, KEY_K1_OTHER, KEY_K2, SESSION_KEY,
};
use diesel::prelude::*;
use std::process::Command;
use tether::db::models::{api_key::ApiKey, user::User};

backend_tests!(
    tenant_add_then_list_shows_it_and_refuses_duplicates_and_bad_ids,
    user_add_reads_the_password_from_stdin_and_stores_an_argon2_hash,
    api_key_create_prints_the_secret_once_on_the_last_line_and_stores_its_hash,
    doctor_names_a_provider_that_rejected_tethers_credentials,
    doctor_reports_a_business_account_held_by_two_tenants,
    doctor_warns_when_app_events_are_relayed_nowhere,
    doctor_prints_redirect_uris_and_passes_on_a_working_setup,
    doctor_on_an_empty_database_reports_pending_migrations_and_leaves_it_empty,
    a_command_with_only_a_database_url_writes_no_key_file_and_no_key_check,
    a_refused_key_ring_records_no_key_check,
    lists_align_their_columns_and_print_json_without_secrets,
    every_command_but_config_says_on_stderr_which_configuration_it_used,
);

fn pool(db: &TestDb) -> tether::db::Pool {
    tether::db::connect(&db.url, 2).unwrap()
}

async fn tenant_add_then_list_shows_it_and_refuses_duplicates_and_bad_ids(backend: Backend) {
    let db = TestDb::migrated(backend);
    let out = run(
        tether(&db, KEY_K1).args(["tenant", "add", "client-42", "--name", "Main Street Dental"]),
        "",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).trim(),
        "created tenant 'client-42' (Main Street Dental)"
    );

    let out = run(tether(&db, KEY_K1).args(["tenant", "list"]), "");
    assert!(stdout(&out).contains("client-42") && stdout(&out).contains("Main Street Dental"));
    assert!(stdout(&out).contains("1 tenant(s)"));

    let dup = run(tether(&db, KEY_K1).args(["tenant", "add", "client-42"]), "");
    assert_eq!(dup.status.code(), Some(1));
    assert!(stderr(&dup).contains("already exists"), "{}", stderr(&dup));

    let bad = run(
        tether(&db, KEY_K1).args(["tenant", "add", "has space/../x"]),
        "",
    );
    assert_eq!(bad.status.code(), Some(1));
    assert!(stderr(&bad).contains("a tenant id is"), "{}", stderr(&bad));
    let out = run(tether(&db, KEY_K1).args(["tenant", "list"]), "");
    assert!(
        stdout(&out).contains("1 tenant(s)"),
        "nothing else was created"
    );
}

async fn user_add_reads_the_password_from_stdin_and_stores_an_argon2_hash(backend: Backend) {
    let db = TestDb::migrated(backend);
    run(tether(&db, KEY_K1).args(["tenant", "add", "acme"]), "");
    let add = [
        "user",
        "add",
        "--tenant",
        "acme",
        "--email",
        "Owner@Acme.example",
        "--password-stdin",
    ];

    let short = run(tether(&db, KEY_K1).args(add), "short\n");
    assert_eq!(short.status.code(), Some(1));
    assert!(
        stderr(&short).contains("at least 12 characters"),
        "{}",
        stderr(&short)
    );

    let out = run(tether(&db, KEY_K1).args(add), "a long enough passphrase\n");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).trim(),
        "created admin owner@acme.example for tenant 'acme'"
    );

    let pool = pool(&db);
    let user = User::by_email(&mut pool.get().unwrap(), "owner@acme.example")
        .unwrap()
        .unwrap();
    let hash = user.password_hash.unwrap();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(tether::auth::verify_password(
        "a long enough passphrase",
        &hash
    ));

    let unknown = run(
        tether(&db, KEY_K1).args([
            "user",
            "add",
            "--tenant",
            "nope",
            "--email",
            "a@b.example",
            "--password-stdin",
        ]),
        "x\n",
    );
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        stderr(&unknown).contains("no tenant 'nope'"),
        "{}",
        stderr(&unknown)
    );

    let bad_email = run(
        tether(&db, KEY_K1).args([
            "user",
            "add",
            "--tenant",
            "acme",
            "--email",
            "not-an-email",
            "--password-stdin",
        ]),
        "a long enough passphrase\n",
    );
    assert_eq!(bad_email.status.code(), Some(1));
    assert!(stderr(&bad_email).contains("not an email address"));

    let list = run(
        tether(&db, KEY_K1).args(["user", "list", "--tenant", "acme"]),
        "",
    );
    assert!(
        stdout(&list).contains("owner@acme.example") && stdout(&list).contains("1 user(s)"),
        "{}",
        stdout(&list)
    );
}

async fn api_key_create_prints_the_secret_once_on_the_last_line_and_stores_its_hash(
    backend: Backend,
) {
    let db = TestDb::migrated(backend);
    run(tether(&db, KEY_K1).args(["tenant", "add", "acme"]), "");
    let out = run(
        tether(&db, KEY_K1).args(["api-key", "create", "--name", "chatbot", "--tenant", "acme"]),
        "",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let secret = text.lines().last().unwrap().trim().to_string();
    assert!(secret.starts_with("tth_"), "{text}");
    assert!(text.contains("tenant 'acme'"));

    let pool = pool(&db);
    let key = ApiKey::authenticate(&mut pool.get().unwrap(), &secret).unwrap();
    assert_eq!(key.name, "chatbot");
    assert_eq!(
        key.secret_hash,
        tether::crypto::sha256_hex(secret.as_bytes())
    );
    // The secret is nowhere in the table.
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        secret_hash: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        prefix: String,
    }
    let rows: Vec<Row> = diesel::sql_query("SELECT secret_hash, prefix FROM api_keys")
        .load(&mut pool.get().unwrap())
        .unwrap();
    assert!(rows
        .iter()
        .all(|r| !r.secret_hash.contains(&secret[10..]) && !secret.ends_with(&r.prefix)));

    let list = run(tether(&db, KEY_K1).args(["api-key", "list"]), "");
    assert!(stdout(&list).contains("chatbot") && !stdout(&list).contains(&secret));

    let revoke = run(
        tether(&db, KEY_K1).args(["api-key", "revoke", &key.prefix]),
        "",
    );
    assert!(revoke.status.success(), "{}", stderr(&revoke));
    assert!(ApiKey::authenticate(&mut pool.get().unwrap(), &secret).is_err());
    let again = run(
        tether(&db, KEY_K1).args(["api-key", "revoke", &key.prefix]),
        "",
    );
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr(&again).contains("already revoked"));
    let wrong_tenant = run(
        tether(&db, KEY_K1).args(["api-key", "create", "--name", "x", "--tenant", "nope"]),
        "",
    );
    assert_eq!(wrong_tenant.status.code(), Some(1));
    // Without --scope, every scope but admin; the output says which.
    assert!(
        text.contains(
            "scopes token:read, status:read, directory:read, proxy, links, connections:write)"
        ),
        "{text}"
    );

    // Scopes and providers are named, checked and listed.
    let scoped = run(
        tether(&db, KEY_K1).args([
            "api-key",
            "create",
            "--name",
            "router",
            "--scope",
            "directory:read,status:read",
            "--scope",
            "token:read",
            "--provider",
            "demo",
        ]),
        "",
    );
    assert!(scoped.status.success(), "{}", stderr(&scoped));
    assert!(
        stdout(&scoped).contains("providers demo, scopes token:read, status:read, directory:read)"),
        "{}",
        stdout(&scoped)
    );
    let list = run(tether(&db, KEY_K1).args(["api-key", "list"]), "");
    let row = stdout(&list)
        .lines()
        .find(|l| l.contains("router"))
        .unwrap()
        .to_string();
    assert!(
        row.contains("token:read,status:read,directory:read") && row.contains("demo"),
        "{row}"
    );
    for (args, says) in [
        (
            vec!["--scope", "tokens"],
            "unknown scope 'tokens' (known: token:read",
        ),
        (vec!["--provider", "nope"], "no provider 'nope' (known: "),
    ] {
        let mut all = vec!["api-key", "create", "--name", "bad"];
        all.extend(args);
        let out = run(tether(&db, KEY_K1).args(&all), "");
        assert_eq!(out.status.code(), Some(1), "{all:?}");
        assert!(stderr(&out).contains(says), "{}", stderr(&out));
    }
    let keys = ApiKey::list(&mut pool.get().unwrap()).unwrap();
    assert!(keys.iter().all(|(k, _)| k.name != "bad"), "nothing created");
}

async fn doctor_prints_redirect_uris_and_passes_on_a_working_setup(backend: Backend) {
    let db = TestDb::migrated(backend);
    let out = run(
        tether(&db, KEY_K1)
            .env("TETHER_PUBLIC_URL", "https://tether.example.com")
            .env("TETHER_METRICS_TOKEN", "a-metrics-token-of-length")
            .arg("doctor"),
        "",
    );
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    assert!(
        text.contains("database (") && text.contains("reachable"),
        "{text}"
    );
    assert!(
        text.contains("https://tether.example.com/oauth/hubspot/callback"),
        "{text}"
    );

    // A half-configured provider is a failure the operator must fix.
    let half = run(
        tether(&db, KEY_K1)
            .env("TETHER_PUBLIC_URL", "https://tether.example.com")
            .env("HUBSPOT_CLIENT_ID", "id")
            .arg("doctor"),
        "",
    );
    assert!(!half.status.success());
    assert!(
        stdout(&half).contains(
            "FAIL  provider hubspot: HUBSPOT_CLIENT_SECRET is missing while HUBSPOT_CLIENT_ID is set"
        ),
        "{}",
        stdout(&half)
    );
}

fn bare() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tether"));
    let dir = std::env::temp_dir();
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(dir);
    cmd
}

#[test]
fn bad_arguments_print_the_usage_and_exit_non_zero() {
    for args in [
        vec!["bogus"],
        vec!["tenant"],
        vec!["tenant", "add"],
        vec!["keys", "rotate", "--batch-size", "0"],
        vec!["api-key", "create"],
        vec!["user", "add", "--email", "a@b.example"],
    ] {
        let out = run(bare().args(&args), "");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = stderr(&out);
        assert!(
            err.contains("Usage:") || err.contains("try '--help'"),
            "{args:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn invalid_configuration_names_each_variable_and_exits_non_zero() {
    let out = run(
        bare()
            .env("TETHER_BIND", "nowhere")
            .env("TETHER_REFRESH_INTERVAL_SECS", "-1")
            .arg("migrate"),
        "",
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("TETHER_BIND") && err.contains("TETHER_REFRESH_INTERVAL_SECS"),
        "{err}"
    );
}

#[test]
fn production_refuses_generated_keys_plain_http_and_the_demo_provider() {
    let out = run(
        bare()
            .env("TETHER_ENV", "production")
            .env("TETHER_DEMO_PROVIDER", "true")
            .arg("serve"),
        "",
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    for name in [
        "TETHER_ENCRYPTION_KEYS",
        "TETHER_SESSION_KEY",
        "TETHER_PUBLIC_URL",
        "TETHER_DEMO_PROVIDER",
    ] {
        assert!(err.contains(name), "{name}: {err}");
    }
}

#[test]
fn doctor_fails_on_an_unreachable_database() {
    let out = run(
        bare()
            .env(
                "TETHER_DATABASE_URL",
                "postgres://tether:pw-not-shown@127.0.0.1:1/tether",
            )
            .env("TETHER_ENCRYPTION_KEYS", KEY_K1)
            .arg("doctor"),
        "",
    );
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("FAIL") && text.contains("cannot connect to the postgres database"),
        "{text}"
    );
    assert!(!text.contains("pw-not-shown") && !stderr(&out).contains("pw-not-shown"));
}

#[test]
fn providers_list_shows_every_provider_why_it_is_off_and_its_redirect_uri() {
    let out = run(
        bare()
            .env("GOOGLE_CLIENT_ID", "id")
            .env("GOOGLE_CLIENT_SECRET", "s")
            .args(["providers", "list"]),
        "",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for key in [
        "gohighlevel",
        "hubspot",
        "calendly",
        "google",
        "spotify",
        "instagram",
        "microsoft",
        "bing",
        "wordpress",
        "wix",
        "demo",
    ] {
        assert!(text.lines().any(|l| l.starts_with(key)), "{key}: {text}");
    }
    let google = text.lines().find(|l| l.starts_with("google")).unwrap();
    assert!(
        google.contains("enabled")
            && google.contains("http://127.0.0.1:8080/oauth/google/callback"),
        "{google}"
    );
    let hubspot = text.lines().find(|l| l.starts_with("hubspot")).unwrap();
    assert!(
        hubspot.contains("disabled: set HUBSPOT_CLIENT_ID and HUBSPOT_CLIENT_SECRET"),
        "{hubspot}"
    );
}

async fn doctor_names_a_provider_that_rejected_tethers_credentials(backend: Backend) {
    let db = TestDb::migrated(backend);
    // Applies migrations; then a running server's refresh flags the provider.
    run(tether(&db, KEY_K1).arg("migrate"), "");
    let pool = pool(&db);
    tether::db::models::provider_flag::ProviderFlag::raise(
        &mut pool.get().unwrap(),
        &tether::ids::ProviderKey::known("hubspot"),
        "invalid_client",
    )
    .unwrap();
    let out = run(tether(&db, KEY_K1).arg("doctor"), "");
    assert!(!out.status.success());
    let text = stdout(&out);
    let line = text
        .lines()
        .find(|l| l.contains("hubspot: rejected"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.starts_with("FAIL") && line.contains("invalid_client"),
        "{line}"
    );
}

/// An enabled provider whose app webhooks Tether takes, with nowhere to
/// relay them: doctor says so; with an events URL it does not.
async fn doctor_warns_when_app_events_are_relayed_nowhere(backend: Backend) {
    let db = TestDb::migrated(backend);
    run(tether(&db, KEY_K1).arg("migrate"), "");
    let ghl = |cmd: &mut Command| {
        cmd.env("GOHIGHLEVEL_CLIENT_ID", "id")
            .env("GOHIGHLEVEL_CLIENT_SECRET", "secret")
            .env("TETHER_GOHIGHLEVEL_APP_ID", "app-1");
    };
    let mut cmd = tether(&db, KEY_K1);
    ghl(&mut cmd);
    let text = stdout(&run(cmd.arg("doctor"), ""));
    assert!(
        text.lines().any(|l| l.starts_with("warn")
            && l.contains("gohighlevel: its app events are acted on but relayed nowhere")),
        "{text}"
    );
    let mut cmd = tether(&db, KEY_K1);
    ghl(&mut cmd);
    cmd.env("TETHER_WEBHOOK_URL", "http://127.0.0.1:9/hooks")
        .env("TETHER_WEBHOOK_SECRET", "a-webhook-secret-of-some-length");
    let text = stdout(&run(cmd.arg("doctor"), ""));
    assert!(!text.contains("relayed nowhere"), "{text}");
}

/// A location two tenants hold, as versions before the one-holder rule
/// could store it: doctor names it and both tenants, and changes nothing.
async fn doctor_reports_a_business_account_held_by_two_tenants(backend: Backend) {
    use tether::db::models::connection::{Connection, Grant, TokenSet};
    use tether::db::models::tenant::Tenant;
    let db = TestDb::migrated(backend);
    run(tether(&db, KEY_K1).arg("migrate"), "");
    let pool = pool(&db);
    let mut c = pool.get().unwrap();
    let ring = tether::crypto::KeyRing::parse(KEY_K1).unwrap();
    tether::keys::ensure_checks(&mut c, &ring).unwrap();
    for tenant in ["acme", "beta"] {
        let t = Tenant::create(&mut c, tenant, tenant).unwrap();
        let tokens = TokenSet {
            access_token: tether::crypto::Secret::new(format!("at-{tenant}")),
            refresh_token: None,
            token_type: "Bearer".into(),
            raw: tether::crypto::Secret::new(serde_json::json!({})),
        };
        Connection::store_grant(
            &mut c,
            &ring,
            &Grant {
                kind: tether::db::models::connection::Kind::OAuth,
                tenant_id: &t.id,
                provider: &tether::ids::ProviderKey::known("gohighlevel"),
                account_id: &tether::ids::AccountId::known("loc_1"),
                account_name: None,
                scopes: &[],
                tokens: &tokens,
                expires_at: None,
                refresh_expires_at: None,
                next_refresh_at: None,
                metadata: &serde_json::json!({}),
                parent_account_id: None,
                tags: None,
            },
        )
        .unwrap();
    }
    drop(c);
    let out = run(tether(&db, KEY_K1).arg("doctor"), "");
    let text = stdout(&out);
    let line = text
        .lines()
        .find(|l| l.contains("loc_1"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.starts_with("warn"), "{line}");
    assert!(line.contains("held by 2 tenants (acme, beta)"), "{line}");
    let held: i64 = tether::db::schema::connections::table
        .filter(tether::db::schema::connections::token_ciphertext.is_not_null())
        .count()
        .get_result(&mut pool.get().unwrap())
        .unwrap();
    assert_eq!(held, 2, "reported, not resolved");
}

/// Tables in the test database, Tether's and diesel's bookkeeping alike.
fn table_count(db: &TestDb, backend: Backend) -> i64 {
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let count = match backend {
        Backend::Sqlite => {
            let path = db.url.trim_start_matches("sqlite://");
            let mut conn = diesel::SqliteConnection::establish(path).unwrap();
            diesel::sql_query("SELECT count(*) AS n FROM sqlite_master WHERE type = 'table'")
                .get_result::<Count>(&mut conn)
        }
        Backend::Postgres => diesel::sql_query(
            "SELECT count(*) AS n FROM information_schema.tables WHERE table_schema = 'public'",
        )
        .get_result::<Count>(&mut db.raw_pg()),
    };
    count.unwrap().n
}

fn key_check_ids(db: &TestDb) -> Vec<String> {
    let mut conn = pool(db).get().unwrap();
    tether::db::models::key_check::KeyCheck::all(&mut conn)
        .unwrap()
        .into_iter()
        .map(|k| k.key_id)
        .collect()
}

async fn doctor_on_an_empty_database_reports_pending_migrations_and_leaves_it_empty(
    backend: Backend,
) {
    let db = TestDb::new(backend);
    let out = run(tether(&db, KEY_K1).arg("doctor"), "");
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    let line = text
        .lines()
        .find(|l| l.contains("migration(s) of this version of Tether"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.starts_with("FAIL"), "{line}");
    assert!(line.contains("run `tether migrate`"), "{line}");
    assert_eq!(table_count(&db, backend), 0, "doctor changed nothing");

    // Listing commands refuse the same way, and change nothing either.
    let out = run(tether(&db, KEY_K1).args(["tenant", "list"]), "");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("run `tether migrate`"),
        "{}",
        stderr(&out)
    );
    assert_eq!(table_count(&db, backend), 0);

    // `migrate` migrates; then doctor finds the schema current.
    let out = run(tether(&db, KEY_K1).arg("migrate"), "");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(table_count(&db, backend) > 0);
    let out = run(tether(&db, KEY_K1).arg("doctor"), "");
    assert!(
        stdout(&out).contains("is reachable and migrated"),
        "{}",
        stdout(&out)
    );
}

async fn a_command_with_only_a_database_url_writes_no_key_file_and_no_key_check(backend: Backend) {
    // A database that is not the development SQLite of the data folder.
    let db = TestDb::migrated(backend);
    let cwd = tempfile::tempdir().unwrap();
    let only_url = || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tether"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("TETHER_DATABASE_URL", &db.url)
            .env("TETHER_BIND", "127.0.0.1:0")
            .current_dir(cwd.path());
        cmd
    };
    for args in [vec!["tenant", "list"], vec!["tenant", "add", "acme"]] {
        let out = run(only_url().args(&args), "");
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&out).contains("TETHER_ENCRYPTION_KEYS is required"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    let out = run(
        only_url()
            .env("TETHER_ENCRYPTION_KEYS", KEY_K1)
            .arg("serve"),
        "",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("TETHER_SESSION_KEY is required"),
        "{}",
        stderr(&out)
    );
    assert!(
        std::fs::read_dir(cwd.path()).unwrap().next().is_none(),
        "nothing written in the current folder"
    );
    assert!(key_check_ids(&db).is_empty(), "no key check recorded");

    // With the keys, a listing still records nothing; a change records its key.
    let out = run(
        only_url()
            .env("TETHER_ENCRYPTION_KEYS", KEY_K1)
            .args(["tenant", "list"]),
        "",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(key_check_ids(&db).is_empty());
    let out = run(
        only_url()
            .env("TETHER_ENCRYPTION_KEYS", KEY_K1)
            .env("TETHER_SESSION_KEY", SESSION_KEY)
            .args(["tenant", "add", "acme"]),
        "",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(key_check_ids(&db), ["k1"]);
    assert!(std::fs::read_dir(cwd.path()).unwrap().next().is_none());
}

async fn a_refused_key_ring_records_no_key_check(backend: Backend) {
    let db = TestDb::migrated(backend);
    let out = run(tether(&db, KEY_K1).args(["tenant", "add", "acme"]), "");
    assert!(out.status.success(), "{}", stderr(&out));
    // A new primary k2 beside a k1 that is not the key that wrote k1's data.
    let ring = format!("{KEY_K2},{KEY_K1_OTHER}");
    let out = run(tether(&db, &ring).args(["tenant", "add", "other"]), "");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("'k1'"), "{}", stderr(&out));
    assert_eq!(key_check_ids(&db), ["k1"], "k2 was not recorded");
}

#[test]
fn config_prints_every_variable_the_code_validates_against_even_when_the_configuration_is_bad() {
    for args in [
        vec!["config"],
        vec!["help", "config"],
        vec!["config", "--help"],
    ] {
        // A bad configuration must not hide the table that explains it.
        let out = run(bare().env("TETHER_BIND", "nowhere").args(&args), "");
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        let text = stdout(&out);
        for (name, default, _) in tether::config::VARIABLES {
            let line = text
                .lines()
                .find(|l| l.starts_with(&format!("{name} ")))
                .unwrap_or_else(|| panic!("{args:?} lacks {name}: {text}"));
            assert!(line.contains(default), "{line}");
        }
        assert!(text.contains("<KEY>_CLIENT_ID"), "{text}");
    }
    let help = stdout(&run(bare().arg("--help"), ""));
    assert!(
        help.lines().any(|l| l.trim_start().starts_with("config ")),
        "{help}"
    );
}

/// Whether every row's cells start where the header's columns do.
fn aligned(text: &str, columns: &[&str]) -> bool {
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let starts: Vec<usize> = columns
        .iter()
        .map(|c| header.find(c).unwrap_or_else(|| panic!("{c}: {header}")))
        .collect();
    // Rows have at least two columns apart; the sentences after them do not.
    lines.take_while(|l| l.contains("  ")).all(|row| {
        starts.iter().skip(1).all(|&at| {
            row.len() > at && row.as_bytes()[at - 1] == b' ' && row.as_bytes()[at] != b' '
        })
    })
}

fn json_of(out: &std::process::Output) -> Vec<serde_json::Value> {
    assert!(out.status.success(), "{}", stderr(out));
    serde_json::from_str::<serde_json::Value>(&stdout(out))
        .unwrap_or_else(|e| panic!("{e}: {}", stdout(out)))
        .as_array()
        .unwrap()
        .clone()
}

async fn lists_align_their_columns_and_print_json_without_secrets(backend: Backend) {
    let db = TestDb::migrated(backend);
    let long = "zz-a-tenant-id-longer-than-thirty-two-characters";
    for args in [
        vec!["tenant", "add", "acme"],
        vec!["tenant", "add", long, "--name", "Long"],
        vec![
            "api-key",
            "create",
            "--name",
            "a-key-name-longer-than-twenty-four",
            "--tenant",
            long,
        ],
    ] {
        assert!(run(tether(&db, KEY_K1).args(&args), "").status.success());
    }
    let out = run(
        tether(&db, KEY_K1).args([
            "user",
            "add",
            "--tenant",
            long,
            "--email",
            "someone-with-a-long-address@clinic.example",
            "--password-stdin",
        ]),
        "a long enough passphrase\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let secret = stdout(&run(
        tether(&db, KEY_K1).args(["api-key", "create", "--name", "k"]),
        "",
    ))
    .lines()
    .last()
    .unwrap()
    .to_string();

    let lists: [(&[&str], &[&str]); 5] = [
        (&["tenant", "list"], &["EXTERNAL ID", "NAME", "CREATED"]),
        (
            &["user", "list"],
            &["EMAIL", "TENANT", "ROLE", "LAST LOGIN"],
        ),
        (
            &["api-key", "list"],
            &[
                "PREFIX",
                "NAME",
                "TENANT",
                "SCOPES",
                "PROVIDERS",
                "LAST USED",
                "STATE",
            ],
        ),
        (
            &["keys", "status"],
            &["KEY ID", "STATE", "CONNECTIONS", "OAUTH STATES"],
        ),
        (
            &["providers", "list"],
            &["KEY", "NAME", "STATE", "REDIRECT URI"],
        ),
    ];
    for (args, columns) in lists {
        let out = run(tether(&db, KEY_K1).args(args), "");
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        assert!(
            aligned(&stdout(&out), columns),
            "{args:?}:\n{}",
            stdout(&out)
        );
        assert!(!stdout(&out).contains(&secret[4..]));
    }

    let tenants = json_of(&run(
        tether(&db, KEY_K1).args(["tenant", "list", "--json"]),
        "",
    ));
    let ids: Vec<&str> = tenants
        .iter()
        .map(|t| t["external_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["acme", long]);
    assert_eq!(tenants[1]["name"], "Long");
    assert!(tenants[1]["created_at"].as_str().unwrap().ends_with('Z'));

    let users = json_of(&run(
        tether(&db, KEY_K1).args(["user", "list", "--json"]),
        "",
    ));
    assert_eq!(users.len(), 1);
    assert_eq!(
        users[0]["email"],
        "someone-with-a-long-address@clinic.example"
    );
    assert_eq!(users[0]["tenant"], long);
    assert!(users[0]["last_login_at"].is_null());
    assert!(!users[0].to_string().contains("argon2"));

    let out = run(tether(&db, KEY_K1).args(["api-key", "list", "--json"]), "");
    assert!(!stdout(&out).contains(&secret[4..]), "never a secret");
    let keys = json_of(&out);
    assert_eq!(keys.len(), 2);
    let named = |name: &str| keys.iter().find(|k| k["name"] == name).unwrap();
    assert_eq!(named("a-key-name-longer-than-twenty-four")["tenant"], long);
    let k = named("k");
    assert_eq!(k["tenant"], serde_json::Value::Null);
    assert_eq!(k["state"], "active");
    assert_eq!(
        k["scopes"],
        serde_json::json!([
            "token:read",
            "status:read",
            "directory:read",
            "proxy",
            "links",
            "connections:write"
        ])
    );
    assert_eq!(k["providers"], serde_json::Value::Null);
    assert!(secret.contains(k["prefix"].as_str().unwrap()));

    let ring = json_of(&run(
        tether(&db, KEY_K1).args(["keys", "status", "--json"]),
        "",
    ));
    assert_eq!(ring[0]["key_id"], "k1");
    assert_eq!(ring[0]["primary"], true);
    assert!(!ring[0].to_string().contains(KEY_K1));

    let providers = json_of(&run(
        tether(&db, KEY_K1).args(["providers", "list", "--json"]),
        "",
    ));
    let hubspot = providers.iter().find(|p| p["key"] == "hubspot").unwrap();
    assert_eq!(hubspot["enabled"], false);
    assert!(hubspot["disabled_reason"]
        .as_str()
        .unwrap()
        .contains("HUBSPOT_CLIENT_ID"));
    assert!(hubspot["redirect_uri"]
        .as_str()
        .unwrap()
        .ends_with("/oauth/hubspot/callback"));

    let webhooks = json_of(&run(
        tether(&db, KEY_K1).args(["webhooks", "list", "--json"]),
        "",
    ));
    assert!(webhooks.is_empty());
}

async fn every_command_but_config_says_on_stderr_which_configuration_it_used(backend: Backend) {
    let db = TestDb::migrated(backend);
    let described = match backend {
        Backend::Sqlite => format!("sqlite {}", db.url.trim_start_matches("sqlite://")),
        Backend::Postgres => {
            let url = url::Url::parse(&db.url).unwrap();
            format!(
                "postgres {}:{}{}",
                url.host_str().unwrap(),
                url.port().unwrap_or(5432),
                url.path()
            )
        }
    };
    let file = db.data_dir().join("tether.toml");
    std::fs::write(&file, "tether_refresh_interval_secs = 30\n").unwrap();
    for (args, with_file) in [
        (vec!["tenant", "list", "--json"], false),
        (vec!["doctor"], false),
        (
            vec![
                "--config",
                file.to_str().unwrap(),
                "providers",
                "list",
                "--json",
            ],
            true,
        ),
    ] {
        let out = run(tether(&db, KEY_K1).args(&args), "");
        let err = stderr(&out);
        let first = err.lines().next().unwrap_or_default();
        let expected = if with_file {
            format!(
                "tether: development, {described} (config file {})",
                file.display()
            )
        } else {
            format!("tether: development, {described}")
        };
        assert_eq!(first, expected, "{args:?}: {err}");
        if args.contains(&"--json") {
            json_of(&out);
        }
    }
    let out = run(tether(&db, KEY_K1).arg("config"), "");
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
}

#[test]
fn the_configuration_line_names_a_production_database_without_its_credentials() {
    let out = run(
        bare()
            .env("TETHER_ENV", "production")
            .env(
                "TETHER_DATABASE_URL",
                "postgres://tether:pw-not-shown@127.0.0.1:1/tether?password=q-not-shown",
            )
            .env("TETHER_ENCRYPTION_KEYS", KEY_K1)
            .env("TETHER_SESSION_KEY", SESSION_KEY)
            .env("TETHER_PUBLIC_URL", "https://tether.example.com")
            .env("TETHER_METRICS_TOKEN", "a-metrics-token-of-length")
            .arg("doctor"),
        "",
    );
    let err = stderr(&out);
    assert_eq!(
        err.lines().next(),
        Some("tether: production, postgres 127.0.0.1:1/tether"),
        "{err}"
    );
    let all = format!("{err}{}", stdout(&out));
    assert!(
        !all.contains("pw-not-shown") && !all.contains("q-not-shown") && !all.contains("tether:pw"),
        "{all}"
    );
}

/// The README's configuration table names every variable Tether reads.
#[test]
fn the_readme_configuration_table_lists_every_variable() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md at the root");
    for (name, _, _) in tether::config::VARIABLES {
        assert!(
            readme.contains(&format!("| `{name}` |")),
            "the README's configuration table lacks {name}"
        );
    }
}
