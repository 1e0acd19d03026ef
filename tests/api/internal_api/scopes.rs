//! Scoped keys (README, "API keys and their scopes"): every operation of
//! the document names the one scope it needs, and the server asks for
//! exactly that one, before it reads anything else of the request; a key
//! limited to providers sees and touches only theirs; keys made before
//! scopes keep their rights.

use super::connected;
use crate::backend_tests;
use crate::helpers::{error_of, service, Backend};
use diesel::prelude::*;
use reqwest::Method;
use serde_json::{json, Value};
use tether::db::models::api_key::Scope;

backend_tests!(
    every_operation_needs_the_one_scope_the_document_names,
    a_key_limited_to_providers_sees_and_touches_only_theirs,
    a_key_without_stored_scopes_has_the_rights_keys_had_before,
);

const METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];

/// A documented path with its parameters filled in.
fn concrete(template: &str) -> String {
    template
        .replace("{tenant}", "acme")
        .replace("{provider}", "acme")
        .replace("{path}", "v1/me")
        .replace("{account}", "u1")
        .replace("{id}", "pi_1")
}

/// The scope names of every scope but `but`.
fn all_but(but: Scope) -> String {
    Scope::ALL
        .iter()
        .filter(|s| **s != but)
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

async fn every_operation_needs_the_one_scope_the_document_names(backend: Backend) {
    let (app, _fake, _) = connected(backend).await;
    let doc: Value = service()
        .get(format!("{}/api/v1/openapi.json", app.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // A key with only the scope, and one with every other, per scope.
    let only: Vec<(Scope, String)> = Scope::ALL
        .iter()
        .map(|s| (*s, app.scoped_key(s.as_str(), None)))
        .collect();
    let without: Vec<(Scope, String)> = Scope::ALL
        .iter()
        .map(|s| (*s, app.scoped_key(&all_but(*s), None)))
        .collect();
    let key_of = |keys: &[(Scope, String)], scope: Scope| {
        keys.iter().find(|(s, _)| *s == scope).unwrap().1.clone()
    };
    let (mut documented, mut checked) = (0, 0);
    let mut seen = std::collections::BTreeSet::new();
    for (template, item) in doc["paths"].as_object().unwrap() {
        for m in METHODS.iter().filter(|m| item.get(**m).is_some()) {
            documented += 1;
            let op = &item[*m];
            let security = op["security"].as_array();
            let Some(security) = security else {
                assert_eq!(
                    template, "/api/v1/openapi.json",
                    "{m} {template}: no security"
                );
                continue;
            };
            assert_eq!(security.len(), 1, "{m} {template}: {security:?}");
            let names = security[0]["apiKey"].as_array().unwrap();
            assert_eq!(names.len(), 1, "{m} {template} names one scope: {names:?}");
            let scope = Scope::parse(names[0].as_str().unwrap())
                .unwrap_or_else(|| panic!("{m} {template}: unknown scope {names:?}"));
            seen.insert(scope.as_str());
            let method = Method::from_bytes(m.to_uppercase().as_bytes()).unwrap();
            let body = (*m != "get" && *m != "delete").then(|| json!({}));
            let path = concrete(template);

            // Every other scope: refused for the one missing, before the
            // body, the tenant or the provider are looked at.
            let res = app
                .api(
                    method.clone(),
                    &path,
                    &key_of(&without, scope),
                    body.clone(),
                )
                .await;
            let (status, code) = error_of(res).await;
            assert_eq!(
                (status, code.as_str()),
                (403, "missing_scope"),
                "{m} {template} without {}",
                scope.as_str()
            );

            // The scope alone: whatever the answer, not for a scope.
            let res = app.api(method, &path, &key_of(&only, scope), body).await;
            let status = res.status().as_u16();
            let text = res.text().await.unwrap();
            assert!(
                !text.contains("missing_scope"),
                "{m} {template} with only {}: {status} {text}",
                scope.as_str()
            );
            checked += 1;
        }
    }
    assert_eq!(checked, documented - 1, "all but the document itself");
    assert_eq!(
        seen.len(),
        Scope::ALL.len(),
        "every scope guards some route: {seen:?}"
    );
}

async fn a_key_limited_to_providers_sees_and_touches_only_theirs(backend: Backend) {
    let (app, _fake, _) = connected(backend).await;
    let every = Scope::ALL
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    let elsewhere = app.scoped_key(&every, Some(&["demo"]));
    let here = app.scoped_key(&every, Some(&["acme", "demo"]));

    let token = "/api/v1/tenants/acme/connections/acme/token";
    let res = app.api(Method::GET, token, &elsewhere, None).await;
    let status = res.status().as_u16();
    let body: Value = res.json().await.unwrap();
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "missing_scope");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("demo"),
        "the refusal names the key's providers: {body}"
    );
    let (status, body) = app.get_json(token, &here).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["access_token"], "at-1");

    // Lists leave the other providers' connections out.
    let (status, list) = app
        .get_json("/api/v1/tenants/acme/connections", &elsewhere)
        .await;
    assert_eq!(status, 200, "{list}");
    let providers: Vec<&str> = list["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["provider"].as_str().unwrap())
        .collect();
    assert!(!providers.contains(&"acme"), "{list}");
    let (_, list) = app
        .get_json("/api/v1/tenants/acme/connections", &here)
        .await;
    assert!(list.to_string().contains("\"acme\""), "{list}");

    let (status, found) = app.get_json("/api/v1/connections", &elsewhere).await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["connections"], json!([]), "{found}");
    let (status, found) = app.get_json("/api/v1/connections", &here).await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["connections"].as_array().unwrap().len(), 1, "{found}");
    let res = app
        .api(
            Method::GET,
            "/api/v1/connections?provider=acme",
            &elsewhere,
            None,
        )
        .await;
    assert_eq!(error_of(res).await, (403, "missing_scope".into()));

    // Events too: only the key's providers', and naming another is refused.
    let (status, page) = app
        .get_json("/api/v1/tenants/acme/events", &elsewhere)
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["events"], json!([]), "{page}");
    let (_, page) = app.get_json("/api/v1/tenants/acme/events", &here).await;
    assert!(!page["events"].as_array().unwrap().is_empty(), "{page}");
    let res = app
        .api(
            Method::GET,
            "/api/v1/tenants/acme/events?provider=acme",
            &elsewhere,
            None,
        )
        .await;
    assert_eq!(error_of(res).await, (403, "missing_scope".into()));

    // Nothing changes for a refused write.
    let res = app
        .api(
            Method::DELETE,
            "/api/v1/tenants/acme/connections/acme",
            &elsewhere,
            None,
        )
        .await;
    assert_eq!(error_of(res).await.0, 403);
    let (status, _) = app.get_json(token, &here).await;
    assert_eq!(status, 200, "still connected");
}

async fn a_key_without_stored_scopes_has_the_rights_keys_had_before(backend: Backend) {
    use tether::db::schema::api_keys;
    let (app, _fake, _) = connected(backend).await;
    // Keys as the release before scopes creates them during a rolling
    // upgrade: no scopes, only is_admin.
    let plain = app.api_key(None, false);
    let admin = app.api_key(None, true);
    diesel::update(api_keys::table)
        .set(api_keys::scopes.eq(None::<String>))
        .execute(&mut app.conn())
        .unwrap();

    let (status, body) = app
        .get_json("/api/v1/tenants/acme/connections/acme/token", &plain)
        .await;
    assert_eq!(status, 200, "{body}");
    let res = app
        .api(
            Method::PUT,
            "/api/v1/tenants/newco",
            &plain,
            Some(json!({"name": "NewCo"})),
        )
        .await;
    assert_eq!(error_of(res).await, (403, "missing_scope".into()));
    let res = app
        .api(
            Method::PUT,
            "/api/v1/tenants/newco",
            &admin,
            Some(json!({"name": "NewCo"})),
        )
        .await;
    assert!(res.status().is_success(), "{:?}", res.text().await);

    // The CLI lists what they may do.
    let out = app.run_cli(&["api-key", "list", "--json"]);
    let keys: Value = serde_json::from_slice(&out.stdout).unwrap();
    let scopes: Vec<Value> = keys
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["scopes"].clone())
        .collect();
    assert!(
        scopes
            .iter()
            .any(|s| s.as_array().unwrap().contains(&json!("admin"))),
        "{keys}"
    );
    assert!(
        scopes
            .iter()
            .all(|s| s.as_array().unwrap().contains(&json!("token:read"))),
        "{keys}"
    );
}
