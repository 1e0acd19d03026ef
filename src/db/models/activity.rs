//! A tenant's activity for one provider as the dashboard reads it: its
//! events, newest first, each with the account it concerns (and when that
//! account's next refresh is due), a page at a time.

use super::event::Event;
use crate::db::schema::{connections, events};
use crate::db::DbConn;
use crate::ids::{ProviderKey, TenantId};
use chrono::NaiveDateTime;
use diesel::prelude::*;

/// An event and, when it concerns a connection that still exists, that
/// connection's account.
#[derive(Debug, Clone)]
pub struct Activity {
    pub event: Event,
    pub account: Option<Account>,
}

/// The account an event concerns.
#[derive(Debug, Clone, Queryable)]
pub struct Account {
    pub id: String,
    pub name: Option<String>,
    /// When its next refresh is due.
    pub next_refresh_at: Option<NaiveDateTime>,
}

impl Account {
    /// Its name, else its id.
    pub fn label(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.id)
    }
}

/// Where a page starts: just older than this event (its time, then its id).
#[derive(Debug, Clone)]
pub struct Cursor {
    pub created_at: NaiveDateTime,
    pub id: String,
}

impl Activity {
    /// Up to `limit` events of the tenant's provider, newest first (by time,
    /// then id), older than `before` when given.
    pub fn page(
        conn: &mut DbConn,
        tenant_id: &TenantId,
        provider: &ProviderKey,
        before: Option<&Cursor>,
        limit: i64,
    ) -> QueryResult<Vec<Activity>> {
        let mut query = events::table
            .left_join(connections::table)
            .filter(events::tenant_id.eq(tenant_id))
            .filter(events::provider.eq(provider))
            .order((events::created_at.desc(), events::id.desc()))
            .limit(limit)
            .select((
                Event::as_select(),
                (
                    connections::account_id,
                    connections::account_name,
                    connections::next_refresh_at,
                )
                    .nullable(),
            ))
            .into_boxed();
        if let Some(c) = before {
            query = query.filter(
                events::created_at.lt(c.created_at).or(events::created_at
                    .eq(c.created_at)
                    .and(events::id.lt(c.id.clone()))),
            );
        }
        let rows: Vec<(Event, Option<Account>)> = query.load(conn)?;
        Ok(rows
            .into_iter()
            .map(|(event, account)| Activity { event, account })
            .collect())
    }

    /// The cursor of the event `id`, when it is one of the tenant's
    /// provider's (another tenant's id is no cursor here).
    pub fn cursor(
        conn: &mut DbConn,
        tenant_id: &TenantId,
        provider: &ProviderKey,
        id: &str,
    ) -> QueryResult<Option<Cursor>> {
        let at = events::table
            .filter(events::id.eq(id))
            .filter(events::tenant_id.eq(tenant_id))
            .filter(events::provider.eq(provider))
            .select(events::created_at)
            .first::<NaiveDateTime>(conn)
            .optional()?;
        Ok(at.map(|created_at| Cursor {
            created_at,
            id: id.to_string(),
        }))
    }
}
