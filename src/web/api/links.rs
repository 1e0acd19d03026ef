//! Connect links (a single-use link to connect a provider without signing
//! in) and connect sessions (one token for the Connect buttons of a page).

use super::errors::{DatabaseUnreachable, NoValidKey, OtherTenant};
use super::params::TenantPath;
use super::rights::{ForTenant, Links, Scoped};
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
    security(("apiKey" = ["links"]))
)]
#[post("/tenants/{tenant}/connect-links")]
pub(super) async fn connect_link(
    state: web::Data<App>,
    target: ForTenant<Scoped<Links>>,
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

#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct SessionRequest {
    /// The providers the session may connect (default: every enabled
    /// provider connected with a link).
    #[schema(max_items = 64)]
    providers: Option<Vec<String>>,
    /// Seconds the session stays valid (default 1800).
    #[schema(minimum = 60, maximum = 86400)]
    expires_in: Option<i64>,
    /// Connects it allows (default 10); each click that goes on to the
    /// provider spends one.
    #[schema(minimum = 1, maximum = 100)]
    uses: Option<i32>,
    /// The person it is for: shown on its page.
    #[schema(format = Email, max_length = 254)]
    email: Option<String>,
    /// The CRM's tags, as on a connect link: stored with each connection
    /// and echoed in its events.
    #[schema(value_type = Option<Object>, example = json!({"user": "u-7"}))]
    tags: Option<serde_json::Value>,
}

/// A connect session.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct SessionBody<'a> {
    /// The session's token for `TetherConnect.open({session, provider})`
    /// on the CRM's page: whoever holds it may connect the listed
    /// providers for the tenant until it expires. A secret.
    token: &'a str,
    /// The providers it may connect.
    providers: &'a [String],
    /// Connects it allows.
    uses: i32,
    #[schema(format = DateTime)]
    expires_at: String,
}

/// A connect session for the CRM's own page
///
/// One token, fetched when the page loads, for every Connect button on it:
/// valid for minutes, for the listed providers, for a number of connects.
/// Single-use links stay for messages.
#[utoipa::path(
    params(TenantPath),
    request_body = SessionRequest,
    responses(
        (status = 201, description = "The session", body = SessionBody),
        (status = 400, description = "An invalid body (`invalid_expires_in`, `invalid_request` for `uses`, `invalid_tags`, `unsupported_flow`: a provider connected from its app install)", body = ErrorBody),
        NoValidKey,
        OtherTenant,
        (status = 404, description = "No such tenant or provider", body = ErrorBody),
        DatabaseUnreachable,
    ),
    security(("apiKey" = ["links"]))
)]
#[post("/tenants/{tenant}/connect-sessions")]
pub(super) async fn connect_session(
    state: web::Data<App>,
    target: ForTenant<Scoped<Links>>,
    body: web::Json<SessionRequest>,
) -> AppResult<HttpResponse> {
    let body = body.into_inner();
    let tags = body.tags.as_ref().map(Tags::parse).transpose()?;
    let options = links::SessionOptions {
        providers: body.providers.unwrap_or_default(),
        ttl_secs: body.expires_in.unwrap_or(links::SESSION_DEFAULT_TTL_SECS),
        uses: body.uses.unwrap_or(links::SESSION_DEFAULT_USES),
        email: body.email.as_deref(),
        tags,
    };
    let session =
        links::open_session(&state, target.tenant.clone(), options, &target.actor()).await?;
    Ok(no_store(HttpResponse::Created().json(SessionBody {
        token: session.token.expose(),
        providers: &session.providers,
        uses: session.uses,
        expires_at: rfc3339(session.expires_at),
    })))
}
