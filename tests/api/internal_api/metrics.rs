//! What the API feeds into /metrics: token requests are counted, and
//! connections by status; token reads and proxied calls per API key and
//! provider (issue 23 point 8).

use super::{connected, API};
use crate::backend_tests;
use crate::helpers::Backend;
use tether::db::models::api_key::{ApiKey, Rights};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

backend_tests!(
    metrics_count_token_requests_and_connections_by_status,
    metrics_count_token_reads_and_proxied_calls_per_key_and_provider,
);

async fn metrics_count_token_requests_and_connections_by_status(backend: Backend) {
    let (app, _fake, key) = connected(backend).await;
    let res = app
        .api_get(&format!("{API}/acme/connections/acme/token"), &key)
        .await;
    assert_eq!(res.status(), 200);
    let text = app.get("/metrics").await.text().await.unwrap();
    let count: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("tether_token_api_duration_seconds_count "))
        .unwrap_or_else(|| panic!("no token API count: {text}"))
        .trim()
        .parse()
        .unwrap();
    assert!(count >= 1, "{text}");
    assert!(
        text.lines()
            .any(|l| l == r#"tether_connections{status="connected"} 1"#),
        "{text}"
    );
}

async fn metrics_count_token_reads_and_proxied_calls_per_key_and_provider(backend: Backend) {
    let (app, fake, crm) = connected(backend).await;
    let tenant = app.tenant("acme").id;
    let (sync, secret) = ApiKey::create(
        &mut app.conn(),
        "sync \"nightly\"",
        Some(&tenant),
        &Rights::unlimited(false),
    )
    .unwrap();
    let sync_secret = secret.expose().clone();
    let crm_prefix = crm.split('_').nth(1).unwrap().to_string();
    Mock::given(method("GET"))
        .and(path("/api/contacts"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!([])))
        .mount(&fake.server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/missing"))
        .respond_with(ResponseTemplate::new(404))
        .mount(&fake.server)
        .await;
    let token = format!("{API}/acme/connections/acme/token");
    for key in [&crm, &crm, &sync_secret] {
        assert_eq!(app.api_get(&token, key).await.status(), 200);
    }
    for (tail, status) in [("contacts", 200), ("contacts", 200), ("missing", 404)] {
        let res = app
            .api_get(&format!("{API}/acme/proxy/acme/{tail}"), &crm)
            .await;
        assert_eq!(res.status(), status);
    }
    // Tether's own refusal never reached the provider: not a proxied call.
    let res = app
        .api_get(&format!("{API}/acme/proxy/demo/contacts"), &crm)
        .await;
    assert!(res.status().is_client_error(), "{}", res.status());

    let text = app.get("/metrics").await.text().await.unwrap();
    let series: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("tether_api_"))
        .collect();
    let mut expected = vec![
        format!(
            r#"tether_api_token_reads_total{{key_prefix="{crm_prefix}",key="crm",provider="acme"}} 2"#
        ),
        format!(
            r#"tether_api_token_reads_total{{key_prefix="{}",key="sync \"nightly\"",provider="acme"}} 1"#,
            sync.prefix
        ),
    ];
    expected.sort();
    expected.extend([
        format!(r#"tether_api_proxy_calls_total{{key_prefix="{crm_prefix}",key="crm",provider="acme",status_class="2xx"}} 2"#),
        format!(r#"tether_api_proxy_calls_total{{key_prefix="{crm_prefix}",key="crm",provider="acme",status_class="4xx"}} 1"#),
    ]);
    assert_eq!(series, expected, "{text}");
    for secret in [&crm, &sync_secret] {
        assert!(!text.contains(secret.as_str()), "a key in the metrics");
    }
}
