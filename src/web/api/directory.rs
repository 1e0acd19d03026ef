//! The directory: connections found across tenants.

use super::errors::{DatabaseUnreachable, NoValidKey};
use super::rights::{DirectoryRead, Scoped};
use crate::app::App;
use crate::connections::directory;
use crate::connections::status;
use crate::error::{AppResult, ErrorBody};
use crate::web::http::{no_store, query_pairs, rfc3339};
use actix_web::{get, web, HttpRequest, HttpResponse};

/// The filters of `GET /connections`, for the document only: the handler
/// reads the query string itself, because any key other than these names a
/// metadata field.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct DirectoryQuery {
    /// Only this tenant's connections (the CRM's external id). A key limited
    /// to one tenant sees only that tenant's, and naming another is a 403.
    #[param(pattern = r"^[A-Za-z0-9._:-]{1,128}$")]
    tenant: Option<String>,
    /// Only this provider's connections.
    #[param(pattern = r"^[a-z][a-z0-9_-]{0,31}$")]
    provider: Option<String>,
    /// Only connections of this provider account id (e.g. an agency's
    /// location id).
    #[param(min_length = 1, max_length = 256)]
    account: Option<String>,
    /// Only connections in one of these statuses, separated by commas
    /// (`needs_reconnect,error`: those needing attention).
    #[param(pattern = r"^(connected|needs_reconnect|error)(,(connected|needs_reconnect|error))*$")]
    status: Option<String>,
    /// At most this many connections (default 100); `truncated` says
    /// whether more matched.
    #[param(minimum = 1, maximum = 1000, default = 100)]
    limit: Option<i64>,
}

/// One connection found, with its tenant.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct FoundConnection {
    /// The CRM's external id of the tenant holding it.
    tenant: String,
    provider: String,
    account: status::AccountRef,
    status: status::PublicStatus,
    /// Whether it is its tenant's default account of the provider.
    default: bool,
    #[schema(format = DateTime)]
    expires_at: Option<String>,
    #[schema(format = DateTime)]
    last_refreshed_at: Option<String>,
    /// When the refresh token lapses, where the provider documents it.
    #[schema(format = DateTime)]
    lapses_at: Option<String>,
    last_error: Option<String>,
}

impl FoundConnection {
    fn of(found: directory::Listed) -> FoundConnection {
        let row = found.connection;
        FoundConnection {
            tenant: found.tenant.to_string(),
            provider: row.provider.to_string(),
            status: status::public_status(Some(&row)),
            default: row.is_default,
            expires_at: row.expires_at.map(rfc3339),
            last_refreshed_at: row.last_refreshed_at.map(rfc3339),
            lapses_at: row.refresh_expires_at.map(rfc3339),
            last_error: row.last_error,
            account: status::AccountRef {
                id: row.account_id,
                name: row.account_name,
            },
        }
    }
}

/// `{"connections": [...], "truncated": bool}`.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct FoundConnections {
    /// In tenant, provider and account order.
    connections: Vec<FoundConnection>,
    /// More connections matched than `limit`: narrow the filters.
    truncated: bool,
}

/// Find connections across tenants
///
/// Which tenant owns a provider account (`?provider=acme&account=acct_123`,
/// or by a metadata field: `?siteId=site_123`), and which connections need
/// attention (`?status=needs_reconnect,error`). Only connections holding
/// tokens are listed. Any query key other than `tenant`, `provider`,
/// `account`, `status` and `limit` names a metadata field (a letter or `_`,
/// then up to 63 letters, digits, `_`, `.` or `-`; at most 8 of them) whose
/// value must equal the given one (1 to 256 characters). A key for all
/// tenants sees every tenant's connections; a key limited to one tenant
/// sees only that tenant's.
#[utoipa::path(
    params(DirectoryQuery),
    responses(
        (status = 200, description = "The connections found", body = FoundConnections),
        (status = 400, description = "A malformed filter", body = ErrorBody),
        NoValidKey,
        (status = 403, description = "`tenant` names another tenant than the key's", body = ErrorBody),
        (status = 404, description = "No such tenant or provider", body = ErrorBody),
        DatabaseUnreachable,
    ),
    security(("apiKey" = ["directory:read"]))
)]
#[get("/connections")]
pub(super) async fn find_connections(
    req: HttpRequest,
    state: web::Data<App>,
    caller: Scoped<DirectoryRead>,
) -> AppResult<HttpResponse> {
    let mut filter = directory::Filter::from_query(query_pairs(req.query_string())?)?;
    if let Some(p) = &filter.provider {
        caller.caller.may_use(p.as_str())?;
    }
    filter.visible_providers = caller.visible_providers();
    let scope = caller.caller.directory_scope();
    let catalogue = state.providers.clone();
    let listing = state
        .db(move |c| directory::find(c, &catalogue, &scope, &filter))
        .await?;
    Ok(no_store(
        HttpResponse::Ok().json(FoundConnections {
            connections: listing
                .connections
                .into_iter()
                .map(FoundConnection::of)
                .collect(),
            truncated: listing.truncated,
        }),
    ))
}
