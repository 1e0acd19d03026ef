//! One tenant's admin and another tenant's connection: ids of the other
//! tenant in the URL change nothing, since the tenant comes from the session;
//! the admin never reads, refreshes or disconnects that connection.

use super::{fingerprint, forbid_token_requests};
use crate::backend_tests;
use crate::helpers::{connect, signed_in, Backend, Browser, PASSWORD};
use diesel::prelude::*;
use tether::db::schema::oauth_states;
use tether::ids::TenantId;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

backend_tests!(an_admin_never_reads_refreshes_or_disconnects_another_tenants_connection,);

async fn an_admin_never_reads_refreshes_or_disconnects_another_tenants_connection(
    backend: Backend,
) {
    // Tenant "acme" (B) is connected, in app.client.
    let (app, fake) = signed_in(backend, "post").await;
    assert_eq!(
        connect(&app, &fake, "at-b-secret", "rt-b-secret")
            .await
            .status(),
        303
    );
    let b_tenant = app.tenant("acme");
    let b_row = app.default_connection("acme", "acme").unwrap();
    fake.server.reset().await;
    forbid_token_requests(&fake).await;
    Mock::given(method("POST"))
        .and(path("/revoke"))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&fake.server)
        .await;

    // Tenant "beta" (A), in its own browser.
    app.create_admin("beta", "admin@beta.example");
    let a = Browser::new(&app);
    assert_eq!(a.login("admin@beta.example", PASSWORD).await.status(), 303);
    let csrf = a.csrf("/settings/integrations").await;
    let before = app.snapshot();

    let mut seen = Vec::new();
    // Ids of B in the URL change nothing: the tenant comes from the session.
    let foreign = format!(
        "?tenant={}&tenant_id={}&connection={}",
        b_tenant.external_id, b_tenant.id, b_row.id
    );
    let res = a
        .client
        .get(format!("{}/oauth/acme/status{foreign}", a.address))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let status: serde_json::Value = res.json().await.unwrap();
    assert_eq!(status["status"], "not_connected");
    assert!(status["account"].is_null());
    seen.push(status.to_string());

    for page in [
        format!("/settings/integrations{foreign}"),
        format!("/settings/integrations/cards/acme{foreign}"),
    ] {
        let res = a.get(&page).await;
        assert_eq!(res.status(), 200, "{page}");
        let html = res.text().await.unwrap();
        assert!(
            html.contains(r#"data-provider="acme" data-status="not_connected""#),
            "{page}: {html}"
        );
        seen.push(html);
    }

    for action in ["refresh", "disconnect"] {
        for route in [
            format!("/oauth/acme/{action}"),
            format!("/oauth/acme/{action}{foreign}"),
        ] {
            let res = a.post_form(&route, &[("csrf", &csrf)]).await;
            assert!(
                res.status().is_client_error() || res.status() == 303,
                "{route}: {res:?}"
            );
            if let Some(l) = res.headers().get("location") {
                seen.push(l.to_str().unwrap().to_string());
            }
            seen.push(res.text().await.unwrap());
        }
    }
    let dashboard = a.get("/settings/integrations").await.text().await.unwrap();
    seen.push(dashboard);

    // A may start its own flow; it is A's state, not B's.
    let res = a
        .post_form(
            &format!("/oauth/acme/authorize{foreign}"),
            &[("csrf", &csrf), ("tenant", &b_tenant.external_id)],
        )
        .await;
    assert_eq!(res.status(), 303);
    seen.push(res.headers()["location"].to_str().unwrap().to_string());

    for text in &seen {
        assert!(!text.contains("Main Street Dental"), "{text}");
        assert!(!text.contains("acct-42"), "{text}");
        assert!(!text.contains(b_row.id.as_str()), "{text}");
    }
    let after = app.snapshot();
    let (before, after): (Vec<&str>, Vec<&str>) =
        (before.lines().collect(), after.lines().collect());
    assert_eq!(before[0], after[0], "connections unchanged");
    assert_eq!(before[2], after[2], "no events");
    assert_eq!(
        fingerprint(&app.default_connection("acme", "acme").unwrap()),
        fingerprint(&b_row)
    );
    let a_tenant = app.tenant("beta");
    let started: Vec<TenantId> = oauth_states::table
        .filter(oauth_states::consumed_at.is_null())
        .select(oauth_states::tenant_id)
        .load(&mut *app.conn())
        .unwrap();
    assert_eq!(started, vec![a_tenant.id]);
    assert!(app.default_connection("beta", "acme").is_none());
    assert_eq!(fake.calls_to("/token").await, 0);
    assert_eq!(fake.calls_to("/revoke").await, 0);
}
