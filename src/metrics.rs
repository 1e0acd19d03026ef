//! Prometheus metrics, kept in memory per process and rendered as text.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// Latency buckets in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Debug, Clone, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                self.counts[i] += 1;
            }
        }
        self.sum += secs;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, le) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {}",
                self.counts[i]
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

#[derive(Default)]
pub struct Metrics {
    refreshes: Mutex<BTreeMap<(String, RefreshOutcome), u64>>,
    refresh_latency: Mutex<BTreeMap<String, Histogram>>,
    token_api: Mutex<Histogram>,
    /// Token sets held in memory until the database takes them.
    held: std::sync::atomic::AtomicUsize,
    /// Token requests answered from memory because the database was away.
    from_memory: std::sync::atomic::AtomicU64,
    /// Per provider, this process's last refresh that succeeded and last one
    /// that failed (with its outcome), for `/readyz/providers`.
    last: Mutex<BTreeMap<String, Activity>>,
    /// Webhook delivery attempts by [`Delivery`] outcome.
    deliveries: [std::sync::atomic::AtomicU64; 3],
    /// Responses by status class, 1xx to 5xx.
    responses: [std::sync::atomic::AtomicU64; 5],
    /// Tokens handed out by the token API, by [`KeyUse`].
    token_reads: Mutex<BTreeMap<KeyUse, u64>>,
    /// Proxied calls the provider answered, by [`KeyUse`] and the answer's
    /// status class (1 to 5).
    proxy_calls: Mutex<BTreeMap<(KeyUse, u16), u64>>,
}

/// Whose use of the API a counter counts: an API key, by its prefix and
/// name (neither is secret: `tether api-key list` prints both), and the
/// provider. Keys and providers are few, so the series stay few.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct KeyUse {
    key_prefix: String,
    key: String,
    provider: String,
}

impl KeyUse {
    fn new(key_prefix: &str, key: &str, provider: &str) -> KeyUse {
        KeyUse {
            key_prefix: key_prefix.to_string(),
            key: key.to_string(),
            provider: provider.to_string(),
        }
    }

    /// Its labels, escaped as the text format asks.
    fn labels(&self) -> String {
        format!(
            "key_prefix=\"{}\",key=\"{}\",provider=\"{}\"",
            escape(&self.key_prefix),
            escape(&self.key),
            escape(&self.provider)
        )
    }
}

/// A label value as the Prometheus text format writes it: backslash, double
/// quote and line feed escaped (a key's name may hold the first two).
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// How a webhook delivery attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Delivered,
    /// Failed; another attempt is planned.
    Failed,
    /// Failed for the last time ([`crate::webhooks::MAX_ATTEMPTS`]).
    GivenUp,
}

impl Delivery {
    const ALL: [Delivery; 3] = [Delivery::Delivered, Delivery::Failed, Delivery::GivenUp];

    fn as_str(self) -> &'static str {
        match self {
            Delivery::Delivered => "delivered",
            Delivery::Failed => "failed",
            Delivery::GivenUp => "given_up",
        }
    }
}

/// How a refresh attempt ended (the `outcome` label of
/// `tether_refreshes_total`; `refresh::classify` names a failure's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RefreshOutcome {
    Ok,
    /// Not sent: the provider's circuit breaker is open.
    CircuitOpen,
    GrantGone,
    /// No answer came: the provider may have acted.
    Unknown,
    Transient,
    /// The provider refused Tether's client credentials.
    ClientError,
    Refused,
}

impl RefreshOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            RefreshOutcome::Ok => "ok",
            RefreshOutcome::CircuitOpen => "circuit_open",
            RefreshOutcome::GrantGone => "grant_gone",
            RefreshOutcome::Unknown => "unknown",
            RefreshOutcome::Transient => "transient",
            RefreshOutcome::ClientError => "client_error",
            RefreshOutcome::Refused => "refused",
        }
    }
}

/// Undelivered webhook notifications in the outbox (every instance's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Due now (including ones an instance is sending).
    pub due: i64,
    /// Planned for a later attempt after a failure.
    pub waiting: i64,
}

/// This binary's version and the commit it was built from (`build.rs`:
/// `unknown` when built outside a git checkout).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("TETHER_COMMIT"),
    ")"
);

/// When this process last refreshed a provider's token, and last failed to.
#[derive(Debug, Clone, Default)]
pub struct Activity {
    pub last_success: Option<chrono::DateTime<chrono::Utc>>,
    pub last_failure: Option<(chrono::DateTime<chrono::Utc>, RefreshOutcome)>,
}

impl Metrics {
    /// Counts a refresh attempt of `provider` with its outcome and duration.
    pub fn refresh_outcome(&self, provider: &str, outcome: RefreshOutcome, secs: f64) {
        *self
            .refreshes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((provider.to_string(), outcome))
            .or_default() += 1;
        if outcome != RefreshOutcome::CircuitOpen {
            let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            let activity = last.entry(provider.to_string()).or_default();
            if outcome == RefreshOutcome::Ok {
                activity.last_success = Some(chrono::Utc::now());
            } else {
                activity.last_failure = Some((chrono::Utc::now(), outcome));
            }
            drop(last);
            self.refresh_latency
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(provider.to_string())
                .or_default()
                .observe(secs);
        }
    }

    /// This process's last refresh outcomes for `provider`.
    pub fn activity(&self, provider: &str) -> Activity {
        self.last
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(provider)
            .cloned()
            .unwrap_or_default()
    }

    pub fn held_answers(&self, n: usize) {
        self.held.store(n, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn answered_from_memory(&self) {
        self.from_memory
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Counts a webhook delivery attempt.
    pub fn webhook_delivery(&self, outcome: Delivery) {
        self.deliveries[outcome as usize].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Counts a response by its status class (`web::count_responses`).
    pub fn http_response(&self, status: u16) {
        if let Some(class) = (status / 100).checked_sub(1).filter(|c| *c < 5) {
            self.responses[usize::from(class)].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Counts a token handed out by the token API to the key with this
    /// prefix and name, for `provider`.
    pub fn token_read(&self, key_prefix: &str, key: &str, provider: &str) {
        *self
            .token_reads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(KeyUse::new(key_prefix, key, provider))
            .or_default() += 1;
    }

    /// Counts a proxied call of the key with this prefix and name to
    /// `provider`, which answered `status`.
    pub fn proxy_call(&self, key_prefix: &str, key: &str, provider: &str, status: u16) {
        let class = (status / 100).clamp(1, 5);
        *self
            .proxy_calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((KeyUse::new(key_prefix, key, provider), class))
            .or_default() += 1;
    }

    pub fn token_api(&self, secs: f64) {
        self.token_api
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .observe(secs);
    }

    /// The text exposition; `circuits`, `statuses`, `flags`, the webhook
    /// backlog (`None`: the database is away) and whether the database
    /// answers are read at scrape time.
    pub fn render(
        &self,
        circuits: &[(String, &str)],
        statuses: &[(String, i64)],
        flags: &[String],
        backlog: Option<Backlog>,
        database_up: bool,
        cache_coherent: bool,
    ) -> String {
        use std::sync::atomic::Ordering::Relaxed;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP tether_build_info This binary's version and commit.\n# TYPE tether_build_info gauge\ntether_build_info{{version=\"{}\",commit=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION"),
            env!("TETHER_COMMIT")
        );
        out.push_str("# HELP tether_http_responses_total Responses by status class.\n# TYPE tether_http_responses_total counter\n");
        for (i, n) in self.responses.iter().enumerate() {
            let _ = writeln!(
                out,
                "tether_http_responses_total{{class=\"{}xx\"}} {}",
                i + 1,
                n.load(Relaxed)
            );
        }
        out.push_str("# HELP tether_webhook_deliveries_total Webhook delivery attempts by outcome (failed: retried later; given_up: the last attempt failed).\n# TYPE tether_webhook_deliveries_total counter\n");
        for outcome in Delivery::ALL {
            let _ = writeln!(
                out,
                "tether_webhook_deliveries_total{{outcome=\"{}\"}} {}",
                outcome.as_str(),
                self.deliveries[outcome as usize].load(Relaxed)
            );
        }
        if let Some(b) = backlog {
            let _ = writeln!(
                out,
                "# HELP tether_webhook_backlog Undelivered webhook notifications of every instance: due now, or waiting for a later attempt after a failure.\n# TYPE tether_webhook_backlog gauge\ntether_webhook_backlog{{state=\"due\"}} {}\ntether_webhook_backlog{{state=\"waiting\"}} {}",
                b.due, b.waiting
            );
        }
        let _ = writeln!(
            out,
            "# HELP tether_database_up Whether this instance reaches its database.\n# TYPE tether_database_up gauge\ntether_database_up {}",
            u8::from(database_up)
        );
        let _ = writeln!(
            out,
            "# HELP tether_token_cache_coherent Whether this instance hears every write to connections (SQLite: always; PostgreSQL: while its LISTEN session is up).\n# TYPE tether_token_cache_coherent gauge\ntether_token_cache_coherent {}",
            u8::from(cache_coherent)
        );
        let _ = writeln!(
            out,
            "# HELP tether_held_token_sets Token sets held in memory until the database takes them.\n# TYPE tether_held_token_sets gauge\ntether_held_token_sets {}",
            self.held.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP tether_token_requests_from_memory_total Token requests answered from memory while the database was away.\n# TYPE tether_token_requests_from_memory_total counter\ntether_token_requests_from_memory_total {}",
            self.from_memory.load(Relaxed)
        );
        out.push_str("# HELP tether_refreshes_total Refresh attempts by provider and outcome.\n# TYPE tether_refreshes_total counter\n");
        for ((provider, outcome), n) in self
            .refreshes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "tether_refreshes_total{{provider=\"{provider}\",outcome=\"{}\"}} {n}",
                outcome.as_str()
            );
        }
        out.push_str("# HELP tether_refresh_duration_seconds Time of a refresh call to the provider.\n# TYPE tether_refresh_duration_seconds histogram\n");
        for (provider, h) in self
            .refresh_latency
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            h.render(
                &mut out,
                "tether_refresh_duration_seconds",
                &format!("provider=\"{provider}\""),
            );
        }
        out.push_str("# HELP tether_circuit_open Whether a provider's circuit breaker is open (1), half open (0.5) or closed (0).\n# TYPE tether_circuit_open gauge\n");
        for (provider, state) in circuits {
            let v = match *state {
                "open" => "1",
                "half_open" => "0.5",
                _ => "0",
            };
            let _ = writeln!(out, "tether_circuit_open{{provider=\"{provider}\"}} {v}");
        }
        out.push_str("# HELP tether_provider_misconfigured Providers that rejected Tether's client credentials.\n# TYPE tether_provider_misconfigured gauge\n");
        for provider in flags {
            let _ = writeln!(
                out,
                "tether_provider_misconfigured{{provider=\"{provider}\"}} 1"
            );
        }
        out.push_str(
            "# HELP tether_connections Connections by status.\n# TYPE tether_connections gauge\n",
        );
        for (status, n) in statuses {
            let _ = writeln!(out, "tether_connections{{status=\"{status}\"}} {n}");
        }
        out.push_str("# HELP tether_token_api_duration_seconds Time to answer a token request.\n# TYPE tether_token_api_duration_seconds histogram\n");
        self.token_api
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .render(&mut out, "tether_token_api_duration_seconds", "");
        out.push_str("# HELP tether_api_token_reads_total Tokens the token API handed out, by API key (prefix and name) and provider.\n# TYPE tether_api_token_reads_total counter\n");
        for (used, n) in self
            .token_reads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(out, "tether_api_token_reads_total{{{}}} {n}", used.labels());
        }
        out.push_str("# HELP tether_api_proxy_calls_total Proxied calls the provider answered, by API key (prefix and name), provider and the answer's status class.\n# TYPE tether_api_proxy_calls_total counter\n");
        for ((used, class), n) in self
            .proxy_calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "tether_api_proxy_calls_total{{{},status_class=\"{class}xx\"}} {n}",
                used.labels()
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_gauges_in_prometheus_text() {
        let m = Metrics::default();
        m.refresh_outcome("demo", RefreshOutcome::Ok, 0.003);
        m.refresh_outcome("demo", RefreshOutcome::Ok, 0.2);
        m.refresh_outcome("demo", RefreshOutcome::Transient, 0.01);
        m.token_api(0.0005);
        m.webhook_delivery(Delivery::Delivered);
        m.webhook_delivery(Delivery::GivenUp);
        m.webhook_delivery(Delivery::GivenUp);
        m.http_response(200);
        m.http_response(204);
        m.http_response(404);
        m.http_response(503);
        m.http_response(99);
        m.http_response(600);
        let text = m.render(
            &[("demo".into(), "open")],
            &[("connected".into(), 3)],
            &["acme".into()],
            Some(Backlog { due: 4, waiting: 2 }),
            false,
            true,
        );
        assert!(text.contains(&format!(
            "tether_build_info{{version=\"{}\",commit=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION"),
            env!("TETHER_COMMIT")
        )));
        assert!(text.contains("tether_http_responses_total{class=\"1xx\"} 0\n"));
        assert!(text.contains("tether_http_responses_total{class=\"2xx\"} 2\n"));
        assert!(text.contains("tether_http_responses_total{class=\"3xx\"} 0\n"));
        assert!(text.contains("tether_http_responses_total{class=\"4xx\"} 1\n"));
        assert!(text.contains("tether_http_responses_total{class=\"5xx\"} 1\n"));
        assert!(text.contains("tether_webhook_deliveries_total{outcome=\"delivered\"} 1\n"));
        assert!(text.contains("tether_webhook_deliveries_total{outcome=\"failed\"} 0\n"));
        assert!(text.contains("tether_webhook_deliveries_total{outcome=\"given_up\"} 2\n"));
        assert!(text.contains("tether_webhook_backlog{state=\"due\"} 4\n"));
        assert!(text.contains("tether_webhook_backlog{state=\"waiting\"} 2\n"));
        assert!(text.contains("tether_token_cache_coherent 1\n"));
        assert!(text.contains("tether_database_up 0\n"));
        assert!(text.contains("tether_held_token_sets 0\n"));
        assert!(text.contains("tether_refreshes_total{provider=\"demo\",outcome=\"ok\"} 2"));
        assert!(text
            .contains("tether_refresh_duration_seconds_bucket{provider=\"demo\",le=\"0.005\"} 1"));
        assert!(text.contains("tether_refresh_duration_seconds_count{provider=\"demo\"} 3"));
        assert!(text.contains("tether_circuit_open{provider=\"demo\"} 1"));
        assert!(text.contains("tether_connections{status=\"connected\"} 3"));
        assert!(text.contains("tether_provider_misconfigured{provider=\"acme\"} 1"));
        assert!(text.contains("tether_token_api_duration_seconds_bucket{le=\"0.001\"} 1"));
        assert!(text.contains("tether_token_api_duration_seconds_count 1"));
    }

    #[test]
    fn api_use_is_counted_per_key_and_provider_with_its_labels_escaped() {
        let m = Metrics::default();
        m.token_read("abc123", "crm", "acme");
        m.token_read("abc123", "crm", "acme");
        m.token_read("abc123", "crm", "demo");
        m.token_read("def456", "sync \"nightly\" \\ job", "acme");
        m.proxy_call("abc123", "crm", "acme", 200);
        m.proxy_call("abc123", "crm", "acme", 201);
        m.proxy_call("abc123", "crm", "acme", 404);
        let text = m.render(&[], &[], &[], None, true, true);
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("tether_api_"))
            .collect();
        assert_eq!(
            lines,
            [
                r#"tether_api_token_reads_total{key_prefix="abc123",key="crm",provider="acme"} 2"#,
                r#"tether_api_token_reads_total{key_prefix="abc123",key="crm",provider="demo"} 1"#,
                r#"tether_api_token_reads_total{key_prefix="def456",key="sync \"nightly\" \\ job",provider="acme"} 1"#,
                r#"tether_api_proxy_calls_total{key_prefix="abc123",key="crm",provider="acme",status_class="2xx"} 2"#,
                r#"tether_api_proxy_calls_total{key_prefix="abc123",key="crm",provider="acme",status_class="4xx"} 1"#,
            ]
        );
        assert!(text.contains("# TYPE tether_api_token_reads_total counter\n"));
        assert!(text.contains("# TYPE tether_api_proxy_calls_total counter\n"));
    }
}
