//! Browser OAuth routes: authorize, callback, refresh, status, disconnect.
//! The tenant always comes from the session, never from the request.

use super::http::{account_param, client_addr, html, see_other};
use super::pages::public_status;
use super::session::{self, AdminSession, CsrfForm};
use crate::db::models::event::{EventKind, NewEvent};

use crate::app::App;
use crate::db::models::connection::{unknown_account, Connection};
use crate::error::{AppError, AppResult, PageError, PageResult};
use crate::oauth::{self, CallbackQuery, DASHBOARD};
use crate::providers::Provider;
use actix_session::Session;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/oauth/{provider}/authorize", web::get().to(authorize))
        .route("/oauth/{provider}/callback", web::get().to(callback))
        .route("/oauth/{provider}/refresh", web::post().to(refresh))
        .route("/oauth/{provider}/status", web::get().to(status))
        .route("/oauth/{provider}/disconnect", web::post().to(disconnect))
        .route("/oauth/{provider}/default", web::post().to(make_default))
        .route(
            "/oauth/{provider}/instance",
            web::post().to(connect_instance),
        )
        .route("/connect/done", web::get().to(connect_done))
        .route("/connect/{token}", web::get().to(connect_with_link));
}

/// The enabled provider named in the path, or a 404.
fn rate_limit(state: &App, req: &HttpRequest) -> AppResult<()> {
    state
        .oauth_limiter
        .check(&format!("oauth:{}", client_addr(req)))
        .map_err(AppError::too_many_requests)
}

#[derive(serde::Deserialize)]
struct AuthorizeQuery {
    popup: Option<String>,
    return_to: Option<String>,
}

async fn authorize(
    req: HttpRequest,
    state: web::Data<App>,
    admin: AdminSession,
    path: web::Path<String>,
    query: web::Query<AuthorizeQuery>,
) -> PageResult<HttpResponse> {
    rate_limit(&state, &req)?;
    let provider = state.enabled_provider(&path)?;
    let return_to = match &query.return_to {
        Some(r) => oauth::safe_return_to(r)?,
        None => DASHBOARD.to_string(),
    };
    let popup = query.popup.as_deref() == Some("1");
    let binding = admin.binding()?;
    let (tenant_id, user_id) = (admin.tenant_id.clone(), admin.user_id.clone());
    let (keys, settings) = (state.keys.clone(), state.settings.clone());
    let url = state
        .db(move |c| {
            let who = oauth::Initiator {
                tenant_id: &tenant_id,
                user_id: Some(&user_id),
                session_binding: Some(&binding),
            };
            oauth::start(
                c,
                &keys,
                &settings,
                &provider,
                &who,
                Some(&return_to),
                popup,
            )
        })
        .await?;
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, url))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .finish())
}

/// Where a connect link's flow ends.
const LINK_DONE: &str = "/connect/done";

/// `GET /connect/{token}`: a person following a connect link (no sign-in).
/// The link is used up, and the state is bound to this browser session.
async fn connect_with_link(
    req: HttpRequest,
    state: web::Data<App>,
    session: Session,
    path: web::Path<String>,
) -> PageResult<HttpResponse> {
    rate_limit(&state, &req)?;
    let token = path.into_inner();
    let link = state
        .db(move |c| {
            Ok(crate::db::models::connect_link::ConnectLink::redeem(
                c, &token,
            )?)
        })
        .await?
        .ok_or_else(|| {
            AppError::bad_request(
                "invalid_link",
                "This link is not valid: it was already used or has expired. Ask for a new one.",
            )
        })?;
    let provider = state.enabled_provider(&link.provider)?;
    let binding = crate::crypto::random_token(32);
    session::bind_oauth(&session, &binding)?;
    let (keys, settings) = (state.keys.clone(), state.settings.clone());
    let url = state
        .db(move |c| {
            let who = oauth::Initiator {
                tenant_id: &link.tenant_id,
                user_id: None,
                session_binding: Some(&binding),
            };
            oauth::start(c, &keys, &settings, &provider, &who, Some(LINK_DONE), false)
        })
        .await?;
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, url))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .finish())
}

#[derive(Template)]
#[template(path = "link_done.html")]
struct LinkDone {
    flash: Option<session::Flash>,
}

async fn connect_done(session: Session) -> PageResult<HttpResponse> {
    let body = LinkDone {
        flash: session::take_flash(&session),
    }
    .render()
    .map_err(AppError::internal)?;
    Ok(html(body))
}

#[derive(Template)]
#[template(path = "popup_result.html")]
struct PopupResult<'a> {
    provider: &'a str,
    ok: bool,
    message: &'a str,
    return_to: &'a str,
}

/// The end of a popup flow: a tiny page that tells the opener and closes.
fn popup_page(
    provider: &str,
    ok: bool,
    message: &str,
    return_to: &str,
) -> PageResult<HttpResponse> {
    let body = PopupResult {
        provider,
        ok,
        message,
        return_to,
    }
    .render()
    .map_err(AppError::internal)?;
    Ok(HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(body))
}

/// Callback errors carry `Referrer-Policy: no-referrer` too: the URL holds a code.
fn callback_error(err: AppError) -> HttpResponse {
    let mut res = actix_web::ResponseError::error_response(&PageError(err));
    res.headers_mut().insert(
        header::REFERRER_POLICY,
        header::HeaderValue::from_static("no-referrer"),
    );
    res
}

async fn callback(
    req: HttpRequest,
    state: web::Data<App>,
    session: Session,
    path: web::Path<String>,
    query: web::Query<CallbackQuery>,
) -> HttpResponse {
    match finish_callback(&req, &state, &session, &path, query.into_inner()).await {
        Ok(res) => res,
        Err(PageError(e)) => callback_error(e),
    }
}

async fn finish_callback(
    req: &HttpRequest,
    state: &App,
    session: &Session,
    provider_key: &str,
    query: CallbackQuery,
) -> PageResult<HttpResponse> {
    rate_limit(state, req)?;
    let provider = state.enabled_provider(provider_key)?;
    let binding = session::oauth_binding(session);
    let query = std::sync::Arc::new(query);
    let row = {
        let (p, q) = (provider.clone(), query.clone());
        state
            .db(move |c| oauth::check_callback(c, &p, &q, binding.as_deref()))
            .await?
    };
    let return_to = row.return_to.clone().unwrap_or_else(|| DASHBOARD.into());
    let actor = match &row.user_id {
        Some(_) => session
            .get::<String>("email")
            .ok()
            .flatten()
            .map_or_else(|| "admin".to_string(), |e| format!("admin:{e}")),
        None => "connect-link".to_string(),
    };
    {
        let row = row.clone();
        state.db(move |c| oauth::consume(c, &row)).await?;
    }
    if let Some(error) = &query.error {
        // Declined (or failed) at the provider: whatever was connected stays as it was.
        let message = if error == "access_denied" {
            format!(
                "You declined the connection at {}. Nothing was changed.",
                provider.display_name
            )
        } else {
            format!(
                "{} did not complete the connection ({}). Nothing was changed.",
                provider.display_name,
                short(error)
            )
        };
        log::info!(
            "authorization not granted tenant={} provider={} error={}",
            row.tenant_id,
            provider.key,
            short(error)
        );
        return finish(
            session,
            &provider.key,
            row.popup,
            false,
            &message,
            &return_to,
        );
    }
    let code = query.code.clone().unwrap_or_default();
    let verifier = row.verifier(&state.keys)?;
    let authorized = oauth::exchange(
        &state.http,
        &provider,
        &row.redirect_uri,
        &code,
        verifier.as_ref(),
    )
    .await?;
    let (keys, settings, p, tenant_id) = (
        state.keys.clone(),
        state.settings.clone(),
        provider.clone(),
        row.tenant_id.clone(),
    );
    let (connection, reconnected) = state
        .db(move |c| oauth::save(c, &keys, &settings, &p, &tenant_id, &authorized, &actor))
        .await?;
    state
        .tokens
        .forget(&connection.tenant_id, &connection.provider);
    log::info!(
        "connected tenant={} provider={} connection={}",
        row.tenant_id,
        provider.key,
        connection.id
    );
    let message = connected_message(&provider, &connection, reconnected);
    finish(
        session,
        &provider.key,
        row.popup,
        true,
        &message,
        &return_to,
    )
}

/// "Connected Acme CRM as Main Street Dental." for the person who did it.
fn connected_message(provider: &Provider, connection: &Connection, reconnected: bool) -> String {
    let who = connection
        .account_name
        .as_deref()
        .unwrap_or(&connection.account_id);
    let verb = if reconnected {
        "Reconnected"
    } else {
        "Connected"
    };
    format!("{verb} {} as {who}.", provider.display_name)
}

fn short(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic())
        .take(64)
        .collect()
}

fn finish(
    session: &Session,
    provider: &str,
    popup: bool,
    ok: bool,
    message: &str,
    return_to: &str,
) -> PageResult<HttpResponse> {
    if popup {
        return popup_page(provider, ok, message, return_to);
    }
    session::flash(session, if ok { "ok" } else { "warn" }, message);
    let mut res = see_other(return_to);
    res.headers_mut().insert(
        header::REFERRER_POLICY,
        header::HeaderValue::from_static("no-referrer"),
    );
    Ok(res)
}

#[derive(serde::Deserialize)]
struct InstanceForm {
    instance_id: String,
}

/// Connects a site instance of a client-credentials provider (Wix apps).
async fn connect_instance(
    req: HttpRequest,
    state: web::Data<App>,
    admin: AdminSession,
    path: web::Path<String>,
    CsrfForm(form): CsrfForm<InstanceForm>,
) -> PageResult<HttpResponse> {
    rate_limit(&state, &req)?;
    let provider = state.enabled_provider(&path)?;
    if provider.flow != crate::providers::Flow::ClientCredentials {
        return Err(AppError::bad_request(
            "unsupported_flow",
            "this provider connects through its sign-in page",
        )
        .into());
    }
    let authorized =
        oauth::connect_instance(&state.http, &provider, form.instance_id.trim()).await?;
    let (keys, settings, p, tenant_id, actor) = (
        state.keys.clone(),
        state.settings.clone(),
        provider.clone(),
        admin.tenant_id.clone(),
        admin.actor(),
    );
    let (connection, reconnected) = state
        .db(move |c| oauth::save(c, &keys, &settings, &p, &tenant_id, &authorized, &actor))
        .await?;
    state
        .tokens
        .forget(&connection.tenant_id, &connection.provider);
    session::flash(
        &admin.session,
        "ok",
        connected_message(&provider, &connection, reconnected),
    );
    Ok(see_other(DASHBOARD))
}

/// The form of the per-account buttons: the account (its provider id, in a
/// hidden field; none means the default); the CSRF field is `CsrfForm`'s.
#[derive(serde::Deserialize)]
struct AccountForm {
    account: Option<String>,
}

/// The tenant's connected account of the provider (the named one, else the
/// default), or a 404 that says which of the two is missing.
pub async fn connection(
    state: &App,
    tenant_id: &str,
    provider: &str,
    account: Option<&str>,
) -> AppResult<Connection> {
    let (t, p, a) = (
        tenant_id.to_string(),
        provider.to_string(),
        account.map(str::to_string),
    );
    state
        .db(move |c| {
            Connection::lookup(c, &t, &p, a.as_deref())?
                .filter(|c| c.token_ciphertext.is_some())
                .ok_or_else(|| match a {
                    None => AppError::not_found("this provider is not connected"),
                    Some(_) => unknown_account(),
                })
        })
        .await
}

async fn refresh(
    state: web::Data<App>,
    admin: AdminSession,
    path: web::Path<String>,
    CsrfForm(form): CsrfForm<AccountForm>,
) -> PageResult<HttpResponse> {
    let provider = state.enabled_provider(&path)?;
    let account = account_param(form.account.as_deref())?;
    let connection = connection(&state, &admin.tenant_id, &provider.key, account).await?;
    match crate::refresh::refresh_now(&state, &connection.id, &admin.actor(), None).await {
        Ok(_) => session::flash(
            &admin.session,
            "ok",
            format!(
                "{} tokens refreshed for {}.",
                provider.display_name,
                connection.label()
            ),
        ),
        Err(e) => session::flash(
            &admin.session,
            "error",
            format!("Refresh failed: {}", e.message()),
        ),
    }
    Ok(see_other(DASHBOARD))
}

/// `POST /oauth/{provider}/default`: the admin picks the default account.
async fn make_default(
    state: web::Data<App>,
    admin: AdminSession,
    path: web::Path<String>,
    CsrfForm(form): CsrfForm<AccountForm>,
) -> PageResult<HttpResponse> {
    let provider = state.enabled_provider(&path)?;
    let account = account_param(form.account.as_deref())?.ok_or_else(|| {
        AppError::bad_request("invalid_account", "choose the account to make the default")
    })?;
    let chosen =
        choose_default(&state, &admin.tenant_id, &provider, account, &admin.actor()).await?;
    session::flash(
        &admin.session,
        "ok",
        format!(
            "{} is now the default {} account.",
            chosen.label(),
            provider.display_name
        ),
    );
    Ok(see_other(DASHBOARD))
}

/// Makes the tenant's connected `account` of `provider` its default.
pub async fn choose_default(
    state: &App,
    tenant_id: &str,
    provider: &Provider,
    account: &str,
    actor: &str,
) -> AppResult<Connection> {
    let target = connection(state, tenant_id, &provider.key, Some(account)).await?;
    let id = target.id.clone();
    let chosen = state.db(move |c| Connection::make_default(c, &id)).await?;
    state.tokens.forget(tenant_id, &provider.key);
    log::info!(
        "default account changed tenant={tenant_id} provider={} connection={} actor={actor}",
        provider.key,
        chosen.id
    );
    Ok(chosen)
}

/// The status document of DESIGN.md section 9 for one account, shared with
/// the internal API.
pub fn status_json(provider: &str, c: Option<&Connection>) -> serde_json::Value {
    let live = c.filter(|c| c.token_ciphertext.is_some());
    let iso = |t: Option<chrono::NaiveDateTime>| {
        t.map(|t| {
            t.and_utc()
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        })
    };
    serde_json::json!({
        "provider": provider,
        "status": public_status(c),
        "account": live.map(|c| serde_json::json!({"id": c.account_id, "name": c.account_name})),
        "default": live.is_some_and(|c| c.is_default),
        "scopes": live.map(Connection::scopes).unwrap_or_default(),
        "expires_at": iso(live.and_then(|c| c.expires_at)),
        "last_refreshed_at": iso(live.and_then(|c| c.last_refreshed_at)),
        "metadata": live.map_or_else(|| serde_json::json!({}), Connection::metadata),
        "last_error": live.and_then(|c| c.last_error.clone()),
    })
}

/// A provider's status: the default account's document (as
/// [`status_json`]) plus every connected account, from
/// [`Connection::accounts`] (default first).
pub fn provider_status_json(provider: &str, accounts: &[Connection]) -> serde_json::Value {
    let default = accounts.first().filter(|c| c.is_default);
    let mut doc = status_json(provider, default);
    doc["accounts"] = accounts
        .iter()
        .map(|c| {
            serde_json::json!({
                "id": c.account_id,
                "name": c.account_name,
                "status": public_status(Some(c)),
                "default": c.is_default,
            })
        })
        .collect();
    doc
}

/// The status of one named account, or of the provider (default and list).
pub fn load_status(
    c: &mut crate::db::DbConn,
    tenant_id: &str,
    provider: &str,
    account: Option<&str>,
) -> AppResult<serde_json::Value> {
    match account {
        Some(a) => {
            let row =
                Connection::for_account(c, tenant_id, provider, a)?.ok_or_else(unknown_account)?;
            Ok(status_json(provider, Some(&row)))
        }
        None => Ok(provider_status_json(
            provider,
            &Connection::accounts(c, tenant_id, provider)?,
        )),
    }
}

#[derive(serde::Deserialize)]
struct StatusQuery {
    account: Option<String>,
}

async fn status(
    state: web::Data<App>,
    admin: AdminSession,
    path: web::Path<String>,
    query: web::Query<StatusQuery>,
) -> AppResult<HttpResponse> {
    let provider = state.enabled_provider(&path)?;
    let account = account_param(query.account.as_deref())?.map(str::to_string);
    let (t, p) = (admin.tenant_id.clone(), provider.key.clone());
    let doc = state
        .db(move |c| load_status(c, &t, &p, account.as_deref()))
        .await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(doc))
}

async fn disconnect(
    state: web::Data<App>,
    admin: AdminSession,
    path: web::Path<String>,
    CsrfForm(form): CsrfForm<AccountForm>,
) -> PageResult<HttpResponse> {
    let provider = state.enabled_provider(&path)?;
    let account = account_param(form.account.as_deref())?;
    let done =
        disconnect_connection(&state, &admin.tenant_id, &provider, account, &admin.actor()).await?;
    session::flash(&admin.session, "ok", done.message);
    Ok(see_other(DASHBOARD))
}

/// What a disconnect did.
pub struct Disconnected {
    /// For the person: revoked or not, and what to do.
    pub message: String,
    /// The provider account id that was disconnected.
    pub account_id: String,
    /// The default account afterwards; `None`: the provider is not connected.
    pub default: Option<Connection>,
}

/// Revokes at the provider where it can (RFC 7009), then erases the tokens,
/// even when revocation fails. `account` names the account (`None`: the
/// default); when the default goes, the earliest-connected other account
/// becomes the default (see [`Connection::erase`]).
pub async fn disconnect_connection(
    state: &App,
    tenant_id: &str,
    provider: &Provider,
    account: Option<&str>,
    actor: &str,
) -> AppResult<Disconnected> {
    let connection = connection(state, tenant_id, &provider.key, account).await?;
    // Tokens that no longer open (a lost key, a damaged row) cannot be
    // revoked, but must still be erasable.
    let revoked = match connection.tokens(&state.keys) {
        Ok(Some(tokens)) => {
            let (token, hint) = match &tokens.refresh_token {
                Some(rt) => (rt.expose().clone(), "refresh_token"),
                None => (tokens.access_token.expose().clone(), "access_token"),
            };
            oauth::client::revoke(&state.http, provider, &token, hint).await
        }
        Ok(None) => Ok(false),
        Err(e) => {
            log::error!(
                "connection {} does not open ({e}); erasing without revocation",
                connection.id
            );
            Err(oauth::client::ProviderError::Refused {
                error: "the stored tokens could not be decrypted".into(),
            })
        }
    };
    let (outcome, detail) = match &revoked {
        Ok(true) => (format!("Disconnected {} ({}); the provider revoked the access.", provider.display_name, connection.label()), None),
        Ok(false) => (
            format!(
                "Disconnected {} ({}). It offers no way to revoke access from here: remove Tether in your {} account settings too.",
                provider.display_name, connection.label(), provider.display_name
            ),
            None,
        ),
        Err(e) => (
            format!(
                "Disconnected {} ({}) and erased its tokens, but the provider did not confirm the revocation: remove Tether in your {} account settings too.",
                provider.display_name, connection.label(), provider.display_name
            ),
            Some(format!("revocation failed: {e}")),
        ),
    };
    let (id, t, p, actor) = (
        connection.id.clone(),
        connection.tenant_id.clone(),
        provider.key.clone(),
        actor.to_string(),
    );
    let was_revoked = matches!(revoked, Ok(true));
    let notify = state.settings.webhook.is_some();
    let default = state
        .db(move |c| {
            let default = Connection::erase(c, &id)?;
            let event = NewEvent {
                tenant_id: &t,
                connection_id: Some(&id),
                provider: &p,
                kind: EventKind::Revoked,
                actor: &actor,
                detail: None,
            };
            if was_revoked {
                crate::webhooks::record(c, notify, &event)?;
            }
            crate::webhooks::record(
                c,
                notify,
                &NewEvent {
                    kind: EventKind::Disconnected,
                    detail: detail.as_deref(),
                    ..event
                },
            )?;
            Ok(default)
        })
        .await?;
    state.tokens.forget(&connection.tenant_id, &provider.key);
    log::info!(
        "disconnected tenant={} provider={} connection={}",
        connection.tenant_id,
        provider.key,
        connection.id
    );
    let message = match (&default, connection.is_default) {
        (Some(d), true) => format!("{outcome} {} is now the default account.", d.label()),
        _ => outcome,
    };
    Ok(Disconnected {
        message,
        account_id: connection.account_id,
        default,
    })
}
