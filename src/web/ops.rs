//! Operations endpoints: liveness, readiness, and the stylesheet.

use crate::app::App;
use crate::db::models::connection::Connection;
use crate::db::models::provider_flag::ProviderFlag;
use actix_web::http::header;
use actix_web::{web, HttpResponse};
use diesel::connection::SimpleConnection;

/// Liveness: constant, no I/O.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body("ok\n")
}

/// Readiness: the database answers and the key ring opens the data. Providers
/// that rejected our client credentials are reported, but do not make the
/// instance unready (every other provider still works through it).
pub async fn readyz(state: web::Data<App>) -> HttpResponse {
    let pool = state.pool.clone();
    let keys = state.keys.clone();
    let result = web::block(move || -> Result<Vec<ProviderFlag>, String> {
        let mut conn = pool
            .get()
            .map_err(|e| format!("database unreachable: {e}"))?;
        conn.batch_execute("SELECT 1")
            .map_err(|e| format!("database unreachable: {e}"))?;
        crate::keys::verify(&mut conn, &keys)?;
        ProviderFlag::all(&mut conn).map_err(|e| format!("database error: {e}"))
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r);
    let mut res = match &result {
        Ok(_) => HttpResponse::Ok(),
        Err(reason) => {
            log::warn!("not ready: {reason}");
            HttpResponse::ServiceUnavailable()
        }
    };
    res.insert_header((header::CACHE_CONTROL, "no-store"));
    match result {
        Ok(flags) => res.json(serde_json::json!({
            "status": "ready",
            "misconfigured_providers": misconfigured(flags),
        })),
        Err(reason) => res.json(serde_json::json!({ "status": "unavailable", "reason": reason })),
    }
}

/// Providers whose client credentials were rejected, each with why.
fn misconfigured(flags: Vec<ProviderFlag>) -> serde_json::Map<String, serde_json::Value> {
    flags
        .into_iter()
        .map(|f| {
            let why = format!("rejected Tether's client credentials: {}", f.error);
            (f.provider, why.into())
        })
        .collect()
}

/// Prometheus text: refreshes, latencies, circuits, connections by status.
pub async fn metrics(state: web::Data<App>) -> HttpResponse {
    let counts = state
        .db(|c| Ok((Connection::count_by_status(c)?, ProviderFlag::all(c)?)))
        .await;
    let (statuses, flags) = match counts {
        Ok(v) => v,
        Err(e) => return actix_web::ResponseError::error_response(&e),
    };
    let circuits: Vec<(String, &str)> = state
        .breakers
        .states()
        .into_iter()
        .map(|(p, s)| (p, s.as_str()))
        .collect();
    let flags: Vec<String> = flags.into_iter().map(|f| f.provider).collect();
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render(&circuits, &statuses, &flags))
}

/// The stylesheet and the two small scripts, compiled into the binary.
pub async fn static_file(path: web::Path<String>) -> HttpResponse {
    let (body, content_type) = match path.as_str() {
        "style.css" => (
            include_str!("../../static/style.css"),
            "text/css; charset=utf-8",
        ),
        "app.js" => (
            include_str!("../../static/app.js"),
            "text/javascript; charset=utf-8",
        ),
        "popup.js" => (
            include_str!("../../static/popup.js"),
            "text/javascript; charset=utf-8",
        ),
        _ => {
            return HttpResponse::NotFound()
                .content_type("text/plain; charset=utf-8")
                .body("not found\n")
        }
    };
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .body(body)
}
