//! `tether connections`: the list across tenants, and the import of tokens
//! stored before Tether, line by line.

use super::database::conn;
use super::output::{minute, print_json, print_table, rfc3339, PARTLY};
use crate::db::models::tenant::Tenant;
use crate::ids::{AccountId, ExternalTenantId};
use crate::startup::Context;
use std::io::BufRead;
use std::process::ExitCode;

pub(super) fn connections_list(
    filter: Vec<(String, String)>,
    json: bool,
    ctx: &Context,
) -> Result<(), String> {
    use crate::connections::directory;
    let filter = directory::Filter::from_query(filter).map_err(|e| e.to_string())?;
    let mut db = conn(ctx)?;
    let listing = directory::find(
        &mut db,
        &ctx.providers,
        &directory::Scope::AllTenants,
        &filter,
    )
    .map_err(|e| e.to_string())?;
    let more = format!(
        "(more matched: narrow with --tenant, --provider or --status, or raise --limit up to {})",
        directory::MAX_LIMIT
    );
    if json {
        print_json(
            listing
                .connections
                .iter()
                .map(|found| {
                    let c = &found.connection;
                    serde_json::json!({
                        "tenant": found.tenant,
                        "provider": c.provider,
                        "account_id": c.account_id,
                        "account_name": c.account_name,
                        "status": crate::connections::status::public_status(Some(c)),
                        "expires_at": c.expires_at.map(rfc3339),
                        "last_error": c.last_error,
                    })
                })
                .collect(),
        );
        if listing.truncated {
            eprintln!("{more}");
        }
        return Ok(());
    }
    let rows: Vec<[String; 6]> = listing
        .connections
        .iter()
        .map(|found| {
            let c = &found.connection;
            let account = match &c.account_name {
                Some(name) if *name != *c.account_id => format!("{} ({name})", c.account_id),
                _ => c.account_id.to_string(),
            };
            let expires = c.expires_at.map_or("never".into(), minute);
            let error: String = c
                .last_error
                .as_deref()
                .unwrap_or("-")
                .chars()
                .take(80)
                .collect();
            [
                found.tenant.to_string(),
                c.provider.to_string(),
                account,
                crate::connections::status::public_status(Some(c)).to_string(),
                expires,
                error,
            ]
        })
        .collect();
    print_table(
        [
            "TENANT",
            "PROVIDER",
            "ACCOUNT",
            "STATUS",
            "EXPIRES",
            "LAST ERROR",
        ],
        &rows,
    );
    println!("{} connection(s)", listing.connections.len());
    if listing.truncated {
        println!("{more}");
    }
    Ok(())
}

/// What became of one line of an import file.
enum LineOutcome {
    Imported,
    Skipped,
    Refused,
}

/// `connections import`: one line of output per line of input (blank lines
/// aside), a summary, and exit code 3 when any line was refused. A
/// refused or skipped line writes nothing; a dry run writes nothing at all.
/// Due tokens are made due for the scheduler of the running server, which
/// refreshes them at its next tick.
pub(super) fn connections_import(
    file: &std::path::Path,
    dry_run: bool,
    ctx: &Context,
) -> Result<ExitCode, String> {
    let input: Box<dyn BufRead> = if file.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let f = std::fs::File::open(file)
            .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        Box::new(std::io::BufReader::new(f))
    };
    let mut db = conn(ctx)?;
    let actor = crate::db::models::event::Actor::Import { by: "cli".into() };
    // Each line's token is checked with its provider before it is stored.
    let checker = Checker {
        runtime: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the HTTP client: {e}"))?,
        http: crate::oauth::client::http_client(
            ctx.settings.refresh.provider_timeout,
            &ctx.settings.ca_certs,
        ),
    };
    // In a dry run nothing is written, so a second line for one account
    // would not see the first: remember which line would have taken it.
    let mut planned = std::collections::HashMap::new();
    let (mut imported, mut skipped, mut refused) = (0, 0, 0);
    for (n, line) in input.split(b'\n').enumerate() {
        let n = n + 1;
        let line = line.map_err(|e| format!("cannot read line {n}: {e}"))?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let (outcome, said) = import_line(
            &mut db,
            ctx,
            &checker,
            &line,
            &actor,
            dry_run,
            &mut planned,
            n,
        )?;
        match outcome {
            LineOutcome::Imported => imported += 1,
            LineOutcome::Skipped => skipped += 1,
            LineOutcome::Refused => refused += 1,
        }
        println!("line {n}: {said}");
    }
    if dry_run {
        println!("dry run, nothing written: {imported} would be imported, {skipped} skipped, {refused} refused");
    } else {
        println!("{imported} imported, {skipped} skipped, {refused} refused");
    }
    Ok(if refused > 0 {
        ExitCode::from(PARTLY)
    } else {
        ExitCode::SUCCESS
    })
}

/// What checks an import line's token with its provider (the same lookup
/// as the API's import).
struct Checker {
    runtime: tokio::runtime::Runtime,
    http: reqwest::Client,
}

/// One line of an import file: what became of it and the sentence that says
/// so. Only a failure of the database itself stops the import.
#[allow(clippy::too_many_arguments)]
fn import_line(
    db: &mut crate::db::PooledConn,
    ctx: &Context,
    checker: &Checker,
    line: &[u8],
    actor: &crate::db::models::event::Actor,
    dry_run: bool,
    planned: &mut std::collections::HashMap<(ExternalTenantId, String, AccountId), usize>,
    n: usize,
) -> Result<(LineOutcome, String), String> {
    use crate::connections::import::{apply, verify, Outcome, Request};
    let refuse = |why: &str| Ok((LineOutcome::Refused, format!("refused: {why}")));
    let mut value: serde_json::Value = match serde_json::from_slice(line) {
        Ok(v) => v,
        // serde_json's syntax errors name a position, never the text.
        Err(e) => return refuse(&format!("not a JSON object ({e})")),
    };
    let Some(obj) = value.as_object_mut() else {
        return refuse("a line must be a JSON object");
    };
    let tenant = match obj.remove("tenant").as_ref().and_then(|t| t.as_str()) {
        Some(t) if ExternalTenantId::parse(t).is_ok() => ExternalTenantId::known(t),
        _ => return refuse("\"tenant\" must be the tenant's external id (1 to 128 letters, digits, '-', '_', '.' or ':')"),
    };
    let provider_key = match obj.remove("provider") {
        Some(serde_json::Value::String(p)) if crate::providers::valid_key(&p) => p,
        _ => {
            return refuse(
                "\"provider\" must be a provider's key, as `tether providers` lists them",
            )
        }
    };
    let request = match Request::parse(&value) {
        Ok(r) => r,
        Err(e) => return refuse(e.message()),
    };
    let Some(tenant_row) = Tenant::by_external_id(db, &tenant).map_err(|e| e.to_string())? else {
        return Ok((
            LineOutcome::Skipped,
            format!("skipped (unknown tenant '{tenant}')"),
        ));
    };
    let Some(provider) = ctx.providers.shared(&provider_key) else {
        let why = if ctx.providers.get(&provider_key).is_some() {
            "is not enabled"
        } else {
            "does not exist"
        };
        return Ok((
            LineOutcome::Skipped,
            format!("skipped (unknown provider '{provider_key}': it {why})"),
        ));
    };
    let request = match checker
        .runtime
        .block_on(verify(&checker.http, provider, request))
    {
        Ok(r) => r,
        Err(e) => return refuse(e.message()),
    };
    let outcome = apply(
        db,
        &ctx.keys,
        &ctx.settings,
        provider,
        &tenant_row.id,
        &request,
        actor,
        dry_run,
    );
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) if e.status().is_server_error() => {
            log::error!("import line {n}: {e:?}");
            return Err(format!("line {n}: {}; stopped here", e.message()));
        }
        Err(e) => return refuse(e.message()),
    };
    let what = |account: &str| format!("{tenant}/{provider_key}/{account}");
    Ok(match outcome {
        Outcome::AlreadyConnected { account_id } => (
            LineOutcome::Skipped,
            format!("skipped {} (already connected)", what(&account_id)),
        ),
        Outcome::Imported {
            account_id,
            replaced,
            due,
            ..
        } => {
            let key = (tenant.clone(), provider_key.clone(), account_id.clone());
            if let Some(earlier) = planned.get(&key).filter(|_| !request.replace) {
                return Ok((
                    LineOutcome::Skipped,
                    format!(
                        "skipped {} (already connected by line {earlier})",
                        what(&account_id)
                    ),
                ));
            }
            let replaced = replaced || planned.contains_key(&key);
            if dry_run {
                planned.insert(key, n);
            }
            let mut notes = Vec::new();
            if replaced {
                notes.push("replacing the stored tokens");
            }
            if due {
                notes.push("due: refreshed at the scheduler's next tick");
            }
            let notes = if notes.is_empty() {
                String::new()
            } else {
                format!(" ({})", notes.join("; "))
            };
            let verb = if dry_run { "would import" } else { "imported" };
            (
                LineOutcome::Imported,
                format!("{verb} {}{notes}", what(&account_id)),
            )
        }
    })
}
