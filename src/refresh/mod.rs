//! Refreshing a connection: take its lease, call the provider once, commit
//! the new token set with compare-and-swap before anyone sees it, and
//! classify failures.

use crate::db::models::connection::{Connection, Refreshed, Status};
use crate::db::models::event::Event;
use crate::db::now;
use crate::error::{AppError, AppResult};
use crate::oauth::client::{self, ProviderError};
use crate::oauth::token;
use crate::web::AppState;
use chrono::Duration;
use rand::Rng;

/// Back-off after the `failures`-th failure in a row: 30 s doubling to at
/// most an hour, with ±20% jitter so failed connections do not retry in step.
pub fn backoff(failures: i32, retry_after: Option<u64>) -> Duration {
    let base = 30i64.saturating_mul(1i64 << failures.clamp(0, 7)).min(3600);
    let jittered = (base as f64 * rand::thread_rng().gen_range(0.8..1.2)) as i64;
    let floor = retry_after.map_or(0, |s| s.min(86_400) as i64);
    Duration::seconds(jittered.max(floor))
}

/// Why a connection could not be leased.
fn not_claimable(row: Option<Connection>) -> AppError {
    match row {
        None => AppError::not_found("no such connection"),
        Some(c) if c.token_ciphertext.is_none() => {
            AppError::not_found("this provider is not connected")
        }
        Some(c) if c.status() == Status::NeedsReconnect => needs_reconnect(),
        Some(_) => AppError::conflict(
            "refresh_in_progress",
            "a refresh of this connection is already under way",
        ),
    }
}

fn needs_reconnect() -> AppError {
    AppError::conflict(
        "needs_reconnect",
        "the provider no longer accepts this connection; a person has to reconnect it",
    )
}

/// Refreshes a connection now. `actor` is recorded on the events.
pub async fn refresh_now(
    state: &AppState,
    connection_id: &str,
    actor: &str,
) -> AppResult<Connection> {
    let owner = format!("{}:{}", state.instance_id, crate::crypto::random_token(8));
    let until =
        now() + Duration::from_std(state.settings.refresh.lease).unwrap_or(Duration::seconds(60));
    let leased = {
        let (id, owner) = (connection_id.to_string(), owner.clone());
        state
            .db(move |c| {
                let claimed = Connection::claim(c, &id, &owner, until)?;
                match claimed {
                    Some(row) => Ok(row),
                    None => Err(not_claimable(Connection::by_id(c, &id).ok())),
                }
            })
            .await?
    };
    let release = |err: AppError| {
        let (id, owner) = (leased.id.clone(), owner.clone());
        async move {
            let _ = state
                .db(move |c| Ok(Connection::release(c, &id, &owner)?))
                .await;
            err
        }
    };
    let Some(provider) = state.providers.enabled(&leased.provider).cloned() else {
        return Err(release(AppError::not_found(format!(
            "provider '{}' is not enabled",
            leased.provider
        )))
        .await);
    };
    let old = match leased.tokens(&state.keys) {
        Ok(Some(t)) => t,
        Ok(None) => {
            return Err(release(AppError::not_found("this provider is not connected")).await)
        }
        Err(e) => return Err(release(e.into()).await),
    };
    let started = std::time::Instant::now();
    let result = client::refresh(
        &state.http,
        &provider,
        old.access_token.expose(),
        old.refresh_token.as_ref().map(|t| t.expose().as_str()),
        &leased.metadata(),
    )
    .await;
    let elapsed = started.elapsed().as_millis();
    let (tenant_id, conn_id, provider_key, actor) = (
        leased.tenant_id.clone(),
        leased.id.clone(),
        leased.provider.clone(),
        actor.to_string(),
    );
    match result {
        Ok(response) => {
            let t = now();
            let mut tokens = response.tokens;
            // A response without a new refresh token keeps the old one.
            if tokens.refresh_token.is_none() {
                tokens.refresh_token = old.refresh_token.clone();
            }
            let margin = state.settings.refresh.margin.as_secs() as i64;
            let refreshed = Refreshed {
                expires_at: response.expires_in.map(|s| t + Duration::seconds(s)),
                next_refresh_at: response
                    .expires_in
                    .map(|s| token::next_refresh_at(t, s, margin)),
                scopes: response.scopes.unwrap_or_else(|| leased.scopes()),
            };
            let keys = state.keys.clone();
            let leased = leased.clone();
            log::info!("refreshed tenant={tenant_id} provider={provider_key} connection={conn_id} in {elapsed}ms");
            state
                .db(move |c| {
                    if !Connection::commit_refresh(c, &keys, &leased, &owner, &tokens, &refreshed)?
                    {
                        return Err(AppError::conflict(
                            "concurrent_update",
                            "the connection changed while refreshing; try again",
                        ));
                    }
                    Event::record(
                        c,
                        &tenant_id,
                        Some(&conn_id),
                        &provider_key,
                        "refreshed",
                        &actor,
                        None,
                    )?;
                    Ok(Connection::by_id(c, &conn_id)?)
                })
                .await
        }
        Err(e) => {
            log::warn!("refresh failed tenant={tenant_id} provider={provider_key} connection={conn_id} in {elapsed}ms: {e}");
            let (status, next, kind, app_err) = match &e {
                ProviderError::GrantGone { .. } => (
                    Status::NeedsReconnect,
                    None,
                    "needs_reconnect",
                    needs_reconnect(),
                ),
                ProviderError::Transient { retry_after, .. } => {
                    let wait = backoff(leased.failure_count, *retry_after);
                    (
                        Status::Error,
                        Some(now() + wait),
                        "refresh_failed",
                        AppError::unavailable(
                            "refresh_failed",
                            format!(
                                "{} is not answering; Tether will retry",
                                provider.display_name
                            ),
                            wait.num_seconds().max(1) as u64,
                        ),
                    )
                }
                ProviderError::ClientMisconfigured { .. } | ProviderError::Refused { .. } => {
                    let wait = backoff(leased.failure_count.max(4), None);
                    (
                        Status::Error,
                        Some(now() + wait),
                        "refresh_failed",
                        AppError::unavailable(
                            "refresh_failed",
                            format!("{} refused the refresh: {e}", provider.display_name),
                            wait.num_seconds().max(1) as u64,
                        ),
                    )
                }
            };
            let detail = e.to_string();
            state
                .db(move |c| {
                    Connection::record_failure(c, &leased, &owner, status, &detail, next)?;
                    Event::record(
                        c,
                        &tenant_id,
                        Some(&conn_id),
                        &provider_key,
                        kind,
                        &actor,
                        Some(&detail),
                    )?;
                    Ok(())
                })
                .await?;
            Err(app_err)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_is_capped_jittered_and_honours_retry_after() {
        for failures in 0..12 {
            let secs = backoff(failures, None).num_seconds();
            let base = (30i64 << failures.min(7)).min(3600);
            assert!(
                secs >= base * 8 / 10 && secs <= base * 12 / 10,
                "{failures}: {secs}"
            );
        }
        assert!(backoff(0, Some(600)).num_seconds() >= 600);
    }
}
