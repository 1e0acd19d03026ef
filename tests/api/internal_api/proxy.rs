//! The proxy: it forwards method, query and body with the connection's
//! token and never the API key, refreshes once and retries on a provider 401,
//! answers a provider's redirect with a 502 (neither followed nor passed on),
//! cuts off bodies over the configured size, and refuses paths that would
//! escape the provider's API base before any request is sent.

use super::{connected, mount_refresh, API};
use crate::backend_tests;
use crate::helpers::{
    error_of, spawn_app_with_providers, Backend, FakeProvider, TestApp, TestDb, ACCOUNT,
};
use serde_json::{json, Value};
use wiremock::matchers::{body_json, header, method, path};
use wiremock::{Mock, ResponseTemplate};

backend_tests!(
    the_proxy_forwards_method_query_and_body_with_the_connections_token_not_the_api_key,
    a_provider_401_through_the_proxy_refreshes_once_and_retries_with_the_new_token,
    a_provider_redirect_through_the_proxy_is_a_502_neither_followed_nor_passed_on,
    a_provider_body_over_the_cap_is_a_502_and_one_at_the_cap_passes,
    an_endless_provider_body_is_cut_off_at_the_cap,
    proxy_paths_that_escape_the_api_base_are_400_and_reach_no_provider,
    the_proxy_passes_back_the_providers_rate_limit_headers_and_no_others,
);

/// Sends `GET {target}` byte for byte, as a client that does not normalise
/// dot segments would (reqwest resolves `..` and `%2e%2e` before sending).
async fn raw_get(app: &TestApp, target: &str, key: &str) -> (u16, String) {
    let addr = app.address.trim_start_matches("http://").to_string();
    let request = format!(
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n"
    );
    actix_web::rt::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(&addr).unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut out = Vec::new();
        stream.read_to_end(&mut out).unwrap();
        let out = String::from_utf8_lossy(&out).into_owned();
        let status = out
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status line: {out}"));
        (status, out)
    })
    .await
    .unwrap()
}

async fn the_proxy_forwards_method_query_and_body_with_the_connections_token_not_the_api_key(
    backend: Backend,
) {
    let (app, fake, key) = connected(backend).await;
    Mock::given(method("GET"))
        .and(path("/api/contacts"))
        .and(wiremock::matchers::query_param("limit", "5"))
        .and(header("authorization", "Bearer at-1"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            r#"{"contacts":[{"id":"c1"}]}"#,
            "application/json; charset=utf-8",
        ))
        .expect(1)
        .mount(&fake.server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/contacts"))
        .and(header("authorization", "Bearer at-1"))
        .and(header("content-type", "application/json"))
        .and(body_json(json!({"name": "Ada"})))
        .respond_with(
            ResponseTemplate::new(201).set_body_raw(r#"{"id":"c2"}"#, "application/vnd.acme+json"),
        )
        .expect(1)
        .mount(&fake.server)
        .await;

    let res = app
        .api_get(&format!("{API}/acme/proxy/acme/contacts?limit=5"), &key)
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-type"],
        "application/json; charset=utf-8"
    );
    assert_eq!(res.text().await.unwrap(), r#"{"contacts":[{"id":"c1"}]}"#);

    let res = app
        .api_post(
            &format!("{API}/acme/proxy/acme/contacts"),
            &key,
            Some(json!({"name": "Ada"})),
        )
        .await;
    assert_eq!(res.status(), 201);
    assert_eq!(res.headers()["content-type"], "application/vnd.acme+json");
    assert_eq!(res.text().await.unwrap(), r#"{"id":"c2"}"#);

    let proxied: Vec<_> = fake
        .requests()
        .await
        .into_iter()
        .filter(|r| r.url.path().starts_with("/api/"))
        .collect();
    assert_eq!(proxied.len(), 2);
    // It arrived at the fake provider, under its API base, with the query as sent.
    assert_eq!(proxied[0].url.path(), "/api/contacts");
    assert_eq!(proxied[0].url.query(), Some("limit=5"));
    for r in &proxied {
        assert_eq!(r.headers["authorization"], "Bearer at-1");
        for (name, value) in &r.headers {
            assert!(
                !String::from_utf8_lossy(value.as_bytes()).contains(&key),
                "the API key leaked to the provider in {name}"
            );
        }
        assert!(!String::from_utf8_lossy(&r.body).contains(&key));
    }
    assert_eq!(
        fake.calls_to("/token").await,
        1,
        "only the exchange: no refresh"
    );
}

async fn a_provider_401_through_the_proxy_refreshes_once_and_retries_with_the_new_token(
    backend: Backend,
) {
    let (app, fake, key) = connected(backend).await;
    Mock::given(method("GET"))
        .and(path("/api/contacts"))
        .and(header("authorization", "Bearer at-1"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({"error": "expired"})))
        .expect(1)
        .mount(&fake.server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/contacts"))
        .and(header("authorization", "Bearer at-2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"contacts": []})))
        .expect(1)
        .mount(&fake.server)
        .await;
    mount_refresh(&fake, "at-2").await;
    let res = app
        .api_get(&format!("{API}/acme/proxy/acme/contacts"), &key)
        .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body, json!({"contacts": []}));
    assert_eq!(
        fake.calls_to("/api/contacts").await,
        2,
        "one call, one retry"
    );
    assert_eq!(
        fake.calls_to("/token").await,
        2,
        "the exchange and one refresh"
    );
    let tokens = app
        .acme_account("acme", ACCOUNT)
        .tokens(&app.ctx.keys)
        .unwrap()
        .unwrap();
    assert_eq!(tokens.access_token.expose(), "at-2");
}

async fn a_provider_redirect_through_the_proxy_is_a_502_neither_followed_nor_passed_on(
    backend: Backend,
) {
    let (app, fake, key) = connected(backend).await;
    let elsewhere = format!("{}/api/elsewhere?code=leaked-code", fake.server.uri());
    for status in [301, 302, 303, 307, 308] {
        Mock::given(method("GET"))
            .and(path(format!("/api/moved-{status}")))
            .respond_with(
                ResponseTemplate::new(status).insert_header("location", elsewhere.as_str()),
            )
            .expect(1)
            .mount(&fake.server)
            .await;
    }
    Mock::given(method("GET"))
        .and(path("/api/elsewhere"))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&fake.server)
        .await;
    for status in [301, 302, 303, 307, 308] {
        let res = app
            .api_get(&format!("{API}/acme/proxy/acme/moved-{status}"), &key)
            .await;
        assert!(res.headers().get("location").is_none(), "{status}");
        assert_eq!(res.status(), 502, "{status}");
        let body = res.text().await.unwrap();
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v["error"]["code"], "provider_redirected",
            "{status}: {body}"
        );
        assert!(
            !body.contains("elsewhere") && !body.contains("leaked-code"),
            "{status}: the Location is not passed on: {body}"
        );
    }
    assert_eq!(fake.calls_to("/api/elsewhere").await, 0, "not followed");
}

/// An app with `acme` whose API base is `api_base` and a proxy cap of
/// `cap` bytes, tenant `acme` connected (access token `at-seed-rt-1`, fresh
/// for an hour) and an API key for it.
async fn capped(backend: Backend, api_base: &str, cap: &str) -> (TestApp, FakeProvider, String) {
    let fake = FakeProvider::start().await;
    let toml = fake.providers_toml("post").replace(
        &format!("api_base_url = \"{}/api\"", fake.server.uri()),
        &format!("api_base_url = \"{api_base}\""),
    );
    assert!(toml.contains(api_base));
    let app = spawn_app_with_providers(
        TestDb::new(backend),
        &toml,
        &[("TETHER_PROXY_MAX_BODY_BYTES", cap)],
    )
    .await;
    let tenant = app.ensure_tenant("acme");
    app.seed(&tenant.id, ACCOUNT, "rt-1", 3600, 3000);
    let key = app.api_key(Some("acme"), false);
    (app, fake, key)
}

async fn a_provider_body_over_the_cap_is_a_502_and_one_at_the_cap_passes(backend: Backend) {
    let fake_api = FakeProvider::start().await;
    let (app, _fake, key) =
        capped(backend, &format!("{}/api", fake_api.server.uri()), "1024").await;
    Mock::given(method("GET"))
        .and(path("/api/big"))
        .and(header("authorization", "Bearer at-seed-rt-1"))
        .respond_with(ResponseTemplate::new(200).set_body_string("x".repeat(1025)))
        .mount(&fake_api.server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/exact"))
        .respond_with(ResponseTemplate::new(200).set_body_string("y".repeat(1024)))
        .mount(&fake_api.server)
        .await;
    let res = app
        .api_get(&format!("{API}/acme/proxy/acme/big"), &key)
        .await;
    assert_eq!(
        error_of(res).await,
        (502, "provider_response_too_large".to_string())
    );
    let res = app
        .api_get(&format!("{API}/acme/proxy/acme/exact"), &key)
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "y".repeat(1024));
}

/// A provider that streams a chunked body without end (no Content-Length):
/// the proxy must stop reading at the cap, not wait for the end (it would
/// time out as `provider_unreachable` if it did).
async fn an_endless_provider_body_is_cut_off_at_the_cap(backend: Backend) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}/api", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        use std::io::{BufRead, BufReader, Write};
        let Ok((stream, _)) = listener.accept() else {
            return;
        };
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
            line.clear();
        }
        let mut out = stream;
        let _ = out.write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
        );
        let chunk = format!("{:x}\r\n{}\r\n", 1000, "z".repeat(1000));
        // Until Tether hangs up.
        while out.write_all(chunk.as_bytes()).is_ok() {}
    });
    let (app, _fake, key) = capped(backend, &base, "4096").await;
    let res = app
        .api_get(&format!("{API}/acme/proxy/acme/stream"), &key)
        .await;
    assert_eq!(
        error_of(res).await,
        (502, "provider_response_too_large".to_string())
    );
}

async fn proxy_paths_that_escape_the_api_base_are_400_and_reach_no_provider(backend: Backend) {
    let (app, fake, key) = connected(backend).await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(200))
        .mount(&fake.server)
        .await;
    let provider_calls = fake.calls().await;
    let proxy = format!("{API}/acme/proxy/acme");
    for tail in [
        "../token",
        "contacts/../../token",
        "%2e%2e/token",
        "%2E%2E/%2e%2e/token",
        "..%2Ftoken",
        "https://evil.example/x",
        "http:%2F%2Fevil.example/x",
        "//evil.example/x",
    ] {
        let (status, response) = raw_get(&app, &format!("{proxy}/{tail}"), &key).await;
        assert_eq!(status, 400, "{tail}: {response}");
        assert!(response.contains("invalid_path"), "{tail}: {response}");
    }
    assert_eq!(
        fake.calls().await,
        provider_calls,
        "no request reached the provider"
    );
}

/// A caller paces itself by the provider's budget: the rate-limit headers
/// come back in every platform's spelling; other headers (cookies, the
/// provider's own tracing) do not.
async fn the_proxy_passes_back_the_providers_rate_limit_headers_and_no_others(backend: Backend) {
    let (app, fake, key) = connected(backend).await;
    let limits = [
        ("x-hubspot-ratelimit-remaining", "99"),
        ("x-ratelimit-daily-remaining", "199990"),
        ("x-ratelimit-reset", "1700000000"),
        ("ratelimit", "limit=100, remaining=42, reset=30"),
        ("ratelimit-policy", "100;w=60"),
        (
            "x-app-usage",
            r#"{"call_count":28,"total_time":25,"total_cputime":25}"#,
        ),
    ];
    let mut answer = ResponseTemplate::new(200)
        .set_body_raw("{}", "application/json")
        .insert_header("set-cookie", "session=provider-side")
        .insert_header("x-provider-trace", "abc");
    for (name, value) in limits {
        answer = answer.insert_header(name, value);
    }
    Mock::given(method("GET"))
        .and(path("/api/contacts"))
        .respond_with(answer)
        .expect(1)
        .mount(&fake.server)
        .await;
    let res = app
        .api_get(&format!("{API}/acme/proxy/acme/contacts"), &key)
        .await;
    assert_eq!(res.status(), 200);
    for (name, value) in limits {
        assert_eq!(
            res.headers().get(name).map(|v| v.to_str().unwrap()),
            Some(value),
            "{name} passed back"
        );
    }
    assert!(res.headers().get("set-cookie").is_none());
    assert!(res.headers().get("x-provider-trace").is_none());
}
