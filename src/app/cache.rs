//! A cache of opened token sets, per process, so a warm token request touches
//! neither the database nor the key ring. Every write in this process drops
//! its entries at once; a write by another instance does too, through
//! PostgreSQL's LISTEN/NOTIFY (`db::listen`). While that coherence holds (on
//! SQLite, which serves one instance, it always does) an entry lives as long
//! as its access token is fit to hand out (capped at an hour, for writes made
//! outside Tether). While it does not (the listener is reconnecting), entries
//! live `TETHER_TOKEN_CACHE_MS`, so another instance's write is seen within
//! that time. An entry is only ever served while its access token is valid
//! for the caller.
//!
//! A flush (the listener lost or regained its session) does not forget the
//! opened sets: it demotes them to a last resort, served by
//! [`TokenCache::fallback`] only while the database is away and only while
//! the access token is still valid. A write heard or made drops them.

use crate::db::models::connection::{Connection, TokenSet};
use crate::ids::{AccountId, ProviderKey, TenantId};
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A connection row with its token set opened: what a token request serves.
/// Shared, so that a cache hit copies nothing.
#[derive(Debug)]
pub struct Opened {
    pub row: Connection,
    pub tokens: TokenSet,
    /// The row's scopes and metadata, parsed once.
    pub scopes: Vec<String>,
    pub metadata: serde_json::Value,
    /// The account's effective integration settings, read by the first
    /// token request that serves this set. A settings change drops the set
    /// from the cache like a token write does, so they stay current.
    pub settings: std::sync::OnceLock<serde_json::Value>,
}

impl Opened {
    pub fn new(row: Connection, tokens: TokenSet) -> Arc<Opened> {
        Arc::new(Opened {
            scopes: row.scopes(),
            metadata: row.metadata(),
            settings: std::sync::OnceLock::new(),
            row,
            tokens,
        })
    }
}

/// The account asked for, `None` for the default.
type Account = Option<AccountId>;
/// An opened set, when it was put, and the flush generation it belongs to.
type Entry = (Arc<Opened>, Instant, u64);
/// Tenant -> provider -> account: every write to one of a (tenant,
/// provider)'s connections drops all its entries, since the default may have
/// moved with it. Nested so that a lookup borrows instead of building a key.
type Entries = HashMap<TenantId, HashMap<ProviderKey, HashMap<Account, Entry>>>;

/// Longest life of an entry while writes of other instances are heard.
const COHERENT_TTL: Duration = Duration::from_secs(3600);
/// Tenants kept at most; past it the cache starts afresh.
const MAX_ENTRIES: usize = 10_000;
/// Invalidation counters, each shared by the keys that hash to it.
const STRIPES: usize = 64;

pub struct TokenCache {
    ttl: Duration,
    coherent: AtomicBool,
    entries: Mutex<Entries>,
    /// Bumped whenever an invalidation for a key of the stripe arrives: a
    /// reader that saw the database before the bump must not put what it
    /// read (it may be the very state the invalidation replaced).
    epochs: [AtomicU64; STRIPES],
    /// Moves on at every flush: entries of an earlier generation are only
    /// a last resort.
    generation: AtomicU64,
}

/// What a reader saw of the cache before it read the database.
#[derive(Debug, Clone, Copy)]
pub struct Epoch(u64);

impl TokenCache {
    /// A cache whose entries live `ttl` while incoherent; zero: never served
    /// warm (entries are kept only as the last resort of an outage).
    /// `coherent`: whether other instances' writes are heard from the start
    /// (SQLite: there are none).
    pub fn new(ttl: Duration, coherent: bool) -> TokenCache {
        TokenCache {
            ttl,
            coherent: AtomicBool::new(coherent),
            entries: Mutex::new(HashMap::new()),
            epochs: std::array::from_fn(|_| AtomicU64::new(0)),
            generation: AtomicU64::new(0),
        }
    }

    fn epoch_slot(&self, tenant_id: &TenantId, provider: &ProviderKey) -> &AtomicU64 {
        let mut h = DefaultHasher::new();
        (tenant_id, provider).hash(&mut h);
        &self.epochs[(h.finish() as usize) % STRIPES]
    }

    pub fn is_coherent(&self) -> bool {
        self.coherent.load(Ordering::SeqCst)
    }

    /// Call before reading the database for (tenant, provider); hand the
    /// result to [`TokenCache::put`].
    pub fn epoch(&self, tenant_id: &TenantId, provider: &ProviderKey) -> Epoch {
        Epoch(self.epoch_slot(tenant_id, provider).load(Ordering::SeqCst))
    }

    /// The entry for `account` (`None`: the default) of (tenant, provider).
    pub fn get(
        &self,
        tenant_id: &TenantId,
        provider: &ProviderKey,
        account: Option<&AccountId>,
    ) -> Option<Arc<Opened>> {
        if self.ttl.is_zero() {
            return None;
        }
        let lifetime = if self.is_coherent() {
            COHERENT_TTL
        } else {
            self.ttl
        };
        let generation = self.generation.load(Ordering::SeqCst);
        self.entry(tenant_id, provider, account)
            .filter(|(_, at, g)| *g == generation && at.elapsed() < lifetime)
            .map(|(opened, _, _)| opened)
    }

    /// The last opened set this process holds for `account` of (tenant,
    /// provider), however old, unless a write to it was made or heard: for
    /// when the database is away. The caller checks it is still valid.
    pub fn fallback(
        &self,
        tenant_id: &TenantId,
        provider: &ProviderKey,
        account: Option<&AccountId>,
    ) -> Option<Arc<Opened>> {
        self.entry(tenant_id, provider, account)
            .map(|(opened, _, _)| opened)
    }

    fn entry(
        &self,
        tenant_id: &TenantId,
        provider: &ProviderKey,
        account: Option<&AccountId>,
    ) -> Option<Entry> {
        let map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let accounts = map.get(tenant_id)?.get(provider)?;
        accounts.get(&account.cloned()).cloned()
    }

    /// Keeps `row` as the answer for `account` (`None`: the default), read
    /// at `seen`, unless an invalidation came since.
    pub fn put(&self, opened: &Arc<Opened>, account: Option<&AccountId>, seen: Epoch) {
        // Kept even with the cache off (`TETHER_TOKEN_CACHE_MS=0`): then it is
        // never served warm, only as the last resort of an outage.
        let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        // Checked under the lock that invalidations take too.
        let row = &opened.row;
        if self.epoch(&row.tenant_id, &row.provider).0 != seen.0 {
            return;
        }
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.entry(row.tenant_id.clone())
            .or_default()
            .entry(row.provider.clone())
            .or_default()
            .insert(
                account.cloned(),
                (
                    opened.clone(),
                    Instant::now(),
                    self.generation.load(Ordering::SeqCst),
                ),
            );
    }

    /// Drops the entries of (tenant, provider) after a write in this process
    /// to one of its connections.
    pub fn forget(&self, tenant_id: &TenantId, provider: &ProviderKey) {
        self.invalidate(tenant_id, provider);
    }

    /// Drops the entries of (tenant, provider), and keeps readers that read
    /// the database before now from putting them back.
    pub fn invalidate(&self, tenant_id: &TenantId, provider: &ProviderKey) {
        let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        self.epoch_slot(tenant_id, provider)
            .fetch_add(1, Ordering::SeqCst);
        if let Some(providers) = map.get_mut(tenant_id) {
            providers.remove(provider);
            if providers.is_empty() {
                map.remove(tenant_id);
            }
        }
    }

    /// Stops serving every entry (the listener lost or regained its
    /// session, so writes may have been missed); they stay as a last resort
    /// for [`TokenCache::fallback`].
    pub fn flush(&self) {
        let _map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        for e in &self.epochs {
            e.fetch_add(1, Ordering::SeqCst);
        }
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Whether other instances' writes are heard; either change flushes.
    pub fn set_coherent(&self, coherent: bool) {
        self.flush();
        self.coherent.store(coherent, Ordering::SeqCst);
    }
}

impl crate::db::listen::Hearer for TokenCache {
    fn changed(&self, tenant_id: &TenantId, provider: &ProviderKey) {
        self.invalidate(tenant_id, provider);
    }

    fn anything_changed(&self) {
        self.flush();
    }

    fn hearing(&self, heard: bool) {
        self.set_coherent(heard);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Secret;
    use crate::ids::ConnectionId;

    fn row(tenant_id: &TenantId, provider: &ProviderKey) -> Arc<Opened> {
        let t = crate::db::now();
        let row = Connection {
            id: ConnectionId::known("c1"),
            tenant_id: tenant_id.clone(),
            provider: provider.clone(),
            account_id: AccountId::known("a1"),
            account_name: None,
            status: crate::db::models::connection::Status::Connected,
            scopes: "[]".into(),
            token_ciphertext: None,
            key_id: None,
            expires_at: None,
            refresh_expires_at: None,
            next_refresh_at: None,
            version: 0,
            lease_owner: None,
            lease_until: None,
            failure_count: 0,
            last_error: None,
            metadata: "{}".into(),
            last_refreshed_at: None,
            created_at: t,
            updated_at: t,
            is_default: true,
            tags: None,
            error_since: None,
            kind: crate::db::models::connection::Kind::OAuth,
        };
        let tokens = TokenSet {
            access_token: Secret::new("at".into()),
            refresh_token: None,
            token_type: "Bearer".into(),
            raw: Secret::new(serde_json::json!({})),
        };
        Opened::new(row, tokens)
    }

    #[test]
    fn a_read_from_before_an_invalidation_is_not_put_back() {
        let (t, p, a1) = (
            TenantId::known("t"),
            ProviderKey::known("p"),
            AccountId::known("a1"),
        );
        let cache = TokenCache::new(Duration::from_secs(1), true);
        let opened = row(&t, &p);
        // A reader looks, another instance's write is heard, the reader puts.
        let seen = cache.epoch(&t, &p);
        cache.invalidate(&t, &p);
        cache.put(&opened, None, seen);
        assert!(cache.get(&t, &p, None).is_none(), "stale read cached");
        // A read after the invalidation is cached, for every account key.
        let seen = cache.epoch(&t, &p);
        cache.put(&opened, None, seen);
        cache.put(&opened, Some(&a1), seen);
        assert!(cache.get(&t, &p, None).is_some());
        assert!(cache.get(&t, &p, Some(&a1)).is_some());
        // One invalidation drops them all; a flush drops everything.
        cache.invalidate(&t, &p);
        assert!(cache.get(&t, &p, None).is_none() && cache.get(&t, &p, Some(&a1)).is_none());
        let seen = cache.epoch(&t, &p);
        cache.put(&opened, None, seen);
        cache.flush();
        assert!(cache.get(&t, &p, None).is_none());
        // A flushed entry is still there as a last resort; a write drops it.
        assert!(cache.fallback(&t, &p, None).is_some());
        cache.invalidate(&t, &p);
        assert!(cache.fallback(&t, &p, None).is_none());
    }

    #[test]
    fn an_incoherent_cache_keeps_entries_only_its_short_lifetime() {
        let (t, p) = (TenantId::known("t"), ProviderKey::known("p"));
        let cache = TokenCache::new(Duration::from_millis(1), false);
        let opened = row(&t, &p);
        cache.put(&opened, None, cache.epoch(&t, &p));
        std::thread::sleep(Duration::from_millis(5));
        assert!(
            cache.get(&t, &p, None).is_none(),
            "short-lived while incoherent"
        );
        cache.set_coherent(true);
        cache.put(&opened, None, cache.epoch(&t, &p));
        std::thread::sleep(Duration::from_millis(5));
        assert!(
            cache.get(&t, &p, None).is_some(),
            "long-lived while coherent"
        );
    }
}
