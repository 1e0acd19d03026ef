//! Every type that holds a secret and implements `Debug` prints `***` in its
//! place: each is built here with known secret values and formatted both
//! ways (`{:?}` and `{:#?}`). Putting a `#[derive(Debug)]` back on any of
//! them, or adding a plain secret field to one, fails this test.

use crate::app::cache::Opened;
use crate::config::Settings;
use crate::crypto::{KeyRing, Secret};
use crate::db::models::api_key::ApiKey;
use crate::db::models::connection::{Connection, Grant, TokenSet};
use crate::db::models::oauth_state::NewState;
use crate::db::models::user::User;
use crate::ids::{AccountId, ConnectionId, ProviderKey, TenantId};
use crate::oauth::token::TokenResponse;
use crate::oauth::{Authorized, CallbackQuery, Initiator};
use crate::providers::{presets, Catalogue, Provider};
use std::collections::BTreeMap;

const ACCESS: &str = "access-secret-4c1f";
const REFRESH: &str = "refresh-secret-9a2e";
const ID_TOKEN: &str = "id-token-secret-77b0";
const CODE: &str = "auth-code-secret-31d5";
const STATE: &str = "state-secret-0e6a";
const VERIFIER: &str = "pkce-verifier-secret-5b8c";
const BINDING: &str = "session-binding-secret-d41a";
const CLIENT_SECRET: &str = "client-secret-secret-2f9e";
const PASSWORD_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$hash-secret-a0c3";
const KEY_HASH: &str = "key-hash-secret-e5d7";
const WEBHOOK_SECRET: &str = "webhook-secret-secret-6c2b";
const SSO_SECRET: &str = "sso-secret-secret-secret-secret-8d4f";
const METRICS_TOKEN: &str = "metrics-token-secret-1b7a";
const DB_PASSWORD: &str = "db-password-secret-93ce";
/// Base64 of the 32 bytes 0x01 (the test key ring's key material).
const KEY_MATERIAL: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";

const SECRETS: [&str; 15] = [
    ACCESS,
    REFRESH,
    ID_TOKEN,
    CODE,
    STATE,
    VERIFIER,
    BINDING,
    CLIENT_SECRET,
    PASSWORD_HASH,
    KEY_HASH,
    WEBHOOK_SECRET,
    SSO_SECRET,
    METRICS_TOKEN,
    DB_PASSWORD,
    KEY_MATERIAL,
];

/// Formats `value` both ways: no secret (nor a telling part of one) shows,
/// and `***` stands where they were.
fn assert_redacted(name: &str, value: &dyn std::fmt::Debug) {
    for text in [format!("{value:?}"), format!("{value:#?}")] {
        for secret in SECRETS {
            let telling = &secret[..secret.len().min(16)];
            assert!(
                !text.contains(secret) && !text.contains(telling),
                "{name} prints a secret ({secret}): {text}"
            );
        }
        assert!(text.contains("***"), "{name} shows no ***: {text}");
    }
}

fn vars() -> BTreeMap<String, String> {
    use base64::Engine;
    [
        ("TETHER_ENCRYPTION_KEYS", format!("k1:{KEY_MATERIAL}")),
        (
            "TETHER_SESSION_KEY",
            base64::engine::general_purpose::STANDARD.encode([0x5au8; 64]),
        ),
        (
            "TETHER_DATABASE_URL",
            format!("postgres://tether:{DB_PASSWORD}@db.example/tether"),
        ),
        ("TETHER_WEBHOOK_URL", "https://crm.example/hooks".into()),
        ("TETHER_WEBHOOK_SECRET", WEBHOOK_SECRET.into()),
        ("TETHER_SSO_SECRET", SSO_SECRET.into()),
        ("TETHER_METRICS_TOKEN", METRICS_TOKEN.into()),
        ("HUBSPOT_CLIENT_ID", "hubspot-client".into()),
        ("HUBSPOT_CLIENT_SECRET", CLIENT_SECRET.into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn token_set() -> TokenSet {
    TokenSet {
        access_token: Secret::new(ACCESS.into()),
        refresh_token: Some(Secret::new(REFRESH.into())),
        token_type: "Bearer".into(),
        raw: Secret::new(serde_json::json!({
            "access_token": ACCESS, "refresh_token": REFRESH, "id_token": ID_TOKEN,
        })),
    }
}

fn provider(settings: &Settings) -> Provider {
    Provider {
        credentials: Some(("demo-client".into(), Secret::new(CLIENT_SECRET.into()))),
        ..presets::demo(settings)
    }
}

fn connection() -> Connection {
    let t = crate::db::now();
    Connection {
        id: ConnectionId::known("c1"),
        tenant_id: TenantId::known("t1"),
        provider: ProviderKey::known("demo"),
        account_id: AccountId::known("acct"),
        account_name: None,
        status: crate::db::models::connection::Status::Connected,
        scopes: "[]".into(),
        token_ciphertext: Some(vec![1, 2, 3]),
        key_id: Some("k1".into()),
        expires_at: None,
        refresh_expires_at: None,
        next_refresh_at: None,
        version: 1,
        lease_owner: None,
        lease_until: None,
        failure_count: 0,
        last_error: None,
        metadata: "{}".into(),
        last_refreshed_at: None,
        created_at: t,
        updated_at: t,
        is_default: true,
        tags: None,
        error_since: None,
        kind: crate::db::models::connection::Kind::OAuth,
    }
}

#[test]
fn every_type_holding_a_secret_debug_prints_stars_in_its_place() {
    let settings = Settings::from_vars(&vars()).unwrap();
    assert_redacted("Settings", &settings);
    let ring = KeyRing::parse(&format!("k1:{KEY_MATERIAL}")).unwrap();
    assert_redacted("KeyRing", &ring);
    assert_redacted("Secret", &Secret::new(ACCESS.to_string()));

    let provider = provider(&settings);
    assert_redacted("Provider", &provider);
    let env = vars();
    let catalogue = Catalogue::build(&settings, None, &|name| env.get(name).cloned()).unwrap();
    assert!(catalogue.enabled("hubspot").is_some());
    assert_redacted("Catalogue", &catalogue);

    let tokens = token_set();
    assert_redacted("TokenSet", &tokens);
    let body = serde_json::json!({
        "access_token": ACCESS, "refresh_token": REFRESH, "id_token": ID_TOKEN,
        "expires_in": 3600, "scope": "profile",
    });
    let response = TokenResponse::parse(&provider, body.to_string().as_bytes()).unwrap();
    assert_redacted("TokenResponse", &response);
    let authorized = Authorized {
        response,
        account_id: AccountId::known("acct"),
        account_name: Some("Main Street Dental".into()),
        scopes: vec!["profile".into()],
        metadata: serde_json::json!({"locationId": "loc_1"}),
    };
    assert_redacted("Authorized", &authorized);

    let query = CallbackQuery {
        code: Some(CODE.into()),
        state: Some(STATE.into()),
        iss: Some("https://auth.example".into()),
        error: None,
        error_description: None,
    };
    assert_redacted("CallbackQuery", &query);
    let initiator = Initiator {
        tenant_id: "t1",
        user_id: Some("u1"),
        session_binding: Some(BINDING),
        ask_consent: false,
        tags: None,
        embed_origin: None,
        login_hint: None,
        reconnect_account: None,
    };
    assert_redacted("Initiator", &initiator);

    let verifier = Secret::new(VERIFIER.to_string());
    let new_state = NewState {
        state_hash: "hash-of-the-state",
        tenant_id: "t1",
        user_id: None,
        session_binding: None,
        provider: "demo",
        verifier: Some(&verifier),
        redirect_uri: "https://tether.example/oauth/demo/callback",
        return_to: None,
        popup: false,
        expires_at: crate::db::now(),
        tags: None,
        embed_origin: None,
        reconnect_account: None,
    };
    assert_redacted("NewState", &new_state);

    let (tenant, key) = (TenantId::known("t1"), ProviderKey::known("demo"));
    let grant = Grant {
        kind: crate::db::models::connection::Kind::OAuth,
        tenant_id: &tenant,
        provider: &key,
        account_id: &AccountId::known("acct"),
        account_name: None,
        scopes: &[],
        tokens: &tokens,
        expires_at: None,
        refresh_expires_at: None,
        next_refresh_at: None,
        metadata: &serde_json::Value::Null,
        parent_account_id: None,
        tags: None,
    };
    assert_redacted("Grant", &grant);
    assert_redacted("Opened", &Opened::new(connection(), token_set()));

    let t = crate::db::now();
    let user = User {
        id: "u1".into(),
        tenant_id: tenant.clone(),
        email: "owner@acme.example".into(),
        password_hash: Some(PASSWORD_HASH.into()),
        role: "admin".into(),
        created_at: t,
        last_login_at: None,
        session_generation: 0,
    };
    assert_redacted("User", &user);
    let api_key = ApiKey {
        id: "k1".into(),
        name: "crm".into(),
        prefix: "abcd1234".into(),
        secret_hash: KEY_HASH.into(),
        tenant_id: Some(tenant),
        created_at: t,
        last_used_at: None,
        revoked_at: None,
        is_admin: false,
        stored_scopes: Some(crate::db::models::api_key::Scopes::all_but_admin()),
        providers: None,
    };
    assert_redacted("ApiKey", &api_key);
}
