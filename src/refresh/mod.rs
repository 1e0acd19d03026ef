//! Refreshing connections. One rule above all: a refresh token is never sent
//! to the provider twice while an answer to it can still come. A refresh runs
//! only under the connection's lease in the database (taken with a conditional
//! UPDATE), concurrent callers in one process share one run, callers in other
//! processes wait for the lease, and the new token set is committed
//! (compare-and-swap on `version`) before anyone is handed the new access
//! token. Once an answer can no longer come (the call timed out, the process
//! that sent it died and its lease lapsed), sending the same refresh token
//! again is the dominant choice: see docs/design.md.

pub mod keeper;
pub mod retry;
pub mod scheduler;

use crate::app::cache::Opened;
use crate::app::held;
use crate::app::App;
use crate::db::models::connection::{Connection, Refreshed, Status, TokenSet};
use crate::db::models::event::{Actor, EventKind, NewEvent};
use crate::db::models::instance::Takeover;
use crate::db::models::integration_setting::IntegrationSetting;
use crate::db::now;
use crate::error::{AppError, AppResult, Code};
use crate::ids::TenantId;
use crate::metrics::RefreshOutcome;
use crate::oauth::client::ProviderError;
use crate::oauth::token;
use crate::platform::Due;
use crate::providers::{Provider, RefreshStyle};
use chrono::{Duration, NaiveDateTime};
use diesel::Connection as _;
pub use retry::backoff;
use std::sync::Arc;

fn needs_reconnect() -> AppError {
    AppError::conflict(
        Code::NeedsReconnect,
        "the provider no longer accepts this connection; a person has to reconnect it",
    )
}

fn not_connected() -> AppError {
    AppError::not_connected()
}

/// A connection whose lease we hold.
#[derive(Debug, Clone)]
pub struct Leased {
    pub row: Connection,
    pub owner: String,
}

fn lease_until(state: &App) -> NaiveDateTime {
    now() + Duration::from_std(state.settings.refresh.lease).unwrap_or(Duration::seconds(20))
}

/// The lease taken just before a refresh token is sent: until the moment no
/// answer to that request can arrive any more (the provider timeout, plus a
/// little for committing the answer). A holder that dies mid-call is taken
/// over as soon as that moment passes.
fn sending_lease_until(state: &App) -> NaiveDateTime {
    now()
        + Duration::from_std(state.settings.refresh.provider_timeout)
            .unwrap_or(Duration::seconds(15))
        + Duration::seconds(SEND_GRACE_SECS)
}

/// How long a token request whose stored token is still valid waits for a
/// refresh under way before it takes the stored token.
const PATIENCE: std::time::Duration = std::time::Duration::from_secs(2);
/// How long before its expiry a waiting caller takes the stored token.
const EXPIRY_MARGIN: std::time::Duration = std::time::Duration::from_millis(250);

/// Time after a provider call's deadline to commit its answer.
pub const SEND_GRACE_SECS: i64 = 5;

fn shutting_down() -> AppError {
    AppError::unavailable(
        Code::ShuttingDown,
        "this instance is stopping; another one takes over",
        1,
    )
}

/// A fresh lease owner name: this process and this attempt.
pub fn lease_owner(state: &App) -> String {
    format!("{}:{}", state.instance_id, crate::crypto::random_token(6))
}

/// Whose lapsed leases this instance may take now (see
/// `db::models::instance`).
pub fn takeover(state: &App) -> Takeover {
    Takeover::new(&state.instance_id, state.health.up_for(), now())
}

/// Takes the lease of one connection, or says who cannot have it: `Ok(None)`
/// when another holder has it, an error when the row cannot be refreshed.
async fn claim(state: &App, id: &str) -> AppResult<Option<Leased>> {
    let (id, owner, until) = (id.to_string(), lease_owner(state), lease_until(state));
    let takeover = takeover(state);
    state
        .db(move |c| {
            if let Some(row) = Connection::claim(c, &id, &owner, until, &takeover)? {
                return Ok(Some(Leased { row, owner }));
            }
            match Connection::by_id(c, &id).ok() {
                None => Err(AppError::not_found("no such connection")),
                Some(row) if !row.has_tokens() => Err(not_connected()),
                Some(row) if row.status() == Status::NeedsReconnect => Err(needs_reconnect()),
                Some(_) => Ok(None),
            }
        })
        .await
}

/// Waits until another holder's lease on `id` is released, or lapses and
/// may be taken over, by polling the row with a growing interval (bounded
/// by the lease length).
async fn wait_for_lease(state: &App, id: &str) -> AppResult<()> {
    let deadline = std::time::Instant::now()
        + state.settings.refresh.lease
        + std::time::Duration::from_secs(1);
    let mut pause = std::time::Duration::from_millis(10);
    loop {
        let free = {
            let (id, takeover) = (id.to_string(), takeover(state));
            state
                .db(move |c| Ok(Connection::lease_free(c, &id, &takeover)?))
                .await?
        };
        if free {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(AppError::unavailable(
                Code::RefreshInProgress,
                "another instance is refreshing this connection",
                2,
            ));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(std::time::Duration::from_millis(200));
    }
}

/// The state of a row a caller decided from: if the row has moved on since
/// (a refresh committed or failed, a disconnect), that outcome is the caller's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub version: i64,
    pub updated_at: NaiveDateTime,
}

impl Seen {
    pub fn of(row: &Connection) -> Seen {
        Seen {
            version: row.version,
            updated_at: row.updated_at,
        }
    }
}

/// Refreshes a connection now, sharing the run with concurrent callers in this
/// process and waiting for another instance's run if it holds the lease. When
/// the row has moved on since `seen` (the caller's view; `None`: as it is now),
/// whatever happened meanwhile is the outcome, and nothing is sent.
pub async fn refresh_now(
    state: &Arc<App>,
    id: &str,
    actor: &Actor,
    seen: Option<Seen>,
) -> AppResult<Connection> {
    // The run is a task of its own: a caller that goes away (a client hanging
    // up, a request timing out) must not cancel a refresh whose request may
    // be at the provider, or the answer (a rotated refresh token) is lost.
    // It runs on the system's own runtime, not the HTTP worker's: workers
    // stop with the server, the system runs until refreshes have drained.
    let (tx, rx) = tokio::sync::oneshot::channel();
    {
        let (state, id, actor) = (state.clone(), id.to_string(), actor.clone());
        let started = actix_web::rt::System::current()
            .arbiter()
            .spawn(async move {
                let _ = tx.send(shared_refresh(&state, &id, &actor, seen).await);
            });
        if !started {
            return Err(AppError::internal("the refresh runtime has stopped"));
        }
    }
    rx.await
        .map_err(|_| AppError::internal("the refresh task ended without an outcome"))??;
    // An answer the database could not take yet is the connection's state.
    if let Some(held) = state.held.row_of(id) {
        return Ok(held);
    }
    let id = id.to_string();
    state.db(move |c| Ok(Connection::by_id(c, &id)?)).await
}

/// [`refresh_now`]'s run, shared by every caller in this process.
async fn shared_refresh(
    state: &Arc<App>,
    id: &str,
    actor: &Actor,
    seen: Option<Seen>,
) -> AppResult<()> {
    state
        .flights
        .run(id, || async {
            // Its last answer is not stored yet: nothing may be sent before.
            if state.held.holds(id) {
                return Ok(());
            }
            let baseline = match seen {
                Some(s) => s,
                None => {
                    let id = id.to_string();
                    state
                        .db(move |c| Ok(Seen::of(&Connection::by_id(c, &id)?)))
                        .await?
                }
            };
            loop {
                match claim(state, id).await? {
                    Some(leased) if Seen::of(&leased.row) == baseline => {
                        return refresh_leased(state, leased, actor).await.map(|_| ())
                    }
                    Some(leased) => {
                        // Refreshed (or failed) between the caller's look and our claim.
                        let (id, owner) = (leased.row.id.clone(), leased.owner.clone());
                        state
                            .db(move |c| Ok(Connection::release(c, &id, &owner)?))
                            .await?;
                        return outcome_of(&leased.row);
                    }
                    None => {
                        wait_for_lease(state, id).await?;
                        // The other holder finished: its outcome, success or failure, is ours.
                        let id = id.to_string();
                        let row = state.db(move |c| Ok(Connection::by_id(c, &id)?)).await?;
                        if Seen::of(&row) != baseline || row.status() == Status::NeedsReconnect {
                            return outcome_of(&row);
                        }
                    }
                }
            }
        })
        .await
}

/// What a finished refresh by someone else means for us.
fn outcome_of(row: &Connection) -> AppResult<()> {
    match row.status() {
        Status::Connected => Ok(()),
        Status::NeedsReconnect => Err(needs_reconnect()),
        Status::Disconnected => Err(not_connected()),
        Status::Error => Err(failing(row)),
    }
}

/// A connection whose refresh fails for now: 503, retried when it is due.
fn failing(row: &Connection) -> AppError {
    AppError::unavailable(
        Code::RefreshFailed,
        row.last_error
            .clone()
            .unwrap_or_else(|| "the last refresh failed".into()),
        row.next_refresh_at
            .map_or(30, |t| (t - now()).num_seconds().clamp(1, 3600) as u64),
    )
}

/// A valid access token for the tenant's connection to `provider`: the stored
/// one when it stays valid for `min_ttl` seconds, else a refreshed one. A
/// token is not refreshed before half its life has passed, whatever `min_ttl`
/// asks (a 4 s token cannot be valid for 60 s; refreshing it on every request
/// would only storm the provider). While a refresh is backing off, or another
/// instance holds the lease, a stored token that is still valid is handed out.
/// `account` names the provider account; `None` is the tenant's default.
pub async fn fresh_token(
    state: &Arc<App>,
    tenant_id: &TenantId,
    provider: &Provider,
    account: Option<&str>,
    min_ttl: i64,
) -> AppResult<Arc<Opened>> {
    let t = now();
    let valid_for = |c: &Connection, secs: i64| {
        c.expires_at
            .is_none_or(|exp| exp > t + Duration::seconds(secs))
    };
    let wants_refresh = |c: &Connection| {
        provider.refresh != RefreshStyle::None && !valid_for(c, min_ttl) && c.past_half_life(t)
    };
    // Read before the database, so that what it says is not cached if
    // another instance's write is heard meanwhile.
    let epoch = state.tokens.epoch(tenant_id, &provider.key);
    // An answer held until the database takes it is the current token set.
    if let Some(row) = state.held.row_for(tenant_id, &provider.key, account) {
        if valid_for(&row, 0) {
            let tokens = row.tokens(&state.keys)?.ok_or_else(not_connected)?;
            return Ok(Opened::new(row, tokens));
        }
    }
    // Warm path: an opened token set this process read or wrote moments ago.
    if let Some(hit) = state.tokens.get(tenant_id, &provider.key, account) {
        let row = &hit.row;
        if row.status() == Status::Connected && valid_for(row, 0) && !wants_refresh(row) {
            return Ok(hit);
        }
    }
    let read = {
        let (tn, p, a) = (
            tenant_id.to_string(),
            provider.key.clone(),
            account.map(str::to_string),
        );
        state
            .db(move |c| {
                // Before the connection: a tenant that switched the provider
                // off gets that answer whether or not it is connected. The
                // warm path above needs no check: a switch-off forgets the
                // pair's entries in every instance.
                if IntegrationSetting::is_disabled(c, &tn, &p)? {
                    return Ok(None);
                }
                Ok(Some(Connection::lookup(c, &tn, &p, a.as_deref())?))
            })
            .await
    };
    let current = match read {
        Ok(current) => {
            current.ok_or_else(|| AppError::provider_disabled(&provider.display_name))?
        }
        Err(e) if e.is(Code::DatabaseUnavailable) => {
            return from_memory(state, tenant_id, &provider.key, account).ok_or(e)
        }
        Err(e) => return Err(e),
    };
    let row = current
        .filter(|c| c.has_tokens())
        .ok_or_else(|| match account {
            None => not_connected(),
            Some(_) => crate::db::models::connection::unknown_account(),
        })?;
    if row.status() == Status::NeedsReconnect {
        return Err(needs_reconnect());
    }
    let backing_off = row.status() == Status::Error && row.next_refresh_at.is_some_and(|at| at > t);
    let open = |row: Connection| -> AppResult<Arc<Opened>> {
        let tokens = row.tokens(&state.keys)?.ok_or_else(not_connected)?;
        let opened = Opened::new(row, tokens);
        if opened.row.status() == Status::Connected {
            state.tokens.put(&opened, account, epoch);
        }
        Ok(opened)
    };
    let still_valid = valid_for(&row, 0);
    if !wants_refresh(&row) || (still_valid && backing_off) {
        return open(row);
    }
    if backing_off {
        // Expired, and the last refresh failed for now: say when it is retried.
        return Err(failing(&row));
    }
    let refreshed = refresh_now(state, &row.id, &Actor::TokenApi, Some(Seen::of(&row)));
    // A caller whose stored token still works waits a little for the refresh
    // (its own, or another instance's lease), not for a slow provider or the
    // lease of an instance that died: then the stored token is the answer.
    // The refresh itself runs on (it is a task of its own).
    let outcome = if still_valid {
        // Never so long that the stored token expires meanwhile: then there
        // would be nothing left to answer with (the refresh may be held by
        // an instance that died, whose lease only lapses later).
        let left = row
            .expires_at
            .and_then(|exp| (exp - now()).to_std().ok())
            .map_or(PATIENCE, |left| left.saturating_sub(EXPIRY_MARGIN));
        tokio::time::timeout(PATIENCE.min(left), refreshed)
            .await
            .unwrap_or_else(|_| {
                Err(AppError::unavailable(
                    Code::RefreshInProgress,
                    "a refresh is under way",
                    1,
                ))
            })
    } else {
        refreshed.await
    };
    match outcome {
        Ok(fresh) => open(fresh),
        // Still valid now, after the wait (not only when the request came).
        Err(e) if e.is_unavailable() && row.expires_at.is_none_or(|exp| exp > now()) => {
            // Still usable: better a short-lived token than none.
            log::warn!(
                "handing out a token valid < min_ttl for connection {}: {}",
                row.id,
                e.message()
            );
            let tokens = row.tokens(&state.keys)?.ok_or_else(not_connected)?;
            Ok(Opened::new(row, tokens))
        }
        Err(e) => Err(e),
    }
}

/// While the database is away: the last token set this process opened for
/// the connection, if its access token is still valid. Nothing else can be
/// known without the database (a disconnect elsewhere, a newer token), and a
/// still-valid token is what the provider accepts.
fn from_memory(
    state: &App,
    tenant_id: &TenantId,
    provider: &str,
    account: Option<&str>,
) -> Option<Arc<Opened>> {
    let hit = state.tokens.fallback(tenant_id, provider, account)?;
    let row = &hit.row;
    let valid = row.status() == Status::Connected && row.expires_at.is_none_or(|exp| exp > now());
    if !valid {
        return None;
    }
    state.metrics.answered_from_memory();
    log::debug!(
        "database away: answered tenant={tenant_id} provider={provider} connection={} from memory",
        row.id
    );
    Some(hit)
}

/// Refreshes a connection whose lease we hold, and releases the lease.
pub async fn refresh_leased(state: &App, leased: Leased, actor: &Actor) -> AppResult<Connection> {
    let Leased { row, owner } = leased;
    let release = |err: AppError| {
        let (id, owner) = (row.id.clone(), owner.clone());
        async move {
            let _ = state
                .db(move |c| Ok(Connection::release(c, &id, &owner)?))
                .await;
            err
        }
    };
    let Some(provider) = state.providers.shared(&row.provider).cloned() else {
        return Err(release(AppError::not_found(format!(
            "provider '{}' is not enabled",
            row.provider
        )))
        .await);
    };
    if provider.refresh == RefreshStyle::None {
        return Err(release(AppError::conflict(
            Code::NotRefreshable,
            format!(
                "{} tokens do not expire and cannot be refreshed",
                provider.display_name
            ),
        ))
        .await);
    }
    // Nothing new goes out once a shutdown is draining; the permit keeps the
    // shutdown waiting until this refresh's answer is committed.
    let _sending = match state.sending.try_acquire() {
        Ok(permit) if !state.is_draining() => permit,
        _ => return Err(release(shutting_down()).await),
    };
    let ticket = match state.breakers.allow(&provider.key) {
        Ok(ticket) => ticket,
        Err(wait) => {
            state
                .metrics
                .refresh_outcome(&provider.key, RefreshOutcome::CircuitOpen, 0.0);
            return Err(release(AppError::unavailable(
                Code::ProviderUnavailable,
                format!(
                    "{} is failing; Tether is waiting before trying again",
                    provider.display_name
                ),
                wait,
            ))
            .await);
        }
    };
    let old = match row.tokens(&state.keys) {
        Ok(Some(t)) => t,
        Ok(None) => return Err(release(not_connected()).await),
        Err(e) => return Err(release(e.into()).await),
    };
    // Last check before the refresh token leaves: we still hold the lease,
    // now until no answer to this call can come any more.
    {
        let (id, owner, until) = (row.id.clone(), owner.clone(), sending_lease_until(state));
        if !state
            .db(move |c| Ok(Connection::extend_lease(c, &id, &owner, until)?))
            .await?
        {
            return Err(AppError::conflict(
                Code::LeaseLost,
                "the refresh lease lapsed before the call; not sending",
            ));
        }
    }
    let started = std::time::Instant::now();
    // A token minted from another connection is minted again from it: read
    // that one now (the database, not the provider: a failure sends nothing).
    let parent = match state.platforms.minted_from(&provider, &row, &old) {
        Some(account) => match parent_of(state, &row, account).await {
            Ok(parent) => parent,
            Err(e) => return Err(release(e).await),
        },
        None => None,
    };
    let due = Due {
        row: &row,
        tokens: &old,
        parent: parent.as_ref().and_then(|(p, t)| Some((p, t.as_ref()?))),
    };
    let result = state
        .platforms
        .renew(&state.refresh_http, &provider, due)
        .await;
    let secs = started.elapsed().as_secs_f64();
    let ms = started.elapsed().as_millis();
    let (tenant_id, conn_id, provider_key, actor) = (
        row.tenant_id.clone(),
        row.id.clone(),
        row.provider.clone(),
        actor.clone(),
    );
    match result {
        Ok(response) => {
            ticket.success();
            state
                .metrics
                .refresh_outcome(&provider.key, RefreshOutcome::Ok, secs);
            let t = now();
            let mut tokens = response.tokens;
            // A provider that rotates refresh tokens starts the new one's
            // lifetime afresh (GoHighLevel's year); one that hands back the
            // old one, or none, keeps the lapse date it had (Spotify's six
            // months run from consent).
            let renewed = provider.rotates_refresh_tokens
                && tokens.refresh_token.as_ref().is_some_and(|new| {
                    old.refresh_token
                        .as_ref()
                        .is_none_or(|old| old.expose() != new.expose())
                });
            let refresh_expires_at = match provider.refresh_token_lifetime_days {
                Some(days) if renewed => Some(t + Duration::days(days)),
                _ => row.refresh_expires_at,
            };
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
                refresh_expires_at,
                scopes: response.scopes.unwrap_or_else(|| row.scopes()),
            };
            log::info!("refreshed tenant={tenant_id} provider={provider_key} connection={conn_id} in {ms}ms");
            // Sealed once: stored now, or held (and maybe spilled) as is.
            let sealed = row.seal(&state.keys, &tokens)?;
            let id = row.id.to_string();
            let answer = held::HeldAnswer {
                leased: row,
                owner,
                sealed,
                refreshed,
                actor,
            };
            match keeper::store_or_hold(state, answer).await? {
                Some(row) => Ok(row),
                // A disconnect, a reconnect or another holder got there
                // first: what the row says now is the answer.
                None => {
                    let row = state.db(move |c| Ok(Connection::by_id(c, &id)?)).await?;
                    outcome_of(&row).map(|()| row)
                }
            }
        }
        Err(e) => {
            log::warn!("refresh failed tenant={tenant_id} provider={provider_key} connection={conn_id} in {ms}ms: {e}");
            let failure = classify(&provider, &row, &e);
            state
                .metrics
                .refresh_outcome(&provider.key, failure.outcome, secs);
            match &e {
                // No answer is as much a sign of trouble as a 5xx.
                ProviderError::Transient { .. } | ProviderError::Unknown { .. } => {
                    if ticket.failure() {
                        log::warn!("circuit opened for provider={provider_key}");
                    }
                }
                ProviderError::ClientMisconfigured { error } => {
                    state.flag_provider(&provider.key, error);
                    // Not a transient failure of the provider, nor a verdict on the tenant.
                    ticket.success();
                }
                _ => ticket.success(),
            }
            let detail = match (&e, row.last_error.as_deref()) {
                // Most often the answer to that earlier refresh was lost
                // after the provider rotated the token: say so.
                (ProviderError::GrantGone { .. }, Some(earlier))
                    if row.status() == Status::Error =>
                {
                    format!("{e}; the refresh before it had failed: {earlier}")
                }
                _ => e.to_string(),
            };
            let Failure {
                status,
                next_refresh_at,
                event,
                error,
                ..
            } = failure;
            let notify = state.settings.webhook.is_some();
            let (cached_tenant, cached_provider) = (row.tenant_id.clone(), row.provider.clone());
            let recorded = state
                .db(move |c| {
                    c.transaction(|c| {
                        // The row moved on meanwhile (a disconnect, a
                        // reconnect, another holder): this failure is not its.
                        if !Connection::record_failure(
                            c,
                            &row,
                            &owner,
                            status,
                            &detail,
                            next_refresh_at,
                        )? {
                            return Ok(());
                        }
                        crate::db::models::webhook::record(
                            c,
                            notify,
                            &NewEvent {
                                tenant_id: &tenant_id,
                                connection_id: Some(&conn_id),
                                provider: &provider_key,
                                kind: event,
                                actor: &actor,
                                detail: Some(&detail),
                            },
                        )?;
                        Ok::<(), AppError>(())
                    })
                })
                .await;
            // Unrecorded for want of a database, the row (and a still-valid
            // token this process holds for it) is as it was, unless the
            // provider said the grant is gone.
            if recorded.is_ok() || status == Status::NeedsReconnect {
                state.tokens.forget(&cached_tenant, &cached_provider);
            }
            recorded?;
            Err(error)
        }
    }
}

/// The connection (of the same tenant and provider) that `row`'s token is
/// minted from, if it still exists, and its tokens if they can be opened.
async fn parent_of(
    state: &App,
    row: &Connection,
    account: String,
) -> AppResult<Option<(Connection, Option<TokenSet>)>> {
    let (tenant, key) = (row.tenant_id.to_string(), row.provider.clone());
    let parent = state
        .db(move |c| Ok(Connection::for_account(c, &tenant, &key, &account)?))
        .await?;
    Ok(parent.map(|p| {
        let tokens = p.tokens(&state.keys).ok().flatten();
        (p, tokens)
    }))
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
