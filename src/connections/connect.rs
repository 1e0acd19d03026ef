//! Starting and completing a connection: the authorization-code flow (from
//! the dashboard or a connect link), a provider-signed install (Wix apps),
//! and saving the grant either way.

use super::grant::{self, Arrival, NewGrant};
use crate::app::App;
use crate::db::models::connect_link::ConnectLink;
use crate::db::models::connection::Connection;
use crate::db::models::event::{Actor, EventKind, NewEvent};
use crate::db::models::oauth_state::OAuthState;
use crate::error::AppResult;
use crate::ids::{AccountId, Tags, TenantId};
use crate::oauth::client::ProviderError;
use crate::oauth::{self, Authorized, CallbackQuery, DASHBOARD};
use crate::providers::{LoginHint, Provider};
use std::sync::Arc;

/// Where a connect link's flow ends.
pub const LINK_DONE: &str = "/connect/done";

/// Who starts a flow: the tenant, the signed-in admin if any, and the value
/// that ties the state to the browser it started in.
pub struct Starter {
    pub tenant_id: TenantId,
    pub user_id: Option<String>,
    pub binding: String,
    /// Ask the provider to show its consent or account chooser
    /// (`Provider::consent_params`).
    pub ask_consent: bool,
    /// The CRM's tags for the connect, kept with the state until the callback.
    pub tags: Option<Tags>,
    /// The listed CRM origin whose page opened a connect link in a popup.
    pub embed_origin: Option<String>,
    /// A reconnect of one account: what the provider takes as its
    /// `login_hint` ([`login_hint`]).
    pub login_hint: Option<String>,
    /// A reconnect of this account: a callback that comes back with
    /// another is refused, not added beside it.
    pub reconnect_account: Option<AccountId>,
}

/// What `provider` takes as `login_hint` for `account`, if it takes one.
pub fn login_hint(provider: &Provider, account: &Connection) -> Option<String> {
    match provider.login_hint? {
        LoginHint::AccountId => Some(account.account_id.to_string()),
        LoginHint::AccountName => account.account_name.clone(),
    }
}

/// Records a pending authorization; returns the provider's authorize URL.
pub async fn begin(
    app: &App,
    provider: Arc<Provider>,
    starter: Starter,
    return_to: String,
    popup: bool,
) -> AppResult<String> {
    let (keys, settings) = (app.keys.clone(), app.settings.clone());
    let tags = starter.tags.as_ref().map(Tags::to_json);
    app.db(move |c| {
        let who = oauth::Initiator {
            tenant_id: &starter.tenant_id,
            user_id: starter.user_id.as_deref(),
            session_binding: Some(&starter.binding),
            ask_consent: starter.ask_consent,
            tags: tags.as_deref(),
            embed_origin: starter.embed_origin.as_deref(),
            login_hint: starter.login_hint.as_deref(),
            reconnect_account: starter.reconnect_account.as_ref().map(AccountId::as_str),
        };
        oauth::start(
            c,
            &keys,
            &settings,
            &provider,
            &who,
            Some(&return_to),
            popup,
        )
    })
    .await
}

/// Redeems a connect link and starts its flow, bound to `binding`; returns
/// the provider's authorize URL. `embed`: the listed origin of the CRM page
/// whose `/static/connect.js` opened the link in a popup; it is kept with the
/// state and told the outcome.
pub async fn begin_with_link(
    app: &App,
    token: String,
    binding: String,
    embed: Option<String>,
) -> AppResult<String> {
    let link = app
        .db(move |c| Ok(ConnectLink::redeem(c, &token)?))
        .await?
        .ok_or_else(super::links::invalid)?;
    let provider = app.enabled_provider(&link.provider)?;
    let starter = Starter {
        tenant_id: link.tenant_id,
        user_id: None,
        binding,
        // Whoever follows a link may already have approved the app at the
        // provider for another account: the provider is asked to show its
        // consent or account chooser rather than answer at once.
        ask_consent: true,
        tags: Tags::stored(link.tags.as_deref()),
        embed_origin: embed,
        login_hint: None,
        reconnect_account: None,
    };
    let popup = starter.embed_origin.is_some();
    begin(app, provider, starter, LINK_DONE.to_string(), popup).await
}

/// Starts a connect from a connect session's page: spends one of its uses
/// on a single-use link for `provider`, and goes on with that link.
pub async fn begin_with_session(
    app: &App,
    token: String,
    provider: String,
    binding: String,
    embed: Option<String>,
) -> AppResult<String> {
    let link = super::links::link_from_session(app, token, provider).await?;
    begin_with_link(app, link, binding, embed).await
}

/// What the admin is told when a reconnect of `expected` came back with
/// another account: both named, and nothing changed.
async fn other_account(
    app: &App,
    row: &OAuthState,
    provider: &Provider,
    expected: &str,
    got: &Authorized,
) -> String {
    let (tenant, key, id) = (
        row.tenant_id.clone(),
        provider.key.clone(),
        AccountId::known(expected),
    );
    let known = app
        .db(move |c| Ok(Connection::find(c, &tenant, &key, &id)?))
        .await
        .ok()
        .flatten();
    let wanted = known
        .as_ref()
        .map_or(expected.to_string(), |c| c.label().to_string());
    let chosen = got
        .account_name
        .clone()
        .unwrap_or_else(|| got.account_id.to_string());
    format!(
        "You chose {chosen} at {p}, but this was a reconnect of {wanted}. Nothing changed: reconnect again and choose {wanted}, or use Add another account to add {chosen}.",
        p = provider.display_name
    )
}

/// A flow that failed after its state was used: in a popup, the failure is
/// the popup's own result (told to the page that opened it), so its message;
/// in a whole window, the error page.
fn in_popup(row: &OAuthState, e: crate::error::AppError) -> AppResult<String> {
    if !row.popup {
        return Err(e);
    }
    e.log();
    Ok(e.message().to_string())
}

/// How a callback ended, for the person who went through it.
pub struct Completion {
    pub provider: String,
    /// Whether the flow ran in a popup (which is told and closes).
    pub popup: bool,
    /// Started from a connect link (rather than by a signed-in admin).
    pub by_link: bool,
    /// The CRM page's origin a connect link's popup reports to (`by_link`).
    pub embed_origin: Option<String>,
    /// Connected (or reconnected), rather than declined at the provider.
    pub connected: bool,
    pub message: String,
    /// How a person recognises the connected account (its name, else its id).
    pub account: Option<String>,
    pub return_to: String,
}

/// Completes an authorization-code callback: checks it against the state
/// (and the browser's `binding`), spends the state, and exchanges the code
/// and saves the grant, or reports the provider's refusal. `admin_email`:
/// who is signed in, recorded as the actor of a dashboard flow.
pub async fn complete(
    app: &App,
    provider_key: &str,
    query: CallbackQuery,
    binding: Option<String>,
    admin_email: Option<String>,
) -> AppResult<Completion> {
    let provider = app.enabled_provider(provider_key)?;
    let query = Arc::new(query);
    let row = {
        let (p, q) = (provider.clone(), query.clone());
        app.db(move |c| oauth::check_callback(c, &p, &q, binding.as_deref()))
            .await?
    };
    let return_to = row.return_to.clone().unwrap_or_else(|| DASHBOARD.into());
    let actor = match (&row.user_id, admin_email) {
        (Some(_), email) => Actor::Admin {
            email: email.unwrap_or_default(),
        },
        (None, _) => Actor::ConnectLink,
    };
    {
        let row = row.clone();
        app.db(move |c| oauth::consume(c, &row)).await?;
    }
    let completion = |connected: bool, message: String, account: Option<String>| Completion {
        provider: provider.key.to_string(),
        popup: row.popup,
        by_link: row.user_id.is_none(),
        embed_origin: row.embed_origin.clone(),
        connected,
        message,
        account,
        return_to: return_to.clone(),
    };
    if let Some(error) = &query.error {
        // Declined (or failed) at the provider: whatever was connected stays as it was.
        let message = if error == "access_denied" {
            format!(
                "You declined the connection at {}. Nothing was changed.",
                provider.display_name
            )
        } else {
            format!(
                "{} did not complete the connection ({}). Nothing was changed.",
                provider.display_name,
                short(error)
            )
        };
        log::info!(
            "authorization not granted tenant={} provider={} error={}",
            row.tenant_id,
            provider.key,
            short(error)
        );
        let why = if error == "access_denied" {
            "declined at the provider (access_denied)".to_string()
        } else {
            format!("the provider did not grant it ({})", short(error))
        };
        failed(app, &row, &provider, &actor, &why).await;
        return Ok(completion(false, message, None));
    }
    let code = query.code.clone().unwrap_or_default();
    let verifier = row.verifier(&app.keys)?;
    let verifier = verifier.as_ref().map(|v| v.expose().as_str());
    let authorized = match exchange(app, &provider, &row.redirect_uri, &code, verifier).await {
        Ok(authorized) => authorized,
        Err(e) => {
            let why = format!("the code exchange failed: {}", e.message());
            failed(app, &row, &provider, &actor, &why).await;
            return in_popup(&row, e).map(|message| completion(false, message, None));
        }
    };
    if let Some(expected) = row.reconnect_account.as_deref() {
        if authorized.account_id.as_str() != expected {
            let message = other_account(app, &row, &provider, expected, &authorized).await;
            let why = format!(
                "a reconnect of {expected} came back with another account, {}",
                authorized.account_id
            );
            failed(app, &row, &provider, &actor, &why).await;
            return Ok(completion(false, message, None));
        }
    }
    let saved = grant::save(
        app,
        NewGrant {
            provider: provider.clone(),
            tenant: row.tenant_id.clone(),
            authorized,
            actor,
            arrival: Arrival::Callback,
            tags: Tags::stored(row.tags.as_deref()),
        },
    )
    .await;
    let (connection, reconnected) = match saved {
        Ok(saved) => saved,
        Err(e) => return in_popup(&row, e).map(|message| completion(false, message, None)),
    };
    Ok(completion(
        true,
        connected_message(&provider, &connection, reconnected),
        Some(connection.label().to_string()),
    ))
}

/// Records that the connect of `row` made no connection, and `why` (never a
/// secret, never the code), with the tags it started with. What the person
/// is told does not depend on it: a failure to record is logged.
async fn failed(app: &App, row: &OAuthState, provider: &Provider, actor: &Actor, why: &str) {
    let notify = app.settings.webhook.is_some();
    let (tenant, key, actor, why) = (
        row.tenant_id.clone(),
        provider.key.clone(),
        actor.clone(),
        why.to_string(),
    );
    let tags = Tags::stored(row.tags.as_deref());
    app.db(move |c| {
        crate::db::models::webhook::record_tagged(
            c,
            notify,
            &NewEvent {
                tenant_id: &tenant,
                connection_id: None,
                provider: &key,
                kind: EventKind::ConnectFailed,
                actor: &actor,
                detail: Some(&why),
            },
            tags.as_ref(),
        )?;
        Ok(())
    })
    .await
    .unwrap_or_else(|e| {
        log::warn!(
            "connect_failed not recorded tenant={} provider={}: {}",
            row.tenant_id,
            provider.key,
            e.message()
        )
    })
}

/// Exchanges an authorization code (the platform's way, or RFC 6749's) and
/// looks up the account. A provider refusing Tether's client credentials is
/// flagged as misconfigured, as a refresh would flag it.
pub async fn exchange(
    app: &App,
    provider: &Provider,
    redirect_uri: &str,
    code: &str,
    verifier: Option<&str>,
) -> AppResult<Authorized> {
    oauth::check_code(code)?;
    let response = app
        .platforms
        .exchange(&app.http, provider, code, redirect_uri, verifier)
        .await
        .map_err(|e| {
            if let ProviderError::ClientMisconfigured { error } = &e {
                app.flag_provider(&provider.key, error);
            }
            oauth::provider_failure(provider, e)
        })?;
    oauth::authorized(&app.http, provider, response).await
}

/// Checks a provider-signed install artefact (Wix's `instance`) with the
/// app's secret; answers the account it names.
pub fn verify_install(app: &App, provider: &Provider, artefact: &str) -> AppResult<AccountId> {
    Ok(app.platforms.verify_install(provider, artefact)?.account)
}

/// Connects the site a provider-signed install names (Wix apps) to the
/// tenant, unless another tenant holds it; returns the message for the admin.
pub async fn install(
    app: &App,
    provider: Arc<Provider>,
    tenant_id: &TenantId,
    instance: &str,
    actor: &Actor,
) -> AppResult<String> {
    let signed = app.platforms.verify_install(&provider, instance)?;
    // Checked before a token is minted too: none is for a site held elsewhere.
    let holder = {
        let (p, id) = (provider.key.clone(), signed.account.clone());
        app.db(move |c| Ok(Connection::holder(c, &p, &id)?)).await?
    };
    if holder.is_some_and(|t| &t != tenant_id) {
        return Err(grant::bound_elsewhere(&provider));
    }
    let authorized = app
        .platforms
        .connect_install(&app.http, &provider, &signed)
        .await?;
    let (connection, reconnected) = grant::save(
        app,
        NewGrant {
            provider: provider.clone(),
            tenant: tenant_id.clone(),
            authorized,
            actor: actor.clone(),
            arrival: Arrival::SignedInstall,
            tags: None,
        },
    )
    .await?;
    Ok(connected_message(&provider, &connection, reconnected))
}

fn connected_message(provider: &Provider, connection: &Connection, reconnected: bool) -> String {
    let who = connection
        .account_name
        .as_deref()
        .unwrap_or(&connection.account_id);
    let verb = if reconnected {
        "Reconnected"
    } else {
        "Connected"
    };
    format!("{verb} {} as {who}.", provider.display_name)
}

/// A provider's error code as it may be shown and logged: printable, short.
fn short(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic())
        .take(64)
        .collect()
}
