//! The demo provider: a small OAuth 2.0 authorization server inside the binary,
//! so a newcomer can try the whole flow offline. Off in production.
//!
//! It behaves like a strict real provider: one confidential client (the
//! credentials of the `demo` preset), one exact redirect URI, PKCE with S256
//! required, authorization codes that work once and for 60 seconds, `iss` on
//! every redirect back (RFC 9207), rotating refresh tokens that work once (a
//! second use revokes the whole grant, as GoHighLevel, Calendly and Microsoft
//! do), revocation (RFC 7009), and two bearer endpoints, `/demo/api/me` and
//! `/demo/api/contacts`.
//!
//! Everything lives in memory, in one store per process: a restart forgets
//! every grant, and several processes do not share one. That is fine for the
//! development tool this is, and only for that.
//!
//! `TETHER_DEMO_TOKEN_TTL_SECS` sets the access-token lifetime in seconds
//! (default 3600, at most a year); it is read once, when the store is created.
//! A short lifetime shows refreshing at work.

use crate::config::Settings;
use crate::crypto::{random_token, sha256_hex, Secret};
use crate::error::{AppError, Code as ErrorCode, PageError, PageResult};
use crate::providers::Catalogue;
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use askama::Template;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

const TTL_ENV: &str = "TETHER_DEMO_TOKEN_TTL_SECS";
const DEFAULT_ACCESS_TTL_SECS: u64 = 3600;
/// Keeps `Instant + ttl` far from overflowing.
const MAX_ACCESS_TTL_SECS: u64 = 365 * 24 * 3600;
const CODE_TTL: Duration = Duration::from_secs(60);
/// How long a redeemed code is remembered after it expires, so that a replay
/// is recognised (and revokes its grant) rather than looking merely unknown.
const USED_CODE_MEMORY: Duration = Duration::from_secs(600);
/// Every legitimate form to the demo is a few hundred bytes.
const MAX_BODY: usize = 8 * 1024;
const OFF: &str = "the demo provider is off";
/// Scopes the demo knows, with the line the consent page shows for each.
const SCOPES: &[(&str, &str)] = &[
    ("profile", "See your name and email address"),
    ("contacts.read", "Read your contacts"),
];
/// What an authorization request without `scope` gets (RFC 6749 section 3.3).
const DEFAULT_SCOPE: &str = "profile";

/// The demo client: its id and its secret.
type Client = (String, Secret<String>);

/// Routes under `/demo`; they answer 404 when the demo provider is off.
/// The demo server's state for one application: created once, outside the
/// per-worker app factory, so a code issued by one worker is redeemable on another.
pub fn new_store(settings: &crate::config::Settings) -> web::Data<DemoStore> {
    web::Data::new(DemoStore::new(access_ttl(settings.var(TTL_ENV).as_deref())))
}

/// What the demo server needs to know of the deployment, and nothing more:
/// registered as app data beside the store.
pub struct DemoConfig {
    /// Tether's client at the demo, `None` while the demo provider is off.
    client: Option<Client>,
    /// The one redirect URI the demo accepts.
    redirect_uri: String,
    /// Its issuer identifier (RFC 9207 `iss`).
    issuer: String,
    /// Tether's public origin, which the consent form must come from.
    origin: String,
}

impl DemoConfig {
    pub fn new(settings: &Settings, providers: &Catalogue) -> web::Data<DemoConfig> {
        let client = settings
            .demo_provider
            .then(|| providers.get("demo").and_then(|p| p.credentials.clone()))
            .flatten();
        web::Data::new(DemoConfig {
            client,
            redirect_uri: settings.redirect_uri("demo"),
            issuer: format!("{}/demo", settings.base_url()),
            origin: settings.public_url.origin().ascii_serialization(),
        })
    }
}

/// Routes under `/demo`; the store comes from [`new_store`] and the config
/// from [`DemoConfig::new`] as app data.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/demo/oauth/authorize")
            .route(web::get().to(authorize_page))
            .route(web::post().to(authorize_decision))
            .default_service(web::to(other_method)),
    )
    .service(
        web::resource("/demo/oauth/token")
            .route(web::post().to(token))
            .default_service(web::to(other_method)),
    )
    .service(
        web::resource("/demo/oauth/revoke")
            .route(web::post().to(revoke))
            .default_service(web::to(other_method)),
    )
    .service(
        web::resource("/demo/api/me")
            .route(web::get().to(me))
            .default_service(web::to(other_method)),
    )
    .service(
        web::resource("/demo/api/contacts")
            .route(web::get().to(contacts))
            .default_service(web::to(other_method)),
    );
}

// ---------------------------------------------------------------- handlers

/// `GET /demo/oauth/authorize`: the consent page.
async fn authorize_page(
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
async fn authorize_decision(
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
async fn token(
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
async fn revoke(
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
async fn me(
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
async fn contacts(
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
async fn other_method(req: HttpRequest, config: web::Data<DemoConfig>) -> HttpResponse {
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

fn no_store(mut res: actix_web::HttpResponseBuilder) -> actix_web::HttpResponseBuilder {
    res.insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::PRAGMA, "no-cache"));
    res
}

// ------------------------------------------------------ authorization step

/// An authorization request that passed every check.
struct AuthRequest {
    client_id: String,
    redirect_uri: String,
    state: String,
    scope: Vec<&'static str>,
    code_challenge: String,
}

/// Why an authorization request is refused, and where the user learns it.
enum Rejection {
    /// The client or redirect URI is wrong: say so here and never redirect,
    /// or the demo would be an open redirector (RFC 6749 section 4.1.2.1).
    Page(AppError),
    /// Anything else goes back to the client.
    Redirect {
        error: &'static str,
        description: &'static str,
        state: Option<String>,
    },
}

impl Rejection {
    fn respond(self, config: &DemoConfig) -> PageResult<HttpResponse> {
        match self {
            Rejection::Page(err) => Err(PageError(err)),
            Rejection::Redirect {
                error,
                description,
                state,
            } => redirect_back(
                config,
                &[("error", error), ("error_description", description)],
                state.as_deref(),
            ),
        }
    }
}

impl AuthRequest {
    fn validate(params: &Params, client: &Client, config: &DemoConfig) -> Result<Self, Rejection> {
        if params.get("client_id") != Some(client.0.as_str()) {
            return Err(Rejection::Page(AppError::bad_request(
                ErrorCode::InvalidClient,
                "unknown client_id: the demo provider only knows Tether's client",
            )));
        }
        let expected = &config.redirect_uri;
        if params.get("redirect_uri") != Some(expected.as_str()) {
            return Err(Rejection::Page(AppError::bad_request(
                ErrorCode::InvalidRedirectUri,
                format!("redirect_uri must be exactly {expected}"),
            )));
        }
        let state = params.get("state").map(str::to_string);
        let fail = |error, description| Rejection::Redirect {
            error,
            description,
            state: state.clone(),
        };
        match params.get("response_type") {
            Some("code") => {}
            Some(_) => {
                return Err(fail(
                    "unsupported_response_type",
                    "the demo provider only issues authorization codes",
                ))
            }
            None => return Err(fail("invalid_request", "response_type is required")),
        }
        let Some(state_value) = state.clone() else {
            return Err(fail("invalid_request", "state is required"));
        };
        if params.get("code_challenge_method") != Some("S256") {
            return Err(fail(
                "invalid_request",
                "PKCE is required, with code_challenge_method=S256",
            ));
        }
        let Some(challenge) = params.get("code_challenge").filter(|c| valid_challenge(c)) else {
            return Err(fail(
                "invalid_request",
                "code_challenge must be the base64url SHA-256 of the code verifier",
            ));
        };
        let scope = parse_scope(params.get("scope").unwrap_or(DEFAULT_SCOPE))
            .ok_or_else(|| fail("invalid_scope", "the demo knows profile and contacts.read"))?;
        Ok(AuthRequest {
            client_id: client.0.clone(),
            redirect_uri: expected.clone(),
            state: state_value,
            scope,
            code_challenge: challenge.to_string(),
        })
    }

    /// The request again, for the consent form to send back.
    fn hidden_fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("response_type", "code".into()),
            ("client_id", self.client_id.clone()),
            ("redirect_uri", self.redirect_uri.clone()),
            ("state", self.state.clone()),
            ("scope", self.scope.join(" ")),
            ("code_challenge", self.code_challenge.clone()),
            ("code_challenge_method", "S256".into()),
        ]
    }
}

/// A 303 to the redirect URI with `pairs`, `state` and `iss`, encoded by `url`.
fn redirect_back(
    config: &DemoConfig,
    pairs: &[(&str, &str)],
    state: Option<&str>,
) -> PageResult<HttpResponse> {
    let mut url = url::Url::parse(&config.redirect_uri).map_err(AppError::internal)?;
    {
        let mut query = url.query_pairs_mut();
        for (name, value) in pairs {
            query.append_pair(name, value);
        }
        if let Some(state) = state {
            query.append_pair("state", state);
        }
        query.append_pair("iss", &config.issuer);
    }
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, url.as_str()))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .finish())
}

/// Refuses a decision posted from another page than the consent page.
/// Browsers say where a request comes from in `Sec-Fetch-Site`; older ones
/// only in `Origin`, which is `null` here because the consent page sets
/// `Referrer-Policy: no-referrer`. Clients that send neither are not browsers.
fn same_origin(req: &HttpRequest, config: &DemoConfig) -> Result<(), PageError> {
    let value = |name: &str| req.headers().get(name).map(|v| v.to_str().unwrap_or(""));
    let ours = config.origin.as_str();
    let allowed = match (value("sec-fetch-site"), value("origin")) {
        (Some(site), _) => site == "same-origin",
        (None, Some(origin)) => origin == "null" || origin == ours,
        (None, None) => true,
    };
    if allowed {
        Ok(())
    } else {
        Err(PageError(AppError::forbidden(
            "the consent form was submitted from another site",
        )))
    }
}

#[derive(Template)]
#[template(path = "demo_consent.html")]
struct ConsentPage<'a> {
    scopes: Vec<(&'static str, &'static str)>,
    redirect_uri: &'a str,
    hidden: Vec<(&'static str, String)>,
}

/// Known scopes from a space-separated list, duplicates dropped; `None` when
/// one is unknown or the list is malformed.
fn parse_scope(raw: &str) -> Option<Vec<&'static str>> {
    let mut scope = Vec::new();
    for token in raw.split(' ') {
        let (name, _) = SCOPES.iter().find(|(name, _)| *name == token)?;
        if !scope.contains(name) {
            scope.push(*name);
        }
    }
    Some(scope)
}

/// An S256 challenge is 32 bytes in base64url without padding.
fn valid_challenge(challenge: &str) -> bool {
    challenge.len() == 43
        && challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// RFC 7636 section 4.1: 43 to 128 unreserved characters.
fn valid_verifier(verifier: &str) -> bool {
    (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    computed.as_bytes().ct_eq(challenge.as_bytes()).into()
}

// ------------------------------------------------------------ token step

/// Runs the grant a token request asks for.
fn grant(
    store: &DemoStore,
    params: &Params,
    client_id: &str,
    now: Instant,
) -> Result<Tokens, OAuthError> {
    match params.get("grant_type") {
        Some("authorization_code") => {
            let code = params.require("code")?;
            let redirect_uri = params.require("redirect_uri")?;
            let verifier = params.require("code_verifier")?;
            if !valid_verifier(verifier) {
                return Err(OAuthError::invalid_request(
                    "code_verifier must be 43 to 128 unreserved characters",
                ));
            }
            store.exchange_code(client_id, code, redirect_uri, verifier, now)
        }
        Some("refresh_token") => {
            let refresh_token = params.require("refresh_token")?;
            let scope = match params.get("scope") {
                Some(raw) => Some(parse_scope(raw).ok_or_else(OAuthError::invalid_scope)?),
                None => None,
            };
            store.refresh(client_id, refresh_token, scope, now)
        }
        Some(_) => Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "the demo supports authorization_code and refresh_token",
        )),
        None => Err(OAuthError::invalid_request("grant_type is required")),
    }
}

/// The authenticated client's id: HTTP Basic or `client_id`/`client_secret`
/// in the body, never both (RFC 6749 section 2.3.1).
fn authenticate_client(
    req: &HttpRequest,
    params: &Params,
    client: &Client,
) -> Result<String, OAuthError> {
    let (id, secret) = match (basic_credentials(req)?, params.get("client_secret")) {
        (Some(_), Some(_)) => {
            return Err(OAuthError::invalid_request(
                "use one client authentication method, not two",
            ))
        }
        (Some((id, secret)), None) => {
            if params.get("client_id").is_some_and(|body_id| body_id != id) {
                return Err(OAuthError::invalid_request(
                    "client_id differs from the Basic credentials",
                ));
            }
            (id, secret)
        }
        (None, Some(secret)) => match params.get("client_id") {
            Some(id) => (id.to_string(), secret.to_string()),
            None => return Err(OAuthError::invalid_client()),
        },
        (None, None) => return Err(OAuthError::invalid_client()),
    };
    // Hashing first makes the comparison constant-time in the length, too.
    let secret_ok: bool = Sha256::digest(secret.as_bytes())
        .ct_eq(&Sha256::digest(client.1.expose().as_bytes()))
        .into();
    if secret_ok && id == client.0 {
        Ok(id)
    } else {
        Err(OAuthError::invalid_client())
    }
}

/// `Authorization: Basic` credentials, form-decoded; `None` without them.
fn basic_credentials(req: &HttpRequest) -> Result<Option<(String, String)>, OAuthError> {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| OAuthError::invalid_client())?;
    let Some((scheme, encoded)) = value.split_once(' ') else {
        return Ok(None);
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Ok(None);
    }
    let decoded = STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(OAuthError::invalid_client)?;
    let (id, secret) = decoded
        .split_once(':')
        .ok_or_else(OAuthError::invalid_client)?;
    match (form_decode(id), form_decode(secret)) {
        (Some(id), Some(secret)) => Ok(Some((id, secret))),
        _ => Err(OAuthError::invalid_client()),
    }
}

/// Undoes `application/x-www-form-urlencoded` on one value; Basic credentials
/// are encoded that way before base64 (RFC 6749 section 2.3.1).
fn form_decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let pair = bytes.get(i + 1..i + 3)?;
                out.extend(hex::decode(pair).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// Checks `Authorization: Bearer` against live access tokens and `scope`.
fn check_bearer(req: &HttpRequest, store: &DemoStore, scope: &str) -> Result<(), OAuthError> {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|token| !token.is_empty());
    let Some(token) = token else {
        return Err(OAuthError::invalid_token(
            "a bearer access token is required",
        ));
    };
    match store.access_scope(token, Instant::now()) {
        None => Err(OAuthError::invalid_token(
            "the access token is unknown, expired or revoked",
        )),
        Some(granted) if !granted.contains(&scope) => Err(OAuthError::insufficient_scope(scope)),
        Some(_) => Ok(()),
    }
}

// ------------------------------------------------------------------ input

/// Malformed input, before it means anything.
#[derive(Debug)]
struct BadInput {
    status: StatusCode,
    message: String,
}

impl BadInput {
    fn new(message: impl Into<String>) -> Self {
        BadInput {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    fn into_page(self) -> PageError {
        PageError(AppError::bad_request(
            ErrorCode::InvalidRequest,
            self.message,
        ))
    }
}

impl From<BadInput> for OAuthError {
    fn from(e: BadInput) -> Self {
        OAuthError::new(e.status, "invalid_request", e.message)
    }
}

impl From<BadInput> for actix_web::Error {
    fn from(e: BadInput) -> Self {
        OAuthError::from(e).into()
    }
}

/// Request parameters: each at most once, printable ASCII (every OAuth
/// parameter is, RFC 6749 appendix A), empty ones dropped (section 3.1).
/// No `Debug`: the values are codes, tokens and secrets.
struct Params(BTreeMap<String, String>);

impl Params {
    fn parse(raw: &[u8]) -> Result<Params, BadInput> {
        // Raw bytes beyond ASCII are not URL-encoded; decoded ones are
        // checked below (a bad UTF-8 sequence decodes to U+FFFD).
        if !raw.is_ascii() {
            return Err(BadInput::new("parameters must be URL-encoded ASCII"));
        }
        let printable = |s: &str| s.bytes().all(|b| (0x20..=0x7e).contains(&b));
        let mut params = BTreeMap::new();
        for (name, value) in url::form_urlencoded::parse(raw) {
            if !printable(&name) || !printable(&value) {
                return Err(BadInput::new(
                    "parameters must be printable ASCII once decoded",
                ));
            }
            if value.is_empty() {
                continue;
            }
            if params.contains_key(&*name) {
                // Named: parameter names are ours to echo, values are not.
                let name = if name.len() <= 32 {
                    &*name
                } else {
                    "a parameter"
                };
                return Err(BadInput::new(format!("{name} appears more than once")));
            }
            params.insert(name.into_owned(), value.into_owned());
        }
        Ok(Params(params))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    fn require(&self, name: &str) -> Result<&str, OAuthError> {
        self.get(name)
            .ok_or_else(|| OAuthError::invalid_request(format!("{name} is required")))
    }
}

/// An `application/x-www-form-urlencoded` body of at most [`MAX_BODY`] bytes.
async fn read_form(req: &HttpRequest, mut payload: web::Payload) -> Result<Params, BadInput> {
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !is_form {
        return Err(BadInput::new(
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    let mut body = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| BadInput::new("the request body could not be read"))?;
        if body.len() + chunk.len() > MAX_BODY {
            return Err(BadInput {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                message: format!("the request body is larger than {} KiB", MAX_BODY / 1024),
            });
        }
        body.extend_from_slice(&chunk);
    }
    Params::parse(&body)
}

// ------------------------------------------------------------------ errors

/// An OAuth error response: RFC 6749 section 5.2 at the token and revocation
/// endpoints, RFC 6750 section 3 at the bearer endpoints.
#[derive(Debug)]
struct OAuthError {
    status: StatusCode,
    error: &'static str,
    description: String,
    challenge: Option<String>,
}

impl OAuthError {
    fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> Self {
        OAuthError {
            status,
            error,
            description: description.into(),
            challenge: None,
        }
    }

    fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    fn invalid_grant(description: &str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_grant", description)
    }

    fn invalid_scope() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "the scope is unknown or wider than the grant",
        )
    }

    /// 401 with a challenge, which RFC 9110 requires of every 401.
    fn invalid_client() -> Self {
        OAuthError {
            challenge: Some(r#"Basic realm="demo""#.into()),
            ..Self::new(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "client authentication failed",
            )
        }
    }

    fn invalid_token(description: &str) -> Self {
        OAuthError {
            challenge: Some(r#"Bearer error="invalid_token""#.into()),
            ..Self::new(StatusCode::UNAUTHORIZED, "invalid_token", description)
        }
    }

    fn insufficient_scope(scope: &str) -> Self {
        OAuthError {
            challenge: Some(format!(
                r#"Bearer error="insufficient_scope", scope="{scope}""#
            )),
            ..Self::new(
                StatusCode::FORBIDDEN,
                "insufficient_scope",
                format!("the access token lacks the {scope} scope"),
            )
        }
    }
}

impl fmt::Display for OAuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.error, self.description)
    }
}

impl ResponseError for OAuthError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = no_store(HttpResponse::build(self.status));
        if let Some(challenge) = &self.challenge {
            res.insert_header((header::WWW_AUTHENTICATE, challenge.as_str()));
        }
        res.json(serde_json::json!({
            "error": self.error,
            "error_description": self.description,
        }))
    }
}

// ------------------------------------------------------------------- store

/// What the token endpoint answers.
#[derive(serde::Serialize)]
struct Tokens {
    access_token: String,
    token_type: &'static str,
    expires_in: u64,
    refresh_token: String,
    scope: String,
}

type GrantId = u64;

/// Codes, grants and tokens of this process, behind one lock.
pub struct DemoStore {
    access_ttl: Duration,
    inner: Mutex<Inner>,
}

/// Codes and tokens are keyed by their SHA-256: the maps hold nothing usable,
/// and a lookup's timing says nothing about a token's value.
#[derive(Default)]
struct Inner {
    codes: HashMap<String, Code>,
    grants: HashMap<GrantId, Grant>,
    access: HashMap<String, Access>,
    refresh: HashMap<String, Refresh>,
    next_grant: GrantId,
}

struct Code {
    client_id: String,
    redirect_uri: String,
    scope: Vec<&'static str>,
    challenge: String,
    expires_at: Instant,
    redeemed: bool,
    /// The grant this code produced, revoked if the code is replayed.
    grant: Option<GrantId>,
}

/// One user's consent to one client: every token descends from it.
struct Grant {
    client_id: String,
    scope: Vec<&'static str>,
}

struct Access {
    grant: GrantId,
    scope: Vec<&'static str>,
    expires_at: Instant,
}

struct Refresh {
    grant: GrantId,
    /// Rotated away: presenting it again is a replay.
    retired: bool,
}

impl DemoStore {
    fn new(access_ttl: Duration) -> Self {
        DemoStore {
            access_ttl,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // No method leaves the maps half-updated, so a panic elsewhere while
        // holding the lock does not make them unusable.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new single-use code for an approved request.
    fn issue_code(&self, request: &AuthRequest, now: Instant) -> String {
        let code = random_token(32);
        let mut inner = self.lock();
        inner.prune(now);
        inner.codes.insert(
            sha256_hex(code.as_bytes()),
            Code {
                client_id: request.client_id.clone(),
                redirect_uri: request.redirect_uri.clone(),
                scope: request.scope.clone(),
                challenge: request.code_challenge.clone(),
                expires_at: now + CODE_TTL,
                redeemed: false,
                grant: None,
            },
        );
        code
    }

    /// Redeems a code. Any attempt uses it up; a replay revokes its grant.
    fn exchange_code(
        &self,
        client_id: &str,
        code: &str,
        redirect_uri: &str,
        verifier: &str,
        now: Instant,
    ) -> Result<Tokens, OAuthError> {
        let key = sha256_hex(code.as_bytes());
        let mut inner = self.lock();
        inner.prune(now);
        let Some(entry) = inner.codes.get_mut(&key) else {
            return Err(OAuthError::invalid_grant(
                "the authorization code is unknown or expired",
            ));
        };
        if entry.redeemed {
            // A code seen twice has leaked: withdraw what it gave (RFC 6749
            // section 4.1.2).
            if let Some(grant) = entry.grant.take() {
                inner.revoke_grant(grant);
                log::warn!(
                    "demo provider: an authorization code was replayed; grant {grant} revoked"
                );
            }
            return Err(OAuthError::invalid_grant(
                "the authorization code was already used",
            ));
        }
        entry.redeemed = true;
        if entry.expires_at <= now {
            return Err(OAuthError::invalid_grant(
                "the authorization code is unknown or expired",
            ));
        }
        if entry.client_id != client_id {
            return Err(OAuthError::invalid_grant(
                "the authorization code was issued to another client",
            ));
        }
        if entry.redirect_uri != redirect_uri {
            return Err(OAuthError::invalid_grant(
                "redirect_uri differs from the authorization request",
            ));
        }
        if !pkce_matches(verifier, &entry.challenge) {
            return Err(OAuthError::invalid_grant(
                "code_verifier does not match the code_challenge",
            ));
        }
        let scope = entry.scope.clone();
        let grant = inner.next_grant;
        inner.next_grant += 1;
        inner.grants.insert(
            grant,
            Grant {
                client_id: client_id.to_string(),
                scope: scope.clone(),
            },
        );
        if let Some(entry) = inner.codes.get_mut(&key) {
            entry.grant = Some(grant);
        }
        Ok(inner.issue_tokens(grant, scope, self.access_ttl, now))
    }

    /// Rotates a refresh token: new access and refresh tokens, the old refresh
    /// token retired. A retired one presented again revokes the whole grant.
    fn refresh(
        &self,
        client_id: &str,
        refresh_token: &str,
        scope: Option<Vec<&'static str>>,
        now: Instant,
    ) -> Result<Tokens, OAuthError> {
        let key = sha256_hex(refresh_token.as_bytes());
        let mut inner = self.lock();
        inner.prune(now);
        let Some(entry) = inner.refresh.get(&key) else {
            return Err(OAuthError::invalid_grant(
                "the refresh token is unknown or revoked",
            ));
        };
        let grant_id = entry.grant;
        if entry.retired {
            // Two holders of one refresh token: one of them stole it, and we
            // cannot tell which, so neither keeps access.
            inner.revoke_grant(grant_id);
            log::warn!(
                "demo provider: a rotated refresh token was reused; grant {grant_id} revoked"
            );
            return Err(OAuthError::invalid_grant(
                "the refresh token was already used; the grant is revoked",
            ));
        }
        let Some(grant) = inner.grants.get(&grant_id) else {
            return Err(OAuthError::invalid_grant(
                "the refresh token is unknown or revoked",
            ));
        };
        if grant.client_id != client_id {
            return Err(OAuthError::invalid_grant(
                "the refresh token was issued to another client",
            ));
        }
        // A refresh may narrow the scope, never widen it (RFC 6749 section 6).
        let scope = match scope {
            None => grant.scope.clone(),
            Some(asked) if asked.iter().all(|s| grant.scope.contains(s)) => asked,
            Some(_) => return Err(OAuthError::invalid_scope()),
        };
        if let Some(entry) = inner.refresh.get_mut(&key) {
            entry.retired = true;
        }
        Ok(inner.issue_tokens(grant_id, scope, self.access_ttl, now))
    }

    /// Revokes the grant of an access or refresh token issued to `client_id`;
    /// anything else is ignored, as RFC 7009 section 2.2 asks.
    fn revoke(&self, client_id: &str, token: &str) {
        let key = sha256_hex(token.as_bytes());
        let mut inner = self.lock();
        let grant = inner
            .access
            .get(&key)
            .map(|a| a.grant)
            .or_else(|| inner.refresh.get(&key).map(|r| r.grant));
        if let Some(grant) = grant {
            if inner
                .grants
                .get(&grant)
                .is_some_and(|g| g.client_id == client_id)
            {
                inner.revoke_grant(grant);
            }
        }
    }

    /// The scope of a live access token.
    fn access_scope(&self, token: &str, now: Instant) -> Option<Vec<&'static str>> {
        let inner = self.lock();
        inner
            .access
            .get(&sha256_hex(token.as_bytes()))
            .filter(|a| a.expires_at > now)
            .map(|a| a.scope.clone())
    }
}

impl Inner {
    fn issue_tokens(
        &mut self,
        grant: GrantId,
        scope: Vec<&'static str>,
        ttl: Duration,
        now: Instant,
    ) -> Tokens {
        let access_token = random_token(32);
        let refresh_token = random_token(32);
        let scope_text = scope.join(" ");
        self.access.insert(
            sha256_hex(access_token.as_bytes()),
            Access {
                grant,
                scope,
                expires_at: now + ttl,
            },
        );
        self.refresh.insert(
            sha256_hex(refresh_token.as_bytes()),
            Refresh {
                grant,
                retired: false,
            },
        );
        Tokens {
            access_token,
            token_type: "Bearer",
            expires_in: ttl.as_secs(),
            refresh_token,
            scope: scope_text,
        }
    }

    /// Every access and refresh token of the grant stops working.
    fn revoke_grant(&mut self, grant: GrantId) {
        self.grants.remove(&grant);
        self.access.retain(|_, a| a.grant != grant);
        self.refresh.retain(|_, r| r.grant != grant);
    }

    /// Forgets expired codes and access tokens, so memory stays bounded by use.
    fn prune(&mut self, now: Instant) {
        self.codes.retain(|_, c| {
            if c.redeemed {
                c.expires_at + USED_CODE_MEMORY > now
            } else {
                c.expires_at > now
            }
        });
        self.access.retain(|_, a| a.expires_at > now);
    }
}

/// The access-token lifetime from `TETHER_DEMO_TOKEN_TTL_SECS`, else an hour.
fn access_ttl(value: Option<&str>) -> Duration {
    let default = Duration::from_secs(DEFAULT_ACCESS_TTL_SECS);
    let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return default;
    };
    match value.parse::<u64>() {
        Ok(secs) if (1..=MAX_ACCESS_TTL_SECS).contains(&secs) => Duration::from_secs(secs),
        _ => {
            log::warn!(
                "{TTL_ENV} must be whole seconds from 1 to {MAX_ACCESS_TTL_SECS}; using {DEFAULT_ACCESS_TTL_SECS}"
            );
            default
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VERIFIER: &str = "a-verifier-that-is-long-enough-for-rfc-7636-pkce";

    fn request() -> AuthRequest {
        AuthRequest {
            client_id: "tether-demo".into(),
            redirect_uri: "http://127.0.0.1:8080/oauth/demo/callback".into(),
            state: "s".into(),
            scope: vec!["profile"],
            code_challenge: URL_SAFE_NO_PAD.encode(Sha256::digest(VERIFIER.as_bytes())),
        }
    }

    fn tokens(store: &DemoStore, now: Instant) -> Tokens {
        let req = request();
        let code = store.issue_code(&req, now);
        store
            .exchange_code(&req.client_id, &code, &req.redirect_uri, VERIFIER, now)
            .unwrap()
    }

    #[test]
    fn a_code_expires_after_a_minute() {
        let store = DemoStore::new(Duration::from_secs(3600));
        let req = request();
        let now = Instant::now();
        let code = store.issue_code(&req, now);
        let later = now + Duration::from_secs(61);
        let err = store
            .exchange_code(&req.client_id, &code, &req.redirect_uri, VERIFIER, later)
            .err()
            .unwrap();
        assert_eq!(err.error, "invalid_grant");
    }

    #[test]
    fn access_tokens_expire_after_the_configured_lifetime() {
        let store = DemoStore::new(Duration::from_secs(5));
        let now = Instant::now();
        let t = tokens(&store, now);
        assert_eq!(t.expires_in, 5);
        assert!(store.access_scope(&t.access_token, now).is_some());
        let later = now + Duration::from_secs(5);
        assert!(store.access_scope(&t.access_token, later).is_none());
    }

    #[test]
    fn refresh_can_narrow_but_not_widen_the_scope() {
        let store = DemoStore::new(Duration::from_secs(60));
        let now = Instant::now();
        let t = tokens(&store, now);
        let err = store
            .refresh(
                "tether-demo",
                &t.refresh_token,
                Some(vec!["contacts.read"]),
                now,
            )
            .err()
            .unwrap();
        assert_eq!(err.error, "invalid_scope");
        // A refused request leaves the refresh token usable.
        let t2 = store
            .refresh("tether-demo", &t.refresh_token, Some(vec!["profile"]), now)
            .unwrap();
        assert_eq!(t2.scope, "profile");
    }

    #[test]
    fn the_store_keeps_no_token_in_the_clear() {
        let store = DemoStore::new(Duration::from_secs(60));
        let t = tokens(&store, Instant::now());
        let inner = store.lock();
        assert!(!inner.access.contains_key(&t.access_token));
        assert!(!inner.refresh.contains_key(&t.refresh_token));
    }

    #[test]
    fn ttl_comes_from_the_environment_value_or_defaults_to_an_hour() {
        assert_eq!(access_ttl(None), Duration::from_secs(3600));
        assert_eq!(access_ttl(Some("")), Duration::from_secs(3600));
        assert_eq!(access_ttl(Some(" 90 ")), Duration::from_secs(90));
        assert_eq!(access_ttl(Some("0")), Duration::from_secs(3600));
        assert_eq!(access_ttl(Some("-5")), Duration::from_secs(3600));
        assert_eq!(
            access_ttl(Some("99999999999999")),
            Duration::from_secs(3600)
        );
    }

    #[test]
    fn params_reject_repeats_and_non_ascii_and_drop_empty_values() {
        assert!(Params::parse(b"a=1&a=2").is_err());
        assert!(Params::parse("a=\u{e9}".as_bytes()).is_err());
        assert!(Params::parse(b"a=%FF").is_err());
        assert!(Params::parse(b"a=%0A").is_err());
        let p = Params::parse(b"a=&b=x+y%21").unwrap();
        assert_eq!(p.get("a"), None);
        assert_eq!(p.get("b"), Some("x y!"));
    }

    #[test]
    fn scopes_must_be_known_and_single_spaced() {
        assert_eq!(
            parse_scope("profile contacts.read profile"),
            Some(vec!["profile", "contacts.read"])
        );
        assert_eq!(parse_scope("profile  contacts.read"), None);
        assert_eq!(parse_scope("admin"), None);
    }

    #[test]
    fn basic_credentials_are_form_decoded() {
        assert_eq!(form_decode("a%3Ab+c").as_deref(), Some("a:b c"));
        assert_eq!(form_decode("%zz"), None);
        assert_eq!(form_decode("%4"), None);
        assert_eq!(form_decode("%FF"), None);
    }

    #[test]
    fn pkce_verifiers_and_challenges_are_checked() {
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(VERIFIER.as_bytes()));
        assert!(valid_challenge(&challenge));
        assert!(valid_verifier(VERIFIER));
        assert!(pkce_matches(VERIFIER, &challenge));
        assert!(!pkce_matches(&format!("{VERIFIER}x"), &challenge));
        assert!(!valid_verifier("short"));
        assert!(!valid_challenge("plain-text-challenge"));
    }
}
