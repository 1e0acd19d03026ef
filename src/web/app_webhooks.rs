//! Webhooks a provider sends about its app (not under `/api/v1`: the
//! provider calls them, with its own signature instead of an API key).
//! Errors are JSON (`{"error": {"code", "message"}}`) saying why; the body is
//! never logged.

use crate::app::App;
use crate::connections::app_webhooks;
use crate::error::{AppError, AppResult, Code};
use crate::providers::gohighlevel;
use actix_web::{web, HttpRequest, HttpResponse};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/webhooks/gohighlevel", web::post().to(gohighlevel_webhook));
}

#[derive(serde::Serialize)]
struct Taken<'a> {
    ok: bool,
    message: &'a str,
    disconnected: usize,
    dropped_installs: usize,
}

/// `POST /webhooks/gohighlevel`: GoHighLevel's `INSTALL` and `UNINSTALL`
/// app webhooks, signed with `X-GHL-Signature`.
async fn gohighlevel_webhook(
    req: HttpRequest,
    state: web::Data<App>,
    mut payload: web::Payload,
) -> AppResult<HttpResponse> {
    use futures_util::StreamExt;
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| {
            AppError::bad_request(Code::InvalidWebhook, "the webhook's body could not be read")
        })?;
        if body.len() + chunk.len() > gohighlevel::MAX_BODY {
            return Err(AppError::refused(
                actix_web::http::StatusCode::PAYLOAD_TOO_LARGE,
                Code::InvalidWebhook,
                format!("the webhook's body is over {} bytes", gohighlevel::MAX_BODY),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    let signature = req
        .headers()
        .get(gohighlevel::SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok());
    let done = app_webhooks::gohighlevel(&state, &body, signature).await?;
    Ok(HttpResponse::Ok().json(Taken {
        ok: true,
        message: &done.message,
        disconnected: done.disconnected,
        dropped_installs: done.dropped_installs,
    }))
}
