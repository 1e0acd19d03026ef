//! What `/metrics` adds for operators (issue 18, point 6): responses by
//! status class, webhook delivery outcomes and the outbox backlog, and the
//! build (version and commit, as `tether --version` prints them).

use crate::backend_tests;
use crate::helpers::{received, run, settings_for, spawn_app, stdout, Backend, WEBHOOK_SECRET};
use diesel::prelude::*;
use tether::db::schema::webhook_outbox as o;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

backend_tests!(
    metrics_count_responses_by_status_class_and_name_the_build,
    metrics_count_webhook_outcomes_and_show_the_backlog,
);

async fn scrape(app: &crate::helpers::TestApp) -> String {
    let res = app.get("/metrics").await;
    assert_eq!(res.status(), 200);
    res.text().await.unwrap()
}

/// The value of the sample `series` (name and labels, exactly) in `text`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

async fn metrics_count_responses_by_status_class_and_name_the_build(backend: Backend) {
    let app = spawn_app(backend).await;
    assert_eq!(app.get("/healthz").await.status(), 200);
    assert_eq!(app.get("/no-such-page").await.status(), 404);
    assert_eq!(
        app.get("/api/v1/tenants/acme/connections/acme/token")
            .await
            .status(),
        401
    );
    let text = scrape(&app).await;
    let class = |c: &str| {
        sample(
            &text,
            &format!("tether_http_responses_total{{class=\"{c}\"}}"),
        )
    };
    assert_eq!(class("2xx"), Some(1.0), "{text}");
    assert_eq!(class("4xx"), Some(2.0), "{text}");
    assert_eq!(class("1xx"), Some(0.0));
    assert_eq!(class("3xx"), Some(0.0));
    assert_eq!(class("5xx"), Some(0.0));
    // The scrape itself is counted once answered.
    let text = scrape(&app).await;
    assert_eq!(
        sample(&text, "tether_http_responses_total{class=\"2xx\"}"),
        Some(2.0)
    );

    let build = format!(
        "tether_build_info{{version=\"{}\",commit=\"{}\"}}",
        env!("CARGO_PKG_VERSION"),
        env!("TETHER_COMMIT")
    );
    assert_eq!(sample(&text, &build), Some(1.0), "{text}");
    // The same commit as `tether --version`, and the one checked out when
    // this was built from git.
    let version = stdout(&run(
        std::process::Command::new(env!("CARGO_BIN_EXE_tether")).arg("--version"),
        "",
    ));
    assert_eq!(
        version,
        format!(
            "tether {} (commit {})\n",
            env!("CARGO_PKG_VERSION"),
            env!("TETHER_COMMIT")
        )
    );
    // (Unless the build was told its commit: GIT_COMMIT, as Docker's is.)
    if option_env!("GIT_COMMIT").is_some() {
        return;
    }
    if let Ok(out) = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
    {
        if out.status.success() {
            let head = String::from_utf8_lossy(&out.stdout).trim().to_string();
            assert_eq!(
                env!("TETHER_COMMIT"),
                head,
                "built from the checked-out commit"
            );
        }
    }
}

/// The webhook figures a deliverer's metrics show (outcomes are counted by
/// the process that delivers).
fn outcomes(deliverer: &tether::app::App) -> String {
    deliverer.metrics.render(&[], &[], &[], None, true, true)
}

async fn metrics_count_webhook_outcomes_and_show_the_backlog(backend: Backend) {
    let receiver = MockServer::start().await;
    // The first delivery fails, later ones arrive (until told otherwise).
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(1)
        .mount(&receiver)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    // The served app has no webhook URL, so no delivery loop of its own: the
    // backlog it shows is the database's. Deliveries are made by another
    // instance on the same database, with no server (and no loop either).
    let app = spawn_app(backend).await;
    let hook = receiver.uri();
    let deliverer = tether::startup::prepare(settings_for(
        &app.db,
        &[
            ("TETHER_WEBHOOK_URL", &hook),
            ("TETHER_WEBHOOK_SECRET", WEBHOOK_SECRET),
        ],
    ))
    .unwrap()
    .app();
    let outcome = |text: &str, o: &str| {
        sample(
            text,
            &format!("tether_webhook_deliveries_total{{outcome=\"{o}\"}}"),
        )
    };
    let backlog = |text: &str| {
        (
            sample(text, "tether_webhook_backlog{state=\"due\"}"),
            sample(text, "tether_webhook_backlog{state=\"waiting\"}"),
        )
    };
    let text = outcomes(&deliverer);
    for o in ["delivered", "failed", "given_up"] {
        assert_eq!(outcome(&text, o), Some(0.0), "{text}");
    }
    assert_eq!(backlog(&scrape(&app).await), (Some(0.0), Some(0.0)));

    // A notification queued is due; its first attempt fails: it waits.
    tether::db::models::webhook::enqueue(
        &mut app.conn(),
        "one",
        None,
        r#"{"id":"one","type":"one"}"#,
    )
    .unwrap();
    assert_eq!(backlog(&scrape(&app).await), (Some(1.0), Some(0.0)));
    assert_eq!(tether::webhooks::deliver_due(&deliverer).await.unwrap(), 0);
    assert_eq!(received(&receiver).await.len(), 1);
    assert_eq!(outcome(&outcomes(&deliverer), "failed"), Some(1.0));
    assert_eq!(backlog(&scrape(&app).await), (Some(0.0), Some(1.0)));

    // Made due, it is delivered: the backlog is empty.
    let due_now = || {
        diesel::update(o::table.filter(o::delivered_at.is_null()))
            .set(o::next_attempt_at.eq(tether::db::now()))
            .execute(&mut app.conn())
            .unwrap()
    };
    due_now();
    assert_eq!(backlog(&scrape(&app).await), (Some(1.0), Some(0.0)));
    assert_eq!(tether::webhooks::deliver_due(&deliverer).await.unwrap(), 1);
    assert_eq!(outcome(&outcomes(&deliverer), "delivered"), Some(1.0));
    assert_eq!(backlog(&scrape(&app).await), (Some(0.0), Some(0.0)));

    // A notification whose last attempt fails is given up, and leaves the
    // backlog.
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .with_priority(1)
        .mount(&receiver)
        .await;
    tether::db::models::webhook::enqueue(
        &mut app.conn(),
        "two",
        None,
        r#"{"id":"two","type":"two"}"#,
    )
    .unwrap();
    diesel::update(o::table.filter(o::delivered_at.is_null()))
        .set(o::attempts.eq(tether::webhooks::MAX_ATTEMPTS - 1))
        .execute(&mut app.conn())
        .unwrap();
    assert_eq!(tether::webhooks::deliver_due(&deliverer).await.unwrap(), 0);
    assert_eq!(received(&receiver).await.len(), 3);
    let text = outcomes(&deliverer);
    assert_eq!(outcome(&text, "given_up"), Some(1.0), "{text}");
    assert_eq!(outcome(&text, "failed"), Some(1.0));
    assert_eq!(outcome(&text, "delivered"), Some(1.0));
    assert_eq!(backlog(&scrape(&app).await), (Some(0.0), Some(0.0)));
}
