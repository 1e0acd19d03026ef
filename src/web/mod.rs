//! HTTP routes by area; handlers stay thin and call into the domain.

pub mod ops;

use crate::config::Settings;
use crate::crypto::KeyRing;
use crate::db::{DbConn, Pool};
use crate::error::{AppError, AppResult, PageError};
use crate::providers::Catalogue;
use crate::startup::Context;
use actix_web::{web, HttpRequest, HttpResponse};
use std::sync::Arc;

/// Shared by every handler.
pub struct AppState {
    pub settings: Arc<Settings>,
    pub pool: Pool,
    pub keys: Arc<KeyRing>,
    pub providers: Arc<Catalogue>,
}

impl AppState {
    pub fn new(ctx: Context) -> AppState {
        AppState {
            settings: ctx.settings,
            pool: ctx.pool,
            keys: ctx.keys,
            providers: ctx.providers,
        }
    }

    /// Runs blocking database work on the thread pool.
    pub async fn db<T, F>(&self, f: F) -> AppResult<T>
    where
        F: FnOnce(&mut DbConn) -> AppResult<T> + Send + 'static,
        T: Send + 'static,
    {
        let pool = self.pool.clone();
        web::block(move || {
            let mut conn = pool.get()?;
            f(&mut conn)
        })
        .await?
    }
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(ops::healthz))
        .route("/readyz", web::get().to(ops::readyz))
        .route("/static/style.css", web::get().to(ops::stylesheet))
        .configure(crate::demo::routes)
        .default_service(web::to(not_found));
}

/// Unknown routes: JSON under `/api`, a page elsewhere.
async fn not_found(req: HttpRequest) -> Result<HttpResponse, PageError> {
    let err = AppError::not_found("there is nothing at this address");
    if req.path().starts_with("/api/") {
        Ok(actix_web::ResponseError::error_response(&err))
    } else {
        Err(PageError(err))
    }
}
