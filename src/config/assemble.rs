//! Building [`Settings`] from variables: the environment over the optional
//! file, each variable parsed or defaulted, then the rules between them and
//! production's demands. Every problem is collected, by variable name.

use super::file::read_file;
use super::settings::{
    ConfigError, Environment, LogFormat, ProxyRetry, RefreshSettings, SessionLimits, Settings,
};
use super::values::{
    parse_bool, parse_crm_name, parse_duration, parse_networks, parse_origins, parse_public_url,
    parse_range, read_ca_certs,
};
use super::variables::{is_known_variable, nearest_variable};
use crate::crypto::{KeyRing, Secret};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use url::Url;

impl Settings {
    /// Reads the process environment, and the TOML file named by `file` or
    /// `TETHER_CONFIG_FILE`, whose keys the environment overrides.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        let env: BTreeMap<String, String> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        let file = file
            .map(Path::to_path_buf)
            .or_else(|| env.get("TETHER_CONFIG_FILE").map(PathBuf::from));
        let mut vars = match file {
            Some(path) => read_file(&path).map_err(|e| ConfigError(vec![e]))?,
            None => BTreeMap::new(),
        };
        vars.extend(env);
        Settings::from_vars(&vars)
    }

    /// Builds settings from variables (environment names); pure, for tests.
    pub fn from_vars(vars: &BTreeMap<String, String>) -> Result<Settings, ConfigError> {
        let mut v = Reader {
            vars,
            problems: Vec::new(),
        };
        let environment = match v.get("TETHER_ENV").as_deref() {
            None | Some("development") => Environment::Development,
            Some("production") => Environment::Production,
            Some(other) => {
                v.problem(
                    "TETHER_ENV",
                    format!("'{other}' is neither 'development' nor 'production'"),
                );
                Environment::Development
            }
        };
        let dev = environment == Environment::Development;

        // A misspelt variable would otherwise be silently ignored (and its
        // default used): refused in production, a warning in development.
        // Only the name is told, never the value.
        let mut warnings = Vec::new();
        for name in vars.keys().filter(|n| n.starts_with("TETHER_")) {
            if is_known_variable(name) {
                continue;
            }
            let why = match nearest_variable(name) {
                Some(near) => format!("is not a Tether variable; did you mean {near}?"),
                None => "is not a Tether variable (see the configuration table in the README)"
                    .to_string(),
            };
            if dev {
                warnings.push(format!("{name}: {why}"));
            } else {
                v.problem(name, why);
            }
        }

        let bind = v.parse("TETHER_BIND", "127.0.0.1:8080", |s| {
            s.parse::<SocketAddr>()
                .map_err(|_| "is not a socket address such as 127.0.0.1:8080".to_string())
        });
        let trusted_proxies = v.parse("TETHER_TRUSTED_PROXIES", "none", parse_networks);
        let public_url = v.parse(
            "TETHER_PUBLIC_URL",
            &default_public_url(dev, bind),
            parse_public_url,
        );
        let data_dir = PathBuf::from(v.get("TETHER_DATA_DIR").unwrap_or_else(|| "./data".into()));
        let spill_dir = v.get("TETHER_SPILL_DIR").map(PathBuf::from);
        let database_url = match v.get("TETHER_DATABASE_URL") {
            Some(url) => {
                if let Err(e) = crate::db::Backend::from_url(&url) {
                    v.problem("TETHER_DATABASE_URL", e);
                }
                url
            }
            None => format!("sqlite://{}", data_dir.join("tether.db").display()),
        };
        let db_pool_size = v.parse("TETHER_DB_POOL_SIZE", "10", |s| parse_range(s, 1, 1000));
        let encryption_keys = v.get("TETHER_ENCRYPTION_KEYS").and_then(|s| {
            KeyRing::parse(&s)
                .map_err(|e| v.problem("TETHER_ENCRYPTION_KEYS", e))
                .ok()
        });
        let session_key = v
            .get("TETHER_SESSION_KEY")
            .and_then(|s| match B64.decode(s.trim()) {
                Ok(raw) if raw.len() >= 64 => Some(Secret::new(raw)),
                Ok(raw) => {
                    v.problem(
                        "TETHER_SESSION_KEY",
                        format!("is {} bytes; it must be at least 64 (base64)", raw.len()),
                    );
                    None
                }
                Err(_) => {
                    v.problem("TETHER_SESSION_KEY", "is not valid base64".into());
                    None
                }
            });
        let session = SessionLimits {
            max_age: Duration::from_secs(v.parse("TETHER_SESSION_MAX_AGE_SECS", "43200", |s| {
                parse_range(s, 300, 30 * 86_400)
            })),
            idle: Duration::from_secs(v.parse("TETHER_SESSION_IDLE_SECS", "7200", |s| {
                parse_range(s, 60, 30 * 86_400)
            })),
        };
        if session.idle > session.max_age {
            v.problem(
                "TETHER_SESSION_IDLE_SECS",
                "must not be longer than TETHER_SESSION_MAX_AGE_SECS".into(),
            );
        }
        let providers_file = v.get("TETHER_PROVIDERS_FILE").map(PathBuf::from);
        if let Some(p) = &providers_file {
            if !p.is_file() {
                v.problem(
                    "TETHER_PROVIDERS_FILE",
                    format!("'{}' is not a readable file", p.display()),
                );
            }
        }
        let webhook = match (v.get("TETHER_WEBHOOK_URL"), v.get("TETHER_WEBHOOK_SECRET")) {
            (None, None) => None,
            (Some(url), Some(secret)) => {
                let url = match Url::parse(&url) {
                    Ok(u) if matches!(u.scheme(), "http" | "https") => Some(u),
                    _ => {
                        v.problem("TETHER_WEBHOOK_URL", "is not an http(s) URL".into());
                        None
                    }
                };
                let parts = super::webhook_secrets(&secret);
                if parts.is_empty() || parts.len() > 2 || parts.iter().any(|s| s.len() < 16) {
                    v.problem(
                        "TETHER_WEBHOOK_SECRET",
                        "must be one secret of at least 16 characters, or two separated by a space while receivers move to the first"
                            .into(),
                    );
                }
                url.map(|u| (u, Secret::new(secret)))
            }
            (Some(_), None) => {
                v.problem(
                    "TETHER_WEBHOOK_SECRET",
                    "is required when TETHER_WEBHOOK_URL is set".into(),
                );
                None
            }
            // The secret signs relayed app events alone.
            (None, Some(_)) if v.get("TETHER_RELAY_URL").is_some() => None,
            (None, Some(_)) => {
                v.problem(
                    "TETHER_WEBHOOK_URL",
                    "is required when TETHER_WEBHOOK_SECRET is set (or TETHER_RELAY_URL)".into(),
                );
                None
            }
        };
        let relay = v
            .get("TETHER_RELAY_URL")
            .and_then(|raw| match Url::parse(&raw) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {
                    if webhook.is_none() && v.get("TETHER_WEBHOOK_SECRET").is_none() {
                        v.problem(
                            "TETHER_RELAY_URL",
                            "needs TETHER_WEBHOOK_SECRET, the key relayed events are signed with"
                                .into(),
                        );
                    }
                    Some(u)
                }
                _ => {
                    v.problem("TETHER_RELAY_URL", "is not an http(s) URL".into());
                    None
                }
            });
        let sso_secret = v.get("TETHER_SSO_SECRET").and_then(|s| {
            if s.len() < 32 {
                v.problem("TETHER_SSO_SECRET", "must be at least 32 characters".into());
                None
            } else {
                Some(Secret::new(s))
            }
        });
        let embed_origins = v.parse("TETHER_EMBED_ORIGINS", "none", parse_origins);
        if sso_secret.is_some() && embed_origins.is_empty() {
            warnings.push(
                "TETHER_SSO_SECRET: is set but TETHER_EMBED_ORIGINS lists no CRM origin, so \
                 browsers' single sign-on posts are refused; list the CRM page's origin"
                    .to_string(),
            );
        }
        let metrics_token = v.get("TETHER_METRICS_TOKEN").and_then(|s| {
            if s.trim().len() < 16 {
                v.problem(
                    "TETHER_METRICS_TOKEN",
                    "must be at least 16 characters".into(),
                );
                None
            } else {
                Some(Secret::new(s.trim().to_string()))
            }
        });
        let proxy_max_body = v.parse("TETHER_PROXY_MAX_BODY_BYTES", "10485760", |s| {
            parse_range(s, 1, 1 << 30)
        });
        let proxy_retry = ProxyRetry {
            max: v.parse("TETHER_PROXY_RETRY_MAX", "2", |s| parse_range(s, 0, 10)),
            max_wait: Duration::from_secs(v.parse("TETHER_PROXY_RETRY_MAX_WAIT_SECS", "10", |s| {
                parse_range(s, 0, 120)
            })),
        };
        let install_claim_window =
            Duration::from_secs(v.parse("TETHER_INSTALL_CLAIM_WINDOW_SECS", "600", |s| {
                parse_range(s, 0, 86_400)
            }));
        let crm_name = v.parse("TETHER_CRM_NAME", "the CRM", parse_crm_name);
        let usage_flush = Duration::from_millis(v.parse("TETHER_USAGE_FLUSH_MS", "10000", |s| {
            parse_range(s, 10, 600_000)
        }));
        let api_key_rate_limit = v.parse("TETHER_API_KEY_RATE_LIMIT", "600", |s| {
            parse_range(s, 0, 1_000_000)
        });
        let ca_certs = v
            .get("TETHER_CA_CERTS")
            .map(|path| {
                read_ca_certs(Path::new(path.trim()))
                    .map_err(|why| v.problem("TETHER_CA_CERTS", why))
                    .unwrap_or_default()
            })
            .unwrap_or_default();
        let refresh = RefreshSettings {
            enabled: v.parse("TETHER_REFRESH_ENABLED", "true", parse_bool),
            interval: Duration::from_secs(v.parse("TETHER_REFRESH_INTERVAL_SECS", "15", |s| {
                parse_range(s, 1, 3600)
            })),
            margin: Duration::from_secs(v.parse("TETHER_REFRESH_MARGIN_SECS", "300", |s| {
                parse_range(s, 0, 86_400)
            })),
            concurrency: v.parse("TETHER_REFRESH_CONCURRENCY", "16", |s| {
                parse_range(s, 1, 1024)
            }),
            per_provider: v.parse("TETHER_REFRESH_PER_PROVIDER", "4", |s| {
                parse_range(s, 1, 1024)
            }),
            lease: Duration::from_secs(v.parse("TETHER_REFRESH_LEASE_SECS", "20", |s| {
                parse_range(s, 10, 3600)
            })),
            provider_timeout: Duration::from_secs(v.parse(
                "TETHER_PROVIDER_TIMEOUT_SECS",
                "15",
                |s| parse_range(s, 1, 120),
            )),
            token_cache: Duration::from_millis(v.parse("TETHER_TOKEN_CACHE_MS", "1000", |s| {
                parse_range(s, 0, 60_000)
            })),
            retention: Duration::from_secs(
                86_400
                    * v.parse::<u64>("TETHER_RETENTION_DAYS", "90", |s| parse_range(s, 1, 36_500)),
            ),
            relay_hold: Duration::from_secs(
                86_400 * v.parse::<u64>("TETHER_RELAY_HOLD_DAYS", "7", |s| parse_range(s, 1, 90)),
            ),
            lapse_warning_days: v.parse("TETHER_REFRESH_TOKEN_LAPSE_WARNING_DAYS", "14", |s| {
                parse_range(s, 1, 365)
            }),
            forced_cooldown: Duration::from_secs(v.parse(
                "TETHER_FORCED_REFRESH_COOLDOWN_SECS",
                "30",
                |s| parse_range(s, 0, 3600),
            )),
            failing_after: v.parse("TETHER_REFRESH_FAILING_AFTER", "1h", |s| {
                parse_duration(s, 1, 30 * 86_400)
            }),
        };
        // A refresh must finish (or time out) while its lease still holds, or
        // another instance could send the same refresh token.
        if refresh.lease < refresh.provider_timeout + Duration::from_secs(5) {
            v.problem(
                "TETHER_REFRESH_LEASE_SECS",
                "must be at least TETHER_PROVIDER_TIMEOUT_SECS + 5".into(),
            );
        }
        let demo_provider = v.parse(
            "TETHER_DEMO_PROVIDER",
            if dev { "true" } else { "false" },
            parse_bool,
        );
        let log_filter = v.get("RUST_LOG").unwrap_or_else(|| "info".into());
        let log_format = match v.get("TETHER_LOG_FORMAT").as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                v.problem(
                    "TETHER_LOG_FORMAT",
                    format!("'{other}' is neither 'text' nor 'json'"),
                );
                LogFormat::Text
            }
        };

        if !dev {
            // The default is a SQLite file in each instance's data folder:
            // instances meant to share one database would each get their own.
            if v.get("TETHER_DATABASE_URL").is_none() {
                v.problem(
                    "TETHER_DATABASE_URL",
                    "is required in production (postgres://..., or sqlite:///path to mean a SQLite file)".into(),
                );
            }
            if encryption_keys.is_none() && v.get("TETHER_ENCRYPTION_KEYS").is_none() {
                v.problem(
                    "TETHER_ENCRYPTION_KEYS",
                    "is required in production (no generated keys)".into(),
                );
            }
            if session_key.is_none() && v.get("TETHER_SESSION_KEY").is_none() {
                v.problem(
                    "TETHER_SESSION_KEY",
                    "is required in production (no generated keys)".into(),
                );
            }
            if public_url.scheme() != "https" {
                v.problem("TETHER_PUBLIC_URL", "must be https:// in production".into());
            }
            // The payload names tenants and accounts, and the signature only
            // proves who sent it: in production it travels encrypted.
            if relay.as_ref().is_some_and(|url| url.scheme() != "https") {
                v.problem("TETHER_RELAY_URL", "must be https:// in production".into());
            }
            if webhook
                .as_ref()
                .is_some_and(|(url, _)| url.scheme() != "https")
            {
                v.problem(
                    "TETHER_WEBHOOK_URL",
                    "must be https:// in production".into(),
                );
            }
            if demo_provider {
                v.problem("TETHER_DEMO_PROVIDER", "must be off in production".into());
            }
            // `/metrics` and `/readyz/providers` share the public bind: open,
            // they tell anyone which providers are configured and how many
            // connections each has.
            if metrics_token.is_none() && v.get("TETHER_METRICS_TOKEN").is_none() {
                v.problem(
                    "TETHER_METRICS_TOKEN",
                    "is required in production (at least 16 characters; the scraper sends it as a bearer token)".into(),
                );
            }
            // The outcome names the connected account: it goes to pages
            // served over https only.
            if let Some(i) = embed_origins
                .iter()
                .position(|o| !o.starts_with("https://"))
            {
                v.problem(
                    "TETHER_EMBED_ORIGINS",
                    format!("entry {} must be https:// in production", i + 1),
                );
            }
        }

        if postgres_without_tls(&database_url) {
            warnings.push(
                "TETHER_DATABASE_URL: names a PostgreSQL host that is not this machine without \
                 requiring TLS, so libpq may fall back to a plain connection; add \
                 sslmode=require (or sslmode=verify-full with sslrootcert) to the URL"
                    .into(),
            );
        }

        if !v.problems.is_empty() {
            return Err(ConfigError(v.problems));
        }
        Ok(Settings {
            bind,
            trusted_proxies,
            public_url,
            data_dir,
            spill_dir,
            database_url: Secret::new(database_url),
            db_pool_size,
            environment,
            encryption_keys,
            session_key,
            session,
            providers_file,
            webhook,
            relay,
            sso_secret,
            embed_origins,
            metrics_token,
            proxy_max_body,
            proxy_retry,
            install_claim_window,
            crm_name,
            usage_flush,
            api_key_rate_limit,
            ca_certs,
            refresh,
            demo_provider,
            log_filter,
            log_format,
            env: Secret::new(vars.clone()),
            warnings,
        })
    }
}

struct Reader<'a> {
    vars: &'a BTreeMap<String, String>,
    problems: Vec<String>,
}

impl Reader<'_> {
    /// A variable's value; an empty value counts as unset.
    fn get(&self, name: &str) -> Option<String> {
        self.vars
            .get(name)
            .filter(|s| !s.trim().is_empty())
            .cloned()
    }

    fn problem(&mut self, name: &str, why: String) {
        self.problems.push(format!("{name}: {why}"));
    }

    /// Parses the variable, or the default when unset; records a problem and
    /// returns the parsed default when the value is bad, so that every
    /// variable is still checked.
    fn parse<T>(&mut self, name: &str, default: &str, f: impl Fn(&str) -> Result<T, String>) -> T {
        match self.get(name) {
            Some(raw) => match f(raw.trim()) {
                Ok(v) => v,
                Err(why) => {
                    // Values may be secrets: never echo them.
                    self.problem(name, why);
                    f(default).unwrap_or_else(|_| panic!("default of {name} parses"))
                }
            },
            None => f(default).unwrap_or_else(|_| panic!("default of {name} parses")),
        }
    }
}

/// In development, where Tether is reached is where it listens: the bind
/// address, with loopback for an unspecified host (`0.0.0.0`). Port 0 has
/// no port to follow before it binds, and production sets the URL.
fn default_public_url(dev: bool, bind: SocketAddr) -> String {
    if !dev || bind.port() == 0 {
        return "http://127.0.0.1:8080".into();
    }
    let host = match bind.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(host, bind.port()))
}

/// Whether a PostgreSQL URL reaches another machine without requiring TLS
/// (`sslmode` `require`, `verify-ca` or `verify-full`). A socket directory,
/// `localhost` or a loopback address stays on this machine. Only the host
/// and the query are read; nothing of the URL is told.
pub(crate) fn postgres_without_tls(database_url: &str) -> bool {
    let Ok(url) = Url::parse(database_url) else {
        return false;
    };
    if !matches!(url.scheme(), "postgres" | "postgresql") {
        return false;
    }
    let mut host = url.host_str().map(str::to_string);
    let mut tls_required = false;
    for (key, value) in url.query_pairs() {
        match key.as_ref() {
            "host" => host = Some(value.into_owned()),
            "sslmode" => {
                tls_required = matches!(value.as_ref(), "require" | "verify-ca" | "verify-full")
            }
            _ => {}
        }
    }
    let local = match host.as_deref() {
        None | Some("") | Some("localhost") => true,
        Some(h) if h.starts_with('/') || h.starts_with('@') => true,
        Some(h) => h
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
    };
    !local && !tls_required
}
