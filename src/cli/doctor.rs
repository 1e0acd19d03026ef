//! `tether doctor`: every check of the configuration, database, key ring
//! and providers, one line each, and what to fix.

use super::database::{conn, pending_migrations};
use crate::config::Settings;
use crate::startup;
use std::process::ExitCode;

/// Prints one line per check; exits non-zero when anything will fail.
pub(super) fn doctor(settings: Settings) -> ExitCode {
    let mut failed = false;
    let mut report = |level: &str, msg: String| {
        if level == "FAIL" {
            failed = true;
        }
        println!("{level:<4}  {msg}");
    };
    let env = if settings.is_production() {
        "production"
    } else {
        "development"
    };
    report("ok", format!("configuration is valid ({env})"));

    let public = settings.public_url.clone();
    let local = matches!(public.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
    if public.scheme() == "http" && !local {
        report("warn", format!("TETHER_PUBLIC_URL {} is http:// on a non-local host: providers refuse such redirect URIs", settings.base_url()));
    }
    if settings
        .var("TETHER_PUBLIC_URL")
        .is_some_and(|v| v.trim().ends_with('/'))
    {
        report("warn", "TETHER_PUBLIC_URL ends with '/': it is ignored; register the redirect URIs below exactly".into());
    }
    if !settings.is_production() {
        report("warn", "development mode: keys are generated into the data dir; use TETHER_ENV=production for real tenants".into());
    }

    let catalogue = crate::providers::Catalogue::load(&settings);
    // Opened without migrating: a new version's doctor, run before a
    // deploy, must not change the schema under running instances.
    match startup::open(settings.clone()) {
        Ok(ctx) if !ctx.pending_migrations.is_empty() => {
            report("FAIL", pending_migrations(&ctx));
            report(
                "--",
                "key ring: not checked until the database is migrated".into(),
            );
        }
        Ok(ctx) => {
            report(
                "ok",
                format!("database ({}) is reachable and migrated", ctx.backend),
            );
            match conn(&ctx).and_then(|mut db| crate::keys::verify(&mut db, &ctx.keys)) {
                Ok(()) => report(
                    "ok",
                    format!(
                        "key ring opens the stored data (primary key '{}')",
                        ctx.keys.primary_id()
                    ),
                ),
                Err(e) => report("FAIL", format!("key ring: {e}")),
            }
            let flags = conn(&ctx).and_then(|mut db| {
                crate::db::models::provider_flag::ProviderFlag::all(&mut db)
                    .map_err(|e| e.to_string())
            });
            if let Ok(catalogue) = &catalogue {
                for line in held_twice(&ctx, catalogue) {
                    report("warn", line);
                }
            }
            for flag in flags.unwrap_or_default() {
                report(
                    "FAIL",
                    format!(
                        "{}: rejected Tether's client credentials at {} ({}); check its client id and secret",
                        flag.provider,
                        flag.flagged_at.format("%Y-%m-%d %H:%M UTC"),
                        flag.error
                    ),
                );
            }
        }
        // The catalogue's own problem, reported once below.
        Err(e) if catalogue.as_ref().is_err_and(|c| c.to_string() == e) => report(
            "--",
            "database: not checked until the providers are fixed".into(),
        ),
        Err(e) => report("FAIL", e),
    }

    match catalogue {
        Ok(catalogue) => {
            let platforms = crate::platforms::all();
            for p in catalogue.all() {
                let redirect = settings.redirect_uri(&p.key);
                if p.enabled() {
                    report(
                        "ok",
                        format!("{}: enabled; redirect URI to register: {redirect}", p.key),
                    );
                    for warning in platforms
                        .of(p)
                        .map(|platform| platform.warnings(p, settings.base_url()))
                        .unwrap_or_default()
                    {
                        report("warn", format!("{}: {warning}", p.key));
                    }
                    // A provider whose signed app webhooks Tether takes.
                    if p.webhook_key.is_some() && settings.relay_target().is_none() {
                        report(
                            "warn",
                            format!(
                                "{}: its app events are acted on but relayed nowhere: set TETHER_WEBHOOK_URL (or TETHER_RELAY_URL) for the CRM to receive them",
                                p.key
                            ),
                        );
                    }
                } else {
                    report(
                        "--",
                        format!(
                            "{}: disabled ({}); redirect URI would be {redirect}",
                            p.key,
                            p.disabled_reason().unwrap_or_default()
                        ),
                    );
                }
            }
        }
        // Half-configured providers land here, in the words `serve` stops with.
        Err(e) => report("FAIL", e.to_string()),
    }
    if failed {
        println!("doctor found problems that will stop Tether from working");
        ExitCode::FAILURE
    } else {
        println!("doctor found nothing that will fail");
        ExitCode::SUCCESS
    }
}

/// Accounts of one-holder providers held by several tenants (stored before
/// the rule, or a provider file that turned it on later): said, not
/// resolved, since only the operator knows which tenant the business is.
fn held_twice(ctx: &startup::Context, catalogue: &crate::providers::Catalogue) -> Vec<String> {
    use crate::db::models::connection::Connection;
    use crate::db::models::tenant::Tenant;
    let keys: Vec<_> = catalogue
        .all()
        .filter(|p| p.one_holder)
        .map(|p| p.key.clone())
        .collect();
    let found = conn(ctx).and_then(|mut db| {
        let twice = Connection::held_twice(&mut db, &keys).map_err(|e| e.to_string())?;
        twice
            .into_iter()
            .map(|(provider, account, tenants)| {
                let names = tenants
                    .iter()
                    .map(|t| {
                        Tenant::by_id(&mut db, t)
                            .map(|row| row.map_or_else(|| t.to_string(), |r| r.external_id.to_string()))
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| e.to_string())?;
                Ok(format!(
                    "{provider}: account {account} is held by {} tenants ({}); one business belongs to one tenant: installs and events go to the first, '{}'. Disconnect it from the others",
                    names.len(),
                    names.join(", "),
                    names[0]
                ))
            })
            .collect::<Result<Vec<_>, String>>()
    });
    found.unwrap_or_else(|e| vec![format!("could not look for accounts held twice: {e}")])
}
