//! GoHighLevel agencies. An agency's (Company) connection serves each of its
//! locations: a location's token is minted from the agency's token, on the
//! first token request naming the location or by the scheduler for the
//! locations a bulk install approved, and is then stored, refreshed and
//! served as an account of its own of the tenant. A location token that came
//! without a refresh token is minted again when it is due (refresh module).

use super::account::{Account, AGENCY};
use super::client;
use crate::app::App;
use crate::connections::grant::{self, Arrival, NewGrant};
use crate::db::models::connection::Connection;
use crate::db::models::event::Actor;
use crate::error::{AppError, AppResult, Code};
use crate::ids::{AccountId, ProviderKey, TenantId};
use crate::oauth::client::ProviderError;
use crate::oauth::{self, Authorized};
use crate::platform::Location;
use crate::providers::presets::GOHIGHLEVEL;
use crate::providers::Provider;
use crate::refresh;
use serde_json::Value;
use std::sync::Arc;

/// Locations minted per scheduler round, per agency: a bulk install of
/// hundreds is served within minutes without a burst at the provider.
pub const MINTS_PER_ROUND: usize = 20;

/// The largest page of installed locations asked for.
pub const LOCATIONS_PAGE: usize = 100;

/// Whether a connection holds an agency's (Company) token.
pub fn is_agency(row: &Connection) -> bool {
    Account::of(&row.metadata()).is_agency()
}

/// The company an agency connection stands for.
pub fn company_id(agency: &Connection) -> AccountId {
    Account::of(&agency.metadata())
        .company_id
        .unwrap_or_else(|| agency.account_id.clone())
}

/// A location id as GoHighLevel writes them; anything else is refused before
/// it reaches a provider call or a query.
pub fn valid_location(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn invalid_location() -> AppError {
    AppError::bad_request(
        Code::InvalidAccount,
        "a location id is 1 to 64 letters, digits, '_' or '-'",
    )
}

/// The tenant's agency connection of `provider`, holding tokens.
async fn find_agency(
    state: &App,
    tenant_id: &TenantId,
    provider: &Provider,
) -> AppResult<Connection> {
    let (tenant, key) = (tenant_id.clone(), provider.key.clone());
    let agency = state
        .db(move |c| {
            Ok(Connection::accounts(c, &tenant, &key)?
                .into_iter()
                .find(is_agency))
        })
        .await?;
    agency.ok_or_else(|| {
        AppError::not_connected_because(format!(
            "this tenant holds no token for this location, and no {} agency connection to mint one; connect the agency (user_type Company) or the location",
            provider.display_name
        ))
    })
}

/// Makes sure the tenant holds a token for one of the agency's locations:
/// the stored location connection's, or one minted now from the agency's.
pub async fn ensure_location(
    state: &Arc<App>,
    tenant_id: &TenantId,
    provider: &Provider,
    location: &AccountId,
) -> AppResult<()> {
    if !provider.location_tokens {
        return Err(crate::platform::no_locations(provider));
    }
    if !valid_location(location) {
        return Err(invalid_location());
    }
    if !holds(state, tenant_id, provider, location).await? {
        let agency = find_agency(state, tenant_id, provider).await?;
        // Concurrent first requests mint once per process: one runs the
        // flight, the others share it, and one that comes after it finds
        // the token stored (checked again inside the flight).
        let key = format!("mint:{tenant_id}:{}:{location}", provider.key);
        state
            .flights
            .run(&key, || async {
                if holds(state, tenant_id, provider, location).await? {
                    return Ok(());
                }
                mint(
                    state,
                    tenant_id,
                    provider,
                    &agency,
                    location,
                    &Actor::TokenApi,
                )
                .await
                .map(|_| ())
            })
            .await?;
    }
    Ok(())
}

/// Whether the tenant holds a token for the location.
async fn holds(
    state: &App,
    tenant_id: &TenantId,
    provider: &Provider,
    location: &AccountId,
) -> AppResult<bool> {
    let (tenant, key, loc) = (tenant_id.clone(), provider.key.clone(), location.clone());
    state
        .db(move |c| Ok(Connection::for_account(c, &tenant, &key, &loc)?.is_some()))
        .await
}

/// What a refused or failed minting means for the caller.
fn minting_failed(provider: &Provider, location: &str, e: ProviderError) -> AppError {
    match &e {
        ProviderError::GrantGone { .. } | ProviderError::Refused { .. } => AppError::conflict(
            Code::LocationUnavailable,
            format!(
                "{} would not issue a token for location {location}: the app must be installed there, and the agency connection granted oauth.write",
                provider.display_name
            ),
        )
        .with_cause(e),
        _ => oauth::provider_failure(provider, e),
    }
}

/// Mints `location`'s token from the agency connection and stores it as the
/// tenant's connection to that location, named from the location lookup.
pub async fn mint(
    state: &Arc<App>,
    tenant_id: &TenantId,
    provider: &Provider,
    agency: &Connection,
    location: &AccountId,
    actor: &Actor,
) -> AppResult<Connection> {
    let agency_token =
        refresh::fresh_token(state, tenant_id, provider, Some(&agency.account_id), 60).await?;
    let response = client::mint_location_token(
        &state.http,
        provider,
        agency_token.tokens.access_token.expose(),
        &company_id(agency),
        location,
    )
    .await
    .map_err(|e| minting_failed(provider, location, e))?;
    let (account_id, account_name) = oauth::identify(&state.http, provider, &response).await?;
    if account_id != *location {
        return Err(AppError::bad_gateway(
            Code::ProviderError,
            format!(
                "{} answered with a token for another location",
                provider.display_name
            ),
        ));
    }
    let mut metadata = response.metadata(provider);
    metadata[AGENCY] = agency.account_id.as_str().into();
    let authorized = Authorized {
        scopes: response.scopes.clone().unwrap_or_else(|| agency.scopes()),
        response,
        account_id,
        account_name,
        metadata,
    };
    log::info!(
        "minted a location token tenant={tenant_id} provider={} location={location}",
        provider.key
    );
    let provider = state.enabled_provider(&provider.key)?;
    let (connection, _) = grant::save(
        state,
        NewGrant {
            provider,
            tenant: tenant_id.clone(),
            authorized,
            actor: actor.clone(),
            arrival: Arrival::Mint,
            tags: None,
        },
    )
    .await?;
    Ok(connection)
}

/// The agency's locations and where the app is installed, from
/// `GET /oauth/installedLocations` with the agency's token.
pub async fn installed_locations(
    state: &Arc<App>,
    tenant_id: &TenantId,
    provider: &Provider,
) -> AppResult<Vec<Location>> {
    if !provider.location_tokens {
        return Err(crate::platform::no_locations(provider));
    }
    let agency = find_agency(state, tenant_id, provider).await?;
    let app_id = provider
        .app_id
        .clone()
        .or_else(|| provider.client_app_id().map(str::to_string))
        .ok_or_else(|| {
            AppError::conflict(
                Code::ProviderMisconfigured,
                format!(
                    "{} has no app id: set TETHER_GOHIGHLEVEL_APP_ID",
                    provider.display_name
                ),
            )
        })?;
    let token =
        refresh::fresh_token(state, tenant_id, provider, Some(&agency.account_id), 60).await?;
    let answer = client::installed_locations(
        &state.http,
        provider,
        token.tokens.access_token.expose(),
        &company_id(&agency),
        &app_id,
        LOCATIONS_PAGE,
    )
    .await
    .map_err(|e| oauth::provider_failure(provider, e))?;
    let connected: Vec<AccountId> = {
        let (tenant, key) = (tenant_id.clone(), provider.key.clone());
        state
            .db(move |c| {
                Ok(Connection::accounts(c, &tenant, &key)?
                    .into_iter()
                    .map(|row| row.account_id)
                    .collect())
            })
            .await?
    };
    let listed = answer
        .get("locations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    Ok(listed
        .iter()
        .filter_map(|l| {
            let id = ["_id", "id"]
                .iter()
                .find_map(|k| l.get(*k).and_then(Value::as_str))?
                .to_string();
            Some(Location {
                connected: connected.iter().any(|held| *held == *id),
                name: l.get("name").and_then(Value::as_str).map(str::to_string),
                installed: l
                    .get("isInstalled")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
                id,
            })
        })
        .collect())
}

/// The bulk-install worker: a round every scheduler interval
/// (`TETHER_REFRESH_INTERVAL`) until the process stops.
pub async fn mint_approved_forever(state: Arc<App>) {
    let mut every = tokio::time::interval(state.settings.refresh.interval);
    while !state.is_stopping() {
        every.tick().await;
        match mint_approved(&state).await {
            Ok(0) => {}
            Ok(n) => log::info!("minted {n} location tokens for agencies' approved locations"),
            Err(e) => log::warn!("minting agencies' location tokens: {}", e.message()),
        }
    }
}

/// One round of the bulk-install worker: for each agency connection whose
/// install approved locations (`approvedLocations`, a bulk install), mints
/// the tokens of those the tenant does not hold yet, a few per agency per
/// round. Returns how many were minted; a failure is logged and retried
/// next round.
pub async fn mint_approved(state: &Arc<App>) -> AppResult<usize> {
    let keys: Vec<ProviderKey> = state
        .providers
        .all()
        .filter(|p| p.enabled() && p.location_tokens && p.platform.as_deref() == Some(GOHIGHLEVEL))
        .map(|p| p.key.clone())
        .collect();
    if keys.is_empty() {
        return Ok(0);
    }
    let agencies = state
        .db(move |c| {
            let fragments = Account::bulk_install_fragments();
            let fragments: Vec<&str> = fragments.iter().map(String::as_str).collect();
            Ok(Connection::connected_with_metadata(c, &keys, &fragments)?)
        })
        .await?;
    let mut minted = 0;
    for (agency, held) in agencies {
        let Some(provider) = state.providers.shared(&agency.provider).cloned() else {
            continue;
        };
        let account = Account::of(&agency.metadata());
        if !account.is_agency() {
            continue;
        }
        let approved: Vec<AccountId> = account
            .approved_locations
            .into_iter()
            .filter(|l| valid_location(l) && !held.contains(l))
            .collect();
        let tenant_id = agency.tenant_id.clone();
        for location in approved.iter().take(MINTS_PER_ROUND) {
            match mint(
                state,
                &tenant_id,
                &provider,
                &agency,
                location,
                &Actor::Scheduler,
            )
            .await
            {
                Ok(_) => minted += 1,
                Err(e) => {
                    log::warn!(
                        "minting location {location} for tenant={} provider={}: {}",
                        agency.tenant_id,
                        agency.provider,
                        e.message()
                    );
                    // An agency that cannot mint one now will not mint the next.
                    break;
                }
            }
        }
    }
    Ok(minted)
}
