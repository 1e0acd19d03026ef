//! A tenant's integration settings for a provider: whether the tenant uses
//! it (a disabled one is hidden from its dashboard, and its token API and
//! proxy answer `provider_disabled`), and a JSON object of preferences,
//! checked against the provider's settings schema when it declares one.

use crate::app::App;
use crate::db::models::account_setting::AccountSetting;
use crate::db::models::connection::Connection;
use crate::db::models::event::{Actor, EventKind, NewEvent};
use crate::db::models::integration_setting::{IntegrationSetting, NO_SETTINGS};
use crate::db::DbConn;
use crate::error::{AppError, AppResult, Code};
use crate::ids::{AccountId, ProviderKey, TenantId};
use crate::providers::{Provider, SettingField};
use diesel::Connection as _;
use serde_json::{Map, Value};

/// The largest settings object, serialised.
pub const MAX_SETTINGS_BYTES: usize = 64 * 1024;

/// A tenant's integration settings for one provider, as the API gives them.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[schema(as = Integration)]
pub struct IntegrationView {
    pub provider: String,
    /// Whether the tenant uses the provider (true unless switched off).
    pub enabled: bool,
    /// The tenant's settings for it: a JSON object (`{}` when none).
    #[schema(value_type = Object)]
    pub settings: Value,
    /// When they were last changed; null when never.
    #[schema(format = DateTime)]
    pub updated_at: Option<String>,
    /// The fields the provider's settings may have; empty: any object.
    pub schema: Vec<SettingField>,
}

impl IntegrationView {
    /// The view of a stored row (`None`: the defaults).
    pub fn of(provider: &Provider, row: Option<&IntegrationSetting>) -> IntegrationView {
        IntegrationView {
            provider: provider.key.to_string(),
            enabled: row.is_none_or(|r| r.enabled),
            settings: parse(row.map_or(NO_SETTINGS, |r| r.settings.as_str())),
            updated_at: row.map(|r| {
                r.updated_at
                    .and_utc()
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            }),
            schema: provider.settings_schema.clone(),
        }
    }
}

/// Stored settings are always an object Tether wrote; anything else reads
/// as none rather than failing the page.
fn parse(text: &str) -> Value {
    serde_json::from_str::<Value>(text)
        .ok()
        .filter(Value::is_object)
        .unwrap_or_else(|| Value::Object(Map::new()))
}

/// A key as an error message may quote it.
fn quoted(key: &str) -> String {
    let short: String = key.chars().take(64).collect();
    if short.len() < key.len() {
        format!("'{short}...'")
    } else {
        format!("'{short}'")
    }
}

fn invalid(message: String) -> AppError {
    AppError::bad_request(Code::InvalidSettings, message)
}

/// Checks `settings` for `provider`: a JSON object of at most
/// [`MAX_SETTINGS_BYTES`] serialised, whose fields are those of the
/// provider's schema, each of its type, when it declares one. Returns the
/// text to store.
pub fn validate(provider: &Provider, settings: &Value) -> AppResult<String> {
    let Some(object) = settings.as_object() else {
        return Err(invalid(
            "settings must be a JSON object, such as {} or {\"key\": \"value\"}".into(),
        ));
    };
    let text = settings.to_string();
    if text.len() > MAX_SETTINGS_BYTES {
        return Err(AppError::bad_request(
            Code::SettingsTooLarge,
            format!(
                "settings are {} bytes serialised; at most {MAX_SETTINGS_BYTES} (64 KiB)",
                text.len()
            ),
        ));
    }
    let schema = &provider.settings_schema;
    if schema.is_empty() {
        return Ok(text);
    }
    for (key, value) in object {
        let Some(field) = schema.iter().find(|f| &f.name == key) else {
            let known: Vec<&str> = schema.iter().map(|f| f.name.as_str()).collect();
            return Err(invalid(format!(
                "{} is not a setting of {}; its settings are {}",
                quoted(key),
                provider.display_name,
                known.join(", ")
            )));
        };
        if !field.kind.admits(value) {
            return Err(invalid(format!(
                "{} must be a {} (JSON {})",
                quoted(key),
                field.kind.as_str(),
                field.kind.as_str()
            )));
        }
    }
    Ok(text)
}

/// The tenant's integration settings for `provider` (the defaults when
/// they were never written).
pub async fn load(
    app: &App,
    tenant_id: &TenantId,
    provider: &Provider,
) -> AppResult<IntegrationView> {
    let (t, p) = (tenant_id.clone(), provider.key.clone());
    let row = app
        .db(move |c| Ok(IntegrationSetting::find(c, &t, &p)?))
        .await?;
    Ok(IntegrationView::of(provider, row.as_ref()))
}

/// Every integration setting the tenant wrote, by provider key.
pub async fn all_of(
    app: &App,
    tenant_id: &TenantId,
) -> AppResult<std::collections::BTreeMap<String, IntegrationSetting>> {
    let t = tenant_id.clone();
    let rows = app
        .db(move |c| Ok(IntegrationSetting::for_tenant(c, &t)?))
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.provider.to_string(), r))
        .collect())
}

/// Sets whether the tenant uses `provider` and its settings (`None` keeps
/// what is there; `settings` is checked by [`validate`] first, so a refusal
/// changes nothing). Records an event per change (`integration_enabled` or
/// `integration_disabled`, `settings_changed`) with its webhook, and makes
/// every instance's token cache forget the pair, so that the token API sees
/// a switch-off, and the settings it serves with a token, at once.
pub async fn save(
    app: &App,
    tenant_id: &TenantId,
    provider: &Provider,
    enabled: Option<bool>,
    settings: Option<&Value>,
    actor: &Actor,
) -> AppResult<IntegrationView> {
    let text = settings.map(|s| validate(provider, s)).transpose()?;
    let (t, key, who) = (tenant_id.clone(), provider.key.clone(), actor.clone());
    let notify = app.settings.webhook.is_some();
    let saved = app
        .db(move |c| {
            c.transaction(|c| {
                let saved = IntegrationSetting::save(c, &t, &key, enabled, text.as_deref())?;
                let event = |kind| NewEvent {
                    tenant_id: &t,
                    connection_id: None,
                    provider: &key,
                    kind,
                    actor: &who,
                    detail: None,
                };
                if saved.enabled_changed() {
                    let kind = if saved.enabled() {
                        EventKind::IntegrationEnabled
                    } else {
                        EventKind::IntegrationDisabled
                    };
                    crate::db::models::webhook::record(c, notify, &event(kind))?;
                }
                if saved.settings_changed() {
                    crate::db::models::webhook::record(
                        c,
                        notify,
                        &event(EventKind::SettingsChanged),
                    )?;
                }
                if saved.enabled_changed() || saved.settings_changed() {
                    // The token API serves the settings with the token.
                    crate::db::listen::notify_changed(c, &t, &key)?;
                }
                Ok(saved)
            })
        })
        .await?;
    if saved.enabled_changed() || saved.settings_changed() {
        app.tokens.forget(tenant_id, &provider.key);
    }
    if saved.enabled_changed() || saved.settings_changed() {
        log::info!(
            "integration settings changed tenant={tenant_id} provider={} enabled={} settings_changed={} actor={actor}",
            provider.key,
            saved.enabled(),
            saved.settings_changed()
        );
    }
    Ok(IntegrationView::of(provider, saved.row.as_ref()))
}

/// The settings a dashboard form posted for a provider with a schema: one
/// form field per schema field (`setting.<name>`). An empty text or number
/// field leaves that setting unset; an unticked box is `false`.
pub fn from_form(
    provider: &Provider,
    form: &std::collections::HashMap<String, String>,
) -> AppResult<Value> {
    read_form(provider, form, false)
}

/// The settings an account's form posted: like [`from_form`], but a yes/no
/// setting has three choices, `true`, `false`, or empty: the provider's.
pub fn from_account_form(
    provider: &Provider,
    form: &std::collections::HashMap<String, String>,
) -> AppResult<Value> {
    read_form(provider, form, true)
}

fn read_form(
    provider: &Provider,
    form: &std::collections::HashMap<String, String>,
    per_account: bool,
) -> AppResult<Value> {
    let mut out = Map::new();
    for field in &provider.settings_schema {
        let raw = form
            .get(&format!("{FORM_PREFIX}{}", field.name))
            .map(|v| v.trim());
        let value = match field.kind {
            crate::providers::FieldType::Boolean if per_account => match raw {
                None | Some("") => None,
                Some("true") => Some(Value::Bool(true)),
                Some("false") => Some(Value::Bool(false)),
                Some(_) => {
                    return Err(invalid(format!(
                        "{} is yes, no, or as for all accounts",
                        field.label
                    )))
                }
            },
            crate::providers::FieldType::Boolean => Some(Value::Bool(raw == Some("true"))),
            _ if raw.is_none_or(str::is_empty) => None,
            crate::providers::FieldType::String => raw.map(|v| Value::String(v.to_string())),
            crate::providers::FieldType::Number => {
                let v = raw.unwrap_or_default();
                let number = v
                    .parse::<i64>()
                    .map(serde_json::Number::from)
                    .ok()
                    .or_else(|| v.parse::<f64>().ok().and_then(serde_json::Number::from_f64));
                match number {
                    Some(n) => Some(Value::Number(n)),
                    None => {
                        return Err(invalid(format!(
                            "{} must be a number, such as 42 or 2.5",
                            field.label
                        )))
                    }
                }
            }
        };
        if let Some(v) = value {
            out.insert(field.name.clone(), v);
        }
    }
    Ok(Value::Object(out))
}

/// The name of a schema field's input on the dashboard's settings form.
pub const FORM_PREFIX: &str = "setting.";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::FieldType;
    use serde_json::json;

    fn provider(schema: Vec<SettingField>) -> Provider {
        Provider {
            settings_schema: schema,
            ..crate::providers::presets::all()
                .into_iter()
                .find(|p| p.key.as_str() == "google")
                .unwrap()
        }
    }

    #[test]
    fn settings_must_be_an_object_of_at_most_64_kib() {
        let p = provider(vec![]);
        for bad in [json!([]), json!("x"), json!(1), json!(null), json!(true)] {
            let e = validate(&p, &bad).unwrap_err();
            assert!(e.is(Code::InvalidSettings), "{bad}: {e:?}");
        }
        assert_eq!(validate(&p, &json!({})).unwrap(), "{}");
        // {"k":"..."} is 8 bytes around the value.
        let fits = json!({ "k": "a".repeat(MAX_SETTINGS_BYTES - 8) });
        assert_eq!(validate(&p, &fits).unwrap().len(), MAX_SETTINGS_BYTES);
        let over = json!({ "k": "a".repeat(MAX_SETTINGS_BYTES - 7) });
        assert!(validate(&p, &over).unwrap_err().is(Code::SettingsTooLarge));
    }

    #[test]
    fn a_schema_refuses_unknown_fields_and_wrong_types_naming_the_field() {
        let p = provider(vec![
            SettingField::new("pipeline", FieldType::String, "Pipeline"),
            SettingField::new("limit", FieldType::Number, "Limit"),
            SettingField::new("notify", FieldType::Boolean, "Notify"),
        ]);
        assert!(validate(
            &p,
            &json!({"pipeline": "p1", "limit": 2.5, "notify": false})
        )
        .is_ok());
        assert!(validate(&p, &json!({})).is_ok(), "every field is optional");
        for (bad, named) in [
            (json!({"colour": "red"}), "'colour'"),
            (json!({"pipeline": 7}), "'pipeline' must be a string"),
            (json!({"limit": "7"}), "'limit' must be a number"),
            (json!({"notify": "yes"}), "'notify' must be a boolean"),
            (json!({"pipeline": null}), "'pipeline' must be a string"),
        ] {
            let e = validate(&p, &bad).unwrap_err();
            assert!(e.is(Code::InvalidSettings), "{bad}");
            assert!(e.message().contains(named), "{bad}: {}", e.message());
        }
    }

    #[test]
    fn forms_become_typed_settings_and_bad_json_says_where() {
        let p = provider(vec![
            SettingField::new("pipeline", FieldType::String, "Pipeline"),
            SettingField::new("limit", FieldType::Number, "Limit"),
            SettingField::new("notify", FieldType::Boolean, "Notify"),
        ]);
        let form = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (format!("{FORM_PREFIX}{k}"), v.to_string()))
                .collect()
        };
        assert_eq!(
            from_form(
                &p,
                &form(&[("pipeline", " p1 "), ("limit", "3"), ("notify", "true")])
            )
            .unwrap(),
            json!({"pipeline": "p1", "limit": 3, "notify": true})
        );
        assert_eq!(
            from_form(&p, &form(&[("pipeline", ""), ("limit", "")])).unwrap(),
            json!({"notify": false})
        );
        let e = from_form(&p, &form(&[("limit", "three")])).unwrap_err();
        assert!(e.message().contains("Limit must be a number"), "{e:?}");
        // An account's form: a yes/no left empty is the provider's.
        assert_eq!(
            from_account_form(&p, &form(&[("pipeline", ""), ("notify", "")])).unwrap(),
            json!({})
        );
        assert_eq!(
            from_account_form(&p, &form(&[("notify", "false")])).unwrap(),
            json!({"notify": false})
        );
        let e = from_account_form(&p, &form(&[("notify", "maybe")])).unwrap_err();
        assert!(e.message().contains("Notify is yes, no"), "{e:?}");
    }
}

/// A tenant's settings for one account of a provider, as the API gives them.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[schema(as = AccountIntegration)]
pub struct AccountSettingsView {
    pub provider: String,
    /// The provider's id of the account.
    pub account: String,
    /// The account's own settings (`{}` when none): they override the
    /// provider's, key by key.
    #[schema(value_type = Object)]
    pub settings: Value,
    /// What applies to the account: the provider's settings with the
    /// account's own over them.
    #[schema(value_type = Object)]
    pub effective: Value,
    /// When the account's own settings were last changed; null when never.
    #[schema(format = DateTime)]
    pub updated_at: Option<String>,
}

/// The provider's settings with the account's own over them, key by key.
pub fn effective(provider_settings: &str, account_settings: Option<&str>) -> Value {
    let mut merged = match parse(provider_settings) {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    if let Some(Value::Object(own)) = account_settings.map(parse) {
        merged.extend(own);
    }
    Value::Object(merged)
}

/// The effective settings of the tenant's `account` of `provider`, read
/// within the caller's database work.
pub fn effective_of(
    c: &mut DbConn,
    tenant_id: &TenantId,
    provider: &ProviderKey,
    account: &AccountId,
) -> diesel::QueryResult<Value> {
    let shared = IntegrationSetting::find(c, tenant_id, provider)?;
    let own = AccountSetting::find(c, tenant_id, provider, account)?;
    Ok(effective(
        shared.as_ref().map_or(NO_SETTINGS, |r| r.settings.as_str()),
        own.as_ref().map(|r| r.settings.as_str()),
    ))
}

/// The effective settings of the tenant's `account` of `provider`.
pub async fn effective_for(
    app: &App,
    tenant_id: &TenantId,
    provider: &ProviderKey,
    account: &AccountId,
) -> AppResult<Value> {
    let (t, p, a) = (tenant_id.clone(), provider.clone(), account.clone());
    app.db(move |c| Ok(effective_of(c, &t, &p, &a)?)).await
}

fn account_view(
    c: &mut DbConn,
    tenant_id: &TenantId,
    provider: &ProviderKey,
    account: &AccountId,
) -> diesel::QueryResult<AccountSettingsView> {
    let own = AccountSetting::find(c, tenant_id, provider, account)?;
    Ok(AccountSettingsView {
        provider: provider.to_string(),
        account: account.to_string(),
        settings: parse(own.as_ref().map_or(NO_SETTINGS, |r| r.settings.as_str())),
        effective: effective_of(c, tenant_id, provider, account)?,
        updated_at: own.map(|r| {
            r.updated_at
                .and_utc()
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        }),
    })
}

/// The tenant's settings for one account of `provider`.
pub async fn load_account(
    app: &App,
    tenant_id: &TenantId,
    provider: &Provider,
    account: &AccountId,
) -> AppResult<AccountSettingsView> {
    let (t, p, a) = (tenant_id.clone(), provider.key.clone(), account.clone());
    app.db(move |c| Ok(account_view(c, &t, &p, &a)?)).await
}

/// Sets the tenant's own settings for one account of `provider` (checked by
/// [`validate`] first, so a refusal changes nothing; `{}` removes them).
/// A change is recorded as `settings_changed` on the account's connection,
/// with its webhook, naming the account.
pub async fn save_account(
    app: &App,
    tenant_id: &TenantId,
    provider: &Provider,
    account: &AccountId,
    settings: &Value,
    actor: &Actor,
) -> AppResult<AccountSettingsView> {
    let text = validate(provider, settings)?;
    let (t, p, a, who) = (
        tenant_id.clone(),
        provider.key.clone(),
        account.clone(),
        actor.clone(),
    );
    let notify = app.settings.webhook.is_some();
    let view = app
        .db(move |c| {
            c.transaction(|c| {
                // Before the read of what was there (SQLite: see lock_for_write).
                crate::db::lock_for_write(c, &format!("settings {t} {p} {a}"))?;
                let before = AccountSetting::save(c, &t, &p, &a, &text)?;
                if before != text {
                    let connection = Connection::find(c, &t, &p, &a)?;
                    let detail = format!("account {a}");
                    crate::db::models::webhook::record(
                        c,
                        notify,
                        &NewEvent {
                            tenant_id: &t,
                            connection_id: connection.as_ref().map(|row| &row.id),
                            provider: &p,
                            kind: EventKind::SettingsChanged,
                            actor: &who,
                            detail: Some(&detail),
                        },
                    )?;
                    // The token API serves the settings with the token.
                    crate::db::listen::notify_changed(c, &t, &p)?;
                }
                Ok(account_view(c, &t, &p, &a)?)
            })
        })
        .await?;
    app.tokens.forget(tenant_id, &provider.key);
    log::info!(
        "account settings saved tenant={tenant_id} provider={} account={account} actor={actor}",
        provider.key
    );
    Ok(view)
}
