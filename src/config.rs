//! One typed `Settings`, read from the environment and an optional TOML file,
//! validated whole at start: every problem is reported at once, by variable.

use crate::crypto::{KeyRing, Secret};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use url::Url;

/// Every variable Tether reads, with its default and meaning. The README's
/// configuration table is this list; a test keeps the two in step.
pub const VARIABLES: &[(&str, &str, &str)] = &[
    ("TETHER_BIND", "127.0.0.1:8080", "listen address"),
    (
        "TETHER_TRUSTED_PROXIES",
        "none",
        "comma-separated CIDRs of the load balancers in front of Tether; their `X-Forwarded-For` names the client that rate limits count (set it behind one)",
    ),
    (
        "TETHER_PUBLIC_URL",
        "http://{bind} in development",
        "base of every redirect URI",
    ),
    (
        "TETHER_DATA_DIR",
        "./data",
        "SQLite file and development keys",
    ),
    (
        "TETHER_SPILL_DIR",
        "{data dir}",
        "where a stop that cannot reach the database leaves the refreshed token sets it holds (sealed); the next start stores them first",
    ),
    (
        "TETHER_DATABASE_URL",
        "sqlite://{data dir}/tether.db",
        "`postgres://...` for PostgreSQL",
    ),
    (
        "TETHER_DB_POOL_SIZE",
        "10",
        "database connections per process",
    ),
    (
        "TETHER_ENV",
        "development",
        "`production` enforces explicit keys, https, no demo provider, Secure cookies",
    ),
    (
        "TETHER_ENCRYPTION_KEYS",
        "generated in development",
        "`kid:base64,kid:base64` (32-byte keys), first is primary",
    ),
    (
        "TETHER_SESSION_KEY",
        "generated in development",
        "64 bytes, base64",
    ),
    (
        "TETHER_SESSION_MAX_AGE_SECS",
        "43200",
        "a sign-in ends this long after it was made, however active (12 h)",
    ),
    (
        "TETHER_SESSION_IDLE_SECS",
        "7200",
        "a sign-in ends after this long without a request (2 h; at most the max age)",
    ),
    (
        "TETHER_PROVIDERS_FILE",
        "none",
        "custom providers and overrides (TOML)",
    ),
    (
        "TETHER_WEBHOOK_URL",
        "none",
        "where connection events are posted",
    ),
    (
        "TETHER_WEBHOOK_SECRET",
        "none",
        "HMAC key for `Tether-Signature` (required with the URL)",
    ),
    (
        "TETHER_SSO_SECRET",
        "none",
        "enables `/sso` (at least 32 characters)",
    ),
    (
        "TETHER_EMBED_ORIGINS",
        "none",
        "comma-separated origins (`https://crm.example.com`) of the CRM pages that open connect links with `/static/connect.js`; only they are told the outcome",
    ),
    (
        "TETHER_METRICS_TOKEN",
        "none",
        "when set, `/metrics` and `/readyz/providers` answer only `Authorization: Bearer <token>` (at least 16 characters)",
    ),
    (
        "TETHER_PROXY_MAX_BODY_BYTES",
        "10485760",
        "largest provider response the proxy passes back; larger ones are a 502 `provider_response_too_large`",
    ),
    (
        "TETHER_CA_CERTS",
        "none",
        "PEM file of root certificates (an operator's CA) trusted beside the bundled ones by every outgoing https call: providers, the proxy, webhooks",
    ),
    (
        "TETHER_REFRESH_ENABLED",
        "true",
        "run the refresh scheduler in `serve`",
    ),
    (
        "TETHER_REFRESH_INTERVAL_SECS",
        "15",
        "how often the scheduler looks for due connections",
    ),
    (
        "TETHER_REFRESH_MARGIN_SECS",
        "300",
        "refresh at 80% of a token's life, and at least this long before expiry",
    ),
    (
        "TETHER_REFRESH_CONCURRENCY",
        "16",
        "refreshes in flight per process",
    ),
    (
        "TETHER_REFRESH_PER_PROVIDER",
        "4",
        "refreshes in flight per process and provider",
    ),
    (
        "TETHER_REFRESH_LEASE_SECS",
        "20",
        "how long a claimed refresh is held before another instance may take it (at least the provider timeout + 5)",
    ),
    (
        "TETHER_REFRESH_TOKEN_LAPSE_WARNING_DAYS",
        "14",
        "how many days before a refresh token with a known lifetime lapses the `refresh_token_expiring` event is recorded (1 to 365)",
    ),
    (
        "TETHER_RETENTION_DAYS",
        "90",
        "events and finished webhook deliveries older than this are deleted (in batches, by the scheduler)",
    ),
    (
        "TETHER_DEMO_PROVIDER",
        "on in development",
        "the built-in demo authorization server",
    ),
    (
        "TETHER_CONFIG_FILE",
        "none",
        "TOML file with the same keys in lower case (`tether_bind = ...`); the environment wins",
    ),
    (
        "TETHER_PROVIDER_TIMEOUT_SECS",
        "15",
        "time limit of one call to a provider (must be shorter than the lease)",
    ),
    (
        "TETHER_TOKEN_CACHE_MS",
        "1000",
        "how long a cached token set is trusted while other instances' writes cannot be heard (0: cache off)",
    ),
    (
        "TETHER_DEMO_TOKEN_TTL_SECS",
        "3600",
        "lifetime of the demo provider's access tokens",
    ),
    (
        "TETHER_GOHIGHLEVEL_WEBHOOK_PUBLIC_KEY",
        "GoHighLevel's published key",
        "Ed25519 public key (PEM, or base64 of the SPKI DER) that `X-GHL-Signature` on `POST /webhooks/gohighlevel` must verify against",
    ),
    (
        "TETHER_GOHIGHLEVEL_APP_ID",
        "none",
        "the Marketplace app's id: app webhooks naming another `appId` are refused (unset: any app's are taken, and `doctor` says so)",
    ),
    (
        "TETHER_LOG_FORMAT",
        "text",
        "`text`: one line per event; `json`: one JSON object per line (`ts`, `level`, `target`, `message`, and a request line's fields)",
    ),
    ("RUST_LOG", "info", "env_logger filter"),
];

/// How log events are written (`TETHER_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One line per event: time, level, target, message, then `key=value`.
    Text,
    /// One JSON object per line.
    Json,
}

/// `TETHER_` variables that are not configuration: read by the test suite,
/// the benchmarks, or the README's shell examples. They are neither
/// validated nor reported as unknown.
pub const NOT_CONFIGURATION: &[&str] = &[
    // tests/api: the PostgreSQL server of the backend variants, the browser
    // tests' switch and screenshots, the outage figures' length.
    "TETHER_TEST_POSTGRES_URL",
    "TETHER_BROWSER_TESTS",
    "TETHER_SCREENSHOT",
    "TETHER_OUTAGE_SECS",
    // benches/load.rs
    "TETHER_BENCH_POSTGRES_URL",
    "TETHER_BENCH_WRAP",
    "TETHER_BENCH_LOG",
    // The README's curl examples keep the API key in this shell variable.
    "TETHER_API_KEY",
];

/// The configuration table (`tether config`): [`VARIABLES`] as aligned
/// columns of name, default and meaning, then provider credentials.
pub fn table() -> String {
    let rows: Vec<(&str, &str, &str)> = VARIABLES
        .iter()
        .copied()
        .chain([(
            "<KEY>_CLIENT_ID, <KEY>_CLIENT_SECRET",
            "none",
            "a provider's credentials (e.g. HUBSPOT_CLIENT_ID); both enable it, one alone stops the start",
        )])
        .collect();
    let name_width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    let default_width = rows.iter().map(|r| r.1.len()).max().unwrap_or(0);
    let mut out = format!(
        "{:name_width$}  {:default_width$}  {}\n",
        "VARIABLE", "DEFAULT", "MEANING"
    );
    for (name, default, meaning) in rows {
        // The README's Markdown quoting reads as noise in a terminal.
        let meaning = meaning.replace('`', "");
        out.push_str(format!("{name:name_width$}  {default:default_width$}  {meaning}").trim_end());
        out.push('\n');
    }
    out
}

/// Whether `name` is a `TETHER_` variable Tether knows: configuration, one
/// of [`NOT_CONFIGURATION`], or a provider's credentials
/// (`TETHER_DEMO_CLIENT_ID`, or a custom provider's `client_id_env`), which
/// the provider catalogue checks.
fn is_known_variable(name: &str) -> bool {
    VARIABLES.iter().any(|(n, _, _)| *n == name)
        || NOT_CONFIGURATION.contains(&name)
        || name.ends_with("_CLIENT_ID")
        || name.ends_with("_CLIENT_SECRET")
}

/// The configuration variable nearest to an unknown `name`, when it is near
/// enough to be a typo of it.
fn nearest_variable(name: &str) -> Option<&'static str> {
    VARIABLES
        .iter()
        .map(|(n, _, _)| (levenshtein(name, n), *n))
        .filter(|(d, _)| *d <= 3.max(name.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n)
}

/// Edit distance (insertions, deletions, substitutions) between two strings.
fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// GoHighLevel's published webhook signing key (Ed25519, SPKI DER in base64),
/// for `X-GHL-Signature`: PROVIDERS.md.
pub const GOHIGHLEVEL_WEBHOOK_KEY: &str =
    "MCowBQYDK2VwAyEAi2HR1srL4o18O8BRa7gVJY7G7bupbN3H9AwJrHCDiOg=";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Development,
    Production,
}

#[derive(Debug, Clone)]
pub struct RefreshSettings {
    pub enabled: bool,
    pub interval: Duration,
    pub margin: Duration,
    pub concurrency: usize,
    pub per_provider: usize,
    pub lease: Duration,
    /// Time limit of one call to a provider.
    pub provider_timeout: Duration,
    /// Lifetime of the per-process token cache (zero: off).
    pub token_cache: Duration,
    /// Age after which events and finished webhook deliveries are deleted.
    pub retention: Duration,
    /// How far ahead a lapsing refresh token is announced, in days.
    pub lapse_warning_days: i64,
}

/// GoHighLevel's app webhooks.
#[derive(Debug, Clone)]
pub struct GoHighLevelSettings {
    /// The raw Ed25519 key `X-GHL-Signature` verifies against.
    pub webhook_key: [u8; 32],
    /// The app whose webhooks are taken; `None`: any.
    pub app_id: Option<String>,
}

/// The limits of a signed-in session, checked on every request.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    /// From sign-in, however active.
    pub max_age: Duration,
    /// Since the last request.
    pub idle: Duration,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub bind: SocketAddr,
    /// Proxies whose `X-Forwarded-For` is believed (see `web::forwarded`).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Without a trailing slash.
    pub public_url: Url,
    pub data_dir: PathBuf,
    /// `TETHER_SPILL_DIR`; see [`Settings::spill_dir`].
    pub spill_dir: Option<PathBuf>,
    pub database_url: Secret<String>,
    pub db_pool_size: u32,
    pub environment: Environment,
    /// Explicit key ring; `None` in development means "generate and keep one in the data dir".
    pub encryption_keys: Option<KeyRing>,
    pub session_key: Option<Secret<Vec<u8>>>,
    /// How long a sign-in lasts, however active, and without a request.
    pub session: SessionLimits,
    pub providers_file: Option<PathBuf>,
    pub webhook: Option<(Url, Secret<String>)>,
    pub sso_secret: Option<Secret<String>>,
    /// Origins (`scheme://host[:port]`, as browsers write them) of the CRM
    /// pages allowed to learn a connect link's outcome by `postMessage`.
    pub embed_origins: Vec<String>,
    /// The bearer token `/metrics` asks for; `None`: open (bind it privately).
    pub metrics_token: Option<Secret<String>>,
    /// Largest provider response body the proxy reads, in bytes.
    pub proxy_max_body: usize,
    /// Roots from `TETHER_CA_CERTS`, trusted beside the bundled ones by
    /// every outgoing call (`oauth::client::http_client`).
    pub ca_certs: Vec<reqwest::Certificate>,
    pub refresh: RefreshSettings,
    pub demo_provider: bool,
    pub gohighlevel: GoHighLevelSettings,
    pub log_filter: String,
    pub log_format: LogFormat,
    /// Every variable the settings were read from, for provider credentials
    /// (`<KEY>_CLIENT_ID` ...). Never printed.
    pub env: Secret<BTreeMap<String, String>>,
    /// What development lets pass but should be fixed (unknown `TETHER_`
    /// variables), one line each; `cli::main` logs them.
    pub warnings: Vec<String>,
}

/// Everything wrong with a configuration, one line per problem.
#[derive(Debug)]
pub struct ConfigError(pub Vec<String>);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "configuration is invalid:")?;
        for p in &self.0 {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl Settings {
    /// Where spill files of held token sets go and are looked for:
    /// `TETHER_SPILL_DIR`, else the data folder.
    pub fn spill_dir(&self) -> PathBuf {
        self.spill_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.clone())
    }

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
                if secret.len() < 16 {
                    v.problem(
                        "TETHER_WEBHOOK_SECRET",
                        "must be at least 16 characters".into(),
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
            (None, Some(_)) => {
                v.problem(
                    "TETHER_WEBHOOK_URL",
                    "is required when TETHER_WEBHOOK_SECRET is set".into(),
                );
                None
            }
        };
        let sso_secret = v.get("TETHER_SSO_SECRET").and_then(|s| {
            if s.len() < 32 {
                v.problem("TETHER_SSO_SECRET", "must be at least 32 characters".into());
                None
            } else {
                Some(Secret::new(s))
            }
        });
        let embed_origins = v.parse("TETHER_EMBED_ORIGINS", "none", parse_origins);
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
            lapse_warning_days: v.parse("TETHER_REFRESH_TOKEN_LAPSE_WARNING_DAYS", "14", |s| {
                parse_range(s, 1, 365)
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
        let gohighlevel = GoHighLevelSettings {
            webhook_key: v.parse(
                "TETHER_GOHIGHLEVEL_WEBHOOK_PUBLIC_KEY",
                GOHIGHLEVEL_WEBHOOK_KEY,
                crate::crypto::ed25519_public_key,
            ),
            app_id: v.get("TETHER_GOHIGHLEVEL_APP_ID").and_then(|id| {
                let id = id.trim().to_string();
                let ok = id.len() <= 128
                    && id
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                if !ok {
                    v.problem(
                        "TETHER_GOHIGHLEVEL_APP_ID",
                        "is 1 to 128 letters, digits, '-' or '_'".into(),
                    );
                }
                ok.then_some(id)
            }),
        };
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
            sso_secret,
            embed_origins,
            metrics_token,
            proxy_max_body,
            ca_certs,
            refresh,
            demo_provider,
            gohighlevel,
            log_filter,
            log_format,
            env: Secret::new(vars.clone()),
            warnings,
        })
    }

    pub fn is_production(&self) -> bool {
        self.environment == Environment::Production
    }

    /// `{public_url}/oauth/{provider}/callback`, the exact URI to register.
    pub fn redirect_uri(&self, provider: &str) -> String {
        format!(
            "{}/oauth/{provider}/callback",
            self.public_url.as_str().trim_end_matches('/')
        )
    }

    /// A non-empty variable from the environment the settings came from.
    pub fn var(&self, name: &str) -> Option<String> {
        self.env
            .expose()
            .get(name)
            .filter(|v| !v.trim().is_empty())
            .cloned()
    }

    /// The listed embedding origin equal to `origin`, if any.
    pub fn embed_origin(&self, origin: &str) -> Option<&str> {
        self.embed_origins
            .iter()
            .find(|o| o.as_str() == origin)
            .map(String::as_str)
    }

    /// The base URL without a trailing slash, for links.
    pub fn base_url(&self) -> &str {
        self.public_url.as_str().trim_end_matches('/')
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

/// The certificates of the PEM bundle at `path`, each one a root rustls
/// takes. The file's content is never told: only what is wrong with it.
fn read_ca_certs(path: &Path) -> Result<Vec<reqwest::Certificate>, String> {
    let pem = std::fs::read(path)
        .map_err(|e| format!("'{}' is not a readable file ({e})", path.display()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|_| format!("'{}' is not a PEM bundle", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "'{}' holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    // The client parses each certificate only when it is built: build one
    // now, so that a damaged certificate stops the start, not the first call.
    certs
        .iter()
        .fold(reqwest::Client::builder(), |b, c| {
            b.add_root_certificate(c.clone())
        })
        .build()
        .map_err(|_| {
            format!(
                "'{}' holds a certificate that is not a valid X.509 certificate",
                path.display()
            )
        })?;
    Ok(certs)
}

fn parse_public_url(s: &str) -> Result<Url, String> {
    let url = Url::parse(s)
        .map_err(|_| "is not an absolute URL such as https://tether.example.com".to_string())?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("must start with http:// or https://".into());
    }
    if url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return Err("must not carry a query, a fragment or credentials".into());
    }
    if url.host_str().is_none() {
        return Err("has no host".into());
    }
    // Redirect URIs, links and the session cookie's path are all written
    // from the root: behind a path they would point outside Tether.
    if url.path() != "/" {
        return Err("must not have a path: Tether is served at the root of its host (redirect URIs, links and cookies assume it); give a scheme and host only, such as https://tether.example.com".into());
    }
    let trimmed = url.as_str().trim_end_matches('/').to_string();
    Url::parse(&trimmed).map_err(|_| "is not a valid URL".to_string())
}

/// `none`, or comma-separated networks (`10.0.0.0/8`) or single addresses.
fn parse_networks(s: &str) -> Result<Vec<ipnet::IpNet>, String> {
    if s.eq_ignore_ascii_case("none") {
        return Ok(Vec::new());
    }
    s.split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .enumerate()
        .map(|(i, n)| {
            n.parse::<ipnet::IpNet>()
                .or_else(|_| n.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map(|net| net.trunc())
                .map_err(|_| {
                    format!(
                        "entry {} is not a network such as 10.0.0.0/8 or an address (or 'none')",
                        i + 1
                    )
                })
                .and_then(|net| {
                    // Trusting everyone lets every client write its own
                    // address into X-Forwarded-For.
                    if net.prefix_len() == 0 {
                        Err(format!(
                            "entry {} covers every address: any client could then choose the address rate limits count by sending X-Forwarded-For; list only the load balancers' networks",
                            i + 1
                        ))
                    } else {
                        Ok(net)
                    }
                })
        })
        .collect()
}

/// `none`, or comma-separated exact origins: `scheme://host[:port]` with
/// http or https, no path (not even `/`), query, credentials or wildcard.
/// Kept as browsers serialize them (lower-case host, no default port), which
/// is what a page's `window.location.origin` says.
fn parse_origins(s: &str) -> Result<Vec<String>, String> {
    if s.eq_ignore_ascii_case("none") {
        return Ok(Vec::new());
    }
    let mut origins: Vec<String> = Vec::new();
    for (i, entry) in s.split(',').map(str::trim).enumerate() {
        let bad = |why: &str| {
            format!(
                "entry {} {why}; write origins such as https://crm.example.com or http://127.0.0.1:3000 (or 'none')",
                i + 1
            )
        };
        if entry.is_empty() {
            return Err(bad("is empty"));
        }
        if entry.contains('*') {
            return Err(bad("has a wildcard: every origin is listed exactly"));
        }
        let Some((scheme, rest)) = entry.split_once("://") else {
            return Err(bad("is not scheme://host[:port]"));
        };
        if !matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https") {
            return Err(bad("must start with http:// or https://"));
        }
        if rest.contains(['/', '?', '#', '@', '\\']) {
            return Err(bad(
                "must be only scheme://host[:port], without a path (not even a trailing /)",
            ));
        }
        if rest.is_empty() {
            return Err(bad("has no host"));
        }
        let url = Url::parse(entry).map_err(|_| bad("is not scheme://host[:port]"))?;
        if url.host_str().is_none_or(str::is_empty) {
            return Err(bad("has no host"));
        }
        let origin = url.origin().ascii_serialization();
        if !origins.contains(&origin) {
            origins.push(origin);
        }
    }
    Ok(origins)
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err("must be true or false".into()),
    }
}

fn parse_range<T>(s: &str, min: u64, max: u64) -> Result<T, String>
where
    T: TryFrom<u64>,
{
    let n: u64 = s
        .parse()
        .map_err(|_| format!("must be a whole number from {min} to {max}"))?;
    if !(min..=max).contains(&n) {
        return Err(format!("must be a whole number from {min} to {max}"));
    }
    T::try_from(n).map_err(|_| format!("must be a whole number from {min} to {max}"))
}

/// Reads the optional TOML file: a flat table whose keys are the variable
/// names in lower case. Unknown keys are errors (they are usually typos).
fn read_file(path: &Path) -> Result<BTreeMap<String, String>, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_ca_bundle_that_is_missing_empty_or_damaged_stops_the_start_naming_only_the_variable() {
        let dir = tempfile::tempdir().unwrap();
        let secretish = "hunter2-is-not-a-certificate";
        let no_cert = dir.path().join("no-cert.pem");
        std::fs::write(&no_cert, format!("{secretish}\n")).unwrap();
        let damaged = dir.path().join("damaged.pem");
        // A PEM block whose content is no certificate (base64 of the text).
        std::fs::write(
            &damaged,
            format!(
                "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
                B64.encode(secretish)
            ),
        )
        .unwrap();
        let missing = dir.path().join("missing.pem");
        for (file, why) in [
            (&missing, "is not a readable file"),
            (&no_cert, "holds no PEM certificate"),
            (&damaged, "not a valid X.509 certificate"),
        ] {
            let err = Settings::from_vars(&vars(&[("TETHER_CA_CERTS", file.to_str().unwrap())]))
                .unwrap_err()
                .to_string();
            assert!(err.contains("TETHER_CA_CERTS"), "{err}");
            assert!(err.contains(why), "{err}");
            assert!(!err.contains(secretish), "{err}");
            assert!(!err.contains(&B64.encode(secretish)), "{err}");
        }
        assert!(Settings::from_vars(&BTreeMap::new())
            .unwrap()
            .ca_certs
            .is_empty());
    }

    #[test]
    fn defaults_need_no_configuration() {
        let s = Settings::from_vars(&BTreeMap::new()).unwrap();
        assert_eq!(s.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(
            s.redirect_uri("demo"),
            "http://127.0.0.1:8080/oauth/demo/callback"
        );
        assert_eq!(s.database_url.expose(), "sqlite://./data/tether.db");
        assert!(s.demo_provider);
        assert!(s.encryption_keys.is_none());
    }

    #[test]
    fn trusted_proxies_are_networks_or_addresses_and_none_by_default() {
        let none = Settings::from_vars(&BTreeMap::new()).unwrap();
        assert!(none.trusted_proxies.is_empty());
        let s = Settings::from_vars(&vars(&[(
            "TETHER_TRUSTED_PROXIES",
            " 10.0.0.0/8, 192.168.1.7 ,2001:db8::/32,10.1.2.3/16",
        )]))
        .unwrap();
        let shown: Vec<String> = s.trusted_proxies.iter().map(|n| n.to_string()).collect();
        assert_eq!(
            shown,
            [
                "10.0.0.0/8",
                "192.168.1.7/32",
                "2001:db8::/32",
                "10.1.0.0/16"
            ]
        );
        for bad in ["10.0.0.0/33", "proxy.internal", "10.0.0.0/8;10.1.0.0/16"] {
            let err = Settings::from_vars(&vars(&[("TETHER_TRUSTED_PROXIES", bad)])).unwrap_err();
            assert!(err.to_string().contains("TETHER_TRUSTED_PROXIES"), "{err}");
        }
    }

    #[test]
    fn trusted_proxies_covering_every_address_are_refused_saying_why() {
        for every in [
            "0.0.0.0/0",
            "::/0",
            "10.0.0.0/8, 1.2.3.4/0",
            "10.0.0.0/8,::1/0",
        ] {
            let err = Settings::from_vars(&vars(&[("TETHER_TRUSTED_PROXIES", every)]))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("TETHER_TRUSTED_PROXIES: entry ")
                    && err.contains("covers every address: any client could then choose the address rate limits count"),
                "{every}: {err}"
            );
        }
        let err = Settings::from_vars(&vars(&[("TETHER_TRUSTED_PROXIES", "10.0.0.0/8,0.0.0.0/0")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("entry 2 covers every address"), "{err}");
        // The narrowest useful networks are still taken.
        assert!(
            Settings::from_vars(&vars(&[("TETHER_TRUSTED_PROXIES", "0.0.0.0/1,::/1")])).is_ok()
        );
    }

    #[test]
    fn every_problem_is_reported_by_variable_name() {
        let err = Settings::from_vars(&vars(&[
            ("TETHER_BIND", "nope"),
            ("TETHER_PUBLIC_URL", "ftp://x"),
            ("TETHER_REFRESH_CONCURRENCY", "0"),
            ("TETHER_DATABASE_URL", "mysql://x"),
        ]))
        .unwrap_err();
        let text = err.to_string();
        for name in [
            "TETHER_BIND",
            "TETHER_PUBLIC_URL",
            "TETHER_REFRESH_CONCURRENCY",
            "TETHER_DATABASE_URL",
        ] {
            assert!(text.contains(name), "{text}");
        }
    }

    #[test]
    fn production_refuses_generated_keys_http_and_the_demo_provider() {
        let err = Settings::from_vars(&vars(&[
            ("TETHER_ENV", "production"),
            ("TETHER_DEMO_PROVIDER", "on"),
        ]))
        .unwrap_err();
        let text = err.to_string();
        for name in [
            "TETHER_ENCRYPTION_KEYS",
            "TETHER_SESSION_KEY",
            "TETHER_PUBLIC_URL",
            "TETHER_DEMO_PROVIDER",
        ] {
            assert!(text.contains(name), "{text}");
        }
    }

    #[test]
    fn production_refuses_an_http_webhook_url_and_takes_an_https_one() {
        let prod = |webhook: &str| {
            Settings::from_vars(&vars(&[
                ("TETHER_ENV", "production"),
                ("TETHER_DATABASE_URL", "postgres://db.example.com/tether"),
                ("TETHER_PUBLIC_URL", "https://tether.example.com"),
                (
                    "TETHER_ENCRYPTION_KEYS",
                    "k1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=",
                ),
                ("TETHER_SESSION_KEY", &B64.encode([7u8; 64])),
                ("TETHER_WEBHOOK_URL", webhook),
                ("TETHER_WEBHOOK_SECRET", "a-webhook-secret-of-some-length"),
            ]))
        };
        let text = prod("http://crm.example.com/hooks")
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("TETHER_WEBHOOK_URL: must be https://"),
            "{text}"
        );
        assert_eq!(text.matches("  - ").count(), 1, "only the webhook: {text}");
        assert!(prod("https://crm.example.com/hooks").is_ok());
        // Development takes http (a receiver on localhost).
        assert!(Settings::from_vars(&vars(&[
            ("TETHER_WEBHOOK_URL", "http://127.0.0.1:9000/hooks"),
            ("TETHER_WEBHOOK_SECRET", "a-webhook-secret-of-some-length"),
        ]))
        .is_ok());
    }

    #[test]
    fn a_short_metrics_token_is_refused_and_not_echoed() {
        let err = Settings::from_vars(&vars(&[("TETHER_METRICS_TOKEN", "short-tok")])).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("TETHER_METRICS_TOKEN"), "{text}");
        assert!(!text.contains("short-tok"), "{text}");
        let s =
            Settings::from_vars(&vars(&[("TETHER_METRICS_TOKEN", "a-long-enough-token")])).unwrap();
        assert_eq!(
            s.metrics_token.as_ref().map(|t| t.expose().as_str()),
            Some("a-long-enough-token")
        );
        assert_eq!(s.proxy_max_body, 10 * 1024 * 1024);
    }

    #[test]
    fn bad_secret_values_are_not_echoed() {
        let err = Settings::from_vars(&vars(&[("TETHER_SESSION_KEY", "c2VjcmV0LXNlc3Npb24ta2V5")]))
            .unwrap_err();
        assert!(!err.to_string().contains("c2VjcmV0"), "{err}");
    }

    #[test]
    fn the_gohighlevel_webhook_key_defaults_to_the_published_one_and_a_bad_one_stops_start() {
        let s = Settings::from_vars(&vars(&[])).unwrap();
        assert_eq!(
            crate::crypto::ed25519_spki_base64(&s.gohighlevel.webhook_key),
            GOHIGHLEVEL_WEBHOOK_KEY
        );
        assert!(s.gohighlevel.app_id.is_none());
        let err = Settings::from_vars(&vars(&[
            (
                "TETHER_GOHIGHLEVEL_WEBHOOK_PUBLIC_KEY",
                "c29tZXRoaW5nLWVsc2U=",
            ),
            ("TETHER_GOHIGHLEVEL_APP_ID", "bad id!"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("TETHER_GOHIGHLEVEL_WEBHOOK_PUBLIC_KEY: is 14 bytes of DER"),
            "{err}"
        );
        assert!(!err.contains("c29tZXRoaW5n"), "{err}");
        assert!(err.contains("TETHER_GOHIGHLEVEL_APP_ID"), "{err}");
        let s = Settings::from_vars(&vars(&[("TETHER_GOHIGHLEVEL_APP_ID", "64f0a1b2c3")])).unwrap();
        assert_eq!(s.gohighlevel.app_id.as_deref(), Some("64f0a1b2c3"));
    }

    #[test]
    fn the_readme_table_lists_every_variable() {
        let readme = include_str!("../README.md");
        for (name, default, _) in VARIABLES {
            let row = format!("| `{name}` | ");
            let line = readme
                .lines()
                .find(|l| l.starts_with(&row))
                .unwrap_or_else(|| panic!("README lacks {name}"));
            assert!(
                line.contains(default),
                "README default of {name} should read {default}: {line}"
            );
        }
    }

    #[test]
    fn embed_origins_are_exact_origins_kept_as_browsers_write_them() {
        let none = Settings::from_vars(&BTreeMap::new()).unwrap();
        assert!(none.embed_origins.is_empty());
        let s = Settings::from_vars(&vars(&[(
            "TETHER_EMBED_ORIGINS",
            " https://CRM.Example.com ,http://127.0.0.1:3000,https://app.example.com:443,https://crm.example.com",
        )]))
        .unwrap();
        assert_eq!(
            s.embed_origins,
            [
                "https://crm.example.com",
                "http://127.0.0.1:3000",
                "https://app.example.com"
            ]
        );
        assert_eq!(
            s.embed_origin("http://127.0.0.1:3000"),
            Some("http://127.0.0.1:3000")
        );
        assert_eq!(s.embed_origin("http://127.0.0.1:3001"), None);
        assert_eq!(s.embed_origin("https://crm.example.com/"), None);
    }

    #[test]
    fn an_embed_origin_with_a_path_a_wildcard_or_another_scheme_is_refused_by_entry() {
        for (bad, why) in [
            ("https://crm.example.com/", "without a path"),
            ("https://crm.example.com/settings", "without a path"),
            ("https://*.example.com", "wildcard"),
            ("*", "wildcard"),
            ("crm.example.com", "scheme://host"),
            ("ftp://crm.example.com", "http:// or https://"),
            ("https://crm.example.com?x=1", "without a path"),
            ("https://user@crm.example.com", "without a path"),
            ("https://crm.example.com:99999", "scheme://host"),
            ("https://", "host"),
            ("https://ok.example.com,", "is empty"),
            ("null", "scheme://host"),
        ] {
            let err = Settings::from_vars(&vars(&[("TETHER_EMBED_ORIGINS", bad)])).unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains("TETHER_EMBED_ORIGINS: entry "),
                "{bad}: {text}"
            );
            assert!(text.contains(why), "{bad}: {text}");
        }
        let err = Settings::from_vars(&vars(&[(
            "TETHER_EMBED_ORIGINS",
            "https://a.example.com,https://b.example.com/x",
        )]))
        .unwrap_err();
        assert!(err.to_string().contains("entry 2 "), "{err}");
    }

    #[test]
    fn production_takes_only_https_embed_origins() {
        let prod = |origins: &str| {
            Settings::from_vars(&vars(&[
                ("TETHER_ENV", "production"),
                ("TETHER_DATABASE_URL", "postgres://db.example.com/tether"),
                ("TETHER_PUBLIC_URL", "https://tether.example.com"),
                (
                    "TETHER_ENCRYPTION_KEYS",
                    "k1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=",
                ),
                ("TETHER_SESSION_KEY", &B64.encode([7u8; 64])),
                ("TETHER_EMBED_ORIGINS", origins),
            ]))
        };
        let text = prod("https://crm.example.com,http://crm.example.com")
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("TETHER_EMBED_ORIGINS: entry 2 must be https:// in production"),
            "{text}"
        );
        assert!(prod("https://crm.example.com").is_ok());
    }

    #[test]
    fn the_table_aligns_every_variable_with_its_default() {
        let table = table();
        let meaning_at = table.lines().next().unwrap().find("MEANING").unwrap();
        for (name, default, meaning) in VARIABLES {
            let line = table
                .lines()
                .find(|l| l.starts_with(&format!("{name} ")))
                .unwrap_or_else(|| panic!("{name} missing: {table}"));
            assert!(line.contains(&format!("  {default}  ")), "{line}");
            assert_eq!(&line[meaning_at..], meaning.replace('`', ""), "{line}");
        }
    }

    #[test]
    fn levenshtein_counts_edits() {
        assert_eq!(levenshtein("", "abc"), 3);
        assert_eq!(levenshtein("kitten", "sitting"), 3);
        assert_eq!(levenshtein("TETHER_DATABSE_URL", "TETHER_DATABASE_URL"), 1);
        assert_eq!(levenshtein("same", "same"), 0);
    }

    #[test]
    fn an_unknown_tether_variable_is_refused_in_production_with_the_nearest_name() {
        let err = Settings::from_vars(&vars(&[
            ("TETHER_ENV", "production"),
            ("TETHER_DATABSE_URL", "postgres://u:secret-pw@db/tether"),
            ("TETHER_SOMETHING_ELSE_ENTIRELY", "x"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains(
                "TETHER_DATABSE_URL: is not a Tether variable; did you mean TETHER_DATABASE_URL?"
            ),
            "{err}"
        );
        assert!(
            err.contains("TETHER_SOMETHING_ELSE_ENTIRELY: is not a Tether variable (see"),
            "{err}"
        );
        assert!(
            err.contains("TETHER_DATABASE_URL: is required in production"),
            "{err}"
        );
        assert!(!err.contains("secret-pw"), "{err}");
    }

    #[test]
    fn an_unknown_tether_variable_is_a_warning_in_development() {
        let s = Settings::from_vars(&vars(&[
            ("TETHER_SESION_KEY", "x"),
            ("TETHER_TEST_POSTGRES_URL", "postgres://x"),
            ("TETHER_ACME_CLIENT_SECRET", "x"),
            ("OTHER_VARIABLE", "x"),
        ]))
        .unwrap();
        assert_eq!(
            s.warnings,
            ["TETHER_SESION_KEY: is not a Tether variable; did you mean TETHER_SESSION_KEY?"]
        );
        assert!(Settings::from_vars(&BTreeMap::new())
            .unwrap()
            .warnings
            .is_empty());
    }

    #[test]
    fn a_public_url_with_a_path_is_refused_saying_tether_is_served_at_the_root() {
        for bad in [
            "https://t.example.com/sub",
            "https://t.example.com/sub/",
            "https://t.example.com//",
            "http://127.0.0.1:8080/a/b",
        ] {
            let err = Settings::from_vars(&vars(&[("TETHER_PUBLIC_URL", bad)]))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(
                    "TETHER_PUBLIC_URL: must not have a path: Tether is served at the root"
                ),
                "{bad}: {err}"
            );
            assert!(!err.contains("/sub") && !err.contains("/a/b"), "{err}");
        }
        for good in [
            "https://t.example.com",
            "https://t.example.com/",
            "http://127.0.0.1:9090",
        ] {
            assert!(
                Settings::from_vars(&vars(&[("TETHER_PUBLIC_URL", good)])).is_ok(),
                "{good}"
            );
        }
    }

    #[test]
    fn in_development_an_unset_public_url_follows_the_bind_address() {
        let public = |pairs: &[(&str, &str)]| {
            Settings::from_vars(&vars(pairs))
                .unwrap()
                .base_url()
                .to_string()
        };
        assert_eq!(
            public(&[("TETHER_BIND", "127.0.0.1:9090")]),
            "http://127.0.0.1:9090"
        );
        assert_eq!(
            public(&[("TETHER_BIND", "0.0.0.0:9091")]),
            "http://127.0.0.1:9091"
        );
        assert_eq!(public(&[("TETHER_BIND", "[::]:9092")]), "http://[::1]:9092");
        assert_eq!(
            public(&[("TETHER_BIND", "192.168.1.5:3000")]),
            "http://192.168.1.5:3000"
        );
        assert_eq!(public(&[]), "http://127.0.0.1:8080");
        // Port 0 has no port to follow until it binds.
        assert_eq!(
            public(&[("TETHER_BIND", "127.0.0.1:0")]),
            "http://127.0.0.1:8080"
        );
        // Set, it wins.
        assert_eq!(
            public(&[
                ("TETHER_BIND", "0.0.0.0:9090"),
                ("TETHER_PUBLIC_URL", "http://localhost:8000")
            ]),
            "http://localhost:8000"
        );
        let s = Settings::from_vars(&vars(&[("TETHER_BIND", "0.0.0.0:9090")])).unwrap();
        assert_eq!(
            s.redirect_uri("demo"),
            "http://127.0.0.1:9090/oauth/demo/callback"
        );
    }

    #[test]
    fn public_url_loses_its_trailing_slash() {
        let s =
            Settings::from_vars(&vars(&[("TETHER_PUBLIC_URL", "https://t.example.com/")])).unwrap();
        assert_eq!(
            s.redirect_uri("hubspot"),
            "https://t.example.com/oauth/hubspot/callback"
        );
    }
}
