//! Running instances and their heartbeats: who may still hold a provider's
//! answer for a row whose lease lapsed (see `app::held`).

use crate::db::schema::instances;
use crate::db::DbConn;
use chrono::NaiveDateTime;
use diesel::prelude::*;
use std::time::Duration;

/// How often an instance writes its heartbeat.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);

/// How long an instance may be silent before it counts as gone, and how
/// long an instance must have seen the database answer before it takes over
/// a lapsed lease of a silent one: five missed heartbeats, so a slow write
/// or a pause is never mistaken for a death, and once the database is back
/// after an outage every live instance has stored what it held long before.
pub const SILENT_FOR: Duration = Duration::from_secs(10);

pub struct Instance;

/// What an instance tells the others about itself: its id, the key ids of
/// its ring (primary first, comma-separated) and its session key's
/// fingerprint. Never key material.
#[derive(Debug, Clone)]
pub struct Fingerprints {
    pub id: String,
    pub key_ids: String,
    pub session_key_check: String,
}

/// Another live instance, as it told of itself (an instance of an earlier
/// release tells nothing: empty `key_ids`, no `session_key_check`).
#[derive(Debug, Clone)]
pub struct Peer {
    pub id: String,
    pub started_at: NaiveDateTime,
    /// Primary first.
    pub key_ids: Vec<String>,
    pub session_key_check: Option<String>,
}

/// Whose lapsed leases a claim may take: its own instance's always (the
/// process itself knows whether it holds an answer for the row), another
/// instance's only when `silent_since` is set and that instance has not
/// beaten since then (or left no row: it stopped cleanly, or predates
/// heartbeats).
#[derive(Debug, Clone)]
pub struct Takeover {
    /// `<instance id>:%`, matching this instance's lease owners.
    own: String,
    silent_since: Option<NaiveDateTime>,
}

impl Takeover {
    /// `instance` claiming now, having seen the database answer without a
    /// break for `up_for` (`None`: it is away).
    pub fn new(instance: &str, up_for: Option<Duration>, now: NaiveDateTime) -> Takeover {
        let silent_since = up_for
            .filter(|up| *up >= SILENT_FOR)
            .map(|_| now - chrono::Duration::from_std(SILENT_FOR).unwrap_or_default());
        Takeover {
            own: format!("{instance}:%"),
            silent_since,
        }
    }

    /// The condition on a `connections` row whose lease is free or lapsed:
    /// [`TAKEABLE`], with these binds in order.
    pub fn binds(&self) -> (&str, bool, NaiveDateTime) {
        let others = self.silent_since.is_some();
        (&self.own, others, self.silent_since.unwrap_or_default())
    }
}

/// SQL of the takeover rule for a row of `connections` (see [`Takeover`]);
/// `{own}`, `{others}` and `{since}` are the placeholders of its binds.
pub const TAKEABLE: &str =
    "(lease_owner IS NULL OR lease_owner LIKE {own} OR ({others} AND NOT EXISTS \
     (SELECT 1 FROM instances WHERE connections.lease_owner LIKE (instances.id || ':%') \
     AND instances.heartbeat_at > {since})))";

impl Instance {
    /// Writes this instance's heartbeat (its row is made on the first),
    /// with what it encrypts and signs with.
    pub fn beat(conn: &mut DbConn, me: &Fingerprints, at: NaiveDateTime) -> QueryResult<()> {
        let n = diesel::update(instances::table.find(&me.id))
            .set((
                instances::heartbeat_at.eq(at),
                instances::key_ids.eq(&me.key_ids),
                instances::session_key_check.eq(&me.session_key_check),
            ))
            .execute(conn)?;
        if n == 0 {
            // Only this instance writes its row: no race to insert it.
            diesel::insert_into(instances::table)
                .values((
                    instances::id.eq(&me.id),
                    instances::started_at.eq(at),
                    instances::heartbeat_at.eq(at),
                    instances::key_ids.eq(&me.key_ids),
                    instances::session_key_check.eq(&me.session_key_check),
                ))
                .execute(conn)?;
        }
        Ok(())
    }

    /// The other instances that beat within [`SILENT_FOR`] of `at`.
    pub fn live_peers(conn: &mut DbConn, me: &str, at: NaiveDateTime) -> QueryResult<Vec<Peer>> {
        let since = at - chrono::Duration::from_std(SILENT_FOR).unwrap_or_default();
        instances::table
            .filter(instances::id.ne(me))
            .filter(instances::heartbeat_at.gt(since))
            .order(instances::started_at.asc())
            .select((
                instances::id,
                instances::started_at,
                instances::key_ids,
                instances::session_key_check,
            ))
            .load::<(String, NaiveDateTime, Option<String>, Option<String>)>(conn)
            .map(|rows| {
                rows.into_iter()
                    .map(|(id, started_at, key_ids, session_key_check)| Peer {
                        id,
                        started_at,
                        key_ids: key_ids
                            .map(|k| k.split(',').map(str::to_string).collect())
                            .unwrap_or_default(),
                        session_key_check,
                    })
                    .collect()
            })
    }

    /// Deletes this instance's row at a graceful stop that left nothing
    /// held: its leases are released, nobody need wait for it. Rows of
    /// instances silent for a day go at the same time.
    pub fn leave(conn: &mut DbConn, id: &str, at: NaiveDateTime) -> QueryResult<()> {
        diesel::delete(
            instances::table.filter(
                instances::id
                    .eq(id)
                    .or(instances::heartbeat_at.lt(at - chrono::Duration::days(1))),
            ),
        )
        .execute(conn)?;
        Ok(())
    }
}
