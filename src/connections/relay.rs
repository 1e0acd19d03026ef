//! Providers' app events relayed to the CRM. A platform takes a signed app
//! webhook, acts on it where Tether acts (an install, an uninstall, a
//! rename), and hands it here in the same transaction: it is queued in the
//! outbox for `TETHER_RELAY_URL` (else the events URL) as
//! `{id, type: "provider_event", provider, event_type, tenant, account:
//! {id, name}, received_at, body}`, the provider's body byte for byte. The
//! platform answers the provider only once that transaction committed.
//!
//! An event for an account no tenant holds is held, never dropped on
//! receipt: a provider such as GoHighLevel does not retry, so answering
//! with an error would lose it. It is relayed when a tenant comes to hold
//! the account (the one door for a grant calls [`release_held`]), or
//! dropped with a log line after `TETHER_RELAY_HOLD_DAYS`.

use crate::app::App;
use crate::config::Settings;
use crate::db::models::connection::Connection;
use crate::db::models::tenant::Tenant;
use crate::db::models::webhook as outbox;
use crate::db::{now, DbConn};
use crate::error::AppResult;
use crate::ids::{AccountId, ProviderKey};
use serde_json::value::RawValue;

/// The `type` of every relayed event.
pub const PROVIDER_EVENT: &str = "provider_event";

/// A provider's app event, verified by its platform.
pub struct AppEvent<'a> {
    pub provider: &'a ProviderKey,
    /// The provider's name for it (`InboundMessage`, `INSTALL`, ...).
    pub event_type: &'a str,
    /// The account it concerns (a location).
    pub account: &'a AccountId,
    /// The body as received: a JSON document.
    pub body: &'a RawValue,
}

/// What became of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Relayed {
    /// Queued for the tenant holding the account.
    Queued,
    /// No tenant holds the account: kept until one does.
    Held,
    /// Neither `TETHER_RELAY_URL` nor `TETHER_WEBHOOK_URL` is set.
    Off,
}

/// The `type` of a relayed provider event: only [`PROVIDER_EVENT`].
fn provider_event_type() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some([PROVIDER_EVENT]))
        .description(Some("Always `provider_event`."))
        .build()
}

/// A provider's app event as the CRM receives it: what the OpenAPI
/// document's `webhooks` says of [`Payload`], which writes it.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ProviderEventPayload {
    /// The delivery's id (`pev_...`): a redelivery carries the same one.
    id: String,
    /// Always `provider_event`: a one-value enum, so that a generated
    /// client tells these apart from connection events by `type`.
    #[schema(rename = "type", schema_with = provider_event_type)]
    kind: String,
    /// The provider's key (`gohighlevel`).
    provider: String,
    /// The provider's name of the event (`InboundMessage`, `ContactCreate`,
    /// `LocationUpdate`, `INSTALL`, ...).
    event_type: String,
    /// The CRM's id of the tenant holding the account; null only for an
    /// event that names no account.
    tenant: Option<String>,
    /// The account it concerns (a location); null when it names none.
    account: Option<crate::db::models::webhook::EventAccount>,
    /// When Tether received it (RFC 3339).
    #[schema(format = DateTime)]
    received_at: String,
    /// The account's effective integration settings: the tenant's for the
    /// provider with the account's own over them (a location's pipeline).
    #[schema(value_type = Option<Object>)]
    settings: Option<serde_json::Value>,
    /// The provider's body, byte for byte.
    #[schema(value_type = Object)]
    body: serde_json::Value,
}

/// The payload the CRM receives; also how a held one is read back.
#[derive(serde::Serialize, serde::Deserialize)]
struct Payload {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    provider: String,
    event_type: String,
    /// The CRM's id of the tenant; `null` only while held.
    tenant: Option<String>,
    /// `null` only for an event that names no account.
    account: Option<Account>,
    received_at: String,
    /// The account's effective integration settings (the tenant's for the
    /// provider, the account's own over them); null while held.
    #[serde(default)]
    settings: Option<serde_json::Value>,
    body: Box<RawValue>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Account {
    id: String,
    name: Option<String>,
}

/// The connection holding the event's account (its tokens), if any: the
/// one it is relayed for. A platform that erases that connection in the
/// same work (an uninstall) looks it up first.
pub fn holding(c: &mut DbConn, event: &AppEvent) -> diesel::QueryResult<Option<Connection>> {
    match Connection::holder(c, event.provider, event.account)? {
        Some(tenant) => Connection::find(c, &tenant, event.provider, event.account),
        None => Ok(None),
    }
}

/// Queues `event` for the CRM within the caller's transaction: for
/// `holder`'s tenant, or held when no tenant holds the account.
pub fn queue(
    c: &mut DbConn,
    settings: &Settings,
    event: &AppEvent,
    holder: Option<&Connection>,
) -> diesel::QueryResult<Relayed> {
    if settings.relay_target().is_none() {
        return Ok(Relayed::Off);
    }
    let (tenant, effective) = match holder {
        Some(row) => (
            Tenant::by_id(c, &row.tenant_id)?.map(|t| t.external_id.to_string()),
            Some(super::integration::effective_of(
                c,
                &row.tenant_id,
                &row.provider,
                &row.account_id,
            )?),
        ),
        None => (None, None),
    };
    let payload = Payload {
        id: format!("pev_{}", uuid::Uuid::new_v4().simple()),
        kind: PROVIDER_EVENT.into(),
        provider: event.provider.to_string(),
        event_type: event.event_type.to_string(),
        account: Some(Account {
            id: event.account.to_string(),
            name: holder.and_then(|row| row.account_name.clone()),
        }),
        received_at: received_now(),
        body: event.body.to_owned(),
        tenant,
        settings: effective,
    };
    let held_until = payload.tenant.is_none().then(|| {
        now() + chrono::Duration::from_std(settings.refresh.relay_hold).unwrap_or_default()
    });
    outbox::enqueue_relay(
        c,
        &payload.id,
        &to_json(&payload),
        event.provider,
        Some(event.account),
        held_until,
    )?;
    Ok(if held_until.is_some() {
        Relayed::Held
    } else {
        Relayed::Queued
    })
}

/// Queues an event that names no account, for no tenant: relayed as the
/// provider sent it, since no tenant could ever come to hold it.
pub fn queue_unrouted(
    c: &mut DbConn,
    settings: &Settings,
    provider: &ProviderKey,
    event_type: &str,
    body: &RawValue,
) -> diesel::QueryResult<Relayed> {
    if settings.relay_target().is_none() {
        return Ok(Relayed::Off);
    }
    let payload = Payload {
        id: format!("pev_{}", uuid::Uuid::new_v4().simple()),
        kind: PROVIDER_EVENT.into(),
        provider: provider.to_string(),
        event_type: event_type.to_string(),
        tenant: None,
        account: None,
        received_at: received_now(),
        settings: None,
        body: body.to_owned(),
    };
    outbox::enqueue_relay(c, &payload.id, &to_json(&payload), provider, None, None)?;
    Ok(Relayed::Queued)
}

fn received_now() -> String {
    now()
        .and_utc()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Relays the held events of `connection`'s account to its tenant, which
/// has just come to hold it; part of the grant's transaction. Returns how
/// many.
pub fn release_held(c: &mut DbConn, connection: &Connection) -> diesel::QueryResult<usize> {
    let held = outbox::held_of(c, &connection.provider, &connection.account_id)?;
    if held.is_empty() {
        return Ok(0);
    }
    let tenant = Tenant::by_id(c, &connection.tenant_id)?.map(|t| t.external_id.to_string());
    for (id, stored) in &held {
        let Ok(mut payload) = serde_json::from_str::<Payload>(stored) else {
            // Written by `queue`; a row this version cannot read goes as it is.
            outbox::release(c, id, stored)?;
            continue;
        };
        payload.tenant = tenant.clone();
        payload.settings = Some(super::integration::effective_of(
            c,
            &connection.tenant_id,
            &connection.provider,
            &connection.account_id,
        )?);
        if let Some(account) = payload.account.as_mut() {
            account.name = connection.account_name.clone();
        }
        outbox::release(c, id, &to_json(&payload))?;
    }
    log::info!(
        "relaying {} held app events of provider={} account={} to tenant={}",
        held.len(),
        connection.provider,
        connection.account_id,
        connection.tenant_id
    );
    Ok(held.len())
}

/// The held app events, oldest first (up to 1,000).
pub async fn held(app: &App) -> AppResult<Vec<outbox::HeldEvent>> {
    app.db(|c| Ok(outbox::held(c, 1_000)?)).await
}

fn to_json(payload: &Payload) -> String {
    // A struct of strings and a JSON document always serialises.
    serde_json::to_string(payload).expect("a relay payload serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_is_relayed_byte_for_byte() {
        let body = r#"{"type":"InboundMessage", "account":"l1","z":1,"a":[2, 3]}"#;
        let payload = Payload {
            id: "pev_1".into(),
            kind: PROVIDER_EVENT.into(),
            provider: "p".into(),
            event_type: "InboundMessage".into(),
            tenant: None,
            account: Some(Account {
                id: "l1".into(),
                name: None,
            }),
            received_at: "2026-12-07T00:00:00.000Z".into(),
            settings: None,
            body: RawValue::from_string(body.into()).unwrap(),
        };
        let mut read: Payload = serde_json::from_str(&to_json(&payload)).unwrap();
        read.tenant = Some("acme".into());
        let again = to_json(&read);
        assert!(again.contains(body), "{again}");
        assert!(again.contains(r#""tenant":"acme""#), "{again}");
    }
}
