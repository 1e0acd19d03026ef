//! What makes a provider valid: its key, its platform, its URLs and its
//! settings schema.

use super::provider::{Flow, Provider, RefreshStyle, SettingField};

/// Provider keys appear in URLs and env names: keep them simple.
pub fn valid_key(key: &str) -> bool {
    (1..=32).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        && key.as_bytes()[0].is_ascii_lowercase()
}
/// The platforms whose code `src/platforms/` holds: a provider's `platform`
/// names one of them.
pub const PLATFORMS: [&str; 3] = ["gohighlevel", "instagram", "wix"];

/// The platform a providers file implies without naming one, as before
/// `platform` existed: a provider that mints location tokens works as
/// GoHighLevel, one renewed by `ig_refresh_token` as Instagram, one
/// connected by client credentials as Wix.
pub(super) fn implied_platform(p: &Provider) -> Option<&'static str> {
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
pub(super) fn plain_http(p: &Provider) -> Vec<String> {
    urls(p)
        .into_iter()
        .filter_map(|(name, url)| {
            let url = url.filter(|u| !u.is_empty())?;
            let https = url::Url::parse(url).is_ok_and(|u| u.scheme() == "https");
            (!https).then(|| format!("provider '{}': '{name}' is not https://", p.key))
        })
        .collect()
}

pub(super) fn validate(p: &Provider) -> Result<(), String> {
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
        ("parent_account", p.parent_account.as_ref()),
        ("installed_by", p.installed_by.as_ref()),
    ];
    for (name, ptr) in pointers.chain(named) {
        if let Some(ptr) = ptr {
            if !ptr.is_empty() && !ptr.starts_with('/') {
                return Err(format!("'{name}' must be a JSON pointer such as \"/sub\""));
            }
        }
    }
    if let Some(url) = &p.userinfo_url {
        if let Err(e) = super::provider::placeholders(url) {
            return Err(format!("'userinfo_url': {e}"));
        }
    }
    if p.private_tokens.is_some() && p.userinfo_url.is_none() {
        return Err(
            "'private_tokens' needs 'userinfo_url': a private token is checked with the account lookup before it is stored".into(),
        );
    }
    if p.private_tokens
        .as_deref()
        .is_some_and(|l| l.trim().is_empty() || l.len() > 64)
    {
        return Err("'private_tokens' is what the platform calls them: 1 to 64 characters".into());
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
    validate_budgets(p)?;
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

/// The most budgets a provider may declare: a burst, a day, and room for
/// a minute and an hour.
const MAX_BUDGETS: usize = 4;

/// Budgets need the proxy (`api_base_url`), at least one call each, and
/// windows of their own: two budgets of one window would spend one count.
fn validate_budgets(p: &Provider) -> Result<(), String> {
    let budgets = &p.api_budgets;
    if budgets.is_empty() {
        return Ok(());
    }
    if p.api_base_url.is_none() {
        return Err("'api_budgets' needs 'api_base_url': they are spent by proxied calls".into());
    }
    if budgets.len() > MAX_BUDGETS {
        return Err(format!(
            "'api_budgets' declares {} budgets; at most {MAX_BUDGETS}",
            budgets.len()
        ));
    }
    let mut windows = std::collections::BTreeSet::new();
    for b in budgets {
        if !(1..=1_000_000_000).contains(&b.calls) {
            return Err("'api_budgets' calls are from 1 to 1,000,000,000".into());
        }
        if !windows.insert(b.window) {
            return Err(format!(
                "'api_budgets' declares two budgets over {} s; one per window",
                b.window.as_secs()
            ));
        }
    }
    Ok(())
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
