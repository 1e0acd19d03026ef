//! What the CRM does with each connection, counted in memory: a token read
//! or a proxied call adds one to its (connection, API key name, kind, UTC
//! day) under a short lock, and never touches the database. A worker adds
//! the counts to `connection_usage` every `TETHER_USAGE_FLUSH_MS` (and a
//! graceful stop once more; see `workers::flush_usage`), so a crash loses
//! at most one interval of counts; while the database is away they are kept
//! for the next flush.

use crate::db::models::usage::{Usage, UsageKind};
use crate::ids::ConnectionId;
use chrono::{NaiveDate, NaiveDateTime};
use std::collections::HashMap;
use std::sync::Mutex;

/// One tally's key.
type Key = (ConnectionId, String, UsageKind, NaiveDate);

/// The uses counted since the last flush.
#[derive(Default)]
pub struct UsageCounter {
    tallies: Mutex<HashMap<Key, (i64, NaiveDateTime)>>,
}

impl UsageCounter {
    /// Counts one use of the connection by the key named `key_name`, now.
    pub fn count(&self, connection: &ConnectionId, key_name: &str, kind: UsageKind) {
        self.add(connection, key_name, kind, crate::db::now(), 1);
    }

    fn add(
        &self,
        connection: &ConnectionId,
        key_name: &str,
        kind: UsageKind,
        at: NaiveDateTime,
        uses: i64,
    ) {
        let key = (connection.clone(), key_name.to_string(), kind, at.date());
        let mut tallies = self.tallies.lock().unwrap_or_else(|e| e.into_inner());
        let tally = tallies.entry(key).or_insert((0, at));
        tally.0 += uses;
        tally.1 = tally.1.max(at);
    }

    /// Takes every tally counted so far, leaving none (to be written).
    pub fn take(&self) -> Vec<Usage> {
        let taken = std::mem::take(&mut *self.tallies.lock().unwrap_or_else(|e| e.into_inner()));
        taken
            .into_iter()
            .map(
                |((connection_id, key_name, kind, day), (uses, last_at))| Usage {
                    connection_id,
                    key_name,
                    kind,
                    day,
                    uses,
                    last_at,
                },
            )
            .collect()
    }

    /// Puts back tallies a flush could not write, for the next one.
    pub fn put_back(&self, tallies: Vec<Usage>) {
        for t in tallies {
            self.add(&t.connection_id, &t.key_name, t.kind, t.last_at, t.uses);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uses_add_up_per_connection_key_kind_and_day() {
        let counter = UsageCounter::default();
        let (c1, c2) = (ConnectionId::known("c1"), ConnectionId::known("c2"));
        counter.count(&c1, "chatbot", UsageKind::Token);
        counter.count(&c1, "chatbot", UsageKind::Token);
        counter.count(&c1, "chatbot", UsageKind::Proxy);
        counter.count(&c1, "sync", UsageKind::Token);
        counter.count(&c2, "chatbot", UsageKind::Token);
        let mut taken = counter.take();
        taken.sort_by(|a, b| {
            (&a.connection_id, &a.key_name, a.kind).cmp(&(&b.connection_id, &b.key_name, b.kind))
        });
        let uses: Vec<_> = taken
            .iter()
            .map(|t| {
                (
                    t.connection_id.as_str(),
                    t.key_name.as_str(),
                    t.kind,
                    t.uses,
                )
            })
            .collect();
        assert_eq!(
            uses,
            [
                ("c1", "chatbot", UsageKind::Token, 2),
                ("c1", "chatbot", UsageKind::Proxy, 1),
                ("c1", "sync", UsageKind::Token, 1),
                ("c2", "chatbot", UsageKind::Token, 1),
            ]
        );
        assert!(counter.take().is_empty());
        // What a failed flush puts back is counted with what came since.
        counter.put_back(taken);
        counter.count(&c2, "chatbot", UsageKind::Token);
        let back = counter.take();
        let c2_uses: i64 = back
            .iter()
            .filter(|t| t.connection_id == c2)
            .map(|t| t.uses)
            .sum();
        assert_eq!(c2_uses, 2);
    }
}
