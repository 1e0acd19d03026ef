//! One line per request (target `tether::access`), and its count by status
//! class for `/metrics`: method, path (as
//! `loggable_path` shows it), status and duration, then the client's address
//! (behind trusted proxies, the client they forwarded for), the request id
//! and the tenant's external id where the request names one. Probes
//! (`/healthz`, `/readyz`, `/metrics`) log at debug: a balancer polling every
//! second would otherwise drown the rest.
//!
//! The request id is the `X-Request-Id` a proxy sent (nginx's `$request_id`,
//! say) when it is 1 to 64 letters, digits, `-`, `_` or `.`, else a new
//! random one; it is sent back in `X-Request-Id`, so that a caller quoting
//! it finds the line.

use super::http::{client_ip, loggable_path};
use crate::app::App;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage};
use std::time::Instant;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The tenant a request acts for, by external id, once a handler or an
/// extractor knows it (a signed-in admin's tenant): for the request line.
#[derive(Clone)]
pub struct LogTenant(pub String);

/// The middleware: see the module's documentation.
pub async fn access_log(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let id = request_id(&req);
    let app = req.app_data::<web::Data<App>>().cloned();
    let level = match req.path() {
        "/healthz" | "/readyz" | "/readyz/providers" | "/metrics" => log::Level::Debug,
        _ => log::Level::Info,
    };
    // What the line needs, read only when it is written (the token route is
    // the hot path, and an operator may filter request lines out).
    let line = log::log_enabled!(target: "tether::access", level).then(|| Line::of(&req));
    // No clone of the request is held meanwhile: actix needs it unshared.
    let mut result = next.call(req).await;
    let status = stamp(&mut result, &id);
    if let Some(app) = &app {
        app.metrics.http_response(status);
    }
    if let Some(line) = line {
        let tenant = result
            .as_ref()
            .ok()
            .and_then(|res| res.request().extensions().get::<LogTenant>().cloned());
        line.write(level, status, started, &id, tenant);
    }
    result
}

/// Sends the request id back with the response; answers the status.
fn stamp<B>(result: &mut Result<ServiceResponse<B>, actix_web::Error>, id: &str) -> u16 {
    match result {
        Ok(res) => {
            if let Ok(value) = HeaderValue::from_str(id) {
                res.headers_mut().insert(REQUEST_ID, value);
            }
            res.status()
        }
        // An error no layer turned into a response yet: answered with its status.
        Err(e) => e.as_response_error().status_code(),
    }
    .as_u16()
}

/// The proxy's request id when it is one, else a new one.
fn request_id(req: &ServiceRequest) -> String {
    req.headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| valid_request_id(v))
        .map(str::to_string)
        .unwrap_or_else(|| hex::encode(crate::crypto::random_bytes(8)))
}

/// What a request line says of the request, read before it is handled.
struct Line {
    client: String,
    method: String,
    path: String,
}

impl Line {
    fn of(req: &ServiceRequest) -> Line {
        let app = req.app_data::<web::Data<App>>();
        let trusted = app.map_or(&[][..], |app| &app.settings.trusted_proxies[..]);
        Line {
            client: client_ip(req.request(), trusted)
                .map_or_else(|| "unknown".into(), |ip| ip.to_string()),
            method: req.method().to_string(),
            path: loggable_path(req.path()),
        }
    }

    /// Writes the line, with the tenant a handler named, else the one the
    /// path names.
    fn write(
        self,
        level: log::Level,
        status: u16,
        started: Instant,
        id: &str,
        tenant: Option<LogTenant>,
    ) {
        let Line {
            client,
            method,
            path,
        } = self;
        let ms = format!("{:.1}", started.elapsed().as_secs_f64() * 1000.0);
        let tenant = tenant
            .map(|t| t.0)
            .or_else(|| api_tenant(&path))
            .unwrap_or_else(|| "-".into());
        log::log!(
            target: "tether::access",
            level,
            method = method.as_str(),
            path = path.as_str(),
            status = status,
            ms = ms.as_str(),
            client = client.as_str(),
            request_id = id,
            tenant = tenant.as_str();
            "{method} {path} {status} {ms}ms"
        );
    }
}

fn valid_request_id(v: &str) -> bool {
    (1..=64).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The `{tenant}` of an internal API path (`/api/v1/tenants/{tenant}/...`).
fn api_tenant(path: &str) -> Option<String> {
    let rest = path.strip_prefix("/api/v1/tenants/")?;
    let tenant = rest.split('/').next().filter(|t| !t.is_empty())?;
    // Percent-encoded or odd bytes stay out of the line; the path shows them.
    tenant
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
        .then(|| tenant.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tenant_of_an_api_path_and_the_request_ids_taken_from_a_proxy() {
        assert_eq!(
            api_tenant("/api/v1/tenants/acme/connections/x/token").as_deref(),
            Some("acme")
        );
        assert_eq!(api_tenant("/api/v1/tenants/a%0Ab/x"), None);
        assert_eq!(api_tenant("/settings"), None);
        assert!(valid_request_id("7f2c9a1e-42"));
        assert!(!valid_request_id(""));
        assert!(!valid_request_id("a b"));
        assert!(!valid_request_id(&"a".repeat(65)));
    }
}
