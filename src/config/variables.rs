//! Which variables there are: [`VARIABLES`], the documented table (the
//! README's configuration table and `tether config`), the `TETHER_` names
//! that are not configuration, and the check that names a misspelt one.

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
        "the key webhooks are signed with (Standard Webhooks; `Tether-Signature` too): at least 16 characters, a `whsec_` one is base64; two separated by a space during a rotation (required with TETHER_WEBHOOK_URL or TETHER_RELAY_URL)",
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
        "`/metrics` and `/readyz/providers` answer only `Authorization: Bearer <token>` (at least 16 characters); required in production",
    ),
    (
        "TETHER_PROXY_MAX_BODY_BYTES",
        "10485760",
        "largest provider response the proxy passes back; larger ones are a 502 `provider_response_too_large`",
    ),
    (
        "TETHER_PROXY_RETRY_MAX",
        "2",
        "how many times the proxy retries one idempotent call (GET, HEAD, PUT, DELETE) the provider answered 429 or 503 with a `Retry-After` (0 to 10; 0: never)",
    ),
    (
        "TETHER_PROXY_RETRY_MAX_WAIT_SECS",
        "10",
        "the longest one proxied call waits for its retries, all together (0 to 120); a `Retry-After` beyond it goes back to the caller at once",
    ),
    (
        "TETHER_INSTALL_CLAIM_WINDOW_SECS",
        "600",
        "how long a browser may claim a held Marketplace install it brought (a planted one lapses from it); the CRM may assign it until it expires",
    ),
    (
        "TETHER_CRM_NAME",
        "the CRM",
        "the CRM's name as the client's staff know it, in the pages they see (\"Acme CRM\"); 1 to 60 characters",
    ),
    (
        "TETHER_USAGE_FLUSH_MS",
        "10000",
        "how often the token reads and proxied calls counted in memory are written to the database for the Integrations page (10 to 600000); a crash loses at most this much of them",
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
        "TETHER_FORCED_REFRESH_COOLDOWN_SECS",
        "30",
        "a forced refresh (the API's `POST .../refresh`, the card's Refresh) this soon after the last successful refresh answers the current token and status without calling the provider (0: always call)",
    ),
    (
        "TETHER_API_KEY_RATE_LIMIT",
        "600",
        "requests per minute each tenant-scoped API key may make, per process (429 `rate_limited` with `Retry-After` beyond); all-tenants keys are not limited; 0 turns the limit off",
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
        "TETHER_RELAY_URL",
        "the events URL",
        "where providers' app events (a message a client received, ...) are relayed, signed like connection events (needs TETHER_WEBHOOK_SECRET)",
    ),
    (
        "TETHER_RELAY_HOLD_DAYS",
        "7",
        "how long an app event for an account no tenant holds is kept, to be relayed when a tenant connects it (1 to 90); then it is dropped with a log line",
    ),
    (
        "TETHER_REFRESH_FAILING_AFTER",
        "1h",
        "how long refreshing a connection may fail without a break (status `error`) before the scheduler records `refresh_failing` (and its webhook), once per streak: `90s`, `30m`, `1h`, `2d` (1 s to 30 days)",
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
        "TETHER_<KEY>_WEBHOOK_PUBLIC_KEY",
        "the preset's",
        "Ed25519 public key (PEM, or base64 of the SPKI DER) that a provider's signed app webhooks (`POST /webhooks/<platform>`) must verify against; its preset carries the platform's published key",
    ),
    (
        "TETHER_<KEY>_APP_ID",
        "none",
        "the provider's app (its Marketplace app): app webhooks for another app are refused, and its locations are listed for this one",
    ),
    (
        "TETHER_LOG_FORMAT",
        "text",
        "`text`: one line per event; `json`: one JSON object per line (`ts`, `level`, `target`, `message`, and a request line's fields)",
    ),
    ("RUST_LOG", "info", "env_logger filter"),
];

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
    // The README's curl examples keep the API key in this shell variable,
    // and the TypeScript client's examples Tether's address in the other.
    "TETHER_API_KEY",
    "TETHER_URL",
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
            "a provider's credentials (e.g. CALENDLY_CLIENT_ID); both enable it, one alone stops the start",
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
/// (`TETHER_DEMO_CLIENT_ID`, or a custom provider's `client_id_env`) or app
/// (`TETHER_<KEY>_APP_ID`, `TETHER_<KEY>_WEBHOOK_PUBLIC_KEY`), which the
/// provider catalogue checks.
pub(super) fn is_known_variable(name: &str) -> bool {
    VARIABLES.iter().any(|(n, _, _)| *n == name)
        || NOT_CONFIGURATION.contains(&name)
        || name.ends_with("_CLIENT_ID")
        || name.ends_with("_CLIENT_SECRET")
        || name.ends_with(APP_ID_SUFFIX)
        || name.ends_with(WEBHOOK_KEY_SUFFIX)
}

/// The end of `TETHER_<KEY>_APP_ID`, a provider's app id, which the
/// provider catalogue reads and checks.
pub const APP_ID_SUFFIX: &str = "_APP_ID";

/// The end of `TETHER_<KEY>_WEBHOOK_PUBLIC_KEY`, the key a provider's app
/// webhooks are signed with, which the provider catalogue reads and checks.
pub const WEBHOOK_KEY_SUFFIX: &str = "_WEBHOOK_PUBLIC_KEY";

/// The configuration variable nearest to an unknown `name`, when it is near
/// enough to be a typo of it.
pub(super) fn nearest_variable(name: &str) -> Option<&'static str> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_table_lists_every_variable() {
        let readme = include_str!("../../README.md");
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
}
