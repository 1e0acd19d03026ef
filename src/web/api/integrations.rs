//! A tenant's integration settings for a provider: enabled, and settings.

use super::errors::{DatabaseUnreachable, NoValidKey, OtherTenant};
use super::params::ConnectionPath;
use super::rights::{ConnectionsWrite, ForConnection, Scoped, StatusRead};
use crate::app::App;
use crate::connections::integration::{self, AccountSettingsView, IntegrationView};
use crate::error::{AppResult, ErrorBody};
use crate::ids::AccountId;
use crate::web::http::no_store;
use actix_web::{get, put, web, HttpResponse};

/// The largest body `PUT .../integrations/{provider}` reads: room for 64 KiB
/// of settings sent with whitespace.
pub(super) const SETTINGS_BODY_LIMIT: usize = 4 * integration::MAX_SETTINGS_BYTES;

/// The tenant's integration settings for a provider
///
/// Whether the tenant uses the provider, and its settings (a JSON object).
/// A pair never written answers the defaults: enabled, `{}`, `updated_at`
/// null. `schema` lists the fields the provider's settings may have.
#[utoipa::path(
    params(ConnectionPath),
    responses(
        (status = 200, description = "The integration settings", body = IntegrationView),
        NoValidKey,
        OtherTenant,
        (status = 404, description = "No such tenant or enabled provider", body = ErrorBody),
        DatabaseUnreachable,
    ),
    security(("apiKey" = ["status:read"]))
)]
#[get("/{provider}")]
pub(super) async fn get_integration(
    state: web::Data<App>,
    target: ForConnection<Scoped<StatusRead>>,
) -> AppResult<HttpResponse> {
    let ForConnection {
        tenant: tenant_id,
        provider,
        ..
    } = target;
    let view = integration::load(&state, &tenant_id, &provider).await?;
    Ok(no_store(HttpResponse::Ok().json(view)))
}

#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct IntegrationRequest {
    /// false switches the provider off for the tenant: hidden from its
    /// dashboard, and its token API and proxy answer 409 `provider_disabled`.
    enabled: bool,
    /// A JSON object of at most 64 KiB serialised; with a provider schema,
    /// only its fields, each of its type.
    #[schema(value_type = Object)]
    settings: serde_json::Value,
}

/// Set the tenant's integration settings for a provider
///
/// Replaces both `enabled` and `settings`. Each change is recorded as an
/// event (`integration_enabled`, `integration_disabled`,
/// `settings_changed`) and notified by webhook; a refusal changes nothing.
#[utoipa::path(
    params(ConnectionPath),
    request_body = IntegrationRequest,
    responses(
        (status = 200, description = "The integration settings afterwards", body = IntegrationView),
        (status = 400, description = "`invalid_json` (a wrong type or a missing field), `invalid_settings` (not an object, a field the schema does not have, or of the wrong type), `settings_too_large` (over 64 KiB)", body = ErrorBody),
        NoValidKey,
        OtherTenant,
        (status = 404, description = "No such tenant or enabled provider", body = ErrorBody),
        (status = 409, description = "`concurrent_update`: changed by another request at the same moment", body = ErrorBody),
        DatabaseUnreachable,
    ),
    security(("apiKey" = ["connections:write"]))
)]
#[put("/{provider}")]
pub(super) async fn set_integration(
    state: web::Data<App>,
    target: ForConnection<Scoped<ConnectionsWrite>>,
    body: web::Json<IntegrationRequest>,
) -> AppResult<HttpResponse> {
    let ForConnection {
        key: caller,
        tenant: tenant_id,
        provider,
    } = target;
    let view = integration::save(
        &state,
        &tenant_id,
        &provider,
        Some(body.enabled),
        Some(&body.settings),
        &caller.actor(),
    )
    .await?;
    Ok(no_store(HttpResponse::Ok().json(view)))
}

/// `{tenant}/integrations/{provider}/accounts/{account}`.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
struct AccountSettingsPath {
    /// The CRM's external id of the tenant.
    #[param(pattern = r"^[A-Za-z0-9._:-]{1,128}$")]
    #[allow(dead_code)]
    tenant: String,
    /// A provider's key.
    #[param(pattern = r"^[a-z][a-z0-9_-]{0,31}$")]
    #[allow(dead_code)]
    provider: String,
    /// The provider's id of the account (a GoHighLevel location id); it
    /// need not be connected yet.
    #[param(min_length = 1, max_length = 256)]
    account: String,
}

/// The tenant's settings for one account of a provider
///
/// The account's own settings (`{}` when none) and what applies to it:
/// the provider's settings with the account's over them, key by key.
#[utoipa::path(
    params(AccountSettingsPath),
    responses(
        (status = 200, description = "The account's settings", body = AccountSettingsView),
        (status = 400, description = "`invalid_account`", body = ErrorBody),
        NoValidKey,
        OtherTenant,
        (status = 404, description = "No such tenant or enabled provider", body = ErrorBody),
        DatabaseUnreachable,
    ),
    security(("apiKey" = ["status:read"]))
)]
#[get("/{provider}/accounts/{account}")]
pub(super) async fn get_account_settings(
    state: web::Data<App>,
    target: ForConnection<Scoped<StatusRead>>,
    path: web::Path<AccountSettingsPath>,
) -> AppResult<HttpResponse> {
    let account = AccountId::parse(&path.account)?;
    let view =
        integration::load_account(&state, &target.tenant, &target.provider, &account).await?;
    Ok(no_store(HttpResponse::Ok().json(view)))
}

#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct AccountSettingsRequest {
    /// A JSON object checked like the provider's settings (its schema,
    /// 64 KiB); `{}` removes the account's own settings.
    #[schema(value_type = Object)]
    settings: serde_json::Value,
}

/// Set the tenant's settings for one account of a provider
///
/// Replaces the account's own settings; they override the provider's for
/// that account (a GoHighLevel location's own pipeline). A change is
/// recorded as `settings_changed` naming the account; a refusal changes
/// nothing.
#[utoipa::path(
    params(AccountSettingsPath),
    request_body = AccountSettingsRequest,
    responses(
        (status = 200, description = "The account's settings afterwards", body = AccountSettingsView),
        (status = 400, description = "`invalid_account`, `invalid_json`, `invalid_settings` or `settings_too_large`", body = ErrorBody),
        NoValidKey,
        OtherTenant,
        (status = 404, description = "No such tenant or enabled provider", body = ErrorBody),
        DatabaseUnreachable,
    ),
    security(("apiKey" = ["connections:write"]))
)]
#[put("/{provider}/accounts/{account}")]
pub(super) async fn set_account_settings(
    state: web::Data<App>,
    target: ForConnection<Scoped<ConnectionsWrite>>,
    path: web::Path<AccountSettingsPath>,
    body: web::Json<AccountSettingsRequest>,
) -> AppResult<HttpResponse> {
    let account = AccountId::parse(&path.account)?;
    let ForConnection {
        key: caller,
        tenant: tenant_id,
        provider,
    } = target;
    let view = integration::save_account(
        &state,
        &tenant_id,
        &provider,
        &account,
        &body.settings,
        &caller.actor(),
    )
    .await?;
    Ok(no_store(HttpResponse::Ok().json(view)))
}
