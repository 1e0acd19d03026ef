//! Providers' app events the relay holds for a tenant to come.

use super::errors::{DatabaseUnreachable, LimitedToOneTenant, NoValidKey};
use super::rights::{AllTenantsKey, StatusRead};
use crate::app::App;
use crate::connections::relay;
use crate::db::models::webhook::HeldEvent;
use crate::error::AppResult;
use crate::web::http::no_store;
use actix_web::{get, web, HttpResponse};

#[derive(serde::Serialize, utoipa::ToSchema)]
struct HeldList {
    events: Vec<HeldEvent>,
}

/// Held app events (all-tenants keys only)
///
/// App events a provider sent for an account no tenant holds (a
/// GoHighLevel location nobody connected yet), oldest first, up to 1,000.
/// Each is relayed the moment a tenant comes to hold its account, or
/// dropped after `TETHER_RELAY_HOLD_DAYS`. Never their bodies.
#[utoipa::path(
    responses(
        (status = 200, description = "The held events", body = HeldList),
        NoValidKey,
        LimitedToOneTenant,
        DatabaseUnreachable,
    ),
    security(("apiKey" = ["status:read"]))
)]
#[get("/provider-events/held")]
pub(super) async fn held_events(
    state: web::Data<App>,
    key: AllTenantsKey<StatusRead>,
) -> AppResult<HttpResponse> {
    let mut events = relay::held(&state).await?;
    events.retain(|e| key.caller.key.covers(e.provider.as_str()));
    Ok(no_store(HttpResponse::Ok().json(HeldList { events })))
}
