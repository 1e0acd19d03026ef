//! The internal JSON API for the CRM's services, under `/api/v1`, behind API
//! keys (`Authorization: Bearer tth_...`). `{tenant}` is the CRM's external id.
//! One file per resource; [`auth`] holds the caller and the rights a handler
//! names in its signature, [`params`] the path and query types they share.
//! Nothing below imports this file: it only registers the routes.

mod auth;
mod checks;
mod connections;
mod directory;
mod document;
mod errors;
mod events;
mod installs;
mod integrations;
mod links;
mod params;
mod provider_events;
mod proxy;
mod rights;
mod tenants;
mod tokens;

use crate::error::{AppError, Code};
use actix_web::web;
use document::{unrouted, Document};

pub use proxy::ACCOUNT_HEADER;

/// The API's routes, and the OpenAPI document built from the same
/// registrations (`utoipa-actix-web`): a route cannot be served without
/// being documented, nor documented without being served.
pub fn routes(cfg: &mut web::ServiceConfig) {
    let json = |limit: usize| {
        web::JsonConfig::default()
            .limit(limit)
            .error_handler(|e, _| {
                AppError::bad_request(
                    Code::InvalidJson,
                    format!("the request body is not valid JSON: {e}"),
                )
                .into()
            })
    };
    let query = || {
        web::QueryConfig::default().error_handler(|e, _| {
            AppError::bad_request(Code::InvalidQuery, format!("invalid query parameters: {e}"))
                .into()
        })
    };
    let path = || {
        web::PathConfig::default().error_handler(|_, _| AppError::not_found("no such route").into())
    };
    // The hot route first: routes are tried in order.
    let api = utoipa_actix_web::scope("/api/v1")
        .wrap(actix_web::middleware::from_fn(auth::authenticate_first))
        .app_data(json(64 * 1024))
        .app_data(query())
        .app_data(path())
        .service(tokens::token)
        .service(tenants::provision)
        .service(tenants::remove_tenant)
        .service(directory::find_connections)
        .service(connections::list)
        .service(connections::provider_status)
        .service(connections::disconnect)
        .service(tokens::refresh)
        .service(checks::check_connection)
        .service(connections::set_default)
        .service(tokens::locations)
        .service(connections::import)
        .service(connections::private_token)
        .service(links::connect_link)
        .service(links::connect_session)
        // Settings may be 64 KiB themselves: their body may be larger than
        // that, so that an object over the cap gets its own answer.
        .service(
            utoipa_actix_web::scope("/tenants/{tenant}/integrations")
                .app_data(json(integrations::SETTINGS_BODY_LIMIT))
                .service(integrations::get_integration)
                .service(integrations::set_integration)
                .service(integrations::get_account_settings)
                .service(integrations::set_account_settings)
                .default_service(web::to(unrouted)),
        )
        .service(proxy::proxy)
        .service(installs::list_installs)
        .service(installs::assign_install)
        .service(provider_events::held_events)
        .service(events::list_events)
        .service(document::openapi_document)
        .default_service(web::to(unrouted));
    cfg.app_data(web::Data::new(Document::of(&api)))
        .service(api);
}
