//! A tenant's events (the audit trail of its connections), newest first, a
//! page at a time, filtered by provider, account and kind.

use super::errors::{DatabaseUnreachable, NoValidKey, OtherTenant};
use super::params::TenantPath;
use super::rights::{ForTenant, Scoped, StatusRead};
use crate::app::App;
use crate::db::models::event::{Event, EventKind, Filter, Listed, Position};
use crate::error::{AppError, AppResult, Code, ErrorBody};
use crate::ids::ProviderKey;
use crate::web::http::{account_param, no_store, rfc3339};
use actix_web::{get, web, HttpResponse};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// Events in a page when `limit` is not given.
const DEFAULT_LIMIT: i64 = 50;
/// The most events one page holds.
const MAX_LIMIT: i64 = 200;

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct EventsQuery {
    /// Only this provider's events (a provider's key; one the catalogue
    /// does not know is a 400).
    #[param(pattern = r"^[a-z][a-z0-9_-]{0,31}$")]
    provider: Option<String>,
    /// Only the events of the connection of this provider account id.
    #[param(min_length = 1, max_length = 256)]
    account: Option<String>,
    /// Only events of these kinds, comma-separated (`needs_reconnect,revoked`);
    /// an unknown kind is a 400 that lists the known ones.
    kind: Option<String>,
    /// The `next` of the page before; without it, the newest events.
    cursor: Option<String>,
    /// Events in the page. Read as text, so that a bad one gets this
    /// route's own message.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 200, default = 50)]
    limit: Option<String>,
}

/// What a page of events is asked for, checked.
struct Asked {
    filter: Filter,
    after: Option<Position>,
    limit: i64,
}

impl EventsQuery {
    /// The checked request: each bad parameter is a 400 saying what it takes.
    fn read(&self, state: &App) -> AppResult<Asked> {
        let invalid = |message: String| AppError::bad_request(Code::InvalidQuery, message);
        let provider = match self.provider.as_deref() {
            None => None,
            Some(key) => match state.providers.get(key) {
                Some(p) => Some(p.key.clone()),
                None => {
                    return Err(invalid(format!(
                        "provider '{}' is not one Tether knows; name a provider's key such as {}",
                        printable(key),
                        known_providers(state)
                    )))
                }
            },
        };
        let kinds = match self.kind.as_deref() {
            None => Vec::new(),
            Some(list) => list
                .split(',')
                .map(|name| {
                    EventKind::parse(name.trim()).ok_or_else(|| {
                        invalid(format!(
                            "kind '{}' is not an event kind; the kinds are {}",
                            printable(name),
                            EventKind::ALL.map(EventKind::as_str).join(", ")
                        ))
                    })
                })
                .collect::<AppResult<Vec<_>>>()?,
        };
        let limit = match self.limit.as_deref() {
            None => DEFAULT_LIMIT,
            Some(text) => text
                .parse::<i64>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| {
                    invalid(format!("limit is a number of events from 1 to {MAX_LIMIT}"))
                })?,
        };
        let after = self.cursor.as_deref().map(decode_cursor).transpose()?;
        Ok(Asked {
            filter: Filter {
                provider,
                account: account_param(self.account.as_deref())?,
                kinds,
                visible_providers: None,
            },
            after,
            limit,
        })
    }
}

/// Text from a query string, cut short and without control characters, to
/// be repeated in a message.
fn printable(raw: &str) -> String {
    let cut: String = raw.chars().take(40).filter(|c| !c.is_control()).collect();
    if raw.chars().count() > 40 {
        format!("{cut}...")
    } else {
        cut
    }
}

/// The catalogue's provider keys, for a message.
fn known_providers(state: &App) -> String {
    let mut keys: Vec<&str> = state.providers.all().map(|p| p.key.as_str()).collect();
    keys.sort_unstable();
    keys.join(", ")
}

/// A position as the API hands it out: opaque to callers (base64url of the
/// event's time in microseconds and its id), so that its form may change.
fn encode_cursor(p: &Position) -> String {
    let micros = p.created_at.and_utc().timestamp_micros();
    URL_SAFE_NO_PAD.encode(format!("{micros}.{}", p.id))
}

/// Reads a cursor [`encode_cursor`] wrote; anything else is a 400.
fn decode_cursor(raw: &str) -> AppResult<Position> {
    let invalid = || {
        AppError::bad_request(
            Code::InvalidCursor,
            "cursor is not one this API handed out: pass a page's `next` as it is, or leave it out to start from the newest event",
        )
    };
    let bytes = URL_SAFE_NO_PAD.decode(raw).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let (micros, id) = text.split_once('.').ok_or_else(invalid)?;
    let created_at = micros
        .parse::<i64>()
        .ok()
        .and_then(chrono::DateTime::from_timestamp_micros)
        .ok_or_else(invalid)?
        .naive_utc();
    // Event ids are UUIDs: nothing else can be one.
    let id = uuid::Uuid::parse_str(id).map_err(|_| invalid())?;
    Ok(Position {
        created_at,
        id: id.to_string(),
    })
}

/// One event, as the API lists it. Never a secret: `detail` is Tether's own
/// sentence or the provider's error code, as the webhooks carry it.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct TenantEvent {
    id: String,
    /// `connected`, `refreshed`, `needs_reconnect`, ... (the webhooks' `type`).
    #[schema(value_type = String, example = "needs_reconnect")]
    kind: EventKind,
    #[schema(value_type = String)]
    provider: ProviderKey,
    /// The account of the connection it concerns; null for an event of no
    /// connection (`connect_failed`, settings changes).
    account: Option<EventAccountView>,
    /// Who did it, as stored: `admin:<email>`, `api:<key name>`,
    /// `connect-link`, `scheduler`, `token-api`, `cli`, `import:<who>`,
    /// `provider:<key>`.
    actor: String,
    /// What happened, in words (a refresh's error, an account's name), if
    /// anything more than the kind.
    detail: Option<String>,
    #[schema(format = DateTime)]
    created_at: String,
}

/// The account an event concerns.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct EventAccountView {
    id: String,
    name: Option<String>,
}

impl TenantEvent {
    fn of(listed: Listed) -> TenantEvent {
        let Listed { event, account } = listed;
        let Event {
            id,
            kind,
            provider,
            actor,
            detail,
            created_at,
            ..
        } = event;
        TenantEvent {
            id,
            kind,
            provider,
            account: account.map(|(id, name)| EventAccountView {
                id: id.to_string(),
                name,
            }),
            actor,
            detail,
            created_at: rfc3339(created_at),
        }
    }
}

/// A page of events.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct TenantEventPage {
    /// Newest first.
    events: Vec<TenantEvent>,
    /// The `cursor` of the next (older) page; null on the last page.
    next: Option<String>,
}

/// A tenant's events
///
/// The audit trail of the tenant's connections, newest first (by time,
/// then id), `limit` at a time. Filters combine: `provider`, `account` (the
/// provider account id of a connection), `kind` (comma-separated). The next
/// page is asked for with the answer's `next` as `cursor`: a page never
/// repeats or skips an event because new ones were recorded meanwhile.
#[utoipa::path(
    params(TenantPath, EventsQuery),
    responses(
        (status = 200, description = "A page of events", body = TenantEventPage),
        (status = 400, description = "`invalid_query` (an unknown provider or kind, a `limit` out of range, an invalid `account`) or `invalid_cursor`", body = ErrorBody),
        NoValidKey,
        OtherTenant,
        (status = 404, description = "No such tenant", body = ErrorBody),
        DatabaseUnreachable,
    ),
    security(("apiKey" = ["status:read"]))
)]
#[get("/tenants/{tenant}/events")]
pub(super) async fn list_events(
    state: web::Data<App>,
    target: ForTenant<Scoped<StatusRead>>,
    query: web::Query<EventsQuery>,
) -> AppResult<HttpResponse> {
    let Asked {
        mut filter,
        after,
        limit,
    } = query.read(&state)?;
    // A key limited to providers reads only their events.
    if let Some(p) = &filter.provider {
        target.key.may_use(p.as_str())?;
    }
    filter.visible_providers = target.key.visible_providers();
    let tenant_id = target.tenant;
    // One more than asked says whether a next page exists.
    let mut listed = state
        .db(move |c| {
            Ok(Event::page(
                c,
                &tenant_id,
                &filter,
                after.as_ref(),
                limit + 1,
            )?)
        })
        .await?;
    let next = if listed.len() as i64 > limit {
        listed.truncate(limit as usize);
        listed
            .last()
            .map(|l| encode_cursor(&Position::of(&l.event)))
    } else {
        None
    };
    let events = listed.into_iter().map(TenantEvent::of).collect();
    Ok(no_store(
        HttpResponse::Ok().json(TenantEventPage { events, next }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_as_the_position_it_was_made_from() {
        let p = Position {
            created_at: chrono::DateTime::from_timestamp_micros(1_796_000_000_123_456)
                .unwrap()
                .naive_utc(),
            id: uuid::Uuid::new_v4().to_string(),
        };
        assert_eq!(decode_cursor(&encode_cursor(&p)).unwrap(), p);
    }

    #[test]
    fn anything_but_a_cursor_handed_out_is_refused() {
        let id = uuid::Uuid::new_v4();
        for bad in [
            String::new(),
            "not base64!".into(),
            URL_SAFE_NO_PAD.encode("no separator"),
            URL_SAFE_NO_PAD.encode(format!("soon.{id}")),
            URL_SAFE_NO_PAD.encode("1796000000123456.not-an-id"),
            URL_SAFE_NO_PAD.encode(format!("{}.{id}", i64::MAX)),
            URL_SAFE_NO_PAD.encode([0xff, 0xfe]),
        ] {
            let e = decode_cursor(&bad).unwrap_err();
            assert!(e.is(Code::InvalidCursor), "{bad}");
        }
    }
}
