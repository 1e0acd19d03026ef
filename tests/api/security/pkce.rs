//! PKCE: every flow of a PKCE provider (the demo provider too) sends an S256
//! challenge and, in the code exchange, the verifier that hashes to it; a
//! provider declared without PKCE gets neither.

use crate::backend_tests;
use crate::helpers::{
    query_param, signed_in, spawn_app_with_acme, start, tokens, Backend, FakeProvider,
    VerifierMatches, OWNER, PASSWORD,
};
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, ResponseTemplate};

backend_tests!(
    every_flow_of_a_pkce_provider_sends_an_s256_challenge_and_its_verifier,
    a_provider_without_pkce_gets_neither_challenge_nor_verifier,
);

async fn every_flow_of_a_pkce_provider_sends_an_s256_challenge_and_its_verifier(backend: Backend) {
    let (app, fake) = signed_in(backend, "post").await;
    // Two flows: each has its own verifier, and each verifier hashes to its challenge.
    let (state_1, challenge_1) = start(&app, &[]).await;
    let (state_2, challenge_2) = start(&app, &[("popup", "1")]).await;
    assert_ne!(challenge_1, challenge_2);
    assert!(challenge_1.len() >= 43, "{challenge_1}");
    for (challenge, access) in [(&challenge_1, "at-1"), (&challenge_2, "at-2")] {
        Mock::given(method("POST"))
            .and(path("/token"))
            .and(VerifierMatches(challenge.clone()))
            .respond_with(ResponseTemplate::new(200).set_body_json(tokens(
                access,
                Some("rt"),
                "3600".into(),
            )))
            .expect(1)
            .mount(&fake.server)
            .await;
    }
    Mock::given(method("GET"))
        .and(path("/me"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"sub": "acct-42", "name": "Main Street Dental"})),
        )
        .mount(&fake.server)
        .await;
    for state in [&state_2, &state_1] {
        let res = app
            .get(&format!("/oauth/acme/callback?code=the-code&state={state}"))
            .await;
        assert!(matches!(res.status().as_u16(), 200 | 303), "{res:?}");
    }
    for request in fake.requests().await {
        if request.url.path() == "/token" {
            let body = String::from_utf8_lossy(&request.body).to_string();
            assert!(body.contains("code_verifier="), "{body}");
        }
    }
    assert_eq!(fake.calls_to("/token").await, 2);

    // The built-in demo provider does PKCE too.
    let res = app.authorize("demo", &[]).await;
    assert_eq!(res.status(), 303);
    let location = res.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(
        query_param(&location, "code_challenge_method").as_deref(),
        Some("S256")
    );
    assert!(query_param(&location, "code_challenge").is_some_and(|c| c.len() >= 43));
}

async fn a_provider_without_pkce_gets_neither_challenge_nor_verifier(backend: Backend) {
    let fake = FakeProvider::start().await;
    let app = spawn_app_with_acme(backend, &fake, "pkce = false", &[]).await;
    app.create_admin("acme", OWNER);
    assert_eq!(app.login(OWNER, PASSWORD).await.status(), 303);

    let res = app.authorize("acme", &[]).await;
    assert_eq!(res.status(), 303);
    let location = res.headers()["location"].to_str().unwrap().to_string();
    assert!(
        query_param(&location, "code_challenge").is_none(),
        "{location}"
    );
    assert!(
        query_param(&location, "code_challenge_method").is_none(),
        "{location}"
    );
    let state = query_param(&location, "state").unwrap();
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_string_contains("code=the-code"))
        .respond_with(ResponseTemplate::new(200).set_body_json(tokens(
            "at-1",
            Some("rt-1"),
            "3600".into(),
        )))
        .expect(1)
        .mount(&fake.server)
        .await;
    Mock::given(method("GET"))
        .and(path("/me"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"sub": "a"})))
        .mount(&fake.server)
        .await;
    let res = app
        .get(&format!("/oauth/acme/callback?code=the-code&state={state}"))
        .await;
    assert_eq!(res.status(), 303);
    let request = fake
        .requests()
        .await
        .into_iter()
        .find(|r| r.url.path() == "/token")
        .unwrap();
    let body = String::from_utf8_lossy(&request.body).to_string();
    assert!(!body.contains("code_verifier"), "{body}");
}
