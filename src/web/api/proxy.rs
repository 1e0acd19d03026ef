//! The proxy: a call to the provider's API with the token attached.

use super::rights::{ForConnection, Proxying, Scoped};
use crate::app::App;
use crate::connections::proxy as proxying;
use crate::db::models::usage::UsageKind;
use crate::error::{AppError, AppResult, Code, ErrorBody};
use crate::ids::AccountId;
use crate::web::http::account_param;
use actix_web::http::header;
use actix_web::{route, web, HttpRequest, HttpResponse};

/// Which account a proxied call uses: the `Tether-Account` header (never
/// forwarded), else the default. Not a query parameter like on the other
/// routes: the proxied query string belongs to the provider and goes out
/// verbatim, where an `account` of ours could clash with one of its own.
fn proxy_account(req: &HttpRequest) -> AppResult<Option<AccountId>> {
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

/// `{tenant}/proxy/{provider}/{path}` (`tenant` and `provider` are read by
/// [`ForConnection`]; they are here for the document).
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
struct ProxyPath {
    /// The CRM's external id of the tenant.
    #[param(pattern = r"^[A-Za-z0-9._:-]{1,128}$")]
    #[allow(dead_code)]
    tenant: String,
    /// A provider's key.
    #[param(pattern = r"^[a-z][a-z0-9_-]{0,31}$")]
    #[allow(dead_code)]
    provider: String,
    /// Path under the provider's API base URL; query strings are passed on.
    path: String,
}

/// Call the provider's API with the token attached
///
/// On a 401, refreshes once and retries once. On a 429 or 503 with a
/// `Retry-After` (seconds or an HTTP-date) that fits in
/// `TETHER_PROXY_RETRY_MAX_WAIT_SECS`, a GET, PUT or DELETE waits and is sent
/// again, at most `TETHER_PROXY_RETRY_MAX` times; a POST or PATCH never is.
/// `Tether-Proxy-Retries` on the provider's answer says how many retries
/// were made. A provider may declare per-account budgets (GoHighLevel: 100
/// calls per 10 s, 200,000 a day), spent by every instance together: a
/// call past one is answered 429 `provider_budget_spent` with `Retry-After`,
/// without calling the provider. Only the provider's API base is
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
        (status = 429, description = "`provider_budget_spent`: the account's budget of calls at the provider is spent; try again after `Retry-After`. (A 429 of the provider's own, passed back, has no JSON error of Tether's and carries `Tether-Proxy-Retries`.)", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds until the budget has room again"))),
        (status = "default", description = "The provider's answer (its status, headers and body), or one of Tether's JSON errors",
            headers(("Tether-Proxy-Retries" = u32, description = "On the provider's answers: how many times the proxy retried the call after a 429 or 503 with `Retry-After` (0: sent once)"))),
    ),
    security(("apiKey" = ["proxy"]))
)]
#[route(
    "/tenants/{tenant}/proxy/{provider}/{path:.*}",
    method = "GET",
    method = "POST",
    method = "PUT",
    method = "PATCH",
    method = "DELETE"
)]
pub(super) async fn proxy(
    req: HttpRequest,
    state: web::Data<App>,
    target: ForConnection<Scoped<Proxying>>,
    path: web::Path<ProxyPath>,
    body: web::Bytes,
) -> AppResult<HttpResponse> {
    let account = proxy_account(&req)?;
    let call = proxied_call(&req, path.into_inner().path, &body)?;
    let answer = proxying::forward(
        &state,
        &target.tenant,
        &target.provider,
        account.as_ref(),
        &target.key.actor(),
        call,
    )
    .await?;
    let key = &target.key.key.name;
    state
        .usage
        .count(&answer.connection_id, key, UsageKind::Proxy);
    let (prefix, provider) = (&target.key.key.prefix, &target.provider.key);
    state
        .metrics
        .proxy_call(prefix, key, provider, answer.status);
    Ok(passed_back(answer))
}

/// The call to make at the provider: the caller's method, the path's tail,
/// the query string as it is, the headers passed on, and the body.
fn proxied_call(req: &HttpRequest, tail: String, body: &[u8]) -> AppResult<proxying::Call> {
    let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes())
        .map_err(|_| AppError::bad_request(Code::InvalidMethod, "unsupported method"))?;
    Ok(proxying::Call {
        method,
        tail,
        query: req.query_string().to_string(),
        headers: forwarded_headers(req),
        body: bytes::Bytes::copy_from_slice(body),
    })
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
    out.insert_header((proxying::RETRIES_HEADER, answer.retries.to_string()));
    out.body(answer.body)
}
