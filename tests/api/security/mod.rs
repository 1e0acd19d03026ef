//! docs/design.md section 10, one promise at a time: every rejected request is
//! refused with a clear 4xx and leaves the database exactly as it was. The
//! families: the OAuth state (state.rs), PKCE (pkce.rs), what else a callback
//! may bring (callback.rs), where a flow may return to (return_to.rs), one
//! tenant's admin and another tenant's connection (tenant_isolation.rs),
//! secrets that never show or are stored only hashed (secrets.rs), rate
//! limits (rate_limits.rs), the session cookie (sessions.rs), CSRF (csrf.rs),
//! oversized or badly encoded input (input.rs), and what production insists
//! on (production.rs: https everywhere, HSTS), and provider-initiated
//! installs that bind an account only from a signed artefact (installs.rs); each has its own
//! `backend_tests!` list. This file holds the tripwire and fingerprint they
//! share.

mod callback;
mod csrf;
mod input;
mod installs;
mod pkce;
mod production;
mod rate_limits;
mod return_to;
mod secrets;
mod sessions;
mod state;
mod tenant_isolation;

use crate::helpers::FakeProvider;
use tether::db::models::connection::Connection;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

/// The token endpoint must not be called at all.
async fn forbid_token_requests(fake: &FakeProvider) {
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .named("no token request")
        .mount(&fake.server)
        .await;
}

/// What identifies a stored grant: any write changes one of these.
fn fingerprint(c: &Connection) -> String {
    format!(
        "{}|{}|{}|{:?}|{:?}|{}|{:?}",
        c.id, c.status, c.version, c.token_ciphertext, c.key_id, c.updated_at, c.expires_at
    )
}
