//! The provider catalogue: built-in presets, the demo provider, and custom
//! providers or overrides from `TETHER_PROVIDERS_FILE`. A provider is enabled
//! when its client id and secret are configured.

pub mod presets;
mod provider;

pub use provider::{ClientAuth, FieldType, Flow, Identity, Provider, RefreshStyle, SettingField};

use crate::config::Settings;
use crate::crypto::Secret;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// A malformed providers file: where and why.
#[derive(Debug)]
pub struct CatalogueError(pub String);

impl fmt::Display for CatalogueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CatalogueError {}

/// Every provider Tether knows, enabled or not, in key order.
#[derive(Debug, Clone)]
pub struct Catalogue {
    /// Shared, so that a request takes a provider without copying it.
    providers: BTreeMap<String, Arc<Provider>>,
}

/// The TOML form of a provider (README, "Custom providers"). Every field is optional
/// so that a preset can be overridden field by field.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ProviderToml {
    display_name: Option<String>,
    flow: Option<Flow>,
    authorize_url: Option<String>,
    token_url: Option<String>,
    revocation_url: Option<String>,
    userinfo_url: Option<String>,
    identity: Option<Identity>,
    account_id: Option<OneOrMany>,
    account_name: Option<String>,
    account_label: Option<String>,
    issuer: Option<String>,
    /// The RFC 8414 metadata name is accepted too, so that a value can be
    /// copied from the provider's discovery document as it is.
    #[serde(alias = "authorization_response_iss_parameter_supported")]
    iss_required: Option<bool>,
    scopes: Option<Vec<String>>,
    optional_scopes: Option<Vec<String>>,
    scope_separator: Option<String>,
    provider_initiated_installs: Option<bool>,
    pkce: Option<bool>,
    client_auth: Option<ClientAuth>,
    revocation_client_auth: Option<ClientAuth>,
    client_id_env: Option<String>,
    client_secret_env: Option<String>,
    keep_fields: Option<Vec<String>>,
    api_base_url: Option<String>,
    api_headers: Option<BTreeMap<String, String>>,
    authorize_params: Option<BTreeMap<String, String>>,
    consent_params: Option<BTreeMap<String, String>>,
    token_params: Option<BTreeMap<String, String>>,
    refresh: Option<RefreshStyle>,
    refresh_token_lifetime_days: Option<i64>,
    rotates_refresh_tokens: Option<bool>,
    location_tokens: Option<bool>,
    platform: Option<String>,
    settings_schema: Option<Vec<SettingFieldToml>>,
}

/// A string, or a list of them (`account_id = "/sub"` or `["/a", "/b"]`).
#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// A field of `settings_schema` in the providers file.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingFieldToml {
    name: String,
    #[serde(rename = "type")]
    kind: FieldType,
    label: Option<String>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ProvidersFile {
    #[serde(default)]
    providers: BTreeMap<String, ProviderToml>,
}

/// Provider keys appear in URLs and env names: keep them simple.
pub fn valid_key(key: &str) -> bool {
    (1..=32).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        && key.as_bytes()[0].is_ascii_lowercase()
}

impl Catalogue {
    /// Presets, the demo provider when on, and the providers file; credentials
    /// from the environment.
    pub fn load(settings: &Settings) -> Result<Catalogue, CatalogueError> {
        let file = match &settings.providers_file {
            Some(path) => Some((
                path.display().to_string(),
                std::fs::read_to_string(path).map_err(|e| {
                    CatalogueError(format!("TETHER_PROVIDERS_FILE {}: {e}", path.display()))
                })?,
            )),
            None => None,
        };
        Catalogue::build(
            settings,
            file.as_ref().map(|(p, t)| (p.as_str(), t.as_str())),
            &|name| settings.var(name),
        )
    }

    /// As [`Catalogue::load`], with the file text and the environment given.
    pub fn build(
        settings: &Settings,
        file: Option<(&str, &str)>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Catalogue, CatalogueError> {
        let mut providers: BTreeMap<String, Provider> = presets::all()
            .into_iter()
            .map(|p| (p.key.to_string(), p))
            .collect();
        if let Some((path, text)) = file {
            let parsed: ProvidersFile = toml::from_str(text).map_err(|e| {
                CatalogueError(format!(
                    "TETHER_PROVIDERS_FILE {path}: {}",
                    describe_toml_error(text, &e)
                ))
            })?;
            for (key, t) in parsed.providers {
                let at = |msg: String| {
                    CatalogueError(format!(
                        "TETHER_PROVIDERS_FILE {path}: [providers.{key}] {msg}"
                    ))
                };
                if !valid_key(&key) || key == "demo" {
                    return Err(at("the key must be 1 to 32 of a-z, 0-9, '_' or '-', start with a letter, and not be 'demo'".into()));
                }
                let base = match providers.remove(&key) {
                    Some(p) => p,
                    None => new_custom(&key, &t).map_err(at)?,
                };
                let merged = merge(base, t);
                validate(&merged).map_err(at)?;
                providers.insert(key, merged);
            }
        }
        if settings.is_production() {
            let problems: Vec<String> = providers.values().flat_map(plain_http).collect();
            if !problems.is_empty() {
                return Err(CatalogueError(format!(
                    "in production every provider URL must be https://: {}",
                    problems.join("; ")
                )));
            }
        }
        // Half a pair is a mistake, never a way to switch a provider off:
        // starting without it would leave its connections silently dead.
        let mut half = Vec::new();
        for p in providers.values_mut() {
            p.credentials = match (env(&p.client_id_env), env(&p.client_secret_env)) {
                (Some(id), Some(secret)) => Some((id, Secret::new(secret))),
                (Some(_), None) => {
                    half.push(half_configured(p, &p.client_secret_env, &p.client_id_env));
                    None
                }
                (None, Some(_)) => {
                    half.push(half_configured(p, &p.client_id_env, &p.client_secret_env));
                    None
                }
                (None, None) => None,
            };
        }
        if !half.is_empty() {
            return Err(CatalogueError(half.join("; ")));
        }
        let problems: Vec<String> = providers
            .values_mut()
            .flat_map(|p| read_app(p, env))
            .collect();
        if !problems.is_empty() {
            return Err(CatalogueError(problems.join("; ")));
        }
        if settings.demo_provider {
            let demo = presets::demo(settings);
            providers.insert(demo.key.to_string(), demo);
        }
        Ok(Catalogue {
            providers: providers
                .into_iter()
                .map(|(k, p)| (k, Arc::new(p)))
                .collect(),
        })
    }

    pub fn get(&self, key: &str) -> Option<&Provider> {
        self.providers.get(key).map(|p| &**p)
    }

    /// The provider if it exists and is enabled.
    pub fn enabled(&self, key: &str) -> Option<&Provider> {
        self.shared(key).map(|p| &**p)
    }

    /// As [`Catalogue::enabled`], as a handle to keep.
    pub fn shared(&self, key: &str) -> Option<&Arc<Provider>> {
        self.providers.get(key).filter(|p| p.enabled())
    }

    pub fn all(&self) -> impl Iterator<Item = &Provider> {
        self.providers.values().map(|p| &**p)
    }
}

/// What `serve` and `doctor` both say of a provider with half its credentials.
fn half_configured(p: &Provider, missing: &str, set: &str) -> String {
    format!(
        "provider {}: {missing} is missing while {set} is set; set both to enable it, or neither",
        p.key
    )
}

fn new_custom(key: &str, t: &ProviderToml) -> Result<Provider, String> {
    let required = |v: &Option<String>, name: &str| {
        v.clone()
            .ok_or_else(|| format!("'{name}' is required for a new provider"))
    };
    let authorize_url = if t.flow == Some(Flow::ClientCredentials) {
        String::new()
    } else {
        required(&t.authorize_url, "authorize_url")?
    };
    // The same defaults as the presets; `merge` applies the rest of the file.
    Ok(presets::base(
        key,
        &required(&t.display_name, "display_name")?,
        &authorize_url,
        &required(&t.token_url, "token_url")?,
    ))
}

fn merge(mut p: Provider, t: ProviderToml) -> Provider {
    macro_rules! set {
        ($($field:ident),*) => { $( if let Some(v) = t.$field { p.$field = v; } )* };
    }
    macro_rules! set_opt {
        ($($field:ident),*) => { $( if let Some(v) = t.$field { p.$field = Some(v); } )* };
    }
    set!(
        display_name,
        flow,
        authorize_url,
        token_url,
        scopes,
        optional_scopes,
        scope_separator,
        pkce,
        client_auth
    );
    set!(
        client_id_env,
        client_secret_env,
        keep_fields,
        api_headers,
        authorize_params,
        consent_params,
        token_params,
        refresh,
        rotates_refresh_tokens,
        iss_required,
        identity,
        location_tokens,
        provider_initiated_installs
    );
    if let Some(ids) = t.account_id {
        p.account_id = ids.into_vec();
    }
    set_opt!(
        revocation_url,
        revocation_client_auth,
        userinfo_url,
        account_name,
        account_label,
        issuer,
        api_base_url,
        refresh_token_lifetime_days,
        platform
    );
    if p.platform.is_none() {
        p.platform = implied_platform(&p).map(str::to_string);
    }
    if let Some(fields) = t.settings_schema {
        p.settings_schema = fields
            .into_iter()
            .map(|f| SettingField {
                label: f.label.unwrap_or_else(|| f.name.clone()),
                name: f.name,
                kind: f.kind,
            })
            .collect();
    }
    p
}

/// Reads a provider's app settings from the environment:
/// `TETHER_<KEY>_APP_ID` and `TETHER_<KEY>_WEBHOOK_PUBLIC_KEY` (over the
/// preset's key). Returns what is wrong, by variable; never a value.
fn read_app(p: &mut Provider, env: &dyn Fn(&str) -> Option<String>) -> Vec<String> {
    let upper = p.key.to_ascii_uppercase().replace('-', "_");
    let mut problems = Vec::new();
    let app_var = format!("TETHER_{upper}{}", crate::config::APP_ID_SUFFIX);
    if let Some(id) = env(&app_var) {
        let id = id.trim().to_string();
        let ok = id.len() <= 128
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            p.app_id = Some(id);
        } else {
            problems.push(format!(
                "{app_var}: is 1 to 128 letters, digits, '-' or '_'"
            ));
        }
    }
    let key_var = format!("TETHER_{upper}{}", crate::config::WEBHOOK_KEY_SUFFIX);
    if let Some(text) = env(&key_var) {
        match crate::crypto::ed25519_public_key(&text) {
            Ok(key) => p.webhook_key = Some(key),
            Err(why) => problems.push(format!("{key_var}: {why}")),
        }
    }
    problems
}

/// The platforms whose code `src/platforms/` holds: a provider's `platform`
/// names one of them.
pub const PLATFORMS: [&str; 3] = ["gohighlevel", "instagram", "wix"];

/// The platform a providers file implies without naming one, as before
/// `platform` existed: a provider that mints location tokens works as
/// GoHighLevel, one renewed by `ig_refresh_token` as Instagram, one
/// connected by client credentials as Wix.
fn implied_platform(p: &Provider) -> Option<&'static str> {
    if p.location_tokens {
        Some("gohighlevel")
    } else if p.refresh == RefreshStyle::Instagram {
        Some("instagram")
    } else if p.refresh == RefreshStyle::ClientCredentials || p.flow == Flow::ClientCredentials {
        Some("wix")
    } else {
        None
    }
}

/// The URL fields of `p` that Tether calls or sends a browser to.
fn urls(p: &Provider) -> [(&'static str, Option<&String>); 5] {
    [
        (
            "authorize_url",
            Some(&p.authorize_url).filter(|_| p.flow == Flow::AuthorizationCode),
        ),
        ("token_url", Some(&p.token_url)),
        ("revocation_url", p.revocation_url.as_ref()),
        ("userinfo_url", p.userinfo_url.as_ref()),
        ("api_base_url", p.api_base_url.as_ref()),
    ]
}

/// Each URL of `p` that is not https, as "provider `key`: 'field' is http://...".
/// Codes, client secrets and tokens travel over every one of them.
fn plain_http(p: &Provider) -> Vec<String> {
    urls(p)
        .into_iter()
        .filter_map(|(name, url)| {
            let url = url.filter(|u| !u.is_empty())?;
            let https = url::Url::parse(url).is_ok_and(|u| u.scheme() == "https");
            (!https).then(|| format!("provider '{}': '{name}' is not https://", p.key))
        })
        .collect()
}

fn validate(p: &Provider) -> Result<(), String> {
    for (name, url) in urls(p) {
        if let Some(u) = url {
            match url::Url::parse(u) {
                Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {}
                _ => return Err(format!("'{name}' is not an http(s) URL")),
            }
        }
    }
    let pointers = p.account_id.iter().map(|ptr| ("account_id", Some(ptr)));
    let named = [
        ("account_name", p.account_name.as_ref()),
        ("account_label", p.account_label.as_ref()),
    ];
    for (name, ptr) in pointers.chain(named) {
        if let Some(ptr) = ptr {
            if !ptr.is_empty() && !ptr.starts_with('/') {
                return Err(format!("'{name}' must be a JSON pointer such as \"/sub\""));
            }
        }
    }
    if let Some(url) = &p.userinfo_url {
        if let Err(e) = provider::placeholders(url) {
            return Err(format!("'userinfo_url': {e}"));
        }
    }
    for name in [&p.client_id_env, &p.client_secret_env] {
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(format!(
                "'{name}' is not an environment variable name (A-Z, 0-9, _)"
            ));
        }
    }
    if p.iss_required && p.issuer.is_none() {
        return Err(
            "'iss_required' needs 'issuer': the value every callback's iss must equal".into(),
        );
    }
    for (name, value) in &p.api_headers {
        let reserved = [
            "authorization",
            "host",
            "cookie",
            "content-length",
            "transfer-encoding",
        ];
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err()
            || reserved.contains(&name.to_ascii_lowercase().as_str())
        {
            return Err(format!(
                "'api_headers' names '{name}', which is not a header Tether may set"
            ));
        }
        if reqwest::header::HeaderValue::from_str(value).is_err() {
            return Err(format!("'api_headers.{name}' is not a valid header value"));
        }
    }
    if p.location_tokens && p.api_base_url.is_none() {
        return Err(
            "'location_tokens' needs 'api_base_url', where the agency endpoints are".into(),
        );
    }
    if p.provider_initiated_installs && p.pkce {
        return Err("'provider_initiated_installs' cannot go with 'pkce': a callback without a state has no verifier to send".into());
    }
    if p.provider_initiated_installs && p.flow != Flow::AuthorizationCode {
        return Err("'provider_initiated_installs' needs the authorization_code flow".into());
    }
    if p.scope_separator.is_empty() {
        return Err("'scope_separator' must not be empty".into());
    }
    if let Some(name) = p.platform.as_deref().filter(|n| !PLATFORMS.contains(n)) {
        return Err(format!(
            "'platform' is '{name}'; it is one of {}, or left out",
            PLATFORMS.join(", ")
        ));
    }
    validate_settings_schema(&p.settings_schema)
}

/// The most fields a settings schema may declare (a form, not a database).
const MAX_SETTING_FIELDS: usize = 50;

/// Field names are keys of a JSON object and form field names: 1 to 64 of
/// a-z, A-Z, 0-9, '_', '-' or '.', starting with a letter; each once.
fn validate_settings_schema(fields: &[SettingField]) -> Result<(), String> {
    if fields.len() > MAX_SETTING_FIELDS {
        return Err(format!(
            "'settings_schema' declares {} fields; at most {MAX_SETTING_FIELDS}",
            fields.len()
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for f in fields {
        let well_formed = (1..=64).contains(&f.name.len())
            && f.name.as_bytes()[0].is_ascii_alphabetic()
            && f.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !well_formed {
            return Err(format!(
                "'settings_schema' field names are 1 to 64 of a-z, A-Z, 0-9, '_', '-' or '.', starting with a letter; '{}' is not",
                f.name.chars().take(64).collect::<String>()
            ));
        }
        if !seen.insert(f.name.as_str()) {
            return Err(format!(
                "'settings_schema' declares the field '{}' twice",
                f.name
            ));
        }
        if f.label.trim().is_empty()
            || f.label.chars().count() > 100
            || f.label.chars().any(char::is_control)
        {
            return Err(format!(
                "'settings_schema' field '{}' needs a label of 1 to 100 printable characters",
                f.name
            ));
        }
    }
    Ok(())
}

/// "line 3, column 7: invalid type ..." from a TOML error.
fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}: {}", e.message())
        }
        None => e.message().to_string(),
    }
}

#[cfg(test)]
mod tests {
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
        // Off in every preset (none documents RFC 9207); on for our demo server.
        let c = Catalogue::build(&settings(), None, &no_env).unwrap();
        for p in c.all() {
            assert_eq!(p.iss_required, p.key.as_str() == "demo", "{}", p.key);
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
            err.contains(
                "[providers.gohighlevel] 'provider_initiated_installs' cannot go with 'pkce'"
            ),
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
        let good =
            |name: &str| (name == "TETHER_GOHIGHLEVEL_APP_ID").then(|| "64f0a1b2c3".to_string());
        let c = Catalogue::build(&settings(), None, &good).unwrap();
        assert_eq!(
            c.get("gohighlevel").unwrap().app_id.as_deref(),
            Some("64f0a1b2c3")
        );
    }
}
