//! The JSON API as a service calls it: a bearer API key, no cookies, no
//! redirects followed; an answer read as (status, JSON body), an error answer
//! as (status, error code); a connect link asked for as the CRM's backend
//! does.

use super::TestApp;
use reqwest::Method;
use serde_json::Value;

/// A client like the CRM's services: no cookies, no redirects followed.
pub fn service() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

impl TestApp {
    /// `method path` with `key` as bearer and `body`, if any, as JSON, from
    /// a [`service`] client (not this app's browser, nor its cookies).
    pub async fn api(
        &self,
        method: Method,
        path: &str,
        key: &str,
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut req = service()
            .request(method, format!("{}{path}", self.address))
            .bearer_auth(key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send().await.unwrap()
    }

    /// `GET path` with `key` as bearer.
    pub async fn api_get(&self, path: &str, key: &str) -> reqwest::Response {
        self.api(Method::GET, path, key, None).await
    }

    /// `POST path` with `key` as bearer and `body`, if any.
    pub async fn api_post(&self, path: &str, key: &str, body: Option<Value>) -> reqwest::Response {
        self.api(Method::POST, path, key, body).await
    }

    /// `PUT body` to `path` with `key` as bearer.
    pub async fn api_put(&self, path: &str, key: &str, body: Value) -> reqwest::Response {
        self.api(Method::PUT, path, key, Some(body)).await
    }

    /// `DELETE path` with `key` as bearer.
    pub async fn api_delete(&self, path: &str, key: &str) -> reqwest::Response {
        self.api(Method::DELETE, path, key, None).await
    }

    /// `GET path` with `key`: the status and the JSON body.
    pub async fn get_json(&self, path: &str, key: &str) -> (u16, Value) {
        json_of(self.api_get(path, key).await).await
    }

    /// `POST path` with `key` and `body`, if any: the status and the JSON body.
    pub async fn post_json(&self, path: &str, key: &str, body: Option<Value>) -> (u16, Value) {
        json_of(self.api_post(path, key, body).await).await
    }

    /// `PUT body` to `path` with `key`: the status and the JSON body.
    pub async fn put_json(&self, path: &str, key: &str, body: Value) -> (u16, Value) {
        json_of(self.api_put(path, key, body).await).await
    }

    /// `DELETE path` with `key`: the status and the JSON body.
    pub async fn delete_json(&self, path: &str, key: &str) -> (u16, Value) {
        json_of(self.api_delete(path, key).await).await
    }

    /// A connect link for `provider` in tenant `acme`, as the CRM's backend
    /// asks for one with `key`: its URL.
    pub async fn connect_link(&self, key: &str, provider: &str) -> String {
        let res = self
            .api_post(
                "/api/v1/tenants/acme/connect-links",
                key,
                Some(serde_json::json!({ "provider": provider })),
            )
            .await;
        assert_eq!(res.status(), 201);
        let body: Value = res.json().await.unwrap();
        body["url"].as_str().unwrap().to_string()
    }
}

/// The status and the JSON body of an answer; fails, showing the body, when
/// the body is not JSON.
pub async fn json_of(res: reqwest::Response) -> (u16, Value) {
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("{status}: {text}")),
    )
}

/// The status and error code of an error answer, which must be JSON with a
/// non-empty message.
pub async fn error_of(res: reqwest::Response) -> (u16, String) {
    let status = res.status().as_u16();
    let content_type = res.headers()["content-type"].to_str().unwrap().to_string();
    let body = res.text().await.unwrap();
    assert!(
        content_type.starts_with("application/json"),
        "{status} {content_type}: {body}"
    );
    let v: Value = serde_json::from_str(&body).unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    (status, v["error"]["code"].as_str().unwrap().to_string())
}
