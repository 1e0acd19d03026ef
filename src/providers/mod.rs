//! The provider catalogue: built-in presets, the demo provider, and custom
//! providers or overrides from `TETHER_PROVIDERS_FILE`. A provider is enabled
//! when its client id and secret are configured.

mod file;
pub mod presets;
mod provider;
#[cfg(test)]
mod tests;
mod validate;

pub use provider::{
    placeholders, Budget, ClientAuth, FieldType, Flow, Identity, LoginHint, Provider, RefreshStyle,
    SettingField,
};
pub use validate::{valid_key, PLATFORMS};

use crate::config::Settings;
use crate::crypto::Secret;
use file::{describe_toml_error, merge, new_custom, ProvidersFile};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use validate::{plain_http, validate};

/// A malformed providers file: where and why.
#[derive(Debug)]
pub struct CatalogueError(pub String);

impl fmt::Display for CatalogueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CatalogueError {}

/// Every provider Tether knows, enabled or not, in key order.
#[derive(Debug, Clone)]
pub struct Catalogue {
    /// Shared, so that a request takes a provider without copying it.
    providers: BTreeMap<String, Arc<Provider>>,
}
impl Catalogue {
    /// Presets, the demo provider when on, and the providers file; credentials
    /// from the environment.
    pub fn load(settings: &Settings) -> Result<Catalogue, CatalogueError> {
        let file = match &settings.providers_file {
            Some(path) => Some((
                path.display().to_string(),
                std::fs::read_to_string(path).map_err(|e| {
                    CatalogueError(format!("TETHER_PROVIDERS_FILE {}: {e}", path.display()))
                })?,
            )),
            None => None,
        };
        Catalogue::build(
            settings,
            file.as_ref().map(|(p, t)| (p.as_str(), t.as_str())),
            &|name| settings.var(name),
        )
    }

    /// As [`Catalogue::load`], with the file text and the environment given.
    pub fn build(
        settings: &Settings,
        file: Option<(&str, &str)>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Catalogue, CatalogueError> {
        let mut providers: BTreeMap<String, Provider> = presets::all()
            .into_iter()
            .map(|p| (p.key.to_string(), p))
            .collect();
        if let Some((path, text)) = file {
            let parsed: ProvidersFile = toml::from_str(text).map_err(|e| {
                CatalogueError(format!(
                    "TETHER_PROVIDERS_FILE {path}: {}",
                    describe_toml_error(text, &e)
                ))
            })?;
            for (key, t) in parsed.providers {
                let at = |msg: String| {
                    CatalogueError(format!(
                        "TETHER_PROVIDERS_FILE {path}: [providers.{key}] {msg}"
                    ))
                };
                if !valid_key(&key) || key == "demo" {
                    return Err(at("the key must be 1 to 32 of a-z, 0-9, '_' or '-', start with a letter, and not be 'demo'".into()));
                }
                let base = match providers.remove(&key) {
                    Some(p) => p,
                    None => new_custom(&key, &t).map_err(at)?,
                };
                let merged = merge(base, t);
                validate(&merged).map_err(at)?;
                providers.insert(key, merged);
            }
        }
        if settings.is_production() {
            let problems: Vec<String> = providers.values().flat_map(plain_http).collect();
            if !problems.is_empty() {
                return Err(CatalogueError(format!(
                    "in production every provider URL must be https://: {}",
                    problems.join("; ")
                )));
            }
        }
        // Half a pair is a mistake, never a way to switch a provider off:
        // starting without it would leave its connections silently dead.
        let mut half = Vec::new();
        for p in providers.values_mut() {
            p.credentials = match (env(&p.client_id_env), env(&p.client_secret_env)) {
                (Some(id), Some(secret)) => Some((id, Secret::new(secret))),
                (Some(_), None) => {
                    half.push(half_configured(p, &p.client_secret_env, &p.client_id_env));
                    None
                }
                (None, Some(_)) => {
                    half.push(half_configured(p, &p.client_id_env, &p.client_secret_env));
                    None
                }
                (None, None) => None,
            };
        }
        if !half.is_empty() {
            return Err(CatalogueError(half.join("; ")));
        }
        let problems: Vec<String> = providers
            .values_mut()
            .flat_map(|p| read_app(p, env))
            .collect();
        if !problems.is_empty() {
            return Err(CatalogueError(problems.join("; ")));
        }
        if settings.demo_provider {
            let demo = presets::demo(settings);
            providers.insert(demo.key.to_string(), demo);
        }
        Ok(Catalogue {
            providers: providers
                .into_iter()
                .map(|(k, p)| (k, Arc::new(p)))
                .collect(),
        })
    }

    pub fn get(&self, key: &str) -> Option<&Provider> {
        self.providers.get(key).map(|p| &**p)
    }

    /// The provider if it exists and is enabled.
    pub fn enabled(&self, key: &str) -> Option<&Provider> {
        self.shared(key).map(|p| &**p)
    }

    /// As [`Catalogue::enabled`], as a handle to keep.
    pub fn shared(&self, key: &str) -> Option<&Arc<Provider>> {
        self.providers.get(key).filter(|p| p.enabled())
    }

    pub fn all(&self) -> impl Iterator<Item = &Provider> {
        self.providers.values().map(|p| &**p)
    }
}

/// What `serve` and `doctor` both say of a provider with half its credentials.
fn half_configured(p: &Provider, missing: &str, set: &str) -> String {
    format!(
        "provider {}: {missing} is missing while {set} is set; set both to enable it, or neither",
        p.key
    )
}
/// Reads a provider's app settings from the environment:
/// `TETHER_<KEY>_APP_ID` and `TETHER_<KEY>_WEBHOOK_PUBLIC_KEY` (over the
/// preset's key). Returns what is wrong, by variable; never a value.
fn read_app(p: &mut Provider, env: &dyn Fn(&str) -> Option<String>) -> Vec<String> {
    let upper = p.key.to_ascii_uppercase().replace('-', "_");
    let mut problems = Vec::new();
    let app_var = format!("TETHER_{upper}{}", crate::config::APP_ID_SUFFIX);
    if let Some(id) = env(&app_var) {
        let id = id.trim().to_string();
        let ok = id.len() <= 128
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            p.app_id = Some(id);
        } else {
            problems.push(format!(
                "{app_var}: is 1 to 128 letters, digits, '-' or '_'"
            ));
        }
    }
    let key_var = format!("TETHER_{upper}{}", crate::config::WEBHOOK_KEY_SUFFIX);
    if let Some(text) = env(&key_var) {
        match crate::crypto::ed25519_public_key(&text) {
            Ok(key) => p.webhook_key = Some(key),
            Err(why) => problems.push(format!("{key_var}: {why}")),
        }
    }
    problems
}
