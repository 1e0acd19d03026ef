//! A short-lived cache of opened token sets, per process, so a warm token
//! request touches neither the database nor the key ring. Every write in this
//! process replaces or drops its entry; what another instance writes is seen
//! here within the cache's lifetime (`TETHER_TOKEN_CACHE_MS`). An entry is
//! only ever served while its access token is valid for the caller's min_ttl.

use crate::db::models::connection::{Connection, TokenSet};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

type Key = (String, String);

pub struct TokenCache {
    ttl: Duration,
    entries: Mutex<HashMap<Key, (Connection, TokenSet, Instant)>>,
}

impl TokenCache {
    /// A cache whose entries live `ttl`; zero turns it off.
    pub fn new(ttl: Duration) -> TokenCache {
        TokenCache {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn key(tenant_id: &str, provider: &str) -> Key {
        (tenant_id.to_string(), provider.to_string())
    }

    pub fn get(&self, tenant_id: &str, provider: &str) -> Option<(Connection, TokenSet)> {
        if self.ttl.is_zero() {
            return None;
        }
        let map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&Self::key(tenant_id, provider))
            .filter(|(_, _, at)| at.elapsed() < self.ttl)
            .map(|(row, tokens, _)| (row.clone(), tokens.clone()))
    }

    pub fn put(&self, row: &Connection, tokens: &TokenSet) {
        if self.ttl.is_zero() {
            return;
        }
        let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= 10_000 {
            let ttl = self.ttl;
            map.retain(|_, (_, _, at)| at.elapsed() < ttl);
        }
        map.insert(
            Self::key(&row.tenant_id, &row.provider),
            (row.clone(), tokens.clone(), Instant::now()),
        );
    }

    /// Drops the entry after a write that changed the connection.
    pub fn forget(&self, tenant_id: &str, provider: &str) {
        let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(&Self::key(tenant_id, provider));
    }
}
