//! Webhooks a platform sends about its app (not under `/api/v1`: the
//! provider calls them, with its own signature instead of an API key), at
//! `POST /webhooks/{platform}`. The platform verifies and applies them
//! (`platform::Platform::app_webhook`). Errors are JSON
//! (`{"error": {"code", "message"}}`) saying why; the body is never logged.

use crate::app::App;
use crate::error::{AppError, AppResult, Code};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

/// The largest body taken (an app webhook is a small JSON object).
pub const MAX_BODY: usize = 64 * 1024;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/webhooks/{platform}", web::post().to(app_webhook));
}

#[derive(serde::Serialize)]
struct Taken<'a> {
    ok: bool,
    message: &'a str,
    disconnected: usize,
    dropped_installs: usize,
    relayed: &'a str,
}

/// `POST /webhooks/{platform}`: a platform's app webhook (GoHighLevel's
/// `INSTALL` and `UNINSTALL`, signed with its own scheme).
async fn app_webhook(
    req: HttpRequest,
    state: web::Data<App>,
    path: web::Path<String>,
    payload: web::Payload,
) -> AppResult<HttpResponse> {
    let app = state.into_inner();
    let platform = app
        .platforms
        .named(&path)
        .ok_or_else(|| AppError::not_found("no platform takes app webhooks here"))?;
    let body = read_body(payload).await?;
    let done = platform
        .app_webhook(&app, &body, req.headers())
        .ok_or_else(|| AppError::not_found("no platform takes app webhooks here"))?
        .await?;
    Ok(HttpResponse::Ok().json(Taken {
        ok: true,
        message: &done.message,
        disconnected: done.disconnected,
        dropped_installs: done.dropped_installs,
        relayed: done.relayed,
    }))
}

/// The raw body, up to [`MAX_BODY`].
async fn read_body(mut payload: web::Payload) -> AppResult<web::BytesMut> {
    use futures_util::StreamExt;
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| {
            AppError::bad_request(Code::InvalidWebhook, "the webhook's body could not be read")
        })?;
        if body.len() + chunk.len() > MAX_BODY {
            return Err(AppError::refused(
                StatusCode::PAYLOAD_TOO_LARGE,
                Code::InvalidWebhook,
                format!("the webhook's body is over {MAX_BODY} bytes"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
