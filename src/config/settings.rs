//! The `Settings` struct and its parts (refresh, sessions, log
//! format, mode), what is wrong with a configuration (`ConfigError`), and
//! what the settings answer once built (redirect URIs, base URL, variables).
//! Built by `assemble`.

use crate::crypto::{KeyRing, Secret};
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use url::Url;

/// How log events are written (`TETHER_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One line per event: time, level, target, message, then `key=value`.
    Text,
    /// One JSON object per line.
    Json,
}

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
    /// How long a provider's app event for an account no tenant holds is
    /// kept for the tenant that comes to hold it (`TETHER_RELAY_HOLD_DAYS`).
    pub relay_hold: Duration,
    /// How far ahead a lapsing refresh token is announced, in days.
    pub lapse_warning_days: i64,
    /// How long refreshing may fail without a break before `refresh_failing`.
    pub failing_after: Duration,
    /// How soon after a successful refresh a forced one answers the row as
    /// it is instead of calling the provider (zero: never).
    pub forced_cooldown: Duration,
}

/// When the proxy retries a call the provider refused for now (429 or 503
/// with `Retry-After`): idempotent methods only.
#[derive(Debug, Clone, Copy)]
pub struct ProxyRetry {
    /// Retries of one call at most (`TETHER_PROXY_RETRY_MAX`; 0: never).
    pub max: u32,
    /// The longest one call waits, all retries together
    /// (`TETHER_PROXY_RETRY_MAX_WAIT_SECS`): a `Retry-After` that would
    /// pass it is handed back to the caller at once.
    pub max_wait: Duration,
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
    /// `TETHER_RELAY_URL`: where providers' app events are relayed, when
    /// not to the events URL; see [`Settings::relay_target`].
    pub relay: Option<Url>,
    pub sso_secret: Option<Secret<String>>,
    /// Origins (`scheme://host[:port]`, as browsers write them) of the CRM
    /// pages allowed to learn a connect link's outcome by `postMessage`.
    pub embed_origins: Vec<String>,
    /// The bearer token `/metrics` asks for; `None`: open (bind it privately).
    pub metrics_token: Option<Secret<String>>,
    /// Largest provider response body the proxy reads, in bytes.
    pub proxy_max_body: usize,
    /// Whether and how long the proxy retries a provider's 429 or 503.
    pub proxy_retry: ProxyRetry,
    /// How long a browser may claim a held install it brought
    /// (`TETHER_INSTALL_CLAIM_WINDOW_SECS`; 0: never, only the CRM assigns).
    pub install_claim_window: Duration,
    /// The CRM's name as the client's staff know it (`TETHER_CRM_NAME`),
    /// written where they see the product: "the CRM" unless set.
    pub crm_name: String,
    /// How often the uses counted in memory (token reads, proxied calls)
    /// are added to the database (`TETHER_USAGE_FLUSH_MS`): a crash loses
    /// at most this much of them.
    pub usage_flush: Duration,
    /// Requests per minute a tenant-scoped API key may make (0: no limit).
    pub api_key_rate_limit: u32,
    /// Roots from `TETHER_CA_CERTS`, trusted beside the bundled ones by
    /// every outgoing call (`oauth::client::http_client`).
    pub ca_certs: Vec<reqwest::Certificate>,
    pub refresh: RefreshSettings,
    pub demo_provider: bool,
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

    /// Where providers' app events are relayed, and the key they are signed
    /// with: `TETHER_RELAY_URL`, else the events URL; `None`: not relayed.
    pub fn relay_target(&self) -> Option<(Url, Secret<String>)> {
        let secret = match &self.webhook {
            Some((_, secret)) => secret.clone(),
            None => Secret::new(self.var("TETHER_WEBHOOK_SECRET")?),
        };
        match (&self.relay, &self.webhook) {
            (Some(url), _) => Some((url.clone(), secret)),
            (None, Some((url, _))) => Some((url.clone(), secret)),
            (None, None) => None,
        }
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
