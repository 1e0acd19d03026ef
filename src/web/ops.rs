//! Operations endpoints: liveness, readiness, and the static files.

use crate::app::App;
use crate::crypto::sha256_hex;
use crate::db::models::connection::Connection;
use crate::db::models::provider_flag::ProviderFlag;
use crate::error::AppError;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use diesel::connection::SimpleConnection;

/// How long `/readyz` waits for a database connection.
const READY_PATIENCE: std::time::Duration = std::time::Duration::from_secs(1);

/// Liveness: constant, no I/O.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body("ok\n")
}

/// Readiness: the database answers and no ring key is a different key than
/// the one that wrote under its id. Providers that rejected our client
/// credentials are reported, but do not make the instance unready (every
/// other provider still works through it); so are rows sealed with a key
/// this ring lacks (only those rows fail here, as during a key rollout done
/// out of order) and live instances that disagree on keys (`warnings`).
///
/// A failure names the check (`failed_check`) with a fixed reason: the
/// database's own error text goes to the log only (it can name hosts, users
/// and tables). The key check's reason is Tether's own and names the key id.
pub async fn readyz(state: web::Data<App>) -> HttpResponse {
    let (pool, health, keys) = (state.pool.clone(), state.health.clone(), state.keys.clone());
    let result = web::block(move || ready_check(&pool, &health, &keys))
        .await
        .unwrap_or_else(|e| {
            log::warn!("not ready: the check did not run: {e}");
            Err(Failed::Database)
        });
    let mut res = match &result {
        Ok(_) => HttpResponse::Ok(),
        Err(_) => HttpResponse::ServiceUnavailable(),
    };
    res.insert_header((header::CACHE_CONTROL, "no-store"));
    match result {
        Ok((flags, mut warnings)) => {
            let disagreements = state.disagreements.lock().expect("disagreements");
            warnings.extend(disagreements.iter().cloned());
            res.json(serde_json::json!({
                "status": "ready",
                "checks": { "database": "ok", "encryption_keys": "ok" },
                "misconfigured_providers": misconfigured(flags),
                "warnings": warnings,
            }))
        }
        Err(failed) => res.json(unavailable(failed)),
    }
}

/// The readiness checks, on a blocking thread: the database answers (within
/// a second, so that a balancer hears of an outage at once), and the key
/// ring opens what is stored. Answers the flagged providers and warnings.
fn ready_check(
    pool: &crate::db::Pool,
    health: &crate::db::health::Health,
    keys: &crate::crypto::KeyRing,
) -> Result<(Vec<ProviderFlag>, Vec<String>), Failed> {
    let database = |e: &dyn std::fmt::Display| {
        log::warn!("not ready: database: {e}");
        Failed::Database
    };
    let mut conn = crate::db::checkout(pool, health, READY_PATIENCE).map_err(|e| {
        health.down(&e);
        database(&e)
    })?;
    if let Err(e) = conn.batch_execute("SELECT 1") {
        crate::db::poison(&mut conn);
        health.down(&e);
        return Err(database(&e));
    }
    health.reached();
    let mut warnings = Vec::new();
    for finding in crate::keys::findings(&mut conn, keys).map_err(|e| database(&e))? {
        match finding {
            crate::keys::Finding::WrongKey(_) => {
                log::warn!("not ready: encryption keys: {finding}");
                return Err(Failed::EncryptionKeys(finding.to_string()));
            }
            crate::keys::Finding::MissingKey(_) => warnings.push(finding.to_string()),
        }
    }
    let flags = ProviderFlag::all(&mut conn).map_err(|e| database(&e))?;
    Ok((flags, warnings))
}

/// `/readyz`'s body for a failed check: which, why, and which did not run.
fn unavailable(failed: Failed) -> serde_json::Value {
    let (check, reason) = match failed {
        Failed::Database => (
            "database",
            "the database did not answer a query; the log has the details".to_string(),
        ),
        Failed::EncryptionKeys(why) => ("encryption_keys", why),
    };
    let mut checks = serde_json::Map::new();
    checks.insert("database".into(), "ok".into());
    checks.insert("encryption_keys".into(), "not_run".into());
    checks.insert(check.into(), "failed".into());
    serde_json::json!({
        "status": "unavailable",
        "failed_check": check,
        "reason": reason,
        "checks": checks,
    })
}

/// Which readiness check failed.
enum Failed {
    /// The pool, the connection or a query: the cause is only logged.
    Database,
    /// The key ring does not open the stored data: Tether's own finding.
    EncryptionKeys(String),
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
/// With `TETHER_METRICS_TOKEN` set, only a scraper presenting it as a bearer
/// token is answered; anything else is a 401 that reveals nothing.
pub async fn metrics(state: web::Data<App>, req: HttpRequest) -> HttpResponse {
    if let Some(refused) = refused_without_metrics_token(&state, &req) {
        return refused;
    }
    let counts = state
        .db(|c| {
            Ok((
                Connection::count_by_status(c)?,
                ProviderFlag::all(c)?,
                crate::db::models::webhook::backlog(c)?,
            ))
        })
        .await;
    // While the database is away the process's own figures (held token
    // sets, answers from memory) matter most: served without the counts.
    let (statuses, flags, backlog) = match counts {
        Ok((statuses, flags, backlog)) => (statuses, flags, Some(backlog)),
        Err(e) if e.is(crate::error::Code::DatabaseUnavailable) => Default::default(),
        Err(e) => return actix_web::ResponseError::error_response(&e),
    };
    let circuits: Vec<(String, &str)> = state
        .breakers
        .states()
        .into_iter()
        .map(|(p, s)| (p, s.as_str()))
        .collect();
    let flags: Vec<String> = flags.into_iter().map(|f| f.provider).collect();
    let (up, coherent) = (state.health.is_up(), state.tokens.is_coherent());
    let body = state
        .metrics
        .render(&circuits, &statuses, &flags, backlog, up, coherent);
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(body)
}

/// With `TETHER_METRICS_TOKEN` set, the 401 for a request that does not
/// present it as a bearer token; `None`: go on.
fn refused_without_metrics_token(state: &App, req: &HttpRequest) -> Option<HttpResponse> {
    let expected = state.settings.metrics_token.as_ref()?;
    if bearer_matches(req, expected.expose()) {
        return None;
    }
    let mut res = actix_web::ResponseError::error_response(&AppError::unauthorized(
        "this route needs the bearer token set in TETHER_METRICS_TOKEN",
    ));
    res.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer realm=\"metrics\""),
    );
    Some(res)
}

/// Each enabled provider's health as this process sees it: its circuit, the
/// transient failures in a row, whether it is flagged misconfigured (since
/// when, and the provider's error code), and this process's last refresh
/// success and failure (kept in memory: no scan of the connections table).
/// Behind `TETHER_METRICS_TOKEN`, as `/metrics`: it tells which providers are
/// configured and how they fare, which a balancer does not need. While the
/// database is away the in-memory facts are still served, flags unknown.
pub async fn provider_health(state: web::Data<App>, req: HttpRequest) -> HttpResponse {
    if let Some(refused) = refused_without_metrics_token(&state, &req) {
        return refused;
    }
    let flags = match state.db(|c| Ok(ProviderFlag::all(c)?)).await {
        Ok(flags) => Some(flags),
        Err(e) if e.is(crate::error::Code::DatabaseUnavailable) => None,
        Err(e) => return actix_web::ResponseError::error_response(&e),
    };
    let providers: serde_json::Map<String, serde_json::Value> = state
        .providers
        .all()
        .filter(|p| p.enabled())
        .map(|p| {
            (
                p.key.to_string(),
                provider_view(&state, p, flags.as_deref()),
            )
        })
        .collect();
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(serde_json::json!({
            "database": if flags.is_some() { "ok" } else { "unavailable" },
            "providers": providers,
        }))
}

/// One provider as `/readyz/providers` shows it (`flags`: `None` while the
/// database is away).
fn provider_view(
    state: &App,
    p: &crate::providers::Provider,
    flags: Option<&[ProviderFlag]>,
) -> serde_json::Value {
    let iso =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let key = p.key.as_str();
    let (circuit, failures, next_probe) = state.breakers.health(key);
    let flag = flags.and_then(|f| f.iter().find(|f| f.provider == key));
    let activity = state.metrics.activity(key);
    let status = if flag.is_some() {
        "misconfigured"
    } else if circuit != crate::app::circuit::State::Closed {
        "circuit_open"
    } else if failures > 0 {
        "failing"
    } else {
        "ok"
    };
    serde_json::json!({
        "status": status,
        "circuit": circuit.as_str(),
        "consecutive_failures": failures,
        "next_probe_in_secs": next_probe,
        "misconfigured": flag.map(|f| serde_json::json!({
            "error": f.error,
            "since": iso(f.flagged_at.and_utc()),
        })),
        "last_success": activity.last_success.map(iso),
        "last_failure": activity.last_failure.map(|(at, outcome)| serde_json::json!({
            "at": iso(at),
            "outcome": outcome.as_str(),
        })),
    })
}

/// Whether the request carries `Authorization: Bearer <expected>`. Both sides
/// are hashed first, so the comparison takes the same time whatever the
/// presented value's length or how much of it matches.
fn bearer_matches(req: &HttpRequest, expected: &str) -> bool {
    use subtle::ConstantTimeEq;
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .unwrap_or("");
    let a = sha256_hex(presented.trim().as_bytes());
    let b = sha256_hex(expected.as_bytes());
    !presented.is_empty() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// The stylesheet and the small scripts, compiled into the binary.
/// `connect.js` is included by the CRM's pages on other origins: it says
/// so (`Cross-Origin-Resource-Policy`), for pages that require it.
/// The static files, built into the binary: (body, content type).
const STATIC_FILES: [(&str, &str, &str); 4] = [
    (
        "style.css",
        include_str!("../../static/style.css"),
        "text/css; charset=utf-8",
    ),
    (
        "app.js",
        include_str!("../../static/app.js"),
        "text/javascript; charset=utf-8",
    ),
    (
        "popup.js",
        include_str!("../../static/popup.js"),
        "text/javascript; charset=utf-8",
    ),
    (
        "connect.js",
        include_str!("../../static/connect.js"),
        "text/javascript; charset=utf-8",
    ),
];

pub async fn static_file(path: web::Path<String>) -> HttpResponse {
    let Some((name, body, content_type)) =
        STATIC_FILES.iter().find(|(n, _, _)| *n == path.as_str())
    else {
        return HttpResponse::NotFound()
            .content_type("text/plain; charset=utf-8")
            .body("not found\n");
    };
    let mut res = HttpResponse::Ok();
    res.content_type(*content_type)
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"));
    if *name == "connect.js" {
        res.insert_header(("Cross-Origin-Resource-Policy", "cross-origin"));
    }
    res.body(*body)
}
