//! Browser sessions: who is signed in (from an encrypted cookie), CSRF tokens,
//! flash messages, and the value that binds an OAuth state to a session.
//!
//! A session lives in the cookie, so the server keeps one value per user:
//! the session generation. A signed-in session carries the generation it
//! was made in, when it was made and when it was last used; it is refused
//! past the absolute or idle limit (`TETHER_SESSION_MAX_AGE_SECS`,
//! `TETHER_SESSION_IDLE_SECS`), or once the user's generation moved on
//! (sign-out, sign out everywhere) or the user is gone. A copied cookie
//! therefore ends with the session it was copied from.

use crate::app::App;
use crate::config::SessionLimits;
use crate::crypto::random_token;
use crate::db::models::event::Actor;
use crate::db::models::user::User;
use crate::error::{AppError, AppResult, PageError};
use crate::ids::{Email, TenantId};
use actix_session::{Session, SessionExt};
use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use futures_util::future::LocalBoxFuture;
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;

const USER: &str = "uid";
const TENANT: &str = "tid";
const EMAIL: &str = "email";
const CSRF: &str = "csrf";
const BINDING: &str = "oauth_binding";
const FLASH: &str = "flash";
const INSTALL: &str = "install";
const ISSUED_AT: &str = "iat";
const LAST_SEEN: &str = "seen";
const GENERATION: &str = "gen";

/// How stale `LAST_SEEN` may get before a request writes it again (so that
/// not every request re-sets the cookie); the idle limit is this coarse.
const SEEN_RESOLUTION_SECS: i64 = 60;

/// A signed-in tenant admin. The tenant always comes from here, never from a parameter.
#[derive(Clone)]
pub struct AdminSession {
    pub user_id: String,
    pub tenant_id: TenantId,
    /// The tenant's external id, for the request line.
    pub tenant: String,
    pub email: Email,
    pub session: Session,
}

impl FromRequest for AdminSession {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let session = req.get_session();
        let app = req.app_data::<web::Data<App>>().cloned();
        let wants_json = req
            .headers()
            .get(actix_web::http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("application/json"));
        let req = req.clone();
        Box::pin(async move {
            let app = app.ok_or_else(|| AppError::internal("no app state"))?;
            let admin = signed_in(&app, session).await.map_err(|err| {
                if wants_json {
                    actix_web::Error::from(err)
                } else {
                    PageError(err).into()
                }
            })?;
            req.extensions_mut()
                .insert(super::access_log::LogTenant(admin.tenant.clone()));
            Ok(admin)
        })
    }
}

/// The admin this session belongs to, if it is still signed in: within
/// both limits and of the user's current generation. A session that is
/// not is emptied, so its cookie is replaced.
/// Moves the session's last-seen time on, at most once per
/// [`SEEN_RESOLUTION_SECS`] (a write of the cookie on every request would
/// cost more than the idle limit needs).
fn seen_now(session: &Session, seen: i64, now: i64) -> AppResult<()> {
    if now - seen >= SEEN_RESOLUTION_SECS {
        session
            .insert(LAST_SEEN, now)
            .map_err(|e| AppError::internal(e.to_string()))?;
    }
    Ok(())
}

async fn signed_in(app: &App, session: Session) -> AppResult<AdminSession> {
    let get = |k: &str| session.get::<String>(k).ok().flatten();
    let num = |k: &str| session.get::<i64>(k).ok().flatten();
    let (Some(user_id), Some(tenant_id), Some(email)) = (get(USER), get(TENANT), get(EMAIL)) else {
        return Err(AppError::unauthorized("sign in first"));
    };
    let now = chrono::Utc::now().timestamp();
    let (Some(issued), Some(seen), Some(generation)) =
        (num(ISSUED_AT), num(LAST_SEEN), num(GENERATION))
    else {
        return Err(ended(&session));
    };
    if !within(&app.settings.session, issued, seen, now) {
        return Err(ended(&session));
    }
    let uid = user_id.clone();
    let current = app.db(move |c| Ok(User::session_state(c, &uid)?)).await?;
    let Some((_, tenant)) = current.filter(|(g, _)| *g == generation) else {
        return Err(ended(&session));
    };
    seen_now(&session, seen, now)?;
    Ok(AdminSession {
        user_id,
        tenant_id: TenantId::known(tenant_id),
        tenant,
        email: Email::known(email),
        session,
    })
}

/// Whether a session made at `issued` and last used at `seen` may still be
/// used at `now` (unix seconds).
fn within(limits: &SessionLimits, issued: i64, seen: i64, now: i64) -> bool {
    let secs = |d: std::time::Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    now - issued <= secs(limits.max_age) && now - seen <= secs(limits.idle)
}

/// Empties a session that may no longer be used; the answer asks to sign in.
fn ended(session: &Session) -> AppError {
    session.purge();
    AppError::unauthorized("your session has ended; sign in again")
}

impl AdminSession {
    /// The actor name recorded in events.
    pub fn actor(&self) -> Actor {
        Actor::Admin {
            email: self.email.to_string(),
        }
    }

    /// The random value that ties OAuth states to this session.
    pub fn binding(&self) -> AppResult<String> {
        get_or_create(&self.session, BINDING)
    }
}

/// A form posted from one of our pages, whose CSRF token (the `csrf` field)
/// has been checked against the session before the handler runs: a POST
/// handler that takes its form this way cannot forget the check. A missing
/// token is refused like a wrong one (403).
pub struct CsrfForm<T>(pub T);

/// A form with no fields but the CSRF token.
#[derive(serde::Deserialize)]
pub struct NoFields {}

#[derive(serde::Deserialize)]
struct WithCsrf<T> {
    #[serde(default)]
    csrf: String,
    #[serde(flatten)]
    form: T,
}

impl<T: DeserializeOwned + 'static> FromRequest for CsrfForm<T> {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let session = req.get_session();
        let form = web::Form::<WithCsrf<T>>::from_request(req, payload);
        Box::pin(async move {
            let web::Form(WithCsrf { csrf, form }) = form.await?;
            verify_csrf(&session, &csrf).map_err(PageError)?;
            Ok(CsrfForm(form))
        })
    }
}

/// The signed-in admin's email, if any (without requiring a sign-in).
pub fn email(session: &Session) -> Option<String> {
    session.get::<String>(EMAIL).ok().flatten()
}

/// The value that ties the OAuth states this browser starts to it, made on
/// first use. Every flow of the browser shares it, so a second flow (another
/// link's popup, a dashboard connect) leaves the first one valid.
pub fn oauth_binding_or_new(session: &Session) -> AppResult<String> {
    get_or_create(session, BINDING)
}

/// The value an OAuth callback must match, if this browser started a flow.
pub fn oauth_binding(session: &Session) -> Option<String> {
    session.get::<String>(BINDING).ok().flatten()
}

/// Signs `user` in on a fresh session (no fixation), with new CSRF and
/// binding values, in the user's current session generation.
pub fn sign_in(session: &Session, user: &User) -> AppResult<()> {
    // An install the admin signed in to confirm stays (it proves nothing
    // about the admin; the confirmation form still needs this session).
    let install = session.get::<(String, String)>(INSTALL).ok().flatten();
    let held = session.get::<HeldInstall>(HELD_INSTALL).ok().flatten();
    session.renew();
    session.clear();
    let internal = |e: actix_session::SessionInsertError| AppError::internal(e.to_string());
    if let Some(install) = install {
        session.insert(INSTALL, install).map_err(internal)?;
    }
    if let Some(held) = held {
        session.insert(HELD_INSTALL, held).map_err(internal)?;
    }
    for (k, v) in [
        (USER, user.id.as_str()),
        (TENANT, &*user.tenant_id),
        (EMAIL, &user.email),
    ] {
        session.insert(k, v).map_err(internal)?;
    }
    let now = chrono::Utc::now().timestamp();
    for (k, v) in [
        (ISSUED_AT, now),
        (LAST_SEEN, now),
        (GENERATION, user.session_generation),
    ] {
        session.insert(k, v).map_err(internal)?;
    }
    Ok(())
}

/// Signs out: ends every session of the signed-in user, wherever its
/// cookie is (the generation moves on), and empties this one.
pub async fn sign_out(app: &App, session: &Session) -> AppResult<()> {
    if let Some(uid) = session.get::<String>(USER).ok().flatten() {
        app.db(move |c| Ok(User::end_sessions(c, &uid)?)).await?;
    }
    session.renew();
    session.clear();
    Ok(())
}

fn get_or_create(session: &Session, key: &str) -> AppResult<String> {
    if let Ok(Some(v)) = session.get::<String>(key) {
        return Ok(v);
    }
    let v = random_token(32);
    session
        .insert(key, &v)
        .map_err(|e| AppError::internal(e.to_string()))?;
    Ok(v)
}

/// The session's CSRF token, for a hidden form field.
pub fn csrf_token(session: &Session) -> AppResult<String> {
    get_or_create(session, CSRF)
}

/// Checks a submitted CSRF token against the session's, in constant time.
fn verify_csrf(session: &Session, presented: &str) -> AppResult<()> {
    let expected = session
        .get::<String>(CSRF)
        .ok()
        .flatten()
        .unwrap_or_default();
    if !expected.is_empty() && bool::from(expected.as_bytes().ct_eq(presented.as_bytes())) {
        Ok(())
    } else {
        Err(AppError::forbidden(
            "the form expired or did not come from this site; reload the page and try again",
        ))
    }
}

/// Keeps a provider-signed install artefact while the admin signs in and
/// confirms (it is kept out of URLs such as the sign-in page's `next`).
pub fn keep_install(session: &Session, provider: &str, instance: &str) -> AppResult<()> {
    session
        .insert(INSTALL, (provider, instance))
        .map_err(|e| AppError::internal(e.to_string()))
}

/// The install artefact kept for `provider`, if any.
pub fn pending_install(session: &Session, provider: &str) -> Option<String> {
    session
        .get::<(String, String)>(INSTALL)
        .ok()
        .flatten()
        .filter(|(p, _)| p == provider)
        .map(|(_, instance)| instance)
}

pub fn drop_install(session: &Session) {
    session.remove(INSTALL);
    session.remove(HELD_INSTALL);
}

/// A held install this browser brought from the provider's callback.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct HeldInstall {
    pub provider: String,
    pub id: String,
    /// When it was brought (Unix seconds).
    pub at: i64,
    /// The browser came from the provider's own install page (its
    /// `Referer` is the provider's authorize origin); otherwise the claim
    /// asks for an explicit confirmation.
    pub vouched: bool,
}

const HELD_INSTALL: &str = "held_install";

/// Keeps the id of a held install while the admin signs in and claims it
/// (never in a URL: whoever holds the id can claim the install).
pub fn keep_held_install(
    session: &Session,
    provider: &str,
    id: &str,
    vouched: bool,
) -> AppResult<()> {
    let held = HeldInstall {
        provider: provider.into(),
        id: id.into(),
        at: chrono::Utc::now().timestamp(),
        vouched,
    };
    session
        .insert(HELD_INSTALL, held)
        .map_err(|e| AppError::internal(e.to_string()))
}

/// The held install this browser brought for `provider`, while it may
/// still claim it (`window`: a planted one lapses from the browser within
/// minutes; the CRM may still assign the install until it expires).
pub fn held_install(
    session: &Session,
    provider: &str,
    window: std::time::Duration,
) -> Option<HeldInstall> {
    let now = chrono::Utc::now().timestamp();
    session
        .get::<HeldInstall>(HELD_INSTALL)
        .ok()
        .flatten()
        .filter(|h| h.provider == provider && now - h.at < window.as_secs() as i64)
}

/// What a one-time message says happened: its style on the page
/// (`flash-ok`, ...), and how it is kept in the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlashKind {
    Ok,
    Warn,
    Error,
}

impl FlashKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FlashKind::Ok => "ok",
            FlashKind::Warn => "warn",
            FlashKind::Error => "error",
        }
    }

    /// Whether it tells of a success.
    pub fn is_ok(self) -> bool {
        self == FlashKind::Ok
    }
}

impl std::fmt::Display for FlashKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A one-time message shown on the next page.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Flash {
    pub kind: FlashKind,
    pub message: String,
    /// The provider whose card it is about: shown on that card, where the
    /// admin acted, rather than at the top of the page.
    #[serde(default)]
    pub card: Option<String>,
    /// What a service said, for whoever wants it: shown under "Details".
    #[serde(default)]
    pub detail: Option<String>,
}

pub fn flash(session: &Session, kind: FlashKind, message: impl Into<String>) {
    let _ = session.insert(
        FLASH,
        Flash {
            kind,
            message: message.into(),
            card: None,
            detail: None,
        },
    );
}

/// A [`flash`] shown on the card of provider `card`.
pub fn flash_card(session: &Session, kind: FlashKind, card: &str, message: impl Into<String>) {
    flash_card_with(session, kind, card, message, None);
}

/// A [`flash_card`] with what a service said, shown under "Details".
pub fn flash_card_with(
    session: &Session,
    kind: FlashKind,
    card: &str,
    message: impl Into<String>,
    detail: Option<String>,
) {
    let _ = session.insert(
        FLASH,
        Flash {
            kind,
            message: message.into(),
            card: Some(card.to_string()),
            detail,
        },
    );
}

pub fn take_flash(session: &Session) -> Option<Flash> {
    let f = session.get::<Flash>(FLASH).ok().flatten();
    if f.is_some() {
        session.remove(FLASH);
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_session_ends_at_its_absolute_and_idle_limits() {
        let limits = SessionLimits {
            max_age: Duration::from_secs(12 * 3600),
            idle: Duration::from_secs(2 * 3600),
        };
        let t0 = 1_000_000;
        assert!(within(&limits, t0, t0, t0));
        assert!(within(&limits, t0, t0 + 11 * 3600, t0 + 12 * 3600));
        assert!(!within(&limits, t0, t0 + 11 * 3600, t0 + 12 * 3600 + 1));
        assert!(within(&limits, t0, t0, t0 + 2 * 3600));
        assert!(!within(&limits, t0, t0, t0 + 2 * 3600 + 1));
    }
}
