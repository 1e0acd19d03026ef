//! What the CRM and people do with a tenant's connections, as the
//! Integrations page tells a client admin: each account's use by the CRM
//! (counted by `app::usage`), and the activity list in people's words (who
//! did it, to which account), on the card and on a page of its own,
//! `GET /settings/integrations/{provider}/activity`.

use super::http::html;
use super::session::AdminSession;
use crate::app::App;
use crate::connections::integration;
use crate::db::models::activity::{Activity, Cursor};
use crate::db::models::event::{Actor, EventKind};
use crate::db::models::usage::{Summary, WEEK_DAYS};
use crate::error::{AppError, PageResult};
use crate::ids::ConnectionId;
use crate::providers::Catalogue;
use actix_web::{web, HttpResponse};
use askama::Template;
use chrono::NaiveDateTime;
use std::sync::Arc;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/settings/integrations/{provider}/activity",
        web::get().to(activity_page),
    );
}

/// Lines of activity on a card.
pub const CARD_LINES: usize = 5;
/// Lines of activity on a page of the full list.
pub const PAGE_LINES: usize = 50;
/// Events read to make a card's or a page's lines: enough for the lines
/// even when repeated failures fold many events into one.
pub const EVENTS_READ: i64 = 500;

/// A time as every page emits it: RFC 3339 UTC for the page's script (which
/// shows it in the viewer's zone, and how long ago), the server's UTC text
/// for a page without it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeTag {
    pub iso: String,
    pub text: String,
}

impl TimeTag {
    pub fn of(t: NaiveDateTime) -> TimeTag {
        TimeTag {
            iso: t.and_utc().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            text: t.format("%Y-%m-%d %H:%M UTC").to_string(),
        }
    }
}

/// The `<time>` element (digits and letters only: safe to write unescaped).
impl std::fmt::Display for TimeTag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            r#"<time datetime="{}" data-rel>{}</time>"#,
            self.iso, self.text
        )
    }
}

/// Who is reading, and the names the lines use for the CRM and providers.
#[derive(Clone)]
pub struct Wording {
    /// `TETHER_CRM_NAME`.
    crm: String,
    /// The signed-in admin's email: their own actions are "You".
    viewer: String,
    providers: Arc<Catalogue>,
}

impl Wording {
    pub fn new(app: &App, viewer: &str) -> Wording {
        Wording {
            crm: app.settings.crm_name.clone(),
            viewer: viewer.to_string(),
            providers: app.providers.clone(),
        }
    }

    /// The CRM's name where a sentence starts ("The CRM").
    fn crm_first(&self) -> String {
        let mut chars = self.crm.chars();
        match chars.next() {
            Some(c) => c.to_uppercase().chain(chars).collect(),
            None => String::new(),
        }
    }

    /// Who an `events.actor` string names, in the admin's words; a string
    /// no version wrote is shown as it is.
    pub fn actor(&self, stored: &str) -> String {
        let Some(actor) = Actor::parse(stored) else {
            return stored.to_string();
        };
        match actor {
            Actor::Admin { email } if email.is_empty() => "An admin".into(),
            Actor::Admin { email } if email.eq_ignore_ascii_case(&self.viewer) => "You".into(),
            Actor::Admin { email } => email,
            Actor::Scheduler => "Automatic refresh".into(),
            Actor::TokenApi => format!("{} (token request)", self.crm_first()),
            Actor::ApiKey { name } => self.by_key(&name),
            Actor::Import { by } => match by.strip_prefix("api:") {
                Some(name) => self.by_key(name),
                None => "An operator".into(),
            },
            Actor::ConnectLink => "Someone with a connect link".into(),
            Actor::Cli => "An operator".into(),
            Actor::Provider { key } => self
                .providers
                .get(&key)
                .map(|p| p.display_name.clone())
                .unwrap_or(key),
        }
    }

    fn by_key(&self, name: &str) -> String {
        format!("{} (key {name})", self.crm_first())
    }

    /// An account's use by the CRM, from its [`Summary`] (none: unused).
    pub fn usage(&self, summary: Option<&Summary>) -> UsageLine {
        UsageLine {
            crm: self.crm.clone(),
            last: summary.map(|s| LastUse {
                kind: s.last.0.label(),
                key: s.last.1.clone(),
                at: TimeTag::of(s.last.2),
            }),
            week: summary.map_or(0, |s| s.week),
        }
    }
}

/// What an account's card says of the CRM's use of it.
pub struct UsageLine {
    /// The CRM's name, mid-sentence.
    pub crm: String,
    pub last: Option<LastUse>,
    /// Uses in the last [`WEEK_DAYS`] days (today's included).
    pub week: i64,
}

impl UsageLine {
    /// "12 uses in the last 7 days".
    pub fn week_text(&self) -> String {
        let noun = if self.week == 1 { "use" } else { "uses" };
        format!("{} {noun} in the last {WEEK_DAYS} days", self.week)
    }
}

/// The latest use of an account.
pub struct LastUse {
    /// "token" or "proxy call".
    pub kind: &'static str,
    /// The API key's name.
    pub key: String,
    pub at: TimeTag,
}

/// One line of activity: an event, or a run of failed refreshes of one
/// account folded into one.
pub struct ActivityLine {
    /// The event's kind as stored (`refresh_failed`), for the page's markup.
    pub kind: &'static str,
    pub label: &'static str,
    /// The newest event's time.
    pub when: TimeTag,
    /// The account it concerns (its name, else its id); none for a
    /// provider's events.
    pub account: Option<String>,
    pub actor: String,
    /// Failed refreshes folded into this line (1: none folded).
    pub failures: usize,
    /// The oldest folded failure's time.
    pub since: TimeTag,
    /// When the account's next refresh is due (folded failures only).
    pub next_try: Option<TimeTag>,
    connection: Option<ConnectionId>,
    /// The oldest event of the line: where the next page starts.
    pub oldest_id: String,
}

/// The lines of `rows` (newest first): consecutive failed refreshes of the
/// same account, with no other event of the provider between them, fold
/// into one line.
pub fn lines(rows: Vec<Activity>, wording: &Wording) -> Vec<ActivityLine> {
    let mut out: Vec<ActivityLine> = Vec::new();
    for Activity { event, account } in rows {
        let failed = event.kind == EventKind::RefreshFailed;
        if let Some(last) = out.last_mut() {
            if failed
                && last.kind == EventKind::RefreshFailed.as_str()
                && event.connection_id.is_some()
                && last.connection == event.connection_id
            {
                last.failures += 1;
                last.since = TimeTag::of(event.created_at);
                last.oldest_id = event.id;
                continue;
            }
        }
        let when = TimeTag::of(event.created_at);
        out.push(ActivityLine {
            kind: event.kind.as_str(),
            label: event.kind.label(),
            since: when.clone(),
            when,
            account: account.as_ref().map(|a| a.label().to_string()),
            actor: wording.actor(&event.actor),
            failures: 1,
            next_try: account
                .as_ref()
                .and_then(|a| a.next_refresh_at)
                .filter(|_| failed)
                .map(TimeTag::of),
            connection: event.connection_id,
            oldest_id: event.id,
        });
    }
    out
}

#[derive(serde::Deserialize)]
struct PageQuery {
    /// The id of the last event of the page before (older ones follow).
    before: Option<String>,
}

#[derive(Template)]
#[template(path = "activity.html")]
struct ActivityPage<'a> {
    provider_key: &'a str,
    provider_name: &'a str,
    email: &'a str,
    csrf: &'a str,
    lines: Vec<ActivityLine>,
    /// The address of the next (older) page, when there is one.
    older: Option<String>,
}

/// `GET /settings/integrations/{provider}/activity`: the provider's whole
/// activity for the session's tenant, [`PAGE_LINES`] lines a page, older
/// pages by `?before=<event id>`. An unknown or disabled provider, or a
/// cursor that is no event of this tenant's provider, is a 404 page.
async fn activity_page(
    state: web::Data<App>,
    admin: AdminSession,
    path: web::Path<String>,
    query: web::Query<PageQuery>,
) -> PageResult<HttpResponse> {
    let provider = state.enabled_provider(&path)?;
    if !integration::load(&state, &admin.tenant_id, &provider)
        .await?
        .enabled
    {
        return Err(AppError::not_found(format!(
            "{} is disabled for this tenant",
            provider.display_name
        ))
        .into());
    }
    let (t, p) = (admin.tenant_id.clone(), provider.key.clone());
    let before = query.into_inner().before;
    let read = state
        .db(move |c| {
            let cursor: Option<Cursor> = match &before {
                None => None,
                Some(id) => Some(
                    Activity::cursor(c, &t, &p, id)?
                        .ok_or_else(|| AppError::not_found("no such page of activity"))?,
                ),
            };
            Ok(Activity::page(c, &t, &p, cursor.as_ref(), EVENTS_READ)?)
        })
        .await?;
    let read_all = (read.len() as i64) < EVENTS_READ;
    let mut lines = lines(read, &Wording::new(&state, &admin.email));
    let more = lines.len() > PAGE_LINES || !read_all && !lines.is_empty();
    lines.truncate(PAGE_LINES);
    let older = lines.last().filter(|_| more).map(|l| {
        format!(
            "/settings/integrations/{}/activity?before={}",
            provider.key,
            urlencoding(&l.oldest_id)
        )
    });
    let csrf = super::session::csrf_token(&admin.session)?;
    let page = ActivityPage {
        provider_key: &provider.key,
        provider_name: &provider.display_name,
        email: &admin.email,
        csrf: &csrf,
        lines,
        older,
    };
    Ok(html(page.render().map_err(AppError::internal)?))
}

/// An event id for a query string (ids are UUIDs; encoded all the same).
fn urlencoding(id: &str) -> String {
    url::form_urlencoded::byte_serialize(id.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::TimeTag;

    #[test]
    fn a_time_is_rfc3339_utc_for_the_script_and_utc_text_for_people() {
        let t = chrono::NaiveDate::from_ymd_opt(2026, 12, 7)
            .unwrap()
            .and_hms_micro_opt(14, 5, 0, 123_456)
            .unwrap();
        assert_eq!(
            TimeTag::of(t).to_string(),
            r#"<time datetime="2026-12-07T14:05:00Z" data-rel>2026-12-07 14:05 UTC</time>"#
        );
    }
}
