//! The webhook outbox: notifications queued with their event, delivered by
//! the webhook worker with retries (`webhooks`).

use crate::db::models::connection;
use crate::db::models::event::{Event, EventKind, NewEvent};
use crate::db::models::tenant::Tenant;
use crate::db::schema::webhook_outbox;
use crate::db::{now, DbConn};
use crate::ids::{AccountId, ConnectionId, ExternalTenantId, ProviderKey, Tags};
use chrono::{Duration, NaiveDateTime};
use diesel::prelude::*;

/// After this many failed attempts a notification is given up (and logged).
pub const MAX_ATTEMPTS: i32 = 20;

/// How far out a given-up notification's next attempt is pushed, so that
/// the worker never claims it again (`retry` brings it back).
pub const GIVEN_UP_FOR: Duration = Duration::days(36_500);

/// The `type` of the notification sent when a tenant is removed (with its
/// events): not an event kind, and its payload adds `erased` and `revocations`.
pub const TENANT_REMOVED: &str = "tenant_removed";

/// What a webhook receiver gets: one event, as a JSON POST signed with the
/// shared secret (`Tether-Signature`).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct EventPayload {
    /// The event's id: the same on every attempt, so that a receiver can
    /// drop a repeat.
    pub id: String,
    /// What happened.
    #[serde(rename = "type")]
    #[schema(schema_with = event_types)]
    pub kind: EventKind,
    /// The CRM's id of the tenant.
    #[schema(value_type = Option<String>)]
    pub tenant: Option<ExternalTenantId>,
    /// The provider's key.
    #[schema(value_type = String)]
    pub provider: ProviderKey,
    /// The connection the event concerns; `null` for a connect that made
    /// none (`connect_failed`) and for a tenant's settings.
    #[schema(value_type = Option<String>)]
    pub connection_id: Option<ConnectionId>,
    /// The connection's account; `null` when the event has no connection.
    pub account: Option<EventAccount>,
    /// The tags the CRM set on the connect link that made the connection
    /// (for `connect_failed`, the link's); `null` when none were set.
    #[schema(value_type = Option<Object>, example = json!({"conversation": "c-42"}))]
    pub tags: Option<Tags>,
    /// Who did it: `admin:<email>`, `api:<key name>`, `connect-link`,
    /// `scheduler`, `token-api`, `cli`, `import:<by>`, `provider:<key>`.
    pub actor: String,
    /// A human-readable detail (never a secret).
    pub detail: Option<String>,
    /// When it happened (UTC, RFC 3339).
    #[schema(format = DateTime)]
    pub occurred_at: String,
    /// `needs_reconnect` only, for an account connected in a browser: a
    /// single-use link (valid a day) that reconnects exactly this account,
    /// for the chatbot to forward as it is. A secret until used. Made at
    /// each delivery attempt, never stored; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = "uri")]
    pub reconnect_url: Option<String>,
}

/// The account an event's connection is for.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct EventAccount {
    /// The provider's id of the account.
    pub id: String,
    /// Its name, when the provider tells it.
    pub name: Option<String>,
}

/// Every `type` a notification may have.
pub fn event_types() -> utoipa::openapi::Object {
    let names: Vec<&str> = EventKind::ALL
        .into_iter()
        .filter(|k| k.notifies())
        .map(EventKind::as_str)
        .chain([TENANT_REMOVED])
        .collect();
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(names))
        .description(Some(
            "What happened. `refreshed` and `refresh_failed` are recorded but never sent; \
             `tenant_removed` adds `erased` and `revocations`.",
        ))
        .build()
}

/// Records an event and, when webhooks are on and its kind notifies,
/// queues its notification in the same database work.
pub fn record(conn: &mut DbConn, webhooks_on: bool, new: &NewEvent) -> QueryResult<Event> {
    record_tagged(conn, webhooks_on, new, None)
}

/// As [`record`], the notification naming `tags` rather than those of the
/// event's connection: for an event of a connect that made none.
pub fn record_tagged(
    conn: &mut DbConn,
    webhooks_on: bool,
    new: &NewEvent,
    tags: Option<&Tags>,
) -> QueryResult<Event> {
    let event = Event::record(conn, new)?;
    if webhooks_on && new.kind.notifies() {
        queue(conn, &event, tags)?;
    }
    Ok(event)
}

/// Queues a notification of `event`.
pub fn notify(conn: &mut DbConn, event: &Event) -> QueryResult<()> {
    queue(conn, event, None)
}

/// Queues a notification of `event`, naming its connection's account and
/// tags (`tags` when given).
fn queue(conn: &mut DbConn, event: &Event, tags: Option<&Tags>) -> QueryResult<()> {
    let tenant = Tenant::by_id(conn, &event.tenant_id)?.map(|t| t.external_id);
    let row = match &event.connection_id {
        Some(id) => connection::Connection::by_id(conn, id).optional()?,
        None => None,
    };
    let payload = EventPayload {
        id: event.id.clone(),
        kind: event.kind,
        tenant,
        provider: event.provider.clone(),
        connection_id: event.connection_id.clone(),
        account: row.as_ref().map(|c| EventAccount {
            id: c.account_id.to_string(),
            name: c.account_name.clone(),
        }),
        tags: tags
            .cloned()
            .or_else(|| row.as_ref().and_then(connection::Connection::tags)),
        actor: event.actor.clone(),
        detail: event.detail.clone(),
        occurred_at: event
            .created_at
            .and_utc()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        // Made when it is sent (`webhooks::outgoing`), never stored.
        reconnect_url: None,
    };
    let text = serde_json::to_string(&payload)
        .map_err(|e| diesel::result::Error::SerializationError(Box::new(e)))?;
    enqueue(conn, &event.id, Some(&event.id), &text)
}

/// The outbox rows of connection events (to `TETHER_WEBHOOK_URL`).
pub const EVENTS: &str = "events";
/// The outbox rows of providers' app events, relayed to the CRM.
pub const RELAY: &str = "relay";

/// A notification due for delivery.
#[derive(Debug)]
pub struct Pending {
    pub id: String,
    pub event_id: Option<String>,
    pub payload: String,
    pub attempts: i32,
    pub next_attempt_at: NaiveDateTime,
    /// [`EVENTS`] or [`RELAY`]: where it goes.
    pub channel: String,
}

impl Pending {
    /// The id the receiver sees: the payload's `"id"`.
    pub fn delivery_id(&self) -> String {
        delivery_id(&self.payload, self.event_id.as_deref(), &self.id)
    }
}

/// The payload's `"id"`, which is what the receiver sees; rows whose payload
/// lacks one (none are written so) fall back to the event's id, then the row's.
fn delivery_id(payload: &str, event_id: Option<&str>, row_id: &str) -> String {
    serde_json::from_str::<serde_json::Value>(payload)
        .ok()
        .and_then(|v| v.get("id").and_then(|id| id.as_str()).map(str::to_string))
        .or_else(|| event_id.map(str::to_string))
        .unwrap_or_else(|| row_id.to_string())
}

/// One notification as `tether webhooks list` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Delivery {
    /// The id the receiver sees (the payload's `"id"`).
    pub id: String,
    /// The payload's `"type"`, such as `needs_reconnect`.
    pub kind: String,
    pub attempts: i32,
    /// The last failure (an HTTP status or a transport error, no URL).
    pub last_error: Option<String>,
    /// When the next attempt is due; `None` once delivered or given up.
    pub next_attempt_at: Option<NaiveDateTime>,
    pub delivered_at: Option<NaiveDateTime>,
    pub given_up: bool,
    pub created_at: NaiveDateTime,
}

type Row = (
    String,
    Option<String>,
    String,
    i32,
    NaiveDateTime,
    Option<NaiveDateTime>,
    Option<String>,
    NaiveDateTime,
);

impl From<Row> for Delivery {
    fn from(row: Row) -> Delivery {
        let (id, event_id, payload, attempts, next, delivered_at, last_error, created_at) = row;
        let kind = serde_json::from_str::<serde_json::Value>(&payload)
            .ok()
            .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_string))
            .unwrap_or_default();
        let given_up = delivered_at.is_none() && attempts >= MAX_ATTEMPTS;
        Delivery {
            id: delivery_id(&payload, event_id.as_deref(), &id),
            kind,
            attempts,
            last_error,
            next_attempt_at: (delivered_at.is_none() && !given_up).then_some(next),
            delivered_at,
            given_up,
            created_at,
        }
    }
}

macro_rules! delivery_columns {
    () => {
        (
            webhook_outbox::id,
            webhook_outbox::event_id,
            webhook_outbox::payload,
            webhook_outbox::attempts,
            webhook_outbox::next_attempt_at,
            webhook_outbox::delivered_at,
            webhook_outbox::last_error,
            webhook_outbox::created_at,
        )
    };
}

/// Notifications not yet delivered (with `given_up_only`, only those given
/// up after [`MAX_ATTEMPTS`]), oldest first (by creation, then row id), at
/// most `limit`.
pub fn undelivered(
    conn: &mut DbConn,
    given_up_only: bool,
    limit: i64,
) -> QueryResult<Vec<Delivery>> {
    let mut q = webhook_outbox::table
        .filter(webhook_outbox::delivered_at.is_null())
        .filter(webhook_outbox::held_until.is_null())
        .order((webhook_outbox::created_at.asc(), webhook_outbox::id.asc()))
        .limit(limit)
        .select(delivery_columns!())
        .into_boxed();
    if given_up_only {
        q = q.filter(webhook_outbox::attempts.ge(MAX_ATTEMPTS));
    }
    Ok(q.load::<Row>(conn)?
        .into_iter()
        .map(Delivery::from)
        .collect())
}

/// Why a retry changed nothing.
#[derive(Debug, PartialEq, Eq)]
pub enum RetryRefused {
    /// No notification has this delivery id.
    Unknown(String),
    /// It was delivered already.
    Delivered(String),
}

impl std::fmt::Display for RetryRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RetryRefused::Unknown(id) => write!(f, "no webhook delivery with id '{id}'"),
            RetryRefused::Delivered(id) => {
                write!(f, "webhook delivery '{id}' was delivered already")
            }
        }
    }
}

/// Makes the notifications with these delivery ids due now, their attempts
/// counted afresh, for the worker to send again. All or none: an unknown or
/// delivered id changes nothing. Returns the delivery ids made due.
pub fn retry(conn: &mut DbConn, ids: &[String]) -> QueryResult<Result<Vec<String>, RetryRefused>> {
    conn.transaction(|conn| {
        let mut rows = Vec::with_capacity(ids.len());
        for id in ids {
            let mut found: Option<Row> = webhook_outbox::table
                .filter(
                    webhook_outbox::id
                        .eq(id)
                        .or(webhook_outbox::event_id.eq(id)),
                )
                .select(delivery_columns!())
                .first(conn)
                .optional()?;
            if found.is_none() {
                // Rows of no event written before the row's id was the
                // payload's: found by the payload's id.
                found = webhook_outbox::table
                    .filter(webhook_outbox::event_id.is_null())
                    .select(delivery_columns!())
                    .load::<Row>(conn)?
                    .into_iter()
                    .find(|r| delivery_id(&r.2, None, &r.0) == *id);
            }
            match found {
                None => return Ok(Err(RetryRefused::Unknown(id.clone()))),
                Some(r) if r.5.is_some() => return Ok(Err(RetryRefused::Delivered(id.clone()))),
                Some(r) => rows.push(r.0),
            }
        }
        make_due(conn, &rows)?;
        Ok(Ok(ids.to_vec()))
    })
}

/// Makes every given-up notification due now, attempts counted afresh;
/// returns their delivery ids.
pub fn retry_given_up(conn: &mut DbConn) -> QueryResult<Vec<String>> {
    conn.transaction(|conn| {
        let given_up: Vec<Row> = webhook_outbox::table
            .filter(webhook_outbox::delivered_at.is_null())
            .filter(webhook_outbox::attempts.ge(MAX_ATTEMPTS))
            .order((webhook_outbox::created_at.asc(), webhook_outbox::id.asc()))
            .select(delivery_columns!())
            .load(conn)?;
        let (row_ids, ids): (Vec<String>, Vec<String>) = given_up
            .into_iter()
            .map(|r| (r.0.clone(), Delivery::from(r).id))
            .unzip();
        make_due(conn, &row_ids)?;
        Ok(ids)
    })
}

fn make_due(conn: &mut DbConn, row_ids: &[String]) -> QueryResult<()> {
    diesel::update(
        webhook_outbox::table
            .filter(webhook_outbox::id.eq_any(row_ids))
            .filter(webhook_outbox::delivered_at.is_null()),
    )
    .set((
        webhook_outbox::attempts.eq(0),
        webhook_outbox::next_attempt_at.eq(now()),
    ))
    .execute(conn)
    .map(|_| ())
}

/// Queues `payload` (the JSON body) as the notification of event `event_id`
/// (`None`: of no stored event, e.g. a tenant's removal, whose events go
/// with it). `id` is the payload's `"id"`, the one the receiver sees: the
/// row is found by it.
pub fn enqueue(
    conn: &mut DbConn,
    id: &str,
    event_id: Option<&str>,
    payload: &str,
) -> QueryResult<()> {
    let t = now();
    diesel::insert_into(webhook_outbox::table)
        .values((
            webhook_outbox::id.eq(id),
            webhook_outbox::event_id.eq(event_id),
            webhook_outbox::payload.eq(payload),
            webhook_outbox::attempts.eq(0),
            webhook_outbox::next_attempt_at.eq(t),
            webhook_outbox::created_at.eq(t),
        ))
        .execute(conn)
        .map(|_| ())
}

/// The undelivered deliveries whose payload names tenant `tenant` (its
/// events' webhooks, its accounts' relayed provider events): what a
/// removal of the tenant erases with it. The pattern (LIKE's special
/// characters widened to `%`) only narrows the rows read; each candidate's
/// `tenant` is then compared exactly.
pub fn queued_for_tenant(conn: &mut DbConn, tenant: &ExternalTenantId) -> QueryResult<Vec<String>> {
    let widened: String = tenant
        .as_str()
        .chars()
        .map(|c| {
            if matches!(c, '%' | '_' | '\\') {
                '%'
            } else {
                c
            }
        })
        .collect();
    let candidates: Vec<(String, String)> = webhook_outbox::table
        .filter(webhook_outbox::delivered_at.is_null())
        .filter(webhook_outbox::payload.like(format!("%{widened}%")))
        .select((webhook_outbox::id, webhook_outbox::payload))
        .load(conn)?;
    Ok(candidates
        .into_iter()
        .filter(|(_, payload)| {
            serde_json::from_str::<serde_json::Value>(payload)
                .is_ok_and(|doc| doc["tenant"].as_str() == Some(tenant.as_str()))
        })
        .map(|(id, _)| id)
        .collect())
}

/// Deletes the deliveries `ids`; how many went.
pub fn erase(conn: &mut DbConn, ids: &[String]) -> QueryResult<usize> {
    let mut erased = 0;
    for chunk in ids.chunks(500) {
        erased += diesel::delete(webhook_outbox::table.filter(webhook_outbox::id.eq_any(chunk)))
            .execute(conn)?;
    }
    Ok(erased)
}

/// After this many failed attempts a delivery steps aside: later events of
/// its account no longer wait for it (it keeps being retried on its own).
pub const STEP_ASIDE_AFTER: i32 = 3;

/// Takes up to `limit` due deliveries of `channel`, pushing their next
/// attempt out so that another instance does not send them at the same
/// time. An account's relayed events go in order: one is not taken while an
/// earlier one of its account is undelivered, unless that one failed
/// [`STEP_ASIDE_AFTER`] times (a poison event holds nobody up for ever).
pub fn claim(conn: &mut DbConn, channel: &str, limit: i64) -> QueryResult<Vec<Pending>> {
    use diesel::sql_types::{BigInt, Integer, Nullable, Text, Timestamp};
    #[derive(QueryableByName)]
    struct Due {
        #[diesel(sql_type = Text)]
        id: String,
        #[diesel(sql_type = Nullable<Text>)]
        event_id: Option<String>,
        #[diesel(sql_type = Text)]
        payload: String,
        #[diesel(sql_type = Integer)]
        attempts: i32,
        #[diesel(sql_type = Timestamp)]
        next_attempt_at: NaiveDateTime,
        #[diesel(sql_type = Text)]
        channel: String,
    }
    let sql = "SELECT o.id, o.event_id, o.payload, o.attempts, o.next_attempt_at, o.channel \
        FROM webhook_outbox o \
        WHERE o.channel = $1 AND o.delivered_at IS NULL AND o.held_until IS NULL \
        AND o.next_attempt_at <= $2 \
        AND (o.account_id IS NULL OR NOT EXISTS (SELECT 1 FROM webhook_outbox e \
            WHERE e.provider = o.provider AND e.account_id = o.account_id \
            AND e.channel = o.channel AND e.delivered_at IS NULL AND e.held_until IS NULL \
            AND e.attempts < $3 \
            AND (e.created_at < o.created_at OR (e.created_at = o.created_at AND e.id < o.id)))) \
        ORDER BY o.next_attempt_at, o.created_at, o.id LIMIT $4";
    let t = now();
    let sql = match conn {
        DbConn::Postgres(_) => sql.to_string(),
        // `?NNN` is SQLite's numbered parameter.
        DbConn::Sqlite(_) => sql.replace('$', "?"),
    };
    let due: Vec<Due> = diesel::sql_query(sql)
        .bind::<Text, _>(channel)
        .bind::<Timestamp, _>(t)
        .bind::<Integer, _>(STEP_ASIDE_AFTER)
        .bind::<BigInt, _>(limit)
        .load(conn)?;
    let mut mine = Vec::new();
    for d in due {
        let taken = diesel::update(
            webhook_outbox::table
                .find(&d.id)
                .filter(webhook_outbox::next_attempt_at.eq(d.next_attempt_at)),
        )
        .set(webhook_outbox::next_attempt_at.eq(t + Duration::seconds(60)))
        .execute(conn)?;
        if taken == 1 {
            mine.push(Pending {
                id: d.id,
                event_id: d.event_id,
                payload: d.payload,
                attempts: d.attempts,
                next_attempt_at: d.next_attempt_at,
                channel: d.channel,
            });
        }
    }
    Ok(mine)
}

/// Records deliveries made: each after one more attempt.
pub fn delivered_all(conn: &mut DbConn, ids: &[String]) -> QueryResult<()> {
    diesel::update(webhook_outbox::table.filter(webhook_outbox::id.eq_any(ids)))
        .set((
            webhook_outbox::delivered_at.eq(now()),
            webhook_outbox::attempts.eq(webhook_outbox::attempts + 1),
        ))
        .execute(conn)
        .map(|_| ())
}

/// Records a failed attempt and when the next one is due.
pub fn failed(
    conn: &mut DbConn,
    id: &str,
    attempts: i32,
    next_attempt_at: NaiveDateTime,
    why: &str,
) -> QueryResult<()> {
    diesel::update(webhook_outbox::table.find(id))
        .set((
            webhook_outbox::attempts.eq(attempts),
            webhook_outbox::next_attempt_at.eq(next_attempt_at),
            webhook_outbox::last_error.eq(why),
        ))
        .execute(conn)
        .map(|_| ())
}

/// Undelivered notifications not given up, of every instance: due now, or
/// waiting for a later attempt (the `/metrics` backlog).
pub fn backlog(conn: &mut DbConn) -> QueryResult<crate::metrics::Backlog> {
    let undelivered = || {
        webhook_outbox::table
            .filter(webhook_outbox::delivered_at.is_null())
            .filter(webhook_outbox::held_until.is_null())
            .filter(webhook_outbox::attempts.lt(MAX_ATTEMPTS))
    };
    let t = now();
    Ok(crate::metrics::Backlog {
        due: undelivered()
            .filter(webhook_outbox::next_attempt_at.le(t))
            .count()
            .get_result(conn)?,
        waiting: undelivered()
            .filter(webhook_outbox::next_attempt_at.gt(t))
            .count()
            .get_result(conn)?,
    })
}

/// Deletes up to `batch` notifications older than `before` that are done
/// with: delivered, or given up after [`MAX_ATTEMPTS`]. Returns how many.
pub fn prune(conn: &mut DbConn, before: NaiveDateTime, batch: i64) -> QueryResult<usize> {
    let done = webhook_outbox::table
        .filter(webhook_outbox::created_at.lt(before))
        .filter(
            webhook_outbox::delivered_at
                .is_not_null()
                .or(webhook_outbox::attempts.ge(MAX_ATTEMPTS)),
        )
        .select(webhook_outbox::id)
        .limit(batch)
        .load::<String>(conn)?;
    diesel::delete(webhook_outbox::table.filter(webhook_outbox::id.eq_any(&done))).execute(conn)
}

/// Queues a provider's app event for the relay (`payload` is its whole
/// body as the CRM receives it). With `held_until`, no tenant holds its
/// account yet: it waits, never claimed, for [`release`] or the sweep.
pub fn enqueue_relay(
    conn: &mut DbConn,
    id: &str,
    payload: &str,
    provider: &ProviderKey,
    account: Option<&AccountId>,
    held_until: Option<NaiveDateTime>,
) -> QueryResult<()> {
    let t = now();
    diesel::insert_into(webhook_outbox::table)
        .values((
            webhook_outbox::id.eq(id),
            webhook_outbox::payload.eq(payload),
            webhook_outbox::attempts.eq(0),
            webhook_outbox::next_attempt_at.eq(held_until.map_or(t, |_| t + GIVEN_UP_FOR)),
            webhook_outbox::created_at.eq(t),
            webhook_outbox::channel.eq(RELAY),
            webhook_outbox::provider.eq(provider),
            webhook_outbox::account_id.eq(account),
            webhook_outbox::held_until.eq(held_until),
        ))
        .execute(conn)
        .map(|_| ())
}

/// The held app events of `provider`'s account, oldest first: (row id, payload).
pub fn held_of(
    conn: &mut DbConn,
    provider: &ProviderKey,
    account: &AccountId,
) -> QueryResult<Vec<(String, String)>> {
    webhook_outbox::table
        .filter(webhook_outbox::provider.eq(provider))
        .filter(webhook_outbox::account_id.eq(account))
        .filter(webhook_outbox::held_until.is_not_null())
        .order((webhook_outbox::created_at.asc(), webhook_outbox::id.asc()))
        .select((webhook_outbox::id, webhook_outbox::payload))
        .load(conn)
}

/// Lets a held app event go, due now, with its payload completed.
pub fn release(conn: &mut DbConn, id: &str, payload: &str) -> QueryResult<()> {
    diesel::update(webhook_outbox::table.find(id))
        .set((
            webhook_outbox::payload.eq(payload),
            webhook_outbox::held_until.eq(None::<NaiveDateTime>),
            webhook_outbox::next_attempt_at.eq(now()),
        ))
        .execute(conn)
        .map(|_| ())
}

/// A held app event, as the API and `tether webhooks held` list it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct HeldEvent {
    /// The id the CRM will see (the payload's `"id"`).
    pub id: String,
    #[schema(value_type = String)]
    pub provider: ProviderKey,
    #[schema(value_type = String)]
    pub account_id: AccountId,
    /// The provider's name of the event (`InboundMessage`, ...).
    pub event_type: String,
    /// When it was received, RFC 3339.
    pub received_at: String,
    /// When it is dropped unless a tenant comes to hold the account.
    pub held_until: String,
}

/// A held row: id, payload, provider, account, created, held until.
type HeldRow = (
    String,
    String,
    Option<String>,
    Option<String>,
    NaiveDateTime,
    Option<NaiveDateTime>,
);

/// The held app events, oldest first (at most `limit`).
pub fn held(conn: &mut DbConn, limit: i64) -> QueryResult<Vec<HeldEvent>> {
    let rows: Vec<HeldRow> = webhook_outbox::table
        .filter(webhook_outbox::held_until.is_not_null())
        .order((webhook_outbox::created_at.asc(), webhook_outbox::id.asc()))
        .limit(limit)
        .select((
            webhook_outbox::id,
            webhook_outbox::payload,
            webhook_outbox::provider,
            webhook_outbox::account_id,
            webhook_outbox::created_at,
            webhook_outbox::held_until,
        ))
        .load(conn)?;
    let rfc3339 = |t: NaiveDateTime| {
        t.and_utc()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    Ok(rows
        .into_iter()
        .map(|(id, payload, provider, account, created_at, until)| {
            let doc = serde_json::from_str::<serde_json::Value>(&payload).unwrap_or_default();
            HeldEvent {
                id: delivery_id(&payload, None, &id),
                // Written by `enqueue_relay`.
                provider: ProviderKey::known(provider.unwrap_or_default()),
                account_id: AccountId::known(account.unwrap_or_default()),
                event_type: doc["event_type"].as_str().unwrap_or_default().to_string(),
                received_at: rfc3339(created_at),
                held_until: until.map(rfc3339).unwrap_or_default(),
            }
        })
        .collect())
}

/// Drops up to `batch` held app events whose time is over; returns how many.
pub fn drop_expired_held(conn: &mut DbConn, batch: i64) -> QueryResult<usize> {
    let over: Vec<String> = webhook_outbox::table
        .filter(webhook_outbox::held_until.le(now()))
        .select(webhook_outbox::id)
        .limit(batch)
        .load(conn)?;
    diesel::delete(webhook_outbox::table.filter(webhook_outbox::id.eq_any(&over))).execute(conn)
}
