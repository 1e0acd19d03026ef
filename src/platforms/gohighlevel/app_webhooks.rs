//! GoHighLevel's app webhooks: `INSTALL` and `UNINSTALL`, verified
//! (`events.rs`) before anything is read, refused
//! whole when stale, replayed, for another app or for an unknown location,
//! and applied in one transaction with the record of their delivery id.

use super::events::{self, AppEvent, Kind};
use crate::app::App;
use crate::db::models::connection::Connection;
use crate::db::models::event::{Actor, EventKind, NewEvent};
use crate::db::models::pending_install::PendingInstall;
use crate::db::models::seen_webhook;
use crate::db::DbConn;
use crate::error::{AppError, AppResult, Code};
use crate::ids::ProviderKey;
use crate::platform::Taken;
use crate::providers::presets::GOHIGHLEVEL as PROVIDER;
use actix_web::http::header::HeaderMap;
use diesel::Connection as _;

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
}

/// Takes an app webhook: its raw body, signed in `X-GHL-Signature`.
pub async fn take(app: &App, body: &[u8], headers: &HeaderMap) -> AppResult<Taken> {
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
    let notify = app.settings.webhook.is_some();
    let key_of_provider = provider.key.clone();
    let handled = app
        .db(move |c| c.transaction(|c| apply(c, &key_of_provider, &event, notify)))
        .await?;
    // Whatever was erased must not be served from a cache.
    for t in &handled.tenants {
        app.tokens.forget(t, &provider.key);
    }
    log::info!(
        "gohighlevel app webhook: {} ({} disconnected, {} installs dropped)",
        handled.message,
        handled.disconnected,
        handled.dropped_installs
    );
    Ok(Taken {
        message: handled.message,
        disconnected: handled.disconnected,
        dropped_installs: handled.dropped_installs,
    })
}

fn unknown_location(what: &str) -> AppError {
    AppError::not_found_as(
        Code::UnknownLocation,
        format!("no connection or unclaimed install of GoHighLevel {what} is known here"),
    )
}

/// Records the delivery id (refusing a replay), then acts on the event.
fn apply(
    c: &mut DbConn,
    provider: &ProviderKey,
    event: &AppEvent,
    notify: bool,
) -> AppResult<Handled> {
    if let Some(id) = &event.webhook_id {
        let keep_until = crate::db::now() + events::MAX_AGE + events::CLOCK_SKEW;
        if !seen_webhook::first_sight(c, provider, id, keep_until)? {
            return Err(AppError::conflict(
                Code::WebhookReplayed,
                format!("webhook {id} was delivered before; it is not applied twice"),
            ));
        }
    }
    let actor = Actor::Provider {
        key: provider.to_string(),
    };
    let mut handled = Handled {
        disconnected: 0,
        dropped_installs: 0,
        events: 0,
        message: String::new(),
        tenants: Vec::new(),
    };
    match &event.kind {
        Kind::Uninstall => {
            let (rows, what) = match (&event.location_id, &event.company_id) {
                (Some(loc), _) => {
                    handled.dropped_installs = PendingInstall::drop_account(c, provider, loc)?;
                    (
                        Connection::all_of_account(c, provider, loc)?,
                        format!("location {loc}"),
                    )
                }
                // An agency-level uninstall: every location of the company,
                // and the company's own connection.
                (None, Some(company)) => {
                    handled.dropped_installs =
                        PendingInstall::drop_by_metadata(c, provider, "companyId", company)?
                            + PendingInstall::drop_account(c, provider, company)?;
                    let mut rows = Connection::with_metadata(c, provider, "companyId", company)?;
                    for r in Connection::all_of_account(c, provider, company)? {
                        if !rows.iter().any(|x| x.id == r.id) {
                            rows.push(r);
                        }
                    }
                    (rows, format!("company {company}"))
                }
                (None, None) => return Err(AppError::bad_request(
                    Code::InvalidWebhook,
                    "not a GoHighLevel app webhook: an UNINSTALL names a locationId or a companyId",
                )),
            };
            if rows.is_empty() && handled.dropped_installs == 0 {
                return Err(unknown_location(&what));
            }
            for row in rows.iter().filter(|r| r.has_tokens()) {
                Connection::erase(c, &row.id)?;
                crate::db::models::webhook::record(
                    c,
                    notify,
                    &NewEvent {
                        tenant_id: &row.tenant_id,
                        connection_id: Some(&row.id),
                        provider: &row.provider,
                        kind: EventKind::Disconnected,
                        actor: &actor,
                        detail: Some("the app was uninstalled at GoHighLevel"),
                    },
                )?;
                handled.disconnected += 1;
                handled.events += 1;
                handled.tenants.push(row.tenant_id.clone());
            }
            handled.message = format!("uninstall of {what} applied");
        }
        Kind::Install => {
            let Some(loc) = &event.location_id else {
                handled.message = "install without a location acknowledged".into();
                return Ok(handled);
            };
            let bound = Connection::bound_tenant(c, provider, loc)?;
            let row = match &bound {
                Some(t) => Connection::find(c, t, provider, loc)?,
                None => None,
            };
            match row {
                Some(row) => {
                    crate::db::models::webhook::record(
                        c,
                        notify,
                        &NewEvent {
                            tenant_id: &row.tenant_id,
                            connection_id: Some(&row.id),
                            provider: &row.provider,
                            kind: EventKind::Installed,
                            actor: &actor,
                            detail: Some("the app was installed at GoHighLevel"),
                        },
                    )?;
                    handled.events = 1;
                    handled.message = format!("install on location {loc} recorded");
                }
                None => {
                    handled.message = format!(
                        "install on location {loc} acknowledged; its grant arrives through the callback"
                    )
                }
            }
        }
        Kind::Other(kind) => {
            handled.message = format!(
                "{} webhook acknowledged; Tether does not act on it",
                short(kind)
            );
        }
    }
    Ok(handled)
}

/// A provider-given word as it may be shown and logged: printable, short.
fn short(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic())
        .take(64)
        .collect()
}
