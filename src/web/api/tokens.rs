//! Tokens: a valid access token (the hot route), an agency's locations
//! (whose tokens the token route mints), and refresh now.

use super::errors::{NoValidKey, OtherTenant};
use super::params::{AccountQuery, ConnectionPath};
use super::rights::{DirectoryRead, ForConnection, Scoped, TokenRead};
use crate::app::cache::Opened;
use crate::app::App;
use crate::connections::status::{self, StatusView};
use crate::connections::{integration, manage};
use crate::db::models::connection::Kind;
use crate::db::models::usage::UsageKind;
use crate::error::{AppError, AppResult, Code, ErrorBody};
use crate::ids::AccountId;
use crate::platform::Location;
use crate::providers::Provider;
use crate::web::http::{account_param, no_store, rfc3339};
use actix_web::{get, post, web, HttpResponse};
use std::time::Instant;

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct TokenQuery {
    /// Seconds the token must still be valid for; a token expiring sooner is
    /// refreshed first.
    #[param(minimum = 0, maximum = 86400, default = 60)]
    min_ttl: Option<i64>,
    /// The provider's account id of one of the tenant's connected accounts.
    /// Without it: the tenant's default account.
    #[param(min_length = 1, max_length = 256)]
    account: Option<String>,
    /// GoHighLevel: a location of the tenant's agency (Company) connection.
    /// Its stored token, or one minted now from the agency's token (and
    /// stored as an account of its own). Not with `account`.
    #[param(min_length = 1, max_length = 64)]
    location: Option<String>,
}

/// Whose token the token route serves.
enum Whose {
    /// An account's (the default's without one).
    Account(Option<AccountId>),
    /// A location of the tenant's agency connection (GoHighLevel).
    Location(AccountId),
}

impl TokenQuery {
    /// The checked `min_ttl` (default 60), and whose token is asked for.
    fn read(&self) -> AppResult<(i64, Whose)> {
        let min_ttl = self.min_ttl.unwrap_or(60);
        if !(0..=86_400).contains(&min_ttl) {
            return Err(AppError::bad_request(
                Code::InvalidMinTtl,
                "min_ttl is a number of seconds from 0 to 86400",
            ));
        }
        let whose = match (
            self.location.as_deref(),
            account_param(self.account.as_deref())?,
        ) {
            (None, account) => Whose::Account(account),
            (Some(location), None) => Whose::Location(AccountId::parse(location)?),
            (Some(_), Some(_)) => {
                return Err(AppError::bad_request(
                    Code::InvalidQuery,
                    "name either an account or a location, not both",
                ))
            }
        };
        Ok((min_ttl, whose))
    }
}

/// The token API's answer.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[schema(as = Token)]
struct TokenBody<'a> {
    access_token: &'a str,
    token_type: &'a str,
    #[schema(format = DateTime)]
    expires_at: Option<String>,
    expires_in: Option<i64>,
    #[schema(value_type = Vec<String>)]
    scopes: &'a [String],
    /// Scopes the provider now asks for that this grant lacks: a person
    /// must reconnect to grant them.
    missing_scopes: Vec<String>,
    #[schema(value_type = Object)]
    metadata: &'a serde_json::Value,
    /// The account whose token this is.
    account: AccountBody<'a>,
    /// How the token came: `oauth`, or `private_token` (its owner's own
    /// token, which Tether never refreshes).
    #[schema(value_type = String, example = "oauth")]
    kind: Kind,
    /// Headers every call to this provider's API must carry (GoHighLevel's
    /// `Version`), for callers that call the provider themselves.
    #[schema(value_type = std::collections::HashMap<String, String>)]
    api_headers: &'a std::collections::BTreeMap<String, String>,
    /// The tenant's integration settings that apply to this account: the
    /// provider's, with the account's own over them. Null only when they
    /// could not be read just now (the database is away: the token is
    /// still served).
    #[schema(value_type = Option<Object>)]
    settings: Option<&'a serde_json::Value>,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
struct AccountBody<'a> {
    id: &'a str,
    name: Option<&'a str>,
}

impl<'a> TokenBody<'a> {
    fn of(
        opened: &'a Opened,
        provider: &'a Provider,
        settings: Option<&'a serde_json::Value>,
    ) -> TokenBody<'a> {
        let row = &opened.row;
        TokenBody {
            access_token: opened.tokens.access_token.expose(),
            token_type: &opened.tokens.token_type,
            expires_at: row.expires_at.map(rfc3339),
            expires_in: row
                .expires_at
                .map(|t| (t - crate::db::now()).num_seconds().max(0)),
            scopes: &opened.scopes,
            missing_scopes: status::missing_scopes(provider, &opened.scopes),
            metadata: &opened.metadata,
            account: AccountBody {
                id: &row.account_id,
                name: row.account_name.as_deref(),
            },
            kind: row.kind,
            api_headers: &provider.api_headers,
            settings,
        }
    }
}

/// The effective settings of the opened set's account: read once, then
/// kept with the set (a settings change drops it from the token cache).
/// `None` while they cannot be read: the token is served all the same.
async fn settings_of<'a>(state: &App, opened: &'a Opened) -> Option<&'a serde_json::Value> {
    if opened.settings.get().is_none() {
        let row = &opened.row;
        match integration::effective_for(state, &row.tenant_id, &row.provider, &row.account_id)
            .await
        {
            Ok(settings) => {
                // A concurrent request may have set them first: the same read.
                let _ = opened.settings.set(settings);
            }
            Err(e) => {
                log::warn!(
                    "token for connection {} served without its settings: {}",
                    row.id,
                    e.message()
                );
                return None;
            }
        }
    }
    opened.settings.get()
}

/// A valid access token
///
/// Of the default account (or of `account`); refreshed first when it expires
/// within `min_ttl`. Concurrent requests share one refresh. Never cached
/// (`Cache-Control: no-store`).
#[utoipa::path(
    params(ConnectionPath, TokenQuery),
    responses(
        (status = 200, description = "A valid access token", body = TokenBody),
        (status = 400, description = "An invalid `min_ttl` or `account`", body = ErrorBody),
        NoValidKey,
        OtherTenant,
        (status = 404, description = "No such tenant, provider or connection (`not_connected`)", body = ErrorBody),
        (status = 409, description = "`needs_reconnect`: the provider revoked the grant; `provider_disabled`: the tenant switched the provider off; `location_unavailable`: the agency may not mint for that location", body = ErrorBody),
        (status = 502, description = "The provider refused Tether's credentials", body = ErrorBody),
        (status = 503, description = "A refresh is failing for now (see Retry-After), or this instance lacks the encryption key the connection is sealed with (`key_unavailable`: another instance serves it)", body = ErrorBody),
    ),
    security(("apiKey" = ["token:read"]))
)]
#[get("/tenants/{tenant}/connections/{provider}/token")]
pub(super) async fn token(
    state: web::Data<App>,
    target: ForConnection<Scoped<TokenRead>>,
    query: web::Query<TokenQuery>,
) -> AppResult<HttpResponse> {
    let started = Instant::now();
    let (min_ttl, whose) = query.read()?;
    let (tenant_id, provider) = (&target.tenant, &target.provider);
    let opened = match whose {
        Whose::Account(account) => {
            crate::refresh::fresh_token(&state, tenant_id, provider, account.as_ref(), min_ttl)
                .await?
        }
        Whose::Location(location) => {
            let app = state.clone().into_inner();
            state
                .platforms
                .ensure_account(&app, tenant_id, provider, &location)
                .await?;
            crate::refresh::fresh_token(&state, tenant_id, provider, Some(&location), min_ttl)
                .await?
        }
    };
    let settings = settings_of(&state, &opened).await;
    let body = TokenBody::of(&opened, provider, settings);
    // In memory only: the hot path writes nothing (see `app::usage`).
    let key = &target.key.key;
    state
        .usage
        .count(&opened.row.id, &key.name, UsageKind::Token);
    state
        .metrics
        .token_read(&key.prefix, &key.name, &provider.key);
    state.metrics.token_api(started.elapsed().as_secs_f64());
    Ok(no_store(HttpResponse::Ok().json(body)))
}

/// `{"locations": [...]}`: an agency's locations.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct LocationList {
    locations: Vec<Location>,
}

/// An agency's locations
///
/// GoHighLevel: the locations of the tenant's agency (Company) connection
/// and whether the app is installed in each (`GET /oauth/installedLocations`
/// with the agency's token, first 100), with whether the tenant holds a
/// token for it.
#[utoipa::path(
    params(ConnectionPath),
    responses(
        (status = 200, description = "The agency's locations", body = LocationList),
        (status = 400, description = "The provider has no locations", body = ErrorBody),
        NoValidKey,
        OtherTenant,
        (status = 404, description = "No such tenant or provider, or no agency connection (`not_connected`)", body = ErrorBody),
        (status = 502, description = "The provider failed", body = ErrorBody),
        (status = 503, description = "The agency's token cannot be refreshed for now", body = ErrorBody),
    ),
    security(("apiKey" = ["directory:read"]))
)]
#[get("/tenants/{tenant}/connections/{provider}/locations")]
pub(super) async fn locations(
    state: web::Data<App>,
    target: ForConnection<Scoped<DirectoryRead>>,
) -> AppResult<HttpResponse> {
    let ForConnection {
        tenant: tenant_id,
        provider,
        ..
    } = target;
    let app = state.clone().into_inner();
    let locations = state
        .platforms
        .locations(&app, &tenant_id, &provider)
        .await?;
    Ok(no_store(
        HttpResponse::Ok().json(LocationList { locations }),
    ))
}

/// Refresh now
///
/// The default account, or `account`; shared with any refresh under way.
#[utoipa::path(
    params(ConnectionPath, AccountQuery),
    responses(
        (status = 200, description = "The account's status after the refresh", body = StatusView),
        (status = 400, description = "An invalid `account`", body = ErrorBody),
        NoValidKey,
        OtherTenant,
        (status = 404, description = "No such tenant, provider or connection", body = ErrorBody),
        (status = 409, description = "`needs_reconnect`, or the provider's tokens cannot be refreshed", body = ErrorBody),
        (status = 502, description = "The provider refused Tether's credentials", body = ErrorBody),
        (status = 503, description = "The refresh is failing for now; see Retry-After", body = ErrorBody),
    ),
    security(("apiKey" = ["token:read"]))
)]
#[post("/tenants/{tenant}/connections/{provider}/refresh")]
pub(super) async fn refresh(
    state: web::Data<App>,
    target: ForConnection<Scoped<TokenRead>>,
    query: web::Query<AccountQuery>,
) -> AppResult<HttpResponse> {
    let account = account_param(query.account.as_deref())?;
    let ForConnection {
        key: caller,
        tenant: tenant_id,
        provider,
    } = target;
    let fresh = manage::refresh(
        &state,
        &tenant_id,
        &provider,
        account.as_ref(),
        &caller.actor(),
    )
    .await?;
    Ok(no_store(
        HttpResponse::Ok().json(StatusView::of(&provider, Some(&fresh))),
    ))
}
