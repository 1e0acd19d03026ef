//! The provider: a token endpoint as strict as the strictest real one, with
//! a ledger of every refresh it saw (when, from which process, with what
//! outcome), which the tests' verdicts are read from.

use super::{CLIENT_ID, CLIENT_SECRET};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A live refresh token: a new access token and a new refresh token.
    Rotated,
    /// A retired refresh token came back: the whole grant is revoked.
    Reuse,
    /// Any refresh token of a grant revoked before.
    Revoked,
    /// A refresh token it never issued.
    Unknown,
    /// Missing or wrong client credentials in the form.
    BadClient,
    /// Not a form, not `grant_type=refresh_token`, or no refresh token.
    BadRequest,
}

#[derive(Debug, Clone)]
pub(crate) struct Call {
    /// When the request was received (the answer leaves `delay` later).
    pub(crate) at: Instant,
    /// Which instance sent it (the `via` query parameter of its token URL).
    pub(crate) via: String,
    pub(crate) grant: Option<String>,
    pub(crate) outcome: Outcome,
}

#[derive(Default)]
struct Ledger {
    /// Refresh token -> (grant, still live).
    tokens: HashMap<String, (String, bool)>,
    revoked: HashSet<String>,
    /// Grant -> its live refresh token.
    live: HashMap<String, String>,
    calls: Vec<Call>,
    issued: u64,
}

struct StrictInner {
    ledger: Mutex<Ledger>,
    delay: Duration,
    expires_in: i64,
}

/// Rotates the refresh token on every refresh, revokes the whole grant when a
/// retired one comes back (`400 invalid_grant`), insists on the client
/// credentials in the form body, issues `expires_in`-second access tokens and
/// answers `delay` after receiving. The rotation happens on receipt: an answer
/// that dies on its way (the caller was killed) leaves the grant rotated.
#[derive(Clone)]
pub(crate) struct Strict(Arc<StrictInner>);

fn oauth_error(status: u16, error: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(serde_json::json!({ "error": error }))
}

impl Strict {
    pub(crate) async fn start(delay: Duration, expires_in: i64) -> (Strict, MockServer) {
        let server = MockServer::builder()
            .disable_request_recording()
            .start()
            .await;
        let strict = Strict(Arc::new(StrictInner {
            ledger: Mutex::new(Ledger::default()),
            delay,
            expires_in,
        }));
        Mock::given(method("POST"))
            .and(path("/token"))
            .respond_with(strict.clone())
            .named("strict token endpoint")
            .mount(&server)
            .await;
        (strict, server)
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.0.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a grant whose live refresh token is `rt` (the grant's name).
    pub(crate) fn grant(&self, rt: &str) {
        let mut l = self.ledger();
        l.tokens.insert(rt.to_string(), (rt.to_string(), true));
        l.live.insert(rt.to_string(), rt.to_string());
    }

    pub(crate) fn calls(&self) -> Vec<Call> {
        self.ledger().calls.clone()
    }

    pub(crate) fn live(&self) -> HashMap<String, String> {
        self.ledger().live.clone()
    }

    /// The grant `rt` was issued for (live or retired), if it issued it.
    pub(crate) fn issued_for(&self, rt: &str) -> Option<String> {
        self.ledger().tokens.get(rt).map(|(grant, _)| grant.clone())
    }

    /// Requests from `via` received in `(from, to]`.
    pub(crate) fn received(&self, via: Option<&str>, from: Instant, to: Instant) -> usize {
        self.ledger()
            .calls
            .iter()
            .filter(|c| via.is_none_or(|v| c.via == v) && c.at > from && c.at <= to)
            .count()
    }

    /// Requests from `via` whose answer has not left yet.
    pub(crate) fn in_flight(&self, via: &str) -> usize {
        let now = Instant::now();
        self.received(Some(via), now.checked_sub(self.0.delay).unwrap_or(now), now)
    }
}

impl Respond for Strict {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let at = Instant::now();
        let form: HashMap<String, String> = url::form_urlencoded::parse(&request.body)
            .into_owned()
            .collect();
        let via = request
            .url
            .query_pairs()
            .find(|(k, _)| k == "via")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        let is_form = request
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        let field = |k: &str| form.get(k).map(String::as_str);
        let rt = field("refresh_token").unwrap_or_default().to_string();
        let mut l = self.ledger();
        let (outcome, grant, answer) =
            if !is_form || field("grant_type") != Some("refresh_token") || rt.is_empty() {
                (
                    Outcome::BadRequest,
                    None,
                    oauth_error(400, "invalid_request"),
                )
            } else if field("client_id") != Some(CLIENT_ID)
                || field("client_secret") != Some(CLIENT_SECRET)
            {
                (Outcome::BadClient, None, oauth_error(401, "invalid_client"))
            } else {
                match l.tokens.get(&rt).cloned() {
                    None => (Outcome::Unknown, None, oauth_error(400, "invalid_grant")),
                    Some((grant, _)) if l.revoked.contains(&grant) => (
                        Outcome::Revoked,
                        Some(grant),
                        oauth_error(400, "invalid_grant"),
                    ),
                    Some((grant, false)) => {
                        l.revoked.insert(grant.clone());
                        l.live.remove(&grant);
                        (
                            Outcome::Reuse,
                            Some(grant),
                            oauth_error(400, "invalid_grant"),
                        )
                    }
                    Some((grant, true)) => {
                        l.issued += 1;
                        let n = l.issued;
                        let new_rt = format!("{grant}-rt{n}");
                        l.tokens.insert(rt.clone(), (grant.clone(), false));
                        l.tokens.insert(new_rt.clone(), (grant.clone(), true));
                        l.live.insert(grant.clone(), new_rt.clone());
                        let body = serde_json::json!({
                            "access_token": format!("at-{n}"),
                            "token_type": "Bearer",
                            "expires_in": self.0.expires_in,
                            "refresh_token": new_rt,
                            "scope": "contacts.read",
                        });
                        (
                            Outcome::Rotated,
                            Some(grant),
                            ResponseTemplate::new(200).set_body_json(body),
                        )
                    }
                }
            };
        l.calls.push(Call {
            at,
            via,
            grant,
            outcome,
        });
        answer.set_delay(self.0.delay)
    }
}

/// Waits up to `max` for a refresh from `via` to be at the provider, unanswered.
pub(crate) async fn refresh_in_flight(provider: &Strict, via: &str, max: Duration) -> bool {
    let deadline = Instant::now() + max;
    while Instant::now() < deadline {
        if provider.in_flight(via) > 0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    false
}

/// Provider calls Tether should never make, by outcome.
pub(crate) fn malformed(calls: &[Call]) -> Vec<Outcome> {
    calls
        .iter()
        .map(|c| c.outcome)
        .filter(|o| {
            matches!(
                o,
                Outcome::BadClient | Outcome::BadRequest | Outcome::Unknown
            )
        })
        .collect()
}
