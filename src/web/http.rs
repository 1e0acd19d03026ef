//! HTTP plumbing every area shares: parameters read the same way from every
//! request, and responses built the same way everywhere.

use crate::error::{AppError, AppResult, Code, PageError};
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};

/// An `account` parameter (a provider's account id) as received: absent is
/// the default account; anything no provider would issue is a 400.
pub fn account_param(raw: Option<&str>) -> AppResult<Option<&str>> {
    match raw {
        None => Ok(None),
        Some(a) if crate::connections::valid_account_id(a) => Ok(Some(a)),
        Some(_) => Err(AppError::bad_request(
            Code::InvalidAccount,
            "account is a provider's account id: 1 to 256 characters, no control characters",
        )),
    }
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
    let Some(peer) = req.peer_addr() else {
        return "unknown".into();
    };
    let forwarded = req
        .headers()
        .get_all("x-forwarded-for")
        // An unreadable value ends the walk there, as an unreadable hop does.
        .map(|v| v.to_str().unwrap_or(""))
        .collect::<Vec<_>>();
    let ip = super::forwarded::client_ip(peer.ip(), forwarded.into_iter(), trusted_proxies);
    super::forwarded::limit_key(ip)
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

/// Unknown routes: JSON under `/api`, a page elsewhere.
pub async fn not_found(req: HttpRequest) -> Result<HttpResponse, PageError> {
    let err = AppError::not_found("there is nothing at this address");
    if req.path().starts_with("/api/") {
        Ok(actix_web::ResponseError::error_response(&err))
    } else {
        Err(PageError(err))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_connect_links_token_never_reaches_the_access_log() {
        assert_eq!(
            super::loggable_path("/connect/Zm9vYmFyYmF6"),
            "/connect/<link>"
        );
        assert_eq!(super::loggable_path("/connect/done"), "/connect/done");
        assert_eq!(super::loggable_path("/healthz"), "/healthz");
    }
}
