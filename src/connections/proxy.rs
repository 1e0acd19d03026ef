//! Calling a provider's API with a tenant's token: the path stays under the
//! provider's API base, the token is attached (refreshed first when it is
//! about to expire, and once more on a 401), and only a few headers pass
//! either way. A provider's redirect is never followed nor passed on (its
//! `Location` could send the caller, or a token, anywhere), and a response
//! body is read only up to `TETHER_PROXY_MAX_BODY_BYTES`. Every call spends
//! the provider's per-account budgets first (`super::budget`), and an
//! idempotent call the provider answers 429 or 503 with a `Retry-After` is
//! retried after it, within `TETHER_PROXY_RETRY_*`.

use crate::app::App;
use crate::db::models::event::Actor;
use crate::error::{AppError, AppResult, Code};
use crate::ids::{AccountId, ConnectionId, TenantId};
use crate::providers::Provider;
use reqwest::header::{HeaderMap, HeaderName};
use reqwest::{Method, StatusCode};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The response header telling the caller how many times the proxy
/// retried its call (`0` when it did not), on every answer of the provider.
pub const RETRIES_HEADER: &str = "tether-proxy-retries";

/// Headers passed to the provider: nothing that identifies the caller to
/// Tether (its API key) or carries cookies.
pub const FORWARD_REQUEST: [&str; 3] = ["content-type", "accept", "accept-language"];
/// Headers passed back from the provider, with its rate-limit headers (see
/// [`passes_back`]). Not `location`: redirects are refused (see
/// [`forward`]), and a 201's `Location` names the provider's URL, not one
/// the caller can use through the proxy.
pub const FORWARD_RESPONSE: [&str; 3] = ["content-type", "retry-after", "etag"];

/// Usage headers that are not named `ratelimit`: Meta's Graph API
/// (Instagram) reports its budget in these.
const USAGE_HEADERS: [&str; 2] = ["x-app-usage", "x-business-use-case-usage"];

/// Whether a header of the provider's answer is passed back: the few of
/// [`FORWARD_RESPONSE`], and what a caller needs to pace itself: the IETF
/// `RateLimit`/`RateLimit-Policy` fields and the `X-RateLimit-*` family, in
/// every platform's spelling (`X-HubSpot-RateLimit-Remaining`, GoHighLevel's
/// `X-RateLimit-Daily-Remaining`, Calendly's `X-RateLimit-Reset`, ...).
pub fn passes_back(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    FORWARD_RESPONSE.contains(&name.as_str())
        || USAGE_HEADERS.contains(&name.as_str())
        || name.starts_with("ratelimit")
        || name.starts_with("x-ratelimit")
        || name.contains("-ratelimit")
}

/// A call to forward: the part of the path after the provider, the query
/// string verbatim, the headers of [`FORWARD_REQUEST`] and the body.
pub struct Call {
    pub method: reqwest::Method,
    pub tail: String,
    pub query: String,
    pub headers: HeaderMap,
    pub body: bytes::Bytes,
}

/// The provider's answer, as passed back: status, the headers that
/// [`passes_back`], body (at most the configured size). Never a redirect.
pub struct Answer {
    /// The connection whose token the call carried.
    pub connection_id: ConnectionId,
    pub status: u16,
    pub headers: HeaderMap,
    pub body: bytes::Bytes,
    /// How many times the call was retried after a 429 or 503.
    pub retries: u32,
}

/// Whether sending a request twice has the effect of sending it once
/// (RFC 9110 section 9.2.2): only these are retried. A POST or PATCH is
/// never sent again: the first may have been done.
pub fn idempotent(method: &Method) -> bool {
    [
        Method::GET,
        Method::HEAD,
        Method::PUT,
        Method::DELETE,
        Method::OPTIONS,
    ]
    .contains(method)
}

/// The wait a provider's `Retry-After` asks for (RFC 9110 section 10.2.3):
/// delta-seconds, or an HTTP-date (a past date is no wait). `None` without
/// one, or with one that reads as neither.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return value.parse::<u64>().ok().map(Duration::from_secs);
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// How long to wait before retrying an answer, if it is retried: a 429 or
/// a 503 whose `Retry-After` fits in `left` (what remains of
/// `TETHER_PROXY_RETRY_MAX_WAIT_SECS`). A 503 without one is not retried:
/// the provider is struggling and did not say for how long, a retry at a
/// guess only adds to its load, and the caller, who gets the 503 at once,
/// knows best whether its work can wait.
fn retry_wait(status: StatusCode, headers: &HeaderMap, left: Duration) -> Option<Duration> {
    if status != StatusCode::TOO_MANY_REQUESTS && status != StatusCode::SERVICE_UNAVAILABLE {
        return None;
    }
    retry_after(headers, SystemTime::now()).filter(|wait| *wait <= left)
}

/// Forwards `call` to the provider's API for the tenant's account (`None`:
/// the default), with its access token, once the provider's budgets for
/// the account are spent (a spent one is a 429 `provider_budget_spent`);
/// on a 401, refreshes once and retries once; on a 429 or 503 with a
/// `Retry-After`, an idempotent call waits and is sent again (see
/// [`retry_wait`]), at most `TETHER_PROXY_RETRY_MAX` times. A 3xx answer (other than 304) is a 502
/// `provider_redirected`; a body over the configured cap is a 502
/// `provider_response_too_large`, and no more of it is read.
pub async fn forward(
    app: &Arc<App>,
    tenant_id: &TenantId,
    provider: &Arc<Provider>,
    account: Option<&AccountId>,
    actor: &Actor,
    call: Call,
) -> AppResult<Answer> {
    let base = provider.api_base_url.clone().ok_or_else(|| {
        AppError::not_found(format!(
            "{} has no API base URL to proxy to",
            provider.display_name
        ))
    })?;
    let url = target(&base, &call.tail, &call.query)?;
    let send = |access: String| {
        let mut headers = HeaderMap::new();
        for name in FORWARD_REQUEST {
            if let Some(v) = call.headers.get(name) {
                headers.insert(HeaderName::from_static(name), v.clone());
            }
        }
        // The provider's fixed API headers (validated when it was loaded).
        for (name, value) in &provider.api_headers {
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name.as_bytes()),
                reqwest::header::HeaderValue::from_str(value),
            ) {
                headers.insert(n, v);
            }
        }
        app.http
            .request(call.method.clone(), url.clone())
            .bearer_auth(access)
            .headers(headers)
            .body(call.body.clone())
            .send()
    };
    let unreachable = |e: reqwest::Error| {
        let cause = crate::error::chain(&e.without_url());
        AppError::bad_gateway(
            Code::ProviderUnreachable,
            format!("{} did not answer ({cause})", provider.display_name),
        )
        .with_cause(cause)
    };
    let opened = crate::refresh::fresh_token(app, tenant_id, provider, account, 30).await?;
    let row = &opened.row;
    let account_id = row.account_id.as_str();
    super::budget::spend(app, provider, account_id).await?;
    let mut access = opened.tokens.access_token.expose().clone();
    let mut res = send(access.clone()).await.map_err(unreachable)?;
    if res.status() == reqwest::StatusCode::UNAUTHORIZED {
        // The provider no longer takes this token: refresh once, retry once.
        log::info!(
            "proxy got 401 tenant={tenant_id} provider={}; refreshing once",
            provider.key
        );
        // If another request refreshed meanwhile, its token is the one to retry with.
        let seen = crate::refresh::Seen::of(row);
        let fresh = crate::refresh::refresh_now(app, &row.id, actor, Some(seen)).await?;
        let tokens = fresh
            .tokens(&app.keys)?
            .ok_or_else(AppError::not_connected)?;
        access = tokens.access_token.expose().clone();
        super::budget::spend(app, provider, account_id).await?;
        res = send(access.clone()).await.map_err(unreachable)?;
    }
    let retry = app.settings.proxy_retry;
    let (mut retries, mut waited) = (0, Duration::ZERO);
    while retries < retry.max && idempotent(&call.method) {
        let left = retry.max_wait.saturating_sub(waited);
        let Some(wait) = retry_wait(res.status(), res.headers(), left) else {
            break;
        };
        log::info!(
            "proxy: provider {} answered {}; retrying in {} ms",
            provider.key,
            res.status().as_u16(),
            wait.as_millis()
        );
        tokio::time::sleep(wait).await;
        waited += wait;
        // A retry spends the budgets like any call; without room, the
        // provider's answer goes back as it came.
        match super::budget::spend(app, provider, account_id).await {
            Ok(()) => {}
            Err(e) if e.is(Code::ProviderBudgetSpent) => break,
            Err(e) => return Err(e),
        }
        res = send(access.clone()).await.map_err(unreachable)?;
        retries += 1;
    }
    let status = res.status();
    // 304 is no redirect: it carries no Location and answers a conditional request.
    if status.is_redirection() && status != reqwest::StatusCode::NOT_MODIFIED {
        // The Location may carry a code or a token in its query: not logged.
        log::warn!(
            "proxy: provider {} answered {} (a redirect); refused",
            provider.key,
            status.as_u16()
        );
        return Err(AppError::bad_gateway(
            Code::ProviderRedirected,
            format!(
                "{} answered with a redirect ({}), which the proxy neither follows nor passes on",
                provider.display_name,
                status.as_u16()
            ),
        ));
    }
    let mut headers = HeaderMap::new();
    for (name, value) in res.headers() {
        if passes_back(name.as_str()) {
            headers.append(name.clone(), value.clone());
        }
    }
    let body = read_capped(res, app.settings.proxy_max_body, provider)
        .await
        .map_err(|e| e.unwrap_or_else(unreachable))?;
    let status = status.as_u16();
    Ok(Answer {
        connection_id: opened.row.id.clone(),
        status,
        headers,
        body,
        retries,
    })
}

/// Reads the body chunk by chunk, stopping as soon as it passes `cap` bytes
/// (a declared `Content-Length` over the cap stops it before any is read).
/// `Err(Ok(_))` is the refusal; `Err(Err(_))` a transport failure.
async fn read_capped(
    mut res: reqwest::Response,
    cap: usize,
    provider: &Provider,
) -> Result<bytes::Bytes, Result<AppError, reqwest::Error>> {
    let too_large = || {
        log::warn!(
            "proxy: provider {} answered a body over {cap} bytes; cut off",
            provider.key
        );
        AppError::bad_gateway(
            Code::ProviderResponseTooLarge,
            format!(
                "{}'s answer is larger than the proxy passes on ({cap} bytes, TETHER_PROXY_MAX_BODY_BYTES)",
                provider.display_name
            ),
        )
    };
    if res.content_length().is_some_and(|n| n > cap as u64) {
        return Err(Ok(too_large()));
    }
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = res.chunk().await.map_err(Err)? {
        if body.len() + chunk.len() > cap {
            return Err(Ok(too_large()));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// The provider URL for a proxied path: always under the provider's API base.
pub fn target(base: &str, tail: &str, query: &str) -> AppResult<url::Url> {
    let refuse = || {
        AppError::bad_request(
            Code::InvalidPath,
            "the path must stay under the provider's API base",
        )
    };
    let decoded = percent_decode(tail);
    if tail.starts_with('/')
        || tail.contains('\\')
        || decoded.split('/').any(|seg| seg == ".." || seg == ".")
        || decoded.contains("//")
        || decoded.contains(':')
            && decoded
                .split('/')
                .next()
                .is_some_and(|first| first.contains(':'))
        || decoded.chars().any(char::is_control)
    {
        return Err(refuse());
    }
    let base_url = url::Url::parse(base).map_err(|_| AppError::internal("invalid api_base_url"))?;
    let mut joined = format!("{}/{}", base.trim_end_matches('/'), tail);
    if !query.is_empty() {
        joined.push('?');
        joined.push_str(query);
    }
    let target = url::Url::parse(&joined).map_err(|_| refuse())?;
    let base_path = base_url.path().trim_end_matches('/');
    if target.origin() != base_url.origin() || !target.path().starts_with(base_path) {
        return Err(refuse());
    }
    Ok(target)
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::{retry_after, target};
    use std::time::{Duration, SystemTime};

    #[test]
    fn retry_after_reads_seconds_and_http_dates_and_nothing_else() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777); // 06 Nov 1994 08:49:37
        let read = |v: &str| {
            let mut h = reqwest::header::HeaderMap::new();
            h.insert("retry-after", v.parse().unwrap());
            retry_after(&h, now)
        };
        assert_eq!(read("3"), Some(Duration::from_secs(3)));
        assert_eq!(read(" 0 "), Some(Duration::ZERO));
        // IMF-fixdate, RFC 850 and asctime, as RFC 9110 has recipients read them.
        assert_eq!(
            read("Sun, 06 Nov 1994 08:49:47 GMT"),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            read("Sunday, 06-Nov-94 08:49:47 GMT"),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            read("Sun Nov  6 08:49:47 1994"),
            Some(Duration::from_secs(10))
        );
        // A date already past: no wait.
        assert_eq!(read("Sat, 05 Nov 1994 08:49:37 GMT"), Some(Duration::ZERO));
        for bad in ["soon", "-1", "1.5", "3s", "99999999999999999999999", ""] {
            assert_eq!(read(bad), None, "{bad}");
        }
        assert_eq!(retry_after(&reqwest::header::HeaderMap::new(), now), None);
    }

    #[test]
    fn proxied_paths_stay_under_the_api_base() {
        let base = "https://api.acme.example/v2";
        assert_eq!(
            target(base, "contacts/42", "limit=5").unwrap().as_str(),
            "https://api.acme.example/v2/contacts/42?limit=5"
        );
        for bad in [
            "../admin",
            "contacts/../../admin",
            "%2e%2e/admin",
            "/contacts",
            "//evil.example/x",
            "https://evil.example/x",
            "http:%2F%2Fevil.example",
            "a\\b",
            "a/%2F%2Fevil.example",
        ] {
            assert!(target(base, bad, "").is_err(), "{bad}");
        }
    }
}
