//! The seam between generic code and the platforms. What a platform does
//! that preset data cannot say (GoHighLevel's agency tokens and app
//! webhooks, Wix's signed installs, Instagram's own grants, ...) is a
//! [`Platform`], implemented in the platform's folder under
//! `src/platforms/` and registered at start (`platforms::all`). A provider
//! names its platform in its data (`Provider::platform`); generic code asks
//! [`Platforms`] and never names one. Every hook has a default that says
//! "nothing special", so a platform implements only what it changes.
//!
//! The trait takes the application as a type parameter `A` (always
//! `crate::app::App`) so that this file, which `App` holds, stays below it:
//! the platforms' code above may use everything, the seam names nothing
//! above `oauth`.

use crate::db::models::connection::{Connection, TokenSet};
use crate::error::{AppError, AppResult, Code};
use crate::ids::{AccountId, TenantId};
use crate::oauth::client::{self, ProviderError};
use crate::oauth::token::TokenResponse;
use crate::oauth::Authorized;
use crate::providers::Provider;
use actix_web::http::header::HeaderMap;
use futures_util::future::{BoxFuture, LocalBoxFuture};
use std::sync::Arc;

/// A token set from the provider, or why none came.
pub type Answer = Result<TokenResponse, ProviderError>;

/// What a renewal is given: the connection, its tokens, and (for a token
/// minted from another connection, see [`Platform::minted_from`]) that
/// connection and its tokens, as generic code read them just now; `None`
/// when it is gone or holds no token.
pub struct Due<'a> {
    pub row: &'a Connection,
    pub tokens: &'a TokenSet,
    pub parent: Option<(&'a Connection, &'a TokenSet)>,
}

/// One account a connection can reach besides its own (an agency's
/// location), as the accounts list shows it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Location {
    pub id: String,
    pub name: Option<String>,
    /// Whether the app is installed in the location.
    pub installed: bool,
    /// Whether the tenant holds a token for the location.
    pub connected: bool,
}

/// What an app webhook did, as its answer says.
#[derive(Debug, Default)]
pub struct Taken {
    pub message: String,
    /// Connections marked disconnected (an uninstall).
    pub disconnected: usize,
    /// Unclaimed installs dropped (an uninstall).
    pub dropped_installs: usize,
    /// What became of its relay to the CRM (`queued`, `held ...`, `off`,
    /// `no` for a repeated delivery).
    pub relayed: &'static str,
}

/// What a provider-signed install artefact proves, once verified: the
/// account it names and what it says about who opened it (kept as the
/// connection's metadata; never taken from anything but the artefact).
#[derive(Debug, Clone, PartialEq)]
pub struct SignedInstall {
    pub account: AccountId,
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

/// A background task a platform runs beside the server, until it stops.
pub struct Worker {
    pub name: &'static str,
    pub work: LocalBoxFuture<'static, ()>,
}

/// A platform's behaviour. `A` is the application (`crate::app::App`).
/// Hooks that return `Option` answer `None` for "as any provider"; the
/// others have a default that does nothing.
pub trait Platform<A>: Send + Sync {
    /// The name a provider's `platform` field gives (`Provider::platform`).
    fn name(&self) -> &'static str;

    /// Exchanges an authorization code its own way.
    fn exchange<'a>(
        &'a self,
        _http: &'a reqwest::Client,
        _provider: &'a Provider,
        _code: &'a str,
        _redirect_uri: &'a str,
        _verifier: Option<&'a str>,
    ) -> Option<BoxFuture<'a, Answer>> {
        None
    }

    /// The account id of the connection (of the same tenant and provider)
    /// whose token this one's is minted from, when it is renewed by minting
    /// rather than refreshing.
    fn minted_from(
        &self,
        _provider: &Provider,
        _row: &Connection,
        _tokens: &TokenSet,
    ) -> Option<AccountId> {
        None
    }

    /// Renews a connection's token set its own way.
    fn renew<'a>(
        &'a self,
        _http: &'a reqwest::Client,
        _provider: &'a Provider,
        _due: Due<'a>,
    ) -> Option<BoxFuture<'a, Answer>> {
        None
    }

    /// Checks a provider-signed install artefact (`?instance=` on the
    /// install route) with the app's secret, and that the person who opened
    /// it may bind the account; answers what it proves.
    fn verify_install(
        &self,
        _provider: &Provider,
        _artefact: &str,
    ) -> Option<AppResult<SignedInstall>> {
        None
    }

    /// Obtains a token set for the account a verified install named.
    fn connect_install<'a>(
        &'a self,
        _http: &'a reqwest::Client,
        _provider: &'a Provider,
        _install: &'a SignedInstall,
    ) -> Option<BoxFuture<'a, AppResult<Authorized>>> {
        None
    }

    /// Takes an app webhook (`POST /webhooks/{platform}`): its raw body and
    /// headers. Answers what it did, for the log and the response.
    fn app_webhook<'a>(
        &'a self,
        _app: &'a Arc<A>,
        _body: &'a [u8],
        _headers: &'a HeaderMap,
    ) -> Option<BoxFuture<'a, AppResult<Taken>>> {
        None
    }

    /// Makes sure the tenant holds a token for `account`, minting one from
    /// another of its connections if the platform can (`?location=` on the
    /// token route).
    fn ensure_account<'a>(
        &'a self,
        _app: &'a Arc<A>,
        _tenant: &'a TenantId,
        _provider: &'a Provider,
        _account: &'a AccountId,
    ) -> Option<BoxFuture<'a, AppResult<()>>> {
        None
    }

    /// The accounts a tenant's connection can reach (an agency's locations).
    fn locations<'a>(
        &'a self,
        _app: &'a Arc<A>,
        _tenant: &'a TenantId,
        _provider: &'a Provider,
    ) -> Option<BoxFuture<'a, AppResult<Vec<Location>>>> {
        None
    }

    /// Background tasks to run beside the server.
    fn workers(&self, _app: &Arc<A>) -> Vec<Worker> {
        Vec::new()
    }

    /// Why this provider's set-up must not serve in production, if it must
    /// not: `serve` refuses to start so in production, and warns in
    /// development.
    fn refused_in_production(&self, _provider: &Provider) -> Option<String> {
        None
    }

    /// What an operator should know about this provider's set-up (shown by
    /// `tether doctor`), each a sentence; `base_url` is Tether's public URL.
    fn warnings(&self, _provider: &Provider, _base_url: &str) -> Vec<String> {
        Vec::new()
    }
}

/// The registered platforms, and the generic answer where a provider has
/// none or its platform has no hook for the step.
pub struct Platforms<A> {
    all: Vec<Arc<dyn Platform<A>>>,
}

impl<A> Platforms<A> {
    pub fn new(all: Vec<Arc<dyn Platform<A>>>) -> Platforms<A> {
        Platforms { all }
    }

    /// The platform a provider names, if any is registered under that name.
    pub fn of(&self, provider: &Provider) -> Option<&dyn Platform<A>> {
        let name = provider.platform.as_deref()?;
        self.named(name)
    }

    pub fn named(&self, name: &str) -> Option<&dyn Platform<A>> {
        self.all
            .iter()
            .find(|p| p.name() == name)
            .map(|p| p.as_ref())
    }

    pub fn all(&self) -> impl Iterator<Item = &dyn Platform<A>> {
        self.all.iter().map(|p| p.as_ref())
    }

    /// Exchanges an authorization code: the platform's way, or RFC 6749's.
    pub async fn exchange(
        &self,
        http: &reqwest::Client,
        provider: &Provider,
        code: &str,
        redirect_uri: &str,
        verifier: Option<&str>,
    ) -> Answer {
        let own = self
            .of(provider)
            .and_then(|p| p.exchange(http, provider, code, redirect_uri, verifier));
        match own {
            Some(answer) => answer.await,
            None => client::exchange_code(http, provider, code, redirect_uri, verifier).await,
        }
    }

    /// The account a connection's token is minted from, if it is.
    pub fn minted_from(
        &self,
        provider: &Provider,
        row: &Connection,
        tokens: &TokenSet,
    ) -> Option<AccountId> {
        self.of(provider)?.minted_from(provider, row, tokens)
    }

    /// Renews a token set: the platform's way, or RFC 6749's refresh grant.
    pub async fn renew(&self, http: &reqwest::Client, provider: &Provider, due: Due<'_>) -> Answer {
        let refresh = due
            .tokens
            .refresh_token
            .as_ref()
            .map(|t| t.expose().clone());
        match self.of(provider).and_then(|p| p.renew(http, provider, due)) {
            Some(answer) => answer.await,
            None => client::refresh(http, provider, refresh.as_deref(), &[]).await,
        }
    }

    /// What a provider-signed install proves, once verified.
    pub fn verify_install(&self, provider: &Provider, artefact: &str) -> AppResult<SignedInstall> {
        self.of(provider)
            .and_then(|p| p.verify_install(provider, artefact))
            .unwrap_or_else(|| Err(unsupported()))
    }

    /// A token set for the account a verified install named.
    pub async fn connect_install(
        &self,
        http: &reqwest::Client,
        provider: &Provider,
        install: &SignedInstall,
    ) -> AppResult<Authorized> {
        match self
            .of(provider)
            .and_then(|p| p.connect_install(http, provider, install))
        {
            Some(authorized) => authorized.await,
            None => Err(unsupported()),
        }
    }
}

impl<A> Platforms<A> {
    /// Makes sure the tenant holds a token for `account`, minting one if
    /// the provider's platform can (`?location=` on the token route).
    pub async fn ensure_account(
        &self,
        app: &Arc<A>,
        tenant: &TenantId,
        provider: &Provider,
        account: &AccountId,
    ) -> AppResult<()> {
        match self
            .of(provider)
            .and_then(|p| p.ensure_account(app, tenant, provider, account))
        {
            Some(ensured) => ensured.await,
            None => Err(no_locations(provider)),
        }
    }

    /// The accounts a tenant's connection can reach (an agency's locations).
    pub async fn locations(
        &self,
        app: &Arc<A>,
        tenant: &TenantId,
        provider: &Provider,
    ) -> AppResult<Vec<Location>> {
        match self
            .of(provider)
            .and_then(|p| p.locations(app, tenant, provider))
        {
            Some(listed) => listed.await,
            None => Err(no_locations(provider)),
        }
    }

    /// Every platform's background tasks.
    pub fn workers(&self, app: &Arc<A>) -> Vec<Worker> {
        self.all().flat_map(|p| p.workers(app)).collect()
    }
}

/// A provider without locations was asked for one.
pub fn no_locations(provider: &Provider) -> AppError {
    AppError::bad_request(
        Code::InvalidQuery,
        format!(
            "{} connections have no locations: `location` is for agency connections",
            provider.display_name
        ),
    )
}

/// The provider has no signed install: it connects through its sign-in page.
fn unsupported() -> AppError {
    AppError::bad_request(
        Code::UnsupportedFlow,
        "this provider connects through its sign-in page",
    )
}
