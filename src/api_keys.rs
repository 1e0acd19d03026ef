//! The cache of validated API keys and tenant ids, so a warm internal API
//! request costs no query; and of refused keys, so that a bad key costs one
//! query per client address and half minute at most.

use crate::db::models::api_key::ApiKey;
use crate::ids::{ExternalTenantId, TenantId};
use crate::ratelimit::RateLimiter;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a validated key is trusted without asking the database again:
/// a revoked key stops working within this time.
const KEY_CACHE_TTL: Duration = Duration::from_secs(10);
/// How long a tenant's id is trusted for its external id: a tenant removed
/// by another instance is forgotten here within this time.
const TENANT_CACHE_TTL: Duration = Duration::from_secs(60);
/// How long a validated key and a tenant's id stay trusted while the
/// database is away, so that valid tokens keep flowing through an outage (a
/// failover takes up to two minutes). The cost: a key revoked, or a tenant
/// removed, just before the outage works for at most this long; nothing can
/// be revoked while the database is away anyway.
pub const OUTAGE_TRUST: Duration = Duration::from_secs(600);
/// `last_used_at` is written at most this often per key.
const TOUCH_EVERY: Duration = Duration::from_secs(60);
/// How long a refused key is refused again without asking the database.
/// Keys are random: none becomes valid after it was presented.
const REFUSED_FOR: Duration = Duration::from_secs(30);
/// Refused keys a client address may present in a minute before it waits.
pub const REFUSALS_PER_CLIENT: u32 = 30;

/// A key and when it was last validated against the database.
type ValidatedKey = (Arc<ApiKey>, Instant);

/// Validated keys and tenant ids, so a warm token request costs one query;
/// refused keys and the clients that presented them.
pub struct ApiCache {
    /// SHA-256 of the presented key -> the key.
    keys: Mutex<HashMap<[u8; 32], ValidatedKey>>,
    /// Key id -> when its `last_used_at` was last written.
    touched: Mutex<HashMap<String, Instant>>,
    /// External id -> tenant id, and when it was read: it never changes
    /// while the tenant exists, but a tenant may be removed (and its
    /// external id given to a new one).
    tenants: Mutex<HashMap<String, (TenantId, Instant)>>,
    /// Hex SHA-256 of keys refused within [`REFUSED_FOR`].
    refused: RateLimiter,
    /// Refused keys per client address, within a minute.
    refusals: RateLimiter,
}

impl Default for ApiCache {
    fn default() -> Self {
        ApiCache {
            keys: Default::default(),
            touched: Default::default(),
            tenants: Default::default(),
            refused: RateLimiter::new(1, REFUSED_FOR),
            refusals: RateLimiter::new(REFUSALS_PER_CLIENT, Duration::from_secs(60)),
        }
    }
}

impl ApiCache {
    /// The key whose SHA-256 is `digest`, if validated within `KEY_CACHE_TTL`.
    pub fn key(&self, digest: &[u8; 32]) -> Option<Arc<ApiKey>> {
        lock(&self.keys)
            .get(digest)
            .filter(|(_, at)| at.elapsed() < KEY_CACHE_TTL)
            .map(|(key, _)| key.clone())
    }

    /// The key whose SHA-256 is `digest`, if validated within
    /// [`OUTAGE_TRUST`]: for when the database is away.
    pub fn key_while_away(&self, digest: &[u8; 32]) -> Option<Arc<ApiKey>> {
        lock(&self.keys)
            .get(digest)
            .filter(|(_, at)| at.elapsed() < OUTAGE_TRUST)
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
    pub fn tenant(&self, external_id: &str) -> Option<TenantId> {
        lock(&self.tenants)
            .get(external_id)
            .filter(|(_, at)| at.elapsed() < TENANT_CACHE_TTL)
            .map(|(id, _)| id.clone())
    }

    /// The tenant id of an external id read within [`OUTAGE_TRUST`]: for
    /// when the database is away.
    pub fn tenant_while_away(&self, external_id: &str) -> Option<TenantId> {
        lock(&self.tenants)
            .get(external_id)
            .filter(|(_, at)| at.elapsed() < OUTAGE_TRUST)
            .map(|(id, _)| id.clone())
    }

    pub fn remember_tenant(&self, external_id: &ExternalTenantId, tenant_id: &TenantId) {
        lock(&self.tenants).insert(external_id.to_string(), (tenant_id.clone(), Instant::now()));
    }

    /// Whether the key whose SHA-256 is `digest` was refused moments ago.
    pub fn refused_recently(&self, digest: &[u8; 32]) -> bool {
        self.refused.peek(&hex::encode(digest)).is_err()
    }

    /// Whether `client` may have another key looked up: `Err(seconds)` to
    /// wait once it has presented too many refused ones.
    pub fn client_may_try(&self, client: &str) -> Result<(), u64> {
        self.refusals.peek(client)
    }

    /// Records that `client` presented a key that was refused.
    pub fn refuse(&self, digest: &[u8; 32], client: &str) {
        self.refused.charge(&hex::encode(digest));
        self.refusals.charge(client);
    }

    /// Drops a removed tenant's id and every key cached in its name.
    pub fn forget_tenant(&self, tenant_id: &TenantId) {
        lock(&self.tenants).retain(|_, (id, _)| id != tenant_id);
        lock(&self.keys).retain(|_, (key, _)| key.tenant_id.as_ref() != Some(tenant_id));
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
    fn a_refused_key_is_remembered_and_a_client_waits_after_its_share() {
        let cache = ApiCache::default();
        let (bad, other) = ([1u8; 32], [2u8; 32]);
        assert!(!cache.refused_recently(&bad));
        cache.refuse(&bad, "ip:192.0.2.1");
        assert!(cache.refused_recently(&bad));
        assert!(!cache.refused_recently(&other));
        for _ in 1..REFUSALS_PER_CLIENT {
            assert!(cache.client_may_try("ip:192.0.2.1").is_ok());
            cache.refuse(&other, "ip:192.0.2.1");
        }
        assert!(cache.client_may_try("ip:192.0.2.1").is_err());
        assert!(cache.client_may_try("ip:192.0.2.2").is_ok());
    }
}
