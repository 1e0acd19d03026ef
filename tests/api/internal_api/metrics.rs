//! What the API feeds into /metrics: token requests are counted, and
//! connections by status.

use super::{connected, API};
use crate::backend_tests;
use crate::helpers::Backend;

backend_tests!(metrics_count_token_requests_and_connections_by_status,);

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
