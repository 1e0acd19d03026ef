//! An admin of tenant `acme` signed in, and the connect flow driven through
//! the real routes: authorize, the provider's answers to the code exchange
//! and identity request, and the callback.

use super::{
    query_param, spawn_app_with_provider, Backend, FakeProvider, TestApp, ACME_ISSUER, PASSWORD,
};
use wiremock::matchers::{body_string_contains, header, method, path};
use wiremock::{Mock, Request, ResponseTemplate};

/// The admin of tenant `acme` that [`signed_in`] signs in.
pub const OWNER: &str = "owner@acme.example";

/// The account the fake provider's identity endpoint names after
/// [`mount_exchange`]: the account of the tenant's acme connection.
pub const ACCOUNT: &str = "acct-42";

/// Matches a token request whose PKCE verifier hashes to `challenge`.
pub struct VerifierMatches(pub String);

impl wiremock::Match for VerifierMatches {
    fn matches(&self, request: &Request) -> bool {
        url::form_urlencoded::parse(&request.body)
            .find(|(k, _)| k == "code_verifier")
            .is_some_and(|(_, v)| tether::oauth::pkce_challenge(&v) == self.0)
    }
}

pub fn tokens(
    access: &str,
    refresh: Option<&str>,
    expires_in: serde_json::Value,
) -> serde_json::Value {
    let mut body = serde_json::json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": expires_in,
        "scope": "contacts.read",
        "locationId": "loc_9",
    });
    if let Some(rt) = refresh {
        body["refresh_token"] = rt.into();
    }
    body
}

/// Starts a connect as the signed-in admin, with `extra` form fields;
/// returns the state and PKCE challenge.
pub async fn start(app: &TestApp, extra: &[(&str, &str)]) -> (String, String) {
    let mut fields = vec![("return_to", "/settings/integrations")];
    fields.extend_from_slice(extra);
    let res = app.authorize("acme", &fields).await;
    assert_eq!(res.status(), 303);
    let location = res.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(
        query_param(&location, "client_id").as_deref(),
        Some("acme-client")
    );
    assert_eq!(
        query_param(&location, "code_challenge_method").as_deref(),
        Some("S256")
    );
    assert_eq!(
        query_param(&location, "scope").as_deref(),
        Some("contacts.read contacts.write")
    );
    assert_eq!(
        query_param(&location, "redirect_uri").as_deref(),
        Some(app.ctx.settings.redirect_uri("acme").as_str())
    );
    assert!(
        query_param(&location, "prompt").is_none(),
        "an admin's own Connect does not force the consent screen: {location}"
    );
    (
        query_param(&location, "state").expect("state"),
        query_param(&location, "code_challenge").expect("challenge"),
    )
}

/// The provider's token and identity answers for a first connection.
pub async fn mount_exchange(fake: &FakeProvider, challenge: &str, access: &str, refresh: &str) {
    mount_exchange_lasting(fake, challenge, access, refresh, 3600).await
}

/// As [`mount_exchange`], with an access token living `expires_in` seconds.
pub async fn mount_exchange_lasting(
    fake: &FakeProvider,
    challenge: &str,
    access: &str,
    refresh: &str,
    expires_in: i64,
) {
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_string_contains("grant_type=authorization_code"))
        .and(body_string_contains("code=the-code"))
        .and(VerifierMatches(challenge.to_string()))
        .respond_with(ResponseTemplate::new(200).set_body_json(tokens(
            access,
            Some(refresh),
            expires_in.to_string().into(),
        )))
        .expect(1)
        .named("code exchange")
        .mount(&fake.server)
        .await;
    Mock::given(method("GET"))
        .and(path("/me"))
        .and(header("authorization", format!("Bearer {access}").as_str()))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"sub": ACCOUNT, "name": "Main Street Dental"})),
        )
        .mount(&fake.server)
        .await;
}

/// Signs in, connects `acme` with the given tokens, and returns the callback response.
pub async fn connect(
    app: &TestApp,
    fake: &FakeProvider,
    access: &str,
    refresh: &str,
) -> reqwest::Response {
    let (state, challenge) = start(app, &[]).await;
    mount_exchange(fake, &challenge, access, refresh).await;
    app.get(&format!(
        "/oauth/acme/callback?code=the-code&state={state}&iss={ACME_ISSUER}"
    ))
    .await
}

pub async fn signed_in(backend: Backend, client_auth: &str) -> (TestApp, FakeProvider) {
    let fake = FakeProvider::start().await;
    let app = spawn_app_with_provider(backend, &fake, client_auth).await;
    app.create_admin("acme", OWNER);
    assert_eq!(app.login(OWNER, PASSWORD).await.status(), 303);
    (app, fake)
}
