//! Importing tokens the CRM stored itself (issue 10 point 7): through the
//! internal API (admin keys) and `tether connections import`, stored sealed
//! like any connection, due ones refreshed at the provider, an account
//! already connected skipped, bad input refused and changing nothing, and
//! no token ever repeated in an answer, on stdout or stderr.

use crate::backend_tests;
use crate::helpers::{
    acme_vars, run, spawn_app_with_provider, stderr, stdout, tether, Backend, FakeProvider,
    TestApp, KEY_K1,
};
use diesel::prelude::*;
use serde_json::{json, Value};
use tether::db::models::connection::Connection;
use tether::db::now;
use tether::refresh::scheduler::Scheduler;
use wiremock::matchers::{body_string_contains, header, method, path};
use wiremock::{Mock, ResponseTemplate};

backend_tests!(
    an_admin_key_imports_tokens_sealed_and_served_like_a_connection,
    expired_imports_are_refused_and_nearly_expired_ones_refreshed_at_once,
    an_import_is_the_account_the_provider_names_or_nothing_is_stored,
    an_account_already_connected_is_skipped_unless_replace_is_asked,
    bad_imports_are_refused_change_nothing_and_never_repeat_a_token,
    only_admin_keys_import_and_unknown_tenants_or_providers_are_not_found,
    cli_import_reports_every_line_and_due_imports_are_refreshed_by_the_scheduler,
    cli_dry_run_checks_every_line_and_writes_nothing,
);

const SECRET: &str = "tok-secret";

/// An app with `acme` against a fake, tenant `acme`, and a global admin key.
async fn setup(backend: Backend) -> (TestApp, FakeProvider, String) {
    let fake = FakeProvider::start().await;
    let app = spawn_app_with_provider(backend, &fake, "post").await;
    app.ensure_tenant("acme");
    let admin = app.api_key(None, true);
    (app, fake, admin)
}

async fn import(
    app: &TestApp,
    key: &str,
    tenant: &str,
    provider: &str,
    body: &Value,
) -> reqwest::Response {
    app.api_post(
        &format!("/api/v1/tenants/{tenant}/connections/{provider}/import"),
        key,
        Some(body.clone()),
    )
    .await
}

/// The status and body of an answer, checked to repeat no token.
async fn answer(res: reqwest::Response) -> (u16, Value) {
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    assert!(!text.contains(SECRET), "a token in the answer: {text}");
    (status, serde_json::from_str(&text).unwrap())
}

/// The fake's account lookup (`GET /me`) answering each access token with
/// its account; any other token is refused (404).
async fn mount_me(fake: &FakeProvider, pairs: &[(&str, &str)]) {
    for (token, account) in pairs {
        Mock::given(method("GET"))
            .and(path("/me"))
            .and(header("authorization", format!("Bearer {token}").as_str()))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(json!({"sub": account, "name": "From Acme"})),
            )
            .mount(&fake.server)
            .await;
    }
}

/// The refresh grant's answer: a new access token for two hours.
async fn mount_refresh(fake: &FakeProvider) {
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_string_contains("grant_type=refresh_token"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"access_token": "at-fresh", "expires_in": 7200})),
        )
        .named("refresh")
        .mount(&fake.server)
        .await;
}

/// The refresh tokens the fake's token endpoint was sent, in order.
async fn refresh_tokens_sent(fake: &FakeProvider) -> Vec<String> {
    fake.requests()
        .await
        .iter()
        .filter(|r| r.url.path() == "/token")
        .filter_map(|r| {
            url::form_urlencoded::parse(&r.body)
                .find(|(k, _)| k == "refresh_token")
                .map(|(_, v)| v.into_owned())
        })
        .collect()
}

/// The (kind, actor) of every event of a connection.
fn events_of(app: &TestApp, connection_id: &str) -> Vec<(String, String)> {
    use tether::db::schema::events;
    events::table
        .filter(events::connection_id.eq(connection_id))
        .order(events::created_at.asc())
        .select((events::kind, events::actor))
        .load(&mut app.conn())
        .unwrap()
}

fn tokens(app: &TestApp, c: &Connection) -> (String, Option<String>) {
    let t = c.tokens(&app.ctx.keys).unwrap().unwrap();
    (
        t.access_token.expose().clone(),
        t.refresh_token.map(|r| r.expose().clone()),
    )
}

fn connection_count(app: &TestApp) -> i64 {
    use tether::db::schema::connections;
    connections::table
        .count()
        .get_result(&mut app.conn())
        .unwrap()
}

async fn an_admin_key_imports_tokens_sealed_and_served_like_a_connection(backend: Backend) {
    let (app, fake, admin) = setup(backend).await;
    mount_me(&fake, &[("at-tok-secret-1", "loc_1")]).await;
    let body = json!({
        "access_token": "at-tok-secret-1", "refresh_token": "rt-tok-secret-1",
        "expires_in": 3600, "scopes": ["contacts.read"],
        "account": {"id": "loc_1", "name": "Main Street Dental"},
        "metadata": {"locationId": "loc_1", "companyId": "c_9"}
    });
    let (status, body) = answer(import(&app, &admin, "acme", "acme", &body).await).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["outcome"], "imported");
    assert_eq!(body["replaced"], false);
    assert_eq!(body["refresh"], "not_due");
    assert_eq!(body["status"]["status"], "connected");
    assert_eq!(body["status"]["account"]["name"], "Main Street Dental");

    let row = app.acme_account("acme", "loc_1");
    assert_eq!(
        tokens(&app, &row),
        ("at-tok-secret-1".into(), Some("rt-tok-secret-1".into()))
    );
    let sealed = row.token_ciphertext.clone().unwrap();
    assert!(
        !sealed.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
        "the tokens are sealed"
    );
    assert_eq!(row.scopes(), ["contacts.read"]);
    assert_eq!(
        row.metadata(),
        json!({"locationId": "loc_1", "companyId": "c_9"})
    );
    assert!(row.is_default, "the first account is the default");
    // Planned as a connect plans a one-hour token: at 80% of its life.
    let planned = (row.next_refresh_at.unwrap() - now()).num_seconds();
    assert!((2870..=2880).contains(&planned), "{planned}");
    let expires = (row.expires_at.unwrap() - now()).num_seconds();
    assert!((3590..=3600).contains(&expires), "{expires}");
    assert_eq!(
        events_of(&app, &row.id),
        [("connected".to_string(), "import:api:crm".to_string())]
    );

    // Served by the token API, with no call to the provider but the
    // import's own check of whose the token is.
    let token: Value = app.token(&admin, "acme").await.json().await.unwrap();
    assert_eq!(token["access_token"], "at-tok-secret-1");
    assert_eq!(token["account"]["id"], "loc_1");
    assert_eq!(fake.calls().await, 1);
    assert_eq!(fake.calls_to("/me").await, 1);
}

async fn expired_imports_are_refused_and_nearly_expired_ones_refreshed_at_once(backend: Backend) {
    let (app, fake, admin) = setup(backend).await;
    mount_refresh(&fake).await;
    mount_me(&fake, &[("at-tok-secret-near", "near")]).await;
    // Expired: nothing can say whose it is (the lookup is impossible).
    let before = app.snapshot();
    let expired = json!({
        "access_token": "at-tok-secret-old", "refresh_token": "rt-tok-secret-old",
        "expires_at": "2020-01-01T00:00:00Z", "account": {"id": "old"}
    });
    let (status, body) = answer(import(&app, &admin, "acme", "acme", &expired).await).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("has expired"),
        "{body}"
    );
    assert_eq!(app.snapshot(), before);
    // Within the refresh margin (300 s by default).
    let nearly = json!({
        "access_token": "at-tok-secret-near", "refresh_token": "rt-tok-secret-near",
        "expires_in": 120, "account": {"id": "near"}
    });
    for (body, account) in [(nearly, "near")] {
        let (status, body) = answer(import(&app, &admin, "acme", "acme", &body).await).await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["refresh"], "refreshed", "{body}");
        assert!(body["refresh_error"].is_null());
        assert_eq!(body["status"]["status"], "connected");
        let row = app.acme_account("acme", account);
        assert_eq!(tokens(&app, &row).0, "at-fresh");
        assert!(row.expires_at.unwrap() > now() + chrono::Duration::minutes(100));
        let kinds: Vec<String> = events_of(&app, &row.id).into_iter().map(|e| e.0).collect();
        assert_eq!(kinds, ["connected", "refreshed"]);
    }
    assert_eq!(refresh_tokens_sent(&fake).await, ["rt-tok-secret-near"]);

    // Expired and nothing to renew it with: refused, nothing stored.
    let before = app.snapshot();
    let dead =
        json!({"access_token": "at-tok-secret-dead", "expires_in": 0, "account": {"id": "dead"}});
    let (status, body) = answer(import(&app, &admin, "acme", "acme", &dead).await).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_import");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("has expired"));
    assert_eq!(app.snapshot(), before);
}

async fn an_account_already_connected_is_skipped_unless_replace_is_asked(backend: Backend) {
    let (app, fake, admin) = setup(backend).await;
    mount_me(&fake, &[("at-tok-secret-1", "loc_1")]).await;
    let t = app.tenant("acme");
    let seeded = app.seed(&t.id, "loc_1", "rt-0", 3600, 2000);
    let before = app.snapshot();
    let body = json!({
        "access_token": "at-tok-secret-1", "refresh_token": "rt-tok-secret-1",
        "expires_in": 3600, "account": {"id": "loc_1"}
    });
    let (status, answered) = answer(import(&app, &admin, "acme", "acme", &body).await).await;
    assert_eq!(status, 200, "{answered}");
    assert_eq!(answered["outcome"], "skipped");
    assert!(answered["message"]
        .as_str()
        .unwrap()
        .contains("already connected"));
    assert_eq!(app.snapshot(), before, "nothing was overwritten");
    assert_eq!(
        tokens(&app, &app.acme_account("acme", "loc_1"))
            .1
            .as_deref(),
        Some("rt-0")
    );

    let mut replace = body.clone();
    replace["replace"] = json!(true);
    let (status, answered) = answer(import(&app, &admin, "acme", "acme", &replace).await).await;
    assert_eq!(status, 200, "{answered}");
    assert_eq!(answered["outcome"], "imported");
    assert_eq!(answered["replaced"], true);
    let row = app.acme_account("acme", "loc_1");
    assert_eq!(row.id, seeded.id, "the same connection, overwritten");
    assert_eq!(tokens(&app, &row).1.as_deref(), Some("rt-tok-secret-1"));
    assert_eq!(
        events_of(&app, &row.id).last().unwrap(),
        &("reconnected".to_string(), "import:api:crm".to_string())
    );
    assert_eq!(
        fake.calls().await,
        fake.calls_to("/me").await,
        "only checks"
    );
}

async fn bad_imports_are_refused_change_nothing_and_never_repeat_a_token(backend: Backend) {
    let (app, fake, admin) = setup(backend).await;
    mount_me(&fake, &[("at-tok-secret", "loc_1")]).await;
    let t = app.tenant("acme");
    app.seed(&t.id, "loc_0", "rt-0", 3600, 2000);
    let ok = json!({"access_token": "at-tok-secret", "refresh_token": "rt-tok-secret", "account": {"id": "loc_1"}});
    let with = |field: &str, value: Value| {
        let mut b = ok.clone();
        b[field] = value;
        b
    };
    let cases = [
        (
            json!({"refresh_token": "rt-tok-secret", "account": {"id": "loc_1"}}),
            "invalid_import",
        ),
        (
            with("access_token", json!("tok-secret with spaces")),
            "invalid_import",
        ),
        (
            with(
                "access_token",
                json!(format!("{SECRET}{}", "x".repeat(9000))),
            ),
            "invalid_import",
        ),
        (
            with("refresh_token", json!(["rt-tok-secret"])),
            "invalid_import",
        ),
        (with("expires_at", json!("tok-secret")), "invalid_import"),
        (
            {
                let mut b = with("expires_at", json!("2030-01-01T00:00:00Z"));
                b["expires_in"] = json!(3600);
                b
            },
            "invalid_import",
        ),
        (with("expires_in", json!(-5)), "invalid_import"),
        (with("metadata", json!(["tok-secret"])), "invalid_import"),
        (with("metadata", json!("tok-secret")), "invalid_import"),
        (with("scopes", json!("tok-secret")), "invalid_import"),
        (with("account", json!({"id": ""})), "invalid_account"),
        (
            with("account", json!({"id": "x".repeat(257)})),
            "invalid_account",
        ),
        (with("account", json!({"id": "loc\n1"})), "invalid_account"),
        (
            with(
                "account",
                json!({"id": "loc_1", "tok-secret-as-a-key-0123456789": 1}),
            ),
            "invalid_import",
        ),
        (
            with("tok-secret-as-a-key-0123456789", json!(1)),
            "invalid_import",
        ),
        (with("replace", json!("tok-secret")), "invalid_import"),
        (json!(["tok-secret"]), "invalid_import"),
    ];
    let before = app.snapshot();
    for (body, code) in cases {
        let (status, answered) = answer(import(&app, &admin, "acme", "acme", &body).await).await;
        assert_eq!(
            (status, answered["error"]["code"].as_str().unwrap()),
            (400, code),
            "{body}: {answered}"
        );
        assert!(!answered["error"]["message"].as_str().unwrap().is_empty());
    }
    let res = reqwest::Client::new()
        .post(format!(
            "{}/api/v1/tenants/acme/connections/acme/import",
            app.address
        ))
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body(r#"{"access_token": "at-tok-secret", "#)
        .send()
        .await
        .unwrap();
    let (status, answered) = answer(res).await;
    assert_eq!(
        (status, answered["error"]["code"].as_str()),
        (400, Some("invalid_json"))
    );
    assert_eq!(app.snapshot(), before);
    assert_eq!(fake.calls().await, 0);
}

async fn only_admin_keys_import_and_unknown_tenants_or_providers_are_not_found(backend: Backend) {
    let (app, fake, admin) = setup(backend).await;
    mount_me(&fake, &[("at-tok-secret", "loc_1")]).await;
    app.ensure_tenant("other");
    let plain = app.api_key(None, false);
    let scoped_admin = app.api_key(Some("other"), true);
    let body = json!({"access_token": "at-tok-secret", "refresh_token": "rt-tok-secret", "account": {"id": "loc_1"}});
    let before = app.snapshot();
    for (key, tenant, provider, want) in [
        (&plain, "acme", "acme", (403, "missing_scope")),
        (&scoped_admin, "acme", "acme", (403, "forbidden")),
        (&admin, "nobody", "acme", (404, "not_found")),
        (&admin, "acme", "nothing", (404, "not_found")),
        // A preset whose credentials are not configured here.
        (&admin, "acme", "hubspot", (404, "not_found")),
    ] {
        let (status, answered) = answer(import(&app, key, tenant, provider, &body).await).await;
        assert_eq!(
            (status, answered["error"]["code"].as_str().unwrap()),
            want,
            "{tenant}/{provider}: {answered}"
        );
    }
    assert_eq!(app.snapshot(), before);
    // An admin key limited to its own tenant imports there.
    let (status, answered) =
        answer(import(&app, &scoped_admin, "other", "acme", &body).await).await;
    assert_eq!(status, 201, "{answered}");
    assert_eq!(
        fake.calls().await,
        fake.calls_to("/me").await,
        "only checks"
    );
}

/// The `tether` binary against the app's database and providers file.
fn cli(app: &TestApp, args: &[&str], stdin: &str) -> std::process::Output {
    let file = app
        .db
        .data_dir()
        .join("providers.toml")
        .display()
        .to_string();
    let mut cmd = tether(&app.db, KEY_K1);
    // Debug logging: whatever the import logs must hold no token either.
    cmd.envs(acme_vars(&file))
        .env("RUST_LOG", "debug")
        .args(args);
    let out = run(&mut cmd, stdin);
    for text in [stdout(&out), stderr(&out)] {
        assert!(!text.contains(SECRET), "a token in the output: {text}");
    }
    out
}

/// An import file: every kind of line, numbered as the comments say.
fn import_file(app: &TestApp) -> std::path::PathBuf {
    let lines = [
        // 1: imported.
        r#"{"tenant": "acme", "provider": "acme", "access_token": "at-tok-secret-1", "refresh_token": "rt-tok-secret-1", "expires_in": 3600, "account": {"id": "loc_1", "name": "Main Street"}}"#,
        // 2: already connected (seeded).
        r#"{"tenant": "acme", "provider": "acme", "access_token": "at-tok-secret-0", "refresh_token": "rt-tok-secret-0", "account": {"id": "loc_0"}}"#,
        // 3: unknown tenant.
        r#"{"tenant": "nobody", "provider": "acme", "access_token": "at-tok-secret-3", "account": {"id": "x"}}"#,
        // 4: unknown provider.
        r#"{"tenant": "acme", "provider": "nothing", "access_token": "at-tok-secret-4", "account": {"id": "x"}}"#,
        // 5: refused, both expiries.
        r#"{"tenant": "acme", "provider": "acme", "access_token": "at-tok-secret-5", "expires_in": 60, "expires_at": "2030-01-01T00:00:00Z", "account": {"id": "loc_5"}}"#,
        // 6: refused, not JSON.
        r#"{"tenant": "acme", "access_token": "at-tok-secret-6""#,
        // 7: blank, not reported.
        "   ",
        // 8: imported, within the refresh margin: due.
        r#"{"tenant": "acme", "provider": "acme", "access_token": "at-tok-secret-8", "refresh_token": "rt-tok-secret-8", "expires_in": 120, "account": {"id": "loc_8"}}"#,
        // 9: refused, metadata not an object.
        r#"{"tenant": "acme", "provider": "acme", "access_token": "at-tok-secret-9", "metadata": "tok-secret", "account": {"id": "loc_9"}}"#,
    ];
    let file = app.db.data_dir().join("import.jsonl");
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    file
}

/// Whose each token of [`import_file`] is, as the fake's lookup says.
const CLI_ACCOUNTS: [(&str, &str); 5] = [
    ("at-tok-secret-1", "loc_1"),
    ("at-tok-secret-0", "loc_0"),
    ("at-tok-secret-8", "loc_8"),
    ("at-tok-secret-2", "loc_2"),
    ("at-tok-secret-10", "loc_1"),
];

const EXPECTED_LINES: [&str; 8] = [
    "line 1: imported acme/acme/loc_1",
    "line 2: skipped acme/acme/loc_0 (already connected)",
    "line 3: skipped (unknown tenant 'nobody')",
    "line 4: skipped (unknown provider 'nothing': it does not exist)",
    "line 5: refused: give expires_at or expires_in, not both: they could disagree",
    "line 6: refused: not a JSON object (EOF while parsing an object at line 1 column 52)",
    "line 8: imported acme/acme/loc_8 (due: refreshed at the scheduler's next tick)",
    "line 9: refused: metadata must be a JSON object",
];

async fn cli_import_reports_every_line_and_due_imports_are_refreshed_by_the_scheduler(
    backend: Backend,
) {
    let (app, fake, _) = setup(backend).await;
    mount_refresh(&fake).await;
    mount_me(&fake, &CLI_ACCOUNTS).await;
    let t = app.tenant("acme");
    app.seed(&t.id, "loc_0", "rt-0", 3600, 2000);
    let file = import_file(&app);
    let out = cli(&app, &["connections", "import", file.to_str().unwrap()], "");
    assert_eq!(
        out.status.code(),
        Some(3),
        "refused lines: done, but not all"
    );
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[..8], EXPECTED_LINES, "{text}");
    assert_eq!(lines[8], "2 imported, 3 skipped, 3 refused");
    assert_eq!(lines.len(), 9, "{text}");

    assert_eq!(
        connection_count(&app),
        3,
        "only the two imports were written"
    );
    let imported = app.acme_account("acme", "loc_1");
    assert_eq!(tokens(&app, &imported).0, "at-tok-secret-1");
    assert_eq!(imported.account_name.as_deref(), Some("Main Street"));
    assert_eq!(
        events_of(&app, &imported.id),
        [("connected".to_string(), "import:cli".to_string())]
    );
    assert_eq!(
        tokens(&app, &app.acme_account("acme", "loc_0"))
            .1
            .as_deref(),
        Some("rt-0")
    );

    // The expired one is due now; the server's scheduler refreshes it.
    let due = app.acme_account("acme", "loc_8");
    assert!(due.next_refresh_at.unwrap() <= now());
    assert_eq!(
        fake.calls().await,
        fake.calls_to("/me").await,
        "the import itself only asked whose each token is"
    );
    assert_eq!(Scheduler::new(app.state.clone()).tick().await.unwrap(), 1);
    let refreshed = app.until(&due.id, |c| c.version > due.version).await;
    assert_eq!(tokens(&app, &refreshed).0, "at-fresh");
    assert_eq!(refresh_tokens_sent(&fake).await, ["rt-tok-secret-8"]);

    // A file with nothing refused succeeds; `-` reads standard input.
    let line = r#"{"tenant": "acme", "provider": "acme", "access_token": "at-tok-secret-2", "account": {"id": "loc_2"}}"#;
    let out = cli(&app, &["connections", "import", "-"], line);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "line 1: imported acme/acme/loc_2\n1 imported, 0 skipped, 0 refused\n"
    );
}

async fn cli_dry_run_checks_every_line_and_writes_nothing(backend: Backend) {
    let (app, fake, _) = setup(backend).await;
    mount_me(&fake, &CLI_ACCOUNTS).await;
    let t = app.tenant("acme");
    app.seed(&t.id, "loc_0", "rt-0", 3600, 2000);
    let file = import_file(&app);
    // A second line for line 1's account: it would find it connected.
    let mut text = std::fs::read_to_string(&file).unwrap();
    text.push_str(r#"{"tenant": "acme", "provider": "acme", "access_token": "at-tok-secret-10", "account": {"id": "loc_1"}}"#);
    std::fs::write(&file, text).unwrap();
    let before = app.snapshot();
    let out = cli(
        &app,
        &["connections", "import", "--dry-run", file.to_str().unwrap()],
        "",
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "refused lines fail a dry run too"
    );
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    let expected: Vec<String> = EXPECTED_LINES
        .iter()
        .map(|l| l.replace(": imported", ": would import"))
        .chain([
            "line 10: skipped acme/acme/loc_1 (already connected by line 1)".to_string(),
            "dry run, nothing written: 2 would be imported, 4 skipped, 3 refused".to_string(),
        ])
        .collect();
    assert_eq!(lines, expected, "{text}");
    assert_eq!(app.snapshot(), before, "a dry run writes nothing");
    assert_eq!(connection_count(&app), 1);
    // Each well-formed line's token was checked, nothing else was sent.
    assert_eq!(fake.calls().await, fake.calls_to("/me").await);
    assert_eq!(fake.calls_to("/me").await, 4);
}

/// A Wix app (client credentials) against a fake.
async fn wix_app(backend: Backend) -> TestApp {
    let db = crate::helpers::TestDb::new(backend);
    let file = db.data_dir().join("providers.toml");
    std::fs::write(
        &file,
        "[providers.wix]\ntoken_url = \"http://127.0.0.1:9/oauth2/token\"\n",
    )
    .unwrap();
    let app = crate::helpers::spawn_app_with(
        db,
        &[
            ("TETHER_PROVIDERS_FILE", &file.display().to_string()),
            ("WIX_CLIENT_ID", "wix-app"),
            ("WIX_CLIENT_SECRET", "wix-app-secret"),
        ],
    )
    .await;
    app.ensure_tenant("acme");
    app
}

async fn an_import_is_the_account_the_provider_names_or_nothing_is_stored(backend: Backend) {
    let (app, fake, admin) = setup(backend).await;
    mount_me(
        &fake,
        &[
            ("at-tok-secret-theirs", "someone-else"),
            ("at-tok-secret-mine", "mine"),
        ],
    )
    .await;
    let before = app.snapshot();
    let refused = [
        // The provider says the token is another account's.
        (
            json!({"access_token": "at-tok-secret-theirs", "account": {"id": "mine"}}),
            "invalid_account",
            "account someone-else's, not mine's",
        ),
        // The provider does not know the token.
        (
            json!({"access_token": "at-tok-secret-unknown", "account": {"id": "mine"}}),
            "invalid_import",
            "did not accept the access token",
        ),
    ];
    for (body, code, says) in refused {
        let (status, answered) = answer(import(&app, &admin, "acme", "acme", &body).await).await;
        assert_eq!(status, 400, "{answered}");
        assert_eq!(answered["error"]["code"], code, "{answered}");
        assert!(
            answered["error"]["message"]
                .as_str()
                .unwrap()
                .contains(says),
            "{answered}"
        );
    }
    assert_eq!(app.snapshot(), before, "refusals change nothing");
    // Without an account id, the provider's names it (and its name).
    let (status, answered) = answer(
        import(
            &app,
            &admin,
            "acme",
            "acme",
            &json!({"access_token": "at-tok-secret-mine"}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 201, "{answered}");
    assert_eq!(answered["account"], "mine");
    assert_eq!(
        app.acme_account("acme", "mine").account_name.as_deref(),
        Some("From Acme")
    );

    // GoHighLevel: the location the lookup answered for is the account,
    // and the caller's identity-bearing metadata is not taken.
    let ghl_fake = FakeProvider::start().await;
    let ghl = crate::marketplace::ghl_app(backend, &ghl_fake, false).await;
    let key = ghl.api_key(Some("acme"), true);
    Mock::given(method("GET"))
        .and(path("/locations/loc_1"))
        .and(header("authorization", "Bearer at-tok-secret-loc1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "location": {"id": "loc_1", "name": "Main Street Dental", "companyId": "c_9"}
        })))
        .mount(&ghl_fake.server)
        .await;
    let before = ghl.snapshot();
    let other = json!({"access_token": "at-tok-secret-loc1", "account": {"id": "loc_2"}});
    let (status, answered) = answer(import(&ghl, &key, "acme", "gohighlevel", &other).await).await;
    assert_eq!(status, 400, "{answered}");
    assert_eq!(ghl.snapshot(), before);
    let claimed = json!({
        "access_token": "at-tok-secret-loc1", "account": {"id": "loc_1"},
        "metadata": {"locationId": "loc_9", "companyId": "c_other", "note": "kept"}
    });
    let (status, answered) =
        answer(import(&ghl, &key, "acme", "gohighlevel", &claimed).await).await;
    assert_eq!(status, 201, "{answered}");
    let row = ghl.default_connection("acme", "gohighlevel").unwrap();
    assert_eq!(row.account_name.as_deref(), Some("Main Street Dental"));
    assert_eq!(
        row.metadata(),
        json!({"locationId": "loc_1", "note": "kept"}),
        "identity-bearing fields come from the provider only"
    );

    // Wix: client credentials mint a token for any site id, so no import.
    let wix = wix_app(backend).await;
    let key = wix.api_key(None, true);
    let before = wix.snapshot();
    let site = json!({"access_token": "at-tok-secret-wix", "account": {"id": "site-1"},
        "metadata": {"instanceId": "site-of-another-tenant"}});
    let (status, answered) = answer(import(&wix, &key, "acme", "wix", &site).await).await;
    assert_eq!(status, 400, "{answered}");
    assert!(
        answered["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot be imported"),
        "{answered}"
    );
    assert_eq!(wix.snapshot(), before);
}
