//! Connect links: a single-use link to connect a provider without signing in.

use super::errors::{DatabaseUnreachable, NoValidKey, OtherTenant};
use super::params::TenantPath;
use super::rights::ForTenant;
use crate::app::App;
use crate::connections::links;
use crate::error::{AppResult, ErrorBody};
use crate::ids::Tags;
use crate::web::http::{no_store, rfc3339};
use actix_web::{post, web, HttpResponse};

#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct LinkRequest {
    /// The provider to connect.
    provider: String,
    /// Seconds the link stays valid (default 900).
    #[schema(minimum = 60, maximum = 86400)]
    expires_in: Option<i64>,
    /// The person the link is for: shown on the link's page.
    #[schema(format = Email, max_length = 254)]
    email: Option<String>,
    /// The CRM's tags (a conversation id, a user id): stored with the
    /// connection and echoed in its events, and in `connect_failed`. A flat
    /// object of at most 16 keys (1 to 64 characters), each a string of at
    /// most 256 characters, a number or a boolean; at most 2 KiB as JSON.
    #[schema(value_type = Option<Object>, example = json!({"conversation": "c-42"}))]
    tags: Option<serde_json::Value>,
}

/// A connect link.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct LinkBody<'a> {
    /// The link to send: whoever opens it may connect the provider for the
    /// tenant. A secret until used.
    url: &'a str,
    provider: &'a str,
    #[schema(format = DateTime)]
    expires_at: String,
}

/// A single-use connect link
///
/// Lets a person connect a provider for the tenant without signing in.
#[utoipa::path(
    params(TenantPath),
    request_body = LinkRequest,
    responses(
        (status = 201, description = "The link", body = LinkBody),
        (status = 400, description = "An invalid body (`invalid_tags`: tags that are not a small flat object)", body = ErrorBody),
        NoValidKey,
        OtherTenant,
        (status = 404, description = "No such tenant or provider", body = ErrorBody),
        (status = 409, description = "`provider_disabled`: the tenant switched the provider off", body = ErrorBody),
        DatabaseUnreachable,
    ),
    security(("apiKey" = []))
)]
#[post("/tenants/{tenant}/connect-links")]
pub(super) async fn connect_link(
    state: web::Data<App>,
    target: ForTenant,
    body: web::Json<LinkRequest>,
) -> AppResult<HttpResponse> {
    let tags = body.tags.as_ref().map(Tags::parse).transpose()?;
    let provider = state.enabled_provider(&body.provider)?;
    let options = links::LinkOptions {
        ttl_secs: body.expires_in.unwrap_or(links::DEFAULT_TTL_SECS),
        email: body.email.as_deref(),
        tags,
    };
    let link = links::issue(
        &state,
        target.tenant.clone(),
        &provider,
        options,
        &target.actor(),
    )
    .await?;
    Ok(no_store(HttpResponse::Created().json(LinkBody {
        url: link.url.expose(),
        provider: &provider.key,
        expires_at: rfc3339(link.expires_at),
    })))
}
