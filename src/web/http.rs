//! HTTP plumbing every area shares: parameters read the same way from every
//! request, and responses built the same way everywhere.

use crate::error::{AppError, AppResult, Code, PageError};
use crate::ids::AccountId;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};

/// An `account` parameter (a provider's account id) as received: absent is
/// the default account; anything no provider would issue is a 400.
pub fn account_param(raw: Option<&str>) -> AppResult<Option<AccountId>> {
    raw.map(AccountId::parse).transpose()
}

/// The query string's pairs, percent-decoded (`+` is a space). Unlike a
/// lenient decoder, bytes that are not UTF-8 are a 400 rather than
/// replacement characters that might then match something.
pub fn query_pairs(query: &str) -> AppResult<Vec<(String, String)>> {
    fn decode(part: &str) -> Option<String> {
        let bytes = part.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' => {
                    let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return None;
                    }
                    out.push(u8::from_str_radix(hex, 16).ok()?);
                    i += 2;
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8(out).ok()
    }
    if query.len() > 8192 {
        return Err(AppError::bad_request(
            Code::InvalidQuery,
            "the query string is longer than 8192 bytes",
        ));
    }
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            decode(k).zip(decode(v)).ok_or_else(|| {
                AppError::bad_request(
                    Code::InvalidQuery,
                    "the query string is not percent-encoded UTF-8",
                )
            })
        })
        .collect()
}

/// The request path for the access log: without the query string (where
/// codes and states travel), and with a connect link's token masked.
pub fn loggable_path(path: &str) -> String {
    match path.strip_prefix("/connect/") {
        Some(rest) if rest != "done" => "/connect/<link>".to_string(),
        _ => path.to_string(),
    }
}

/// The client's address as a rate-limit key: the TCP peer, or the client a
/// trusted proxy forwarded for (see `super::forwarded`); IPv6 by its /64.
pub fn client_addr(req: &HttpRequest, trusted_proxies: &[ipnet::IpNet]) -> String {
    match client_ip(req, trusted_proxies) {
        Some(ip) => super::forwarded::limit_key(ip),
        None => "unknown".into(),
    }
}

/// The client's address: the TCP peer, or the client a trusted proxy
/// forwarded for (see `super::forwarded`).
pub fn client_ip(req: &HttpRequest, trusted_proxies: &[ipnet::IpNet]) -> Option<std::net::IpAddr> {
    let peer = req.peer_addr()?;
    let forwarded = req
        .headers()
        .get_all("x-forwarded-for")
        // An unreadable value ends the walk there, as an unreadable hop does.
        .map(|v| v.to_str().unwrap_or(""))
        .collect::<Vec<_>>();
    Some(super::forwarded::client_ip(
        peer.ip(),
        forwarded.into_iter(),
        trusted_proxies,
    ))
}

/// An HTML response with the headers every page carries.
pub fn html(body: String) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(body)
}

/// Tells the browser not to send the address of this response's page (it
/// may carry a code or a state) to the next one.
pub fn no_referrer(mut res: HttpResponse) -> HttpResponse {
    res.headers_mut().insert(
        header::REFERRER_POLICY,
        header::HeaderValue::from_static("no-referrer"),
    );
    res
}

/// A 303 that tells the browser not to send the address it leaves (it may
/// carry a code or a state) to the next one.
pub fn redirect_no_referrer(location: &str) -> HttpResponse {
    no_referrer(see_other(location))
}

pub fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .finish()
}

/// Marks a response as never to be stored by any cache.
pub fn no_store(mut res: HttpResponse) -> HttpResponse {
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    res
}

/// A UTC time as the API writes them: RFC 3339, whole seconds, `Z`.
pub fn rfc3339(t: chrono::NaiveDateTime) -> String {
    t.and_utc()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Unknown routes: JSON under `/api`, a page elsewhere.
pub async fn not_found(req: HttpRequest) -> Result<HttpResponse, PageError> {
    let err = AppError::not_found("there is nothing at this address");
    if req.path().starts_with("/api/") {
        Ok(actix_web::ResponseError::error_response(&err))
    } else {
        Err(PageError(err))
    }
}

/// How browser forms are read: at most `limit` bytes, a refusal as an HTML page.
pub fn form_config(limit: usize) -> actix_web::web::FormConfig {
    actix_web::web::FormConfig::default()
        .limit(limit)
        .error_handler(|e, _| {
            PageError(AppError::bad_request(
                Code::InvalidForm,
                format!("the form could not be read: {e}"),
            ))
            .into()
        })
}

/// Back to the dashboard, at the card of provider `key` (its anchor), where
/// the admin acted: a page without script lands there too.
pub fn back_to_card(key: &str) -> HttpResponse {
    see_other(&format!("{}#card-{key}", crate::oauth::DASHBOARD))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_connect_links_token_never_reaches_the_access_log() {
        assert_eq!(
            super::loggable_path("/connect/Zm9vYmFyYmF6"),
            "/connect/<link>"
        );
        assert_eq!(
            super::loggable_path("/connect/session/Zm9vYmFyYmF6/acme"),
            "/connect/<link>",
            "nor a connect session's"
        );
        assert_eq!(super::loggable_path("/connect/done"), "/connect/done");
        assert_eq!(super::loggable_path("/healthz"), "/healthz");
    }

    #[test]
    fn query_pairs_decode_strictly() {
        assert_eq!(
            super::query_pairs("siteId=loc%5F1&name=a+b&flag").unwrap(),
            vec![
                ("siteId".to_string(), "loc_1".to_string()),
                ("name".to_string(), "a b".to_string()),
                ("flag".to_string(), String::new()),
            ]
        );
        for bad in ["a=%ff", "a=%zz", "a=%+1", "a=%4"] {
            assert!(super::query_pairs(bad).is_err(), "{bad}");
        }
    }
}
