//! A short-lived cache of opened token sets, per process, so a warm token
//! request touches neither the database nor the key ring. Every write in this
//! process replaces or drops its entry; what another instance writes is seen
//! here within the cache's lifetime (`TETHER_TOKEN_CACHE_MS`). An entry is
//! only ever served while its access token is valid for the caller's min_ttl.

use crate::db::models::connection::{Connection, TokenSet};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// (tenant, provider): every write to one of its connections drops them all,
/// since the default may have moved.
type Key = (String, String);
/// The account asked for, `None` for the default.
type Account = Option<String>;
type Entry = (Connection, TokenSet, Instant);

pub struct TokenCache {
    ttl: Duration,
    entries: Mutex<HashMap<Key, HashMap<Account, Entry>>>,
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

    /// The entry for `account` (`None`: the default) of (tenant, provider).
    pub fn get(
        &self,
        tenant_id: &str,
        provider: &str,
        account: Option<&str>,
    ) -> Option<(Connection, TokenSet)> {
        if self.ttl.is_zero() {
            return None;
        }
        let map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&Self::key(tenant_id, provider))
            .and_then(|accounts| accounts.get(&account.map(str::to_string)))
            .filter(|(_, _, at)| at.elapsed() < self.ttl)
            .map(|(row, tokens, _)| (row.clone(), tokens.clone()))
    }

    /// Keeps `row` as the answer for `account` (`None`: the default).
    pub fn put(&self, row: &Connection, tokens: &TokenSet, account: Option<&str>) {
        if self.ttl.is_zero() {
            return;
        }
        let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= 10_000 {
            let ttl = self.ttl;
            map.retain(|_, accounts| {
                accounts.retain(|_, (_, _, at)| at.elapsed() < ttl);
                !accounts.is_empty()
            });
        }
        map.entry(Self::key(&row.tenant_id, &row.provider))
            .or_default()
            .insert(
                account.map(str::to_string),
                (row.clone(), tokens.clone(), Instant::now()),
            );
    }

    /// Drops every entry of (tenant, provider) after a write to one of its
    /// connections: the default may have moved with it.
    pub fn forget(&self, tenant_id: &str, provider: &str) {
        let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(&Self::key(tenant_id, provider));
    }
}
