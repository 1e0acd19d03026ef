//! Who may act: password hashing for admin accounts (argon2id with the
//! crate's defaults) and API keys, validated against the database and cached.

use crate::db::models::api_key::ApiKey;
use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Shortest password `tether user add` accepts.
pub const MIN_PASSWORD_LEN: usize = 12;

pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

/// Whether `password` matches the stored PHC-format `hash`.
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// How long a validated key is trusted without asking the database again:
/// a revoked key stops working within this time.
const KEY_CACHE_TTL: Duration = Duration::from_secs(10);
/// `last_used_at` is written at most this often per key.
const TOUCH_EVERY: Duration = Duration::from_secs(60);

/// A key and when it was last validated against the database.
type ValidatedKey = (Arc<ApiKey>, Instant);

/// Validated keys and tenant ids, so a warm token request costs one query.
#[derive(Default)]
pub struct ApiCache {
    /// SHA-256 of the presented key -> the key.
    keys: Mutex<HashMap<[u8; 32], ValidatedKey>>,
    /// Key id -> when its `last_used_at` was last written.
    touched: Mutex<HashMap<String, Instant>>,
    /// External id -> tenant id: never changes once a tenant exists.
    tenants: Mutex<HashMap<String, String>>,
}

impl ApiCache {
    /// The key whose SHA-256 is `digest`, if validated within `KEY_CACHE_TTL`.
    pub fn key(&self, digest: &[u8; 32]) -> Option<Arc<ApiKey>> {
        lock(&self.keys)
            .get(digest)
            .filter(|(_, at)| at.elapsed() < KEY_CACHE_TTL)
            .map(|(key, _)| key.clone())
    }

    /// Keeps a key just validated against the database; says whether its
    /// `last_used_at` is due to be written (at most every `TOUCH_EVERY`).
    pub fn remember(&self, digest: [u8; 32], key: &Arc<ApiKey>) -> bool {
        let now = Instant::now();
        lock(&self.keys).insert(digest, (key.clone(), now));
        let mut touched = lock(&self.touched);
        let due = touched
            .get(&key.id)
            .is_none_or(|t| t.elapsed() >= TOUCH_EVERY);
        if due {
            touched.insert(key.id.clone(), now);
        }
        due
    }

    /// The tenant id of a CRM's external tenant id, if seen before.
    pub fn tenant(&self, external_id: &str) -> Option<String> {
        lock(&self.tenants).get(external_id).cloned()
    }

    pub fn remember_tenant(&self, external_id: &str, tenant_id: &str) {
        lock(&self.tenants).insert(external_id.to_string(), tenant_id.to_string());
    }
}

/// A lock whose holder never leaves the map half-updated, so a panic
/// elsewhere does not poison it for good.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_differ_per_salt() {
        let a = hash_password("correct horse battery").unwrap();
        let b = hash_password("correct horse battery").unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery", &a));
        assert!(!verify_password("wrong", &a));
        assert!(!verify_password("x", "not a hash"));
    }
}
