//! Instances: `tether serve` processes, each with a clean environment, its
//! own data dir (stderr in `tether.log` there) and its own port, started,
//! signalled, killed and restarted on the same port and data dir.

use super::{CLIENT_ID, CLIENT_SECRET, EXIT_WITHIN, LEASE_SECS, PROVIDER_TIMEOUT_SECS};
use crate::helpers::{TestDb, KEY_K1, SESSION_KEY};
use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// One `tether serve` process (restartable on the same port and data dir),
/// killed when dropped; when the test is failing, the tail of its log is
/// printed.
pub(crate) struct Instance {
    pub(crate) name: &'static str,
    /// The provider's base URL.
    provider: String,
    port: u16,
    pub(crate) dir: PathBuf,
    env: Vec<(String, String)>,
    child: Option<Child>,
    starts: u32,
}

impl Instance {
    /// An instance on `db` with `acme` at `provider`, and `extra` settings.
    pub(crate) fn new(
        db: &TestDb,
        name: &'static str,
        provider: &str,
        extra: &[(&str, &str)],
    ) -> Instance {
        let port = free_port();
        let dir = db.data_dir().join(format!("instance-{name}"));
        std::fs::create_dir_all(&dir).expect("instance data dir");
        let providers = dir.join("providers.toml");
        let url = format!("http://127.0.0.1:{port}");
        let mut env: Vec<(String, String)> = [
            ("TETHER_BIND", format!("127.0.0.1:{port}")),
            ("TETHER_PUBLIC_URL", url),
            ("TETHER_DATABASE_URL", db.url.clone()),
            ("TETHER_DATA_DIR", dir.display().to_string()),
            ("TETHER_ENCRYPTION_KEYS", KEY_K1.to_string()),
            ("TETHER_SESSION_KEY", SESSION_KEY.to_string()),
            ("TETHER_PROVIDERS_FILE", providers.display().to_string()),
            ("ACME_CLIENT_ID", CLIENT_ID.to_string()),
            ("ACME_CLIENT_SECRET", CLIENT_SECRET.to_string()),
            ("TETHER_REFRESH_ENABLED", "true".to_string()),
            ("TETHER_REFRESH_INTERVAL_SECS", "1".to_string()),
            ("TETHER_TOKEN_CACHE_MS", "0".to_string()),
            (
                "TETHER_PROVIDER_TIMEOUT_SECS",
                PROVIDER_TIMEOUT_SECS.to_string(),
            ),
            ("TETHER_REFRESH_LEASE_SECS", LEASE_SECS.to_string()),
            ("TETHER_DEMO_PROVIDER", "false".to_string()),
            ("RUST_LOG", "info".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        for (k, v) in extra {
            env.retain(|(name, _)| name != k);
            env.push((k.to_string(), v.to_string()));
        }
        Instance {
            name,
            provider: provider.to_string(),
            port,
            dir,
            env,
            child: None,
            starts: 0,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Who the provider sees calling from the current process: the name and
    /// the start count (`a1`, `a2`, ...), so that a request a killed process
    /// sent is never taken for one of its successor's.
    pub(crate) fn via(&self) -> String {
        format!("{}{}", self.name, self.starts)
    }

    fn log(&self) -> PathBuf {
        self.dir.join("tether.log")
    }

    /// Starts the process and waits until `/healthz` answers.
    pub(crate) async fn start(&mut self) {
        assert!(self.child.is_none(), "instance {} is running", self.name);
        self.starts += 1;
        // The token URL names this process (see `via`); the path stays /token.
        std::fs::write(
            self.dir.join("providers.toml"),
            format!(
                r#"
[providers.acme]
display_name = "Acme CRM"
authorize_url = "{base}/authorize"
token_url = "{base}/token?via={via}"
scopes = ["contacts.read"]
client_auth = "post"
"#,
                base = self.provider,
                via = self.via()
            ),
        )
        .expect("providers file");
        let append = |file: PathBuf| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(file)
                .expect("instance log")
        };
        let mut log = append(self.log());
        writeln!(
            log,
            "=== harness: start {} of instance {}",
            self.starts, self.name
        )
        .expect("write log");
        let child = Command::new(env!("CARGO_BIN_EXE_tether"))
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(append(self.dir.join("stdout.log")))
            .stderr(log)
            .spawn()
            .expect("spawn tether serve");
        self.child = Some(child);
        self.wait_ready().await;
    }

    async fn wait_ready(&mut self) {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("client");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                panic!(
                    "instance {} exited before it was ready ({status})\n{}",
                    self.name,
                    self.tail(40)
                );
            }
            if let Ok(res) = client.get(format!("{}/healthz", self.url())).send().await {
                if res.status().is_success() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "instance {} not ready within 30 s\n{}",
                self.name,
                self.tail(40)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running instance").id()
    }

    /// Sets `key` for its next start.
    pub(crate) fn set(&mut self, key: &str, value: &str) {
        self.env.retain(|(name, _)| name != key);
        self.env.push((key.to_string(), value.to_string()));
    }

    /// Everything it logged so far, over all its starts.
    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }

    /// SIGTERM, then waits for the exit (a graceful stop drains first).
    pub(crate) async fn stop(&mut self) {
        self.sigterm();
        let exited = self.wait_exit(EXIT_WITHIN).await;
        assert!(
            exited.is_some_and(|(status, _)| status.success()),
            "instance {} did not stop cleanly within {EXIT_WITHIN:?}: {exited:?}\n{}",
            self.name,
            self.tail(40)
        );
    }

    pub(crate) fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-s", "TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -s TERM {}", self.pid());
    }

    pub(crate) fn sigkill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits up to `within` for the process to exit: its status and how long
    /// it took, or `None` (then it is killed).
    pub(crate) async fn wait_exit(&mut self, within: Duration) -> Option<(ExitStatus, Duration)> {
        let started = Instant::now();
        let child = self.child.as_mut().expect("running instance");
        loop {
            if let Some(status) = child.try_wait().expect("wait for tether") {
                self.child = None;
                return Some((status, started.elapsed()));
            }
            if started.elapsed() > within {
                self.sigkill();
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The last `lines` lines of its log that are not request lines, and
    /// where a copy of the whole log is kept (the data dir goes with the test).
    pub(crate) fn tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.log()).unwrap_or_default();
        let all: Vec<&str> = text
            .lines()
            .filter(|l| !l.contains(" tether::access "))
            .collect();
        let from = all.len().saturating_sub(lines);
        let keep = std::env::temp_dir().join(format!(
            "tether-processes-{}-{}.log",
            std::process::id(),
            self.dir
                .display()
                .to_string()
                .replace(|c: char| !c.is_ascii_alphanumeric(), "_")
        ));
        let kept = std::fs::write(&keep, &text).map_or(String::new(), |_| {
            format!(" (whole log kept in {})", keep.display())
        });
        format!(
            "--- instance {}: last {} non-request lines of its log{kept} ---\n{}",
            self.name,
            all.len() - from,
            all[from..].join("\n")
        )
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.sigkill();
        if std::thread::panicking() {
            eprintln!("{}", self.tail(40));
        }
    }
}
