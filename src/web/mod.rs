//! HTTP routes by area; handlers stay thin and call into the domain.

pub mod access_log;
pub mod activity;
pub mod api;
pub mod app_webhooks;
pub mod forwarded;
pub mod http;
pub mod oauth;
pub mod ops;
pub mod pages;
pub mod session;
pub mod when;

use crate::error::{AppError, Code, PageError};
use actix_web::web;
pub use http::loggable_path;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.app_data(http::form_config(16 * 1024))
        .app_data(web::QueryConfig::default().error_handler(|e, _| {
            PageError(AppError::bad_request(
                Code::InvalidQuery,
                format!("the address has invalid parameters: {e}"),
            ))
            .into()
        }))
        .route("/healthz", web::get().to(ops::healthz))
        .route("/readyz", web::get().to(ops::readyz))
        .route("/readyz/providers", web::get().to(ops::provider_health))
        .route("/metrics", web::get().to(ops::metrics))
        .route("/static/{file}", web::get().to(ops::static_file))
        // The internal API first: the token route is the hot path, and every
        // route registered before it is a pattern tried on each of its requests.
        // (The areas' paths do not overlap, so the order changes nothing else.)
        .configure(api::routes)
        .configure(pages::routes)
        .configure(activity::routes)
        .configure(oauth::routes)
        .configure(app_webhooks::routes)
        .configure(crate::demo::routes)
        .default_service(web::to(http::not_found));
}
