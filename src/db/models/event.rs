//! The audit trail of a connection: who connected, refreshed or disconnected it, and when.

use crate::db::schema::{connections, events};
use crate::db::{new_id, now, DbConn};
use crate::ids::{AccountId, ConnectionId, ProviderKey, TenantId};
use chrono::NaiveDateTime;
use diesel::prelude::*;

#[derive(Debug, Clone, Queryable, Selectable, serde::Serialize)]
#[diesel(table_name = events)]
pub struct Event {
    pub id: String,
    pub tenant_id: TenantId,
    pub connection_id: Option<ConnectionId>,
    pub provider: ProviderKey,
    pub kind: EventKind,
    pub actor: String,
    pub detail: Option<String>,
    pub created_at: NaiveDateTime,
}

/// What happened to a connection. Stored as its `as_str` name; a stored
/// name this version does not know is refused when read, never taken for
/// another kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, diesel::AsExpression, diesel::FromSqlRow)]
#[diesel(sql_type = diesel::sql_types::Text)]
pub enum EventKind {
    Connected,
    Reconnected,
    Refreshed,
    RefreshFailed,
    NeedsReconnect,
    Disconnected,
    Revoked,
    RefreshTokenExpiring,
    /// The tenant switched the provider on again (integration settings).
    IntegrationEnabled,
    /// The tenant switched the provider off.
    IntegrationDisabled,
    /// The tenant's settings for the provider changed.
    SettingsChanged,
    /// The provider says its app was installed (again) on a bound account.
    Installed,
    /// A connect did not end in a connection: the person declined at the
    /// provider, or the provider refused the code exchange. No connection row.
    ConnectFailed,
    /// Refreshing has failed without a break for longer than
    /// `TETHER_REFRESH_FAILING_AFTER`: said once per streak.
    RefreshFailing,
    /// A refresh succeeded again after failing (status `error`).
    Recovered,
}

impl EventKind {
    pub const ALL: [EventKind; 15] = [
        EventKind::Connected,
        EventKind::Reconnected,
        EventKind::Refreshed,
        EventKind::RefreshFailed,
        EventKind::NeedsReconnect,
        EventKind::Disconnected,
        EventKind::Revoked,
        EventKind::RefreshTokenExpiring,
        EventKind::IntegrationEnabled,
        EventKind::IntegrationDisabled,
        EventKind::SettingsChanged,
        EventKind::Installed,
        EventKind::ConnectFailed,
        EventKind::RefreshFailing,
        EventKind::Recovered,
    ];

    /// The name stored in `events.kind` and sent as a webhook's `type`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Connected => "connected",
            EventKind::Reconnected => "reconnected",
            EventKind::Refreshed => "refreshed",
            EventKind::RefreshFailed => "refresh_failed",
            EventKind::NeedsReconnect => "needs_reconnect",
            EventKind::Disconnected => "disconnected",
            EventKind::Revoked => "revoked",
            EventKind::RefreshTokenExpiring => "refresh_token_expiring",
            EventKind::IntegrationEnabled => "integration_enabled",
            EventKind::IntegrationDisabled => "integration_disabled",
            EventKind::SettingsChanged => "settings_changed",
            EventKind::Installed => "installed",
            EventKind::ConnectFailed => "connect_failed",
            EventKind::RefreshFailing => "refresh_failing",
            EventKind::Recovered => "recovered",
        }
    }

    pub fn parse(name: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// How the dashboard's activity list names it.
    pub fn label(self) -> &'static str {
        match self {
            EventKind::Connected => "Connected",
            EventKind::Reconnected => "Reconnected",
            EventKind::Refreshed => "Refreshed",
            EventKind::RefreshFailed => "Refresh failed",
            EventKind::NeedsReconnect => "Needs reconnecting",
            EventKind::Disconnected => "Disconnected",
            EventKind::Revoked => "Revoked at the provider",
            EventKind::RefreshTokenExpiring => "Access lapses soon",
            EventKind::IntegrationEnabled => "Enabled",
            EventKind::IntegrationDisabled => "Disabled",
            EventKind::SettingsChanged => "Settings changed",
            EventKind::Installed => "Installed at the provider",
            EventKind::ConnectFailed => "Connect failed",
            EventKind::RefreshFailing => "Refresh failing for long",
            EventKind::Recovered => "Recovered",
        }
    }

    /// Whether it is sent as a webhook. Routine refreshes and transient
    /// failures are not: they would drown the ones an operator must act on.
    pub fn notifies(self) -> bool {
        !matches!(self, EventKind::Refreshed | EventKind::RefreshFailed)
    }
}

crate::db::models::text_column!(EventKind, "events.kind", EventKind::parse);

impl serde::Serialize for EventKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Who did what an event records; stored as its `Display` form
/// (`admin:<email>`, `api:<key name>`, `connect-link`, `scheduler`,
/// `token-api`, `cli`, `import:api:<key name>`, `import:cli`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// A tenant admin in the dashboard (email unknown: empty).
    Admin { email: String },
    /// A CRM service, by the name of its API key.
    ApiKey { name: String },
    /// A person who followed a connect link.
    ConnectLink,
    /// The refresh scheduler.
    Scheduler,
    /// A token request that found its token due.
    TokenApi,
    /// An operator at the command line.
    Cli,
    /// Tokens imported from the CRM's own store; `by` is who ran the
    /// import (`api:<key name>`, `cli`).
    Import { by: String },
    /// The provider itself: a Marketplace install or an app webhook.
    Provider { key: String },
}

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Actor::Admin { email } if email.is_empty() => f.write_str("admin"),
            Actor::Admin { email } => write!(f, "admin:{email}"),
            Actor::ApiKey { name } => write!(f, "api:{name}"),
            Actor::ConnectLink => f.write_str("connect-link"),
            Actor::Scheduler => f.write_str("scheduler"),
            Actor::TokenApi => f.write_str("token-api"),
            Actor::Cli => f.write_str("cli"),
            Actor::Import { by } => write!(f, "import:{by}"),
            Actor::Provider { key } => write!(f, "provider:{key}"),
        }
    }
}

impl Actor {
    /// The actor an `events.actor` string names: the one reading of what
    /// [`Display`](std::fmt::Display) writes. `None` for a string no
    /// version wrote.
    pub fn parse(stored: &str) -> Option<Actor> {
        let actor = match stored {
            "admin" => Actor::Admin {
                email: String::new(),
            },
            "connect-link" => Actor::ConnectLink,
            "scheduler" => Actor::Scheduler,
            "token-api" => Actor::TokenApi,
            "cli" => Actor::Cli,
            _ => {
                let (kind, rest) = stored.split_once(':')?;
                let rest = rest.to_string();
                match kind {
                    "admin" => Actor::Admin { email: rest },
                    "api" => Actor::ApiKey { name: rest },
                    "import" => Actor::Import { by: rest },
                    "provider" => Actor::Provider { key: rest },
                    _ => return None,
                }
            }
        };
        Some(actor)
    }
}

/// Which of a tenant's events [`Event::page`] reads: all, or those of one
/// provider, of one account, of some kinds.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub provider: Option<ProviderKey>,
    pub account: Option<AccountId>,
    /// Empty: every kind.
    pub kinds: Vec<EventKind>,
    /// The providers the caller may see (an API key limited to some);
    /// `None`: every provider.
    pub visible_providers: Option<Vec<String>>,
}

/// A place in a tenant's events, newest first: a page read after it holds
/// the events older than this one (by time, then id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub created_at: NaiveDateTime,
    pub id: String,
}

impl Position {
    /// The place just after `event`.
    pub fn of(event: &Event) -> Position {
        Position {
            created_at: event.created_at,
            id: event.id.clone(),
        }
    }
}

/// An event as [`Event::page`] lists it: with the account of its
/// connection, when it concerns one that still exists.
#[derive(Debug, Clone)]
pub struct Listed {
    pub event: Event,
    pub account: Option<ListedAccount>,
}

/// A listed event's account: its id and name.
pub type ListedAccount = (AccountId, Option<String>);

/// An event to record. `detail` must never contain a secret.
#[derive(Debug, Clone, Copy)]
pub struct NewEvent<'a> {
    pub tenant_id: &'a TenantId,
    pub connection_id: Option<&'a ConnectionId>,
    pub provider: &'a ProviderKey,
    pub kind: EventKind,
    pub actor: &'a Actor,
    pub detail: Option<&'a str>,
}

#[derive(Insertable)]
#[diesel(table_name = events)]
struct EventRow<'a> {
    id: &'a str,
    tenant_id: &'a TenantId,
    connection_id: Option<&'a ConnectionId>,
    provider: &'a ProviderKey,
    kind: &'a str,
    actor: &'a str,
    detail: Option<&'a str>,
    created_at: NaiveDateTime,
}

impl Event {
    /// Records `new`.
    pub fn record(conn: &mut DbConn, new: &NewEvent) -> QueryResult<Event> {
        let actor = new.actor.to_string();
        let event = Event {
            id: new_id(),
            tenant_id: new.tenant_id.clone(),
            connection_id: new.connection_id.cloned(),
            provider: new.provider.clone(),
            kind: new.kind,
            actor: actor.clone(),
            detail: new.detail.map(Into::into),
            created_at: now(),
        };
        diesel::insert_into(events::table)
            .values(EventRow {
                id: &event.id,
                tenant_id: new.tenant_id,
                connection_id: new.connection_id,
                provider: new.provider,
                kind: new.kind.as_str(),
                actor: &actor,
                detail: new.detail,
                created_at: event.created_at,
            })
            .execute(conn)?;
        Ok(event)
    }

    /// Whether the connection has an event of `kind` since `since`.
    pub fn exists_since(
        conn: &mut DbConn,
        connection_id: &ConnectionId,
        kind: EventKind,
        since: NaiveDateTime,
    ) -> QueryResult<bool> {
        diesel::select(diesel::dsl::exists(
            events::table
                .filter(events::connection_id.eq(connection_id))
                .filter(events::kind.eq(kind.as_str()))
                .filter(events::created_at.ge(since)),
        ))
        .get_result(conn)
    }

    /// The latest events of a tenant's provider, state changes
    /// (connected, failures, needs_reconnect...) first, newest first, then
    /// routine refreshes. The dashboard lists activity strictly by time
    /// (`models::activity`); this order is for reading what changed.
    pub fn recent(
        conn: &mut DbConn,
        tenant_id: &TenantId,
        provider: &ProviderKey,
        limit: i64,
    ) -> QueryResult<Vec<Event>> {
        events::table
            .filter(events::tenant_id.eq(tenant_id))
            .filter(events::provider.eq(provider))
            // false sorts first on both backends.
            .order((
                events::kind.eq(EventKind::Refreshed.as_str()).asc(),
                events::created_at.desc(),
                events::id.desc(),
            ))
            .limit(limit)
            .select(Event::as_select())
            .load(conn)
    }

    /// Up to `limit` of the tenant's events that `filter` lets through,
    /// newest first (by time, then id), each with its connection's account;
    /// only those older than `after` when given. Paging by position rather
    /// than by offset: events recorded meanwhile are newer than any position
    /// handed out, so they shift no page.
    pub fn page(
        conn: &mut DbConn,
        tenant_id: &TenantId,
        filter: &Filter,
        after: Option<&Position>,
        limit: i64,
    ) -> QueryResult<Vec<Listed>> {
        let mut query = events::table
            .left_join(connections::table)
            .filter(events::tenant_id.eq(tenant_id))
            .order((events::created_at.desc(), events::id.desc()))
            .limit(limit)
            .select((
                Event::as_select(),
                (connections::account_id, connections::account_name).nullable(),
            ))
            .into_boxed();
        if let Some(provider) = &filter.provider {
            query = query.filter(events::provider.eq(provider));
        }
        if let Some(account) = &filter.account {
            query = query.filter(connections::account_id.eq(account));
        }
        if let Some(visible) = &filter.visible_providers {
            query = query.filter(events::provider.eq_any(visible));
        }
        if !filter.kinds.is_empty() {
            let kinds: Vec<&str> = filter.kinds.iter().map(|k| k.as_str()).collect();
            query = query.filter(events::kind.eq_any(kinds));
        }
        if let Some(p) = after {
            query = query.filter(
                events::created_at.lt(p.created_at).or(events::created_at
                    .eq(p.created_at)
                    .and(events::id.lt(p.id.clone()))),
            );
        }
        let rows: Vec<(Event, Option<ListedAccount>)> = query.load(conn)?;
        Ok(rows
            .into_iter()
            .map(|(event, account)| Listed { event, account })
            .collect())
    }

    /// Deletes up to `batch` events older than `before`; returns how many.
    pub fn prune(conn: &mut DbConn, before: NaiveDateTime, batch: i64) -> QueryResult<usize> {
        let old: Vec<String> = events::table
            .filter(events::created_at.lt(before))
            .select(events::id)
            .limit(batch)
            .load(conn)?;
        diesel::delete(events::table.filter(events::id.eq_any(&old))).execute(conn)
    }
}

#[cfg(test)]
mod tests {
    use super::{Actor, EventKind};

    #[test]
    fn actors_are_stored_as_they_always_were() {
        let admin = Actor::Admin {
            email: "a@b.example".into(),
        };
        assert_eq!(admin.to_string(), "admin:a@b.example");
        let unknown = Actor::Admin {
            email: String::new(),
        };
        assert_eq!(unknown.to_string(), "admin");
        let key = Actor::ApiKey {
            name: "chatbot".into(),
        };
        assert_eq!(key.to_string(), "api:chatbot");
        assert_eq!(Actor::ConnectLink.to_string(), "connect-link");
        assert_eq!(Actor::Scheduler.to_string(), "scheduler");
        assert_eq!(Actor::TokenApi.to_string(), "token-api");
        assert_eq!(Actor::Cli.to_string(), "cli");
        let import = Actor::Import {
            by: "api:chatbot".into(),
        };
        assert_eq!(import.to_string(), "import:api:chatbot");
        let acme = Actor::Provider { key: "acme".into() };
        assert_eq!(acme.to_string(), "provider:acme");
        for actor in [admin, unknown, key, import, acme].into_iter().chain([
            Actor::ConnectLink,
            Actor::Scheduler,
            Actor::TokenApi,
            Actor::Cli,
        ]) {
            assert_eq!(Actor::parse(&actor.to_string()), Some(actor));
        }
        assert_eq!(Actor::parse("robot"), None);
    }

    #[test]
    fn every_kind_reads_back_from_its_name_and_only_routine_ones_stay_quiet() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(EventKind::parse("nonsense"), None);
        let quiet: Vec<_> = EventKind::ALL
            .into_iter()
            .filter(|k| !k.notifies())
            .collect();
        assert_eq!(quiet, [EventKind::Refreshed, EventKind::RefreshFailed]);
    }
}
