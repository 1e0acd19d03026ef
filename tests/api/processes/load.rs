//! Load: token API requests for every connection, continuously, and what
//! came back (an answer, a refused connection, or one that got no answer).

use chrono::NaiveDateTime;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Pause between two token requests of one load task.
const PACE: Duration = Duration::from_millis(200);

#[derive(Debug, Clone)]
pub(crate) enum Answer {
    /// An HTTP answer: status and, for errors, the error code.
    Http(u16, String),
    /// Nobody listening (the instance is down).
    Refused,
    /// Connected, but no answer came.
    Dropped(String),
}

#[derive(Debug, Clone)]
pub(crate) struct Sample {
    pub(crate) conn: usize,
    pub(crate) target: usize,
    pub(crate) sent: NaiveDateTime,
    pub(crate) answer: Answer,
}

pub(crate) struct Load {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// One task per connection, asking the `targets` in turn for its token every
/// [`PACE`] (`min_ttl` as given, else the API's default). A request nobody
/// answered is recorded and retried at once on the next target, or after a
/// short pause when there is only one.
pub(crate) fn start_load(
    targets: Vec<String>,
    tenants: Vec<String>,
    key: &str,
    min_ttl: Option<u32>,
) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(Mutex::new(Vec::new()));
    // A fresh connection per request: a refused or dropped request is then
    // the server's doing, never a race with an idle keep-alive connection.
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let query = min_ttl.map_or(String::new(), |s| format!("?min_ttl={s}"));
    let tasks = tenants
        .into_iter()
        .enumerate()
        .map(|(conn, tenant)| {
            let (stop, samples, client, targets) = (
                stop.clone(),
                samples.clone(),
                client.clone(),
                targets.clone(),
            );
            let (key, query) = (key.to_string(), query.clone());
            actix_web::rt::spawn(async move {
                let mut target = conn % targets.len();
                while !stop.load(Ordering::Relaxed) {
                    let sent = tether::db::now();
                    let url = format!(
                        "{}/api/v1/tenants/{tenant}/connections/acme/token{query}",
                        targets[target]
                    );
                    let answer = match client.get(url).bearer_auth(&key).send().await {
                        Ok(res) => {
                            let status = res.status().as_u16();
                            let body: serde_json::Value = res.json().await.unwrap_or_default();
                            let code = body["error"]["code"].as_str().unwrap_or_default();
                            Answer::Http(status, code.to_string())
                        }
                        Err(e) if e.is_connect() => Answer::Refused,
                        Err(e) => Answer::Dropped(causes(&e)),
                    };
                    let answered = matches!(answer, Answer::Http(..));
                    samples
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(Sample {
                            conn,
                            target,
                            sent,
                            answer,
                        });
                    target = (target + 1) % targets.len();
                    if answered {
                        tokio::time::sleep(PACE).await;
                    } else if targets.len() == 1 {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            })
        })
        .collect();
    Load {
        stop,
        samples,
        tasks,
    }
}

/// An error and its causes, on one line.
fn causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

impl Load {
    pub(crate) async fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        let samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        samples.clone()
    }
}

/// Answers by kind, for the figures: `200=.. 409 needs_reconnect=.. refused=..`.
pub(crate) fn tally<'a>(samples: impl Iterator<Item = &'a Sample>) -> String {
    let mut by: BTreeMap<String, usize> = BTreeMap::new();
    for s in samples {
        let k = match &s.answer {
            Answer::Http(200, _) => "200".to_string(),
            Answer::Http(status, code) => format!("{status} {code}"),
            Answer::Refused => "refused".to_string(),
            Answer::Dropped(_) => "dropped".to_string(),
        };
        *by.entry(k).or_default() += 1;
    }
    by.iter()
        .map(|(k, n)| format!("{k}={n}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// [`tally`] per target, and the dropped requests' errors.
pub(crate) fn per_target(samples: &[Sample], names: &[&str]) -> String {
    let mut out: Vec<String> = names
        .iter()
        .enumerate()
        .map(|(t, name)| {
            format!(
                "{name}: {}",
                tally(samples.iter().filter(|s| s.target == t))
            )
        })
        .collect();
    let dropped: Vec<&str> = samples
        .iter()
        .filter_map(|s| match &s.answer {
            Answer::Dropped(e) => Some(e.as_str()),
            _ => None,
        })
        .collect();
    if !dropped.is_empty() {
        out.push(format!("dropped: {dropped:?}"));
    }
    out.join("; ")
}
