//! Tests of the settings as built from variables: defaults, each value's
//! checks, production's demands, and what a refusal tells.

use super::settings::Settings;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use std::collections::BTreeMap;
use std::time::Duration;

fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn a_ca_bundle_that_is_missing_empty_or_damaged_stops_the_start_naming_only_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let secretish = "hunter2-is-not-a-certificate";
    let no_cert = dir.path().join("no-cert.pem");
    std::fs::write(&no_cert, format!("{secretish}\n")).unwrap();
    let damaged = dir.path().join("damaged.pem");
    // A PEM block whose content is no certificate (base64 of the text).
    std::fs::write(
        &damaged,
        format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            B64.encode(secretish)
        ),
    )
    .unwrap();
    let missing = dir.path().join("missing.pem");
    for (file, why) in [
        (&missing, "is not a readable file"),
        (&no_cert, "holds no PEM certificate"),
        (&damaged, "not a valid X.509 certificate"),
    ] {
        let err = Settings::from_vars(&vars(&[("TETHER_CA_CERTS", file.to_str().unwrap())]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("TETHER_CA_CERTS"), "{err}");
        assert!(err.contains(why), "{err}");
        assert!(!err.contains(secretish), "{err}");
        assert!(!err.contains(&B64.encode(secretish)), "{err}");
    }
    assert!(Settings::from_vars(&BTreeMap::new())
        .unwrap()
        .ca_certs
        .is_empty());
}

#[test]
fn defaults_need_no_configuration() {
    let s = Settings::from_vars(&BTreeMap::new()).unwrap();
    assert_eq!(s.bind.to_string(), "127.0.0.1:8080");
    assert_eq!(
        s.redirect_uri("demo"),
        "http://127.0.0.1:8080/oauth/demo/callback"
    );
    assert_eq!(s.database_url.expose(), "sqlite://./data/tether.db");
    assert!(s.demo_provider);
    assert!(s.encryption_keys.is_none());
}

#[test]
fn trusted_proxies_are_networks_or_addresses_and_none_by_default() {
    let none = Settings::from_vars(&BTreeMap::new()).unwrap();
    assert!(none.trusted_proxies.is_empty());
    let s = Settings::from_vars(&vars(&[(
        "TETHER_TRUSTED_PROXIES",
        " 10.0.0.0/8, 192.168.1.7 ,2001:db8::/32,10.1.2.3/16",
    )]))
    .unwrap();
    let shown: Vec<String> = s.trusted_proxies.iter().map(|n| n.to_string()).collect();
    assert_eq!(
        shown,
        [
            "10.0.0.0/8",
            "192.168.1.7/32",
            "2001:db8::/32",
            "10.1.0.0/16"
        ]
    );
    for bad in ["10.0.0.0/33", "proxy.internal", "10.0.0.0/8;10.1.0.0/16"] {
        let err = Settings::from_vars(&vars(&[("TETHER_TRUSTED_PROXIES", bad)])).unwrap_err();
        assert!(err.to_string().contains("TETHER_TRUSTED_PROXIES"), "{err}");
    }
}

#[test]
fn trusted_proxies_covering_every_address_are_refused_saying_why() {
    for every in [
        "0.0.0.0/0",
        "::/0",
        "10.0.0.0/8, 1.2.3.4/0",
        "10.0.0.0/8,::1/0",
    ] {
        let err = Settings::from_vars(&vars(&[("TETHER_TRUSTED_PROXIES", every)]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("TETHER_TRUSTED_PROXIES: entry ")
                && err.contains("covers every address: any client could then choose the address rate limits count"),
            "{every}: {err}"
        );
    }
    let err = Settings::from_vars(&vars(&[("TETHER_TRUSTED_PROXIES", "10.0.0.0/8,0.0.0.0/0")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("entry 2 covers every address"), "{err}");
    // The narrowest useful networks are still taken.
    assert!(Settings::from_vars(&vars(&[("TETHER_TRUSTED_PROXIES", "0.0.0.0/1,::/1")])).is_ok());
}

#[test]
fn every_problem_is_reported_by_variable_name() {
    let err = Settings::from_vars(&vars(&[
        ("TETHER_BIND", "nope"),
        ("TETHER_PUBLIC_URL", "ftp://x"),
        ("TETHER_REFRESH_CONCURRENCY", "0"),
        ("TETHER_DATABASE_URL", "mysql://x"),
    ]))
    .unwrap_err();
    let text = err.to_string();
    for name in [
        "TETHER_BIND",
        "TETHER_PUBLIC_URL",
        "TETHER_REFRESH_CONCURRENCY",
        "TETHER_DATABASE_URL",
    ] {
        assert!(text.contains(name), "{text}");
    }
}

#[test]
fn production_refuses_generated_keys_http_and_the_demo_provider() {
    let err = Settings::from_vars(&vars(&[
        ("TETHER_ENV", "production"),
        ("TETHER_DEMO_PROVIDER", "on"),
    ]))
    .unwrap_err();
    let text = err.to_string();
    for name in [
        "TETHER_ENCRYPTION_KEYS",
        "TETHER_SESSION_KEY",
        "TETHER_PUBLIC_URL",
        "TETHER_DEMO_PROVIDER",
    ] {
        assert!(text.contains(name), "{text}");
    }
}

#[test]
fn production_refuses_an_http_webhook_url_and_takes_an_https_one() {
    let prod = |webhook: &str| {
        Settings::from_vars(&vars(&[
            ("TETHER_ENV", "production"),
            ("TETHER_DATABASE_URL", "postgres://db.example.com/tether"),
            ("TETHER_PUBLIC_URL", "https://tether.example.com"),
            (
                "TETHER_ENCRYPTION_KEYS",
                "k1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=",
            ),
            ("TETHER_SESSION_KEY", &B64.encode([7u8; 64])),
            ("TETHER_METRICS_TOKEN", "a-metrics-token-of-length"),
            ("TETHER_WEBHOOK_URL", webhook),
            ("TETHER_WEBHOOK_SECRET", "a-webhook-secret-of-some-length"),
        ]))
    };
    let text = prod("http://crm.example.com/hooks")
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("TETHER_WEBHOOK_URL: must be https://"),
        "{text}"
    );
    assert_eq!(text.matches("  - ").count(), 1, "only the webhook: {text}");
    assert!(prod("https://crm.example.com/hooks").is_ok());
    // Development takes http (a receiver on localhost).
    assert!(Settings::from_vars(&vars(&[
        ("TETHER_WEBHOOK_URL", "http://127.0.0.1:9000/hooks"),
        ("TETHER_WEBHOOK_SECRET", "a-webhook-secret-of-some-length"),
    ]))
    .is_ok());
}

#[test]
fn only_a_remote_postgres_url_that_does_not_require_tls_is_flagged() {
    use super::assemble::postgres_without_tls;
    for url in [
        "postgres://u:pw@db.example.com/tether",
        "postgresql://u:pw@10.0.0.5:5432/tether?sslmode=prefer",
        "postgres://u:pw@db.example.com/tether?sslmode=disable&application_name=x",
        "postgres://u:pw@localhost/tether?host=db.example.com",
    ] {
        assert!(postgres_without_tls(url), "{url}");
    }
    for url in [
        "postgres://u:pw@db.example.com/tether?sslmode=require",
        "postgres://u:pw@db.example.com/tether?sslmode=verify-ca",
        "postgres://u:pw@db.example.com/tether?application_name=x&sslmode=verify-full",
        "postgres://u:pw@127.0.0.1/tether",
        "postgres://u:pw@127.8.9.10:5432/tether",
        "postgres://u:pw@localhost/tether",
        "postgres://u:pw@[::1]/tether",
        "postgres:///tether",
        "postgres:///tether?host=/var/run/postgresql",
        "sqlite:///data/tether.db",
    ] {
        assert!(!postgres_without_tls(url), "{url}");
    }
}

#[test]
fn production_requires_a_metrics_token_naming_it() {
    let prod = |token: Option<&str>| {
        let mut v = vars(&[
            ("TETHER_ENV", "production"),
            ("TETHER_DATABASE_URL", "postgres://db.example.com/tether"),
            ("TETHER_PUBLIC_URL", "https://tether.example.com"),
            (
                "TETHER_ENCRYPTION_KEYS",
                "k1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=",
            ),
            ("TETHER_SESSION_KEY", &B64.encode([7u8; 64])),
        ]);
        if let Some(t) = token {
            v.insert("TETHER_METRICS_TOKEN".into(), t.into());
        }
        Settings::from_vars(&v)
    };
    let text = prod(None).unwrap_err().to_string();
    assert!(
        text.contains("TETHER_METRICS_TOKEN: is required in production"),
        "{text}"
    );
    assert_eq!(text.matches("  - ").count(), 1, "only the token: {text}");
    assert!(prod(Some("a-metrics-token-of-length")).is_ok());
    // Development keeps it optional.
    assert!(Settings::from_vars(&vars(&[]))
        .unwrap()
        .metrics_token
        .is_none());
}

#[test]
fn a_short_metrics_token_is_refused_and_not_echoed() {
    let err = Settings::from_vars(&vars(&[("TETHER_METRICS_TOKEN", "short-tok")])).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("TETHER_METRICS_TOKEN"), "{text}");
    assert!(!text.contains("short-tok"), "{text}");
    let s = Settings::from_vars(&vars(&[("TETHER_METRICS_TOKEN", "a-long-enough-token")])).unwrap();
    assert_eq!(
        s.metrics_token.as_ref().map(|t| t.expose().as_str()),
        Some("a-long-enough-token")
    );
    assert_eq!(s.proxy_max_body, 10 * 1024 * 1024);
}

#[test]
fn bad_secret_values_are_not_echoed() {
    let err = Settings::from_vars(&vars(&[("TETHER_SESSION_KEY", "c2VjcmV0LXNlc3Npb24ta2V5")]))
        .unwrap_err();
    assert!(!err.to_string().contains("c2VjcmV0"), "{err}");
}

#[test]
fn embed_origins_are_exact_origins_kept_as_browsers_write_them() {
    let none = Settings::from_vars(&BTreeMap::new()).unwrap();
    assert!(none.embed_origins.is_empty());
    let s = Settings::from_vars(&vars(&[(
        "TETHER_EMBED_ORIGINS",
        " https://CRM.Example.com ,http://127.0.0.1:3000,https://app.example.com:443,https://crm.example.com",
    )]))
    .unwrap();
    assert_eq!(
        s.embed_origins,
        [
            "https://crm.example.com",
            "http://127.0.0.1:3000",
            "https://app.example.com"
        ]
    );
    assert_eq!(
        s.embed_origin("http://127.0.0.1:3000"),
        Some("http://127.0.0.1:3000")
    );
    assert_eq!(s.embed_origin("http://127.0.0.1:3001"), None);
    assert_eq!(s.embed_origin("https://crm.example.com/"), None);
}

#[test]
fn an_embed_origin_with_a_path_a_wildcard_or_another_scheme_is_refused_by_entry() {
    for (bad, why) in [
        ("https://crm.example.com/", "without a path"),
        ("https://crm.example.com/settings", "without a path"),
        ("https://*.example.com", "wildcard"),
        ("*", "wildcard"),
        ("crm.example.com", "scheme://host"),
        ("ftp://crm.example.com", "http:// or https://"),
        ("https://crm.example.com?x=1", "without a path"),
        ("https://user@crm.example.com", "without a path"),
        ("https://crm.example.com:99999", "scheme://host"),
        ("https://", "host"),
        ("https://ok.example.com,", "is empty"),
        ("null", "scheme://host"),
    ] {
        let err = Settings::from_vars(&vars(&[("TETHER_EMBED_ORIGINS", bad)])).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("TETHER_EMBED_ORIGINS: entry "),
            "{bad}: {text}"
        );
        assert!(text.contains(why), "{bad}: {text}");
    }
    let err = Settings::from_vars(&vars(&[(
        "TETHER_EMBED_ORIGINS",
        "https://a.example.com,https://b.example.com/x",
    )]))
    .unwrap_err();
    assert!(err.to_string().contains("entry 2 "), "{err}");
}

#[test]
fn production_takes_only_https_embed_origins() {
    let prod = |origins: &str| {
        Settings::from_vars(&vars(&[
            ("TETHER_ENV", "production"),
            ("TETHER_DATABASE_URL", "postgres://db.example.com/tether"),
            ("TETHER_PUBLIC_URL", "https://tether.example.com"),
            (
                "TETHER_ENCRYPTION_KEYS",
                "k1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=",
            ),
            ("TETHER_SESSION_KEY", &B64.encode([7u8; 64])),
            ("TETHER_METRICS_TOKEN", "a-metrics-token-of-length"),
            ("TETHER_EMBED_ORIGINS", origins),
        ]))
    };
    let text = prod("https://crm.example.com,http://crm.example.com")
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("TETHER_EMBED_ORIGINS: entry 2 must be https:// in production"),
        "{text}"
    );
    assert!(prod("https://crm.example.com").is_ok());
}

#[test]
fn an_unknown_tether_variable_is_refused_in_production_with_the_nearest_name() {
    let err = Settings::from_vars(&vars(&[
        ("TETHER_ENV", "production"),
        ("TETHER_DATABSE_URL", "postgres://u:secret-pw@db/tether"),
        ("TETHER_SOMETHING_ELSE_ENTIRELY", "x"),
    ]))
    .unwrap_err()
    .to_string();
    assert!(
        err.contains(
            "TETHER_DATABSE_URL: is not a Tether variable; did you mean TETHER_DATABASE_URL?"
        ),
        "{err}"
    );
    assert!(
        err.contains("TETHER_SOMETHING_ELSE_ENTIRELY: is not a Tether variable (see"),
        "{err}"
    );
    assert!(
        err.contains("TETHER_DATABASE_URL: is required in production"),
        "{err}"
    );
    assert!(!err.contains("secret-pw"), "{err}");
}

#[test]
fn an_unknown_tether_variable_is_a_warning_in_development() {
    let s = Settings::from_vars(&vars(&[
        ("TETHER_SESION_KEY", "x"),
        ("TETHER_TEST_POSTGRES_URL", "postgres://x"),
        ("TETHER_ACME_CLIENT_SECRET", "x"),
        ("OTHER_VARIABLE", "x"),
    ]))
    .unwrap();
    assert_eq!(
        s.warnings,
        ["TETHER_SESION_KEY: is not a Tether variable; did you mean TETHER_SESSION_KEY?"]
    );
    assert!(Settings::from_vars(&BTreeMap::new())
        .unwrap()
        .warnings
        .is_empty());
}

#[test]
fn a_public_url_with_a_path_is_refused_saying_tether_is_served_at_the_root() {
    for bad in [
        "https://t.example.com/sub",
        "https://t.example.com/sub/",
        "https://t.example.com//",
        "http://127.0.0.1:8080/a/b",
    ] {
        let err = Settings::from_vars(&vars(&[("TETHER_PUBLIC_URL", bad)]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("TETHER_PUBLIC_URL: must not have a path: Tether is served at the root"),
            "{bad}: {err}"
        );
        assert!(!err.contains("/sub") && !err.contains("/a/b"), "{err}");
    }
    for good in [
        "https://t.example.com",
        "https://t.example.com/",
        "http://127.0.0.1:9090",
    ] {
        assert!(
            Settings::from_vars(&vars(&[("TETHER_PUBLIC_URL", good)])).is_ok(),
            "{good}"
        );
    }
}

#[test]
fn in_development_an_unset_public_url_follows_the_bind_address() {
    let public = |pairs: &[(&str, &str)]| {
        Settings::from_vars(&vars(pairs))
            .unwrap()
            .base_url()
            .to_string()
    };
    assert_eq!(
        public(&[("TETHER_BIND", "127.0.0.1:9090")]),
        "http://127.0.0.1:9090"
    );
    assert_eq!(
        public(&[("TETHER_BIND", "0.0.0.0:9091")]),
        "http://127.0.0.1:9091"
    );
    assert_eq!(public(&[("TETHER_BIND", "[::]:9092")]), "http://[::1]:9092");
    assert_eq!(
        public(&[("TETHER_BIND", "192.168.1.5:3000")]),
        "http://192.168.1.5:3000"
    );
    assert_eq!(public(&[]), "http://127.0.0.1:8080");
    // Port 0 has no port to follow until it binds.
    assert_eq!(
        public(&[("TETHER_BIND", "127.0.0.1:0")]),
        "http://127.0.0.1:8080"
    );
    // Set, it wins.
    assert_eq!(
        public(&[
            ("TETHER_BIND", "0.0.0.0:9090"),
            ("TETHER_PUBLIC_URL", "http://localhost:8000")
        ]),
        "http://localhost:8000"
    );
    let s = Settings::from_vars(&vars(&[("TETHER_BIND", "0.0.0.0:9090")])).unwrap();
    assert_eq!(
        s.redirect_uri("demo"),
        "http://127.0.0.1:9090/oauth/demo/callback"
    );
}

#[test]
fn public_url_loses_its_trailing_slash() {
    let s = Settings::from_vars(&vars(&[("TETHER_PUBLIC_URL", "https://t.example.com/")])).unwrap();
    assert_eq!(
        s.redirect_uri("acme"),
        "https://t.example.com/oauth/acme/callback"
    );
}

#[test]
fn the_refresh_failing_time_is_a_duration_of_one_hour_by_default() {
    let default = Settings::from_vars(&BTreeMap::new()).unwrap();
    assert_eq!(default.refresh.failing_after, Duration::from_secs(3600));
    for (raw, secs) in [
        ("90s", 90),
        ("30m", 1800),
        ("2h", 7200),
        ("1d", 86_400),
        ("5", 5),
    ] {
        let s = Settings::from_vars(&vars(&[("TETHER_REFRESH_FAILING_AFTER", raw)])).unwrap();
        assert_eq!(s.refresh.failing_after, Duration::from_secs(secs), "{raw}");
    }
    for bad in ["0s", "1w", "h", "-5m", "31d"] {
        let err = Settings::from_vars(&vars(&[("TETHER_REFRESH_FAILING_AFTER", bad)])).unwrap_err();
        assert!(
            err.to_string().contains("TETHER_REFRESH_FAILING_AFTER"),
            "{bad}: {err}"
        );
    }
}

#[test]
fn sso_without_a_crm_origin_is_a_warning_naming_both_variables() {
    let secret = (
        "TETHER_SSO_SECRET",
        "an-sso-secret-of-at-least-32-characters",
    );
    let s = Settings::from_vars(&vars(&[secret])).unwrap();
    assert_eq!(s.warnings.len(), 1);
    assert!(s.warnings[0].starts_with("TETHER_SSO_SECRET:"));
    assert!(s.warnings[0].contains("TETHER_EMBED_ORIGINS"));
    assert!(!s.warnings[0].contains(secret.1));
    let listed = Settings::from_vars(&vars(&[
        secret,
        ("TETHER_EMBED_ORIGINS", "https://crm.example.com"),
    ]))
    .unwrap();
    assert!(listed.warnings.is_empty());
}

#[test]
fn the_crm_name_defaults_to_the_crm_and_refuses_long_or_multi_line_names() {
    let none = Settings::from_vars(&BTreeMap::new()).unwrap();
    assert_eq!(none.crm_name, "the CRM");
    let s = Settings::from_vars(&vars(&[("TETHER_CRM_NAME", " Acme CRM ")])).unwrap();
    assert_eq!(s.crm_name, "Acme CRM");
    // Empty is unset, as for every variable.
    let empty = Settings::from_vars(&vars(&[("TETHER_CRM_NAME", "")])).unwrap();
    assert_eq!(empty.crm_name, "the CRM");
    for bad in ["Acme\nCRM", "Acme\u{7}", &"x".repeat(61)] {
        let err = Settings::from_vars(&vars(&[("TETHER_CRM_NAME", bad)]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("TETHER_CRM_NAME"), "{bad:?}: {err}");
    }
}

#[test]
fn proxy_retries_default_to_two_within_ten_seconds_and_bad_values_are_refused_by_name() {
    let s = Settings::from_vars(&vars(&[])).unwrap();
    assert_eq!(s.proxy_retry.max, 2);
    assert_eq!(s.proxy_retry.max_wait, Duration::from_secs(10));
    let s = Settings::from_vars(&vars(&[
        ("TETHER_PROXY_RETRY_MAX", "0"),
        ("TETHER_PROXY_RETRY_MAX_WAIT_SECS", "30"),
    ]))
    .unwrap();
    assert_eq!(s.proxy_retry.max, 0);
    assert_eq!(s.proxy_retry.max_wait, Duration::from_secs(30));
    let err = Settings::from_vars(&vars(&[
        ("TETHER_PROXY_RETRY_MAX", "11"),
        ("TETHER_PROXY_RETRY_MAX_WAIT_SECS", "-1"),
    ]))
    .unwrap_err()
    .to_string();
    assert!(err.contains("TETHER_PROXY_RETRY_MAX:"), "{err}");
    assert!(err.contains("TETHER_PROXY_RETRY_MAX_WAIT_SECS:"), "{err}");
}
