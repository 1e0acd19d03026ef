//! Oversized and badly encoded input (a 100 kB state, invalid UTF-8, NUL
//! bytes, a megabyte form, a 2000-character password) gets a clear 4xx,
//! changes nothing, and leaves the server alive and the admin signed in.

use super::forbid_token_requests;
use crate::backend_tests;
use crate::helpers::{signed_in, start, Backend, TestApp, OWNER};

backend_tests!(oversized_and_badly_encoded_input_gets_a_clear_4xx_and_changes_nothing,);

/// The status code of a GET sent over a plain socket, whatever its size.
fn raw_get(app: &TestApp, path: &str) -> u16 {
    use std::io::{Read, Write};
    let addr = app.address.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    // The server may answer and close before reading it all.
    let _ = stream.write_all(request.as_bytes());
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).unwrap();
    let line = String::from_utf8_lossy(&head).to_string();
    line[9..12].parse().unwrap_or_else(|_| panic!("{line}"))
}

async fn oversized_and_badly_encoded_input_gets_a_clear_4xx_and_changes_nothing(backend: Backend) {
    let (app, fake) = signed_in(backend, "post").await;
    start(&app, &[]).await;
    forbid_token_requests(&fake).await;
    let before = app.snapshot();
    let big_state = "s".repeat(100 * 1024);
    let big_return_to = format!("/{}", "r".repeat(10 * 1024));
    // Longer than any client library will send: spoken over a raw socket.
    let status = raw_get(
        &app,
        &format!("/oauth/acme/callback?code=the-code&state={big_state}"),
    );
    assert!((400..500).contains(&status), "100 kB state: {status}");
    assert_eq!(app.get("/healthz").await.status(), 200);
    let gets = [
        format!(
            "/oauth/acme/callback?code=the-code&state={}",
            "s".repeat(40 * 1024)
        ),
        "/oauth/acme/callback?code=the-code&state=%FF%FE".to_string(),
        "/oauth/acme/callback?code=%FF%FE&state=%FF%FE%00".to_string(),
        "/oauth/acme/callback?code=the-code&state=%".to_string(),
        "/oauth/%00/callback?state=x".to_string(),
        "/oauth/%FF%FE/status".to_string(),
        "/settings/integrations/cards/%00".to_string(),
        "/login?next=%FF%FE".to_string(),
    ];
    for path in &gets {
        let res = app.get(path).await;
        let status = res.status();
        let body = res.text().await.unwrap_or_default();
        let shown: String = path.chars().take(80).collect();
        // /login renders its form (the bad `next` is dropped); everything else is refused.
        if path.starts_with("/login") {
            assert!(status == 200 || status.is_client_error(), "{shown}");
        } else {
            assert!(status.is_client_error(), "{shown}: {status} {body}");
        }
        assert_eq!(
            app.get("/healthz").await.status(),
            200,
            "alive after {shown}"
        );
    }

    let csrf = app.csrf("/settings/integrations").await;
    // Connect's form and the SSO form, with bad fields.
    for (path, body) in [
        (
            "/oauth/acme/authorize",
            format!("csrf={csrf}&return_to={big_return_to}"),
        ),
        (
            "/oauth/acme/authorize",
            format!("csrf={csrf}&return_to=%FF%FE"),
        ),
        (
            "/oauth/acme/authorize",
            format!("csrf={csrf}&return_to=%FF%FE//evil.example"),
        ),
        (
            "/oauth/acme/authorize",
            format!("csrf={csrf}&return_to=/a%00b"),
        ),
        ("/oauth/acme%00/authorize", format!("csrf={csrf}")),
        ("/sso", "token=%FF%FE".to_string()),
    ] {
        let res = app.post_raw_form(path, body).await;
        let status = res.status();
        assert!(status.is_client_error(), "{path}: {status}");
        assert!(res.headers().get("location").is_none(), "{path}");
    }
    let mut non_utf8 = b"email=".to_vec();
    non_utf8.extend_from_slice(&[0xff, 0xfe, 0xfd]);
    non_utf8.extend_from_slice(format!("&password=%FF%FE&csrf={csrf}").as_bytes());
    let mut raw_non_utf8 = b"email=a@b.example&password=".to_vec();
    raw_non_utf8.extend_from_slice(&[0xc3, 0x28, 0xa0, 0xa1]);
    raw_non_utf8.extend_from_slice(format!("&csrf={csrf}").as_bytes());
    let huge = format!(
        "email=a@b.example&password={}&csrf={csrf}",
        "p".repeat(1024 * 1024)
    )
    .into_bytes();
    for body in [non_utf8, raw_non_utf8, huge] {
        let res = app
            .client
            .post(format!("{}/login", app.address))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = res.status();
        assert!(
            status.is_client_error(),
            "{status} {}",
            res.text().await.unwrap_or_default()
        );
        assert_eq!(app.get("/healthz").await.status(), 200);
    }
    // A password far longer than any real one is refused before hashing.
    let long = "p".repeat(2000);
    let res = app
        .post_form(
            "/login",
            &[("email", OWNER), ("password", &long), ("csrf", &csrf)],
        )
        .await;
    assert!(res.status().is_client_error(), "{:?}", res.status());

    assert_eq!(app.snapshot(), before);
    assert_eq!(fake.calls_to("/token").await, 0);
    // Still signed in and working.
    assert_eq!(app.get("/settings/integrations").await.status(), 200);
}
