//! The in-memory store of codes, grants and tokens ([`DemoStore`]), and the
//! access-token lifetime it is created with.

use super::authorize::{pkce_matches, AuthRequest};
use super::errors::OAuthError;
use crate::crypto::{random_token, sha256_hex};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

pub(super) const TTL_ENV: &str = "TETHER_DEMO_TOKEN_TTL_SECS";
const DEFAULT_ACCESS_TTL_SECS: u64 = 3600;
/// Keeps `Instant + ttl` far from overflowing.
const MAX_ACCESS_TTL_SECS: u64 = 365 * 24 * 3600;
const CODE_TTL: Duration = Duration::from_secs(60);
/// How long a redeemed code is remembered after it expires, so that a replay
/// is recognised (and revokes its grant) rather than looking merely unknown.
const USED_CODE_MEMORY: Duration = Duration::from_secs(600);

/// What the token endpoint answers.
#[derive(serde::Serialize)]
pub(super) struct Tokens {
    access_token: String,
    token_type: &'static str,
    expires_in: u64,
    refresh_token: String,
    scope: String,
}

type GrantId = u64;

/// Codes, grants and tokens of this process, behind one lock.
pub struct DemoStore {
    access_ttl: Duration,
    inner: Mutex<Inner>,
}

/// Codes and tokens are keyed by their SHA-256: the maps hold nothing usable,
/// and a lookup's timing says nothing about a token's value.
#[derive(Default)]
struct Inner {
    codes: HashMap<String, Code>,
    grants: HashMap<GrantId, Grant>,
    access: HashMap<String, Access>,
    refresh: HashMap<String, Refresh>,
    next_grant: GrantId,
}

struct Code {
    client_id: String,
    redirect_uri: String,
    scope: Vec<&'static str>,
    challenge: String,
    expires_at: Instant,
    redeemed: bool,
    /// The grant this code produced, revoked if the code is replayed.
    grant: Option<GrantId>,
}

/// One user's consent to one client: every token descends from it.
struct Grant {
    client_id: String,
    scope: Vec<&'static str>,
}

struct Access {
    grant: GrantId,
    scope: Vec<&'static str>,
    expires_at: Instant,
}

struct Refresh {
    grant: GrantId,
    /// Rotated away: presenting it again is a replay.
    retired: bool,
}

impl DemoStore {
    pub(super) fn new(access_ttl: Duration) -> Self {
        DemoStore {
            access_ttl,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // No method leaves the maps half-updated, so a panic elsewhere while
        // holding the lock does not make them unusable.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new single-use code for an approved request.
    pub(super) fn issue_code(&self, request: &AuthRequest, now: Instant) -> String {
        let code = random_token(32);
        let mut inner = self.lock();
        inner.prune(now);
        inner.codes.insert(
            sha256_hex(code.as_bytes()),
            Code {
                client_id: request.client_id.clone(),
                redirect_uri: request.redirect_uri.clone(),
                scope: request.scope.clone(),
                challenge: request.code_challenge.clone(),
                expires_at: now + CODE_TTL,
                redeemed: false,
                grant: None,
            },
        );
        code
    }

    /// Redeems a code. Any attempt uses it up; a replay revokes its grant.
    pub(super) fn exchange_code(
        &self,
        client_id: &str,
        code: &str,
        redirect_uri: &str,
        verifier: &str,
        now: Instant,
    ) -> Result<Tokens, OAuthError> {
        let key = sha256_hex(code.as_bytes());
        let mut inner = self.lock();
        inner.prune(now);
        let Some(entry) = inner.codes.get_mut(&key) else {
            return Err(OAuthError::invalid_grant(
                "the authorization code is unknown or expired",
            ));
        };
        if entry.redeemed {
            // A code seen twice has leaked: withdraw what it gave (RFC 6749
            // section 4.1.2).
            if let Some(grant) = entry.grant.take() {
                inner.revoke_grant(grant);
                log::warn!(
                    "demo provider: an authorization code was replayed; grant {grant} revoked"
                );
            }
            return Err(OAuthError::invalid_grant(
                "the authorization code was already used",
            ));
        }
        entry.redeemed = true;
        if entry.expires_at <= now {
            return Err(OAuthError::invalid_grant(
                "the authorization code is unknown or expired",
            ));
        }
        if entry.client_id != client_id {
            return Err(OAuthError::invalid_grant(
                "the authorization code was issued to another client",
            ));
        }
        if entry.redirect_uri != redirect_uri {
            return Err(OAuthError::invalid_grant(
                "redirect_uri differs from the authorization request",
            ));
        }
        if !pkce_matches(verifier, &entry.challenge) {
            return Err(OAuthError::invalid_grant(
                "code_verifier does not match the code_challenge",
            ));
        }
        let scope = entry.scope.clone();
        let grant = inner.next_grant;
        inner.next_grant += 1;
        inner.grants.insert(
            grant,
            Grant {
                client_id: client_id.to_string(),
                scope: scope.clone(),
            },
        );
        if let Some(entry) = inner.codes.get_mut(&key) {
            entry.grant = Some(grant);
        }
        Ok(inner.issue_tokens(grant, scope, self.access_ttl, now))
    }

    /// Rotates a refresh token: new access and refresh tokens, the old refresh
    /// token retired. A retired one presented again revokes the whole grant.
    pub(super) fn refresh(
        &self,
        client_id: &str,
        refresh_token: &str,
        scope: Option<Vec<&'static str>>,
        now: Instant,
    ) -> Result<Tokens, OAuthError> {
        let key = sha256_hex(refresh_token.as_bytes());
        let mut inner = self.lock();
        inner.prune(now);
        let Some(entry) = inner.refresh.get(&key) else {
            return Err(OAuthError::invalid_grant(
                "the refresh token is unknown or revoked",
            ));
        };
        let grant_id = entry.grant;
        if entry.retired {
            // Two holders of one refresh token: one of them stole it, and we
            // cannot tell which, so neither keeps access.
            inner.revoke_grant(grant_id);
            log::warn!(
                "demo provider: a rotated refresh token was reused; grant {grant_id} revoked"
            );
            return Err(OAuthError::invalid_grant(
                "the refresh token was already used; the grant is revoked",
            ));
        }
        let Some(grant) = inner.grants.get(&grant_id) else {
            return Err(OAuthError::invalid_grant(
                "the refresh token is unknown or revoked",
            ));
        };
        if grant.client_id != client_id {
            return Err(OAuthError::invalid_grant(
                "the refresh token was issued to another client",
            ));
        }
        // A refresh may narrow the scope, never widen it (RFC 6749 section 6).
        let scope = match scope {
            None => grant.scope.clone(),
            Some(asked) if asked.iter().all(|s| grant.scope.contains(s)) => asked,
            Some(_) => return Err(OAuthError::invalid_scope()),
        };
        if let Some(entry) = inner.refresh.get_mut(&key) {
            entry.retired = true;
        }
        Ok(inner.issue_tokens(grant_id, scope, self.access_ttl, now))
    }

    /// Revokes the grant of an access or refresh token issued to `client_id`;
    /// anything else is ignored, as RFC 7009 section 2.2 asks.
    pub(super) fn revoke(&self, client_id: &str, token: &str) {
        let key = sha256_hex(token.as_bytes());
        let mut inner = self.lock();
        let grant = inner
            .access
            .get(&key)
            .map(|a| a.grant)
            .or_else(|| inner.refresh.get(&key).map(|r| r.grant));
        if let Some(grant) = grant {
            if inner
                .grants
                .get(&grant)
                .is_some_and(|g| g.client_id == client_id)
            {
                inner.revoke_grant(grant);
            }
        }
    }

    /// The scope of a live access token.
    pub(super) fn access_scope(&self, token: &str, now: Instant) -> Option<Vec<&'static str>> {
        let inner = self.lock();
        inner
            .access
            .get(&sha256_hex(token.as_bytes()))
            .filter(|a| a.expires_at > now)
            .map(|a| a.scope.clone())
    }
}

impl Inner {
    fn issue_tokens(
        &mut self,
        grant: GrantId,
        scope: Vec<&'static str>,
        ttl: Duration,
        now: Instant,
    ) -> Tokens {
        let access_token = random_token(32);
        let refresh_token = random_token(32);
        let scope_text = scope.join(" ");
        self.access.insert(
            sha256_hex(access_token.as_bytes()),
            Access {
                grant,
                scope,
                expires_at: now + ttl,
            },
        );
        self.refresh.insert(
            sha256_hex(refresh_token.as_bytes()),
            Refresh {
                grant,
                retired: false,
            },
        );
        Tokens {
            access_token,
            token_type: "Bearer",
            expires_in: ttl.as_secs(),
            refresh_token,
            scope: scope_text,
        }
    }

    /// Every access and refresh token of the grant stops working.
    fn revoke_grant(&mut self, grant: GrantId) {
        self.grants.remove(&grant);
        self.access.retain(|_, a| a.grant != grant);
        self.refresh.retain(|_, r| r.grant != grant);
    }

    /// Forgets expired codes and access tokens, so memory stays bounded by use.
    fn prune(&mut self, now: Instant) {
        self.codes.retain(|_, c| {
            if c.redeemed {
                c.expires_at + USED_CODE_MEMORY > now
            } else {
                c.expires_at > now
            }
        });
        self.access.retain(|_, a| a.expires_at > now);
    }
}

/// The access-token lifetime from `TETHER_DEMO_TOKEN_TTL_SECS`, else an hour.
pub(super) fn access_ttl(value: Option<&str>) -> Duration {
    let default = Duration::from_secs(DEFAULT_ACCESS_TTL_SECS);
    let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return default;
    };
    match value.parse::<u64>() {
        Ok(secs) if (1..=MAX_ACCESS_TTL_SECS).contains(&secs) => Duration::from_secs(secs),
        _ => {
            log::warn!(
                "{TTL_ENV} must be whole seconds from 1 to {MAX_ACCESS_TTL_SECS}; using {DEFAULT_ACCESS_TTL_SECS}"
            );
            default
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use sha2::{Digest, Sha256};

    const VERIFIER: &str = "a-verifier-that-is-long-enough-for-rfc-7636-pkce";

    fn request() -> AuthRequest {
        AuthRequest {
            client_id: "tether-demo".into(),
            redirect_uri: "http://127.0.0.1:8080/oauth/demo/callback".into(),
            state: "s".into(),
            scope: vec!["profile"],
            code_challenge: URL_SAFE_NO_PAD.encode(Sha256::digest(VERIFIER.as_bytes())),
        }
    }

    fn tokens(store: &DemoStore, now: Instant) -> Tokens {
        let req = request();
        let code = store.issue_code(&req, now);
        store
            .exchange_code(&req.client_id, &code, &req.redirect_uri, VERIFIER, now)
            .unwrap()
    }

    #[test]
    fn a_code_expires_after_a_minute() {
        let store = DemoStore::new(Duration::from_secs(3600));
        let req = request();
        let now = Instant::now();
        let code = store.issue_code(&req, now);
        let later = now + Duration::from_secs(61);
        let err = store
            .exchange_code(&req.client_id, &code, &req.redirect_uri, VERIFIER, later)
            .err()
            .unwrap();
        assert_eq!(err.error, "invalid_grant");
    }

    #[test]
    fn access_tokens_expire_after_the_configured_lifetime() {
        let store = DemoStore::new(Duration::from_secs(5));
        let now = Instant::now();
        let t = tokens(&store, now);
        assert_eq!(t.expires_in, 5);
        assert!(store.access_scope(&t.access_token, now).is_some());
        let later = now + Duration::from_secs(5);
        assert!(store.access_scope(&t.access_token, later).is_none());
    }

    #[test]
    fn refresh_can_narrow_but_not_widen_the_scope() {
        let store = DemoStore::new(Duration::from_secs(60));
        let now = Instant::now();
        let t = tokens(&store, now);
        let err = store
            .refresh(
                "tether-demo",
                &t.refresh_token,
                Some(vec!["contacts.read"]),
                now,
            )
            .err()
            .unwrap();
        assert_eq!(err.error, "invalid_scope");
        // A refused request leaves the refresh token usable.
        let t2 = store
            .refresh("tether-demo", &t.refresh_token, Some(vec!["profile"]), now)
            .unwrap();
        assert_eq!(t2.scope, "profile");
    }

    #[test]
    fn the_store_keeps_no_token_in_the_clear() {
        let store = DemoStore::new(Duration::from_secs(60));
        let t = tokens(&store, Instant::now());
        let inner = store.lock();
        assert!(!inner.access.contains_key(&t.access_token));
        assert!(!inner.refresh.contains_key(&t.refresh_token));
    }

    #[test]
    fn ttl_comes_from_the_environment_value_or_defaults_to_an_hour() {
        assert_eq!(access_ttl(None), Duration::from_secs(3600));
        assert_eq!(access_ttl(Some("")), Duration::from_secs(3600));
        assert_eq!(access_ttl(Some(" 90 ")), Duration::from_secs(90));
        assert_eq!(access_ttl(Some("0")), Duration::from_secs(3600));
        assert_eq!(access_ttl(Some("-5")), Duration::from_secs(3600));
        assert_eq!(
            access_ttl(Some("99999999999999")),
            Duration::from_secs(3600)
        );
    }
}
