//! The internal JSON API for the CRM's services, under `/api/v1`, behind API
//! keys (`Authorization: Bearer tth_...`). `{tenant}` is the CRM's external id.

use super::http::{account_param, no_store, query_pairs};
use crate::app::App;
use crate::connections::integration::{self, IntegrationView};
use crate::connections::status::{self, StatusView};
use crate::connections::{
    agency, directory, import as importing, installs, links, manage, proxy as proxying,
};
use crate::db::models::api_key::ApiKey;
use crate::db::models::event::Actor;
use crate::db::models::tenant::Tenant;
use crate::error::{AppError, AppResult, Code, ErrorBody};
use crate::ids::{ExternalTenantId, TenantId};
use crate::providers::Provider;
use crate::refresh::cache::Opened;
use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{delete, get, post, put, route, web, FromRequest, HttpRequest, HttpResponse};
use futures_util::future::{ready, Either, LocalBoxFuture, Ready};
use std::sync::Arc;
use std::time::Instant;

/// The API's routes, and the OpenAPI document built from the same
/// registrations (`utoipa-actix-web`): a route cannot be served without
/// being documented, nor documented without being served.
pub fn routes(cfg: &mut web::ServiceConfig) {
    let json = |limit: usize| {
        web::JsonConfig::default()
            .limit(limit)
            .error_handler(|e, _| {
                AppError::bad_request(
                    Code::InvalidJson,
                    format!("the request body is not valid JSON: {e}"),
                )
                .into()
            })
    };
    let query = || {
        web::QueryConfig::default().error_handler(|e, _| {
            AppError::bad_request(Code::InvalidQuery, format!("invalid query parameters: {e}"))
                .into()
        })
    };
    let path = || {
        web::PathConfig::default().error_handler(|_, _| AppError::not_found("no such route").into())
    };
    // The hot route first: routes are tried in order.
    let api = utoipa_actix_web::scope("/api/v1")
        .app_data(json(64 * 1024))
        .app_data(query())
        .app_data(path())
        .service(token)
        .service(provision)
        .service(remove_tenant)
        .service(find_connections)
        .service(list)
        .service(provider_status)
        .service(disconnect)
        .service(refresh)
        .service(set_default)
        .service(locations)
        .service(import)
        .service(connect_link)
        // Settings may be 64 KiB themselves: their body may be larger than
        // that, so that an object over the cap gets its own answer.
        .service(
            utoipa_actix_web::scope("/tenants/{tenant}/integrations")
                .app_data(json(SETTINGS_BODY_LIMIT))
                .service(get_integration)
                .service(set_integration)
                .default_service(web::to(unrouted)),
        )
        .service(proxy)
        .service(list_installs)
        .service(assign_install)
        .service(openapi_document)
        .default_service(web::to(unrouted));
    cfg.app_data(web::Data::new(Document::of(&api)))
        .service(api);
}

/// The OpenAPI document of the routes above, with what the 405 answers need.
pub struct Document {
    json: bytes::Bytes,
    /// Each documented path, as a pattern, with the methods it takes.
    routes: Vec<(actix_web::dev::ResourceDef, String)>,
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Tether internal API",
        version = "1",
        description = "For the CRM's own services. Authenticate with `Authorization: Bearer <API key>` \
            (created with `tether api-key create`). `{tenant}` is the CRM's external id for the tenant. \
            Errors are `{\"error\": {\"code\", \"message\"}}`: 401 bad key, 403 key not allowed for \
            this tenant, 404 unknown tenant/provider/connection, 409 needs_reconnect, 503 refresh \
            temporarily failing (with Retry-After). A method a path does not take is a 405 with `Allow`."
    ),
    modifiers(&BearerKeys)
)]
struct Base;

struct BearerKeys;

impl utoipa::Modify for BearerKeys {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.description = Some("tth_... API key".to_string());
        doc.components
            .get_or_insert_with(Default::default)
            .add_security_scheme("apiKey", SecurityScheme::Http(scheme));
    }
}

impl Document {
    fn of<T>(api: &utoipa_actix_web::scope::Scope<T>) -> Document {
        use utoipa::OpenApi;
        use utoipa_actix_web::OpenApiFactory;
        let mut doc = Base::openapi();
        doc.paths.merge(api.paths());
        let mut schemas = Vec::new();
        api.schemas(&mut schemas);
        doc.components
            .get_or_insert_with(Default::default)
            .schemas
            .extend(schemas);
        let routes = doc
            .paths
            .paths
            .iter()
            .map(|(p, item)| {
                let methods = [
                    ("GET", &item.get),
                    ("PUT", &item.put),
                    ("POST", &item.post),
                    ("DELETE", &item.delete),
                    ("PATCH", &item.patch),
                    ("HEAD", &item.head),
                    ("OPTIONS", &item.options),
                ];
                let allow: Vec<&str> = methods
                    .iter()
                    .filter(|(_, op)| op.is_some())
                    .map(|(m, _)| *m)
                    .collect();
                // `{path}` is the proxy's tail: it spans segments.
                let pattern = p.replace("{path}", "{path:.*}");
                (actix_web::dev::ResourceDef::new(pattern), allow.join(", "))
            })
            .collect();
        let json = doc
            .to_pretty_json()
            .expect("the OpenAPI document serialises");
        Document {
            json: bytes::Bytes::from(json),
            routes,
        }
    }

    /// The methods a documented path takes, or `None` for an unknown path.
    fn allowed(&self, path: &str) -> Option<&str> {
        self.routes
            .iter()
            .find(|(def, _)| def.is_match(path))
            .map(|(_, allow)| allow.as_str())
    }
}

/// Anything under `/api/v1` that no route took: 405 (with `Allow`) for a
/// method a documented path does not take, else 404.
async fn unrouted(req: HttpRequest, doc: web::Data<Document>) -> HttpResponse {
    let err = match doc.allowed(req.path()) {
        Some(allow) => {
            let mut res =
                actix_web::ResponseError::error_response(&AppError::method_not_allowed(format!(
                    "{} does not take {}; it takes {allow}",
                    req.path(),
                    req.method()
                )));
            res.headers_mut().insert(
                header::ALLOW,
                header::HeaderValue::from_str(allow).expect("method names are ASCII"),
            );
            return res;
        }
        None => AppError::not_found("there is nothing at this address"),
    };
    actix_web::ResponseError::error_response(&err)
}

/// `{tenant}`: the CRM's own id for the tenant.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
struct TenantPath {
    /// The CRM's external id of the tenant.
    #[param(pattern = r"^[A-Za-z0-9._:-]{1,128}$")]
    tenant: String,
}

/// `{tenant}/connections/{provider}`.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
struct ConnectionPath {
    /// The CRM's external id of the tenant.
    #[param(pattern = r"^[A-Za-z0-9._:-]{1,128}$")]
    tenant: String,
    /// A provider's key (`gohighlevel`, `hubspot`, ...).
    #[param(pattern = r"^[a-z][a-z0-9_-]{0,31}$")]
    provider: String,
}

/// An authenticated internal caller.
pub struct ApiCaller {
    pub key: Arc<ApiKey>,
}

impl FromRequest for ApiCaller {
    type Error = actix_web::Error;
    type Future = Either<
        Ready<Result<Self, Self::Error>>,
        LocalBoxFuture<'static, Result<Self, Self::Error>>,
    >;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            // The scheme name is case-insensitive (RFC 9110 section 11.1).
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, key)| key.trim());
        let Some(presented) = presented else {
            return Either::Left(ready(Err(AppError::unauthorized(
                "send the API key as Authorization: Bearer <key>",
            )
            .into())));
        };
        let Some(state) = req.app_data::<web::Data<App>>().cloned() else {
            return Either::Left(ready(Err(AppError::internal("no app state").into())));
        };
        // A key validated moments ago needs no database, nor a task.
        let digest = crate::crypto::sha256(presented.as_bytes());
        if let Some(key) = state.api_cache.key(&digest) {
            return Either::Left(ready(Ok(ApiCaller { key })));
        }
        let presented = presented.to_string();
        Either::Right(Box::pin(async move {
            Ok(ApiCaller {
                key: authenticate(&state, digest, presented).await?,
            })
        }))
    }
}

/// Validates a key the cache does not hold (or no longer trusts).
async fn authenticate(state: &App, digest: [u8; 32], presented: String) -> AppResult<Arc<ApiKey>> {
    let key = match state.db(move |c| ApiKey::authenticate(c, &presented)).await {
        Ok(key) => Arc::new(key),
        Err(e) if e.is(Code::DatabaseUnavailable) => {
            return state.api_cache.key_while_away(&digest).ok_or(e)
        }
        Err(e) => return Err(e),
    };
    let due = state.api_cache.remember(digest, &key);
    if due {
        let id = key.id.clone();
        // Bookkeeping: a database that cannot take it now fails no request.
        if let Err(e) = state.db(move |c| Ok(ApiKey::touch(c, &id)?)).await {
            log::debug!("api key last_used_at not written: {}", e.message());
        }
    }
    Ok(key)
}

impl ApiCaller {
    /// The tenant this key may act for: 404 for an unknown tenant, 403 for
    /// another tenant than the key's (without saying whether it exists).
    async fn tenant(&self, state: &App, external_id: &str) -> AppResult<TenantId> {
        // The cache holds only ids that exist (so are well formed): a hit
        // needs no parsing.
        let id = match state.api_cache.tenant(external_id) {
            Some(id) => Some(id),
            None => {
                let ext = ExternalTenantId::parse(external_id)
                    .map_err(|_| AppError::not_found(format!("no tenant '{external_id}'")))?;
                match state
                    .db(move |c| Ok(Tenant::by_external_id(c, &ext)?))
                    .await
                {
                    Ok(found) => {
                        if let Some(t) = &found {
                            state.api_cache.remember_tenant(&t.external_id, &t.id);
                        }
                        found.map(|t| t.id)
                    }
                    // Only a tenant read before the outage; an unknown one
                    // cannot be told from a missing one now.
                    Err(e) if e.is(Code::DatabaseUnavailable) => {
                        Some(state.api_cache.tenant_while_away(external_id).ok_or(e)?)
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        match (&self.key.tenant_id, id) {
            (Some(own), Some(id)) if *own == id => Ok(id),
            (Some(_), _) => Err(AppError::forbidden(
                "this API key may not act for that tenant",
            )),
            (None, Some(id)) => Ok(id),
            (None, None) => Err(AppError::not_found(format!("no tenant '{external_id}'"))),
        }
    }

    /// The tenant (as [`ApiCaller::tenant`]) and the enabled provider of a
    /// `/tenants/{tenant}/connections/{provider}` route.
    async fn target(
        &self,
        state: &App,
        path: &ConnectionPath,
    ) -> AppResult<(TenantId, std::sync::Arc<Provider>)> {
        let tenant_id = self.tenant(state, &path.tenant).await?;
        Ok((tenant_id, state.enabled_provider(&path.provider)?))
    }

    fn actor(&self) -> Actor {
        Actor::ApiKey {
            name: self.key.name.clone(),
        }
    }
}

/// A UTC time as the API writes them: RFC 3339, whole seconds, `Z`.
fn rfc3339(t: chrono::NaiveDateTime) -> String {
    t.and_utc()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The `account` query parameter of the connection routes.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct AccountQuery {
    /// The provider's account id of one of the tenant's connected accounts
    /// (e.g. a GoHighLevel location id). Without it: the tenant's default
    /// account. An account that is not connected is a 404.
    #[param(min_length = 1, max_length = 256)]
    account: Option<String>,
}

/// `{"connections": [...]}`: one status per enabled provider.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct ConnectionList {
    connections: Vec<StatusView>,
}

/// Status of every enabled provider for the tenant
#[utoipa::path(
    params(TenantPath),
    responses(
        (status = 200, description = "One status per enabled provider", body = ConnectionList),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "The key may not act for this tenant", body = ErrorBody),
        (status = 404, description = "No such tenant", body = ErrorBody),
        (status = 503, description = "The database is unreachable", body = ErrorBody),
    ),
    security(("apiKey" = []))
)]
#[get("/tenants/{tenant}/connections")]
async fn list(
    state: web::Data<App>,
    caller: ApiCaller,
    path: web::Path<TenantPath>,
) -> AppResult<HttpResponse> {
    let tenant_id = caller.tenant(&state, &path.tenant).await?;
    let providers: Vec<_> = state
        .providers
        .all()
        .filter(|p| p.enabled())
        .cloned()
        .collect();
    let connections = state
        .db(move |c| {
            providers
                .iter()
                .map(|p| status::load(c, &tenant_id, p, None))
                .collect::<AppResult<Vec<_>>>()
        })
        .await?;
    Ok(no_store(
        HttpResponse::Ok().json(ConnectionList { connections }),
    ))
}

/// Status of one provider
///
/// Its default account, and the list of connected accounts; with `account`,
/// that account's status.
#[utoipa::path(
    params(ConnectionPath, AccountQuery),
    responses(
        (status = 200, description = "The status", body = StatusView),
        (status = 400, description = "An invalid `account`", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "The key may not act for this tenant", body = ErrorBody),
        (status = 404, description = "No such tenant, provider or account", body = ErrorBody),
        (status = 503, description = "The database is unreachable", body = ErrorBody),
    ),
    security(("apiKey" = []))
)]
#[get("/tenants/{tenant}/connections/{provider}")]
async fn provider_status(
    state: web::Data<App>,
    caller: ApiCaller,
    path: web::Path<ConnectionPath>,
    query: web::Query<AccountQuery>,
) -> AppResult<HttpResponse> {
    let account = account_param(query.account.as_deref())?.map(str::to_string);
    let (tenant_id, provider) = caller.target(&state, &path).await?;
    let doc = state
        .db(move |c| status::load(c, &tenant_id, &provider, account.as_deref()))
        .await?;
    Ok(no_store(HttpResponse::Ok().json(doc)))
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct TokenQuery {
    /// Seconds the token must still be valid for; a token expiring sooner is
    /// refreshed first.
    #[param(minimum = 0, maximum = 86400, default = 60)]
    min_ttl: Option<i64>,
    /// The provider's account id of one of the tenant's connected accounts.
    /// Without it: the tenant's default account.
    #[param(min_length = 1, max_length = 256)]
    account: Option<String>,
    /// GoHighLevel: a location of the tenant's agency (Company) connection.
    /// Its stored token, or one minted now from the agency's token (and
    /// stored as an account of its own). Not with `account`.
    #[param(min_length = 1, max_length = 64)]
    location: Option<String>,
}

/// The token API's answer.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[schema(as = Token)]
struct TokenBody<'a> {
    access_token: &'a str,
    token_type: &'a str,
    #[schema(format = DateTime)]
    expires_at: Option<String>,
    expires_in: Option<i64>,
    #[schema(value_type = Vec<String>)]
    scopes: &'a [String],
    /// Scopes the provider now asks for that this grant lacks: a person
    /// must reconnect to grant them.
    missing_scopes: Vec<String>,
    #[schema(value_type = Object)]
    metadata: &'a serde_json::Value,
    /// The account whose token this is.
    account: AccountBody<'a>,
    /// Headers every call to this provider's API must carry (GoHighLevel's
    /// `Version`), for callers that call the provider themselves.
    #[schema(value_type = std::collections::HashMap<String, String>)]
    api_headers: &'a std::collections::BTreeMap<String, String>,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
struct AccountBody<'a> {
    id: &'a str,
    name: Option<&'a str>,
}

impl<'a> TokenBody<'a> {
    fn of(opened: &'a Opened, provider: &'a Provider) -> TokenBody<'a> {
        let row = &opened.row;
        TokenBody {
            access_token: opened.tokens.access_token.expose(),
            token_type: &opened.tokens.token_type,
            expires_at: row.expires_at.map(rfc3339),
            expires_in: row
                .expires_at
                .map(|t| (t - crate::db::now()).num_seconds().max(0)),
            scopes: &opened.scopes,
            missing_scopes: status::missing_scopes(provider, &opened.scopes),
            metadata: &opened.metadata,
            account: AccountBody {
                id: &row.account_id,
                name: row.account_name.as_deref(),
            },
            api_headers: &provider.api_headers,
        }
    }
}

/// A valid access token
///
/// Of the default account (or of `account`); refreshed first when it expires
/// within `min_ttl`. Concurrent requests share one refresh. Never cached
/// (`Cache-Control: no-store`).
#[utoipa::path(
    params(ConnectionPath, TokenQuery),
    responses(
        (status = 200, description = "A valid access token", body = TokenBody),
        (status = 400, description = "An invalid `min_ttl` or `account`", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "The key may not act for this tenant", body = ErrorBody),
        (status = 404, description = "No such tenant, provider or connection (`not_connected`)", body = ErrorBody),
        (status = 409, description = "`needs_reconnect`: the provider revoked the grant; `provider_disabled`: the tenant switched the provider off; `location_unavailable`: the agency may not mint for that location", body = ErrorBody),
        (status = 502, description = "The provider refused Tether's credentials", body = ErrorBody),
        (status = 503, description = "A refresh is failing for now (see Retry-After), or this instance lacks the encryption key the connection is sealed with (`key_unavailable`: another instance serves it)", body = ErrorBody),
    ),
    security(("apiKey" = []))
)]
#[get("/tenants/{tenant}/connections/{provider}/token")]
async fn token(
    state: web::Data<App>,
    caller: ApiCaller,
    path: web::Path<ConnectionPath>,
    query: web::Query<TokenQuery>,
) -> AppResult<HttpResponse> {
    let started = Instant::now();
    let min_ttl = query.min_ttl.unwrap_or(60);
    if !(0..=86_400).contains(&min_ttl) {
        return Err(AppError::bad_request(
            Code::InvalidMinTtl,
            "min_ttl is a number of seconds from 0 to 86400",
        ));
    }
    let account = account_param(query.account.as_deref())?;
    let (tenant_id, provider) = caller.target(&state, &path).await?;
    let opened = match (&query.location, account) {
        (None, account) => {
            crate::refresh::fresh_token(&state, &tenant_id, &provider, account, min_ttl).await?
        }
        (Some(location), None) => {
            agency::location_token(&state, &tenant_id, &provider, location, min_ttl).await?
        }
        (Some(_), Some(_)) => {
            return Err(AppError::bad_request(
                Code::InvalidQuery,
                "name either an account or a location, not both",
            ))
        }
    };
    let body = TokenBody::of(&opened, &provider);
    state.metrics.token_api(started.elapsed().as_secs_f64());
    Ok(no_store(HttpResponse::Ok().json(body)))
}

/// `{"locations": [...]}`: an agency's locations.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct LocationList {
    locations: Vec<agency::Location>,
}

/// An agency's locations
///
/// GoHighLevel: the locations of the tenant's agency (Company) connection
/// and whether the app is installed in each (`GET /oauth/installedLocations`
/// with the agency's token, first 100), with whether the tenant holds a
/// token for it.
#[utoipa::path(
    params(ConnectionPath),
    responses(
        (status = 200, description = "The agency's locations", body = LocationList),
        (status = 400, description = "The provider has no locations", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "The key may not act for this tenant", body = ErrorBody),
        (status = 404, description = "No such tenant or provider, or no agency connection (`not_connected`)", body = ErrorBody),
        (status = 502, description = "The provider failed", body = ErrorBody),
        (status = 503, description = "The agency's token cannot be refreshed for now", body = ErrorBody),
    ),
    security(("apiKey" = []))
)]
#[get("/tenants/{tenant}/connections/{provider}/locations")]
async fn locations(
    state: web::Data<App>,
    caller: ApiCaller,
    path: web::Path<ConnectionPath>,
) -> AppResult<HttpResponse> {
    let (tenant_id, provider) = caller.target(&state, &path).await?;
    let locations = agency::installed_locations(&state, &tenant_id, &provider).await?;
    Ok(no_store(
        HttpResponse::Ok().json(LocationList { locations }),
    ))
}

/// Refresh now
///
/// The default account, or `account`; shared with any refresh under way.
#[utoipa::path(
    params(ConnectionPath, AccountQuery),
    responses(
        (status = 200, description = "The account's status after the refresh", body = StatusView),
        (status = 400, description = "An invalid `account`", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "The key may not act for this tenant", body = ErrorBody),
        (status = 404, description = "No such tenant, provider or connection", body = ErrorBody),
        (status = 409, description = "`needs_reconnect`, or the provider's tokens cannot be refreshed", body = ErrorBody),
        (status = 502, description = "The provider refused Tether's credentials", body = ErrorBody),
        (status = 503, description = "The refresh is failing for now; see Retry-After", body = ErrorBody),
    ),
    security(("apiKey" = []))
)]
#[post("/tenants/{tenant}/connections/{provider}/refresh")]
async fn refresh(
    state: web::Data<App>,
    caller: ApiCaller,
    path: web::Path<ConnectionPath>,
    query: web::Query<AccountQuery>,
) -> AppResult<HttpResponse> {
    let account = account_param(query.account.as_deref())?;
    let (tenant_id, provider) = caller.target(&state, &path).await?;
    let fresh = manage::refresh(&state, &tenant_id, &provider, account, &caller.actor()).await?;
    Ok(no_store(
        HttpResponse::Ok().json(StatusView::of(&provider, Some(&fresh))),
    ))
}

/// What a disconnect did.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct Disconnected {
    provider: String,
    /// The account that was disconnected.
    disconnected: String,
    /// The provider's status afterwards (its new default's).
    status: status::PublicStatus,
    /// The default account afterwards, if any is left.
    default: Option<String>,
    message: String,
}

/// Disconnect an account
///
/// The default without `account`: revoke at the provider where supported,
/// then erase its tokens. When the default goes, the earliest-connected
/// other account becomes the default; the answer names it, so that no caller
/// assumes the provider is gone while another account now serves it.
#[utoipa::path(
    params(ConnectionPath, AccountQuery),
    responses(
        (status = 200, description = "Disconnected", body = Disconnected),
        (status = 400, description = "An invalid `account`", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "The key may not act for this tenant", body = ErrorBody),
        (status = 404, description = "No such tenant, provider or connection", body = ErrorBody),
        (status = 503, description = "The database is unreachable", body = ErrorBody),
    ),
    security(("apiKey" = []))
)]
#[delete("/tenants/{tenant}/connections/{provider}")]
async fn disconnect(
    state: web::Data<App>,
    caller: ApiCaller,
    path: web::Path<ConnectionPath>,
    query: web::Query<AccountQuery>,
) -> AppResult<HttpResponse> {
    let account = account_param(query.account.as_deref())?;
    let (tenant_id, provider) = caller.target(&state, &path).await?;
    let done = manage::disconnect(&state, &tenant_id, &provider, account, &caller.actor()).await?;
    Ok(no_store(HttpResponse::Ok().json(Disconnected {
        provider: provider.key.to_string(),
        disconnected: done.account_id,
        status: status::public_status(done.default.as_ref()),
        default: done.default.as_ref().map(|d| d.account_id.clone()),
        message: done.message,
    })))
}

#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct DefaultRequest {
    /// The provider account id to serve when a caller names none.
    #[schema(min_length = 1, max_length = 256)]
    account: String,
}

/// Choose the tenant's default account of the provider
///
/// The one the token API, the proxy and the status serve when no account is
/// named. Refreshes never change it.
#[utoipa::path(
    params(ConnectionPath),
    request_body = DefaultRequest,
    responses(
        (status = 200, description = "The provider's status afterwards", body = StatusView),
        (status = 400, description = "An invalid body", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "The key may not act for this tenant", body = ErrorBody),
        (status = 404, description = "No such tenant, provider or account", body = ErrorBody),
        (status = 503, description = "The database is unreachable", body = ErrorBody),
    ),
    security(("apiKey" = []))
)]
#[put("/tenants/{tenant}/connections/{provider}/default")]
async fn set_default(
    state: web::Data<App>,
    caller: ApiCaller,
    path: web::Path<ConnectionPath>,
    body: web::Json<DefaultRequest>,
) -> AppResult<HttpResponse> {
    let account = account_param(Some(&body.account))?.unwrap_or_default();
    let (tenant_id, provider) = caller.target(&state, &path).await?;
    manage::choose_default(&state, &tenant_id, &provider, account, &caller.actor()).await?;
    let p = provider.clone();
    let doc = state
        .db(move |c| status::load(c, &tenant_id, &p, None))
        .await?;
    Ok(no_store(HttpResponse::Ok().json(doc)))
}

/// Tokens the CRM stored itself, to import (the request is read by
/// `connections::import`, which refuses unknown fields and repeats no value).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct ImportRequest {
    /// Visible ASCII, 1 to 8192 characters.
    #[schema(min_length = 1, max_length = 8192)]
    access_token: String,
    #[schema(min_length = 1, max_length = 8192)]
    refresh_token: Option<String>,
    /// Default `Bearer`.
    token_type: Option<String>,
    /// When the access token expires (RFC 3339). Not with `expires_in`.
    #[schema(format = DateTime)]
    expires_at: Option<String>,
    /// Seconds from now until the access token expires. Not with `expires_at`.
    #[schema(minimum = 0)]
    expires_in: Option<i64>,
    /// The granted scopes (default: the provider's configured scopes).
    scopes: Option<Vec<String>>,
    /// The provider account; required for providers whose connections are
    /// per account.
    account: Option<ImportAccount>,
    /// Non-secret fields kept beside the connection (e.g. `locationId`).
    #[schema(value_type = Option<Object>)]
    metadata: Option<serde_json::Value>,
    /// Overwrite an account that is already connected (default false: skip it).
    replace: Option<bool>,
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct ImportAccount {
    #[schema(min_length = 1, max_length = 256)]
    id: String,
    #[schema(max_length = 256)]
    name: Option<String>,
}

/// What an import did.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct ImportAnswer {
    /// `imported`, or `skipped` (the account is already connected).
    outcome: &'static str,
    /// The import overwrote a connected account (`replace`).
    replaced: bool,
    account: String,
    /// `not_due`, `refreshed` (the token had expired or was within the
    /// refresh margin, and was refreshed at once) or `failed` (see
    /// `refresh_error` and the status: the scheduler retries unless the
    /// provider said the grant is gone).
    refresh: &'static str,
    refresh_error: Option<ImportRefreshError>,
    message: String,
    /// The account's status afterwards.
    status: StatusView,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
struct ImportRefreshError {
    code: &'static str,
    message: String,
}

/// Import a token set the CRM stored itself (admin keys only)
///
/// Stored encrypted like any connection; an account already connected is
/// skipped (200, `outcome: skipped`) unless `replace` is true. A token that
/// has expired or expires within the refresh margin is refreshed before the
/// answer. No token appears in the answer.
#[utoipa::path(
    params(ConnectionPath),
    request_body = ImportRequest,
    responses(
        (status = 201, description = "Imported as a new connection", body = ImportAnswer),
        (status = 200, description = "Imported over a connected account (`replace`), or skipped", body = ImportAnswer),
        (status = 400, description = "`invalid_import`, `invalid_account` or `invalid_json`: nothing was stored", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "Not an admin key, or one limited to another tenant", body = ErrorBody),
        (status = 404, description = "No such tenant or provider", body = ErrorBody),
        (status = 503, description = "The database is unreachable", body = ErrorBody),
    ),
    security(("apiKey" = []))
)]
#[post("/tenants/{tenant}/connections/{provider}/import")]
async fn import(
    state: web::Data<App>,
    caller: ApiCaller,
    path: web::Path<ConnectionPath>,
    body: web::Json<serde_json::Value>,
) -> AppResult<HttpResponse> {
    if !caller.key.is_admin {
        return Err(AppError::forbidden(
            "importing tokens needs an API key created with --admin",
        ));
    }
    let (tenant_id, provider) = caller.target(&state, &path).await?;
    let request = importing::Request::parse(&body)?;
    let actor = Actor::Import {
        by: caller.actor().to_string(),
    };
    let done = importing::import(&state, &tenant_id, &provider, request, &actor).await?;
    let p = provider.clone();
    let a = done.account_id().to_string();
    let status = state
        .db(move |c| status::load(c, &tenant_id, &p, Some(&a)))
        .await?;
    let (imported, replaced) = (done.imported(), done.replaced());
    let answer = ImportAnswer {
        outcome: if imported { "imported" } else { "skipped" },
        replaced,
        account: done.account_id().to_string(),
        refresh: done.refresh_label(),
        refresh_error: match &done.refresh {
            Some(Err(e)) => Some(ImportRefreshError {
                code: e.code(),
                message: e.message().to_string(),
            }),
            _ => None,
        },
        message: done.message(&provider),
        status,
    };
    Ok(no_store(if imported && !replaced {
        HttpResponse::Created().json(answer)
    } else {
        HttpResponse::Ok().json(answer)
    }))
}

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
        (status = 400, description = "An invalid body", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "The key may not act for this tenant", body = ErrorBody),
        (status = 404, description = "No such tenant or provider", body = ErrorBody),
        (status = 409, description = "`provider_disabled`: the tenant switched the provider off", body = ErrorBody),
        (status = 503, description = "The database is unreachable", body = ErrorBody),
    ),
    security(("apiKey" = []))
)]
#[post("/tenants/{tenant}/connect-links")]
async fn connect_link(
    state: web::Data<App>,
    caller: ApiCaller,
    path: web::Path<TenantPath>,
    body: web::Json<LinkRequest>,
) -> AppResult<HttpResponse> {
    let tenant_id = caller.tenant(&state, &path.tenant).await?;
    let provider = state.enabled_provider(&body.provider)?;
    let ttl = body.expires_in.unwrap_or(links::DEFAULT_TTL_SECS);
    let link = links::issue(
        &state,
        tenant_id,
        &provider,
        ttl,
        body.email.as_deref(),
        &caller.actor(),
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
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "Not an admin key, or one limited to another tenant", body = ErrorBody),
        (status = 503, description = "The database is unreachable", body = ErrorBody),
    ),
    security(("apiKey" = []))
)]
#[put("/tenants/{tenant}")]
async fn provision(
    state: web::Data<App>,
    caller: ApiCaller,
    path: web::Path<TenantPath>,
    body: web::Json<ProvisionRequest>,
) -> AppResult<HttpResponse> {
    if !caller.key.is_admin {
        return Err(AppError::forbidden(
            "provisioning tenants needs an API key created with --admin",
        ));
    }
    let ext = path.into_inner().tenant;
    if let Some(own) = &caller.key.tenant_id {
        // An admin key limited to one tenant may only rename that tenant.
        let ext = ext.clone();
        let target = state
            .db(move |c| Ok(Tenant::by_external_id(c, &ext)?))
            .await?;
        if target.map(|t| t.id) != Some(own.clone()) {
            return Err(AppError::forbidden(
                "this API key may not act for that tenant",
            ));
        }
    }
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

/// The largest body `PUT .../integrations/{provider}` reads: room for 64 KiB
/// of settings sent with whitespace.
const SETTINGS_BODY_LIMIT: usize = 4 * integration::MAX_SETTINGS_BYTES;

/// The tenant's integration settings for a provider
///
/// Whether the tenant uses the provider, and its settings (a JSON object).
/// A pair never written answers the defaults: enabled, `{}`, `updated_at`
/// null. `schema` lists the fields the provider's settings may have.
#[utoipa::path(
    params(ConnectionPath),
    responses(
        (status = 200, description = "The integration settings", body = IntegrationView),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "The key may not act for this tenant", body = ErrorBody),
        (status = 404, description = "No such tenant or enabled provider", body = ErrorBody),
        (status = 503, description = "The database is unreachable", body = ErrorBody),
    ),
    security(("apiKey" = []))
)]
#[get("/{provider}")]
async fn get_integration(
    state: web::Data<App>,
    caller: ApiCaller,
    path: web::Path<ConnectionPath>,
) -> AppResult<HttpResponse> {
    let (tenant_id, provider) = caller.target(&state, &path).await?;
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
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "The key may not act for this tenant", body = ErrorBody),
        (status = 404, description = "No such tenant or enabled provider", body = ErrorBody),
        (status = 409, description = "`concurrent_update`: changed by another request at the same moment", body = ErrorBody),
        (status = 503, description = "The database is unreachable", body = ErrorBody),
    ),
    security(("apiKey" = []))
)]
#[put("/{provider}")]
async fn set_integration(
    state: web::Data<App>,
    caller: ApiCaller,
    path: web::Path<ConnectionPath>,
    body: web::Json<IntegrationRequest>,
) -> AppResult<HttpResponse> {
    let (tenant_id, provider) = caller.target(&state, &path).await?;
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
    /// Only connections of this provider account id (e.g. a GoHighLevel
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
/// Which tenant owns a provider account (`?provider=gohighlevel&account=loc_123`,
/// or by a metadata field: `?locationId=loc_123`), and which connections need
/// attention (`?status=needs_reconnect,error`). Only connections holding
/// tokens are listed. Any query key other than `tenant`, `provider`,
/// `account`, `status` and `limit` names a metadata field (a letter or `_`,
/// then up to 63 letters, digits, `_`, `.` or `-`; at most 8 of them) whose
/// value must equal the given one (1 to 256 characters). A key for all
/// tenants sees every tenant's connections; a key limited to one tenant
/// sees only that tenant's.
#[utoipa::path(
    params(
        DirectoryQuery,
        ("locationId" = Option<String>, Query, description = "An example metadata field: connections whose metadata has this `locationId` (GoHighLevel). Any other key not listed here works the same way."),
    ),
    responses(
        (status = 200, description = "The connections found", body = FoundConnections),
        (status = 400, description = "A malformed filter", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "`tenant` names another tenant than the key's", body = ErrorBody),
        (status = 404, description = "No such tenant or provider", body = ErrorBody),
        (status = 503, description = "The database is unreachable", body = ErrorBody),
    ),
    security(("apiKey" = []))
)]
#[get("/connections")]
async fn find_connections(
    req: HttpRequest,
    state: web::Data<App>,
    caller: ApiCaller,
) -> AppResult<HttpResponse> {
    let filter = directory::Filter::from_query(query_pairs(req.query_string())?)?;
    let scope = match &caller.key.tenant_id {
        Some(own) => directory::Scope::Tenant(own.clone()),
        None => directory::Scope::AllTenants,
    };
    let catalogue = state.providers.clone();
    let listing = state
        .db(move |c| directory::find(c, &catalogue, &scope, &filter))
        .await?;
    let connections = listing
        .connections
        .into_iter()
        .map(|found| {
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
        })
        .collect();
    Ok(no_store(HttpResponse::Ok().json(FoundConnections {
        connections,
        truncated: listing.truncated,
    })))
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
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "Not an admin key for all tenants", body = ErrorBody),
        (status = 404, description = "No such tenant", body = ErrorBody),
        (status = 503, description = "The database is unreachable", body = ErrorBody),
    ),
    security(("apiKey" = []))
)]
#[delete("/tenants/{tenant}")]
async fn remove_tenant(
    state: web::Data<App>,
    caller: ApiCaller,
    path: web::Path<TenantPath>,
    query: web::Query<RemoveQuery>,
) -> AppResult<HttpResponse> {
    if !caller.key.is_admin || caller.key.tenant_id.is_some() {
        return Err(AppError::forbidden(
            "removing a tenant needs an admin API key for all tenants (created with --admin and no --tenant)",
        ));
    }
    let removal = crate::offboarding::remove(
        &state,
        &path.tenant,
        query.dry_run.unwrap_or(false),
        &caller.actor(),
    )
    .await?;
    Ok(no_store(HttpResponse::Ok().json(removal)))
}

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

/// Refuses keys limited to one tenant: unclaimed installs belong to none.
fn all_tenants(caller: &ApiCaller) -> AppResult<()> {
    if caller.key.tenant_id.is_some() {
        return Err(AppError::forbidden(
            "unclaimed installs need an API key for all tenants",
        ));
    }
    Ok(())
}

/// Unclaimed installs (all-tenants keys only)
///
/// Installs started at the provider (GoHighLevel's Marketplace) whose
/// account no tenant holds, newest first. Each is held for a day.
#[utoipa::path(
    responses(
        (status = 200, description = "The unclaimed installs", body = InstallList),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "A key limited to one tenant", body = ErrorBody),
        (status = 503, description = "The database is unreachable", body = ErrorBody),
    ),
    security(("apiKey" = []))
)]
#[get("/installs")]
async fn list_installs(state: web::Data<App>, caller: ApiCaller) -> AppResult<HttpResponse> {
    all_tenants(&caller)?;
    let installs = installs::unclaimed(&state)
        .await?
        .into_iter()
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

/// Assign an unclaimed install to a tenant (all-tenants keys only)
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
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "A key limited to one tenant", body = ErrorBody),
        (status = 404, description = "`unknown_install` (claimed, replaced or expired), or no such tenant", body = ErrorBody),
        (status = 409, description = "`account_bound_elsewhere`", body = ErrorBody),
        (status = 503, description = "The database is unreachable", body = ErrorBody),
    ),
    security(("apiKey" = []))
)]
#[post("/installs/{id}/assign")]
async fn assign_install(
    state: web::Data<App>,
    caller: ApiCaller,
    path: web::Path<InstallPath>,
    body: web::Json<AssignRequest>,
) -> AppResult<HttpResponse> {
    all_tenants(&caller)?;
    if path.id.len() > 64 {
        return Err(installs::unknown_install());
    }
    let tenant_id = caller.tenant(&state, &body.tenant).await?;
    let connection = installs::claim(
        &state,
        None,
        path.into_inner().id,
        &tenant_id,
        &caller.actor(),
    )
    .await?;
    let provider = state.enabled_provider(&connection.provider)?;
    Ok(no_store(HttpResponse::Ok().json(Assigned {
        tenant: body.into_inner().tenant,
        connection: StatusView::of(&provider, Some(&connection)),
    })))
}

/// Which account a proxied call uses: the `Tether-Account` header (never
/// forwarded), else the default. Not a query parameter like on the other
/// routes: the proxied query string belongs to the provider and goes out
/// verbatim, where an `account` of ours could clash with one of its own.
fn proxy_account(req: &HttpRequest) -> AppResult<Option<&str>> {
    match req.headers().get(ACCOUNT_HEADER) {
        None => Ok(None),
        Some(v) => account_param(Some(v.to_str().map_err(|_| {
            AppError::bad_request(
                Code::InvalidAccount,
                "the Tether-Account header must be a provider's account id",
            )
        })?)),
    }
}

/// The request header naming the account of a proxied call.
pub const ACCOUNT_HEADER: &str = "tether-account";

/// `{tenant}/proxy/{provider}/{path}`.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
struct ProxyPath {
    /// The CRM's external id of the tenant.
    #[param(pattern = r"^[A-Za-z0-9._:-]{1,128}$")]
    tenant: String,
    /// A provider's key.
    #[param(pattern = r"^[a-z][a-z0-9_-]{0,31}$")]
    provider: String,
    /// Path under the provider's API base URL; query strings are passed on.
    path: String,
}

/// Call the provider's API with the token attached
///
/// On a 401, refreshes once and retries once. Only the provider's API base is
/// reachable. The answer is the provider's own (any status, any content
/// type), except for Tether's own errors, which are JSON error bodies: 400 (a
/// path outside the API base, an invalid `Tether-Account`), 401, 403, 404
/// (tenant, provider or connection), 409 (`needs_reconnect`;
/// `provider_disabled`: the tenant switched the provider off), 502
/// (`provider_unreachable`; `provider_redirected`: the provider answered a
/// redirect, which is neither followed nor passed on;
/// `provider_response_too_large`: its body passed `TETHER_PROXY_MAX_BODY_BYTES`),
/// 503 (refresh failing).
#[utoipa::path(
    method(get, post, put, patch, delete),
    params(
        ProxyPath,
        ("Tether-Account" = Option<String>, Header, description = "The account whose token is attached (the default without it). A header, not a query parameter, because the query string belongs to the provider and is passed on as it is. Not forwarded."),
    ),
    request_body(description = "Passed on as it is", content_type = "*/*"),
    responses(
        (status = "default", description = "The provider's answer (its status, headers and body), or one of Tether's JSON errors"),
    ),
    security(("apiKey" = []))
)]
#[route(
    "/tenants/{tenant}/proxy/{provider}/{path:.*}",
    method = "GET",
    method = "POST",
    method = "PUT",
    method = "PATCH",
    method = "DELETE"
)]
async fn proxy(
    req: HttpRequest,
    state: web::Data<App>,
    caller: ApiCaller,
    path: web::Path<ProxyPath>,
    body: web::Bytes,
) -> AppResult<HttpResponse> {
    let ProxyPath {
        tenant,
        provider,
        path: tail,
    } = path.into_inner();
    let (tenant_id, provider) = caller
        .target(&state, &ConnectionPath { tenant, provider })
        .await?;
    let account = proxy_account(&req)?;
    let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes())
        .map_err(|_| AppError::bad_request(Code::InvalidMethod, "unsupported method"))?;
    let call = proxying::Call {
        method,
        tail,
        query: req.query_string().to_string(),
        headers: forwarded_headers(&req),
        body: bytes::Bytes::copy_from_slice(&body),
    };
    let answer = proxying::forward(
        &state,
        &tenant_id,
        &provider,
        account,
        &caller.actor(),
        call,
    )
    .await?;
    Ok(passed_back(answer))
}

/// The request headers a proxied call passes on (`proxy::FORWARD_REQUEST`).
fn forwarded_headers(req: &HttpRequest) -> reqwest::header::HeaderMap {
    let mut headers = reqwest::header::HeaderMap::new();
    for name in proxying::FORWARD_REQUEST {
        if let Some(v) = req.headers().get(name) {
            if let Ok(v) = reqwest::header::HeaderValue::from_bytes(v.as_bytes()) {
                headers.insert(name, v);
            }
        }
    }
    headers
}

/// The provider's answer as the caller gets it, never to be stored.
fn passed_back(answer: proxying::Answer) -> HttpResponse {
    let status = actix_web::http::StatusCode::from_u16(answer.status)
        .unwrap_or(actix_web::http::StatusCode::BAD_GATEWAY);
    let mut out = HttpResponse::build(status);
    for (name, v) in &answer.headers {
        out.insert_header((name.as_str(), v.as_bytes()));
    }
    out.insert_header((header::CACHE_CONTROL, "no-store"));
    out.body(answer.body)
}

/// This document
#[utoipa::path(responses((status = 200, description = "The OpenAPI document", content_type = "application/json")))]
#[get("/openapi.json")]
async fn openapi_document(doc: web::Data<Document>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(doc.json.clone())
}
