//! How often the CRM used each connection: per API key name, per kind, per
//! UTC day, a count and the last time. Written in batches by the in-memory
//! counter (`app::usage`), read by the dashboard, kept for [`KEEP_DAYS`].

use crate::db::schema::connection_usage;
use crate::db::DbConn;
use crate::ids::ConnectionId;
use chrono::{NaiveDate, NaiveDateTime};
use diesel::prelude::*;
use std::collections::HashMap;

/// Days of usage kept: the dashboard's seven, and the day before them that
/// is still today somewhere.
pub const KEEP_DAYS: i64 = 8;

/// The days the dashboard's "uses in the last 7 days" sums: today (UTC) and
/// the six before.
pub const WEEK_DAYS: i64 = 7;

/// What a use was. Stored as its `as_str` name.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    diesel::AsExpression,
    diesel::FromSqlRow,
)]
#[diesel(sql_type = diesel::sql_types::Text)]
pub enum UsageKind {
    /// A token read through the token API.
    Token,
    /// A call through the proxy.
    Proxy,
}

impl UsageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            UsageKind::Token => "token",
            UsageKind::Proxy => "proxy",
        }
    }

    pub fn parse(name: &str) -> Option<UsageKind> {
        [UsageKind::Token, UsageKind::Proxy]
            .into_iter()
            .find(|k| k.as_str() == name)
    }

    /// How the dashboard names it.
    pub fn label(self) -> &'static str {
        match self {
            UsageKind::Token => "token",
            UsageKind::Proxy => "proxy call",
        }
    }
}

crate::db::models::text_column!(UsageKind, "connection_usage.kind", UsageKind::parse);

/// Uses counted for one connection, key, kind and day: a row, or what one
/// process adds to it.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = connection_usage)]
pub struct Usage {
    pub connection_id: ConnectionId,
    pub key_name: String,
    pub kind: UsageKind,
    pub day: NaiveDate,
    pub uses: i64,
    pub last_at: NaiveDateTime,
}

/// The upsert that adds a tally to its row: one statement both backends
/// spell the same (PostgreSQL's `$n`, which SQLite reads as `?n`). The row
/// is written only while its connection exists (a connection removed since
/// the use leaves nothing behind), and `last_at` only moves forward, so
/// that several instances may add to one row in any order.
const ADD: &str =
    "INSERT INTO connection_usage (connection_id, key_name, kind, day, uses, last_at) \
     SELECT $1, $2, $3, $4, $5, $6 WHERE EXISTS (SELECT 1 FROM connections WHERE id = $1) \
     ON CONFLICT (connection_id, key_name, kind, day) DO UPDATE SET \
     uses = connection_usage.uses + excluded.uses, \
     last_at = CASE WHEN excluded.last_at > connection_usage.last_at \
     THEN excluded.last_at ELSE connection_usage.last_at END";

impl Usage {
    /// Adds each tally to its row, in one transaction, in key order (two
    /// instances adding to the same rows then wait for each other rather
    /// than deadlock).
    pub fn add(conn: &mut DbConn, tallies: &[Usage]) -> QueryResult<()> {
        use diesel::sql_types::{BigInt, Date, Text, Timestamp};
        let sql = match conn {
            DbConn::Postgres(_) => ADD.to_string(),
            DbConn::Sqlite(_) => ADD.replace('$', "?"),
        };
        let mut sorted: Vec<&Usage> = tallies.iter().collect();
        sorted.sort_by(|a, b| {
            (&a.connection_id, &a.key_name, a.kind, a.day).cmp(&(
                &b.connection_id,
                &b.key_name,
                b.kind,
                b.day,
            ))
        });
        conn.transaction(|c| {
            for t in sorted {
                diesel::sql_query(&sql)
                    .bind::<Text, _>(t.connection_id.as_str())
                    .bind::<Text, _>(&t.key_name)
                    .bind::<Text, _>(t.kind.as_str())
                    .bind::<Date, _>(t.day)
                    .bind::<BigInt, _>(t.uses)
                    .bind::<Timestamp, _>(t.last_at)
                    .execute(c)?;
            }
            Ok(())
        })
    }

    /// The rows of these connections from `since` (a day) on.
    pub fn of_connections(
        conn: &mut DbConn,
        ids: &[ConnectionId],
        since: NaiveDate,
    ) -> QueryResult<Vec<Usage>> {
        connection_usage::table
            .filter(connection_usage::connection_id.eq_any(ids))
            .filter(connection_usage::day.ge(since))
            .select(Usage::as_select())
            .load(conn)
    }

    /// Deletes the rows of days before `before`; returns how many.
    pub fn prune(conn: &mut DbConn, before: NaiveDate) -> QueryResult<usize> {
        diesel::delete(connection_usage::table.filter(connection_usage::day.lt(before)))
            .execute(conn)
    }
}

/// What the dashboard says of one connection's use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The latest use: its kind, its key's name, when.
    pub last: (UsageKind, String, NaiveDateTime),
    /// Uses on `today` and the [`WEEK_DAYS`] - 1 days before it.
    pub week: i64,
}

/// Each connection's [`Summary`], from its rows.
pub fn summaries(rows: &[Usage], today: NaiveDate) -> HashMap<ConnectionId, Summary> {
    let first_day = today - chrono::Duration::days(WEEK_DAYS - 1);
    let mut out: HashMap<ConnectionId, Summary> = HashMap::new();
    for r in rows {
        let week = if r.day >= first_day && r.day <= today {
            r.uses
        } else {
            0
        };
        let last = (r.kind, r.key_name.clone(), r.last_at);
        match out.get_mut(&r.connection_id) {
            Some(s) => {
                s.week += week;
                if r.last_at > s.last.2 {
                    s.last = last;
                }
            }
            None => {
                out.insert(r.connection_id.clone(), Summary { last, week });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(conn: &str, key: &str, kind: UsageKind, day: &str, uses: i64, at: &str) -> Usage {
        Usage {
            connection_id: ConnectionId::known(conn),
            key_name: key.into(),
            kind,
            day: day.parse().unwrap(),
            uses,
            last_at: NaiveDateTime::parse_from_str(at, "%Y-%m-%d %H:%M").unwrap(),
        }
    }

    #[test]
    fn a_summary_names_the_latest_use_and_sums_seven_days() {
        let today: NaiveDate = "2026-12-07".parse().unwrap();
        let rows = [
            row(
                "c1",
                "chatbot",
                UsageKind::Token,
                "2026-12-07",
                3,
                "2026-12-07 09:00",
            ),
            row(
                "c1",
                "sync",
                UsageKind::Proxy,
                "2026-12-07",
                2,
                "2026-12-07 10:00",
            ),
            row(
                "c1",
                "chatbot",
                UsageKind::Token,
                "2026-12-01",
                5,
                "2026-12-01 08:00",
            ),
            // The eighth day back is kept but not counted.
            row(
                "c1",
                "chatbot",
                UsageKind::Token,
                "2026-11-30",
                7,
                "2026-11-30 08:00",
            ),
            row(
                "c2",
                "chatbot",
                UsageKind::Token,
                "2026-12-06",
                1,
                "2026-12-06 23:59",
            ),
        ];
        let s = summaries(&rows, today);
        let c1 = &s[&ConnectionId::known("c1")];
        assert_eq!(c1.week, 10);
        assert_eq!(c1.last.0, UsageKind::Proxy);
        assert_eq!(c1.last.1, "sync");
        assert_eq!(s[&ConnectionId::known("c2")].week, 1);
        assert!(!s.contains_key(&ConnectionId::known("c3")));
    }
}
