//! GoHighLevel's app webhooks. One URL takes every event of a Marketplace
//! app: each is verified (`events.rs`) before anything is read, refused
//! whole when stale or for another app, acted on where Tether acts
//! (`INSTALL`, `UNINSTALL`, `LocationUpdate` renames the location), and
//! relayed to the CRM for the tenant holding the location
//! (`connections::relay`), all in one transaction with the record of its
//! delivery id: GoHighLevel is answered 200 only once the event is stored.
//! A delivery repeated with the same `webhookId` is answered 200 and
//! neither applied nor relayed again.
//!
//! An UNINSTALL erases nothing on its word alone: GoHighLevel signs every
//! Marketplace app's webhooks with one key, and an UNINSTALL carries
//! neither an id nor a timestamp, so another app's (without an app id
//! configured) or a captured one replayed after a reinstall would verify.
//! Once it is stored and relayed, each OAuth connection it names is
//! refreshed: only when GoHighLevel says the grant is gone are its tokens
//! erased; a token that still refreshes is kept, and the refusal logged.

use super::events::{self, AppEvent, Kind};
use crate::app::App;
use crate::config::Settings;
use crate::connections::relay;
use crate::db::models::connection::{Connection, Kind as ConnectionKind, Status};
use crate::db::models::event::{Actor, EventKind, NewEvent};
use crate::db::models::pending_install::PendingInstall;
use crate::db::models::seen_webhook;
use crate::db::DbConn;
use crate::error::{AppError, AppResult, Code};
use crate::ids::{ConnectionId, ProviderKey};
use crate::platform::Taken;
use crate::providers::presets::GOHIGHLEVEL as PROVIDER;
use actix_web::http::header::HeaderMap;
use diesel::{Connection as _, OptionalExtension};
use serde_json::value::RawValue;
use std::sync::Arc;

/// What a taken webhook did.
#[derive(Debug)]
struct Handled {
    /// Connections marked disconnected (an uninstall).
    pub disconnected: usize,
    /// Unclaimed installs dropped (an uninstall).
    pub dropped_installs: usize,
    /// Events recorded.
    pub events: usize,
    pub message: String,
    /// The tenants whose connections changed.
    pub tenants: Vec<crate::ids::TenantId>,
    /// The OAuth connections an UNINSTALL names, to confirm with
    /// GoHighLevel once it is stored.
    pub to_confirm: Vec<ConnectionId>,
    /// What became of the relay to the CRM.
    pub relayed: &'static str,
}

/// Takes an app webhook: its raw body, signed in `X-GHL-Signature`.
pub async fn take(app: &Arc<App>, body: &[u8], headers: &HeaderMap) -> AppResult<Taken> {
    let provider = app.enabled_provider(PROVIDER)?;
    let key = provider.webhook_key.ok_or_else(|| {
        AppError::conflict(
            Code::ProviderMisconfigured,
            "no key to verify app webhooks with: set TETHER_GOHIGHLEVEL_WEBHOOK_PUBLIC_KEY",
        )
    })?;
    let signature = headers
        .get(events::SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok());
    events::verify(&key, body, signature)?;
    let event = events::parse(body)?;
    events::check_app(&event, provider.app_id.as_deref())?;
    events::check_fresh(&event, chrono::Utc::now())?;
    // `parse` read it as a JSON document, so it is one.
    let raw = std::str::from_utf8(body)
        .ok()
        .and_then(|text| RawValue::from_string(text.to_string()).ok())
        .ok_or_else(|| AppError::bad_request(Code::InvalidWebhook, "the body is not JSON"))?;
    let (settings, key) = (app.settings.clone(), provider.key.clone());
    let app_id = event.app_id.clone().unwrap_or_else(|| "none".into());
    let handled = app
        .db(move |c| c.transaction(|c| apply(c, &settings, &key, &event, &raw)))
        .await?;
    // Stored: the deliverer sends it now.
    app.deliver_now.notify_one();
    // Whatever was renamed must not be served from a cache.
    for t in &handled.tenants {
        app.tokens.forget(t, &provider.key);
    }
    let mut handled = handled;
    if !handled.to_confirm.is_empty() {
        let ids = std::mem::take(&mut handled.to_confirm);
        handled.disconnected = confirm_uninstall(app, &ids, &app_id).await?;
    }
    log::info!(
        "gohighlevel app webhook: {} app={app_id} ({} disconnected, {} installs dropped, relay {})",
        handled.message,
        handled.disconnected,
        handled.dropped_installs,
        handled.relayed
    );
    Ok(Taken {
        message: handled.message,
        disconnected: handled.disconnected,
        dropped_installs: handled.dropped_installs,
        relayed: handled.relayed,
    })
}

/// Records the delivery id (a repeat is answered, and nothing more), acts
/// on the event, and queues it for the CRM.
fn apply(
    c: &mut DbConn,
    settings: &Settings,
    provider: &ProviderKey,
    event: &AppEvent,
    body: &RawValue,
) -> AppResult<Handled> {
    // First, before any read: on SQLite a transaction that reads and then
    // writes fails at once when another connection wrote in between (the
    // delivery loop does, all the time); on PostgreSQL this account's events
    // and grants take turns, so that none is held after its holder came.
    let lock = match event.account() {
        Some(account) => format!("account {provider} {account}"),
        None => format!("app events {provider}"),
    };
    crate::db::lock_for_write(c, &lock)?;
    let mut handled = Handled {
        disconnected: 0,
        dropped_installs: 0,
        events: 0,
        message: String::new(),
        tenants: Vec::new(),
        to_confirm: Vec::new(),
        relayed: "no",
    };
    if let Some(id) = &event.webhook_id {
        let keep_until = crate::db::now() + events::MAX_AGE + events::CLOCK_SKEW;
        if !seen_webhook::first_sight(c, provider, id, keep_until)? {
            handled.message = format!(
                "webhook {} was received before; it is not applied or relayed again",
                short(id)
            );
            return Ok(handled);
        }
    }
    let notify = settings.webhook.is_some();
    let relayed = event.account().map(|account| relay::AppEvent {
        provider,
        event_type: &event.type_name,
        account,
        body,
    });
    // Looked up before acting: an uninstall erases the holder's tokens,
    // and the event is still that tenant's.
    let holder_before = match &relayed {
        Some(r) => relay::holding(c, r)?,
        None => None,
    };
    match &event.kind {
        Kind::Uninstall => uninstall(c, provider, event, &mut handled)?,
        Kind::Install => install(c, provider, event, notify, &mut handled)?,
        Kind::LocationUpdate => rename(c, provider, event, &mut handled)?,
        Kind::Other(kind) => {
            handled.message = format!("{} webhook taken", short(kind));
        }
    }
    let holder = match (&event.kind, &relayed) {
        (Kind::Uninstall, _) | (_, None) => holder_before,
        (_, Some(r)) => relay::holding(c, r)?,
    };
    handled.relayed = match &relayed {
        Some(r) => match relay::queue(c, settings, r, holder.as_ref())? {
            relay::Relayed::Queued => "queued",
            relay::Relayed::Held => "held until a tenant connects the location",
            relay::Relayed::Off => "off",
        },
        // Nothing names whose it is: relayed as GoHighLevel sent it.
        None => match relay::queue_unrouted(c, settings, provider, &event.type_name, body)? {
            relay::Relayed::Off => "off",
            _ => "queued",
        },
    };
    Ok(handled)
}

fn uninstall(
    c: &mut DbConn,
    provider: &ProviderKey,
    event: &AppEvent,
    handled: &mut Handled,
) -> AppResult<()> {
    let (rows, what) = match (&event.location_id, &event.company_id) {
        (Some(loc), _) => {
            handled.dropped_installs = PendingInstall::drop_account(c, provider, loc)?;
            (
                Connection::all_of_account(c, provider, loc)?,
                format!("location {loc}"),
            )
        }
        // An agency-level uninstall: every location of the company, and the
        // company's own connection.
        (None, Some(company)) => {
            handled.dropped_installs = PendingInstall::drop_of_parent(c, provider, company)?
                + PendingInstall::drop_account(c, provider, company)?;
            let mut rows = Connection::of_parent(c, provider, company)?;
            for r in Connection::all_of_account(c, provider, company)? {
                if !rows.iter().any(|x| x.id == r.id) {
                    rows.push(r);
                }
            }
            (rows, format!("company {company}"))
        }
        (None, None) => {
            return Err(AppError::bad_request(
                Code::InvalidWebhook,
                "not a GoHighLevel app webhook: an UNINSTALL names a locationId or a companyId",
            ))
        }
    };
    // A Private Integration Token is the location's own, not the app's: an
    // uninstall of the app leaves it working.
    let app_grants = |r: &&Connection| r.has_tokens() && r.kind == ConnectionKind::OAuth;
    handled.to_confirm = rows
        .iter()
        .filter(app_grants)
        .map(|r| r.id.clone())
        .collect();
    handled.message = if rows.is_empty() && handled.dropped_installs == 0 {
        format!("uninstall of {what}, which no connection or unclaimed install holds")
    } else {
        format!("uninstall of {what} taken")
    };
    Ok(())
}

/// How many connections are confirmed at once.
const CONFIRMING: usize = 8;

/// Confirms an UNINSTALL with GoHighLevel, connection by connection: each
/// is refreshed now (sharing any refresh under way), and only one whose
/// grant GoHighLevel says is gone is erased, recorded as disconnected by
/// the uninstall. Returns how many were.
async fn confirm_uninstall(app: &Arc<App>, ids: &[ConnectionId], app_id: &str) -> AppResult<usize> {
    use futures_util::StreamExt;
    let actor = Actor::Provider {
        key: PROVIDER.to_string(),
    };
    let outcomes: Vec<(ConnectionId, AppResult<Connection>)> =
        futures_util::stream::iter(ids.iter().cloned())
            .map(|id| {
                let actor = actor.clone();
                async move {
                    let refreshed = crate::refresh::refresh_now(app, &id, &actor, None).await;
                    (id, refreshed)
                }
            })
            .buffer_unordered(CONFIRMING)
            .collect()
            .await;
    let mut gone = Vec::new();
    for (id, outcome) in outcomes {
        match outcome {
            Err(e) if e.is(Code::NeedsReconnect) => gone.push(id),
            Ok(_) => log::warn!(
                "gohighlevel UNINSTALL not confirmed for connection {id} (app={app_id}): its token still refreshes, so its tokens are kept"
            ),
            Err(e) => log::warn!(
                "gohighlevel UNINSTALL not confirmed for connection {id} (app={app_id}): {}; its tokens are kept, and its next refresh tells",
                e.message()
            ),
        }
    }
    if gone.is_empty() {
        return Ok(0);
    }
    let notify = app.settings.webhook.is_some();
    let erased = app
        .db(move |c| {
            c.transaction(|c| {
                let mut erased = Vec::new();
                for id in &gone {
                    let Some(row) = Connection::by_id(c, id).optional()? else {
                        continue;
                    };
                    // Reconnected meanwhile: a new grant is not the uninstalled one.
                    if row.status() != Status::NeedsReconnect {
                        continue;
                    }
                    Connection::erase(c, id)?;
                    crate::db::models::webhook::record(
                        c,
                        notify,
                        &NewEvent {
                            tenant_id: &row.tenant_id,
                            connection_id: Some(&row.id),
                            provider: &row.provider,
                            kind: EventKind::Disconnected,
                            actor: &actor,
                            detail: Some("the app was uninstalled at GoHighLevel (confirmed: its grant is gone)"),
                        },
                    )?;
                    erased.push(row);
                }
                Ok::<_, AppError>(erased)
            })
        })
        .await?;
    for row in &erased {
        app.tokens.forget(&row.tenant_id, &row.provider);
    }
    app.deliver_now.notify_one();
    Ok(erased.len())
}

fn install(
    c: &mut DbConn,
    provider: &ProviderKey,
    event: &AppEvent,
    notify: bool,
    handled: &mut Handled,
) -> AppResult<()> {
    let Some(loc) = &event.location_id else {
        handled.message = "install without a location taken".into();
        return Ok(());
    };
    let holder = Connection::holder(c, provider, loc)?;
    let row = match &holder {
        Some(t) => Connection::find(c, t, provider, loc)?,
        None => None,
    };
    let Some(row) = row else {
        handled.message =
            format!("install on location {loc} taken; its grant arrives through the callback");
        return Ok(());
    };
    crate::db::models::webhook::record(
        c,
        notify,
        &NewEvent {
            tenant_id: &row.tenant_id,
            connection_id: Some(&row.id),
            provider: &row.provider,
            kind: EventKind::Installed,
            actor: &Actor::Provider {
                key: provider.to_string(),
            },
            detail: Some("the app was installed at GoHighLevel"),
        },
    )?;
    handled.events = 1;
    handled.message = format!("install on location {loc} recorded");
    Ok(())
}

/// `LocationUpdate`: the location's connections take its new name.
fn rename(
    c: &mut DbConn,
    provider: &ProviderKey,
    event: &AppEvent,
    handled: &mut Handled,
) -> AppResult<()> {
    let (Some(loc), Some(name)) = (&event.location_id, &event.name) else {
        handled.message = "location update without a location id or name taken".into();
        return Ok(());
    };
    let renamed = Connection::rename_account(c, provider, loc, name)?;
    handled.tenants = renamed;
    handled.message = format!(
        "location {loc} renamed on {} connections",
        handled.tenants.len()
    );
    Ok(())
}

/// A provider-given word as it may be shown and logged: printable, short.
fn short(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic())
        .take(64)
        .collect()
}
