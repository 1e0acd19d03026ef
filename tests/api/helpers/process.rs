//! The real `tether` binary: a command with a clean environment, its output,
//! a `tether serve` read up to its listening line, the bytes it left on
//! disk, and a request to a running one by URL.

use super::TestDb;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// The `tether` binary with a clean environment pointed at `db`.
pub fn tether(db: &TestDb, keys: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tether"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TETHER_BIND", "127.0.0.1:0")
        .env("TETHER_DATA_DIR", db.data_dir())
        .env("TETHER_DATABASE_URL", &db.url)
        .env("TETHER_SESSION_KEY", super::SESSION_KEY)
        .env("RUST_LOG", "warn")
        .current_dir(db.data_dir());
    if !keys.is_empty() {
        cmd.env("TETHER_ENCRYPTION_KEYS", keys);
    }
    cmd
}

/// Runs a command with `stdin` as its input and returns its output.
pub fn run(cmd: &mut Command, stdin: &str) -> Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tether");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait for tether")
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A `tether serve` process, read up to the line that says it listens.
pub struct Server {
    pub child: Child,
    pub port: u16,
    /// Everything printed on stdout up to and including the listening line,
    /// and the lines after it that belong to the start banner.
    pub banner: Vec<String>,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Server {
    /// Starts `cmd` and blocks until it prints its listening line (or exits).
    pub fn start(cmd: &mut Command) -> Result<Server, String> {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut banner = Vec::new();
        loop {
            let mut line = String::new();
            if stdout.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut err);
                }
                let _ = child.wait();
                return Err(format!("tether exited before listening: {err}"));
            }
            let line = line.trim_end().to_string();
            banner.push(line.clone());
            if let Some(rest) = line.strip_prefix("Tether is listening on http://127.0.0.1:") {
                let port = rest
                    .split(' ')
                    .next()
                    .and_then(|p| p.parse().ok())
                    .ok_or("no port")?;
                // The banner's next line is always printed with it.
                let mut next = String::new();
                stdout.read_line(&mut next).map_err(|e| e.to_string())?;
                banner.push(next.trim_end().to_string());
                if next.starts_with("First start") {
                    for _ in 0..3 {
                        let mut l = String::new();
                        stdout.read_line(&mut l).map_err(|e| e.to_string())?;
                        banner.push(l.trim_end().to_string());
                    }
                }
                return Ok(Server {
                    child,
                    port,
                    banner,
                    stdout,
                });
            }
        }
    }

    /// Stops the server and returns what it wrote to stderr.
    pub fn stop(mut self) -> String {
        use std::io::Read;
        let _ = self.child.kill();
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        let _ = self.child.wait();
        let mut rest = String::new();
        let _ = self.stdout.read_to_string(&mut rest);
        err
    }
}

/// Every file under `dir`, concatenated (SQLite keeps recent pages in -wal).
pub fn all_bytes_under(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir").flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                out.extend(bytes);
            }
        }
    }
    out
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// `GET url` from a `tether serve` process, as its callers would: no proxy,
/// a fresh client, `key` as bearer if given, at most `timeout` for the
/// answer. The status and the body, or why no answer came.
pub async fn get_at(
    url: &str,
    key: Option<&str>,
    timeout: std::time::Duration,
) -> reqwest::Result<(u16, String)> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .build()
        .expect("client");
    let mut req = client.get(url);
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    let res = req.send().await?;
    let status = res.status().as_u16();
    Ok((status, res.text().await.unwrap_or_default()))
}

/// [`get_at`] for an answer that must come: the status and the JSON body
/// (`null` when the body is not JSON).
pub async fn get_json_at(
    url: &str,
    key: Option<&str>,
    timeout: std::time::Duration,
) -> (u16, serde_json::Value) {
    let (status, body) = get_at(url, key, timeout).await.expect("instance answers");
    (status, serde_json::from_str(&body).unwrap_or_default())
}
