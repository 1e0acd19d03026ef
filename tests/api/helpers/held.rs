//! A token endpoint in front of a fake provider's that holds each refresh's
//! answer until the test lets it go: the provider has acted on the request
//! (a rotating one has retired the refresh token it was sent), and its
//! answer is on the way. Every other request passes straight through. The
//! wait is a semaphore, not a delay: what the test does meanwhile happens
//! for certain before the answer arrives.

use super::FakeProvider;
use actix_web::{web, HttpRequest, HttpResponse};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

struct Inner {
    upstream: String,
    client: reqwest::Client,
    /// Answers the provider gave that wait to be let go.
    held: AtomicUsize,
    release: Semaphore,
}

/// The token endpoint Tether is configured with, holding refresh answers.
pub struct HeldAnswers {
    pub address: String,
    inner: Arc<Inner>,
}

impl HeldAnswers {
    /// Starts it in front of `fake` (on 127.0.0.1, port 0).
    pub async fn start(fake: &FakeProvider) -> HeldAnswers {
        let inner = Arc::new(Inner {
            upstream: fake.server.uri(),
            client: reqwest::Client::new(),
            held: AtomicUsize::new(0),
            release: Semaphore::new(0),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let data = web::Data::from(inner.clone());
        let server = actix_web::HttpServer::new(move || {
            actix_web::App::new()
                .app_data(data.clone())
                .default_service(web::to(pass))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .expect("listen")
        .run();
        actix_web::rt::spawn(server);
        HeldAnswers { address, inner }
    }

    /// The providers file declaring `acme` against `fake`, with this as its
    /// token endpoint.
    pub fn providers_toml(&self, fake: &FakeProvider) -> String {
        let direct = format!("token_url = \"{}/token\"", fake.server.uri());
        let toml = fake.providers_toml("post");
        assert!(toml.contains(&direct), "{toml}");
        toml.replace(&direct, &format!("token_url = \"{}/token\"", self.address))
    }

    /// Refresh answers waiting to be let go.
    pub fn held(&self) -> usize {
        self.inner.held.load(Ordering::SeqCst)
    }

    /// Waits until `n` refresh answers are held, failing after 20 s.
    pub async fn until_held(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.held() < n {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {n} held answers ({} held)",
                self.held()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Lets the oldest held answer (or the next one to come) go.
    pub fn release_one(&self) {
        self.inner.release.add_permits(1);
    }
}

/// Passes a request on to the fake provider; holds its answer if it is a refresh's.
async fn pass(inner: web::Data<Inner>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let url = format!("{}{}", inner.upstream, req.uri());
    let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes()).unwrap();
    let mut forward = inner.client.request(method, url);
    for name in ["content-type", "authorization", "accept"] {
        if let Some(value) = req.headers().get(name) {
            forward = forward.header(name, value.as_bytes());
        }
    }
    let refresh = String::from_utf8_lossy(&body).contains("grant_type=refresh_token");
    let answer = forward
        .body(body.to_vec())
        .send()
        .await
        .expect("the fake provider answers");
    let status = answer.status().as_u16();
    let content_type = answer
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let bytes = answer.bytes().await.expect("the fake provider's answer");
    if refresh {
        inner.held.fetch_add(1, Ordering::SeqCst);
        inner
            .release
            .acquire()
            .await
            .expect("the semaphore is never closed")
            .forget();
        inner.held.fetch_sub(1, Ordering::SeqCst);
    }
    let mut out = HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap());
    if let Some(ct) = content_type {
        out.insert_header(("content-type", ct));
    }
    out.body(bytes)
}
