//! The rights a handler needs, as extractors it names in its signature, so
//! that a route cannot forget one (the Rust registry backend's `AuthCheck`):
//! [`Scoped`] for a key with a scope, [`AdminKey`] and
//! [`AllTenantsAdminKey`] for the admin scope, [`AllTenantsKey`], and the
//! key's tenant scope, [`ForTenant`] and [`ForConnection`], resolved from the
//! path before the handler runs. [`ApiCaller`] itself is no extractor: a
//! handler cannot take a key without naming the scope it needs.

use super::auth::ApiCaller;
use super::params::{ConnectionPath, TenantPath};
use crate::app::App;
use crate::db::models::api_key::Scope;
use crate::db::models::event::Actor;
use crate::db::models::tenant::Tenant;
use crate::error::{AppError, AppResult, Code};
use crate::ids::{ExternalTenantId, TenantId};
use crate::providers::Provider;
use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};
use futures_util::future::LocalBoxFuture;
use std::marker::PhantomData;
use std::sync::Arc;

/// What every right extractor is: an authenticated caller, and more.
pub(super) trait Authenticated {
    /// The key behind the right.
    fn caller(&self) -> &ApiCaller;
}

/// The app state, which every request carries.
fn state(req: &HttpRequest) -> AppResult<web::Data<App>> {
    req.app_data::<web::Data<App>>()
        .cloned()
        .ok_or_else(|| AppError::internal("no app state"))
}

/// Authenticates, then builds the right from the caller by a check that
/// needs no I/O.
fn checked<T: 'static>(
    req: &HttpRequest,
    check: fn(ApiCaller) -> AppResult<T>,
) -> LocalBoxFuture<'static, Result<T, actix_web::Error>> {
    let caller = ApiCaller::authenticate(req);
    Box::pin(async move { Ok(check(caller.await?)?) })
}

/// The refusal of a key without `scope`.
fn missing(scope: Scope) -> AppError {
    AppError::forbidden_as(
        Code::MissingScope,
        format!(
            "this API key lacks the {} scope this route needs",
            scope.as_str()
        ),
    )
}

/// A scope a route needs, as a type its handler names.
pub(super) trait Needs {
    const SCOPE: Scope;
}

macro_rules! scopes {
    ($($(#[$doc:meta])* $name:ident => $scope:ident,)*) => {$(
        $(#[$doc])*
        pub(super) enum $name {}
        impl Needs for $name {
            const SCOPE: Scope = Scope::$scope;
        }
    )*};
}

scopes! {
    /// `token:read`: a connection's access token.
    TokenRead => TokenRead,
    /// `status:read`: connections, settings and events.
    StatusRead => StatusRead,
    /// `directory:read`: which tenant holds an account.
    DirectoryRead => DirectoryRead,
    /// `proxy`: calls to a provider's API.
    Proxying => Proxy,
    /// `links`: connect links and sessions.
    Links => Links,
    /// `connections:write`: changes to connections and their settings.
    ConnectionsWrite => ConnectionsWrite,
}

/// An API key with the scope `S`.
pub(super) struct Scoped<S: Needs> {
    pub(super) caller: ApiCaller,
    scope: PhantomData<S>,
}

impl<S: Needs> Authenticated for Scoped<S> {
    fn caller(&self) -> &ApiCaller {
        &self.caller
    }
}

/// A scoped key is the caller, known to hold the scope.
impl<S: Needs> std::ops::Deref for Scoped<S> {
    type Target = ApiCaller;

    fn deref(&self) -> &ApiCaller {
        &self.caller
    }
}

impl<S: Needs + 'static> FromRequest for Scoped<S> {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        checked(req, |caller| {
            if !caller.key.may(S::SCOPE) {
                return Err(missing(S::SCOPE));
            }
            Ok(Scoped {
                caller,
                scope: PhantomData,
            })
        })
    }
}

/// What an admin key is needed for: names the refusal.
pub(super) trait AdminWork {
    /// The 403's message for a key without the admin scope.
    const REFUSAL: &'static str;
}

/// Importing tokens the CRM stored itself.
pub(super) enum Importing {}

impl AdminWork for Importing {
    const REFUSAL: &'static str = "importing tokens needs an API key with the admin scope";
}

/// Creating or renaming tenants.
pub(super) enum Provisioning {}

impl AdminWork for Provisioning {
    const REFUSAL: &'static str = "provisioning tenants needs an API key with the admin scope";
}

/// An admin API key (for all tenants or limited to one), for `W`.
pub(super) struct AdminKey<W: AdminWork> {
    pub(super) caller: ApiCaller,
    work: PhantomData<W>,
}

impl<W: AdminWork> Authenticated for AdminKey<W> {
    fn caller(&self) -> &ApiCaller {
        &self.caller
    }
}

impl<W: AdminWork + 'static> FromRequest for AdminKey<W> {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        checked(req, |caller| {
            if !caller.key.may(Scope::Admin) {
                return Err(AppError::forbidden_as(Code::MissingScope, W::REFUSAL));
            }
            Ok(AdminKey {
                caller,
                work: PhantomData,
            })
        })
    }
}

/// What an admin key for all tenants is needed for: names the refusal.
pub(super) trait AllTenantsWork {
    /// The 403's message for any other key.
    const REFUSAL: &'static str;
}

/// Removing a tenant.
pub(super) enum Removing {}

impl AllTenantsWork for Removing {
    const REFUSAL: &'static str =
        "removing a tenant needs an API key for all tenants with the admin scope";
}

/// Assigning an unclaimed install (its grant) to a tenant.
pub(super) enum Assigning {}

impl AllTenantsWork for Assigning {
    const REFUSAL: &'static str =
        "assigning an install needs an API key for all tenants with the admin scope";
}

/// An API key for all tenants with the admin scope, for `W`.
pub(super) struct AllTenantsAdminKey<W: AllTenantsWork> {
    pub(super) caller: ApiCaller,
    work: PhantomData<W>,
}

impl<W: AllTenantsWork + 'static> FromRequest for AllTenantsAdminKey<W> {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        checked(req, |caller| {
            if !caller.key.may(Scope::Admin) {
                return Err(AppError::forbidden_as(Code::MissingScope, W::REFUSAL));
            }
            if caller.key.tenant_id.is_some() {
                return Err(AppError::forbidden(W::REFUSAL));
            }
            Ok(AllTenantsAdminKey {
                caller,
                work: PhantomData,
            })
        })
    }
}

/// An API key for all tenants with the scope `S`. Its routes read what
/// belongs to no tenant (unclaimed installs, held provider events); its
/// refusal says so.
pub(super) struct AllTenantsKey<S: Needs> {
    pub(super) caller: ApiCaller,
    scope: PhantomData<S>,
}

impl<S: Needs + 'static> FromRequest for AllTenantsKey<S> {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        checked(req, |caller| {
            if !caller.key.may(S::SCOPE) {
                return Err(missing(S::SCOPE));
            }
            if caller.key.tenant_id.is_some() {
                return Err(AppError::forbidden(
                    "what belongs to no tenant needs an API key for all tenants",
                ));
            }
            Ok(AllTenantsKey {
                caller,
                scope: PhantomData,
            })
        })
    }
}

/// The `{tenant}` of the path, which the key `K` may act for
/// ([`ApiCaller::tenant`]: 404 for an unknown tenant, 403 for another
/// tenant than the key's).
pub(super) struct ForTenant<K> {
    pub(super) key: K,
    pub(super) tenant: TenantId,
}

impl<K: Authenticated> ForTenant<K> {
    /// Who the events of this call are recorded as.
    pub(super) fn actor(&self) -> Actor {
        self.key.caller().actor()
    }
}

impl<K> FromRequest for ForTenant<K>
where
    K: FromRequest<Error = actix_web::Error> + Authenticated + 'static,
    K::Future: 'static,
{
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let key = K::from_request(req, payload);
        let path = web::Path::<TenantPath>::extract(req);
        let state = state(req);
        Box::pin(async move {
            let key = key.await?;
            let (path, state) = (path.await?, state?);
            let tenant = key.caller().tenant(&state, &path.tenant).await?;
            Ok(ForTenant { key, tenant })
        })
    }
}

/// The `{tenant}` (as [`ForTenant`]) and the enabled `{provider}` of a
/// `/tenants/{tenant}/connections/{provider}` route (or of the integration
/// and proxy routes, which name them the same way).
pub(super) struct ForConnection<K> {
    pub(super) key: K,
    pub(super) tenant: TenantId,
    pub(super) provider: Arc<Provider>,
}

impl<K> FromRequest for ForConnection<K>
where
    K: FromRequest<Error = actix_web::Error> + Authenticated + 'static,
    K::Future: 'static,
{
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let key = K::from_request(req, payload);
        let path = web::Path::<ConnectionPath>::extract(req);
        let state = state(req);
        Box::pin(async move {
            let key = key.await?;
            let (path, state) = (path.await?, state?);
            let tenant = key.caller().tenant(&state, &path.tenant).await?;
            key.caller().may_use(&path.provider)?;
            let provider = state.enabled_provider(&path.provider)?;
            Ok(ForConnection {
                key,
                tenant,
                provider,
            })
        })
    }
}

/// The `{tenant}` a provisioning admin key names: any, for a key for all
/// tenants (it may not exist yet); only its own, which exists, for a key
/// limited to one (403 otherwise).
///
/// Only built after an [`AdminKey`] for [`Provisioning`].
pub(super) struct ProvisionTarget {
    /// The CRM's external id, as named (`Tenant::provision` checks it).
    pub(super) external_id: String,
}

impl FromRequest for ProvisionTarget {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let key = AdminKey::<Provisioning>::from_request(req, payload);
        let path = web::Path::<TenantPath>::extract(req);
        let state = state(req);
        Box::pin(async move {
            let key = key.await?;
            let (external_id, state) = (path.await?.into_inner().tenant, state?);
            if let Some(own) = key.caller.key.tenant_id.clone() {
                let ext = ExternalTenantId::parse(&external_id)?;
                let target = state
                    .db(move |c| Ok(Tenant::by_external_id(c, &ext)?))
                    .await?;
                if target.map(|t| t.id) != Some(own) {
                    return Err(
                        AppError::forbidden("this API key may not act for that tenant").into(),
                    );
                }
            }
            Ok(ProvisionTarget { external_id })
        })
    }
}
