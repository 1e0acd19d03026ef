//! The OpenAPI document is generated from the route registrations, so it
//! cannot list a route the server does not answer, nor miss one it does.
//! These tests hold the server to it from outside: every documented
//! operation is routed, every other method on a documented path is a 405
//! naming the documented ones, and an undocumented path is a 404.
//! (`scripts/fuzz-api` holds the answers to the document's schemas.)

use super::connected;
use crate::backend_tests;
use crate::helpers::{service, Backend};
use reqwest::Method;
use serde_json::{json, Value};

backend_tests!(
    the_openapi_document_is_public_json_with_every_operation_routed,
    a_method_a_documented_path_does_not_take_is_a_405_naming_those_it_does,
    a_path_the_document_does_not_list_is_a_404,
);

const METHODS: [&str; 7] = ["get", "put", "post", "delete", "patch", "head", "options"];

async fn document(address: &str) -> Value {
    let res = service()
        .get(format!("{address}/api/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "no key needed");
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    serde_json::from_str(&res.text().await.unwrap()).expect("valid JSON")
}

/// A documented path with its parameters filled in for tenant `acme` and
/// its `acme` connection.
fn concrete(template: &str) -> String {
    template
        .replace("{tenant}", "acme")
        .replace("{provider}", "acme")
        .replace("{path}", "v1/me")
}

async fn the_openapi_document_is_public_json_with_every_operation_routed(backend: Backend) {
    let (app, _fake, key) = connected(backend).await;
    let doc = document(&app.address).await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = doc["paths"].as_object().expect("paths");
    let mut operations = 0;
    for (template, item) in paths {
        assert!(template.starts_with("/api/v1/"), "{template}");
        for m in METHODS.iter().filter(|m| item.get(**m).is_some()) {
            operations += 1;
            let body = (*m != "get" && *m != "delete").then(|| json!({}));
            let method = Method::from_bytes(m.to_uppercase().as_bytes()).unwrap();
            let res = app.api(method, &concrete(template), &key, body).await;
            let status = res.status().as_u16();
            let text = res.text().await.unwrap();
            assert_ne!(status, 405, "{m} {template} is documented: {text}");
            assert!(
                !text.contains("there is nothing at this address"),
                "{m} {template} is documented but not routed: {status} {text}"
            );
        }
    }
    // Twenty-one paths; four take two methods each and the proxy five.
    assert_eq!(paths.len(), 21, "{:?}", paths.keys());
    assert_eq!(operations, 29);
    for name in ["Status", "Token", "Error", "Code"] {
        assert!(
            doc["components"]["schemas"].get(name).is_some(),
            "schema {name}"
        );
    }
    let codes = doc["components"]["schemas"]["Code"]["enum"]
        .as_array()
        .unwrap();
    assert!(codes.contains(&json!("needs_reconnect")));
    assert_eq!(codes.len(), tether::error::Code::ALL.len());

    // Every operation has an operationId of its own (generators make
    // function names of them) and is tagged by its resource.
    let mut ids = std::collections::BTreeSet::new();
    for (template, item) in paths {
        for m in METHODS.iter().filter(|m| item.get(**m).is_some()) {
            let op = &item[*m];
            let id = op["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{m} {template}"));
            assert!(ids.insert(id.to_string()), "{id} twice ({m} {template})");
            let tags = op["tags"]
                .as_array()
                .unwrap_or_else(|| panic!("{m} {template}"));
            assert_eq!(tags.len(), 1, "{m} {template}");
        }
    }
    assert_eq!(ids.len(), operations);
    let proxy = &paths["/api/v1/tenants/{tenant}/proxy/{provider}/{path}"];
    assert_eq!(proxy["get"]["operationId"], "proxy_get");
    assert_eq!(proxy["delete"]["operationId"], "proxy_delete");
    assert_eq!(proxy["get"]["tags"], json!(["proxy"]));
    // Generators skip an operation whose content has no schema, or whose
    // body is `*/*`: a GET takes no body, others JSON or bytes.
    assert!(
        proxy["get"].get("requestBody").is_none(),
        "{}",
        proxy["get"]
    );
    let content = &proxy["post"]["requestBody"]["content"];
    assert_eq!(
        content["application/json"]["schema"],
        json!({}),
        "{content}"
    );
    assert_eq!(
        content["application/octet-stream"]["schema"],
        json!({"type": "string", "format": "binary"}),
        "{content}"
    );
    let token = &paths["/api/v1/tenants/{tenant}/connections/{provider}/token"];
    assert_eq!(token["get"]["tags"], json!(["connections"]));
}

async fn a_method_a_documented_path_does_not_take_is_a_405_naming_those_it_does(backend: Backend) {
    let (app, _fake, key) = connected(backend).await;
    let doc = document(&app.address).await;
    let mut checked = 0;
    for (template, item) in doc["paths"].as_object().unwrap() {
        let allowed: Vec<String> = METHODS
            .iter()
            .filter(|m| item.get(**m).is_some())
            .map(|m| m.to_uppercase())
            .collect();
        for m in METHODS.iter().filter(|m| item.get(**m).is_none()) {
            let method = Method::from_bytes(m.to_uppercase().as_bytes()).unwrap();
            let res = app.api(method, &concrete(template), &key, None).await;
            assert_eq!(res.status(), 405, "{m} {template}");
            let allow = res.headers()["allow"].to_str().unwrap().to_string();
            let listed: Vec<&str> = allow.split(", ").collect();
            assert_eq!(listed, allowed, "{m} {template}");
            if *m != "head" {
                let body: Value = res.json().await.unwrap();
                assert_eq!(body["error"]["code"], "method_not_allowed");
            }
            checked += 1;
        }
    }
    assert!(checked > 40, "{checked}");
}

async fn a_path_the_document_does_not_list_is_a_404(backend: Backend) {
    let (app, _fake, key) = connected(backend).await;
    for p in [
        "/api/v1/tenants",
        "/api/v1/tenants/acme/nothing",
        "/api/v1/tenants/acme/connections/acme/token/more",
        "/api/v2/openapi.json",
    ] {
        let res = app.api_get(p, &key).await;
        assert_eq!(res.status(), 404, "{p}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], "not_found", "{p}");
    }
}
