//! PostgreSQL over TLS, as managed services demand it, with the default
//! build: `sslmode=require` against the local server (which has `ssl = on`),
//! and `verify-full` against a throwaway cluster of the test's own whose
//! certificate a CA made by the test signed and which refuses plain
//! connections; the wrong CA is refused. Skipped, like every PostgreSQL
//! test, when TETHER_TEST_POSTGRES_URL is not set. Also: compose.yaml names
//! only variables Tether knows.

use crate::helpers::{
    postgres_url, run, skipped_without_postgres, stderr, stdout, tether, Backend, TestDb, KEY_K1,
};
use diesel::prelude::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use tether::db::DbConn;

#[derive(QueryableByName)]
struct Ssl {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    ssl: bool,
}

/// Whether the pool's connection to `url` is encrypted, as the server sees it.
fn pool_uses_tls(url: &str) -> Result<bool, String> {
    let pool = tether::db::connect(url, 1)?;
    let mut conn = pool.get().map_err(|e| e.to_string())?;
    let DbConn::Postgres(pg) = &mut *conn else {
        panic!("a PostgreSQL URL gives a PostgreSQL connection");
    };
    diesel::sql_query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .get_result::<Ssl>(pg)
        .map(|r| r.ssl)
        .map_err(|e| e.to_string())
}

fn with_params(url: &str, params: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{params}")
}

#[test]
fn sslmode_require_connects_over_tls_to_the_local_server() {
    let Some(url) = postgres_url() else {
        eprintln!("skipped: TETHER_TEST_POSTGRES_URL is not set");
        return;
    };
    assert_eq!(
        pool_uses_tls(&with_params(&url, "sslmode=require")),
        Ok(true),
        "the default build speaks TLS to PostgreSQL"
    );
}

#[test]
fn verify_full_connects_with_the_servers_ca_and_refuses_another() {
    if skipped_without_postgres() {
        return;
    }
    let cluster = TlsCluster::start();
    let base = format!("postgres://postgres@127.0.0.1:{}/postgres", cluster.port);
    let verified = with_params(
        &base,
        &format!(
            "sslmode=verify-full&sslrootcert={}",
            cluster.dir.join("ca.crt").display()
        ),
    );
    assert_eq!(pool_uses_tls(&verified), Ok(true), "{}", cluster.log());

    // The cluster refuses plain connections, as managed services do.
    let plain = pool_uses_tls(&with_params(&base, "sslmode=disable")).unwrap_err();
    assert!(plain.contains("no encryption"), "{plain}");

    // A CA that did not sign the server's certificate.
    let wrong = with_params(
        &base,
        &format!(
            "sslmode=verify-full&sslrootcert={}",
            cluster.dir.join("other-ca.crt").display()
        ),
    );
    let refused = pool_uses_tls(&wrong).unwrap_err();
    assert!(refused.contains("certificate verify failed"), "{refused}");

    // The binary too: migrations over a verified connection.
    let db = TestDb::new(Backend::Sqlite);
    let out = run(
        tether(&db, KEY_K1)
            .env("TETHER_DATABASE_URL", &verified)
            .arg("migrate"),
        "",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("database (postgres) is migrated"));
    let out = run(
        tether(&db, KEY_K1)
            .env("TETHER_DATABASE_URL", &wrong)
            .arg("migrate"),
        "",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("certificate verify failed"),
        "{}",
        stderr(&out)
    );
}

/// A PostgreSQL cluster of the test's own, in a temp dir on a free port,
/// with `ssl = on`, a certificate for localhost and 127.0.0.1 signed by a CA
/// made here, and only `hostssl` entries; stopped when dropped.
struct TlsCluster {
    dir: PathBuf,
    port: u16,
    _temp: tempfile::TempDir,
}

/// Runs a command, as the `postgres` user when we are root (PostgreSQL
/// refuses to run as root); panics with its output when it fails.
fn must(program: &str, args: &[&str], as_postgres: bool) {
    let mut cmd = if as_postgres && is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", program]);
        c
    } else {
        Command::new(program)
    };
    let out = cmd
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// initdb and pg_ctl of the installed PostgreSQL (the newest), or from PATH.
fn pg_bin(name: &str) -> String {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.flatten()
                .map(|e| e.path().join("bin").join(name))
                .collect()
        })
        .unwrap_or_default();
    versions.retain(|p| p.exists());
    versions.sort();
    versions
        .pop()
        .map_or(name.to_string(), |p| p.display().to_string())
}

impl TlsCluster {
    fn start() -> TlsCluster {
        let temp = tempfile::tempdir().expect("temp dir");
        let dir = temp.path().to_path_buf();
        let s = |p: &Path| p.display().to_string();
        let file = |name: &str| s(&dir.join(name));
        // Two CAs; the server's certificate is signed by the first.
        for ca in ["ca", "other-ca"] {
            must(
                "openssl",
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:prime256v1",
                    "-nodes",
                    "-days",
                    "2",
                    "-subj",
                    &format!("/CN=Tether test {ca}"),
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign",
                    "-keyout",
                    &file(&format!("{ca}.key")),
                    "-out",
                    &file(&format!("{ca}.crt")),
                ],
                false,
            );
        }
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        must(
            "openssl",
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-subj",
                "/CN=localhost",
                "-keyout",
                &file("server.key"),
                "-out",
                &file("server.csr"),
            ],
            false,
        );
        must(
            "openssl",
            &[
                "x509",
                "-req",
                "-in",
                &file("server.csr"),
                "-CA",
                &file("ca.crt"),
                "-CAkey",
                &file("ca.key"),
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &file("server.ext"),
                "-out",
                &file("server.crt"),
            ],
            false,
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let private = std::fs::Permissions::from_mode(0o600);
            std::fs::set_permissions(dir.join("server.key"), private).unwrap();
        }
        let data = dir.join("data");
        if is_root() {
            must("chown", &["-R", "postgres:postgres", &s(&dir)], false);
        }
        must(
            &pg_bin("initdb"),
            &[
                "-D",
                &s(&data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
            true,
        );
        // Encrypted connections only, as a managed service has it.
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
        )
        .unwrap();
        if is_root() {
            must(
                "chown",
                &["postgres:postgres", &s(&data.join("pg_hba.conf"))],
                false,
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let options = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c ssl=on \
             -c ssl_cert_file={} -c ssl_key_file={} -c fsync=off",
            s(&dir),
            file("server.crt"),
            file("server.key")
        );
        let cluster = TlsCluster {
            dir: dir.clone(),
            port,
            _temp: temp,
        };
        must(
            &pg_bin("pg_ctl"),
            &[
                "-D",
                &s(&data),
                "-o",
                &options,
                "-l",
                &file("server.log"),
                "-w",
                "-t",
                "60",
                "start",
            ],
            true,
        );
        cluster
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}

impl Drop for TlsCluster {
    fn drop(&mut self) {
        let data = self.dir.join("data").display().to_string();
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", &pg_bin("pg_ctl")]);
            c
        } else {
            Command::new(pg_bin("pg_ctl"))
        };
        let _ = cmd
            .args(["-D", &data, "-m", "immediate", "-w", "stop"])
            .output();
    }
}

/// Every `TETHER_*` name in compose.yaml is one the configuration reads
/// (`tether::config::VARIABLES`, which the README's table follows).
#[test]
fn compose_yaml_names_only_known_configuration_variables() {
    let compose = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/compose.yaml"))
        .expect("compose.yaml at the root");
    let known: Vec<&str> = tether::config::VARIABLES.iter().map(|v| v.0).collect();
    let mut seen = Vec::new();
    let mut rest = compose.as_str();
    while let Some(at) = rest.find("TETHER_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        assert!(
            known.contains(&name.as_str()),
            "compose.yaml names {name}, which Tether does not read"
        );
        seen.push(name);
    }
    for needed in [
        "TETHER_DATABASE_URL",
        "TETHER_ENCRYPTION_KEYS",
        "TETHER_SESSION_KEY",
        "TETHER_PUBLIC_URL",
    ] {
        assert!(
            seen.iter().any(|s| s == needed),
            "compose.yaml sets {needed}"
        );
    }
    assert!(compose.contains("/readyz"), "its healthcheck asks /readyz");
    assert!(compose.contains("stop_grace_period"));
}
