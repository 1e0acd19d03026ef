//! Another browser beside the app's own client (its own cookie jar,
//! redirects off), and the HTML error page a browser is shown.

use super::{csrf_in, TestApp};

/// A new browser's client: its own cookie jar, redirects not followed.
pub fn new_browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .build()
        .unwrap()
}

/// Another browser: its own cookie jar, redirects off.
pub struct Browser {
    pub client: reqwest::Client,
    pub address: String,
    /// Its cookies (to copy a session cookie out, as a thief would).
    pub jar: std::sync::Arc<reqwest::cookie::Jar>,
}

impl Browser {
    pub fn new(app: &TestApp) -> Browser {
        let jar = std::sync::Arc::new(reqwest::cookie::Jar::default());
        Browser {
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .cookie_provider(jar.clone())
                .build()
                .unwrap(),
            address: app.address.clone(),
            jar,
        }
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .unwrap()
    }

    pub async fn csrf(&self, path: &str) -> String {
        let html = self.get(path).await.text().await.unwrap();
        csrf_in(&html).unwrap_or_else(|| panic!("no csrf field on {path}: {html}"))
    }

    pub async fn login(&self, email: &str, password: &str) -> reqwest::Response {
        let csrf = self.csrf("/login").await;
        self.post_form(
            "/login",
            &[("email", email), ("password", password), ("csrf", &csrf)],
        )
        .await
    }

    pub async fn post_form(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.address))
            .form(form)
            .send()
            .await
            .unwrap()
    }
}

/// Asserts an HTML error page with `status` and machine `code`; returns its body.
pub async fn assert_error_page(res: reqwest::Response, status: u16, code: &str) -> String {
    let got = res.status().as_u16();
    let content_type = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = res.text().await.unwrap();
    assert_eq!(got, status, "{body}");
    assert!(content_type.starts_with("text/html"), "{content_type}");
    assert!(
        body.contains(&format!("<code>{code}</code>")),
        "expected code {code}: {body}"
    );
    body
}
