//! Connect links: single-use URLs a person opens to connect a provider for a
//! tenant, issued by the CRM (the chatbot sends them).

use crate::app::App;
use crate::config::Settings;
use crate::crypto::Secret;
use crate::db::models::connect_link::ConnectLink;
use crate::db::models::connect_session::{ConnectSession, NewSession};
use crate::db::models::event::Actor;
use crate::db::models::integration_setting::IntegrationSetting;
use crate::db::models::tenant::Tenant;
use crate::db::models::user::normalize_email;
use crate::error::{AppError, AppResult, Code};
use crate::ids::{Tags, TenantId};
use crate::providers::{Flow, Provider};
use chrono::NaiveDateTime;

/// How long a link stays valid unless the caller says otherwise.
pub const DEFAULT_TTL_SECS: i64 = 900;

/// An issued link.
pub struct IssuedLink {
    /// The link itself: it carries the secret token.
    pub url: Secret<String>,
    pub expires_at: NaiveDateTime,
}

/// What a link is issued with besides its tenant and provider.
pub struct LinkOptions<'a> {
    /// Seconds the link stays valid (60 to 86400).
    pub ttl_secs: i64,
    /// The person it is for.
    pub email: Option<&'a str>,
    /// The CRM's tags, carried to the connection and its events.
    pub tags: Option<Tags>,
}

/// Issues a link to connect `provider` for the tenant, valid `ttl_secs`
/// (60 to 86400), optionally naming the person it is for and with the
/// CRM's tags.
pub async fn issue(
    app: &App,
    tenant_id: TenantId,
    provider: &Provider,
    options: LinkOptions<'_>,
    actor: &Actor,
) -> AppResult<IssuedLink> {
    let LinkOptions {
        ttl_secs,
        email,
        tags,
    } = options;
    linkable(provider)?;
    if !(60..=86_400).contains(&ttl_secs) {
        return Err(AppError::bad_request(
            Code::InvalidExpiresIn,
            "expires_in is 60 to 86400 seconds",
        ));
    }
    let email = email.map(normalize_email).transpose()?;
    let (key, actor) = (provider.key.clone(), actor.to_string());
    let name = provider.display_name.clone();
    let (token, expires_at) = app
        .db(move |c| {
            // A link would connect what the tenant switched off.
            if IntegrationSetting::is_disabled(c, &tenant_id, &key)? {
                return Err(AppError::provider_disabled(&name));
            }
            Ok(ConnectLink::create(
                c,
                &tenant_id,
                &key,
                &actor,
                email.as_deref(),
                tags.as_ref(),
                chrono::Duration::seconds(ttl_secs),
            )?)
        })
        .await?;
    Ok(IssuedLink {
        url: Secret::new(format!(
            "{}/connect/{}",
            app.settings.base_url(),
            token.expose()
        )),
        expires_at,
    })
}

/// How long a connect session stays valid unless the caller says otherwise.
pub const SESSION_DEFAULT_TTL_SECS: i64 = 1800;
/// How many connects a session allows unless the caller says otherwise.
pub const SESSION_DEFAULT_USES: i32 = 10;

/// What a connect session is opened with besides its tenant.
pub struct SessionOptions<'a> {
    /// The providers it may connect (empty: every enabled provider
    /// connected by a link).
    pub providers: Vec<String>,
    /// Seconds it stays valid (60 to 86400).
    pub ttl_secs: i64,
    /// Connects it allows (1 to 100): a popup closed and opened again
    /// spends another.
    pub uses: i32,
    /// The person it is for.
    pub email: Option<&'a str>,
    /// The CRM's tags, carried to each connection and its events.
    pub tags: Option<Tags>,
}

/// An opened connect session.
pub struct IssuedSession {
    /// The session's token, for `TetherConnect.open({session, provider})`.
    pub token: Secret<String>,
    pub expires_at: NaiveDateTime,
    pub providers: Vec<String>,
    pub uses: i32,
}

/// Opens a connect session for the tenant: the CRM's page holds its token
/// and opens a connect of any provider it lists on each click, as many
/// times as `uses` allows, until it expires.
pub async fn open_session(
    app: &App,
    tenant_id: TenantId,
    options: SessionOptions<'_>,
    actor: &Actor,
) -> AppResult<IssuedSession> {
    let SessionOptions {
        providers,
        ttl_secs,
        uses,
        email,
        tags,
    } = options;
    if !(60..=86_400).contains(&ttl_secs) {
        return Err(AppError::bad_request(
            Code::InvalidExpiresIn,
            "expires_in is 60 to 86400 seconds",
        ));
    }
    if !(1..=100).contains(&uses) {
        return Err(AppError::bad_request(
            Code::InvalidRequest,
            "uses is 1 to 100 connects",
        ));
    }
    let providers = if providers.is_empty() {
        app.providers
            .all()
            .filter(|p| p.enabled() && p.flow == Flow::AuthorizationCode)
            .map(|p| p.key.to_string())
            .collect()
    } else {
        for key in &providers {
            let provider = app.enabled_provider(key)?;
            linkable(&provider)?;
        }
        let mut listed = providers;
        listed.sort();
        listed.dedup();
        listed
    };
    if providers.is_empty() {
        return Err(AppError::bad_request(
            Code::UnsupportedFlow,
            "no enabled provider is connected with a link",
        ));
    }
    let email = email.map(normalize_email).transpose()?;
    let actor = actor.to_string();
    let listed = providers.clone();
    let (token, expires_at) = app
        .db(move |c| {
            Ok(ConnectSession::create(
                c,
                &NewSession {
                    tenant_id: &tenant_id,
                    providers: &listed,
                    created_by: &actor,
                    email: email.as_deref(),
                    tags: tags.as_ref(),
                    uses,
                    ttl: chrono::Duration::seconds(ttl_secs),
                },
            )?)
        })
        .await?;
    Ok(IssuedSession {
        token,
        expires_at,
        providers,
        uses,
    })
}

/// A provider a link (or a session) may connect: one with a consent page.
fn linkable(provider: &Provider) -> AppResult<()> {
    if provider.flow != Flow::AuthorizationCode {
        return Err(AppError::bad_request(
            Code::UnsupportedFlow,
            format!(
                "{} is connected from its app install, not with a link",
                provider.display_name
            ),
        ));
    }
    Ok(())
}

/// A session's page for `provider`: whom and what it connects. Changes
/// nothing.
pub async fn preview_session(app: &App, token: String, provider: String) -> AppResult<LinkPreview> {
    let found = app
        .db(move |c| {
            let Some(session) = ConnectSession::usable(c, &token)? else {
                return Ok(None);
            };
            let tenant = Tenant::by_id(c, &session.tenant_id)?;
            Ok(tenant.map(|t| (session, t.name)))
        })
        .await?;
    let (session, tenant_name) = found.ok_or_else(invalid_session)?;
    let provider = session_provider(app, &session, &provider)?;
    Ok(LinkPreview {
        tenant_name,
        provider_name: provider.display_name.clone(),
        email: session.email,
        expires_at: session.expires_at,
    })
}

/// Spends one use of the session on a connect of `provider`, as a
/// single-use link made for it (with the session's person and tags), which
/// the caller goes on with at once. The tenant must not have switched the
/// provider off; nothing is spent when the session refuses.
pub async fn link_from_session(app: &App, token: String, provider: String) -> AppResult<String> {
    let session = app
        .db({
            let token = token.clone();
            move |c| Ok(ConnectSession::usable(c, &token)?)
        })
        .await?
        .ok_or_else(invalid_session)?;
    let provider = session_provider(app, &session, &provider)?;
    let (key, name) = (provider.key.clone(), provider.display_name.clone());
    let link = app
        .db(move |c| {
            if IntegrationSetting::is_disabled(c, &session.tenant_id, &key)? {
                return Err(AppError::provider_disabled(&name));
            }
            let session = ConnectSession::spend(c, &token)?.ok_or_else(invalid_session)?;
            let (link, _) = ConnectLink::create(
                c,
                &session.tenant_id,
                &key,
                &session.created_by,
                session.email.as_deref(),
                Tags::stored(session.tags.as_deref()).as_ref(),
                chrono::Duration::seconds(60),
            )?;
            Ok(link)
        })
        .await?;
    Ok(link.expose().clone())
}

/// The provider a session's page names, if the session lists it and it is
/// enabled.
fn session_provider(
    app: &App,
    session: &ConnectSession,
    provider: &str,
) -> AppResult<std::sync::Arc<Provider>> {
    if !session.allows(provider) {
        return Err(AppError::bad_request(
            Code::InvalidLink,
            "This connect session does not cover that provider. Ask for a new one.",
        ));
    }
    app.enabled_provider(provider)
}

/// The answer to a session that cannot be used.
pub fn invalid_session() -> AppError {
    AppError::bad_request(
        Code::InvalidLink,
        "This connect session is not valid: it expired or its connects are used up. Reload the page you came from.",
    )
}

/// What a link's page shows before anything is done with it.
pub struct LinkPreview {
    /// The tenant's display name.
    pub tenant_name: String,
    pub provider_name: String,
    pub email: Option<String>,
    pub expires_at: NaiveDateTime,
}

/// The link's page: whom and what it connects. Changes nothing, so link
/// previews and mail scanners may fetch it any number of times.
pub async fn preview(app: &App, token: String) -> AppResult<LinkPreview> {
    let found = app
        .db(move |c| {
            let Some(link) = ConnectLink::usable(c, &token)? else {
                return Ok(None);
            };
            let tenant = Tenant::by_id(c, &link.tenant_id)?;
            Ok(tenant.map(|t| (link, t.name)))
        })
        .await?;
    let (link, tenant_name) = found.ok_or_else(invalid)?;
    let provider = app.enabled_provider(&link.provider)?;
    Ok(LinkPreview {
        tenant_name,
        provider_name: provider.display_name.clone(),
        email: link.email,
        expires_at: link.expires_at,
    })
}

/// The origin of the CRM page that opens a link with `/static/connect.js`
/// (its `embed` parameter), if `TETHER_EMBED_ORIGINS` lists it exactly: only
/// that page is told the flow's outcome. Anything else is a 400.
pub fn embed_origin(settings: &Settings, raw: &str) -> AppResult<String> {
    if let Some(origin) = settings.embed_origin(raw) {
        return Ok(origin.to_string());
    }
    let shown: String = raw
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(100)
        .collect();
    let listed = if settings.embed_origins.is_empty() {
        "TETHER_EMBED_ORIGINS lists no page"
    } else {
        "it is not listed in TETHER_EMBED_ORIGINS"
    };
    Err(AppError::bad_request(
        Code::InvalidEmbedOrigin,
        format!(
            "The page at {shown} may not open this connect link: {listed}. Ask the operator to list the page's origin, or open the link directly."
        ),
    ))
}

/// The answer to a link that cannot be used.
pub fn invalid() -> AppError {
    AppError::bad_request(
        Code::InvalidLink,
        "This link is not valid: it was already used or has expired. Ask for a new one.",
    )
}
