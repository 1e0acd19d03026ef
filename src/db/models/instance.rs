//! Running instances and their heartbeats: who may still hold a provider's
//! answer for a row whose lease lapsed (see `refresh::held`).

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
    /// Writes this instance's heartbeat (its row is made on the first).
    pub fn beat(conn: &mut DbConn, id: &str, at: NaiveDateTime) -> QueryResult<()> {
        let n = diesel::update(instances::table.find(id))
            .set(instances::heartbeat_at.eq(at))
            .execute(conn)?;
        if n == 0 {
            // Only this instance writes its row: no race to insert it.
            diesel::insert_into(instances::table)
                .values((
                    instances::id.eq(id),
                    instances::started_at.eq(at),
                    instances::heartbeat_at.eq(at),
                ))
                .execute(conn)?;
        }
        Ok(())
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
