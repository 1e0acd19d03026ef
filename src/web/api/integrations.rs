//! A tenant's integration settings for a provider: enabled, and settings.

use super::errors::{DatabaseUnreachable, NoValidKey, OtherTenant};
use super::params::ConnectionPath;
use super::rights::ForConnection;
use crate::app::App;
use crate::connections::integration::{self, IntegrationView};
use crate::error::{AppResult, ErrorBody};
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
    security(("apiKey" = []))
)]
#[get("/{provider}")]
pub(super) async fn get_integration(
    state: web::Data<App>,
    target: ForConnection,
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
    security(("apiKey" = []))
)]
#[put("/{provider}")]
pub(super) async fn set_integration(
    state: web::Data<App>,
    target: ForConnection,
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
