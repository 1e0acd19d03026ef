//! A provider's token endpoint that rotates refresh tokens (or keeps them),
//! revokes the whole grant when a retired one comes back, and keeps a ledger
//! of every refresh token it was sent.

use super::{invalid_grant, FakeProvider};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, Request, Respond, ResponseTemplate};

#[derive(Default)]
struct Ledger {
    /// Refresh token -> (grant, still live).
    tokens: HashMap<String, (String, bool)>,
    /// Grants revoked because a retired refresh token came back.
    revoked: HashSet<String>,
    /// Every refresh token received, in order.
    seen: Vec<String>,
    /// Retired refresh tokens that came back.
    reuses: Vec<String>,
    /// Refresh tokens it never issued.
    unknown: Vec<String>,
    /// Grant -> its live refresh token.
    live: HashMap<String, String>,
    issued: u64,
}

struct RotatingInner {
    ledger: Mutex<Ledger>,
    delay: Mutex<Duration>,
    /// An outage: requests hang and are never acted on (the provider never
    /// saw them, as far as its grants go).
    stalled: AtomicBool,
    /// Whether each refresh retires the refresh token and issues a new one.
    rotate: bool,
}

/// The token endpoint of a provider that rotates refresh tokens (or, with
/// `rotate` false, keeps them) and revokes the whole grant on reuse.
#[derive(Clone)]
pub struct Rotating(Arc<RotatingInner>);

impl Rotating {
    pub fn new(rotate: bool) -> Rotating {
        Rotating(Arc::new(RotatingInner {
            ledger: Mutex::new(Ledger::default()),
            delay: Mutex::new(Duration::ZERO),
            stalled: AtomicBool::new(false),
            rotate,
        }))
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.0.ledger.lock().unwrap()
    }

    /// Mounts it as the refresh grant of `fake`'s token endpoint.
    pub async fn mount(&self, fake: &FakeProvider) {
        Mock::given(method("POST"))
            .and(path("/token"))
            .and(body_string_contains("grant_type=refresh_token"))
            .respond_with(self.clone())
            .named("rotating refresh")
            .mount(&fake.server)
            .await;
    }

    /// Issues a new grant whose live refresh token is `rt`.
    pub fn grant(&self, rt: &str) {
        let mut l = self.ledger();
        l.tokens.insert(rt.to_string(), (rt.to_string(), true));
        l.live.insert(rt.to_string(), rt.to_string());
    }

    pub fn set_delay(&self, delay: Duration) {
        *self.0.delay.lock().unwrap() = delay;
    }

    /// While stalled, every refresh hangs for 3 s without being acted on.
    pub fn set_stalled(&self, stalled: bool) {
        self.0.stalled.store(stalled, Ordering::SeqCst);
    }

    /// Every refresh token received, in order.
    pub fn sent(&self) -> Vec<String> {
        self.ledger().seen.clone()
    }

    /// Refresh requests received.
    pub fn calls(&self) -> usize {
        self.ledger().seen.len()
    }

    /// How often `rt` was sent.
    pub fn seen(&self, rt: &str) -> usize {
        self.ledger().seen.iter().filter(|s| *s == rt).count()
    }

    pub fn reuses(&self) -> Vec<String> {
        self.ledger().reuses.clone()
    }

    pub fn unknown(&self) -> Vec<String> {
        self.ledger().unknown.clone()
    }

    pub fn revoked(&self) -> usize {
        self.ledger().revoked.len()
    }

    /// The live refresh token of the grant first issued as `first_rt`.
    pub fn live(&self, first_rt: &str) -> Option<String> {
        self.ledger().live.get(first_rt).cloned()
    }
}

impl Respond for Rotating {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let rt = url::form_urlencoded::parse(&request.body)
            .find(|(k, _)| k == "refresh_token")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        if self.0.stalled.load(Ordering::SeqCst) {
            return invalid_grant().set_delay(Duration::from_secs(3));
        }
        let delay = *self.0.delay.lock().unwrap();
        let mut l = self.ledger();
        l.seen.push(rt.clone());
        let answer = match l.tokens.get(&rt).cloned() {
            Some((grant, _)) if l.revoked.contains(&grant) => invalid_grant(),
            Some((grant, true)) => {
                l.issued += 1;
                let n = l.issued;
                let mut body = serde_json::json!({
                    "access_token": format!("at-{n}"),
                    "token_type": "Bearer",
                    "expires_in": 3600,
                    "scope": "contacts.read",
                });
                if self.0.rotate {
                    let new_rt = format!("rt-{n}");
                    l.tokens.insert(rt.clone(), (grant.clone(), false));
                    l.tokens.insert(new_rt.clone(), (grant.clone(), true));
                    l.live.insert(grant, new_rt.clone());
                    body["refresh_token"] = new_rt.into();
                }
                ResponseTemplate::new(200).set_body_json(body)
            }
            Some((grant, false)) => {
                // Reuse of a retired refresh token: the whole grant goes.
                l.reuses.push(rt);
                l.revoked.insert(grant.clone());
                l.live.remove(&grant);
                invalid_grant()
            }
            None => {
                l.unknown.push(rt);
                invalid_grant()
            }
        };
        answer.set_delay(delay)
    }
}
