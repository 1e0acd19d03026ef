//! The optional TOML configuration file (`--config`, `TETHER_CONFIG_FILE`).

use super::variables::VARIABLES;
use std::collections::BTreeMap;
use std::path::Path;

/// Reads the optional TOML file: a flat table whose keys are the variable
/// names in lower case. Unknown keys are errors (they are usually typos).
pub(super) fn read_file(path: &Path) -> Result<BTreeMap<String, String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("config file {}: {e}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| format!("config file {}: {}", path.display(), e.message()))?;
    let mut vars = BTreeMap::new();
    for (key, value) in table {
        let name = key.to_ascii_uppercase();
        if !VARIABLES.iter().any(|(n, _, _)| *n == name) || name == "TETHER_CONFIG_FILE" {
            return Err(format!(
                "config file {}: unknown key '{key}'",
                path.display()
            ));
        }
        let value = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            _ => {
                return Err(format!(
                    "config file {}: '{key}' must be a string, number or boolean",
                    path.display()
                ))
            }
        };
        vars.insert(name, value);
    }
    Ok(vars)
}
