//! The OpenAPI document: public JSON that documents every route registered
//! in src/web/api.rs, and nothing that is not registered.

use super::{service, unconnected};
use crate::backend_tests;
use crate::helpers::Backend;
use serde_json::Value;

backend_tests!(the_openapi_document_is_public_json_and_documents_every_api_route,);

/// The routes registered in src/web/api.rs, as (method, path with `{}` for
/// each parameter); `to` means any method.
fn registered_routes() -> Vec<(String, String)> {
    let src = include_str!("../../../src/web/api.rs");
    let start = src.find("pub fn routes").expect("routes()");
    let body = &src[start..start + src[start..].find("\n}\n").expect("end of routes()")];
    let scope = body
        .split("web::scope(\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("the tenant scope");
    // Resources registered on their own: `web::resource("/path")` followed
    // by `.route(web::verb()...)`.
    let resources = body.split("web::resource(\"").skip(1).flat_map(|chunk| {
        let (p, rest) = chunk.split_once('"').unwrap();
        let rest = rest.split("web::resource(").next().unwrap();
        rest.split(".route(web::")
            .skip(1)
            .map(|r| (r.split('(').next().unwrap().to_string(), generic(p)))
            .collect::<Vec<_>>()
    });
    // rustfmt may put a route's arguments on lines of their own.
    body.split(".route(")
        .skip(1)
        .filter(|chunk| chunk.trim_start().starts_with('"'))
        .map(|chunk| {
            let chunk = chunk.trim_start().strip_prefix('"').expect("a route path");
            let (p, rest) = chunk.split_once('"').unwrap();
            let verb = rest
                .split("web::")
                .nth(1)
                .and_then(|s| s.split('(').next())
                .unwrap()
                .to_string();
            let full = if p.starts_with("/api/") {
                p.to_string()
            } else {
                format!("{scope}{p}")
            };
            (verb, generic(&full))
        })
        .chain(resources)
        .collect()
}

/// A path template with every `{name}` or `{name:regex}` as `{}`.
fn generic(template: &str) -> String {
    let mut out = String::new();
    let mut depth = 0;
    for c in template.chars() {
        match c {
            '{' => {
                if depth == 0 {
                    out.push_str("{}");
                }
                depth += 1;
            }
            '}' => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

async fn the_openapi_document_is_public_json_and_documents_every_api_route(backend: Backend) {
    let (app, _fake, _) = unconnected(backend).await;
    let res = service()
        .get(format!("{}/api/v1/openapi.json", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "no key needed");
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let doc: Value = serde_json::from_str(&res.text().await.unwrap()).expect("valid JSON");
    assert!(doc["openapi"].as_str().unwrap().starts_with('3'));
    let paths = doc["paths"].as_object().expect("paths");
    let documented: std::collections::BTreeMap<String, &Value> =
        paths.iter().map(|(k, v)| (generic(k), v)).collect();

    let routes = registered_routes();
    assert_eq!(routes.len(), 10, "parsed every route: {routes:?}");
    for (verb, p) in &routes {
        let item = documented
            .get(p)
            .unwrap_or_else(|| panic!("{p} is not in openapi.json"));
        let verbs: Vec<&str> = if verb == "to" {
            vec!["get", "post", "put", "patch", "delete"]
        } else {
            vec![verb.as_str()]
        };
        for v in verbs {
            assert!(item.get(v).is_some(), "{v} {p} is not documented");
        }
    }
    for p in documented.keys() {
        assert!(
            routes.iter().any(|(_, r)| r == p),
            "{p} is documented but not registered"
        );
    }
}
