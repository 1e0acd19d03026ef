//! Webhooks report what matters and arrive: a needs_reconnect event is
//! delivered once, as a JSON POST signed with the shared secret, and a
//! delivery that fails stays pending with a later attempt planned, for a
//! restarted instance to deliver.

use crate::backend_tests;
use crate::helpers::{
    acme_vars, assert_signed, eventually, failing, instance_settings, invalid_grant, outbox,
    received, run, seed_on, spawn_app_with, stderr, stdout, tether, write_providers, Backend,
    FakeProvider, Server, TestDb, KEY_K1, WEBHOOK_SECRET,
};
use diesel::prelude::*;
use tether::db::models::tenant::Tenant;
use tether::db::now;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

backend_tests!(
    a_needs_reconnect_event_is_delivered_as_a_signed_json_post,
    deliveries_verify_with_the_standard_webhooks_library_under_either_secret_of_a_rotation,
    a_failed_delivery_stays_pending_and_a_restarted_instance_delivers_it,
    a_given_up_delivery_is_listed_and_retried_under_the_id_the_receiver_sees,
    a_needs_reconnect_event_carries_a_link_that_reconnects_exactly_its_account,
);

async fn a_needs_reconnect_event_is_delivered_as_a_signed_json_post(backend: Backend) {
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hooks"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    let hook = format!("{}/hooks", receiver.uri());
    let (app, _fake, c, key) = failing(
        backend,
        invalid_grant(),
        &[
            ("TETHER_WEBHOOK_URL", &hook),
            ("TETHER_WEBHOOK_SECRET", WEBHOOK_SECRET),
        ],
    )
    .await;
    assert_eq!(app.token(&key, "acme").await.status(), 409);
    // The app's own delivery loop may get there first; either way one delivery.
    let (app, receiver) = (&app, &receiver);
    eventually(10, "the webhook delivery", move || async move {
        tether::webhooks::deliver_due(&app.state).await.unwrap();
        !received(receiver).await.is_empty()
    })
    .await;
    let received = received(receiver).await;
    assert_eq!(received.len(), 1);
    let payload = assert_signed(&received[0]);
    assert_eq!(payload["type"], "needs_reconnect");
    assert_eq!(payload["tenant"], "acme");
    assert_eq!(payload["provider"], "acme");
    assert_eq!(payload["connection_id"], c.id.as_str());
    assert!(payload["detail"]
        .as_str()
        .unwrap()
        .contains("invalid_grant"));
    eventually(10, "the row marked delivered", move || async move {
        outbox(&mut app.conn())[0].delivered_at.is_some()
    })
    .await;
    let rows = outbox(&mut app.conn());
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].attempts, 1);
    assert_eq!(
        tether::webhooks::deliver_due(&app.state).await.unwrap(),
        0,
        "delivered once"
    );
}

async fn a_failed_delivery_stays_pending_and_a_restarted_instance_delivers_it(backend: Backend) {
    let down = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&down)
        .await;
    let fake = FakeProvider::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(invalid_grant())
        .mount(&fake.server)
        .await;
    let db = TestDb::new(backend);
    write_providers(&db, &fake.providers_toml("post"));

    // The first instance (no server, so no delivery loop of its own).
    let down_hook = format!("{}/hooks", down.uri());
    let ctx = tether::startup::prepare(instance_settings(
        &db,
        &[
            ("TETHER_WEBHOOK_URL", &down_hook),
            ("TETHER_WEBHOOK_SECRET", WEBHOOK_SECRET),
        ],
    ))
    .unwrap();
    let c = {
        let mut conn = ctx.pool.get().unwrap();
        let t = Tenant::create(&mut conn, "acme", "acme").unwrap();
        seed_on(&mut conn, &ctx.keys, &t.id, "acct-1", "rt-0", -60, -1)
    };
    let first = std::sync::Arc::new(ctx.app());
    let err = tether::refresh::refresh_now(
        &first,
        &c.id,
        &tether::db::models::event::Actor::Scheduler,
        None,
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), "needs_reconnect");
    let before = now();
    assert_eq!(tether::webhooks::deliver_due(&first).await.unwrap(), 0);
    assert_eq!(received(&down).await.len(), 1);
    assert_signed(&received(&down).await[0]);
    let mut conn = first.pool.get().unwrap();
    let pending = outbox(&mut conn);
    drop(conn);
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].attempts, 1);
    assert!(pending[0].delivered_at.is_none());
    assert!(pending[0]
        .last_error
        .as_deref()
        .unwrap_or_default()
        .contains("500"));
    assert!(
        pending[0].next_attempt_at >= before + chrono::Duration::seconds(20),
        "a later attempt: {:?} vs {before}",
        pending[0].next_attempt_at
    );
    assert_eq!(
        tether::webhooks::deliver_due(&first).await.unwrap(),
        0,
        "not before its time"
    );
    assert_eq!(received(&down).await.len(), 1);
    // A restart: the first instance goes, the receiver comes back, and the
    // row's back-off has passed.
    {
        use tether::db::schema::webhook_outbox as o;
        diesel::update(o::table)
            .set(o::next_attempt_at.eq(now() - chrono::Duration::seconds(1)))
            .execute(&mut first.pool.get().unwrap())
            .unwrap();
    }
    drop(first);
    let up = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hooks"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&up)
        .await;
    let up_hook = format!("{}/hooks", up.uri());
    let file = db.data_dir().join("providers.toml").display().to_string();
    let mut vars = acme_vars(&file).to_vec();
    vars.extend([
        ("TETHER_WEBHOOK_URL", up_hook.as_str()),
        ("TETHER_WEBHOOK_SECRET", WEBHOOK_SECRET),
    ]);
    let app = spawn_app_with(db, &vars).await;
    let app = &app;
    eventually(10, "delivery after the restart", move || async move {
        tether::webhooks::deliver_due(&app.state).await.unwrap();
        outbox(&mut app.conn())[0].delivered_at.is_some()
    })
    .await;
    let received = received(&up).await;
    assert_eq!(received.len(), 1);
    let payload = assert_signed(&received[0]);
    assert_eq!(payload["type"], "needs_reconnect");
    assert_eq!(payload["connection_id"], c.id.as_str());
    assert_eq!(outbox(&mut app.conn())[0].attempts, 2);
}

async fn a_given_up_delivery_is_listed_and_retried_under_the_id_the_receiver_sees(
    backend: Backend,
) {
    use tether::db::models::event::{Actor, EventKind, NewEvent};
    use tether::db::schema::webhook_outbox as o;
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&receiver)
        .await;
    let hook = format!("{}/hooks", receiver.uri());
    let vars = [
        ("TETHER_WEBHOOK_URL", hook.as_str()),
        ("TETHER_WEBHOOK_SECRET", WEBHOOK_SECRET),
    ];
    let db = TestDb::migrated(backend);
    write_providers(&db, "");
    let ctx = tether::startup::prepare(instance_settings(&db, &vars)).unwrap();
    // An event whose delivery has one attempt left before it is given up.
    let event = {
        let mut conn = ctx.pool.get().unwrap();
        let t = Tenant::create(&mut conn, "acme", "acme").unwrap();
        let event = tether::db::models::webhook::record(
            &mut conn,
            true,
            &NewEvent {
                tenant_id: &t.id,
                connection_id: None,
                provider: &tether::ids::ProviderKey::known("acme"),
                kind: EventKind::NeedsReconnect,
                actor: &Actor::Cli,
                detail: Some("invalid_grant"),
            },
        )
        .unwrap();
        diesel::update(o::table)
            .set(o::attempts.eq(tether::webhooks::MAX_ATTEMPTS - 1))
            .execute(&mut conn)
            .unwrap();
        event
    };
    drop(ctx);
    let cli = |args: &[&str]| {
        let mut cmd = tether(&db, KEY_K1);
        cmd.envs(vars).args(args);
        run(&mut cmd, "")
    };

    // The running server's last attempt fails: given up.
    let server = Server::start(tether(&db, KEY_K1).envs(vars).arg("serve")).unwrap();
    let pool = tether::db::connect(&db.url, 2).unwrap();
    eventually(10, "the last attempt", || async {
        outbox(&mut pool.get().unwrap())[0].attempts == tether::webhooks::MAX_ATTEMPTS
    })
    .await;
    let out = cli(&["webhooks", "list", "--given-up", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let listed: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], event.id.as_str());
    assert_eq!(listed[0]["type"], "needs_reconnect");
    assert_eq!(listed[0]["attempts"], tether::webhooks::MAX_ATTEMPTS);
    assert_eq!(listed[0]["given_up"], true);
    assert!(listed[0]["next_attempt_at"].is_null());
    assert_eq!(listed[0]["last_error"], "HTTP 503");
    let table = stdout(&cli(&["webhooks", "list"]));
    let row = table
        .lines()
        .find(|l| l.starts_with(event.id.as_str()))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        row.contains("given up") && row.contains("needs_reconnect"),
        "{row}"
    );

    // Bad ids change nothing.
    let out = cli(&["webhooks", "retry", "no-such-id", event.id.as_str()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no webhook delivery with id 'no-such-id'"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        outbox(&mut pool.get().unwrap())[0].attempts,
        tether::webhooks::MAX_ATTEMPTS
    );

    // The receiver is back; a retry makes the running server send it.
    receiver.reset().await;
    Mock::given(method("POST"))
        .and(path("/hooks"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    let out = cli(&["webhooks", "retry", event.id.as_str()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("1 delivery(ies) due now"),
        "{}",
        stdout(&out)
    );
    eventually(10, "the retried delivery", || async {
        outbox(&mut pool.get().unwrap())[0].delivered_at.is_some()
    })
    .await;
    let got = received(&receiver).await;
    assert_eq!(got.len(), 1);
    let payload = assert_signed(&got[0]);
    assert_eq!(payload["id"], listed[0]["id"], "the id the CLI listed");
    let again = cli(&["webhooks", "retry", event.id.as_str()]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("delivered already"),
        "{}",
        stderr(&again)
    );
    let out = cli(&["webhooks", "list", "--json"]);
    assert_eq!(stdout(&out).trim(), "[]");

    // --all-given-up brings back every given-up delivery; naming none is a usage error.
    assert_eq!(cli(&["webhooks", "retry"]).status.code(), Some(2));
    diesel::update(o::table)
        .set((
            o::attempts.eq(tether::webhooks::MAX_ATTEMPTS),
            o::delivered_at.eq(None::<chrono::NaiveDateTime>),
            o::next_attempt_at.eq(now() + tether::db::models::webhook::GIVEN_UP_FOR),
        ))
        .execute(&mut pool.get().unwrap())
        .unwrap();
    let out = cli(&["webhooks", "retry", "--all-given-up"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!("webhook {}: due now", event.id)),
        "{}",
        stdout(&out)
    );
    eventually(10, "the delivery retried with the others", || async {
        outbox(&mut pool.get().unwrap())[0].delivered_at.is_some()
    })
    .await;
    assert_eq!(received(&receiver).await.len(), 2);

    // The server's log names the delivery by that id too.
    let log = server.stop();
    assert!(
        log.contains(&format!(
            "webhook {} given up after {} attempts: HTTP 503",
            event.id,
            tether::webhooks::MAX_ATTEMPTS
        )),
        "{log}"
    );
}

/// What the Standard Webhooks library from npm says of a delivery, given
/// `secret` as a receiver configures it; None when the library is not
/// installed and the Node tests are optional.
fn verify_with_library(secret: &str, request: &wiremock::Request) -> Option<Result<(), String>> {
    use std::io::Write;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node-support");
    if !dir.join("node_modules/standardwebhooks").is_dir() {
        assert!(
            std::env::var("TETHER_BROWSER_TESTS").as_deref() != Ok("required"),
            "the standardwebhooks package is missing: run `npm ci --prefix tests/node-support`"
        );
        eprintln!("skipped: tests/node-support is not installed");
        return None;
    }
    let header = |name: &str| request.headers[name].to_str().unwrap().to_string();
    let input = serde_json::json!({
        "secret": secret,
        "headers": {
            "webhook-id": header("webhook-id"),
            "webhook-timestamp": header("webhook-timestamp"),
            "webhook-signature": header("webhook-signature"),
        },
        "body": String::from_utf8(request.body.clone()).unwrap(),
    });
    let mut child = std::process::Command::new("node")
        .arg(dir.join("verify-webhook.js"))
        .current_dir(&dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("node runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Some(if out.status.success() {
        Ok(())
    } else {
        Err(said)
    })
}

/// A receiver's secret in the form Standard Webhooks' libraries take.
fn as_library_secret(secret: &str) -> String {
    use base64::Engine;
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(secret)
    )
}

/// Deliveries carry webhook-id, webhook-timestamp and webhook-signature as
/// Standard Webhooks defines them: the receiver's own library verifies
/// them. While TETHER_WEBHOOK_SECRET holds a new and an old secret, a
/// receiver on either verifies; one on another secret does not.
async fn deliveries_verify_with_the_standard_webhooks_library_under_either_secret_of_a_rotation(
    backend: Backend,
) {
    const NEW: &str = "whsec-the-new-secret-2026";
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hooks"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    let hook = format!("{}/hooks", receiver.uri());
    let both = format!("{NEW} {WEBHOOK_SECRET}");
    let (app, _fake, _c, key) = failing(
        backend,
        invalid_grant(),
        &[
            ("TETHER_WEBHOOK_URL", &hook),
            ("TETHER_WEBHOOK_SECRET", &both),
        ],
    )
    .await;
    assert_eq!(app.token(&key, "acme").await.status(), 409);
    let (app, receiver) = (&app, &receiver);
    eventually(10, "the webhook delivery", move || async move {
        tether::webhooks::deliver_due(&app.state).await.unwrap();
        !received(receiver).await.is_empty()
    })
    .await;
    let request = &received(receiver).await[0];
    let payload: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(
        request.headers["webhook-id"],
        payload["id"].as_str().unwrap()
    );
    let signatures = request.headers["webhook-signature"].to_str().unwrap();
    assert_eq!(
        signatures.split(' ').count(),
        2,
        "one per secret: {signatures}"
    );
    for secret in [NEW, WEBHOOK_SECRET] {
        let Some(verdict) = verify_with_library(&as_library_secret(secret), request) else {
            return;
        };
        assert_eq!(verdict, Ok(()), "{secret}");
    }
    let other = verify_with_library(&as_library_secret("whsec-some-other-secret"), request);
    assert!(matches!(other, Some(Err(_))), "{other:?}");
}

/// The chatbot forwards a `needs_reconnect` event's `reconnect_url` as it
/// is: a single-use link for exactly that account, made when the event is
/// sent and never stored in the outbox. A person who picks another account
/// at the provider is told so, naming both, and nothing is added.
async fn a_needs_reconnect_event_carries_a_link_that_reconnects_exactly_its_account(
    backend: Backend,
) {
    use crate::helpers::{csrf_in, mount_exchange, new_browser, query_param, ACME_ISSUER};
    use tether::db::schema::{connect_links, connections};
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hooks"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    let hook = format!("{}/hooks", receiver.uri());
    let (app, fake, c, key) = failing(
        backend,
        invalid_grant(),
        &[
            ("TETHER_WEBHOOK_URL", &hook),
            ("TETHER_WEBHOOK_SECRET", WEBHOOK_SECRET),
        ],
    )
    .await;
    assert_eq!(app.token(&key, "acme").await.status(), 409);
    let (app, receiver) = (&app, &receiver);
    eventually(10, "the webhook delivery", move || async move {
        tether::webhooks::deliver_due(&app.state).await.unwrap();
        !received(receiver).await.is_empty()
    })
    .await;
    let payload = assert_signed(&received(receiver).await[0]);
    assert_eq!(payload["type"], "needs_reconnect");
    let url = payload["reconnect_url"]
        .as_str()
        .expect("a reconnect link")
        .to_string();
    assert!(
        url.starts_with(&format!("{}/connect/", app.address)),
        "{url}"
    );
    let token = url.rsplit('/').next().unwrap();
    // The outbox keeps the event without the link.
    for row in outbox(&mut app.conn()) {
        assert!(!row.payload.contains("reconnect_url") && !row.payload.contains(token));
    }
    let accounts: Vec<Option<String>> = connect_links::table
        .select(connect_links::account)
        .load(&mut app.conn())
        .unwrap();
    assert_eq!(accounts, vec![Some(c.account_id.to_string())]);

    // The person follows it and picks another account at the provider.
    let person = new_browser();
    let page = person.get(&url).send().await.unwrap().text().await.unwrap();
    let csrf = csrf_in(&page).expect("the link's form");
    let res = person
        .post(&url)
        .form(&[("csrf", csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    let location = res.headers()["location"].to_str().unwrap().to_string();
    let state = query_param(&location, "state").unwrap();
    let challenge = query_param(&location, "code_challenge").unwrap();
    mount_exchange(&fake, &challenge, "at-other", "rt-other").await;
    let res = person
        .get(format!(
            "{}/oauth/acme/callback?code=the-code&state={state}&iss={ACME_ISSUER}",
            app.address
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303, "to the link's last page");
    assert_eq!(res.headers()["location"], "/connect/done");
    let text = person
        .get(format!("{}/connect/done", app.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("Main Street Dental") && text.contains("acct-1"),
        "names both accounts: {text}"
    );
    let rows: Vec<(String, String)> = connections::table
        .select((connections::account_id, connections::status))
        .load(&mut app.conn())
        .unwrap();
    assert_eq!(
        rows,
        vec![(c.account_id.to_string(), "needs_reconnect".to_string())],
        "nothing added, the account still needs its reconnect"
    );
}
