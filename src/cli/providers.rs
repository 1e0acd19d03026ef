//! `tether providers list`: the provider catalogue, enabled or not and why.

use super::output::{print_json, print_table};
use crate::config::Settings;

pub(super) fn providers_list(settings: Settings, json: bool) -> Result<(), String> {
    let catalogue = crate::providers::Catalogue::load(&settings).map_err(|e| e.to_string())?;
    let redirect = |p: &crate::providers::Provider| match p.flow {
        crate::providers::Flow::AuthorizationCode => Some(settings.redirect_uri(&p.key)),
        crate::providers::Flow::ClientCredentials => None,
    };
    if json {
        print_json(
            catalogue
                .all()
                .map(|p| {
                    serde_json::json!({
                        "key": p.key,
                        "name": p.display_name,
                        "enabled": p.disabled_reason().is_none(),
                        "disabled_reason": p.disabled_reason(),
                        "redirect_uri": redirect(p),
                    })
                })
                .collect(),
        );
        return Ok(());
    }
    let rows: Vec<[String; 4]> = catalogue
        .all()
        .map(|p| {
            let state = match p.disabled_reason() {
                None => "enabled".to_string(),
                Some(why) => format!("disabled: {why}"),
            };
            [
                p.key.to_string(),
                p.display_name.to_string(),
                state,
                redirect(p).unwrap_or_else(|| "(none: no browser redirect)".into()),
            ]
        })
        .collect();
    print_table(["KEY", "NAME", "STATE", "REDIRECT URI"], &rows);
    Ok(())
}
