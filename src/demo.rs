//! The demo provider: a small OAuth 2.0 authorization server inside the binary,
//! so a newcomer can try the whole flow offline. Off in production.

use actix_web::web;

/// Routes under `/demo`; they answer 404 when the demo provider is off.
pub fn routes(_cfg: &mut web::ServiceConfig) {}
