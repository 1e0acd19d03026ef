//! What the proxy spent of providers' per-account budgets, shared by every
//! instance: calls per (provider, account, budget window, bucket). A spend
//! is one conditional upsert per budget, in one transaction: no instance
//! reads a count and then writes it, so two instances never both take the
//! last call of a budget. The arithmetic is `app::budgets`.

use crate::db::schema::proxy_budgets;
use crate::db::DbConn;
use chrono::NaiveDateTime;
use diesel::prelude::*;

/// One budget of an account at the moment of a call: the buckets counted
/// (`lowest` to `current`), the calls it allows, and when the current
/// bucket's row stops mattering.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub window_secs: i64,
    pub lowest: i64,
    pub current: i64,
    pub calls: i64,
    pub expires_at: NaiveDateTime,
}

/// Adds one call to the current bucket when the counted buckets hold fewer
/// than the budget: the earlier buckets are summed in the statement, and
/// the current one is the row the upsert locks (PostgreSQL re-reads it
/// after waiting for another instance's spend; SQLite writes one at a
/// time), so the condition is never checked against a stale count.
/// PostgreSQL's `$n`, which SQLite reads as `?n`. One row changed: spent.
const SPEND: &str = "INSERT INTO proxy_budgets \
     (provider, account_id, window_secs, bucket, spent, expires_at) \
     SELECT $1, $2, $3, $4, 1, $5 \
     WHERE (SELECT COALESCE(SUM(e.spent), 0) FROM proxy_budgets e \
       WHERE e.provider = $1 AND e.account_id = $2 AND e.window_secs = $3 \
       AND e.bucket >= $6 AND e.bucket < $4) < $7 \
     ON CONFLICT (provider, account_id, window_secs, bucket) DO UPDATE \
     SET spent = proxy_budgets.spent + 1 \
     WHERE proxy_budgets.spent + (SELECT COALESCE(SUM(e.spent), 0) FROM proxy_budgets e \
       WHERE e.provider = $1 AND e.account_id = $2 AND e.window_secs = $3 \
       AND e.bucket >= $6 AND e.bucket < $4) < $7";

/// Why a spend did not happen.
enum Unspent {
    /// The window at this index has no call left.
    Spent(usize),
    Db(diesel::result::Error),
}

impl From<diesel::result::Error> for Unspent {
    fn from(e: diesel::result::Error) -> Self {
        Unspent::Db(e)
    }
}

/// Spends one call of every window of the account, or none: `Ok(None)`
/// when spent, `Ok(Some(i))` when window `i` had no call left (nothing is
/// spent then).
pub fn spend(
    conn: &mut DbConn,
    provider: &str,
    account: &str,
    windows: &[Window],
) -> QueryResult<Option<usize>> {
    use diesel::sql_types::{BigInt, Text, Timestamp};
    let sql = match conn {
        DbConn::Postgres(_) => SPEND.to_string(),
        DbConn::Sqlite(_) => SPEND.replace('$', "?"),
    };
    let postgres = matches!(conn, DbConn::Postgres(_));
    let outcome = conn.transaction::<(), Unspent, _>(|c| {
        if postgres {
            // A spend need not wait for the disk: after a crash of the
            // server, at most its last fraction of a second of spends is
            // forgotten (a few calls over a budget, once), where waiting
            // for each commit's flush costs every proxied call ~2 ms.
            diesel::sql_query("SET LOCAL synchronous_commit TO OFF").execute(c)?;
        }
        for (i, w) in windows.iter().enumerate() {
            let changed = diesel::sql_query(&sql)
                .bind::<Text, _>(provider)
                .bind::<Text, _>(account)
                .bind::<BigInt, _>(w.window_secs)
                .bind::<BigInt, _>(w.current)
                .bind::<Timestamp, _>(w.expires_at)
                .bind::<BigInt, _>(w.lowest)
                .bind::<BigInt, _>(w.calls)
                .execute(c)?;
            if changed == 0 {
                return Err(Unspent::Spent(i));
            }
        }
        Ok(())
    });
    match outcome {
        Ok(()) => Ok(None),
        Err(Unspent::Spent(i)) => Ok(Some(i)),
        Err(Unspent::Db(e)) => Err(e),
    }
}

/// The calls counted in a window's buckets, as (bucket, calls).
pub fn counted(
    conn: &mut DbConn,
    provider: &str,
    account: &str,
    window: &Window,
) -> QueryResult<Vec<(i64, i64)>> {
    proxy_budgets::table
        .filter(proxy_budgets::provider.eq(provider))
        .filter(proxy_budgets::account_id.eq(account))
        .filter(proxy_budgets::window_secs.eq(window.window_secs))
        .filter(proxy_budgets::bucket.ge(window.lowest))
        .filter(proxy_budgets::bucket.le(window.current))
        .select((proxy_budgets::bucket, proxy_budgets::spent))
        .load(conn)
}

/// Deletes the rows no budget counts any more (expired before `now`);
/// returns how many. Housekeeping runs it every refresh interval, so each
/// round finds only the buckets that expired since the last.
pub fn prune(conn: &mut DbConn, now: NaiveDateTime) -> QueryResult<usize> {
    diesel::delete(proxy_budgets::table.filter(proxy_budgets::expires_at.lt(now))).execute(conn)
}
