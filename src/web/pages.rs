//! Server-rendered pages: sign-in (local and SSO), the integrations dashboard.

use super::activity::{self, ActivityLine, UsageLine, Wording};
use super::http::{client_addr, html, see_other};
use super::session::{self, AdminSession, CsrfForm, Flash, FlashKind, NoFields};
use crate::app::App;
use crate::connections::integration::{self, IntegrationView, FORM_PREFIX};
use crate::connections::private_token;
use crate::connections::status::{PublicStatus, StatusView};
use crate::db::models::account_setting::AccountSetting;
use crate::db::models::activity::Activity;
use crate::db::models::connection::{Connection, Kind};
use crate::db::models::integration_setting::IntegrationSetting;
use crate::db::models::tenant::Tenant;
use crate::db::models::usage::{self, Usage};
use crate::error::{AppError, Code, PageError, PageResult};
use crate::ids::AccountId;
use crate::oauth::{safe_return_to, DASHBOARD};
use crate::providers::{FieldType, Flow, Provider};
use actix_session::Session;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use std::collections::HashMap;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(root))
        .route("/login", web::get().to(login_page))
        .route("/login", web::post().to(login))
        .route("/logout", web::post().to(logout))
        .route("/sso", web::post().to(sso))
        .route("/sso", web::get().to(sso_by_link))
        .route("/settings/integrations", web::get().to(dashboard))
        .route(
            "/settings/integrations/cards/{provider}",
            web::get().to(card_fragment),
        )
        .route(
            "/settings/integrations/{provider}/enabled",
            web::post().to(set_enabled),
        )
        .route(
            "/settings/integrations/{provider}/private-token",
            web::post().to(save_private_token),
        )
        .service(
            // 64 KiB of settings, form-encoded (a JSON box's quotes and
            // braces take three bytes each).
            web::resource("/settings/integrations/{provider}/settings")
                .app_data(super::http::form_config(
                    4 * integration::MAX_SETTINGS_BYTES,
                ))
                .route(web::post().to(save_settings)),
        );
}

fn render(t: &impl Template) -> PageResult<HttpResponse> {
    Ok(html(t.render().map_err(AppError::internal)?))
}

async fn root() -> HttpResponse {
    see_other(DASHBOARD)
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    csrf: &'a str,
    email: &'a str,
    next: &'a str,
    error: Option<&'a str>,
    flash: Option<Flash>,
}

#[derive(serde::Deserialize)]
struct NextQuery {
    next: Option<String>,
}

async fn login_page(session: Session, query: web::Query<NextQuery>) -> PageResult<HttpResponse> {
    let next = query
        .next
        .as_deref()
        .and_then(|n| safe_return_to(n).ok())
        .unwrap_or_else(|| DASHBOARD.into());
    let csrf = session::csrf_token(&session)?;
    render(&LoginPage {
        csrf: &csrf,
        email: "",
        next: &next,
        error: None,
        flash: session::take_flash(&session),
    })
}

#[derive(serde::Deserialize)]
struct LoginForm {
    email: String,
    password: String,
    next: Option<String>,
}

/// The longest email address there is (RFC 5321's 256-octet path, less
/// its angle brackets): a longer one never becomes a rate-limit key.
const MAX_EMAIL: usize = 254;

/// The email as accounts store it (trimmed, lower case), refused when it is
/// longer than any address can be.
fn sign_in_email(raw: &str) -> PageResult<String> {
    let email = raw.trim().to_lowercase();
    if email.len() > MAX_EMAIL {
        return Err(PageError(AppError::bad_request(
            Code::InvalidEmail,
            format!("an email address is at most {MAX_EMAIL} characters"),
        )));
    }
    Ok(email)
}

/// The sign-in page again, with the email kept and a message that does not
/// say which of the two was wrong.
fn failed_sign_in(session: &Session, email: &str, next: &str) -> PageResult<HttpResponse> {
    let csrf = session::csrf_token(session)?;
    let page = LoginPage {
        csrf: &csrf,
        email,
        next,
        error: Some("That email and password do not match an account."),
        flash: None,
    };
    let body = page.render().map_err(AppError::internal)?;
    Ok(HttpResponse::Unauthorized()
        .content_type("text/html; charset=utf-8")
        .body(body))
}

/// Whether this sign-in may be tried: the client first, every attempt
/// counted (a client refused here never reaches the email's counters, so it
/// cannot lock a victim out); then the email from this client, against
/// which only failed sign-ins count, but once it has had its share even the
/// right password waits (from this client: another address still signs in);
/// then the email from everywhere, a high backstop against guessing spread
/// over many addresses. Answers the email and its counters' keys.
fn sign_in_allowed(
    req: &HttpRequest,
    state: &App,
    email: &str,
) -> PageResult<(String, FailureKeys)> {
    let client = client_addr(req, &state.settings.trusted_proxies);
    state
        .login_limiter
        .check(&format!("ip:{client}"))
        .map_err(AppError::too_many_requests)?;
    let email = sign_in_email(email)?;
    let keys = FailureKeys {
        from_client: format!("email:{email} ip:{client}"),
        anywhere: format!("email:{email}"),
    };
    state
        .login_failures
        .peek(&keys.from_client)
        .map_err(AppError::too_many_requests)?;
    state
        .login_failures_anywhere
        .peek(&keys.anywhere)
        .map_err(AppError::too_many_requests)?;
    Ok((email, keys))
}

/// The counters a failed sign-in is charged to.
struct FailureKeys {
    from_client: String,
    anywhere: String,
}

async fn login(
    req: HttpRequest,
    state: web::Data<App>,
    session: Session,
    CsrfForm(form): CsrfForm<LoginForm>,
) -> PageResult<HttpResponse> {
    let (email, failure_keys) = sign_in_allowed(&req, &state, &form.email)?;
    let next = form
        .next
        .as_deref()
        .and_then(|n| safe_return_to(n).ok())
        .unwrap_or_else(|| DASHBOARD.into());
    let Some(user) = crate::auth::sign_in_with_password(&state, &email, &form.password).await?
    else {
        state.login_failures.charge(&failure_keys.from_client);
        state.login_failures_anywhere.charge(&failure_keys.anywhere);
        log::info!("failed sign-in for an account");
        return failed_sign_in(&session, &email, &next);
    };
    session::sign_in(&session, &user)?;
    log::info!("admin signed in tenant={}", user.tenant_id);
    Ok(see_other(&next))
}

/// Ends every session of this user (a copied cookie too), and leaves this
/// browser a fresh, empty session that carries only the message.
async fn logout(
    state: web::Data<App>,
    session: Session,
    _: CsrfForm<NoFields>,
) -> PageResult<HttpResponse> {
    session::sign_out(&state, &session).await?;
    session::flash(
        &session,
        FlashKind::Ok,
        "You are signed out, in this browser and everywhere else.",
    );
    Ok(see_other("/login"))
}

#[derive(serde::Deserialize)]
struct SsoForm {
    token: String,
}

/// `GET /sso`: the hand-over is a form POST from the CRM (a link alone
/// must not switch a browser's tenant, and the token must not sit in a URL).
async fn sso_by_link() -> PageResult<HttpResponse> {
    Err(PageError(AppError::method_not_allowed(
        "single sign-on is a form the CRM posts; open Tether from the CRM again",
    )))
}

/// `POST /sso`: the CRM hands a signed-in admin over (see `crate::sso`).
async fn sso(
    req: HttpRequest,
    state: web::Data<App>,
    session: Session,
    query: web::Form<SsoForm>,
) -> PageResult<HttpResponse> {
    let Some(secret) = state.settings.sso_secret.clone() else {
        return Err(PageError(AppError::not_found(
            "single sign-on is not enabled",
        )));
    };
    sso_from_the_crm(&req, &state.settings)?;
    let claims = crate::sso::verify(
        secret.expose().as_bytes(),
        &query.token,
        chrono::Utc::now().timestamp(),
    )?;
    let user = state.db(move |c| crate::sso::admit(c, &claims)).await?;
    session::sign_in(&session, &user)?;
    log::info!("admin signed in through SSO tenant={}", user.tenant_id);
    Ok(see_other(DASHBOARD))
}

/// Refuses a hand-over a page other than the CRM's made the browser post
/// (login CSRF: an auto-submitted form carrying the attacker's own token
/// would sign the victim into the attacker's tenant). A browser names the
/// page in `Origin`, which must be one of `TETHER_EMBED_ORIGINS` (the CRM's
/// pages) or Tether's own; without `Origin`, `Sec-Fetch-Site` must not say
/// another site. A client that sends neither is no browser a page can
/// drive, and is let through.
fn sso_from_the_crm(req: &HttpRequest, settings: &crate::config::Settings) -> PageResult<()> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .map(|v| v.to_str().unwrap_or("").trim().to_string())
    };
    let allowed = match (header("origin"), header("sec-fetch-site")) {
        (Some(origin), _) => {
            settings.embed_origin(&origin).is_some()
                || origin == settings.public_url.origin().ascii_serialization()
        }
        (None, Some(site)) => matches!(site.as_str(), "same-origin" | "none"),
        (None, None) => true,
    };
    if allowed {
        return Ok(());
    }
    log::warn!("refused a single sign-on posted from outside the CRM's origins");
    Err(PageError(AppError::refused(
        actix_web::http::StatusCode::FORBIDDEN,
        Code::SsoOriginRefused,
        "single sign-on is accepted only from the CRM's own pages (TETHER_EMBED_ORIGINS); \
         open Tether from the CRM again",
    )))
}

/// One provider's card on the dashboard.
pub struct Card {
    pub key: String,
    pub name: String,
    /// The default account's status.
    pub status: PublicStatus,
    /// Every connected account, the default first.
    pub accounts: Vec<AccountCard>,
    pub has_tokens: bool,
    /// Some account lacks scopes the provider now asks for.
    pub needs_new_permissions: bool,
    /// Connected by a site instance id instead of a sign-in page (Wix apps).
    pub by_instance: bool,
    /// Whether its tokens can be refreshed (WordPress.com's never expire).
    pub refreshable: bool,
    /// The latest lines of its activity.
    pub events: Vec<ActivityLine>,
    /// The tenant's settings for the provider, as a form.
    pub settings: SettingsForm,
    /// What the platform calls the private tokens a tenant may store
    /// instead of connecting (a platform's private integration tokens).
    pub private_tokens: Option<String>,
}

/// A card's settings form: one input per schema field, or a JSON box when
/// the provider declares no schema; after a refused save, what was typed
/// and why it was refused.
pub struct SettingsForm {
    pub fields: Vec<FieldInput>,
    /// The JSON box's text (no schema).
    pub json: String,
    pub error: Option<String>,
}

/// One input of a settings form.
pub struct FieldInput {
    /// The form field's name (`setting.<field>`).
    pub input: String,
    pub label: String,
    /// `text`, `number`, `checkbox`, or `yesno` (an account's yes/no: a
    /// choice of yes, no, or the provider's).
    pub kind: &'static str,
    /// What was typed or stored (`yesno`: `true`, `false` or empty).
    pub value: String,
    pub checked: bool,
    /// An account's form: what applies when the account sets nothing (the
    /// provider's setting, as a person reads it), if anything does.
    pub inherited: Option<String>,
}

/// A provider the tenant switched off, listed under "Disabled".
pub struct DisabledItem {
    pub key: String,
    pub name: String,
}

/// What a refused settings form posted, drawn again on its card.
struct Draft {
    provider: String,
    /// The account whose form it was; `None`: the provider's.
    account: Option<String>,
    form: HashMap<String, String>,
    error: String,
}

/// A setting's value as a person reads it (a yes/no as yes or no).
fn readable(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(v) => v.clone(),
        serde_json::Value::Bool(true) => "yes".into(),
        serde_json::Value::Bool(false) => "no".into(),
        v => v.to_string(),
    }
}

/// A card's settings form, filled from the `stored` settings, or from the
/// draft of a refused save. `inherited`: an account's form, over these
/// settings of the provider.
fn settings_form(
    provider: &Provider,
    stored: &serde_json::Value,
    inherited: Option<&serde_json::Value>,
    draft: Option<&Draft>,
) -> SettingsForm {
    let object = stored.as_object();
    let fields = provider
        .settings_schema
        .iter()
        .map(|f| {
            let input = format!("{FORM_PREFIX}{}", f.name);
            let per_account = inherited.is_some();
            let (value, checked) = match draft {
                Some(d) => {
                    let v = d.form.get(&input).cloned().unwrap_or_default();
                    let checked = v == "true";
                    (v, checked)
                }
                None => match object.and_then(|o| o.get(&f.name)) {
                    Some(serde_json::Value::String(v)) => (v.clone(), false),
                    Some(serde_json::Value::Bool(b)) if per_account => (b.to_string(), false),
                    Some(serde_json::Value::Bool(b)) => (String::new(), *b),
                    Some(v) => (v.to_string(), false),
                    None => (String::new(), false),
                },
            };
            FieldInput {
                input,
                label: f.label.clone(),
                kind: match f.kind {
                    FieldType::String => "text",
                    FieldType::Number => "number",
                    FieldType::Boolean if per_account => "yesno",
                    FieldType::Boolean => "checkbox",
                },
                value,
                checked,
                inherited: inherited.and_then(|p| p.get(&f.name)).map(readable),
            }
        })
        .collect();
    let json = match draft {
        Some(d) => d.form.get(JSON_BOX).cloned().unwrap_or_default(),
        None => serde_json::to_string_pretty(stored).unwrap_or_else(|_| "{}".into()),
    };
    SettingsForm {
        fields,
        json,
        error: draft.map(|d| d.error.clone()),
    }
}

/// The JSON box's form field.
const JSON_BOX: &str = "settings_json";

/// One connected account on its provider's card, with its own actions.
pub struct AccountCard {
    /// The provider's account id, sent back by the account's forms.
    pub id: String,
    /// Its name, else its id.
    pub label: String,
    pub is_default: bool,
    pub status: PublicStatus,
    pub scopes: Vec<String>,
    /// Scopes asked for now that this account was not granted.
    pub missing_scopes: Vec<String>,
    pub expires_at: Option<String>,
    pub last_refreshed_at: Option<String>,
    pub last_error: Option<String>,
    /// When the refresh token lapses soon (a reconnect is needed before then).
    pub lapses_on: Option<String>,
    /// The account's own settings, over the provider's.
    pub settings: SettingsForm,
    /// The HTML id its settings form's inputs start with.
    pub form_id: String,
    /// Connected with a private token (never refreshed), not OAuth.
    pub private_token: bool,
    /// What the CRM did with it lately.
    pub usage: UsageLine,
}

/// A time of a [`StatusView`] (RFC 3339) as the dashboard shows it.
fn shown(iso: &Option<String>, format: &str) -> Option<String> {
    let t = chrono::DateTime::parse_from_rfc3339(iso.as_deref()?).ok()?;
    Some(t.format(format).to_string())
}

/// An account's card line, from the view the API gives of that account.
/// `warn_days` is how far ahead a lapsing refresh token is shown (the
/// scheduler's warning window).
fn account_card(
    view: StatusView,
    (settings, usage): (SettingsForm, UsageLine),
    form_id: String,
    warn_days: i64,
) -> AccountCard {
    let (id, name) = view
        .account
        .map(|a| (a.id.to_string(), a.name))
        .unwrap_or_default();
    let soon = chrono::Utc::now() + chrono::Duration::days(warn_days);
    AccountCard {
        label: name.unwrap_or_else(|| id.clone()),
        id,
        is_default: view.default,
        status: view.status,
        scopes: view.scopes,
        missing_scopes: view.missing_scopes,
        expires_at: shown(&view.expires_at, MINUTE),
        last_refreshed_at: shown(&view.last_refreshed_at, MINUTE),
        last_error: view.last_error,
        lapses_on: view
            .lapses_at
            .filter(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok_and(|t| t <= soon))
            .and_then(|t| shown(&Some(t), "%Y-%m-%d")),
        settings,
        form_id,
        private_token: view.kind == Some(Kind::PrivateToken),
        usage,
    }
}

const MINUTE: &str = "%Y-%m-%d %H:%M UTC";

/// A provider's card: every fact comes from the [`StatusView`]s the API
/// gives of the provider (`view`) and of each account (`accounts`, default
/// first, each with its settings form and its use by the CRM).
fn card(
    provider: &Provider,
    view: StatusView,
    accounts: Vec<(StatusView, (SettingsForm, UsageLine))>,
    events: Vec<ActivityLine>,
    settings: SettingsForm,
    warn_days: i64,
) -> Card {
    let accounts: Vec<AccountCard> = accounts
        .into_iter()
        .enumerate()
        .map(|(i, (a, form))| {
            let form_id = format!("settings-{}-a{}", provider.key, i + 1);
            account_card(a, form, form_id, warn_days)
        })
        .collect();
    Card {
        key: provider.key.to_string(),
        needs_new_permissions: accounts.iter().any(|a| !a.missing_scopes.is_empty()),
        name: provider.display_name.clone(),
        status: view.status,
        has_tokens: !accounts.is_empty(),
        accounts,
        by_instance: provider.flow == Flow::ClientCredentials,
        refreshable: provider.refresh != crate::providers::RefreshStyle::None,
        events,
        settings,
        private_tokens: provider.private_tokens.clone(),
    }
}

/// The dashboard's content: a card per provider the operator enabled and
/// the tenant did not switch off (all, or `only`), and the switched-off ones.
struct Board {
    cards: Vec<Card>,
    disabled: Vec<DisabledItem>,
}

/// Loads the board of the tenant (the cards of all its providers, or of
/// `only`), worded for `wording`'s reader; `draft` is a refused settings
/// form to draw again.
async fn board(
    state: &App,
    tenant_id: &crate::ids::TenantId,
    only: Option<&str>,
    draft: Option<Draft>,
    wording: Wording,
) -> Result<Board, AppError> {
    let integrations = integration::all_of(state, tenant_id).await?;
    let is_on = |p: &Provider| integrations.get(p.key.as_str()).is_none_or(|r| r.enabled);
    let enabled = state.providers.all().filter(|p| p.enabled());
    let (on, off): (Vec<&Provider>, Vec<&Provider>) = enabled.partition(|p| is_on(p));
    let disabled = off
        .into_iter()
        .map(|p| DisabledItem {
            key: p.key.to_string(),
            name: p.display_name.clone(),
        })
        .collect();
    let providers: Vec<(Provider, Option<IntegrationSetting>)> = on
        .into_iter()
        .filter(|p| only.is_none_or(|k| p.key == k))
        .map(|p| (p.clone(), integrations.get(p.key.as_str()).cloned()))
        .collect();
    let tenant_id = tenant_id.clone();
    let warn_days = state.settings.refresh.lapse_warning_days;
    let cards = state
        .db(move |c| {
            let mut out = Vec::new();
            for (p, row) in &providers {
                let accounts = Connection::accounts(c, &tenant_id, &p.key)?;
                let read = Activity::page(c, &tenant_id, &p.key, None, activity::EVENTS_READ)?;
                let mut events = activity::lines(read, &wording);
                events.truncate(activity::CARD_LINES);
                let ids: Vec<_> = accounts.iter().map(|a| a.id.clone()).collect();
                let today = crate::db::now().date();
                let week_ago = today - chrono::Duration::days(usage::WEEK_DAYS);
                let used = usage::summaries(&Usage::of_connections(c, &ids, week_ago)?, today);
                let view = StatusView::of_provider(p, &accounts);
                let shared = IntegrationView::of(p, row.as_ref()).settings;
                let own: HashMap<String, serde_json::Value> =
                    AccountSetting::of_provider(c, &tenant_id, &p.key)?
                        .into_iter()
                        .map(|r| {
                            let settings = serde_json::from_str(&r.settings).unwrap_or_default();
                            (r.account_id.to_string(), settings)
                        })
                        .collect();
                let draft_of = |account: Option<&str>| {
                    draft
                        .as_ref()
                        .filter(|d| d.provider == p.key.as_str() && d.account.as_deref() == account)
                };
                let none = serde_json::json!({});
                let each = accounts.iter().map(|a| {
                    let id = a.account_id.as_str();
                    let stored = own.get(id).unwrap_or(&none);
                    let form = settings_form(p, stored, Some(&shared), draft_of(Some(id)));
                    let usage = wording.usage(used.get(&a.id));
                    (StatusView::of(p, Some(a)), (form, usage))
                });
                let each = each.collect();
                let form = settings_form(p, &shared, None, draft_of(None));
                out.push(card(p, view, each, events, form, warn_days));
            }
            Ok(out)
        })
        .await?;
    Ok(Board { cards, disabled })
}

#[derive(Template)]
#[template(path = "integrations.html")]
struct Dashboard<'a> {
    tenant_name: &'a str,
    email: &'a str,
    csrf: &'a str,
    cards: Vec<Card>,
    disabled: Vec<DisabledItem>,
    flash: Option<Flash>,
}

async fn dashboard(state: web::Data<App>, admin: AdminSession) -> PageResult<HttpResponse> {
    match dashboard_page(&state, &admin, None).await? {
        Some(body) => Ok(html(body)),
        None => Ok(see_other("/login")),
    }
}

/// The dashboard's HTML, with `draft` (a refused settings form) drawn on
/// its card; `None` when the tenant is gone (the session is ended).
async fn dashboard_page(
    state: &App,
    admin: &AdminSession,
    draft: Option<Draft>,
) -> PageResult<Option<String>> {
    let tenant_id = admin.tenant_id.clone();
    let tenant = state.db(move |c| Ok(Tenant::by_id(c, &tenant_id)?)).await?;
    let Some(tenant) = tenant else {
        // The tenant was deleted under a live session.
        admin.session.purge();
        return Ok(None);
    };
    let csrf = session::csrf_token(&admin.session)?;
    let wording = Wording::new(state, &admin.email);
    let Board { cards, disabled } = board(state, &admin.tenant_id, None, draft, wording).await?;
    let page = Dashboard {
        tenant_name: &tenant.name,
        email: &admin.email,
        csrf: &csrf,
        cards,
        disabled,
        flash: session::take_flash(&admin.session),
    };
    Ok(Some(page.render().map_err(AppError::internal)?))
}

#[derive(Template)]
#[template(path = "card_fragment.html")]
struct CardFragment<'a> {
    csrf: &'a str,
    card: &'a Card,
}

/// One card's HTML, so the dashboard can update it after a popup without a reload.
async fn card_fragment(
    state: web::Data<App>,
    admin: AdminSession,
    path: web::Path<String>,
) -> PageResult<HttpResponse> {
    let wording = Wording::new(&state, &admin.email);
    let board = board(&state, &admin.tenant_id, Some(path.as_str()), None, wording).await?;
    let card = board
        .cards
        .first()
        .ok_or_else(|| AppError::not_found("no such provider, or it is disabled"))?;
    let csrf = session::csrf_token(&admin.session)?;
    render(&CardFragment { csrf: &csrf, card })
}

#[derive(serde::Deserialize)]
struct EnabledForm {
    /// `true` or `false`.
    enabled: String,
}

/// `POST /settings/integrations/{provider}/enabled`: the card's Disable
/// switch, or the Enable button of the "Disabled" list.
async fn set_enabled(
    state: web::Data<App>,
    admin: AdminSession,
    path: web::Path<String>,
    CsrfForm(form): CsrfForm<EnabledForm>,
) -> PageResult<HttpResponse> {
    let provider = state.enabled_provider(&path)?;
    let enabled = match form.enabled.as_str() {
        "true" => true,
        "false" => false,
        _ => {
            return Err(AppError::bad_request(Code::InvalidForm, "enabled is true or false").into())
        }
    };
    integration::save(
        &state,
        &admin.tenant_id,
        &provider,
        Some(enabled),
        None,
        &admin.actor(),
    )
    .await?;
    session::flash(&admin.session, FlashKind::Ok, switched(&provider, enabled));
    Ok(see_other(DASHBOARD))
}

/// What the admin is told after switching a provider on or off.
fn switched(provider: &Provider, enabled: bool) -> String {
    if enabled {
        format!("{} is enabled again.", provider.display_name)
    } else {
        format!(
            "{} is disabled: its card is hidden and the CRM's token requests for it are refused until it is enabled again (under Disabled, below).",
            provider.display_name
        )
    }
}

/// The form field naming the account whose settings a form holds; absent:
/// the provider's.
const ACCOUNT_FIELD: &str = "account";

/// `POST /settings/integrations/{provider}/settings`: the card's settings
/// form, the provider's or (with `account`) one account's. A refused one
/// draws the dashboard again (400) with what was typed and why, on its card.
async fn save_settings(
    state: web::Data<App>,
    admin: AdminSession,
    path: web::Path<String>,
    CsrfForm(form): CsrfForm<HashMap<String, String>>,
) -> PageResult<HttpResponse> {
    let provider = state.enabled_provider(&path)?;
    let account = form
        .get(ACCOUNT_FIELD)
        .map(|raw| AccountId::parse(raw))
        .transpose()?;
    let saved = async {
        let actor = admin.actor();
        let boxed = || integration::from_json_box(form.get(JSON_BOX).map_or("", String::as_str));
        match &account {
            None => {
                let settings = if provider.settings_schema.is_empty() {
                    boxed()?
                } else {
                    integration::from_form(&provider, &form)?
                };
                let (t, s) = (&admin.tenant_id, Some(&settings));
                integration::save(&state, t, &provider, None, s, &actor).await?;
            }
            Some(account) => {
                let settings = if provider.settings_schema.is_empty() {
                    boxed()?
                } else {
                    integration::from_account_form(&provider, &form)?
                };
                let t = &admin.tenant_id;
                integration::save_account(&state, t, &provider, account, &settings, &actor).await?;
            }
        }
        Ok::<_, AppError>(())
    };
    match saved.await {
        Ok(()) => {
            let message = match &account {
                None => format!("{} settings saved.", provider.display_name),
                Some(a) => format!("{} settings of {} saved.", provider.display_name, a),
            };
            session::flash(&admin.session, FlashKind::Ok, message);
            Ok(see_other(DASHBOARD))
        }
        Err(e) if e.is(Code::InvalidSettings) || e.is(Code::SettingsTooLarge) => {
            not_saved(&state, &admin, &provider, account, form, &e).await
        }
        Err(e) => Err(PageError(e)),
    }
}

/// The dashboard again, with the refused settings as the admin typed them
/// and why they were refused (400).
async fn not_saved(
    state: &App,
    admin: &AdminSession,
    provider: &Provider,
    account: Option<AccountId>,
    form: HashMap<String, String>,
    refused: &AppError,
) -> PageResult<HttpResponse> {
    let draft = Draft {
        provider: provider.key.to_string(),
        account: account.map(|a| a.to_string()),
        error: format!("Not saved: {}", refused.message()),
        form,
    };
    let Some(body) = dashboard_page(state, admin, Some(draft)).await? else {
        return Ok(see_other("/login"));
    };
    Ok(HttpResponse::BadRequest()
        .content_type("text/html; charset=utf-8")
        .body(body))
}

#[derive(serde::Deserialize)]
struct PrivateTokenForm {
    account: String,
    token: String,
}

/// `POST /settings/integrations/{provider}/private-token`: the card's form
/// for a private token. Checked with the provider first; a refusal is
/// flashed and changes nothing.
async fn save_private_token(
    state: web::Data<App>,
    admin: AdminSession,
    path: web::Path<String>,
    CsrfForm(form): CsrfForm<PrivateTokenForm>,
) -> PageResult<HttpResponse> {
    let provider = state.enabled_provider(&path)?;
    let stored = async {
        let request = private_token::Request {
            token: private_token::Request::token(&form.token)?,
            account: Some(AccountId::parse(form.account.trim())?),
        };
        let t = &admin.tenant_id;
        private_token::store(&state, t, &provider, request, &admin.actor()).await
    };
    let label = provider
        .private_tokens
        .as_deref()
        .unwrap_or("private token");
    match stored.await {
        Ok((row, _)) => session::flash(
            &admin.session,
            FlashKind::Ok,
            format!(
                "{} connected with its {label}: the CRM can use it now. Tether never refreshes it; connect with OAuth when you can, and it takes the token's place.",
                row.label()
            ),
        ),
        Err(e) if e.is_unavailable() => return Err(PageError(e)),
        Err(e) => session::flash(
            &admin.session,
            FlashKind::Error,
            format!("The {label} was not stored: {}", e.message()),
        ),
    }
    Ok(see_other(DASHBOARD))
}
