//! `tether tenant`: add, list, and remove (revoking at providers, erasing
//! everything the tenant had).

use super::args::TenantCommand;
use super::database::conn;
use super::output::{confirm, minute, print_json, print_table, rfc3339, Stop, PARTLY};
use crate::db::models::tenant::Tenant;
use crate::startup::Context;
use std::process::ExitCode;

pub(super) fn tenant(c: TenantCommand, ctx: &Context) -> Result<ExitCode, Stop> {
    let mut db = conn(ctx)?;
    match c {
        TenantCommand::Add { external_id, name } => {
            let name = name.unwrap_or_else(|| external_id.clone());
            let t = Tenant::create(&mut db, &external_id, &name).map_err(|e| e.to_string())?;
            println!("created tenant '{}' ({})", t.external_id, t.name);
        }
        TenantCommand::List { json } => {
            let tenants = Tenant::list(&mut db).map_err(|e| e.to_string())?;
            if json {
                print_json(
                    tenants
                        .iter()
                        .map(|t| {
                            serde_json::json!({
                                "external_id": t.external_id,
                                "name": t.name,
                                "created_at": rfc3339(t.created_at),
                            })
                        })
                        .collect(),
                );
                return Ok(ExitCode::SUCCESS);
            }
            let rows: Vec<[String; 3]> = tenants
                .iter()
                .map(|t| {
                    [
                        t.external_id.to_string(),
                        t.name.clone(),
                        minute(t.created_at),
                    ]
                })
                .collect();
            print_table(["EXTERNAL ID", "NAME", "CREATED"], &rows);
            println!("{} tenant(s)", tenants.len());
        }
        TenantCommand::Remove {
            external_id,
            dry_run,
            yes,
        } => {
            drop(db);
            return tenant_remove(ctx, &external_id, dry_run, yes);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn tenant_remove(
    ctx: &Context,
    external_id: &str,
    dry_run: bool,
    yes: bool,
) -> Result<ExitCode, Stop> {
    use crate::offboarding::{remove, Outcome};
    let app = ctx.app();
    let actor = crate::db::models::event::Actor::Cli;
    let runtime = actix_web::rt::System::new();
    if !dry_run {
        // What would go, for the question; an unknown tenant stops here.
        let plan = runtime
            .block_on(remove(&app, external_id, true, &actor))
            .map_err(|e| e.to_string())?;
        let e = &plan.erased;
        confirm(
            &format!(
                "Remove tenant '{}' and its {} connection(s), {} user(s), {} API key(s)? Type the tenant id to confirm:",
                plan.tenant, e.connections, e.users, e.api_keys
            ),
            plan.tenant.as_str(),
            yes,
            "tenant remove",
        )?;
    }
    let done = runtime
        .block_on(remove(&app, external_id, dry_run, &actor))
        .map_err(|e| e.to_string())?;
    if done.dry_run {
        println!(
            "dry run: nothing was changed; removing tenant '{}' would do this:",
            done.tenant
        );
    } else {
        println!("removed tenant '{}':", done.tenant);
    }
    for r in &done.revocations {
        let outcome = match r.outcome {
            Outcome::Revoked => "revoked at the provider".to_string(),
            Outcome::WouldRevoke => "would be revoked at the provider".to_string(),
            Outcome::NotOffered => {
                "the provider offers no revocation: remove the app there".to_string()
            }
            Outcome::ProviderNotConfigured => {
                "the provider is not configured here: remove the app there".to_string()
            }
            Outcome::Failed | Outcome::Unopenable => format!(
                "revocation FAILED ({}): remove the app at the provider",
                r.detail.as_deref().unwrap_or("no detail")
            ),
        };
        println!("  {} {}: {outcome}", r.provider, r.account);
    }
    let failed = done
        .revocations
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Failed | Outcome::Unopenable))
        .count();
    let e = &done.erased;
    println!(
        "{} {} connection(s) ({} holding tokens), {} admin(s), {} connect link(s), {} OAuth state(s), {} event(s), {} API key(s), and the tenant",
        if done.dry_run { "would erase" } else { "erased" },
        e.connections,
        e.tokens,
        e.users,
        e.connect_links,
        e.oauth_states,
        e.events,
        e.api_keys
    );
    if failed > 0 {
        eprintln!(
            "tether: {failed} revocation(s) failed: remove the app at those providers (exit code {PARTLY})"
        );
        return Ok(ExitCode::from(PARTLY));
    }
    Ok(ExitCode::SUCCESS)
}
