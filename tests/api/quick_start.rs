//! The README's production quick start, run as written: a fresh database,
//! the shell lines verbatim (only the database URL is the test's), and the
//! server they start answers readiness and the API key they printed.

use crate::backend_tests;
use crate::helpers::{Backend, Server, TestDb};
use diesel::prelude::*;
use std::process::Command;

backend_tests!(the_production_quick_start_works_as_written);

/// The README's example database URL, replaced by the test's own.
const EXAMPLE_DATABASE_URL: &str = "postgres://tether@db.internal:5432/tether?sslmode=verify-full";

/// The first `sh` block after the "Production quick start" heading.
fn quick_start() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md at the root");
    let section = &readme[readme
        .find("### Production quick start")
        .expect("the README has a production quick start")..];
    let block = &section[section.find("```sh\n").expect("a shell block") + 6..];
    block[..block.find("```").expect("the block ends")].to_string()
}

async fn the_production_quick_start_works_as_written(backend: Backend) {
    let db = TestDb::new(backend);
    let lines = quick_start();
    assert!(
        lines.contains(EXAMPLE_DATABASE_URL),
        "the quick start no longer names {EXAMPLE_DATABASE_URL}: update this test"
    );
    let script = format!(
        "set -euo pipefail\n{}",
        lines.replace(EXAMPLE_DATABASE_URL, &db.url)
    );
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_tether"))
        .parent()
        .expect("the binary's folder");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let server = Server::start(
        Command::new("bash")
            .arg("-c")
            .arg(&script)
            .env_clear()
            .env("PATH", path)
            .env("HOME", db.data_dir())
            .env("ADMIN_PASSWORD", "a long admin password")
            // Not the README's 8080: tests run side by side.
            .env("TETHER_BIND", "127.0.0.1:0")
            .env("TETHER_DATA_DIR", db.data_dir())
            .current_dir(db.data_dir()),
    )
    .unwrap_or_else(|e| panic!("the quick start failed: {e}\n{script}"));
    // What the commands printed before `serve`: the API key is the last
    // line of `api-key create`, just before the listening line.
    let listening = server
        .banner
        .iter()
        .position(|l| l.starts_with("Tether is listening"))
        .expect("the listening line");
    let api_key = server.banner[listening - 1].trim().to_string();
    let base = format!("http://127.0.0.1:{}", server.port);

    let client = reqwest::Client::new();
    let ready = client.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let listed = client
        .get(format!("{base}/api/v1/tenants/acme/connections"))
        .bearer_auth(&api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200, "{:?}", server.banner);

    // The admin the lines created is there, with the password piped in.
    let pool = tether::db::connect(&db.url, 1).unwrap();
    let admins: i64 = tether::db::schema::users::table
        .filter(tether::db::schema::users::email.eq("admin@acme.example"))
        .count()
        .get_result(&mut pool.get().unwrap())
        .unwrap();
    assert_eq!(admins, 1);
    drop(pool);
    let stderr = server.stop();
    assert!(!stderr.contains("ERROR"), "{stderr}");
}
