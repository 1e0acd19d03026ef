//! The TypeScript client (`clients/typescript`, README "TypeScript client")
//! as the CRM's services use it: its `node --test` suite runs against a
//! live Tether whose tenant connected through the real flow, with a real
//! webhook delivery of that connect to verify; and its committed types are
//! what openapi-typescript generates from the document this server serves,
//! so a changed API without regenerated types fails here.
//!
//! Needs `npm ci --prefix clients/typescript` (CI runs it); without it the
//! tests say they are skipped, unless TETHER_BROWSER_TESTS=required.

use crate::backend_tests;
use crate::helpers::{
    connect, eventually, issued_ago, received, service, spawn_app_with_acme, tokens, Backend,
    FakeProvider, TestApp, ACCOUNT, OWNER, PASSWORD, WEBHOOK_SECRET,
};
use diesel::prelude::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

backend_tests!(
    the_typescript_client_passes_its_tests_against_a_live_tether,
    the_committed_typescript_types_are_what_the_served_document_generates,
);

/// The client's folder.
fn client_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/typescript")
}

/// Whether the client's packages are installed; when they are not, says the
/// test is skipped, or fails it where they are required (CI).
fn installed() -> bool {
    if client_dir().join("node_modules/typescript").is_dir() {
        return true;
    }
    assert!(
        std::env::var("TETHER_BROWSER_TESTS").as_deref() != Ok("required"),
        "TETHER_BROWSER_TESTS=required, but clients/typescript is not installed: \
         run `npm ci --prefix clients/typescript`"
    );
    eprintln!("skipped: clients/typescript is not installed (npm ci --prefix clients/typescript)");
    false
}

/// Runs `cmd` off the async runtime (the server under test answers on it
/// meanwhile) and returns what it did.
async fn run_blocking(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().expect("the command runs"))
        .await
        .unwrap()
}

/// Fails with `what` and everything the command said unless it succeeded.
fn assert_ran(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `npm run build` then `npm run build:test`, once per test process, so the
/// tests of both backends run the same compiled client and neither writes
/// `dist/` while the other reads it.
async fn built() {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let result = tokio::task::spawn_blocking(|| {
        BUILT
            .get_or_init(|| {
                for script in ["build", "build:test"] {
                    let out = Command::new("npm")
                        .args(["run", script])
                        .current_dir(client_dir())
                        .output()
                        .map_err(|e| format!("npm: {e}"))?;
                    if !out.status.success() {
                        return Err(format!(
                            "npm run {script}:\n{}\n{}",
                            String::from_utf8_lossy(&out.stdout),
                            String::from_utf8_lossy(&out.stderr)
                        ));
                    }
                }
                Ok(())
            })
            .clone()
    })
    .await
    .unwrap();
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// Tether's two webhook secrets during a rotation: a new `whsec_` one (the
/// base64 of its key) and the tests' usual plain one.
fn rotating_secrets() -> String {
    use base64::Engine;
    let new = base64::engine::general_purpose::STANDARD.encode("the-ts-client-new-key-2026");
    format!("whsec_{new} {WEBHOOK_SECRET}")
}

/// The provider's answer to the refresh of rt-1 that `min_ttl` asks for:
/// at-2, two hours to live. Expected exactly once.
async fn mount_refresh(fake: &FakeProvider) {
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_string_contains("grant_type=refresh_token"))
        .and(body_string_contains("refresh_token=rt-1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(tokens(
            "at-2",
            Some("rt-2"),
            7200.into(),
        )))
        .expect(1)
        .named("the refresh min_ttl asks for")
        .mount(&fake.server)
        .await;
}

/// The `connected` delivery the receiver got, as `{"body", "headers"}`
/// for the node tests.
async fn connected_delivery(app: &TestApp, receiver: &MockServer) -> serde_json::Value {
    eventually(10, "the connected event's delivery", move || async move {
        tether::webhooks::deliver_due(&app.state).await.unwrap();
        !received(receiver).await.is_empty()
    })
    .await;
    let request = &received(receiver).await[0];
    let body = String::from_utf8(request.body.clone()).unwrap();
    let payload: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(payload["type"], "connected", "{body}");
    let header = |name: &str| request.headers[name].to_str().unwrap().to_string();
    serde_json::json!({
        "body": body,
        "headers": {
            "webhook-id": header("webhook-id"),
            "webhook-timestamp": header("webhook-timestamp"),
            "webhook-signature": header("webhook-signature"),
        },
    })
}

fn connect_links(app: &TestApp) -> i64 {
    use tether::db::schema::connect_links;
    connect_links::table
        .count()
        .get_result(&mut app.conn())
        .unwrap()
}

/// The client's node tests (clients/typescript/test) against this server:
/// tenant `acme` connected to the fake `acme` as acct-42 by its admin, its
/// token past half its life (so a `min_ttl` longer than it has left makes
/// Tether refresh it, once), a key limited to `acme`, and the signed
/// delivery of the `connected` event under two secrets.
async fn the_typescript_client_passes_its_tests_against_a_live_tether(backend: Backend) {
    if !installed() {
        return;
    }
    built().await;
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hooks"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    let hook = format!("{}/hooks", receiver.uri());
    let secrets = rotating_secrets();
    let fake = FakeProvider::start().await;
    let app = spawn_app_with_acme(
        backend,
        &fake,
        "",
        &[
            ("TETHER_WEBHOOK_URL", &hook),
            ("TETHER_WEBHOOK_SECRET", &secrets),
        ],
    )
    .await;
    app.create_admin("acme", OWNER);
    assert_eq!(app.login(OWNER, PASSWORD).await.status(), 303);
    assert_eq!(connect(&app, &fake, "at-1", "rt-1").await.status(), 303);
    let delivery = connected_delivery(&app, &receiver).await;
    let c = app.acme_connection("acme");
    issued_ago(&mut app.conn(), c.id.as_str(), 7200);
    mount_refresh(&fake).await;
    let key = app.api_key(Some("acme"), false);
    let work = tempfile::tempdir().unwrap();
    let delivery_file = work.path().join("delivery.json");
    std::fs::write(&delivery_file, delivery.to_string()).unwrap();

    let mut node = Command::new("node");
    node.args(["--test", "--test-reporter=tap", "dist-test/"])
        .current_dir(client_dir())
        .env("TETHER_URL", &app.address)
        .env("TETHER_API_KEY", &key)
        .env("TETHER_TEST_TENANT", "acme")
        .env("TETHER_TEST_PROVIDER", "acme")
        .env("TETHER_TEST_ACCOUNT", ACCOUNT)
        .env("TETHER_WEBHOOK_SECRET", &secrets)
        .env("TETHER_TEST_WEBHOOK", &delivery_file);
    let out = run_blocking(node).await;
    assert_ran(&out, "node --test (clients/typescript)");
    let tap = String::from_utf8_lossy(&out.stdout);
    for line in ["# fail 0", "# skipped 0", "# todo 0", "# cancelled 0"] {
        assert!(tap.lines().any(|l| l == line), "no `{line}`:\n{tap}");
    }
    assert!(!tap.lines().any(|l| l == "# pass 0"), "no test ran:\n{tap}");
    // What the client asked for happened at Tether: one refresh for the
    // min_ttl (the mock expects exactly one), one link (the one with bad
    // tags made none).
    assert_eq!(fake.refresh_calls().await, 1);
    assert_eq!(connect_links(&app), 1);
}

/// `src/schema.d.ts` as committed equals what `npm run generate` makes of
/// the document this server serves.
async fn the_committed_typescript_types_are_what_the_served_document_generates(backend: Backend) {
    if !installed() {
        return;
    }
    let fake = FakeProvider::start().await;
    let app = spawn_app_with_acme(backend, &fake, "", &[]).await;
    let res = service()
        .get(format!("{}/api/v1/openapi.json", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let work = tempfile::tempdir().unwrap();
    let (document, generated) = (
        work.path().join("openapi.json"),
        work.path().join("schema.d.ts"),
    );
    std::fs::write(&document, res.bytes().await.unwrap()).unwrap();
    let mut generate = Command::new("node");
    generate
        .arg("scripts/generate.mjs")
        .args([&document, &generated])
        .current_dir(client_dir());
    assert_ran(&run_blocking(generate).await, "npm run generate");
    let committed = std::fs::read_to_string(client_dir().join("src/schema.d.ts")).unwrap();
    let fresh = std::fs::read_to_string(&generated).unwrap();
    if committed != fresh {
        let (line, (was, now)) = committed
            .lines()
            .zip(fresh.lines())
            .enumerate()
            .find(|(_, (a, b))| a != b)
            .unwrap_or((
                committed.lines().count().min(fresh.lines().count()),
                ("", ""),
            ));
        panic!(
            "clients/typescript/src/schema.d.ts is not what the served document generates: \
             run `npm run generate` in clients/typescript against a server built from this tree.\n\
             First difference, line {}:\n  committed: {was}\n  generated: {now}",
            line + 1
        );
    }
}
