//! `tether api-key`: keys for the CRM's internal services (create, list,
//! revoke).

use super::args::ApiKeyCommand;
use super::database::conn;
use super::output::{minute, print_json, print_table, rfc3339};
use crate::db::models::{api_key::ApiKey, tenant::Tenant};
use crate::startup::Context;

pub(super) fn api_key(c: ApiKeyCommand, ctx: &Context) -> Result<(), String> {
    let mut db = conn(ctx)?;
    match c {
        ApiKeyCommand::Create {
            name,
            tenant,
            admin,
        } => {
            let tenant_row = match &tenant {
                Some(ext) => Some(Tenant::require(&mut db, ext).map_err(|e| e.to_string())?),
                None => None,
            };
            let (key, secret) =
                ApiKey::create(&mut db, &name, tenant_row.as_ref().map(|t| &t.id), admin)
                    .map_err(|e| e.to_string())?;
            let scope = tenant.map_or("all tenants".to_string(), |t| format!("tenant '{t}'"));
            let admin = if key.is_admin { ", admin" } else { "" };
            println!(
                "created API key '{}' (prefix {}, {scope}{admin}); it is shown only once:",
                key.name, key.prefix
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
                                "admin": k.is_admin,
                                "last_used_at": k.last_used_at.map(rfc3339),
                                "state": state(k),
                            })
                        })
                        .collect(),
                );
                return Ok(());
            }
            let rows: Vec<[String; 6]> = keys
                .iter()
                .map(|(k, ext)| {
                    [
                        k.prefix.clone(),
                        k.name.clone(),
                        ext.clone().unwrap_or_else(|| "(all)".into()),
                        if k.is_admin { "yes" } else { "no" }.into(),
                        k.last_used_at.map_or("never".into(), minute),
                        state(k).into(),
                    ]
                })
                .collect();
            print_table(
                ["PREFIX", "NAME", "TENANT", "ADMIN", "LAST USED", "STATE"],
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
