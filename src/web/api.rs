//! The internal JSON API for the CRM's services, under `/api/v1`, behind API
//! keys (`Authorization: Bearer tth_...`). `{tenant}` is the CRM's external id.

use super::http::{account_param, no_store};
use crate::app::App;
use crate::connections::status::{self, StatusView};
use crate::connections::{links, manage, proxy as proxying};
use crate::db::models::api_key::ApiKey;
use crate::db::models::event::Actor;
use crate::db::models::tenant::Tenant;
use crate::error::{AppError, AppResult, Code};
use crate::ids::{ExternalTenantId, TenantId};
use crate::providers::Provider;
use crate::refresh::cache::Opened;
use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use futures_util::future::{ready, Either, LocalBoxFuture, Ready};
use std::sync::Arc;
use std::time::Instant;

pub fn routes(cfg: &mut web::ServiceConfig) {
    let json = || {
        web::JsonConfig::default()
            .limit(64 * 1024)
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
    // The hot route first and on its own: routes are tried in order, and a
    // route inside a scope costs a pattern match for the scope as well.
    cfg.service(
        web::resource("/api/v1/tenants/{tenant}/connections/{provider}/token")
            .app_data(query())
            .app_data(path())
            .route(web::get().to(token))
            .default_service(web::to(super::http::not_found)),
    )
    .route("/api/v1/openapi.json", web::get().to(openapi))
    .service(
        web::scope("/api/v1/tenants/{tenant}")
            .app_data(json())
            .app_data(query())
            .app_data(path())
            .route("", web::put().to(provision))
            .route("/connections", web::get().to(list))
            .route("/connections/{provider}", web::get().to(status))
            .route("/connections/{provider}", web::delete().to(disconnect))
            .route("/connections/{provider}/refresh", web::post().to(refresh))
            .route(
                "/connections/{provider}/default",
                web::put().to(set_default),
            )
            .route("/connect-links", web::post().to(connect_link))
            .route("/proxy/{provider}/{tail:.*}", web::to(proxy)),
    );
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
    let key = Arc::new(
        state
            .db(move |c| ApiKey::authenticate(c, &presented))
            .await?,
    );
    let due = state.api_cache.remember(digest, &key);
    if due {
        let id = key.id.clone();
        state.db(move |c| Ok(ApiKey::touch(c, &id)?)).await?;
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
                let found = state
                    .db(move |c| Ok(Tenant::by_external_id(c, &ext)?))
                    .await?;
                if let Some(t) = &found {
                    state.api_cache.remember_tenant(&t.external_id, &t.id);
                }
                found.map(|t| t.id)
            }
        };
        match (&self.key.tenant_id, id) {
            (Some(own), Some(id)) if *own == id => Ok(TenantId::known(id)),
            (Some(_), _) => Err(AppError::forbidden(
                "this API key may not act for that tenant",
            )),
            (None, Some(id)) => Ok(TenantId::known(id)),
            (None, None) => Err(AppError::not_found(format!("no tenant '{external_id}'"))),
        }
    }

    /// The tenant (as [`ApiCaller::tenant`]) and the enabled provider of a
    /// `/tenants/{tenant}/connections/{provider}` route.
    async fn target(
        &self,
        state: &App,
        (tenant, provider): (String, String),
    ) -> AppResult<(TenantId, std::sync::Arc<Provider>)> {
        let tenant_id = self.tenant(state, &tenant).await?;
        Ok((tenant_id, state.enabled_provider(&provider)?))
    }

    fn actor(&self) -> Actor {
        Actor::ApiKey {
            name: self.key.name.clone(),
        }
    }
}

/// The `account` query parameter of the connection routes: a provider's
/// account id; without it, the tenant's default account.
#[derive(serde::Deserialize)]
struct AccountQuery {
    account: Option<String>,
}

/// `GET /connections`: every enabled provider's status for the tenant, each
/// with its accounts.
async fn list(
    state: web::Data<App>,
    caller: ApiCaller,
    path: web::Path<String>,
) -> AppResult<HttpResponse> {
    let tenant_id = caller.tenant(&state, &path).await?;
    let keys: Vec<String> = state
        .providers
        .all()
        .filter(|p| p.enabled())
        .map(|p| p.key.clone())
        .collect();
    let statuses = state
        .db(move |c| {
            keys.iter()
                .map(|k| status::load(c, &tenant_id, k, None))
                .collect::<AppResult<Vec<_>>>()
        })
        .await?;
    Ok(no_store(
        HttpResponse::Ok().json(serde_json::json!({ "connections": statuses })),
    ))
}

/// `GET /connections/{provider}[?account=]`: the provider's status (default
/// account and the list), or one account's.
async fn status(
    state: web::Data<App>,
    caller: ApiCaller,
    path: web::Path<(String, String)>,
    query: web::Query<AccountQuery>,
) -> AppResult<HttpResponse> {
    let account = account_param(query.account.as_deref())?.map(str::to_string);
    let (tenant_id, provider) = caller.target(&state, path.into_inner()).await?;
    let key = provider.key.clone();
    let doc = state
        .db(move |c| status::load(c, &tenant_id, &key, account.as_deref()))
        .await?;
    Ok(no_store(HttpResponse::Ok().json(doc)))
}

#[derive(serde::Deserialize)]
struct TokenQuery {
    min_ttl: Option<i64>,
    account: Option<String>,
}

/// The token API's answer.
#[derive(serde::Serialize)]
struct TokenBody<'a> {
    access_token: &'a str,
    token_type: &'a str,
    expires_at: Option<String>,
    expires_in: Option<i64>,
    scopes: &'a [String],
    metadata: &'a serde_json::Value,
    account: AccountBody<'a>,
}

#[derive(serde::Serialize)]
struct AccountBody<'a> {
    id: &'a str,
    name: Option<&'a str>,
}

impl<'a> TokenBody<'a> {
    fn of(opened: &'a Opened) -> TokenBody<'a> {
        let row = &opened.row;
        TokenBody {
            access_token: opened.tokens.access_token.expose(),
            token_type: &opened.tokens.token_type,
            expires_at: row.expires_at.map(|t| {
                t.and_utc()
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            }),
            expires_in: row
                .expires_at
                .map(|t| (t - crate::db::now()).num_seconds().max(0)),
            scopes: &opened.scopes,
            metadata: &opened.metadata,
            account: AccountBody {
                id: &row.account_id,
                name: row.account_name.as_deref(),
            },
        }
    }
}

/// `GET .../token`: a valid access token, refreshed first when it would expire within `min_ttl`.
async fn token(
    state: web::Data<App>,
    caller: ApiCaller,
    path: web::Path<(String, String)>,
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
    let (tenant_id, provider) = caller.target(&state, path.into_inner()).await?;
    let opened =
        crate::refresh::fresh_token(&state, &tenant_id, &provider, account, min_ttl).await?;
    let body = TokenBody::of(&opened);
    state.metrics.token_api(started.elapsed().as_secs_f64());
    Ok(no_store(HttpResponse::Ok().json(body)))
}

/// `POST .../refresh[?account=]`: refresh now (shared with any refresh under way).
async fn refresh(
    state: web::Data<App>,
    caller: ApiCaller,
    path: web::Path<(String, String)>,
    query: web::Query<AccountQuery>,
) -> AppResult<HttpResponse> {
    let account = account_param(query.account.as_deref())?;
    let (tenant_id, provider) = caller.target(&state, path.into_inner()).await?;
    let fresh = manage::refresh(&state, &tenant_id, &provider, account, &caller.actor()).await?;
    Ok(no_store(
        HttpResponse::Ok().json(StatusView::of(&provider.key, Some(&fresh))),
    ))
}

/// `DELETE .../{provider}[?account=]`: revoke where possible and erase. The
/// answer names the default account afterwards, so that no caller assumes
/// the provider is gone while another account now serves it (or the reverse).
async fn disconnect(
    state: web::Data<App>,
    caller: ApiCaller,
    path: web::Path<(String, String)>,
    query: web::Query<AccountQuery>,
) -> AppResult<HttpResponse> {
    let account = account_param(query.account.as_deref())?;
    let (tenant_id, provider) = caller.target(&state, path.into_inner()).await?;
    let done = manage::disconnect(&state, &tenant_id, &provider, account, &caller.actor()).await?;
    Ok(no_store(HttpResponse::Ok().json(serde_json::json!({
        "provider": provider.key,
        "disconnected": done.account_id,
        "status": status::public_status(done.default.as_ref()),
        "default": done.default.as_ref().map(|d| d.account_id.clone()),
        "message": done.message,
    }))))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DefaultRequest {
    /// The provider account id to serve when a caller names none.
    account: String,
}

/// `PUT .../{provider}/default`: chooses the tenant's default account.
async fn set_default(
    state: web::Data<App>,
    caller: ApiCaller,
    path: web::Path<(String, String)>,
    body: web::Json<DefaultRequest>,
) -> AppResult<HttpResponse> {
    let account = account_param(Some(&body.account))?.unwrap_or_default();
    let (tenant_id, provider) = caller.target(&state, path.into_inner()).await?;
    manage::choose_default(&state, &tenant_id, &provider, account, &caller.actor()).await?;
    let key = provider.key.clone();
    let doc = state
        .db(move |c| status::load(c, &tenant_id, &key, None))
        .await?;
    Ok(no_store(HttpResponse::Ok().json(doc)))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LinkRequest {
    provider: String,
    /// Seconds the link stays valid (60 to 86400; default 900).
    expires_in: Option<i64>,
}

/// `POST /connect-links`: a single-use link a person opens to connect a provider.
async fn connect_link(
    state: web::Data<App>,
    caller: ApiCaller,
    path: web::Path<String>,
    body: web::Json<LinkRequest>,
) -> AppResult<HttpResponse> {
    let tenant_id = caller.tenant(&state, &path).await?;
    let provider = state.enabled_provider(&body.provider)?;
    let ttl = body.expires_in.unwrap_or(links::DEFAULT_TTL_SECS);
    let link = links::issue(&state, tenant_id, &provider, ttl, &caller.actor()).await?;
    Ok(no_store(HttpResponse::Created().json(serde_json::json!({
        "url": link.url.expose(),
        "provider": provider.key,
        "expires_at": link.expires_at.and_utc().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    }))))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ProvisionRequest {
    name: String,
}

/// `PUT /api/v1/tenants/{tenant}`: create or rename a tenant (admin keys only).
async fn provision(
    state: web::Data<App>,
    caller: ApiCaller,
    path: web::Path<String>,
    body: web::Json<ProvisionRequest>,
) -> AppResult<HttpResponse> {
    if !caller.key.is_admin {
        return Err(AppError::forbidden(
            "provisioning tenants needs an API key created with --admin",
        ));
    }
    if let Some(own) = &caller.key.tenant_id {
        // An admin key limited to one tenant may only rename that tenant.
        let ext = path.clone();
        let target = state
            .db(move |c| Ok(Tenant::by_external_id(c, &ext)?))
            .await?;
        if target.map(|t| t.id) != Some(own.clone()) {
            return Err(AppError::forbidden(
                "this API key may not act for that tenant",
            ));
        }
    }
    let (ext, name) = (path.into_inner(), body.into_inner().name);
    let (tenant, created) = state.db(move |c| Tenant::provision(c, &ext, &name)).await?;
    let body = serde_json::json!({ "tenant": tenant.external_id, "name": tenant.name, "created": created });
    Ok(if created {
        HttpResponse::Created().json(body)
    } else {
        HttpResponse::Ok().json(body)
    })
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

/// `ANY /proxy/{provider}/{path}`: forwards to the provider's API with the
/// token attached; on a 401, refreshes once and retries once. Redirects are
/// returned, never followed.
async fn proxy(
    req: HttpRequest,
    state: web::Data<App>,
    caller: ApiCaller,
    path: web::Path<(String, String, String)>,
    body: web::Bytes,
) -> AppResult<HttpResponse> {
    let (tenant, provider_key, tail) = path.into_inner();
    let (tenant_id, provider) = caller.target(&state, (tenant, provider_key)).await?;
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

/// `GET /api/v1/openapi.json`.
async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(include_str!("../../static/openapi.json"))
}
