//! Talking to providers: code exchange, refresh, revocation, identity. Each
//! failure is classified as docs/design.md section 7 describes.

use super::token::TokenResponse;
use crate::crypto::Secret;
use crate::providers::{ClientAuth, Identity, Provider, RefreshStyle};
use reqwest::header::{ACCEPT, RETRY_AFTER};
use serde_json::Value;
use std::time::Duration;

/// How long an idle connection to a provider is kept for the next call.
const POOL_IDLE: Duration = Duration::from_secs(4);

/// Largest provider response we read.
const MAX_BODY: usize = 1 << 20;

/// The HTTP client of every outgoing call (providers, the proxy, webhooks):
/// bounded time, no redirects followed (a token endpoint that redirects is
/// misconfigured, and following could carry credentials elsewhere), and the
/// operator's roots (`TETHER_CA_CERTS`, checked at start) beside the bundled
/// ones. An idle connection is dropped after [`POOL_IDLE`], before the 5-s
/// keep-alive many servers close it at (Node's and actix-web's default): a
/// call sent on a connection the server is closing fails after it was sent,
/// and a refresh token sent so cannot be told used or not.
pub fn http_client(timeout: Duration, ca_certs: &[reqwest::Certificate]) -> reqwest::Client {
    ca_certs
        .iter()
        .fold(reqwest::Client::builder(), |b, c| {
            b.add_root_certificate(c.clone())
        })
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(5))
        .pool_idle_timeout(POOL_IDLE)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("tether/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("a static reqwest configuration, with roots checked at start, builds")
}

/// What went wrong at the provider.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// The grant is gone (invalid_grant, revoked, expired): only the user can fix it.
    #[error("the provider says the grant is no longer valid ({error})")]
    GrantGone { error: String },
    /// Our client credentials are wrong: an operator must fix the provider's configuration.
    #[error("the provider rejected Tether's client credentials ({error})")]
    ClientMisconfigured { error: String },
    /// The request was refused for another reason (bad scope, bad request).
    #[error("the provider refused the request ({error})")]
    Refused { error: String },
    /// Timeouts, 5xx, 429, unreadable answers: worth retrying later.
    #[error("the provider is unavailable for now ({detail})")]
    Transient {
        detail: String,
        retry_after: Option<u64>,
        /// A 429: the provider is up and limits this caller (a user, an
        /// app), which says nothing about how it serves everyone else.
        throttled: bool,
    },
    /// The request was sent but no answer came: the provider may have acted on it.
    #[error("no answer from the provider; the outcome is unknown ({detail})")]
    Unknown { detail: String },
}

impl ProviderError {
    pub fn transient(detail: impl Into<String>) -> Self {
        ProviderError::Transient {
            detail: detail.into(),
            retry_after: None,
            throttled: false,
        }
    }
}

/// An error in the shape of Meta's Graph API (Instagram's token endpoints
/// answer so): `{"error": {"type": "OAuthException", "code": 190, ...}}`,
/// an object where RFC 6749 has a string. Its "Handling Errors" guide says
/// what each code asks for: 190 (the access token expired or was revoked)
/// and 102 (the session ended) want a new login; 1, 2, 4, 17, 32, 341 and
/// 613 pass with time; anything else is a refusal.
fn graph_error(json: &Value) -> Option<ProviderError> {
    let error = json.get("error")?.as_object()?;
    let code = error.get("code")?.as_i64()?;
    let kind = error
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("GraphError");
    let name = format!("{kind} {code}");
    Some(match code {
        102 | 190 => ProviderError::GrantGone { error: name },
        1 | 2 | 4 | 17 | 32 | 341 | 613 => ProviderError::transient(name),
        _ => ProviderError::Refused { error: name },
    })
}

/// Classifies a non-2xx answer from a token or revocation endpoint.
pub fn classify(status: u16, retry_after: Option<u64>, body: &[u8]) -> ProviderError {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let field = |name: &str| {
        json.as_ref()
            .and_then(|v| v.get(name))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    // RFC 6749 5.2 `error`, or HubSpot's legacy `status` (e.g. BAD_REFRESH_TOKEN).
    let error = field("error")
        .or_else(|| field("status"))
        .unwrap_or_default();
    let lower = error.to_ascii_lowercase();
    if status == 429 || status >= 500 {
        return ProviderError::Transient {
            detail: format!("HTTP {status}"),
            retry_after,
            throttled: status == 429,
        };
    }
    if let Some(graph) = json.as_ref().and_then(graph_error) {
        return graph;
    }
    match lower.as_str() {
        "invalid_grant" | "bad_refresh_token" | "expired_token" | "token_revoked" | "revoked"
        | "access_denied" => return ProviderError::GrantGone { error },
        "invalid_client" | "unauthorized_client" | "bad_client_id" | "bad_client_secret" => {
            return ProviderError::ClientMisconfigured { error }
        }
        _ => {}
    }
    if matches!(status, 400 | 401) {
        // No RFC 6749 code: a body naming the grant or the refresh token means it is gone.
        let text = String::from_utf8_lossy(body).to_ascii_lowercase();
        if text.contains("grant") || text.contains("refresh") || text.contains("revoked") {
            return ProviderError::GrantGone {
                error: if error.is_empty() {
                    format!("HTTP {status}")
                } else {
                    error
                },
            };
        }
        if error.is_empty() && json.is_none() {
            return ProviderError::transient(format!("HTTP {status} with an unreadable body"));
        }
    }
    ProviderError::Refused {
        error: if error.is_empty() {
            format!("HTTP {status}")
        } else {
            error
        },
    }
}

pub async fn read_body(
    res: reqwest::Response,
) -> Result<(u16, Option<u64>, Vec<u8>), ProviderError> {
    let status = res.status().as_u16();
    let retry_after = res
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let mut res = res;
    let mut body = Vec::new();
    while let Some(chunk) = res.chunk().await.map_err(transport)? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(ProviderError::transient("response larger than 1 MiB"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((status, retry_after, body))
}

/// What went wrong with an outgoing call, with its causes (a refused
/// connection, a failed name lookup and a refused certificate read apart:
/// `error sending request: client error (Connect): invalid peer
/// certificate: UnknownIssuer`), without the URL, which may carry a token.
pub fn transport_detail(e: reqwest::Error) -> String {
    crate::error::chain(&e.without_url())
}

/// A transport failure with its causes. A failure to connect means nothing
/// was sent; anything later may have reached the provider.
pub fn transport(e: reqwest::Error) -> ProviderError {
    let (connect, timeout) = (e.is_connect(), e.is_timeout());
    let cause = transport_detail(e);
    if connect {
        return ProviderError::transient(format!("connection failed: {cause}"));
    }
    let kind = if timeout {
        "timed out"
    } else {
        "transport error"
    };
    ProviderError::Unknown {
        detail: format!("{kind}: {cause}"),
    }
}

pub async fn token_response(
    provider: &Provider,
    req: reqwest::RequestBuilder,
) -> Result<TokenResponse, ProviderError> {
    let res = req
        .header(ACCEPT, "application/json")
        .send()
        .await
        .map_err(transport)?;
    let (status, retry_after, body) = read_body(res).await?;
    if !(200..300).contains(&status) {
        return Err(classify(status, retry_after, &body));
    }
    TokenResponse::parse(provider, &body).map_err(|e| ProviderError::transient(e.to_string()))
}

pub fn credentials(provider: &Provider) -> Result<(&str, &Secret<String>), ProviderError> {
    provider
        .credentials
        .as_ref()
        .map(|(id, secret)| (id.as_str(), secret))
        .ok_or_else(|| ProviderError::ClientMisconfigured {
            error: format!(
                "{} and {} are not set",
                provider.client_id_env, provider.client_secret_env
            ),
        })
}

/// A form POST to the token endpoint with the provider's client authentication
/// and extra token parameters.
pub fn token_post(
    http: &reqwest::Client,
    provider: &Provider,
    url: &str,
    form: Vec<(String, String)>,
) -> Result<reqwest::RequestBuilder, ProviderError> {
    client_post(http, provider, provider.client_auth, url, form)
}

/// A POST to one of the provider's OAuth endpoints carrying the client's
/// credentials as `auth` says.
fn client_post(
    http: &reqwest::Client,
    provider: &Provider,
    auth: ClientAuth,
    url: &str,
    mut form: Vec<(String, String)>,
) -> Result<reqwest::RequestBuilder, ProviderError> {
    let (id, secret) = credentials(provider)?;
    // The request's own fields win over the provider's fixed ones (a
    // refresh's `user_type` of the stored token over a configured one).
    for (k, v) in &provider.token_params {
        if !form.iter().any(|(name, _)| name == k) {
            form.push((k.clone(), v.clone()));
        }
    }
    let req = http.post(url);
    Ok(match auth {
        ClientAuth::Basic => req.basic_auth(id, Some(secret.expose())).form(&form),
        ClientAuth::Post => {
            form.push(("client_id".into(), id.into()));
            form.push(("client_secret".into(), secret.expose().clone()));
            req.form(&form)
        }
        ClientAuth::Json => {
            let mut obj: serde_json::Map<String, Value> = form
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect();
            obj.insert("client_id".into(), id.into());
            obj.insert("client_secret".into(), secret.expose().clone().into());
            req.json(&obj)
        }
    })
}

/// Exchanges an authorization code (with the PKCE verifier when used).
pub async fn exchange_code(
    http: &reqwest::Client,
    provider: &Provider,
    code: &str,
    redirect_uri: &str,
    verifier: Option<&str>,
) -> Result<TokenResponse, ProviderError> {
    let mut form = vec![
        ("grant_type".to_string(), "authorization_code".to_string()),
        ("code".to_string(), code.to_string()),
        ("redirect_uri".to_string(), redirect_uri.to_string()),
    ];
    if let Some(v) = verifier {
        form.push(("code_verifier".into(), v.into()));
    }
    token_response(
        provider,
        token_post(http, provider, &provider.token_url, form)?,
    )
    .await
}

/// Renews a token set with RFC 6749's refresh grant, with `extra` fields in
/// the form. Never called twice with the same refresh token: callers hold
/// the connection's lease. (A platform that renews otherwise does so in its
/// own folder: `platform::Platform::renew`.)
pub async fn refresh(
    http: &reqwest::Client,
    provider: &Provider,
    refresh_token: Option<&str>,
    extra: &[(&str, &str)],
) -> Result<TokenResponse, ProviderError> {
    if provider.refresh == RefreshStyle::None {
        return Err(ProviderError::Refused {
            error: "this provider's tokens cannot be refreshed".into(),
        });
    }
    let rt = refresh_token.ok_or_else(|| ProviderError::GrantGone {
        error: "no refresh token was issued".into(),
    })?;
    let mut form = vec![
        ("grant_type".to_string(), "refresh_token".to_string()),
        ("refresh_token".to_string(), rt.to_string()),
    ];
    form.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    token_response(
        provider,
        token_post(http, provider, &provider.token_url, form)?,
    )
    .await
}

/// Revokes a token at the provider (RFC 7009). `Ok(false)` when the provider
/// has no revocation endpoint.
pub async fn revoke(
    http: &reqwest::Client,
    provider: &Provider,
    token: &str,
    hint: &str,
) -> Result<bool, ProviderError> {
    let Some(url) = provider.revocation_url.as_deref() else {
        return Ok(false);
    };
    let form = vec![
        ("token".to_string(), token.to_string()),
        ("token_type_hint".to_string(), hint.to_string()),
    ];
    let auth = provider
        .revocation_client_auth
        .unwrap_or(provider.client_auth);
    let res = client_post(http, provider, auth, url, form)?
        .send()
        .await
        .map_err(transport)?;
    let (status, retry_after, body) = read_body(res).await?;
    if (200..300).contains(&status) {
        Ok(true)
    } else {
        Err(classify(status, retry_after, &body))
    }
}

/// Fetches the provider's identity document for a fresh token set: `None`
/// when the provider has no lookup, or its URL needs a field the token
/// response lacks (a GoHighLevel agency token has no location).
pub async fn identity(
    http: &reqwest::Client,
    provider: &Provider,
    access_token: &str,
    token_response: &Value,
) -> Result<Option<Value>, ProviderError> {
    identity_answer(http, provider, access_token, token_response)
        .await
        .map_err(|f| f.error)
}

/// Why an identity lookup gave no document: the failure as classified, and
/// whether the provider answered 401, which a resource server says of an
/// access token it does not accept (RFC 6750 section 3.1) whatever its body
/// holds (often none, where a token endpoint's 401 would be unreadable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityFailure {
    pub error: ProviderError,
    pub unauthorized: bool,
}

/// [`identity`], telling a 401 apart.
pub async fn identity_answer(
    http: &reqwest::Client,
    provider: &Provider,
    access_token: &str,
    token_response: &Value,
) -> Result<Option<Value>, IdentityFailure> {
    let failed = |error| IdentityFailure {
        error,
        unauthorized: false,
    };
    let Some(url) = provider.identity_url(token_response) else {
        return Ok(None);
    };
    let req = match provider.identity {
        Identity::Bearer => with_api_headers(http.get(&url), provider).bearer_auth(access_token),
        Identity::Introspect => token_post(
            http,
            provider,
            &url,
            vec![
                ("token".to_string(), access_token.to_string()),
                ("token_type_hint".to_string(), "access_token".to_string()),
            ],
        )
        .map_err(failed)?,
    };
    let res = req
        .header(ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| failed(transport(e)))?;
    let (status, retry_after, body) = read_body(res).await.map_err(failed)?;
    if !(200..300).contains(&status) {
        return Err(IdentityFailure {
            error: classify(status, retry_after, &body),
            unauthorized: status == 401,
        });
    }
    serde_json::from_slice(&body).map(Some).map_err(|_| {
        failed(ProviderError::transient(
            "the identity endpoint did not answer JSON",
        ))
    })
}

/// The provider's API URL for `path` (`api_base_url` and the path).
pub fn api_url(provider: &Provider, path: &str) -> Result<String, ProviderError> {
    let base =
        provider
            .api_base_url
            .as_deref()
            .ok_or_else(|| ProviderError::ClientMisconfigured {
                error: format!("provider '{}' has no api_base_url", provider.key),
            })?;
    Ok(format!("{}{path}", base.trim_end_matches('/')))
}

/// A request to the provider's API with the fixed headers it requires.
pub fn with_api_headers(
    req: reqwest::RequestBuilder,
    provider: &Provider,
) -> reqwest::RequestBuilder {
    provider.api_headers.iter().fold(req, |req, (name, value)| {
        req.header(name.as_str(), value.as_str())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_classified_by_code_then_status() {
        // Meta's Graph API shape: 190 and 102 want a new login, throttling passes.
        let graph = |code: i64| {
            classify(
                400,
                None,
                format!(r#"{{"error":{{"type":"OAuthException","code":{code},"message":"m"}}}}"#)
                    .as_bytes(),
            )
        };
        assert!(matches!(graph(190), ProviderError::GrantGone { .. }));
        assert!(matches!(graph(102), ProviderError::GrantGone { .. }));
        assert!(matches!(graph(4), ProviderError::Transient { .. }));
        assert!(matches!(graph(10), ProviderError::Refused { .. }));
        assert!(matches!(
            classify(400, None, br#"{"error":"invalid_grant"}"#),
            ProviderError::GrantGone { .. }
        ));
        assert!(matches!(
            classify(
                400,
                None,
                br#"{"status":"BAD_REFRESH_TOKEN","message":"missing or invalid refresh token"}"#
            ),
            ProviderError::GrantGone { .. }
        ));
        assert!(matches!(
            classify(401, None, br#"{"error":"invalid_client"}"#),
            ProviderError::ClientMisconfigured { .. }
        ));
        assert!(matches!(
            classify(400, None, br#"{"error":"unauthorized_client"}"#),
            ProviderError::ClientMisconfigured { .. }
        ));
        assert_eq!(
            classify(429, Some(30), b"slow down"),
            ProviderError::Transient {
                detail: "HTTP 429".into(),
                retry_after: Some(30),
                throttled: true,
            }
        );
        assert!(matches!(
            classify(503, None, b""),
            ProviderError::Transient { .. }
        ));
        assert!(matches!(
            classify(400, None, b"<html>refresh token expired</html>"),
            ProviderError::GrantGone { .. }
        ));
        assert!(matches!(
            classify(400, None, b"<html>oops</html>"),
            ProviderError::Transient { .. }
        ));
        assert!(matches!(
            classify(400, None, br#"{"error":"invalid_scope"}"#),
            ProviderError::Refused { .. }
        ));
    }
}
