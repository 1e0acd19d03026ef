//! Disconnecting: erasing a connection's tokens and passing on its default.

use super::row::{Connection, Status};
use crate::db::listen::notify_changed;
use crate::db::schema::connections;
use crate::db::{now, DbConn};
use crate::ids::ConnectionId;
use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::Connection as _;

impl Connection {
    /// Marks the connection disconnected, erases its tokens and clears its
    /// default flag; if it was the default, the earliest-connected remaining
    /// account becomes the default, so that no other account silently takes
    /// over by recency. One transaction. Returns the default afterwards
    /// (`None`: the provider is not connected any more). The promoted row's
    /// version is left alone: its tokens did not change, and a bump would
    /// make a refresh of it under way fail its compare-and-swap.
    pub fn erase(conn: &mut DbConn, id: &ConnectionId) -> QueryResult<Option<Connection>> {
        conn.transaction(|conn| {
            diesel::update(connections::table.find(id))
                .set((
                    connections::status.eq(Status::Disconnected.as_str()),
                    connections::token_ciphertext.eq(None::<Vec<u8>>),
                    connections::key_id.eq(None::<String>),
                    connections::expires_at.eq(None::<NaiveDateTime>),
                    connections::next_refresh_at.eq(None::<NaiveDateTime>),
                    connections::lease_owner.eq(None::<String>),
                    connections::lease_until.eq(None::<NaiveDateTime>),
                    connections::is_default.eq(false),
                    connections::version.eq(connections::version + 1),
                    connections::updated_at.eq(now()),
                ))
                .execute(conn)?;
            let Some(erased) = Connection::by_id(conn, id).optional()? else {
                return Ok(None);
            };
            notify_changed(conn, &erased.tenant_id, &erased.provider)?;
            if let Some(default) =
                Connection::default_for(conn, &erased.tenant_id, &erased.provider)?
            {
                return Ok(Some(default));
            }
            let Some(next) = Connection::accounts(conn, &erased.tenant_id, &erased.provider)?
                .into_iter()
                .next()
            else {
                return Ok(None);
            };
            diesel::update(connections::table.find(&next.id))
                .set(connections::is_default.eq(true))
                .execute(conn)?;
            Ok(Some(Connection {
                is_default: true,
                ..next
            }))
        })
    }
}
