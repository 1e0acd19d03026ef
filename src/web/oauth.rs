//! Browser OAuth routes: authorize, callback, refresh, status, disconnect.
//! The tenant always comes from the session, never from the request.

use super::http::{
    account_param, back_to_card, client_addr, html, no_referrer, redirect_no_referrer, see_other,
};
use super::session::{self, AdminSession, CsrfForm, FlashKind, NoFields};
use super::when::{self, Moment};

use crate::app::App;
use crate::connections::connect::{self, Completion, Starter};
use crate::connections::installs::{self, Received};
use crate::connections::{links, manage, status};
use crate::db::models::connection::Connection;
use crate::error::{AppError, AppResult, Code, PageError, PageResult};
use crate::oauth::{self, CallbackQuery, DASHBOARD};
use actix_session::Session;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/oauth/{provider}/authorize", web::post().to(authorize))
        .route("/oauth/{provider}/callback", web::get().to(callback))
        .route("/oauth/{provider}/refresh", web::post().to(refresh))
        .route("/oauth/{provider}/status", web::get().to(status))
        .route("/oauth/{provider}/disconnect", web::post().to(disconnect))
        .route("/oauth/{provider}/default", web::post().to(make_default))
        .route("/oauth/{provider}/install", web::get().to(install_page))
        .route("/oauth/{provider}/install", web::post().to(install))
        .route("/oauth/{provider}/claim", web::get().to(claim_page))
        .route("/oauth/{provider}/claim", web::post().to(claim))
        .route("/connect/done", web::get().to(connect_done))
        .route(
            "/connect/session/{token}/{provider}",
            web::get().to(connect_session_page),
        )
        .route(
            "/connect/session/{token}/{provider}",
            web::post().to(connect_with_session),
        )
        .route("/connect/{token}", web::get().to(connect_link_page))
        .route("/connect/{token}", web::post().to(connect_with_link));
}

/// The enabled provider named in the path, or a 404.
fn rate_limit(state: &App, req: &HttpRequest) -> AppResult<()> {
    state
        .oauth_limiter
        .check(&format!(
            "oauth:{}",
            client_addr(req, &state.settings.trusted_proxies)
        ))
        .map_err(AppError::too_many_requests)
}

#[derive(serde::Deserialize)]
struct AuthorizeForm {
    popup: Option<String>,
    return_to: Option<String>,
    /// Reconnect of this connected account: the provider is sent its login
    /// hint, if it takes one.
    account: Option<String>,
}

/// `POST /oauth/{provider}/authorize`: Connect or Reconnect, from the card's
/// form (a POST with the CSRF token, so no other site can start a flow in
/// an admin's browser).
async fn authorize(
    req: HttpRequest,
    state: web::Data<App>,
    admin: AdminSession,
    path: web::Path<String>,
    CsrfForm(query): CsrfForm<AuthorizeForm>,
) -> PageResult<HttpResponse> {
    rate_limit(&state, &req)?;
    let provider = state.enabled_provider(&path)?;
    let return_to = match &query.return_to {
        Some(r) => oauth::safe_return_to(r)?,
        None => DASHBOARD.to_string(),
    };
    let popup = query.popup.as_deref() == Some("1");
    let reconnect_account = account_param(query.account.as_deref())?;
    let login_hint = match reconnect_account.clone() {
        Some(account) => {
            let (tenant, key) = (admin.tenant_id.clone(), provider.key.clone());
            let row = state
                .db(move |c| Ok(Connection::find(c, &tenant, &key, &account)?))
                .await?
                .ok_or_else(|| {
                    AppError::not_connected_because(format!(
                        "That {} account is not connected here. Use Connect to add it.",
                        provider.display_name
                    ))
                })?;
            connect::login_hint(&provider, &row)
        }
        None => None,
    };
    let starter = Starter {
        tenant_id: admin.tenant_id.clone(),
        user_id: Some(admin.user_id.clone()),
        binding: admin.binding()?,
        ask_consent: false,
        tags: None,
        embed_origin: None,
        login_hint,
        reconnect_account,
    };
    let url = connect::begin(&state, provider, starter, return_to, popup).await?;
    Ok(redirect_no_referrer(&url))
}

#[derive(Template)]
#[template(path = "connect_link.html")]
struct LinkPage<'a> {
    /// A link (works once), or a session's page (works while it lasts).
    single_use: bool,
    tenant: &'a str,
    provider: &'a str,
    email: Option<&'a str>,
    expires: Moment,
    /// How long the link has left, in words ("15 minutes").
    lasts: String,
    /// The CRM's name, as the client's staff know it.
    crm: &'a str,
    csrf: &'a str,
    /// The CRM page's origin, when `/static/connect.js` opened the link.
    embed: Option<&'a str>,
}

/// A connect link's page, or its form: `embed` is the origin of the CRM page
/// that opened it in a popup (`/static/connect.js` adds it).
#[derive(serde::Deserialize)]
struct LinkParams {
    embed: Option<String>,
}

/// `GET /connect/{token}`: a connect link's page, naming the tenant and the
/// provider. It changes nothing (previewers may fetch it any number of
/// times); its form, bound to this browser by the CSRF token, goes on.
async fn connect_link_page(
    req: HttpRequest,
    state: web::Data<App>,
    session: Session,
    path: web::Path<String>,
    query: web::Query<LinkParams>,
) -> PageResult<HttpResponse> {
    rate_limit(&state, &req)?;
    let embed = embed_origin(&state, &query.embed)?;
    let link = links::preview(&state, path.into_inner()).await?;
    link_page(&state, &session, &link, embed.as_deref(), true)
}

/// The page of a link or a session: whom and what it connects, and a form,
/// bound to this browser by the CSRF token, that goes on.
fn link_page(
    state: &App,
    session: &Session,
    link: &links::LinkPreview,
    embed: Option<&str>,
    single_use: bool,
) -> PageResult<HttpResponse> {
    let csrf = session::csrf_token(session)?;
    let body = LinkPage {
        tenant: &link.tenant_name,
        provider: &link.provider_name,
        email: link.email.as_deref(),
        expires: Moment::of(link.expires_at),
        lasts: when::span((link.expires_at - crate::db::now()).num_seconds()),
        crm: &state.settings.crm_name,
        csrf: &csrf,
        embed,
        single_use,
    }
    .render()
    .map_err(AppError::internal)?;
    // The page's address holds the link's secret.
    Ok(no_referrer(html(body)))
}

/// `GET /connect/session/{token}/{provider}`: a connect session's page for
/// one of its providers, as `TetherConnect.open({session, provider})` opens
/// it. It changes nothing.
async fn connect_session_page(
    req: HttpRequest,
    state: web::Data<App>,
    session: Session,
    path: web::Path<(String, String)>,
    query: web::Query<LinkParams>,
) -> PageResult<HttpResponse> {
    rate_limit(&state, &req)?;
    let embed = embed_origin(&state, &query.embed)?;
    let (token, provider) = path.into_inner();
    let link = links::preview_session(&state, token, provider).await?;
    link_page(&state, &session, &link, embed.as_deref(), false)
}

/// `POST /connect/session/{token}/{provider}`: the person goes on; one of
/// the session's uses is spent, and the flow is the link's.
async fn connect_with_session(
    req: HttpRequest,
    state: web::Data<App>,
    session: Session,
    path: web::Path<(String, String)>,
    CsrfForm(form): CsrfForm<LinkParams>,
) -> PageResult<HttpResponse> {
    rate_limit(&state, &req)?;
    let embed = embed_origin(&state, &form.embed)?;
    let binding = session::oauth_binding_or_new(&session)?;
    let (token, provider) = path.into_inner();
    let url = connect::begin_with_session(&state, token, provider, binding, embed).await?;
    Ok(redirect_no_referrer(&url))
}

/// The listed origin an `embed` parameter names, if it is present.
fn embed_origin(state: &App, raw: &Option<String>) -> AppResult<Option<String>> {
    raw.as_deref()
        .map(|o| links::embed_origin(&state.settings, o))
        .transpose()
}

/// `POST /connect/{token}`: the person on the link's page goes on (no
/// sign-in). The link is used up, and the state is bound to this browser;
/// a popup opened by a listed CRM page keeps that page's origin in the state,
/// so each flow reports to the page that opened it.
async fn connect_with_link(
    req: HttpRequest,
    state: web::Data<App>,
    session: Session,
    path: web::Path<String>,
    CsrfForm(form): CsrfForm<LinkParams>,
) -> PageResult<HttpResponse> {
    rate_limit(&state, &req)?;
    let embed = embed_origin(&state, &form.embed)?;
    let binding = session::oauth_binding_or_new(&session)?;
    let url = connect::begin_with_link(&state, path.into_inner(), binding, embed).await?;
    Ok(redirect_no_referrer(&url))
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
    account: Option<&'a str>,
    /// Where `popup.js` posts the outcome: `self` (the dashboard, on our
    /// own origin) or a listed CRM origin; `None`: nowhere.
    target: Option<&'a str>,
    /// The page to go back to, for a dashboard flow.
    return_to: Option<&'a str>,
}

/// The popup's last page loads our stylesheet and `popup.js`, and nothing
/// else: no frames, no forms, no connections of its own. Posting to the
/// opener is not something a CSP governs.
const POPUP_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The end of a popup flow: a tiny page that tells the opener and closes.
fn popup_page(page: PopupResult<'_>) -> PageResult<HttpResponse> {
    let body = page.render().map_err(AppError::internal)?;
    let mut res = no_referrer(html(body));
    res.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(POPUP_CSP),
    );
    Ok(res)
}

/// Callback errors carry `Referrer-Policy: no-referrer` too: the URL holds a code.
fn callback_error(err: AppError) -> HttpResponse {
    no_referrer(actix_web::ResponseError::error_response(&PageError(err)))
}

async fn callback(
    req: HttpRequest,
    state: web::Data<App>,
    session: Session,
    path: web::Path<String>,
    query: web::Query<CallbackQuery>,
) -> HttpResponse {
    let stateless = query.state.as_deref().is_none_or(str::is_empty);
    if let Some(provider) = state
        .providers
        .shared(&path)
        .filter(|p| stateless && p.provider_initiated_installs)
    {
        return match marketplace_install(&state, &req, &session, provider.clone(), &query).await {
            Ok(res) => res,
            Err(e) => callback_error(e),
        };
    }
    let done = async {
        rate_limit(&state, &req)?;
        let (binding, email) = (session::oauth_binding(&session), session::email(&session));
        connect::complete(&state, &path, query.into_inner(), binding, email).await
    };
    match done
        .await
        .map_err(PageError)
        .and_then(|done| finish(&state, &session, done))
    {
        Ok(res) => res,
        Err(PageError(e)) => callback_error(e),
    }
}

/// A callback without a state from a provider whose installs start at its
/// end (GoHighLevel's Marketplace): the grant refreshes the bound tenant's
/// connection (said on a page of its own), or is held and this browser is
/// sent to claim it (signing in first), with the install's id kept in the
/// session only.
/// The provider said the install did not complete (its `error`, shown as
/// printable and short).
fn install_not_completed(provider: &crate::providers::Provider, error: &str) -> AppError {
    let shown: String = error
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(64)
        .collect();
    AppError::bad_request(
        Code::InvalidInstall,
        format!(
            "{} did not complete the install ({shown}). Nothing was changed.",
            provider.display_name
        ),
    )
}

/// Sends an admin who is not signed in to sign in, then back to `page` of
/// the provider's install flow.
fn sign_in_first(provider: &str, page: &str) -> HttpResponse {
    redirect_no_referrer(&format!("/login?next=/oauth/{provider}/{page}"))
}

/// The name of the signed-in admin's tenant.
async fn tenant_name(state: &App, admin: &AdminSession) -> AppResult<String> {
    let t = admin.tenant_id.clone();
    let tenant = state
        .db(move |c| Ok(crate::db::models::tenant::Tenant::by_id(c, &t)?))
        .await?
        .ok_or_else(|| AppError::unauthorized("sign in first"))?;
    Ok(tenant.name)
}

async fn marketplace_install(
    state: &App,
    req: &HttpRequest,
    session: &Session,
    provider: std::sync::Arc<crate::providers::Provider>,
    query: &CallbackQuery,
) -> AppResult<HttpResponse> {
    rate_limit(state, req)?;
    if let Some(error) = &query.error {
        return Err(install_not_completed(&provider, error));
    }
    // Each attempt costs a code exchange at the provider: a client that
    // keeps trying is stopped before it.
    let client = client_addr(req, &state.settings.trusted_proxies);
    state
        .install_limiter
        .check(&format!("install:{client}"))
        .map_err(AppError::too_many_requests)?;
    let code = query.code.clone().unwrap_or_default();
    match installs::receive(state, provider.clone(), &code).await? {
        Received::Refreshed { message } => {
            session::flash(session, FlashKind::Ok, message);
            Ok(redirect_no_referrer(connect::LINK_DONE))
        }
        Received::Held { id, message } => {
            let vouched = from_provider_page(req, &provider);
            session::keep_held_install(session, &provider.key, &id, vouched)?;
            session::flash(session, FlashKind::Ok, message);
            Ok(redirect_no_referrer(&format!(
                "/oauth/{}/claim",
                provider.key
            )))
        }
    }
}

/// Whether the browser came from the provider's own install page: its
/// `Referer` has the origin of the provider's authorize URL (where the
/// Marketplace's consent page lives). A link someone else planted comes
/// from elsewhere, or says nothing.
fn from_provider_page(req: &HttpRequest, provider: &crate::providers::Provider) -> bool {
    let origin = |u: &str| {
        url::Url::parse(u)
            .ok()
            .map(|u| u.origin().ascii_serialization())
    };
    let referer = req
        .headers()
        .get(actix_web::http::header::REFERER)
        .and_then(|v| v.to_str().ok())
        .and_then(origin);
    referer.is_some() && referer == origin(&provider.authorize_url)
}

#[derive(Template)]
#[template(path = "claim.html")]
struct ClaimPage<'a> {
    key: &'a str,
    provider: &'a str,
    tenant: &'a str,
    location: &'a str,
    /// Who installed it, as the provider's token answer says: the user and
    /// the business, where the provider names them.
    installed_by: Option<String>,
    business: Option<String>,
    /// The browser did not come from the provider's install page: the
    /// claim needs an explicit confirmation.
    confirm: bool,
    flash: Option<session::Flash>,
    csrf: &'a str,
}

#[derive(serde::Deserialize)]
struct ClaimForm {
    /// `yes` when the admin confirmed they installed it themselves.
    confirm: Option<String>,
}

/// No held install is kept in this browser's session.
fn no_claim(provider: &crate::providers::Provider) -> AppError {
    AppError::not_found_as(
        Code::UnknownInstall,
        format!(
            "There is no {} install to claim in this browser. Install the app from the {} Marketplace again.",
            provider.display_name, provider.display_name
        ),
    )
}

/// `GET /oauth/{provider}/claim`: the held install this browser brought
/// (its id kept in the session across sign-in), naming the location and
/// the admin's tenant. It changes nothing; its form claims.
async fn claim_page(
    req: HttpRequest,
    state: web::Data<App>,
    session: Session,
    admin: Option<AdminSession>,
    path: web::Path<String>,
) -> PageResult<HttpResponse> {
    rate_limit(&state, &req)?;
    let provider = state.enabled_provider(&path)?;
    let window = state.settings.install_claim_window;
    let held = session::held_install(&session, &provider.key, window)
        .ok_or_else(|| no_claim(&provider))?;
    let install = installs::preview(&state, &provider, held.id).await?;
    let Some(admin) = admin else {
        return Ok(sign_in_first(&provider.key, "claim"));
    };
    let tenant = tenant_name(&state, &admin).await?;
    let csrf = session::csrf_token(&session)?;
    let body = ClaimPage {
        key: &provider.key,
        provider: &provider.display_name,
        tenant: &tenant,
        location: install.label(),
        installed_by: provider
            .installed_by
            .as_deref()
            .and_then(|p| crate::oauth::token::pointer_str(&install.metadata(), p)),
        business: provider
            .parent_of(&install.metadata())
            .map(|b| b.to_string()),
        confirm: !held.vouched,
        flash: session::take_flash(&session),
        csrf: &csrf,
    }
    .render()
    .map_err(AppError::internal)?;
    Ok(no_referrer(html(body)))
}

/// `POST /oauth/{provider}/claim`: the admin claims the held install for
/// their tenant; one this browser did not bring from the provider's own
/// install page needs the page's explicit confirmation.
async fn claim(
    req: HttpRequest,
    state: web::Data<App>,
    admin: AdminSession,
    path: web::Path<String>,
    CsrfForm(form): CsrfForm<ClaimForm>,
) -> PageResult<HttpResponse> {
    rate_limit(&state, &req)?;
    let provider = state.enabled_provider(&path)?;
    let window = state.settings.install_claim_window;
    let held = session::held_install(&admin.session, &provider.key, window)
        .ok_or_else(|| no_claim(&provider))?;
    if !held.vouched && form.confirm.as_deref() != Some("yes") {
        return Err(AppError::bad_request(
            Code::InvalidForm,
            format!(
                "This browser did not come from {}'s install page: tick the box to confirm you installed it yourself just now, or leave it.",
                provider.display_name
            ),
        )
        .into());
    }
    let connection = installs::claim(
        &state,
        Some(&provider),
        held.id,
        &admin.tenant_id,
        &admin.actor(),
    )
    .await?;
    session::drop_install(&admin.session);
    session::flash(
        &admin.session,
        FlashKind::Ok,
        format!(
            "Connected {} as {}.",
            provider.display_name,
            connection.label()
        ),
    );
    Ok(see_other(DASHBOARD))
}

/// The end of a callback: the popup page, or a flash and back to where the
/// flow began. A dashboard popup tells the dashboard (our own origin); a
/// connect link's popup tells the CRM page that opened it, if its origin is
/// still listed, and nobody otherwise.
fn finish(state: &App, session: &Session, done: Completion) -> PageResult<HttpResponse> {
    if done.popup {
        // Still listed now: an origin removed from the list since the flow
        // began is told nothing.
        let embed = done
            .embed_origin
            .as_deref()
            .and_then(|o| state.settings.embed_origin(o));
        let target = if done.by_link { embed } else { Some("self") };
        return popup_page(PopupResult {
            provider: &done.provider,
            ok: done.connected,
            message: &done.message,
            account: done.account.as_deref(),
            target,
            return_to: (!done.by_link).then_some(done.return_to.as_str()),
        });
    }
    let kind = if done.connected {
        FlashKind::Ok
    } else {
        FlashKind::Warn
    };
    if done.by_link {
        session::flash(session, kind, done.message);
    } else {
        session::flash_card(session, kind, &done.provider, done.message);
    }
    Ok(redirect_no_referrer(&done.return_to))
}

/// No install artefact came with the request or is kept in the session.
fn no_install() -> AppError {
    AppError::bad_request(
        Code::InvalidInstall,
        "Open the app from your site's dashboard to connect the site.",
    )
}

#[derive(serde::Deserialize)]
struct InstallQuery {
    instance: Option<String>,
}

#[derive(Template)]
#[template(path = "install.html")]
struct InstallPage<'a> {
    key: &'a str,
    provider: &'a str,
    tenant: &'a str,
    instance_id: &'a str,
    csrf: &'a str,
}

/// `GET /oauth/{provider}/install?instance=...`: where a provider sends an
/// admin from its app's page (Wix's dashboard URL), with an artefact it
/// signed. The artefact is checked and kept in the session; an admin who is
/// not signed in signs in first and comes back here. The page names the
/// site and the tenant and changes nothing; its form connects.
async fn install_page(
    req: HttpRequest,
    state: web::Data<App>,
    session: Session,
    admin: Option<AdminSession>,
    path: web::Path<String>,
    query: web::Query<InstallQuery>,
) -> PageResult<HttpResponse> {
    rate_limit(&state, &req)?;
    let provider = state.enabled_provider(&path)?;
    let instance = match &query.instance {
        Some(i) => i.clone(),
        None => session::pending_install(&session, &provider.key).ok_or_else(no_install)?,
    };
    let account = connect::verify_install(&state, &provider, &instance)?;
    if query.instance.is_some() {
        session::keep_install(&session, &provider.key, &instance)?;
    }
    let Some(admin) = admin else {
        return Ok(sign_in_first(&provider.key, "install"));
    };
    let tenant = tenant_name(&state, &admin).await?;
    let csrf = session::csrf_token(&session)?;
    let body = InstallPage {
        key: &provider.key,
        provider: &provider.display_name,
        tenant: &tenant,
        instance_id: &account,
        csrf: &csrf,
    }
    .render()
    .map_err(AppError::internal)?;
    Ok(no_referrer(html(body)))
}

/// `POST /oauth/{provider}/install`: the admin confirms; the kept artefact
/// is checked again and the site connected to the admin's tenant.
async fn install(
    req: HttpRequest,
    state: web::Data<App>,
    admin: AdminSession,
    path: web::Path<String>,
    _: CsrfForm<NoFields>,
) -> PageResult<HttpResponse> {
    rate_limit(&state, &req)?;
    let provider = state.enabled_provider(&path)?;
    let instance =
        session::pending_install(&admin.session, &provider.key).ok_or_else(no_install)?;
    let message = connect::install(
        &state,
        provider,
        &admin.tenant_id,
        &instance,
        &admin.actor(),
    )
    .await?;
    session::drop_install(&admin.session);
    session::flash(&admin.session, FlashKind::Ok, message);
    Ok(see_other(DASHBOARD))
}

/// The form of the per-account buttons: the account (its provider id, in a
/// hidden field; none means the default); the CSRF field is `CsrfForm`'s.
#[derive(serde::Deserialize)]
struct AccountForm {
    account: Option<String>,
}

async fn refresh(
    state: web::Data<App>,
    admin: AdminSession,
    path: web::Path<String>,
    CsrfForm(form): CsrfForm<AccountForm>,
) -> PageResult<HttpResponse> {
    let provider = state.enabled_provider(&path)?;
    let account = account_param(form.account.as_deref())?;
    let actor = admin.actor();
    let refreshed = manage::refresh(
        &state,
        &admin.tenant_id,
        &provider,
        account.as_ref(),
        &actor,
    );
    match refreshed.await {
        Ok(fresh) => session::flash_card(
            &admin.session,
            FlashKind::Ok,
            &provider.key,
            format!(
                "Access to {} at {} is renewed.",
                fresh.label(),
                provider.display_name
            ),
        ),
        Err(e) => session::flash_card_with(
            &admin.session,
            FlashKind::Error,
            &provider.key,
            not_renewed(&provider, &e),
            Some(format!("{} ({})", e.message(), e.code())),
        ),
    }
    Ok(back_to_card(&provider.key))
}

/// Why a renewal the admin asked for did not happen, as they read it (what
/// the provider said goes under "Details").
fn not_renewed(provider: &crate::providers::Provider, e: &AppError) -> String {
    let p = &provider.display_name;
    if e.is(Code::NeedsReconnect) {
        format!("Could not renew access: {p} no longer accepts this account. Reconnect it.")
    } else if e.is(Code::ProviderMisconfigured) {
        format!("Could not renew access: {p} refused this service's own credentials. Nothing you can do here: the CRM's team has been told in its logs.")
    } else if e.status().is_server_error() {
        format!("Could not renew access: {p} is not answering right now. We keep trying; nothing to do unless this lasts.")
    } else {
        format!("Could not renew access: {}", e.message())
    }
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
        AppError::bad_request(
            Code::InvalidAccount,
            "choose the account to make the default",
        )
    })?;
    let chosen = manage::choose_default(
        &state,
        &admin.tenant_id,
        &provider,
        &account,
        &admin.actor(),
    )
    .await?;
    session::flash_card(
        &admin.session,
        FlashKind::Ok,
        &provider.key,
        format!(
            "{} is now the default {} account.",
            chosen.label(),
            provider.display_name
        ),
    );
    Ok(back_to_card(&provider.key))
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
    let account = account_param(query.account.as_deref())?;
    let (t, p) = (admin.tenant_id.clone(), provider.clone());
    let doc = state
        .db(move |c| status::load(c, &t, &p, account.as_ref()))
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
    let done = manage::disconnect(
        &state,
        &admin.tenant_id,
        &provider,
        account.as_ref(),
        &admin.actor(),
    )
    .await?;
    session::flash_card(&admin.session, FlashKind::Ok, &provider.key, done.message);
    Ok(back_to_card(&provider.key))
}
