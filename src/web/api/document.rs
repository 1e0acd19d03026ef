//! The OpenAPI document (`GET /api/v1/openapi.json`), built from the route
//! registrations, and the 404/405 answers for what no route takes.

use crate::connections::relay::ProviderEventPayload;
use crate::db::models::webhook::{EventAccount, EventPayload};
use crate::error::AppError;
use actix_web::http::header;
use actix_web::{get, web, HttpRequest, HttpResponse};

/// The OpenAPI document of the routes above, with what the 405 answers need.
pub struct Document {
    json: bytes::Bytes,
    /// Each documented path, as a pattern, with the methods it takes.
    routes: Vec<(actix_web::dev::ResourceDef, String)>,
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Tether internal API",
        version = "1",
        description = "For the CRM's own services. Authenticate with `Authorization: Bearer <API key>` \
            (created with `tether api-key create`). `{tenant}` is the CRM's external id for the tenant. \
            Errors are `{\"error\": {\"code\", \"message\"}}`: 401 bad key, 403 key not allowed for \
            this tenant, 404 unknown tenant/provider/connection, 409 needs_reconnect, 503 refresh \
            temporarily failing (with Retry-After). A method a path does not take is a 405 with `Allow`."
    ),
    components(schemas(EventPayload, EventAccount, ProviderEventPayload)),
    modifiers(&BearerKeys)
)]
struct Base;

struct BearerKeys;

impl utoipa::Modify for BearerKeys {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.description = Some("tth_... API key".to_string());
        doc.components
            .get_or_insert_with(Default::default)
            .add_security_scheme("apiKey", SecurityScheme::Http(scheme));
    }
}

/// The headers that sign a delivery (`crate::webhooks`).
fn signature_headers() -> serde_json::Value {
    let header = |name: &str, description: &str| {
        serde_json::json!({
            "name": name, "in": "header", "required": true,
            "schema": {"type": "string"}, "description": description,
        })
    };
    serde_json::json!([
        header("webhook-id", "Standard Webhooks: the delivery's id (the payload's `id`), the same on every attempt"),
        header("webhook-timestamp", "Standard Webhooks: unix seconds of this attempt"),
        header("webhook-signature", "Standard Webhooks: `v1,<base64 HMAC-SHA256 of <id>.<timestamp>.<body>>`, one per secret of `TETHER_WEBHOOK_SECRET`, space-separated; a `whsec_` secret's key is its base64"),
        header("Tether-Signature", "The older scheme, with the first secret: `t=<unix seconds>,v1=<hex HMAC-SHA256 of <t>.<body>>`"),
    ])
}

/// The notifications Tether sends to `TETHER_WEBHOOK_URL` (OpenAPI 3.1
/// `webhooks`): one POST per event, its body an `EventPayload`.
fn webhooks() -> serde_json::Value {
    serde_json::json!({
        "event": {
            "post": {
                "summary": "An event",
                "description": "One event, sent to `TETHER_WEBHOOK_URL` as a JSON POST, retried with back-off \
                    (up to 20 attempts) until the receiver answers 2xx. Signed as Standard Webhooks defines: verify it with \
                    any of its libraries (the older `Tether-Signature` is sent too). Every event names the \
                    connection's `account` and the CRM's `tags` of its connect, when it has them.",
                "parameters": signature_headers(),
                "requestBody": {
                    "required": true,
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/EventPayload"}
                        }
                    }
                },
                "responses": {
                    "2XX": {"description": "Received; any other answer is retried"}
                }
            }
        },
        "provider_event": {
            "post": {
                "summary": "A provider's app event, relayed",
                "description": "A verified app webhook of a provider (a message a client received, ...), sent to \
                    `TETHER_RELAY_URL` (else `TETHER_WEBHOOK_URL`) once Tether acted on it, signed like an event. \
                    An account's events arrive in order; one for an account no tenant holds waits until a tenant does.",
                "parameters": signature_headers(),
                "requestBody": {
                    "required": true,
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/ProviderEventPayload"}
                        }
                    }
                },
                "responses": {
                    "2XX": {"description": "Received; any other answer is retried"}
                }
            }
        }
    })
}

/// The methods an OpenAPI path item may hold, as its keys.
const OPERATION_KEYS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// OpenAPI asks every operation for an operationId of its own, which client
/// generators turn into function names, and groups operations by tag. One
/// handler that serves several methods (the proxy) would give them all its
/// name: each gets its method appended (`proxy_get`). Each operation is
/// tagged by the resource its path names (`connections`, `proxy`, ...).
fn name_and_tag(doc: &mut serde_json::Value) {
    let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) else {
        return;
    };
    let mut seen: std::collections::HashMap<String, usize> = Default::default();
    for item in paths.values() {
        for key in OPERATION_KEYS {
            if let Some(id) = item.get(key).and_then(|op| op["operationId"].as_str()) {
                *seen.entry(id.to_string()).or_default() += 1;
            }
        }
    }
    for (path, item) in paths.iter_mut() {
        let tag = resource_of(path);
        for key in OPERATION_KEYS {
            let Some(op) = item.get_mut(key).and_then(|op| op.as_object_mut()) else {
                continue;
            };
            if let Some(id) = op.get("operationId").and_then(|v| v.as_str()) {
                if seen.get(id).copied().unwrap_or(0) > 1 {
                    let unique = format!("{id}_{key}");
                    op.insert("operationId".into(), unique.into());
                }
            }
            op.insert("tags".into(), serde_json::json!([tag]));
            describe_bytes(op, key);
        }
    }
}

/// What a generator needs to describe bytes passed on as they are (the
/// proxy's bodies): a GET or HEAD takes no body; a request body is JSON or
/// bytes (any other content type is passed on too, undescribed), and a
/// content is never left without a schema (for which generators skip the
/// operation).
fn describe_bytes(op: &mut serde_json::Map<String, serde_json::Value>, method: &str) {
    if matches!(method, "get" | "head") {
        op.remove("requestBody");
    }
    let with_schemas = |holder: &mut serde_json::Value| {
        let Some(content) = holder.get_mut("content").and_then(|c| c.as_object_mut()) else {
            return;
        };
        for media in content.values_mut().filter_map(|m| m.as_object_mut()) {
            media
                .entry("schema")
                .or_insert_with(|| serde_json::json!({ "type": "string", "format": "binary" }));
        }
    };
    if let Some(body) = op.get_mut("requestBody") {
        // Any content type is passed on; generators take these two (not
        // `*/*`), which cover what a service sends: JSON, or bytes.
        if body.get("content").is_some_and(|c| c.get("*/*").is_some()) {
            body["content"] = serde_json::json!({
                "application/json": { "schema": {} },
                "application/octet-stream": {},
            });
        }
        with_schemas(body);
    }
    // An answer with content but no schema is bytes. A pass-through answer
    // (the proxy's `default`) stays without content: it is the provider's,
    // of any type or none, as its description says.
    let responses = op.get_mut("responses").and_then(|r| r.as_object_mut());
    for answer in responses.into_iter().flat_map(|r| r.values_mut()) {
        with_schemas(answer);
    }
}

/// The resource a path names: the segment after `/tenants/{tenant}/`, or
/// the first one after the API's prefix (`tenants` for a tenant itself).
fn resource_of(path: &str) -> String {
    let segments: Vec<&str> = path
        .trim_start_matches("/api/v1")
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    match segments.as_slice() {
        ["tenants", "{tenant}", next, ..] if !next.starts_with('{') => next.to_string(),
        [first, ..] => first.to_string(),
        [] => "api".into(),
    }
}

impl Document {
    pub(super) fn of<T>(api: &utoipa_actix_web::scope::Scope<T>) -> Document {
        use utoipa::OpenApi;
        use utoipa_actix_web::OpenApiFactory;
        let mut doc = Base::openapi();
        doc.paths.merge(api.paths());
        let mut schemas = Vec::new();
        api.schemas(&mut schemas);
        doc.components
            .get_or_insert_with(Default::default)
            .schemas
            .extend(schemas);
        let routes = doc
            .paths
            .paths
            .iter()
            .map(|(p, item)| {
                let methods = [
                    ("GET", &item.get),
                    ("PUT", &item.put),
                    ("POST", &item.post),
                    ("DELETE", &item.delete),
                    ("PATCH", &item.patch),
                    ("HEAD", &item.head),
                    ("OPTIONS", &item.options),
                ];
                let allow: Vec<&str> = methods
                    .iter()
                    .filter(|(_, op)| op.is_some())
                    .map(|(m, _)| *m)
                    .collect();
                // `{path}` is the proxy's tail: it spans segments.
                let pattern = p.replace("{path}", "{path:.*}");
                (actix_web::dev::ResourceDef::new(pattern), allow.join(", "))
            })
            .collect();
        let mut value = serde_json::to_value(&doc).expect("the OpenAPI document serialises");
        name_and_tag(&mut value);
        // utoipa 5 has no `webhooks` (OpenAPI 3.1): added to the JSON.
        value["webhooks"] = webhooks();
        let json = serde_json::to_string_pretty(&value).expect("the OpenAPI document serialises");
        Document {
            json: bytes::Bytes::from(json),
            routes,
        }
    }

    /// The methods a documented path takes, or `None` for an unknown path.
    fn allowed(&self, path: &str) -> Option<&str> {
        self.routes
            .iter()
            .find(|(def, _)| def.is_match(path))
            .map(|(_, allow)| allow.as_str())
    }
}

/// Anything under `/api/v1` that no route took: 405 (with `Allow`) for a
/// method a documented path does not take, else 404.
pub(super) async fn unrouted(req: HttpRequest, doc: web::Data<Document>) -> HttpResponse {
    let err = match doc.allowed(req.path()) {
        Some(allow) => {
            let mut res =
                actix_web::ResponseError::error_response(&AppError::method_not_allowed(format!(
                    "{} does not take {}; it takes {allow}",
                    req.path(),
                    req.method()
                )));
            res.headers_mut().insert(
                header::ALLOW,
                header::HeaderValue::from_str(allow).expect("method names are ASCII"),
            );
            return res;
        }
        None => AppError::not_found("there is nothing at this address"),
    };
    actix_web::ResponseError::error_response(&err)
}

/// Where the document is served (no key needed).
pub(super) const DOCUMENT_PATH: &str = "/api/v1/openapi.json";

/// This document
#[utoipa::path(responses((status = 200, description = "The OpenAPI document", content_type = "application/json")))]
#[get("/openapi.json")]
pub(super) async fn openapi_document(doc: web::Data<Document>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(doc.json.clone())
}
