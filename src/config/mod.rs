//! One typed `Settings`, read from the environment and an optional TOML file,
//! validated whole at start: every problem is reported at once, by variable.
//!
//! One file per question: `variables` (which variables there are: the
//! documented table and the names that are not configuration), `settings`
//! (the `Settings` struct and its parts), `assemble` (building `Settings`
//! from the variables, checking every one), `values` (parsing one value:
//! URLs, networks, origins, booleans, ranges, CA bundles) and `file` (the
//! optional TOML file).

mod assemble;
mod file;
mod settings;
#[cfg(test)]
mod tests;
mod values;
mod variables;

pub use settings::{
    ConfigError, Environment, LogFormat, ProxyRetry, RefreshSettings, SessionLimits, Settings,
};
pub(crate) use values::parse_duration;
pub use variables::{table, APP_ID_SUFFIX, NOT_CONFIGURATION, VARIABLES, WEBHOOK_KEY_SUFFIX};

/// The secrets `TETHER_WEBHOOK_SECRET` holds: one, or two separated by a
/// space while receivers move from the second to the first.
pub fn webhook_secrets(configured: &str) -> Vec<&str> {
    configured.split_whitespace().collect()
}
