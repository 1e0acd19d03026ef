//! Server-rendered pages: sign-in (local and SSO), the integrations dashboard.

use super::activity::{self, ActivityLine, UsageLine, Wording};
use super::http::{back_to_card, client_addr, html, see_other};
use super::session::{self, AdminSession, CsrfForm, Flash, FlashKind, NoFields};
use super::when::Moment;
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
use std::time::Duration;

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
        "Single sign-on is a form the CRM posts: open Integrations from the CRM again.",
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
         open Integrations from the CRM again",
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
    /// What most needs a person among its accounts.
    pub need: Option<Need>,
    /// The outcome of what the admin just did on this card.
    pub flash: Option<Flash>,
}

/// A card's settings form: one typed input per schema field (a provider
/// without a schema has none: its free-form settings are the CRM's to
/// write); after a refused save, what was typed and why it was refused.
pub struct SettingsForm {
    pub fields: Vec<FieldInput>,
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
    SettingsForm {
        fields,
        error: draft.map(|d| d.error.clone()),
    }
}

/// Why an account needs a person, most urgent first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Need {
    /// The provider refused the grant: only a reconnect brings it back.
    Reconnect,
    /// The provider now asks for permissions the account has not granted.
    Permissions,
    /// The refresh token lapses soon: a reconnect before then keeps it.
    Lapsing,
    /// Refreshes have failed for longer than `TETHER_REFRESH_FAILING_AFTER`.
    Failing,
}

impl Need {
    /// Whether the fix is a reconnect of the account (else a retry).
    pub fn reconnects(self) -> bool {
        self != Need::Failing
    }

    /// Whether the account is unusable until someone acts (else it is a
    /// warning ahead of time).
    pub fn is_broken(self) -> bool {
        self == Need::Reconnect
    }

    /// As in `data-need` and CSS classes.
    pub fn as_str(self) -> &'static str {
        match self {
            Need::Reconnect => "reconnect",
            Need::Permissions => "permissions",
            Need::Lapsing => "lapsing",
            Need::Failing => "failing",
        }
    }
}

/// One permission of an account, in words where the provider's preset or
/// providers file gives them.
pub struct Permission {
    /// The sentence, or the scope's code when none is known.
    pub text: String,
    pub code: String,
}

fn permissions(provider: &Provider, scopes: &[String]) -> Vec<Permission> {
    scopes
        .iter()
        .map(|s| Permission {
            text: provider
                .scope_descriptions
                .get(s)
                .cloned()
                .unwrap_or_else(|| s.clone()),
            code: s.clone(),
        })
        .collect()
}

/// One connected account on its provider's card, with its own actions.
pub struct AccountCard {
    /// The provider's account id, sent back by the account's forms.
    pub id: String,
    /// Its name, else its id.
    pub label: String,
    pub is_default: bool,
    pub status: PublicStatus,
    pub permissions: Vec<Permission>,
    /// Permissions asked for now that this account was not granted.
    pub missing: Vec<Permission>,
    /// What most needs a person, if anything.
    pub need: Option<Need>,
    /// The sentence that says so, and what the fix does.
    pub need_text: String,
    /// When the current access token expires (none: it does not).
    pub expires: Option<Moment>,
    /// The last successful renewal (none: not yet).
    pub renewed: Option<Moment>,
    /// When a failing account is tried again.
    pub next_try: Option<Moment>,
    pub connected: Moment,
    /// When the refresh token lapses, if the provider documents a lifetime.
    pub lapses: Option<Moment>,
    /// What the provider last said, as stored (shown under "Details").
    pub last_error: Option<String>,
    /// The account's own settings, over the provider's.
    pub settings: SettingsForm,
    /// The HTML id its settings form's inputs start with.
    pub form_id: String,
    /// Connected with a private token (never refreshed), not OAuth.
    pub private_token: bool,
    /// What the CRM did with it lately.
    pub usage: UsageLine,
}

impl AccountCard {
    /// Its banner already says when access ends (no separate line).
    pub fn lapse_in_banner(&self) -> bool {
        self.need == Some(Need::Lapsing)
    }
}

/// What the dashboard knows of one account: the view the API gives of it,
/// and the row's own times.
struct AccountFacts<'a> {
    provider: &'a Provider,
    view: StatusView,
    row: &'a Connection,
    settings: SettingsForm,
    usage: UsageLine,
    form_id: String,
}

/// An account's card line. `warn_days` is how far ahead a lapsing refresh
/// token is shown (the scheduler's warning window); `failing_after`, how
/// long refreshes fail before a person is asked to look.
fn account_card(f: AccountFacts<'_>, warn_days: i64, failing_after: Duration) -> AccountCard {
    let AccountFacts {
        provider,
        view,
        row,
        settings,
        usage,
        form_id,
    } = f;
    let (id, name) = view
        .account
        .map(|a| (a.id.to_string(), a.name))
        .unwrap_or_default();
    let label = name.unwrap_or_else(|| id.clone());
    let now = chrono::Utc::now();
    let lapses = Moment::parse(view.lapses_at.as_deref());
    let lapsing = view
        .lapses_at
        .as_deref()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .is_some_and(|t| t <= now + chrono::Duration::days(warn_days));
    let failing_long = view.status == PublicStatus::Error
        && row.error_since.is_some_and(|since| {
            (now.naive_utc() - since)
                .to_std()
                .is_ok_and(|d| d >= failing_after)
        });
    let need = if view.status == PublicStatus::NeedsReconnect {
        Some(Need::Reconnect)
    } else if !view.missing_scopes.is_empty() {
        Some(Need::Permissions)
    } else if lapsing {
        Some(Need::Lapsing)
    } else if failing_long {
        Some(Need::Failing)
    } else {
        None
    };
    let p = &provider.display_name;
    let missing = permissions(provider, &view.missing_scopes);
    let need_text = match need {
        Some(Need::Reconnect) => {
            format!("{p} no longer accepts the connection of {label}. Reconnect it to keep it working.")
        }
        Some(Need::Permissions) => format!(
            "{p} now asks {label} for more: {}. Reconnect to give them.{}",
            missing
                .iter()
                .map(|m| m.text.as_str())
                .collect::<Vec<_>>()
                .join("; "),
            match (&lapses, lapsing) {
                (Some(m), true) => format!(" Its access also ends {}.", m.relative),
                _ => String::new(),
            }
        ),
        Some(Need::Lapsing) => format!(
            "{p} ends access to {label} {}. Reconnect before then to keep it working.",
            lapses.as_ref().map_or("soon", |m| m.relative.as_str())
        ),
        Some(Need::Failing) => format!(
            "{p} has not answered for {label} since {}. We keep trying; try now, or reconnect if this goes on.",
            row.error_since
                .map_or_else(|| "a while".to_string(), |t| Moment::of(t).relative)
        ),
        None => String::new(),
    };
    let refreshes = provider.refresh != crate::providers::RefreshStyle::None
        && view.kind != Some(Kind::PrivateToken);
    AccountCard {
        id,
        is_default: view.default,
        status: view.status,
        permissions: permissions(provider, &view.scopes),
        missing,
        need,
        need_text,
        expires: Moment::parse(view.expires_at.as_deref()),
        renewed: refreshes
            .then(|| Moment::parse(view.last_refreshed_at.as_deref()))
            .flatten(),
        next_try: (view.status == PublicStatus::Error)
            .then(|| row.next_refresh_at.map(Moment::of))
            .flatten(),
        connected: Moment::of(row.created_at),
        lapses,
        last_error: view.last_error,
        settings,
        form_id,
        private_token: view.kind == Some(Kind::PrivateToken),
        usage,
        label,
    }
}

/// A provider's card: every fact comes from the [`StatusView`]s the API
/// gives of the provider (`view`) and of each account (`accounts`, default
/// first, each with its settings form and its use by the CRM).
fn card(
    provider: &Provider,
    view: StatusView,
    accounts: Vec<AccountCard>,
    events: Vec<ActivityLine>,
    settings: SettingsForm,
) -> Card {
    Card {
        key: provider.key.to_string(),
        need: accounts.iter().filter_map(|a| a.need).min(),
        name: provider.display_name.clone(),
        status: view.status,
        has_tokens: !accounts.is_empty(),
        accounts,
        by_instance: provider.flow == Flow::ClientCredentials,
        refreshable: provider.refresh != crate::providers::RefreshStyle::None,
        events,
        settings,
        private_tokens: provider.private_tokens.clone(),
        flash: None,
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
    let failing_after = state.settings.refresh.failing_after;
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
                let each = accounts.iter().enumerate().map(|(i, a)| {
                    let id = a.account_id.as_str();
                    let stored = own.get(id).unwrap_or(&none);
                    let facts = AccountFacts {
                        provider: p,
                        view: StatusView::of(p, Some(a)),
                        row: a,
                        settings: settings_form(p, stored, Some(&shared), draft_of(Some(id))),
                        usage: wording.usage(used.get(&a.id)),
                        form_id: format!("settings-{}-a{}", p.key, i + 1),
                    };
                    account_card(facts, warn_days, failing_after)
                });
                let each = each.collect();
                let form = settings_form(p, &shared, None, draft_of(None));
                out.push(card(p, view, each, events, form));
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
    /// The CRM's name as configured, and at the start of a sentence.
    crm: &'a str,
    crm_start: String,
    /// Every account that needs a person, most urgent first.
    attention: Vec<Attention>,
    /// Providers with accounts, those that need a person first.
    connected: Vec<Card>,
    /// Providers to connect, compact.
    available: Vec<Card>,
    disabled: Vec<DisabledItem>,
    /// A message about no one card.
    flash: Option<Flash>,
}

/// One line of "Needs your attention": an account and its fix.
pub struct Attention {
    pub key: String,
    pub provider: String,
    pub account_id: String,
    pub account: String,
    pub need: Need,
    pub text: String,
}

/// `name` with its first letter in capitals, to start a sentence.
pub fn sentence_start(name: &str) -> String {
    let mut chars = name.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The board laid out for a person: what needs them, then what is
/// connected, then what may be connected; a flash about a card goes on it.
fn lay_out(
    mut cards: Vec<Card>,
    flash: Option<Flash>,
) -> (Vec<Attention>, Vec<Card>, Vec<Card>, Option<Flash>) {
    let mut page_flash = flash;
    if let Some(target) = page_flash.as_ref().and_then(|f| f.card.clone()) {
        if let Some(card) = cards.iter_mut().find(|c| c.key == target) {
            card.flash = page_flash.take();
        }
    }
    let mut attention: Vec<Attention> = cards
        .iter()
        .flat_map(|c| {
            c.accounts.iter().filter_map(|a| {
                Some(Attention {
                    key: c.key.clone(),
                    provider: c.name.clone(),
                    account_id: a.id.clone(),
                    account: a.label.clone(),
                    need: a.need?,
                    text: a.need_text.clone(),
                })
            })
        })
        .collect();
    attention.sort_by_key(|a| a.need);
    let (mut connected, available): (Vec<Card>, Vec<Card>) =
        cards.into_iter().partition(|c| c.has_tokens);
    // Stable: alphabetical within each group, as the catalogue lists them.
    connected.sort_by_key(|c| c.need.is_none());
    (attention, connected, available, page_flash)
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
    let (attention, connected, available, flash) =
        lay_out(cards, session::take_flash(&admin.session));
    let page = Dashboard {
        tenant_name: &tenant.name,
        email: &admin.email,
        csrf: &csrf,
        crm: &state.settings.crm_name,
        crm_start: sentence_start(&state.settings.crm_name),
        attention,
        connected,
        available,
        disabled,
        flash,
    };
    Ok(Some(page.render().map_err(AppError::internal)?))
}

#[derive(Template)]
#[template(path = "card_fragment.html")]
struct CardFragment<'a> {
    csrf: &'a str,
    crm: &'a str,
    crm_start: String,
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
    render(&CardFragment {
        csrf: &csrf,
        crm: &state.settings.crm_name,
        crm_start: sentence_start(&state.settings.crm_name),
        card,
    })
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
    if enabled {
        session::flash_card(
            &admin.session,
            FlashKind::Ok,
            &provider.key,
            switched(&provider, enabled),
        );
        Ok(back_to_card(&provider.key))
    } else {
        // Its card is gone: the message goes at the top.
        session::flash(&admin.session, FlashKind::Ok, switched(&provider, enabled));
        Ok(see_other(DASHBOARD))
    }
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
    if provider.settings_schema.is_empty() {
        // Free-form settings are the CRM's to write, through its API.
        return Err(AppError::bad_request(
            Code::InvalidSettings,
            format!("{} has no settings to change here.", provider.display_name),
        )
        .into());
    }
    let saved = async {
        let actor = admin.actor();
        match &account {
            None => {
                let settings = integration::from_form(&provider, &form)?;
                let (t, s) = (&admin.tenant_id, Some(&settings));
                integration::save(&state, t, &provider, None, s, &actor).await?;
            }
            Some(account) => {
                let settings = integration::from_account_form(&provider, &form)?;
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
            session::flash_card(&admin.session, FlashKind::Ok, &provider.key, message);
            Ok(back_to_card(&provider.key))
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
        Ok((row, _)) => session::flash_card(
            &admin.session,
            FlashKind::Ok,
            &provider.key,
            format!(
                "{} connected with its {label}: the CRM can use it now. It is never renewed here; connect when you can, and the connection takes its place.",
                row.label()
            ),
        ),
        Err(e) if e.is_unavailable() => return Err(PageError(e)),
        Err(e) => session::flash_card(
            &admin.session,
            FlashKind::Error,
            &provider.key,
            format!("The {label} was not stored: {}", e.message()),
        ),
    }
    Ok(back_to_card(&provider.key))
}
