//! Browser sessions: who is signed in (from an encrypted cookie), CSRF tokens,
//! flash messages, and the value that binds an OAuth state to a session.

use crate::crypto::random_token;
use crate::db::models::event::Actor;
use crate::error::{AppError, AppResult, PageError};
use crate::ids::{Email, TenantId};
use actix_session::{Session, SessionExt};
use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};
use futures_util::future::LocalBoxFuture;
use serde::de::DeserializeOwned;
use std::future::{ready, Ready};
use subtle::ConstantTimeEq;

const USER: &str = "uid";
const TENANT: &str = "tid";
const EMAIL: &str = "email";
const CSRF: &str = "csrf";
const BINDING: &str = "oauth_binding";
const FLASH: &str = "flash";

/// A signed-in tenant admin. The tenant always comes from here, never from a parameter.
#[derive(Clone)]
pub struct AdminSession {
    pub user_id: String,
    pub tenant_id: TenantId,
    pub email: Email,
    pub session: Session,
}

impl FromRequest for AdminSession {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let session = req.get_session();
        let get = |k: &str| session.get::<String>(k).ok().flatten();
        let result = match (get(USER), get(TENANT), get(EMAIL)) {
            (Some(user_id), Some(tenant_id), Some(email)) => Ok(AdminSession {
                user_id,
                tenant_id: TenantId::known(tenant_id),
                email: Email::known(email),
                session: session.clone(),
            }),
            _ => {
                let err = AppError::unauthorized("sign in first");
                let wants_json = req
                    .headers()
                    .get(actix_web::http::header::ACCEPT)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.contains("application/json"));
                Err(if wants_json {
                    err.into()
                } else {
                    PageError(err).into()
                })
            }
        };
        ready(result)
    }
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

/// Keeps the value that ties the OAuth states started now to this browser.
pub fn bind_oauth(session: &Session, binding: &str) -> AppResult<()> {
    session
        .insert(BINDING, binding)
        .map_err(|e| AppError::internal(e.to_string()))
}

/// The value an OAuth callback must match, if this browser started a flow.
pub fn oauth_binding(session: &Session) -> Option<String> {
    session.get::<String>(BINDING).ok().flatten()
}

/// Signs `user` in on a fresh session id (no fixation), with new CSRF and binding values.
pub fn sign_in(session: &Session, user_id: &str, tenant_id: &str, email: &str) -> AppResult<()> {
    session.renew();
    session.clear();
    for (k, v) in [(USER, user_id), (TENANT, tenant_id), (EMAIL, email)] {
        session
            .insert(k, v)
            .map_err(|e| AppError::internal(e.to_string()))?;
    }
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

/// A one-time message shown on the next page.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Flash {
    /// `ok`, `warn` or `error`.
    pub kind: String,
    pub message: String,
}

pub fn flash(session: &Session, kind: &str, message: impl Into<String>) {
    let _ = session.insert(
        FLASH,
        Flash {
            kind: kind.into(),
            message: message.into(),
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
