//! `tether user`: tenant admins (add with a password, list, sign out,
//! remove).

use super::args::UserCommand;
use super::database::conn;
use super::output::{confirm, minute, print_json, print_table, rfc3339, Stop};
use crate::db::models::{tenant::Tenant, user::User};
use crate::startup::Context;
use std::io::BufRead;
use std::process::ExitCode;

fn read_password(from_stdin: bool) -> Result<String, String> {
    let password = if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| format!("cannot read standard input: {e}"))?;
        line.trim_end_matches(['\r', '\n']).to_string()
    } else {
        let first = rpassword::prompt_password("Password: ").map_err(|_| {
            "no terminal to prompt on: pass --password-stdin and pipe the password in".to_string()
        })?;
        let again = rpassword::prompt_password("Again: ").map_err(|e| e.to_string())?;
        if first != again {
            return Err("the passwords differ".into());
        }
        first
    };
    if password.chars().count() < crate::auth::MIN_PASSWORD_LEN {
        return Err(format!(
            "a password needs at least {} characters",
            crate::auth::MIN_PASSWORD_LEN
        ));
    }
    Ok(password)
}

pub(super) fn user(c: UserCommand, ctx: &Context) -> Result<ExitCode, Stop> {
    let mut db = conn(ctx)?;
    match c {
        UserCommand::Add {
            tenant,
            email,
            password_stdin,
        } => {
            let t = Tenant::require(&mut db, &tenant).map_err(|e| e.to_string())?;
            // Check the email before asking for a password.
            let email =
                crate::db::models::user::normalize_email(&email).map_err(|e| e.to_string())?;
            let password = read_password(password_stdin)?;
            let hash = crate::auth::hash_password(&password).map_err(|e| e.to_string())?;
            let u = User::create(&mut db, &t.id, &email, Some(&hash)).map_err(|e| e.to_string())?;
            println!("created admin {} for tenant '{}'", u.email, t.external_id);
        }
        UserCommand::List { tenant, json } => {
            if let Some(ext) = &tenant {
                Tenant::require(&mut db, ext).map_err(|e| e.to_string())?;
            }
            let users = User::list(&mut db, tenant.as_ref()).map_err(|e| e.to_string())?;
            if json {
                print_json(
                    users
                        .iter()
                        .map(|(u, ext)| {
                            serde_json::json!({
                                "email": u.email,
                                "tenant": ext,
                                "role": u.role,
                                "last_login_at": u.last_login_at.map(rfc3339),
                            })
                        })
                        .collect(),
                );
                return Ok(ExitCode::SUCCESS);
            }
            let rows: Vec<[String; 4]> = users
                .iter()
                .map(|(u, ext)| {
                    [
                        u.email.clone(),
                        ext.to_string(),
                        u.role.to_string(),
                        u.last_login_at.map_or("never".into(), minute),
                    ]
                })
                .collect();
            print_table(["EMAIL", "TENANT", "ROLE", "LAST LOGIN"], &rows);
            println!("{} user(s)", users.len());
        }
        UserCommand::SignOut { email } => {
            let u = User::by_email(&mut db, &email)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("no admin with email {}", email.trim()))?;
            User::end_sessions(&mut db, &u.id).map_err(|e| e.to_string())?;
            println!("signed {} out everywhere", u.email);
        }
        UserCommand::Remove { email, yes } => {
            let u = User::by_email(&mut db, &email)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("no admin with email {}", email.trim()))?;
            confirm(
                &format!("Remove admin {}? Type their email to confirm:", u.email),
                &u.email,
                yes,
                "user remove",
            )?;
            if !User::remove(&mut db, &email).map_err(|e| e.to_string())? {
                return Err(Stop::Error(format!("no admin with email {}", email.trim())));
            }
            println!(
                "removed admin {}; their sessions have ended",
                email.trim().to_lowercase()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
