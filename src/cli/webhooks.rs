//! `tether webhooks`: deliveries not yet made, sending given-up ones
//! again, and app events held for a tenant to come.

use super::args::WebhooksCommand;
use super::database::conn;
use super::output::{minute, print_json, print_table, rfc3339};
use crate::startup::Context;

pub(super) fn webhooks(c: WebhooksCommand, ctx: &Context) -> Result<(), String> {
    use crate::db::models::webhook as outbox;
    let mut db = conn(ctx)?;
    match c {
        WebhooksCommand::List {
            given_up,
            limit,
            json,
        } => {
            let found = outbox::undelivered(&mut db, given_up, limit).map_err(|e| e.to_string())?;
            if json {
                print_json(
                    found
                        .iter()
                        .map(|d| {
                            serde_json::json!({
                                "id": d.id,
                                "type": d.kind,
                                "attempts": d.attempts,
                                "last_error": d.last_error,
                                "next_attempt_at": d.next_attempt_at.map(rfc3339),
                                "given_up": d.given_up,
                                "created_at": rfc3339(d.created_at),
                            })
                        })
                        .collect(),
                );
                return Ok(());
            }
            let rows: Vec<[String; 6]> = found
                .iter()
                .map(|d| {
                    let next = match d.next_attempt_at {
                        Some(t) => minute(t),
                        None => "given up".into(),
                    };
                    [
                        d.id.clone(),
                        d.kind.clone(),
                        d.attempts.to_string(),
                        next,
                        minute(d.created_at),
                        d.last_error.clone().unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect();
            print_table(
                [
                    "ID",
                    "TYPE",
                    "ATTEMPTS",
                    "NEXT ATTEMPT",
                    "CREATED",
                    "LAST ERROR",
                ],
                &rows,
            );
            println!("{} delivery(ies) not yet made", found.len());
            if ctx.settings.webhook.is_none() {
                println!("(webhooks are off here: TETHER_WEBHOOK_URL is unset)");
            }
        }
        WebhooksCommand::Held { limit, json } => {
            let held = outbox::held(&mut db, limit).map_err(|e| e.to_string())?;
            if json {
                print_json(
                    held.iter()
                        .map(|h| serde_json::to_value(h).unwrap_or_default())
                        .collect(),
                );
                return Ok(());
            }
            let rows: Vec<[String; 5]> = held
                .iter()
                .map(|h| {
                    [
                        h.id.clone(),
                        h.provider.to_string(),
                        h.account_id.to_string(),
                        h.event_type.clone(),
                        h.held_until.clone(),
                    ]
                })
                .collect();
            print_table(["ID", "PROVIDER", "ACCOUNT", "TYPE", "HELD UNTIL"], &rows);
            println!(
                "{} app event(s) held until a tenant holds their account",
                held.len()
            );
        }
        WebhooksCommand::Retry { ids, all_given_up } => {
            let retried = if all_given_up {
                outbox::retry_given_up(&mut db).map_err(|e| e.to_string())?
            } else {
                outbox::retry(&mut db, &ids)
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?
            };
            for id in &retried {
                println!("webhook {id}: due now");
            }
            println!(
                "{} delivery(ies) due now: the running server sends them at its next round",
                retried.len()
            );
        }
    }
    Ok(())
}
