//! The demo's HTTP handlers: the consent page and decision, the token and
//! revocation endpoints, the two bearer endpoints, and 404/405 for the rest.

use super::authorize::{redirect_back, same_origin, AuthRequest, ConsentPage};
use super::config::{Client, DemoConfig, SCOPES};
use super::errors::no_store;
use super::input::{read_form, BadInput, Params};
use super::store::DemoStore;
use super::token::{authenticate_client, check_bearer, grant};
use crate::error::{AppError, Code as ErrorCode, PageError, PageResult};
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use askama::Template;
use std::time::Instant;

const OFF: &str = "the demo provider is off";

/// `GET /demo/oauth/authorize`: the consent page.
pub(super) async fn authorize_page(
    req: HttpRequest,
    config: web::Data<DemoConfig>,
) -> PageResult<HttpResponse> {
    let client = page_client(&config)?;
    let params = Params::parse(req.query_string().as_bytes()).map_err(BadInput::into_page)?;
    let request = match AuthRequest::validate(&params, client, &config) {
        Ok(request) => request,
        Err(rejection) => return rejection.respond(&config),
    };
    let page = ConsentPage {
        scopes: SCOPES
            .iter()
            .filter(|(name, _)| request.scope.contains(name))
            .copied()
            .collect(),
        redirect_uri: &request.redirect_uri,
        hidden: request.hidden_fields(),
    };
    let body = page.render().map_err(AppError::internal)?;
    Ok(HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        // A consent page must not be framed: a click could be stolen.
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; frame-ancestors 'none'; base-uri 'none'",
        ))
        .body(body))
}

/// `POST /demo/oauth/authorize`: the user's decision, sent back to the client.
pub(super) async fn authorize_decision(
    req: HttpRequest,
    payload: web::Payload,
    config: web::Data<DemoConfig>,
    store: web::Data<DemoStore>,
) -> PageResult<HttpResponse> {
    let client = page_client(&config)?;
    same_origin(&req, &config)?;
    let params = read_form(&req, payload)
        .await
        .map_err(BadInput::into_page)?;
    // The hidden fields came back through the browser: check them all again.
    let request = match AuthRequest::validate(&params, client, &config) {
        Ok(request) => request,
        Err(rejection) => return rejection.respond(&config),
    };
    let state_param = Some(request.state.as_str());
    match params.get("decision") {
        Some("approve") => {
            let code = store.issue_code(&request, Instant::now());
            redirect_back(&config, &[("code", code.as_str())], state_param)
        }
        Some("deny") => redirect_back(&config, &[("error", "access_denied")], state_param),
        _ => Err(PageError(AppError::bad_request(
            ErrorCode::InvalidDecision,
            "choose Approve or Deny",
        ))),
    }
}

/// `POST /demo/oauth/token`: codes and refresh tokens for tokens.
pub(super) async fn token(
    req: HttpRequest,
    payload: web::Payload,
    config: web::Data<DemoConfig>,
    store: web::Data<DemoStore>,
) -> actix_web::Result<HttpResponse> {
    let client = api_client(&config)?;
    let params = read_form(&req, payload).await?;
    let client_id = authenticate_client(&req, &params, client)?;
    let tokens = grant(&store, &params, &client_id, Instant::now())?;
    Ok(no_store(HttpResponse::Ok()).json(tokens))
}

/// `POST /demo/oauth/revoke`: RFC 7009; revokes the grant a token belongs to.
pub(super) async fn revoke(
    req: HttpRequest,
    payload: web::Payload,
    config: web::Data<DemoConfig>,
    store: web::Data<DemoStore>,
) -> actix_web::Result<HttpResponse> {
    let client = api_client(&config)?;
    let params = read_form(&req, payload).await?;
    let client_id = authenticate_client(&req, &params, client)?;
    // `token_type_hint` may be ignored (RFC 7009 section 2.1): both kinds are
    // looked up anyway, and an unknown token is not an error.
    store.revoke(&client_id, params.require("token")?);
    Ok(no_store(HttpResponse::Ok()).finish())
}

/// `GET /demo/api/me`: the demo account, for the `profile` scope.
pub(super) async fn me(
    req: HttpRequest,
    config: web::Data<DemoConfig>,
    store: web::Data<DemoStore>,
) -> actix_web::Result<HttpResponse> {
    api_client(&config)?;
    check_bearer(&req, &store, "profile")?;
    Ok(no_store(HttpResponse::Ok()).json(serde_json::json!({
        "id": "demo-user-1",
        "name": "Demo Account",
        "email": "demo@example.com",
    })))
}

/// `GET /demo/api/contacts`: a fixed list, for the `contacts.read` scope.
pub(super) async fn contacts(
    req: HttpRequest,
    config: web::Data<DemoConfig>,
    store: web::Data<DemoStore>,
) -> actix_web::Result<HttpResponse> {
    api_client(&config)?;
    check_bearer(&req, &store, "contacts.read")?;
    Ok(no_store(HttpResponse::Ok()).json(serde_json::json!([
        { "id": "c-1", "name": "Ada Lovelace", "email": "ada@example.com" },
        { "id": "c-2", "name": "Grace Hopper", "email": "grace@example.com" },
        { "id": "c-3", "name": "Alan Turing", "email": "alan@example.com" },
    ])))
}

/// Any other method on a demo path: 404 while the demo is off, else 405.
pub(super) async fn other_method(req: HttpRequest, config: web::Data<DemoConfig>) -> HttpResponse {
    if config.client.is_some() {
        return HttpResponse::MethodNotAllowed().finish();
    }
    let err = AppError::not_found(OFF);
    if req.path() == "/demo/oauth/authorize" {
        PageError(err).error_response()
    } else {
        err.error_response()
    }
}

/// The demo client for a page, or a 404 page while the demo is off.
fn page_client(config: &DemoConfig) -> Result<&Client, PageError> {
    config
        .client
        .as_ref()
        .ok_or_else(|| PageError(AppError::not_found(OFF)))
}

/// The demo client for a JSON endpoint, or a JSON 404 while the demo is off.
fn api_client(config: &DemoConfig) -> Result<&Client, AppError> {
    config
        .client
        .as_ref()
        .ok_or_else(|| AppError::not_found(OFF))
}
