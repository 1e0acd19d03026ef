//! The providers file (`TETHER_PROVIDERS_FILE`): its TOML form, and how a
//! provider in it becomes a new provider or overrides a preset.

use super::presets;
use super::provider::{
    Budget, ClientAuth, FieldType, Flow, Identity, LoginHint, Provider, RefreshStyle, SettingField,
};
use super::validate::implied_platform;
use std::collections::BTreeMap;

/// The TOML form of a provider (README, "Custom providers"). Every field is optional
/// so that a preset can be overridden field by field.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ProviderToml {
    display_name: Option<String>,
    flow: Option<Flow>,
    authorize_url: Option<String>,
    token_url: Option<String>,
    revocation_url: Option<String>,
    userinfo_url: Option<String>,
    identity: Option<Identity>,
    account_id: Option<OneOrMany>,
    account_name: Option<String>,
    parent_account: Option<String>,
    account_label: Option<String>,
    issuer: Option<String>,
    /// The RFC 8414 metadata name is accepted too, so that a value can be
    /// copied from the provider's discovery document as it is.
    #[serde(alias = "authorization_response_iss_parameter_supported")]
    iss_required: Option<bool>,
    scopes: Option<Vec<String>>,
    optional_scopes: Option<Vec<String>>,
    request_only_scopes: Option<Vec<String>>,
    /// Added to (or replacing) the preset's, scope by scope.
    scope_descriptions: Option<BTreeMap<String, String>>,
    login_hint: Option<LoginHint>,
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
    /// Replaces the preset's (`api_budgets = []`: none).
    api_budgets: Option<Vec<Budget>>,
    authorize_params: Option<BTreeMap<String, String>>,
    consent_params: Option<BTreeMap<String, String>>,
    token_params: Option<BTreeMap<String, String>>,
    refresh: Option<RefreshStyle>,
    refresh_token_lifetime_days: Option<i64>,
    rotates_refresh_tokens: Option<bool>,
    location_tokens: Option<bool>,
    one_holder: Option<bool>,
    private_tokens: Option<String>,
    installed_by: Option<String>,
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
pub(super) struct ProvidersFile {
    #[serde(default)]
    pub(super) providers: BTreeMap<String, ProviderToml>,
}
pub(super) fn new_custom(key: &str, t: &ProviderToml) -> Result<Provider, String> {
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

pub(super) fn merge(mut p: Provider, t: ProviderToml) -> Provider {
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
        request_only_scopes,
        scope_separator,
        pkce,
        client_auth
    );
    set!(
        client_id_env,
        client_secret_env,
        keep_fields,
        api_headers,
        api_budgets,
        authorize_params,
        consent_params,
        token_params,
        refresh,
        rotates_refresh_tokens,
        iss_required,
        identity,
        location_tokens,
        one_holder,
        provider_initiated_installs
    );
    if let Some(more) = t.scope_descriptions {
        p.scope_descriptions.extend(more);
    }
    if let Some(ids) = t.account_id {
        p.account_id = ids.into_vec();
    }
    set_opt!(
        revocation_url,
        revocation_client_auth,
        userinfo_url,
        account_name,
        parent_account,
        account_label,
        issuer,
        api_base_url,
        refresh_token_lifetime_days,
        private_tokens,
        installed_by,
        login_hint,
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
/// "line 3, column 7: invalid type ..." from a TOML error.
pub(super) fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
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
