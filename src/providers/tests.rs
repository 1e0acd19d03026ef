//! Tests of the catalogue: presets, the providers file, validation and
//! credentials from the environment.

use super::validate::validate;
use super::*;

fn settings() -> Settings {
    Settings::from_vars(&BTreeMap::new()).unwrap()
}

fn no_env(_: &str) -> Option<String> {
    None
}

#[test]
fn presets_cover_the_ten_platforms_and_are_disabled_without_credentials() {
    let c = Catalogue::build(&settings(), None, &no_env).unwrap();
    for key in [
        "gohighlevel",
        "hubspot",
        "calendly",
        "google",
        "spotify",
        "instagram",
        "microsoft",
        "bing",
        "wordpress",
        "wix",
    ] {
        let p = c.get(key).unwrap_or_else(|| panic!("{key} preset"));
        assert!(!p.enabled(), "{key}");
        assert!(validate(p).is_ok(), "{key}: {:?}", validate(p));
    }
    assert!(c.enabled("demo").is_some());
}

#[test]
fn a_providers_file_sets_account_lookups_and_names_a_malformed_one() {
    let file = r#"
[providers.acme]
display_name = "Acme CRM"
authorize_url = "https://auth.acme.example/authorize"
token_url = "https://auth.acme.example/token"
userinfo_url = "https://auth.acme.example/introspect"
identity = "introspect"
account_id = ["/org_id", "/user_id"]
account_name = "/user"
account_label = "/org_domain"

[providers.bing]
account_id = "/site"
"#;
    let c = Catalogue::build(&settings(), Some(("p.toml", file)), &no_env).unwrap();
    let acme = c.get("acme").unwrap();
    assert_eq!(acme.identity, Identity::Introspect);
    assert_eq!(acme.account_id, ["/org_id", "/user_id"]);
    assert_eq!(acme.account_label.as_deref(), Some("/org_domain"));
    assert_eq!(c.get("bing").unwrap().account_id, ["/site"]);
    for (bad, says) in [
        (
            "userinfo_url = \"https://x.example/{loc\"",
            "'userinfo_url'",
        ),
        (
            "account_id = [\"sub\"]",
            "'account_id' must be a JSON pointer",
        ),
        (
            "account_label = \"domain\"",
            "'account_label' must be a JSON pointer",
        ),
    ] {
        let file = format!("[providers.hubspot]\n{bad}\n");
        let err = Catalogue::build(&settings(), Some(("p.toml", &file)), &no_env)
            .unwrap_err()
            .to_string();
        assert!(err.contains(says), "{bad}: {err}");
    }
}

#[test]
fn production_refuses_plain_http_provider_urls_naming_provider_and_field() {
    use base64::Engine;
    let session_key = base64::engine::general_purpose::STANDARD.encode([7u8; 64]);
    let prod = Settings::from_vars(
        &[
            ("TETHER_ENV", "production"),
            ("TETHER_DATABASE_URL", "postgres://db.example.com/tether"),
            ("TETHER_PUBLIC_URL", "https://tether.example.com"),
            (
                "TETHER_ENCRYPTION_KEYS",
                "k1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=",
            ),
            ("TETHER_SESSION_KEY", session_key.as_str()),
            ("TETHER_METRICS_TOKEN", "a-metrics-token-of-length"),
        ]
        .into_iter()
        .map(|(k, v): (&str, &str)| (k.to_string(), v.to_string()))
        .collect(),
    )
    .unwrap();
    // The presets are all https.
    assert!(Catalogue::build(&prod, None, &no_env).is_ok());
    let file = r#"
[providers.acme]
display_name = "Acme CRM"
authorize_url = "http://auth.acme.example/authorize"
token_url = "https://auth.acme.example/token"
revocation_url = "http://auth.acme.example/revoke"
userinfo_url = "http://auth.acme.example/me"
api_base_url = "http://api.acme.example"

[providers.hubspot]
token_url = "http://api.hubapi.com/oauth/v3/token"
"#;
    let err = Catalogue::build(&prod, Some(("p.toml", file)), &no_env)
        .unwrap_err()
        .to_string();
    for field in [
        "provider 'acme': 'authorize_url'",
        "provider 'acme': 'revocation_url'",
        "provider 'acme': 'userinfo_url'",
        "provider 'acme': 'api_base_url'",
        "provider 'hubspot': 'token_url'",
    ] {
        assert!(err.contains(field), "{field}: {err}");
    }
    assert!(!err.contains("'acme': 'token_url'"), "{err}");
    // Development takes http (fakes and local servers).
    assert!(Catalogue::build(&settings(), Some(("p.toml", file)), &no_env).is_ok());
}

#[test]
fn iss_required_needs_an_issuer_and_reads_the_metadata_name_too() {
    let file = |flag: &str, issuer: &str| {
        format!(
            "[providers.acme]\ndisplay_name = \"Acme\"\nauthorize_url = \"https://a.example/a\"\ntoken_url = \"https://a.example/t\"\n{issuer}{flag}\n"
        )
    };
    let err = Catalogue::build(
        &settings(),
        Some(("p.toml", &file("iss_required = true", ""))),
        &no_env,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("'iss_required' needs 'issuer'"), "{err}");
    for flag in [
        "iss_required = true",
        "authorization_response_iss_parameter_supported = true",
    ] {
        let text = file(flag, "issuer = \"https://a.example\"\n");
        let c = Catalogue::build(&settings(), Some(("p.toml", &text)), &no_env).unwrap();
        assert!(c.get("acme").unwrap().iss_required, "{flag}");
    }
    // On where the provider documents RFC 9207 (Google's discovery document)
    // and for our demo server; off in every other preset.
    let c = Catalogue::build(&settings(), None, &no_env).unwrap();
    for p in c.all() {
        let documented = matches!(p.key.as_str(), "demo" | "google");
        assert_eq!(p.iss_required, documented, "{}", p.key);
    }
}

#[test]
fn credentials_enable_a_provider() {
    let env = |n: &str| match n {
        "HUBSPOT_CLIENT_ID" => Some("id".to_string()),
        "HUBSPOT_CLIENT_SECRET" => Some("secret".to_string()),
        _ => None,
    };
    let c = Catalogue::build(&settings(), None, &env).unwrap();
    assert!(c.enabled("hubspot").is_some());
    assert!(c.enabled("google").is_none());
}

#[test]
fn half_a_pair_of_credentials_is_refused_naming_the_provider_and_the_missing_variable() {
    let id_only = |n: &str| (n == "HUBSPOT_CLIENT_ID").then(|| "id".to_string());
    let err = Catalogue::build(&settings(), None, &id_only)
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "provider hubspot: HUBSPOT_CLIENT_SECRET is missing while HUBSPOT_CLIENT_ID is set; set both to enable it, or neither"
    );
    let secret_only = |n: &str| (n == "GOOGLE_CLIENT_SECRET").then(|| "s".to_string());
    let err = Catalogue::build(&settings(), None, &secret_only)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(
            "provider google: GOOGLE_CLIENT_ID is missing while GOOGLE_CLIENT_SECRET is set"
        ),
        "{err}"
    );
    assert!(!err.contains("\"s\""), "{err}");
}

#[test]
fn a_file_adds_custom_providers_and_overrides_presets() {
    let file = r#"
[providers.acme]
display_name = "Acme CRM"
authorize_url = "https://auth.acme.example/oauth/authorize"
token_url = "https://auth.acme.example/oauth/token"
scopes = ["contacts.read"]
client_auth = "basic"
keep_fields = ["locationId"]

[providers.google]
scopes = ["openid"]
"#;
    let c = Catalogue::build(&settings(), Some(("p.toml", file)), &no_env).unwrap();
    let acme = c.get("acme").unwrap();
    assert_eq!(acme.client_auth, ClientAuth::Basic);
    assert_eq!(acme.client_id_env, "ACME_CLIENT_ID");
    assert_eq!(c.get("google").unwrap().scopes, vec!["openid"]);
    assert_eq!(
        c.get("google")
            .unwrap()
            .authorize_params
            .get("access_type")
            .map(String::as_str),
        Some("offline")
    );
}

#[test]
fn api_headers_come_from_the_preset_or_the_file_and_reserved_ones_are_refused() {
    let c = Catalogue::build(&settings(), None, &no_env).unwrap();
    assert_eq!(
        c.get("gohighlevel")
            .unwrap()
            .api_headers
            .get("Version")
            .map(String::as_str),
        Some("2021-07-28")
    );
    let base = "[providers.acme]\ndisplay_name = \"Acme\"\nauthorize_url = \"https://a.example/auth\"\ntoken_url = \"https://a.example/token\"\n";
    let ok = format!("{base}api_headers = {{ \"X-Api-Version\" = \"7\" }}\n");
    let c = Catalogue::build(&settings(), Some(("p.toml", &ok)), &no_env).unwrap();
    assert_eq!(
        c.get("acme")
            .unwrap()
            .api_headers
            .get("X-Api-Version")
            .map(String::as_str),
        Some("7")
    );
    for bad in [
        "api_headers = { Authorization = \"Bearer x\" }",
        "api_headers = { Host = \"evil.example\" }",
        "api_headers = { \"bad header\" = \"1\" }",
        "api_headers = { Version = \"a\\nb\" }",
    ] {
        let file = format!("{base}{bad}\n");
        let err = Catalogue::build(&settings(), Some(("p.toml", &file)), &no_env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("api_headers"), "{bad}: {err}");
    }
}

#[test]
fn settings_schemas_come_from_the_presets_or_the_file_and_bad_ones_are_refused() {
    let c = Catalogue::build(&settings(), None, &no_env).unwrap();
    let names = |key: &str| -> Vec<(String, FieldType)> {
        c.get(key)
            .unwrap()
            .settings_schema
            .iter()
            .map(|f| (f.name.clone(), f.kind))
            .collect()
    };
    let string = |n: &str| (n.to_string(), FieldType::String);
    assert_eq!(
        names("gohighlevel"),
        [string("default_pipeline_id"), string("default_stage_id")]
    );
    assert_eq!(names("calendly"), [string("default_event_type_uri")]);
    assert_eq!(names("google"), [string("site_url")]);
    assert!(names("hubspot").is_empty());

    let base = "[providers.acme]\ndisplay_name = \"Acme\"\nauthorize_url = \"https://a.example/auth\"\ntoken_url = \"https://a.example/token\"\n";
    let ok = format!(
        "{base}settings_schema = [{{ name = \"board\", type = \"string\", label = \"Board\" }}, {{ name = \"max\", type = \"number\" }}, {{ name = \"on\", type = \"boolean\" }}]\n\n[providers.google]\nsettings_schema = []\n"
    );
    let c = Catalogue::build(&settings(), Some(("p.toml", &ok)), &no_env).unwrap();
    assert_eq!(
        c.get("acme").unwrap().settings_schema,
        [
            SettingField::new("board", FieldType::String, "Board"),
            SettingField::new("max", FieldType::Number, "max"),
            SettingField::new("on", FieldType::Boolean, "on"),
        ],
        "in order; the label defaults to the name"
    );
    assert!(
        c.get("google").unwrap().settings_schema.is_empty(),
        "an override replaces the preset's"
    );
    for (bad, says) in [
        ("[{ name = \"when\", type = \"date\" }]", "line 5"),
        (
            "[{ name = \"x\", type = \"string\", colour = 1 }]",
            "colour",
        ),
        ("[{ type = \"string\" }]", "name"),
        ("[{ name = \"1x\", type = \"string\" }]", "'1x' is not"),
        ("[{ name = \"a b\", type = \"string\" }]", "'a b' is not"),
        (
            "[{ name = \"x\", type = \"string\" }, { name = \"x\", type = \"number\" }]",
            "'x' twice",
        ),
        (
            "[{ name = \"x\", type = \"string\", label = \" \" }]",
            "needs a label",
        ),
    ] {
        let file = format!("{base}settings_schema = {bad}\n");
        let err = Catalogue::build(&settings(), Some(("p.toml", &file)), &no_env)
            .unwrap_err()
            .to_string();
        assert!(err.contains(says), "{bad}: {err}");
    }
}

#[test]
fn provider_initiated_installs_are_gohighlevel_s_and_refused_with_pkce() {
    let c = Catalogue::build(&settings(), None, &no_env).unwrap();
    for p in c.all() {
        assert_eq!(
            p.provider_initiated_installs,
            p.key.as_str() == "gohighlevel",
            "{}",
            p.key
        );
    }
    let err = Catalogue::build(
        &settings(),
        Some(("p.toml", "[providers.gohighlevel]\npkce = true\n")),
        &no_env,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("[providers.gohighlevel] 'provider_initiated_installs' cannot go with 'pkce'"),
        "{err}"
    );
    let off = "[providers.gohighlevel]\npkce = true\nprovider_initiated_installs = false\n";
    let c = Catalogue::build(&settings(), Some(("p.toml", off)), &no_env).unwrap();
    assert!(!c.get("gohighlevel").unwrap().provider_initiated_installs);
    let custom = "[providers.acme]\ndisplay_name = \"Acme\"\nauthorize_url = \"https://a.example/a\"\ntoken_url = \"https://a.example/t\"\npkce = false\nprovider_initiated_installs = true\n";
    let c = Catalogue::build(&settings(), Some(("p.toml", custom)), &no_env).unwrap();
    assert!(c.get("acme").unwrap().provider_initiated_installs);
}

#[test]
fn a_malformed_file_names_the_line_and_the_reason() {
    let file = "[providers.acme]\ndisplay_name = \"Acme\"\npkce = \"yes\"\n";
    let err = Catalogue::build(&settings(), Some(("p.toml", file)), &no_env)
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 3"), "{err}");
    let err = Catalogue::build(
        &settings(),
        Some(("p.toml", "[providers.acme]\ndisplay_name = \"A\"\n")),
        &no_env,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("authorize_url"), "{err}");
    let err = Catalogue::build(
        &settings(),
        Some(("p.toml", "[providers.x]\ncolour = 1\n")),
        &no_env,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("colour"), "{err}");
}

#[test]
fn an_app_s_webhook_key_defaults_to_the_published_one_and_a_bad_one_or_app_id_stops_start() {
    let c = Catalogue::build(&settings(), None, &no_env).unwrap();
    let ghl = c.get("gohighlevel").unwrap();
    assert_eq!(
        crate::crypto::ed25519_spki_base64(&ghl.webhook_key.unwrap()),
        presets::GOHIGHLEVEL_WEBHOOK_KEY
    );
    assert!(ghl.app_id.is_none());
    let bad = |name: &str| match name {
        "TETHER_GOHIGHLEVEL_WEBHOOK_PUBLIC_KEY" => Some("c29tZXRoaW5nLWVsc2U=".to_string()),
        "TETHER_GOHIGHLEVEL_APP_ID" => Some("bad id!".to_string()),
        _ => None,
    };
    let err = Catalogue::build(&settings(), None, &bad).unwrap_err().0;
    assert!(
        err.contains("TETHER_GOHIGHLEVEL_WEBHOOK_PUBLIC_KEY: is 14 bytes of DER"),
        "{err}"
    );
    assert!(!err.contains("c29tZXRoaW5n"), "{err}");
    assert!(err.contains("TETHER_GOHIGHLEVEL_APP_ID"), "{err}");
    let good = |name: &str| (name == "TETHER_GOHIGHLEVEL_APP_ID").then(|| "64f0a1b2c3".to_string());
    let c = Catalogue::build(&settings(), None, &good).unwrap();
    assert_eq!(
        c.get("gohighlevel").unwrap().app_id.as_deref(),
        Some("64f0a1b2c3")
    );
}

#[test]
fn a_provider_names_its_platform_the_old_flags_imply_one_and_an_unknown_one_is_refused() {
    let c = Catalogue::build(&settings(), None, &no_env).unwrap();
    let platform = |c: &Catalogue, key: &str| c.get(key).unwrap().platform.clone();
    assert_eq!(platform(&c, "gohighlevel").as_deref(), Some("gohighlevel"));
    assert_eq!(platform(&c, "instagram").as_deref(), Some("instagram"));
    assert_eq!(platform(&c, "wix").as_deref(), Some("wix"));
    assert_eq!(platform(&c, "hubspot"), None);
    let custom = |extra: &str| {
        format!(
            "[providers.acme]\ndisplay_name = \"Acme\"\nauthorize_url = \"https://a.example/auth\"\ntoken_url = \"https://a.example/token\"\napi_base_url = \"https://a.example\"\n{extra}"
        )
    };
    for (extra, implied) in [
        ("", None),
        ("location_tokens = true\n", Some("gohighlevel")),
        ("refresh = \"instagram\"\n", Some("instagram")),
        ("refresh = \"client_credentials\"\n", Some("wix")),
        ("platform = \"wix\"\n", Some("wix")),
    ] {
        let file = custom(extra);
        let c = Catalogue::build(&settings(), Some(("p.toml", &file)), &no_env).unwrap();
        assert_eq!(platform(&c, "acme").as_deref(), implied, "{extra}");
    }
    let file = custom("platform = \"myspace\"\n");
    let err = Catalogue::build(&settings(), Some(("p.toml", &file)), &no_env)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(
            "[providers.acme] 'platform' is 'myspace'; it is one of gohighlevel, instagram, wix"
        ),
        "{err}"
    );
}

#[test]
fn api_budgets_come_from_the_preset_or_the_file_and_bad_ones_are_refused() {
    let c = Catalogue::build(&settings(), None, &no_env).unwrap();
    // GoHighLevel's documented limits per location: 100 per 10 s, 200,000 a day.
    assert_eq!(
        c.get("gohighlevel").unwrap().api_budgets,
        [Budget::per_secs(100, 10), Budget::per_secs(200_000, 86_400)]
    );
    assert!(c.get("hubspot").unwrap().api_budgets.is_empty());
    let base = "[providers.acme]\ndisplay_name = \"Acme\"\nauthorize_url = \"https://a.example/auth\"\ntoken_url = \"https://a.example/token\"\napi_base_url = \"https://api.a.example\"\n";
    let ok = format!("{base}api_budgets = [{{ calls = 3, window = \"1h\" }}, {{ calls = 50, window = \"90s\" }}]\n[providers.gohighlevel]\napi_budgets = []\n");
    let c = Catalogue::build(&settings(), Some(("p.toml", &ok)), &no_env).unwrap();
    assert_eq!(
        c.get("acme").unwrap().api_budgets,
        [Budget::per_secs(3, 3_600), Budget::per_secs(50, 90)]
    );
    assert!(c.get("gohighlevel").unwrap().api_budgets.is_empty());
    for bad in [
        "api_budgets = [{ calls = 0, window = \"1h\" }]",
        "api_budgets = [{ calls = 5, window = \"0s\" }]",
        "api_budgets = [{ calls = 5, window = \"32d\" }]",
        "api_budgets = [{ calls = 5, window = \"soon\" }]",
        "api_budgets = [{ calls = 5 }]",
        "api_budgets = [{ calls = 5, window = \"1h\", burst = 2 }]",
        "api_budgets = [{ calls = 5, window = \"1h\" }, { calls = 9, window = \"60m\" }]",
    ] {
        let file = format!("{base}{bad}\n");
        let err = Catalogue::build(&settings(), Some(("p.toml", &file)), &no_env)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("api_budgets") || err.contains("window") || err.contains("burst"),
            "{bad}: {err}"
        );
    }
    // Budgets are spent by proxied calls: a provider without an API base has none to spend.
    let no_api = base.replace("api_base_url = \"https://api.a.example\"\n", "")
        + "api_budgets = [{ calls = 5, window = \"1h\" }]\n";
    let err = Catalogue::build(&settings(), Some(("p.toml", &no_api)), &no_env)
        .unwrap_err()
        .to_string();
    assert!(err.contains("api_base_url"), "{err}");
}
