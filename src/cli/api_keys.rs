//! `tether api-key`: keys for the CRM's internal services (create, list,
//! revoke).

use super::args::ApiKeyCommand;
use super::database::conn;
use super::output::{minute, print_json, print_table, rfc3339};
use crate::db::models::api_key::{ApiKey, Rights, Scope, Scopes};
use crate::db::models::tenant::Tenant;
use crate::startup::Context;

pub(super) fn api_key(c: ApiKeyCommand, ctx: &Context) -> Result<(), String> {
    let mut db = conn(ctx)?;
    match c {
        ApiKeyCommand::Create {
            name,
            tenant,
            scopes,
            providers,
            admin,
        } => {
            let rights = rights(&scopes, providers, admin, ctx)?;
            let tenant_row = match &tenant {
                Some(ext) => Some(Tenant::require(&mut db, ext).map_err(|e| e.to_string())?),
                None => None,
            };
            let (key, secret) =
                ApiKey::create(&mut db, &name, tenant_row.as_ref().map(|t| &t.id), &rights)
                    .map_err(|e| e.to_string())?;
            let reach = tenant.map_or("all tenants".to_string(), |t| format!("tenant '{t}'"));
            let providers = key
                .providers()
                .map_or(String::new(), |p| format!(", providers {}", p.join(", ")));
            println!(
                "created API key '{}' (prefix {}, {reach}{providers}, scopes {}); it is shown only once:",
                key.name,
                key.prefix,
                key.scopes().to_string().replace(' ', ", ")
            );
            println!("{}", secret.expose());
        }
        ApiKeyCommand::List { json } => {
            let keys = ApiKey::list(&mut db).map_err(|e| e.to_string())?;
            let state = |k: &ApiKey| {
                if k.revoked_at.is_some() {
                    "revoked"
                } else {
                    "active"
                }
            };
            if json {
                print_json(
                    keys.iter()
                        .map(|(k, ext)| {
                            serde_json::json!({
                                "prefix": k.prefix,
                                "name": k.name,
                                "tenant": ext,
                                "scopes": k.scopes().iter().map(Scope::as_str).collect::<Vec<_>>(),
                                "providers": k.providers(),
                                "last_used_at": k.last_used_at.map(rfc3339),
                                "state": state(k),
                            })
                        })
                        .collect(),
                );
                return Ok(());
            }
            let rows: Vec<[String; 7]> = keys
                .iter()
                .map(|(k, ext)| {
                    [
                        k.prefix.clone(),
                        k.name.clone(),
                        ext.clone().unwrap_or_else(|| "(all)".into()),
                        k.scopes().to_string().replace(' ', ","),
                        k.providers().map_or("(all)".into(), |p| p.join(",")),
                        k.last_used_at.map_or("never".into(), minute),
                        state(k).into(),
                    ]
                })
                .collect();
            print_table(
                [
                    "PREFIX",
                    "NAME",
                    "TENANT",
                    "SCOPES",
                    "PROVIDERS",
                    "LAST USED",
                    "STATE",
                ],
                &rows,
            );
            println!("{} key(s)", keys.len());
        }
        ApiKeyCommand::Revoke { prefix } => {
            let k = ApiKey::revoke(&mut db, &prefix).map_err(|e| e.to_string())?;
            println!("revoked API key '{}' (prefix {})", k.name, k.prefix);
        }
    }
    Ok(())
}

/// The rights `--scope`, `--provider` and `--admin` ask for: every scope but
/// admin when no scope is named (what keys could do before scopes), and
/// only providers the catalogue knows.
fn rights(
    scopes: &[String],
    providers: Vec<String>,
    admin: bool,
    ctx: &Context,
) -> Result<Rights, String> {
    let mut set = if scopes.is_empty() {
        Scopes::all_but_admin()
    } else {
        Scopes::parse(&scopes.join(","))?
    };
    if admin {
        set = set.with(Scope::Admin);
    }
    if let Some(unknown) = providers.iter().find(|p| ctx.providers.get(p).is_none()) {
        let known: Vec<&str> = ctx.providers.all().map(|p| p.key.as_str()).collect();
        return Err(format!(
            "no provider '{unknown}' (known: {})",
            known.join(", ")
        ));
    }
    Ok(Rights {
        scopes: set,
        providers: (!providers.is_empty()).then_some(providers),
    })
}
