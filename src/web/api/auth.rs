//! Who calls: [`ApiCaller`], an API key presented as `Authorization: Bearer`,
//! and the tenant it may act for. A handler never takes the caller itself:
//! it names a right of `rights.rs`, each of which needs a scope.

use crate::app::App;
use crate::connections::directory;
use crate::db::models::api_key::ApiKey;
use crate::db::models::event::Actor;
use crate::db::models::tenant::Tenant;
use crate::error::{AppError, AppResult, Code};
use crate::ids::{ExternalTenantId, TenantId};
use crate::web::http::client_addr;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpRequest};
use futures_util::future::{ready, Either, LocalBoxFuture, Ready};
use std::cell::RefCell;
use std::sync::Arc;

/// An authenticated internal caller.
pub struct ApiCaller {
    pub key: Arc<ApiKey>,
}

/// The outcome of authenticating a request's key, settled by
/// [`authenticate_first`] before any extractor runs.
struct Settled(RefCell<Option<Result<ApiCaller, actix_web::Error>>>);

/// Authenticates the request's key before its extractors run, so that a
/// refused key (401, 429) or a missing scope (403) is the answer whatever
/// else the request holds: a handler's extractors run together, and a
/// malformed body would otherwise answer first while the key is looked up.
/// The OpenAPI document needs no key and gets no lookup.
pub(super) async fn authenticate_first(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if req.headers().contains_key(header::AUTHORIZATION)
        && req.path() != super::document::DOCUMENT_PATH
    {
        let outcome = ApiCaller::look_up(req.request()).await;
        req.extensions_mut()
            .insert(Settled(RefCell::new(Some(outcome))));
    }
    next.call(req).await
}

/// What authenticating a request yields: at once from the cache, or after
/// asking the database.
type Authenticating = Either<
    Ready<Result<ApiCaller, actix_web::Error>>,
    LocalBoxFuture<'static, Result<ApiCaller, actix_web::Error>>,
>;

impl ApiCaller {
    /// The caller presenting the request's key, for the rights to check:
    /// as [`authenticate_first`] settled it.
    pub(super) fn authenticate(req: &HttpRequest) -> Authenticating {
        let settled = req
            .extensions()
            .get::<Settled>()
            .and_then(|s| s.0.borrow_mut().take());
        match settled {
            Some(outcome) => Either::Left(ready(outcome)),
            None => Self::look_up(req),
        }
    }

    /// Authenticates the request's key: from the cache, or the database.
    fn look_up(req: &HttpRequest) -> Authenticating {
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            // The scheme name is case-insensitive (RFC 9110 section 11.1).
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, key)| key.trim());
        let Some(presented) = presented else {
            return Either::Left(ready(Err(AppError::unauthorized(
                "send the API key as Authorization: Bearer <key>",
            )
            .into())));
        };
        let Some(state) = req.app_data::<web::Data<App>>().cloned() else {
            return Either::Left(ready(Err(AppError::internal("no app state").into())));
        };
        // A key validated moments ago needs no database, nor a task.
        let digest = crate::crypto::sha256(presented.as_bytes());
        if let Some(key) = state.api_cache.key(&digest) {
            return Either::Left(ready(within_rate(&state, key)));
        }
        // Guessing keys costs the guesser, not the database: a client that
        // presented too many refused keys waits (unless this one was valid
        // lately), and a key refused moments ago is refused again unasked.
        let client = client_addr(req, &state.settings.trusted_proxies);
        if state.api_cache.key_while_away(&digest).is_none() {
            if let Err(wait) = state.api_cache.client_may_try(&client) {
                return Either::Left(ready(Err(AppError::too_many_requests(wait).into())));
            }
        }
        if state.api_cache.refused_recently(&digest) {
            state.api_cache.refuse(&digest, &client);
            return Either::Left(ready(Err(invalid_key().into())));
        }
        let presented = presented.to_string();
        Either::Right(Box::pin(async move {
            let key = authenticate(&state, digest, presented, &client).await?;
            within_rate(&state, key)
        }))
    }
}

/// The caller, unless its key has made its share of requests this minute
/// (`TETHER_API_KEY_RATE_LIMIT`): tenant-scoped keys only, so that one
/// tenant's runaway integration cannot take the instance from the others;
/// the CRM's own all-tenants keys carry every tenant's traffic.
fn within_rate(state: &App, key: Arc<ApiKey>) -> Result<ApiCaller, actix_web::Error> {
    if let (Some(limiter), Some(_)) = (&state.api_key_limiter, &key.tenant_id) {
        limiter
            .check(&key.id)
            .map_err(AppError::too_many_requests)?;
    }
    Ok(ApiCaller { key })
}

/// Validates a key the cache does not hold (or no longer trusts).
async fn authenticate(
    state: &App,
    digest: [u8; 32],
    presented: String,
    client: &str,
) -> AppResult<Arc<ApiKey>> {
    let key = match state.db(move |c| ApiKey::authenticate(c, &presented)).await {
        Ok(key) => Arc::new(key),
        Err(e) if e.is(Code::DatabaseUnavailable) => {
            return state.api_cache.key_while_away(&digest).ok_or(e)
        }
        Err(e) => {
            if e.is(Code::Unauthorized) {
                state.api_cache.refuse(&digest, client);
            }
            return Err(e);
        }
    };
    let due = state.api_cache.remember(digest, &key);
    if due {
        let id = key.id.clone();
        // Bookkeeping: a database that cannot take it now fails no request.
        if let Err(e) = state.db(move |c| Ok(ApiKey::touch(c, &id)?)).await {
            log::debug!("api key last_used_at not written: {}", e.message());
        }
    }
    Ok(key)
}

/// The refusal of a key known to be bad, as the database's would say it.
fn invalid_key() -> AppError {
    AppError::unauthorized("the API key is missing, malformed, revoked or unknown")
}

impl ApiCaller {
    /// Ok if the key may act on `provider`'s connections: 403 for a key
    /// limited to others.
    pub(super) fn may_use(&self, provider: &str) -> AppResult<()> {
        if self.key.covers(provider) {
            return Ok(());
        }
        let list = self.key.providers().unwrap_or_default().join(", ");
        Err(AppError::forbidden_as(
            Code::MissingScope,
            format!("this API key is limited to the providers {list}"),
        ))
    }

    /// The providers whose connections a list shows this key (`None`: all).
    pub(super) fn visible_providers(&self) -> Option<Vec<String>> {
        self.key
            .providers()
            .map(|list| list.into_iter().map(String::from).collect())
    }

    /// The tenant this key may act for: 404 for an unknown tenant, 403 for
    /// another tenant than the key's (without saying whether it exists).
    pub(super) async fn tenant(&self, state: &App, external_id: &str) -> AppResult<TenantId> {
        // The cache holds only ids that exist (so are well formed): a hit
        // needs no parsing.
        let id = match state.api_cache.tenant(external_id) {
            Some(id) => Some(id),
            None => {
                let ext = ExternalTenantId::parse(external_id)
                    .map_err(|_| AppError::not_found(format!("no tenant '{external_id}'")))?;
                match state
                    .db(move |c| Ok(Tenant::by_external_id(c, &ext)?))
                    .await
                {
                    Ok(found) => {
                        if let Some(t) = &found {
                            state.api_cache.remember_tenant(&t.external_id, &t.id);
                        }
                        found.map(|t| t.id)
                    }
                    // Only a tenant read before the outage; an unknown one
                    // cannot be told from a missing one now.
                    Err(e) if e.is(Code::DatabaseUnavailable) => {
                        Some(state.api_cache.tenant_while_away(external_id).ok_or(e)?)
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        match (&self.key.tenant_id, id) {
            (Some(own), Some(id)) if *own == id => Ok(id),
            (Some(_), _) => Err(AppError::forbidden(
                "this API key may not act for that tenant",
            )),
            (None, Some(id)) => Ok(id),
            (None, None) => Err(AppError::not_found(format!("no tenant '{external_id}'"))),
        }
    }

    /// The connections of the directory this key sees: its tenant's, or all.
    pub(super) fn directory_scope(&self) -> directory::Scope {
        match &self.key.tenant_id {
            Some(own) => directory::Scope::Tenant(own.clone()),
            None => directory::Scope::AllTenants,
        }
    }

    /// Who the events of this call are recorded as.
    pub(super) fn actor(&self) -> Actor {
        Actor::ApiKey {
            name: self.key.name.clone(),
        }
    }
}
