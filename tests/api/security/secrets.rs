//! Secrets stay secret: no access or refresh token reaches the browser, the
//! stored error or the activity log across a whole flow; passwords are stored
//! as argon2id hashes and API keys as SHA-256 hashes, and a wrong secret with
//! a right key prefix is refused.

use crate::backend_tests;
use crate::helpers::{
    connect, mount_exchange, signed_in, start, tokens, Backend, ACME_ISSUER, OWNER, PASSWORD,
};
use diesel::prelude::*;
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, ResponseTemplate};

backend_tests!(
    tokens_never_reach_the_browser_across_a_whole_flow,
    passwords_are_stored_as_argon2id,
    api_keys_are_stored_as_sha256_and_a_wrong_secret_with_a_right_prefix_is_refused,
);

/// Everything a response shows the browser: Location, Set-Cookie and body.
async fn exposed(res: reqwest::Response) -> String {
    let mut out = String::new();
    for name in ["location", "set-cookie"] {
        for v in res.headers().get_all(name) {
            out.push_str(&String::from_utf8_lossy(v.as_bytes()));
            out.push('\n');
        }
    }
    out.push_str(&res.text().await.unwrap());
    out
}

async fn tokens_never_reach_the_browser_across_a_whole_flow(backend: Backend) {
    const SECRETS: [&str; 6] = [
        "at-1-leakcheck",
        "rt-1-leakcheck",
        "at-2-leakcheck",
        "rt-2-leakcheck",
        "at-3-leakcheck",
        "rt-3-leakcheck",
    ];
    let (app, fake) = signed_in(backend, "post").await;
    let mut seen = Vec::new();

    let res = connect(&app, &fake, SECRETS[0], SECRETS[1]).await;
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["referrer-policy"], "no-referrer");
    seen.push(exposed(res).await);
    seen.push(exposed(app.get("/settings/integrations").await).await);
    seen.push(exposed(app.get("/oauth/acme/status").await).await);
    seen.push(exposed(app.get("/settings/integrations/cards/acme").await).await);

    // Reconnect in a popup: the result page is tiny and loads nothing third-party.
    let (state, challenge) = start(&app, &[("popup", "1")]).await;
    mount_exchange(&fake, &challenge, SECRETS[2], SECRETS[3]).await;
    let res = app
        .get(&format!(
            "/oauth/acme/callback?code=the-code&state={state}&iss={ACME_ISSUER}"
        ))
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["referrer-policy"], "no-referrer");
    let popup = exposed(res).await;
    assert!(
        !popup.contains("http://") && !popup.contains("https://"),
        "{popup}"
    );
    seen.push(popup);

    // A refresh that works, then one the provider refuses while echoing the token.
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_string_contains("grant_type=refresh_token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(tokens(
            SECRETS[4],
            Some(SECRETS[5]),
            "3600".into(),
        )))
        .up_to_n_times(1)
        .expect(1)
        .mount(&fake.server)
        .await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_string_contains("grant_type=refresh_token"))
        .respond_with(ResponseTemplate::new(400).set_body_json(serde_json::json!({
            "error": "invalid_grant",
            "error_description": format!("refresh token {} is revoked; access token {}", SECRETS[5], SECRETS[4]),
        })))
        .mount(&fake.server)
        .await;
    for _ in 0..2 {
        let csrf = app.csrf("/settings/integrations").await;
        let res = app
            .post_form("/oauth/acme/refresh", &[("csrf", &csrf)])
            .await;
        assert_eq!(res.status(), 303);
        seen.push(exposed(res).await);
        seen.push(exposed(app.get("/settings/integrations").await).await);
        seen.push(exposed(app.get("/oauth/acme/status").await).await);
    }

    Mock::given(method("POST"))
        .and(path("/revoke"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&fake.server)
        .await;
    let csrf = app.csrf("/settings/integrations").await;
    let res = app
        .post_form("/oauth/acme/disconnect", &[("csrf", &csrf)])
        .await;
    assert_eq!(res.status(), 303);
    seen.push(exposed(res).await);
    seen.push(exposed(app.get("/settings/integrations").await).await);
    seen.push(exposed(app.get("/oauth/acme/status").await).await);

    for text in &seen {
        for secret in SECRETS.iter().chain(&["acme-secret-value"]) {
            assert!(
                !text.contains(secret),
                "{secret} reached the browser: {text}"
            );
        }
    }
    // Nor did it reach the stored error or the activity log.
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        v: String,
    }
    let stored: Vec<Row> = diesel::sql_query(
        "SELECT COALESCE(last_error, '') AS v FROM connections \
         UNION ALL SELECT COALESCE(detail, '') AS v FROM events",
    )
    .load(&mut *app.conn())
    .unwrap();
    for row in stored {
        for secret in SECRETS {
            assert!(!row.v.contains(secret), "{}", row.v);
        }
    }
}

async fn passwords_are_stored_as_argon2id(backend: Backend) {
    let (app, _fake) = signed_in(backend, "post").await;
    let user = tether::db::models::user::User::by_email(&mut app.conn(), OWNER)
        .unwrap()
        .unwrap();
    let hash = user.password_hash.unwrap();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(!hash.contains(PASSWORD));
}

async fn api_keys_are_stored_as_sha256_and_a_wrong_secret_with_a_right_prefix_is_refused(
    backend: Backend,
) {
    use tether::db::models::api_key::{ApiKey, Rights};
    let (app, _fake) = signed_in(backend, "post").await;
    let tenant = app.tenant("acme");
    let (row, key) = ApiKey::create(
        &mut app.conn(),
        "crm",
        Some(&tenant.id),
        &Rights::unlimited(false),
    )
    .unwrap();
    let key = key.expose().clone();
    assert_eq!(row.secret_hash, tether::crypto::sha256_hex(key.as_bytes()));
    let secret_part = key.splitn(3, '_').nth(2).unwrap();
    assert!(secret_part.len() >= 32, "{key}");
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        v: String,
    }
    let stored: Vec<Row> = diesel::sql_query(
        "SELECT id || '|' || name || '|' || prefix || '|' || secret_hash AS v FROM api_keys",
    )
    .load(&mut *app.conn())
    .unwrap();
    assert_eq!(stored.len(), 1);
    assert!(!stored[0].v.contains(secret_part), "{}", stored[0].v);

    assert_eq!(
        ApiKey::authenticate(&mut app.conn(), &key).unwrap().id,
        row.id
    );
    let mut wrong = key.clone();
    let last = wrong.pop().unwrap();
    wrong.push(if last == 'a' { 'b' } else { 'a' });
    for presented in [
        wrong,
        format!("tth_{}_{}", row.prefix, "x".repeat(43)),
        format!("tth_{}_", row.prefix),
        format!("tth_{}", row.prefix),
        row.secret_hash.clone(),
    ] {
        let err = ApiKey::authenticate(&mut app.conn(), &presented).unwrap_err();
        assert_eq!(err.status(), 401, "{presented}");
    }
}
