//! Removing a tenant: every connection holding tokens is revoked at its
//! provider where the provider offers it (a failure is reported, not
//! fatal), then the tenant and everything it had (connections and their
//! tokens, admins, connect links, OAuth states, its events, API keys limited
//! to it, and its webhook deliveries still queued) are erased in one
//! transaction. A connection that gained tokens while the revocations were
//! being sent (a connect finishing meanwhile) is erased in that transaction
//! too, and its grant revoked after it, so that none outlives the tenant
//! unrevoked. A dry run says what would be done and changes nothing.
//!
//! The tenant's events go with it: they are its data, and an offboarding
//! that keeps them has not erased the tenant. What stays is the operator's
//! record of the removal itself: the log line, the report returned to the
//! caller, and (with webhooks on) a `tenant_removed` notification carrying
//! the same report, which lives in the outbox, not among the tenant's rows.

use crate::app::App;
use crate::connections::manage::{self, Revocation};
use crate::db::listen::notify_changed;
use crate::db::models::connection::{Connection, Kind};
use crate::db::models::event::Actor;
use crate::db::models::tenant::{Holdings, Tenant};
use crate::db::models::webhook as outbox;
use crate::db::{new_id, now};
use crate::error::{AppError, AppResult};
use crate::ids::{AccountId, ConnectionId, ExternalTenantId, ProviderKey};
use diesel::Connection as _;

/// What became, or would become, of one connection's grant at its provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The provider revoked it.
    Revoked,
    /// The provider offers no revocation: remove Tether at the provider.
    NotOffered,
    /// The provider is no longer configured here (no credentials), so
    /// nothing could be sent.
    ProviderNotConfigured,
    /// The provider did not confirm the revocation (see `detail`).
    Failed,
    /// The stored tokens no longer open: nothing could be sent.
    Unopenable,
    /// Dry run: a revocation would be sent.
    WouldRevoke,
}

/// One connection's revocation, as reported.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct RevocationReport {
    #[schema(value_type = String)]
    pub provider: ProviderKey,
    /// The provider's account id.
    #[schema(value_type = String)]
    pub account: AccountId,
    pub outcome: Outcome,
    /// Why a revocation failed (the provider's error, never a token).
    pub detail: Option<String>,
}

/// What a removal did (or, in a dry run, would do).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Removal {
    #[schema(value_type = String)]
    pub tenant: ExternalTenantId,
    pub dry_run: bool,
    /// One entry per connection that held tokens.
    pub revocations: Vec<RevocationReport>,
    /// Rows erased (or that would be), table by table.
    pub erased: Holdings,
}

/// Removes the tenant with external id `external_id` (see the module's
/// doc); with `dry_run`, only reports. An unknown tenant is a 404 and
/// changes nothing.
pub async fn remove(
    app: &App,
    external_id: &str,
    dry_run: bool,
    actor: &Actor,
) -> AppResult<Removal> {
    let ext = ExternalTenantId::parse(external_id)?;
    let (tenant, rows, holdings) = {
        let ext = ext.clone();
        app.db(move |c| {
            let tenant = Tenant::by_external_id(c, &ext)?
                .ok_or_else(|| AppError::not_found(format!("no tenant '{ext}'")))?;
            let rows = Connection::of_tenant(c, &tenant.id)?;
            let mut holdings = Tenant::holdings(c, &tenant.id)?;
            holdings.webhook_deliveries = outbox::queued_for_tenant(c, &ext)?.len() as i64;
            Ok((tenant, rows, holdings))
        })
        .await?
    };
    let live: Vec<&Connection> = rows.iter().filter(|r| r.has_tokens()).collect();
    // The grants asked about: a row whose tokens differ when the tenant is
    // erased gained them meanwhile.
    let asked: Vec<(ConnectionId, Option<Vec<u8>>)> = live
        .iter()
        .map(|r| (r.id.clone(), r.token_ciphertext.clone()))
        .collect();
    let mut revocations = Vec::with_capacity(live.len());
    for row in live {
        revocations.push(revoke(app, row, dry_run).await);
    }
    if dry_run {
        return Ok(Removal {
            tenant: ext,
            dry_run,
            revocations,
            erased: holdings,
        });
    }

    let providers: Vec<ProviderKey> = {
        let mut p: Vec<ProviderKey> = rows.iter().map(|r| r.provider.clone()).collect();
        p.dedup();
        p
    };
    let notify = app.settings.webhook.is_some();
    let (tenant_id, revs, who) = (tenant.id.clone(), revocations.clone(), actor.to_string());
    let (ext2, providers2) = (ext.clone(), providers.clone());
    let (erased, late) = app
        .db(move |c| {
            Ok(c.transaction(|c| {
                // Before erase's first read: on SQLite a transaction that
                // reads and then writes fails ("database is locked") when
                // another connection (the delivery loop, the heartbeat)
                // wrote in between; this one waits its turn instead.
                crate::db::lock_for_write(c, &format!("tenant {tenant_id}"))?;
                let late: Vec<Connection> = Connection::of_tenant(c, &tenant_id)?
                    .into_iter()
                    .filter(|r| {
                        r.has_tokens()
                            && !asked
                                .iter()
                                .any(|(id, sealed)| *id == r.id && *sealed == r.token_ciphertext)
                    })
                    .collect();
                let mut erased = Tenant::erase(c, &tenant_id)?;
                let queued = outbox::queued_for_tenant(c, &ext2)?;
                erased.webhook_deliveries = outbox::erase(c, &queued)? as i64;
                // Other instances drop the tenant's cached token sets.
                for p in &providers2 {
                    notify_changed(c, &tenant_id, p)?;
                }
                if notify {
                    let id = new_id();
                    let payload = serde_json::json!({
                        "id": id,
                        "type": outbox::TENANT_REMOVED,
                        "tenant": ext2,
                        "provider": null,
                        "connection_id": null,
                        "account": null,
                        "tags": null,
                        "actor": who,
                        "detail": null,
                        "erased": erased,
                        "revocations": revs,
                        "occurred_at": now().and_utc().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    });
                    outbox::enqueue(c, &id, None, &payload.to_string())?;
                }
                Ok::<_, diesel::result::Error>((erased, late))
            })?)
        })
        .await?;
    // Erased already; their grants are revoked now that no request can
    // reach them (the operator's notification, queued above, lists the
    // grants asked about before the erase; the log line and the answer
    // count these too).
    for row in &late {
        revocations.push(revoke(app, row, false).await);
    }
    for p in &providers {
        app.tokens.forget(&tenant.id, p);
    }
    app.api_cache.forget_tenant(&tenant.id);
    let count = |o: Outcome| revocations.iter().filter(|r| r.outcome == o).count();
    log::info!(
        "tenant removed tenant={ext} actor={actor} connections={} users={} revoked={} revocations_failed={}",
        erased.connections,
        erased.users,
        count(Outcome::Revoked),
        count(Outcome::Failed) + count(Outcome::Unopenable),
    );
    Ok(Removal {
        tenant: ext,
        dry_run,
        revocations,
        erased,
    })
}

/// Asks the provider to revoke one connection's grant (in a dry run, says
/// whether it would be asked); the report of it.
async fn revoke(app: &App, row: &Connection, dry_run: bool) -> RevocationReport {
    let provider = app.providers.shared(&row.provider);
    let (outcome, detail) = match provider {
        None => (Outcome::ProviderNotConfigured, None),
        Some(p) if p.revocation_url.is_none() || row.kind == Kind::PrivateToken => {
            (Outcome::NotOffered, None)
        }
        Some(_) if dry_run => (Outcome::WouldRevoke, None),
        Some(p) => match manage::revoke(app, p, row).await {
            Revocation::Revoked => (Outcome::Revoked, None),
            Revocation::NotOffered => (Outcome::NotOffered, None),
            Revocation::Failed(why) => (Outcome::Failed, Some(why)),
            Revocation::Unopenable => (
                Outcome::Unopenable,
                Some("the stored tokens could not be decrypted".to_string()),
            ),
        },
    };
    RevocationReport {
        provider: row.provider.clone(),
        account: row.account_id.clone(),
        outcome,
        detail,
    }
}
