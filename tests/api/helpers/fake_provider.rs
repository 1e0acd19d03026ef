//! The `acme` provider faked at the HTTP level (a wiremock server), declared
//! to Tether through a real providers file: the requests it received, and
//! apps, or further instances on one database, configured against it.

use super::{settings_for, spawn_app_with, Backend, TestApp, TestDb};
use std::sync::Arc;
use tether::app::App;
use tether::db::models::connection::Connection;
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, Request, ResponseTemplate};

/// An OAuth provider faked at the HTTP level, configured into Tether through a
/// real providers file as `acme`.
pub struct FakeProvider {
    pub server: wiremock::MockServer,
}

pub const ACME_ISSUER: &str = "https://auth.acme.example";

impl FakeProvider {
    pub async fn start() -> FakeProvider {
        FakeProvider {
            server: wiremock::MockServer::start().await,
        }
    }

    /// The providers file declaring `acme` against this server.
    pub fn providers_toml(&self, client_auth: &str) -> String {
        let base = self.server.uri();
        format!(
            r#"
[providers.acme]
display_name = "Acme CRM"
authorize_url = "{base}/authorize"
token_url = "{base}/token"
revocation_url = "{base}/revoke"
userinfo_url = "{base}/me"
account_id = "/sub"
account_name = "/name"
issuer = "{ACME_ISSUER}"
scopes = ["contacts.read", "contacts.write"]
client_auth = "{client_auth}"
keep_fields = ["locationId"]
api_base_url = "{base}/api"
"#
        )
    }

    /// Every request it received, in order.
    pub async fn requests(&self) -> Vec<Request> {
        self.server
            .received_requests()
            .await
            .expect("the fake provider records requests")
    }

    /// How many requests it received, on any path.
    pub async fn calls(&self) -> usize {
        self.requests().await.len()
    }

    /// How many requests it received on `path` (`/token`, `/revoke`, `/api/...`).
    pub async fn calls_to(&self, path: &str) -> usize {
        self.requests()
            .await
            .iter()
            .filter(|r| r.url.path() == path)
            .count()
    }

    /// How many refresh grants its token endpoint received.
    pub async fn refresh_calls(&self) -> usize {
        self.requests()
            .await
            .iter()
            .filter(|r| String::from_utf8_lossy(&r.body).contains("grant_type=refresh_token"))
            .count()
    }
}

/// The token endpoint's answer to a grant it no longer honours.
pub fn invalid_grant() -> ResponseTemplate {
    ResponseTemplate::new(400).set_body_json(serde_json::json!({ "error": "invalid_grant" }))
}

/// Writes `toml` as `db`'s providers file (`providers.toml` in its data
/// dir); returns its path.
pub fn write_providers(db: &TestDb, toml: &str) -> String {
    let file = db.data_dir().join("providers.toml");
    std::fs::write(&file, toml).unwrap();
    file.display().to_string()
}

/// The settings that enable `acme` from the providers file `file`, with its
/// client credentials.
pub fn acme_vars(file: &str) -> [(&'static str, &str); 3] {
    [
        ("TETHER_PROVIDERS_FILE", file),
        ("ACME_CLIENT_ID", "acme-client"),
        ("ACME_CLIENT_SECRET", "acme-secret-value"),
    ]
}

/// A running app on `db` with `acme` declared by the providers file `toml`;
/// `extra` adds settings.
pub async fn spawn_app_with_providers(db: TestDb, toml: &str, extra: &[(&str, &str)]) -> TestApp {
    let file = write_providers(&db, toml);
    let mut vars = acme_vars(&file).to_vec();
    vars.extend_from_slice(extra);
    spawn_app_with(db, &vars).await
}

/// A running app with `acme` enabled against `fake` (client auth `post` or `basic`).
pub async fn spawn_app_with_provider(
    backend: Backend,
    fake: &FakeProvider,
    client_auth: &str,
) -> TestApp {
    spawn_app_with_providers(TestDb::new(backend), &fake.providers_toml(client_auth), &[]).await
}

/// A running app with `acme` against `fake` (client auth `post`);
/// `toml_extra` is appended to acme's providers-file table and `extra` to the
/// settings.
pub async fn spawn_app_with_acme(
    backend: Backend,
    fake: &FakeProvider,
    toml_extra: &str,
    extra: &[(&str, &str)],
) -> TestApp {
    let toml = format!("{}{toml_extra}\n", fake.providers_toml("post"));
    spawn_app_with_providers(TestDb::new(backend), &toml, extra).await
}

/// An app whose token endpoint answers every refresh with `answer`, and one
/// tenant `acme` with an expired connection (refresh token `rt-0`, due); with
/// the fake and a global API key.
pub async fn failing(
    backend: Backend,
    answer: ResponseTemplate,
    extra: &[(&str, &str)],
) -> (TestApp, FakeProvider, Connection, String) {
    let fake = FakeProvider::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_string_contains("grant_type=refresh_token"))
        .respond_with(answer)
        .mount(&fake.server)
        .await;
    let app = spawn_app_with_acme(backend, &fake, "", extra).await;
    let t = app.ensure_tenant("acme");
    let c = app.seed(&t.id, "acct-1", "rt-0", -60, -1);
    let key = app.api_key(None, false);
    (app, fake, c, key)
}

/// Settings for another instance on `db`, with `db`'s providers file (the
/// scheduler off, as in every test app).
pub fn instance_settings(db: &TestDb, extra: &[(&str, &str)]) -> tether::config::Settings {
    let file = db.data_dir().join("providers.toml").display().to_string();
    let mut vars = acme_vars(&file).to_vec();
    vars.push(("TETHER_REFRESH_ENABLED", "false"));
    vars.extend_from_slice(extra);
    settings_for(db, &vars)
}

impl TestApp {
    /// A second Tether server on this app's database and providers file,
    /// with `extra` settings: its address and state.
    pub async fn second_instance(&self, extra: &[(&str, &str)]) -> (String, Arc<App>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let mut vars = vec![("TETHER_PUBLIC_URL", address.as_str())];
        vars.extend_from_slice(extra);
        let ctx = tether::startup::prepare(instance_settings(&self.db, &vars))
            .expect("prepare the second instance");
        let app = tether::startup::Application::build_on(ctx, listener).expect("serve");
        let state = app.state();
        actix_web::rt::spawn(app.run_until_stopped());
        (address, state)
    }
}
