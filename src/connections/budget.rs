//! Spending a provider's per-account budgets before a proxied call
//! (`Provider::api_budgets`): one call of each, for every instance together
//! through the database, or a 429 `provider_budget_spent` with the seconds
//! until the budget has room again, without calling the provider. While the
//! database is away, this process's own count stands in (`app::budgets`):
//! proxied calls go on, each instance keeping to the budget alone.

use crate::app::budgets::{now_ms, retry_after_secs, Span};
use crate::app::App;
use crate::db::models::proxy_budget::{self, Window};
use crate::error::{AppError, AppResult, Code};
use crate::providers::Provider;
use actix_web::http::StatusCode;

/// Spends one call of each of `provider`'s budgets for `account`; a
/// provider without budgets spends nothing.
pub async fn spend(app: &App, provider: &Provider, account: &str) -> AppResult<()> {
    if provider.api_budgets.is_empty() {
        return Ok(());
    }
    let now = now_ms();
    let spans: Vec<Span> = provider
        .api_budgets
        .iter()
        .map(|b| Span::at(b, now))
        .collect();
    let windows: Vec<Window> = spans.iter().map(window).collect();
    let (key, acct) = (provider.key.as_str().to_string(), account.to_string());
    let spent = app
        .db(move |c| {
            let Some(i) = proxy_budget::spend(c, &key, &acct, &windows)? else {
                return Ok(None);
            };
            let counted = proxy_budget::counted(c, &key, &acct, &windows[i])?;
            Ok(Some((i, counted)))
        })
        .await;
    let refused = match spent {
        Ok(None) => {
            if app.budgets.set_away(false) {
                log::info!("proxy budgets: the database answers again; counting there");
            }
            return Ok(());
        }
        Ok(Some((i, counted))) => (i, spans[i].reopens_in(&counted, now)),
        Err(e) if e.is(Code::DatabaseUnavailable) => {
            if app.budgets.set_away(true) {
                log::warn!(
                    "proxy budgets: the database is away; each instance keeps to the budgets alone until it answers"
                );
            }
            match app
                .budgets
                .spend(provider.key.as_str(), account, &spans, now)
            {
                Ok(()) => return Ok(()),
                Err(refused) => refused,
            }
        }
        Err(e) => return Err(e),
    };
    Err(spent_error(provider, &spans[refused.0], refused.1))
}

/// The row form of a span: what the database's spend needs.
fn window(span: &Span) -> Window {
    let expires = chrono::DateTime::from_timestamp_millis(span.expires_ms())
        .map(|t| t.naive_utc())
        .unwrap_or_else(crate::db::now);
    Window {
        window_secs: span.window_secs,
        lowest: span.lowest,
        current: span.current,
        calls: span.calls,
        expires_at: expires,
    }
}

/// 429 `provider_budget_spent`, with `Retry-After` the seconds until the
/// budget has room again.
fn spent_error(provider: &Provider, span: &Span, reopens_ms: i64) -> AppError {
    let secs = retry_after_secs(reopens_ms);
    log::info!(
        "proxy: {} budget of {} calls per {} s spent; refused before the provider",
        provider.key,
        span.calls,
        span.window_secs
    );
    AppError::rebuild(
        StatusCode::TOO_MANY_REQUESTS,
        Code::ProviderBudgetSpent,
        format!(
            "this {} account has used its budget of {} API calls per {}; try again in {secs} s",
            provider.display_name,
            span.calls,
            window_words(span.window_secs)
        ),
        Some(secs),
    )
}

/// "10 s", "hour", "day", "2 days": a window as a person reads it.
fn window_words(secs: i64) -> String {
    match secs {
        60 => "minute".into(),
        3_600 => "hour".into(),
        86_400 => "day".into(),
        s if s % 86_400 == 0 => format!("{} days", s / 86_400),
        s if s % 3_600 == 0 => format!("{} h", s / 3_600),
        s if s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}
