//! What a refresh that did not succeed means: the errors its callers get,
//! and how a provider's failure is classified (docs/design.md section 7).

use super::retry::backoff;
use crate::db::models::connection::{Connection, Status};
use crate::db::models::event::EventKind;
use crate::db::now;
use crate::error::{AppError, AppResult, Code};
use crate::metrics::RefreshOutcome;
use crate::oauth::client::ProviderError;
use crate::providers::Provider;
use chrono::{Duration, NaiveDateTime};

pub(super) fn needs_reconnect() -> AppError {
    AppError::conflict(
        Code::NeedsReconnect,
        "the provider no longer accepts this connection; a person has to reconnect it",
    )
}

pub(super) fn not_connected() -> AppError {
    AppError::not_connected()
}

pub(super) fn shutting_down() -> AppError {
    AppError::unavailable(
        Code::ShuttingDown,
        "this instance is stopping; another one takes over",
        1,
    )
}

/// What a finished refresh by someone else means for us.
pub(super) fn outcome_of(row: &Connection) -> AppResult<()> {
    match row.status() {
        Status::Connected => Ok(()),
        Status::NeedsReconnect => Err(needs_reconnect()),
        Status::Disconnected => Err(not_connected()),
        Status::Error => Err(failing(row)),
    }
}

/// A connection whose refresh fails for now: 503, retried when it is due.
pub(super) fn failing(row: &Connection) -> AppError {
    AppError::unavailable(
        Code::RefreshFailed,
        row.last_error
            .clone()
            .unwrap_or_else(|| "the last refresh failed".into()),
        row.next_refresh_at
            .map_or(30, |t| (t - now()).num_seconds().clamp(1, 3600) as u64),
    )
}

/// What a failed refresh does to the connection.
pub struct Failure {
    pub status: Status,
    pub next_refresh_at: Option<NaiveDateTime>,
    pub event: EventKind,
    /// For metrics.
    pub outcome: RefreshOutcome,
    pub error: AppError,
}

/// docs/design.md section 7: grant gone stops for good; operator errors and
/// refusals wait long; everything else backs off and is retried. That
/// includes a refresh whose answer never came, even at a provider that
/// rotates refresh tokens: sending the same refresh token again cannot make
/// things worse (if the provider never acted it succeeds; if it had rotated
/// the token, the grant was lost with the answer, and the `invalid_grant` we
/// get only confirms it). See docs/design.md.
pub fn classify(provider: &Provider, row: &Connection, e: &ProviderError) -> Failure {
    let retry = |wait: Duration, code: Code, message: String, outcome: RefreshOutcome| Failure {
        status: Status::Error,
        next_refresh_at: Some(now() + wait),
        event: EventKind::RefreshFailed,
        outcome,
        error: AppError::unavailable(code, message, wait.num_seconds().max(1) as u64),
    };
    match e {
        ProviderError::GrantGone { .. } => Failure {
            status: Status::NeedsReconnect,
            next_refresh_at: None,
            event: EventKind::NeedsReconnect,
            outcome: RefreshOutcome::GrantGone,
            error: needs_reconnect(),
        },
        ProviderError::Unknown { detail } => retry(
            backoff(row.failure_count, None),
            Code::RefreshFailed,
            format!(
                "{} did not answer ({detail}); Tether will retry with the stored refresh token",
                provider.display_name
            ),
            RefreshOutcome::Unknown,
        ),
        ProviderError::Transient {
            retry_after,
            detail,
            ..
        } => retry(
            backoff(row.failure_count, *retry_after),
            Code::RefreshFailed,
            format!(
                "{} is not answering ({detail}); Tether will retry",
                provider.display_name
            ),
            RefreshOutcome::Transient,
        ),
        ProviderError::ClientMisconfigured { .. } => retry(
            backoff(row.failure_count.max(5), None),
            Code::ProviderMisconfigured,
            format!(
                "{} rejected Tether's client credentials; an operator has to fix them",
                provider.display_name
            ),
            RefreshOutcome::ClientError,
        ),
        ProviderError::Refused { .. } => retry(
            backoff(row.failure_count.max(5), None),
            Code::RefreshFailed,
            format!("{} refused the refresh: {e}", provider.display_name),
            RefreshOutcome::Refused,
        ),
    }
}
