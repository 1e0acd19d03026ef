//! The demo provider: a small OAuth 2.0 authorization server inside the binary,
//! so a newcomer can try the whole flow offline. Off in production.
//!
//! It behaves like a strict real provider: one confidential client (the
//! credentials of the `demo` preset), one exact redirect URI, PKCE with S256
//! required, authorization codes that work once and for 60 seconds, `iss` on
//! every redirect back (RFC 9207), rotating refresh tokens that work once (a
//! second use revokes the whole grant, as GoHighLevel, Calendly and Microsoft
//! do), revocation (RFC 7009), and two bearer endpoints, `/demo/api/me` and
//! `/demo/api/contacts`.
//!
//! Everything lives in memory, in one store per process: a restart forgets
//! every grant, and several processes do not share one. That is fine for the
//! development tool this is, and only for that.
//!
//! `TETHER_DEMO_TOKEN_TTL_SECS` sets the access-token lifetime in seconds
//! (default 3600, at most a year); it is read once, when the store is created.
//! A short lifetime shows refreshing at work.
//!
//! Its files: `handlers` answers the routes below; `authorize` checks an
//! authorization request and sends the user back; `token` runs grants and
//! checks bearer tokens; `input` reads parameters; `errors` shapes OAuth
//! errors; `store` keeps codes, grants and tokens; `config` holds what they
//! all share. None of them imports this file.

mod authorize;
mod config;
mod errors;
mod handlers;
mod input;
mod store;
mod token;

pub use config::DemoConfig;
pub use store::DemoStore;

use actix_web::web;

/// The demo server's state for one application: created once, outside the
/// per-worker app factory, so a code issued by one worker is redeemable on another.
pub fn new_store(settings: &crate::config::Settings) -> web::Data<DemoStore> {
    web::Data::new(DemoStore::new(store::access_ttl(
        settings.var(store::TTL_ENV).as_deref(),
    )))
}

/// Routes under `/demo`; they answer 404 when the demo provider is off. The
/// store comes from [`new_store`] and the config from [`DemoConfig::new`] as
/// app data.
pub fn routes(cfg: &mut web::ServiceConfig) {
    use handlers::{authorize_decision, authorize_page, contacts, me, other_method, revoke, token};
    cfg.service(
        web::resource("/demo/oauth/authorize")
            .route(web::get().to(authorize_page))
            .route(web::post().to(authorize_decision))
            .default_service(web::to(other_method)),
    )
    .service(
        web::resource("/demo/oauth/token")
            .route(web::post().to(token))
            .default_service(web::to(other_method)),
    )
    .service(
        web::resource("/demo/oauth/revoke")
            .route(web::post().to(revoke))
            .default_service(web::to(other_method)),
    )
    .service(
        web::resource("/demo/api/me")
            .route(web::get().to(me))
            .default_service(web::to(other_method)),
    )
    .service(
        web::resource("/demo/api/contacts")
            .route(web::get().to(contacts))
            .default_service(web::to(other_method)),
    );
}
