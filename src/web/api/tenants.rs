//! Tenants: create or rename, and remove with everything they had.

use super::errors::{DatabaseUnreachable, NoValidKey, NotAdminForTenant};
use super::params::TenantPath;
use super::rights::{AllTenantsAdminKey, ProvisionTarget, Removing};
use crate::app::App;
use crate::db::models::tenant::Tenant;
use crate::error::{AppResult, ErrorBody};
use crate::web::http::no_store;
use actix_web::{delete, put, web, HttpResponse};

#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ProvisionRequest {
    /// The tenant's display name.
    #[schema(max_length = 200)]
    name: String,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
struct Provisioned {
    tenant: String,
    name: String,
    /// Whether the tenant is new (201) rather than renamed (200).
    created: bool,
}

/// Create or rename a tenant (admin keys only)
#[utoipa::path(
    params(TenantPath),
    request_body = ProvisionRequest,
    responses(
        (status = 200, description = "Renamed (or unchanged)", body = Provisioned),
        (status = 201, description = "Created", body = Provisioned),
        (status = 400, description = "An invalid tenant id or body", body = ErrorBody),
        NoValidKey,
        NotAdminForTenant,
        DatabaseUnreachable,
    ),
    security(("apiKey" = ["admin"]))
)]
#[put("/tenants/{tenant}")]
pub(super) async fn provision(
    state: web::Data<App>,
    target: ProvisionTarget,
    body: web::Json<ProvisionRequest>,
) -> AppResult<HttpResponse> {
    let ext = target.external_id;
    let name = body.into_inner().name;
    let (tenant, created) = state.db(move |c| Tenant::provision(c, &ext, &name)).await?;
    let body = Provisioned {
        tenant: tenant.external_id.to_string(),
        name: tenant.name,
        created,
    };
    Ok(if created {
        HttpResponse::Created().json(body)
    } else {
        HttpResponse::Ok().json(body)
    })
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
// A misspelt `dry_run` must not turn a dry run into a removal.
#[serde(deny_unknown_fields)]
struct RemoveQuery {
    /// Only say what would be revoked and erased; change nothing.
    #[param(default = false)]
    dry_run: Option<bool>,
}

/// Remove a tenant and everything it had (admin keys for all tenants only)
///
/// Revokes each connection holding tokens at its provider where the
/// provider offers revocation (a failure is reported, not fatal), then
/// erases, in one transaction, the tenant's connections and tokens,
/// admins, connect links, OAuth states, events, integration settings and
/// API keys limited to it,
/// and the tenant. The answer says what was done; with `dry_run=true`, what
/// would be, and nothing changes.
#[utoipa::path(
    params(TenantPath, RemoveQuery),
    responses(
        (status = 200, description = "What was (or would be) done", body = crate::offboarding::Removal),
        (status = 400, description = "An invalid tenant id or query", body = ErrorBody),
        NoValidKey,
        (status = 403, description = "Not an admin key for all tenants", body = ErrorBody),
        (status = 404, description = "No such tenant", body = ErrorBody),
        DatabaseUnreachable,
    ),
    security(("apiKey" = ["admin"]))
)]
#[delete("/tenants/{tenant}")]
pub(super) async fn remove_tenant(
    state: web::Data<App>,
    key: AllTenantsAdminKey<Removing>,
    path: web::Path<TenantPath>,
    query: web::Query<RemoveQuery>,
) -> AppResult<HttpResponse> {
    let removal = crate::offboarding::remove(
        &state,
        &path.tenant,
        query.dry_run.unwrap_or(false),
        &key.caller.actor(),
    )
    .await?;
    Ok(no_store(HttpResponse::Ok().json(removal)))
}
