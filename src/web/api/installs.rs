//! Unclaimed provider-initiated installs, and their assignment to a tenant.

use super::errors::{DatabaseUnreachable, LimitedToOneTenant, NoValidKey};
use super::rights::{AllTenantsAdminKey, AllTenantsKey, Assigning, DirectoryRead};
use crate::app::App;
use crate::connections::installs;
use crate::connections::status::{self, StatusView};
use crate::error::{AppResult, ErrorBody};
use crate::web::http::{no_store, rfc3339};
use actix_web::{get, post, web, HttpResponse};

/// An unclaimed provider-initiated install (never its tokens).
#[derive(serde::Serialize, utoipa::ToSchema)]
struct InstallBody {
    id: String,
    provider: String,
    /// The provider's account (a GoHighLevel location).
    account: status::AccountRef,
    #[schema(format = DateTime)]
    created_at: String,
    /// When it is revoked and dropped if nobody claims it.
    #[schema(format = DateTime)]
    expires_at: String,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
struct InstallList {
    installs: Vec<InstallBody>,
}

/// Unclaimed installs (all-tenants keys only)
///
/// Installs started at the provider (GoHighLevel's Marketplace) whose
/// account no tenant holds, newest first. Each is held for a day.
#[utoipa::path(
    responses(
        (status = 200, description = "The unclaimed installs", body = InstallList),
        NoValidKey,
        LimitedToOneTenant,
        DatabaseUnreachable,
    ),
    security(("apiKey" = ["directory:read"]))
)]
#[get("/installs")]
pub(super) async fn list_installs(
    state: web::Data<App>,
    key: AllTenantsKey<DirectoryRead>,
) -> AppResult<HttpResponse> {
    let installs = installs::unclaimed(&state)
        .await?
        .into_iter()
        .filter(|p| key.caller.key.covers(p.provider.as_str()))
        .map(|p| InstallBody {
            account: status::AccountRef {
                id: p.account_id.clone(),
                name: p.account_name.clone(),
            },
            provider: p.provider.to_string(),
            created_at: rfc3339(p.created_at),
            expires_at: rfc3339(p.expires_at),
            id: p.id,
        })
        .collect();
    Ok(no_store(HttpResponse::Ok().json(InstallList { installs })))
}

/// `installs/{id}`.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
struct InstallPath {
    /// The install's id (from `GET /api/v1/installs`).
    #[param(max_length = 64)]
    id: String,
}

#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct AssignRequest {
    /// The CRM's external id of the tenant that gets the install.
    #[schema(pattern = r"^[A-Za-z0-9._:-]{1,128}$")]
    tenant: String,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
struct Assigned {
    tenant: String,
    /// The tenant's connection made from the install.
    connection: StatusView,
}

/// Assign an unclaimed install to a tenant (all-tenants admin keys only)
///
/// Its grant becomes the tenant's connection, with a `connected` (or
/// `reconnected`) event. 409 `account_bound_elsewhere` when another tenant
/// holds the account meanwhile.
#[utoipa::path(
    params(InstallPath),
    request_body = AssignRequest,
    responses(
        (status = 200, description = "Assigned", body = Assigned),
        (status = 400, description = "An invalid body", body = ErrorBody),
        NoValidKey,
        (status = 403, description = "Not an admin key for all tenants", body = ErrorBody),
        (status = 404, description = "`unknown_install` (claimed, replaced or expired), or no such tenant", body = ErrorBody),
        (status = 409, description = "`account_bound_elsewhere`", body = ErrorBody),
        DatabaseUnreachable,
    ),
    security(("apiKey" = ["admin"]))
)]
#[post("/installs/{id}/assign")]
pub(super) async fn assign_install(
    state: web::Data<App>,
    key: AllTenantsAdminKey<Assigning>,
    path: web::Path<InstallPath>,
    body: web::Json<AssignRequest>,
) -> AppResult<HttpResponse> {
    if path.id.len() > 64 {
        return Err(installs::unknown_install());
    }
    // A key for all tenants may name any: only whether it exists is checked.
    let tenant_id = key.caller.tenant(&state, &body.tenant).await?;
    let connection = installs::claim(
        &state,
        None,
        path.into_inner().id,
        &tenant_id,
        &key.caller.actor(),
    )
    .await?;
    let provider = state.enabled_provider(&connection.provider)?;
    Ok(no_store(HttpResponse::Ok().json(Assigned {
        tenant: body.into_inner().tenant,
        connection: StatusView::of(&provider, Some(&connection)),
    })))
}
