//! Provisioning tenants: an admin key creates a tenant and then renames it,
//! a non-admin key cannot, and a malformed tenant id is a 400 that creates
//! nothing.

use super::{unconnected, API};
use crate::backend_tests;
use crate::helpers::{error_of, Backend};
use serde_json::{json, Value};
use tether::db::models::tenant::Tenant;

backend_tests!(
    an_admin_key_provisions_a_tenant_then_renames_it,
    a_non_admin_key_cannot_provision_a_tenant,
    a_malformed_tenant_id_is_refused_with_400_and_creates_nothing,
);

async fn an_admin_key_provisions_a_tenant_then_renames_it(backend: Backend) {
    let (app, _fake, _) = unconnected(backend).await;
    let admin = app.api_key(None, true);
    let put = |name: &'static str| {
        app.api_put(
            "/api/v1/tenants/crm-client-7",
            &admin,
            json!({ "name": name }),
        )
    };
    let res = put("Main Street Dental").await;
    assert_eq!(res.status(), 201);
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body,
        json!({"tenant": "crm-client-7", "name": "Main Street Dental", "created": true})
    );
    let created = app.tenant("crm-client-7");

    let res = put("Main Street Dental & Co").await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["created"], false);
    assert_eq!(body["name"], "Main Street Dental & Co");
    let renamed = app.tenant("crm-client-7");
    assert_eq!(renamed.id, created.id, "the same tenant");
    assert_eq!(renamed.name, "Main Street Dental & Co");
    // The provisioned tenant is usable at once.
    let list = app
        .api_get(&format!("{API}/crm-client-7/connections"), &admin)
        .await;
    assert_eq!(list.status(), 200);
}

async fn a_non_admin_key_cannot_provision_a_tenant(backend: Backend) {
    let (app, _fake, global) = unconnected(backend).await;
    let scoped = app.api_key(Some("acme"), false);
    let before = app.snapshot();
    for (key, tenant) in [(&global, "newco"), (&global, "acme"), (&scoped, "acme")] {
        let res = app
            .api_put(&format!("{API}/{tenant}"), key, json!({"name": "Renamed"}))
            .await;
        assert_eq!(
            error_of(res).await,
            (403, "missing_scope".into()),
            "{tenant}"
        );
    }
    assert_eq!(app.snapshot(), before);
    assert!(Tenant::by_external_id(
        &mut app.conn(),
        &tether::ids::ExternalTenantId::known("newco")
    )
    .unwrap()
    .is_none());
    let acme = app.tenant("acme");
    assert_eq!(acme.name, "Acme");
}

/// `a b` is not a tenant id. Provisioning answers 400 `invalid_tenant`: the
/// id is input that would be stored, and the caller must learn it is
/// malformed. (The read routes answer 404 for the same id instead, since a
/// malformed id cannot name an existing tenant.)
async fn a_malformed_tenant_id_is_refused_with_400_and_creates_nothing(backend: Backend) {
    let (app, _fake, _) = unconnected(backend).await;
    let admin = app.api_key(None, true);
    let before = app.snapshot();
    for id in ["a%20b", "a%2Fb", "%C3%A9t%C3%A9", &"x".repeat(129)] {
        let res = app
            .api_put(&format!("{API}/{id}"), &admin, json!({"name": "Bad"}))
            .await;
        let (status, code) = error_of(res).await;
        assert_eq!((status, code.as_str()), (400, "invalid_tenant"), "{id}");
    }
    let res = app
        .api_get(&format!("{API}/a%20b/connections"), &admin)
        .await;
    assert_eq!(error_of(res).await, (404, "not_found".into()));
    assert_eq!(app.snapshot(), before, "no tenant was created");
}
