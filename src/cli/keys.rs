//! `tether keys`: the encryption key ring (status per key id, rotation).

use super::args::KeysCommand;
use super::database::{conn, pending_migrations};
use super::output::{print_json, print_table};
use crate::config::Settings;
use crate::startup::{self, Use};
use std::process::ExitCode;

pub(super) fn keys(c: KeysCommand, settings: Settings) -> Result<ExitCode, String> {
    match c {
        KeysCommand::Status { json } => {
            // Opened without the start-up check, so that a broken ring can be inspected.
            let ctx = startup::open(settings)?;
            if !ctx.pending_migrations.is_empty() {
                return Err(pending_migrations(&ctx));
            }
            let mut db = conn(&ctx)?;
            let usage = crate::keys::usage(&mut db, &ctx.keys).map_err(|e| e.to_string())?;
            // With --json the array alone is on stdout; what follows it goes to stderr.
            let say = |line: String| {
                if json {
                    eprintln!("{line}");
                } else {
                    println!("{line}");
                }
            };
            if json {
                print_json(
                    usage
                        .iter()
                        .map(|u| {
                            serde_json::json!({
                                "key_id": u.key_id,
                                "in_ring": u.in_ring,
                                "primary": u.primary,
                                "connections": u.connections,
                                "oauth_states": u.oauth_states,
                                "pending_installs": u.pending_installs,
                            })
                        })
                        .collect(),
                );
            } else {
                let rows: Vec<[String; 4]> = usage
                    .iter()
                    .map(|u| {
                        let state = match (u.in_ring, u.primary) {
                            (true, true) => "primary",
                            (true, false) => "in ring (read only)",
                            (false, _) => "MISSING from ring",
                        };
                        [
                            u.key_id.to_string(),
                            state.into(),
                            u.connections.to_string(),
                            u.oauth_states.to_string(),
                        ]
                    })
                    .collect();
                print_table(["KEY ID", "STATE", "CONNECTIONS", "OAUTH STATES"], &rows);
            }
            match crate::keys::verify(&mut db, &ctx.keys) {
                Ok(()) => {
                    let stale: i64 = usage
                        .iter()
                        .filter(|u| !u.primary)
                        .map(|u| u.connections + u.oauth_states + u.pending_installs)
                        .sum();
                    if stale > 0 {
                        say(format!(
                            "{stale} row(s) are not under the primary key: run `tether keys rotate`"
                        ));
                    } else {
                        say(format!(
                            "every encrypted row is under the primary key '{}'",
                            ctx.keys.primary_id()
                        ));
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    say(format!("problem: {e}"));
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        KeysCommand::Rotate { batch_size } => {
            let ctx = startup::prepare_for(settings, Use::Write)?;
            let mut db = conn(&ctx)?;
            let blockers = crate::keys::rotation_blockers(&mut db, &ctx.keys)
                .map_err(|e| format!("database error: {e}"))?;
            if !blockers.is_empty() {
                return Err(format!(
                    "not rotating: {}; rows moved to '{}' would fail there. Give every instance the new key first (README: Rotating keys); nothing was changed",
                    blockers.join("; "),
                    ctx.keys.primary_id()
                ));
            }
            println!(
                "re-encrypting under primary key '{}' in batches of {batch_size}",
                ctx.keys.primary_id()
            );
            let report =
                crate::keys::rotate(&mut db, &ctx.keys, batch_size, |line| println!("{line}"))
                    .map_err(|e| format!("database error: {e}"))?;
            println!(
                "done: {} row(s) re-encrypted, {} changed meanwhile by a running server, {} could not be opened",
                report.rotated,
                report.changed_meanwhile,
                report.failed.len()
            );
            for row in &report.failed {
                println!("  could not open: {row}");
            }
            Ok(if report.failed.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}
