//! What `TETHER_ENV=production` insists on: https for the public URL, the
//! webhook and every provider URL (start-up refuses plain http, naming each
//! variable or provider field), and `Strict-Transport-Security` on every
//! response, which development does not send.

use crate::backend_tests;
use crate::helpers::{settings_for, spawn_app, spawn_app_with, Backend, TestDb};
use base64::Engine;

backend_tests!(
    production_refuses_plain_http_public_webhook_and_provider_urls_naming_each,
    production_sends_hsts_on_every_response_and_development_does_not,
);

/// What production needs besides the test defaults: a session key, an https
/// public URL, no demo provider, a metrics token.
fn production(session_key: &str) -> Vec<(&'static str, &str)> {
    vec![
        ("TETHER_ENV", "production"),
        ("TETHER_SESSION_KEY", session_key),
        ("TETHER_METRICS_TOKEN", "a-metrics-token-of-length"),
        ("TETHER_PUBLIC_URL", "https://tether.example.com"),
        ("TETHER_DEMO_PROVIDER", "false"),
    ]
}

fn session_key() -> String {
    base64::engine::general_purpose::STANDARD.encode([9u8; 64])
}

async fn production_refuses_plain_http_public_webhook_and_provider_urls_naming_each(
    backend: Backend,
) {
    let db = TestDb::new(backend);
    let key = session_key();

    // Settings: the public URL and the webhook, each named.
    let mut vars: std::collections::BTreeMap<String, String> = [
        ("TETHER_ENV", "production"),
        ("TETHER_SESSION_KEY", key.as_str()),
        ("TETHER_ENCRYPTION_KEYS", crate::helpers::KEY_K1),
        ("TETHER_DATABASE_URL", db.url.as_str()),
        ("TETHER_PUBLIC_URL", "http://tether.example.com"),
        ("TETHER_WEBHOOK_URL", "http://crm.example.com/hooks"),
        ("TETHER_WEBHOOK_SECRET", "a-webhook-secret-of-some-length"),
        ("TETHER_METRICS_TOKEN", "a-metrics-token-of-length"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let text = tether::config::Settings::from_vars(&vars)
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("TETHER_PUBLIC_URL: must be https://"),
        "{text}"
    );
    assert!(
        text.contains("TETHER_WEBHOOK_URL: must be https://"),
        "{text}"
    );
    vars.insert(
        "TETHER_PUBLIC_URL".into(),
        "https://tether.example.com".into(),
    );
    vars.insert(
        "TETHER_WEBHOOK_URL".into(),
        "https://crm.example.com/hooks".into(),
    );
    assert!(tether::config::Settings::from_vars(&vars).is_ok());

    // Providers: start-up stops before touching the database, naming the
    // provider and the field.
    let file = db.data_dir().join("providers.toml");
    std::fs::write(
        &file,
        r#"
[providers.acme]
display_name = "Acme CRM"
authorize_url = "https://auth.acme.example/authorize"
token_url = "http://auth.acme.example/token"
api_base_url = "http://api.acme.example"

[providers.microsoft]
authorize_url = "http://login.example.com/authorize"
"#,
    )
    .unwrap();
    let file = file.display().to_string();
    let mut extra = production(&key);
    extra.push(("TETHER_PROVIDERS_FILE", &file));
    let err = tether::startup::prepare(settings_for(&db, &extra))
        .err()
        .expect("production refuses http provider URLs");
    for named in [
        "provider 'acme': 'token_url' is not https://",
        "provider 'acme': 'api_base_url' is not https://",
        "provider 'microsoft': 'authorize_url' is not https://",
    ] {
        assert!(err.contains(named), "{named}: {err}");
    }
    assert!(!err.contains("'acme': 'authorize_url'"), "{err}");
    // Development takes the same file (local fakes speak http).
    let dev = settings_for(&db, &[("TETHER_PROVIDERS_FILE", &file)]);
    assert!(tether::startup::prepare(dev).is_ok());
}

async fn production_sends_hsts_on_every_response_and_development_does_not(backend: Backend) {
    let key = session_key();
    let app = spawn_app_with(TestDb::new(backend), &production(&key)).await;
    for path in [
        "/healthz",
        "/readyz",
        "/login",
        "/nothing-here",
        "/api/v1/tenants/acme/connections",
        "/static/style.css",
    ] {
        let res = app.get(path).await;
        assert_eq!(
            res.headers()
                .get("strict-transport-security")
                .unwrap_or_else(|| panic!("{path} ({}) lacks HSTS", res.status())),
            tether::startup::HSTS,
            "{path}"
        );
    }
    assert_eq!(tether::startup::HSTS, "max-age=63072000; includeSubDomains");

    let dev = spawn_app(backend).await;
    for path in ["/healthz", "/login", "/nothing-here"] {
        let res = dev.get(path).await;
        assert!(
            res.headers().get("strict-transport-security").is_none(),
            "{path}: development is served over http; HSTS there would lock browsers out"
        );
    }
}
