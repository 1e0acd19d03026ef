//! A refresh's answer that arrives late never undoes what happened to the
//! connection while it was at the provider: a disconnect, a reconnect, or
//! its lease taken over by another holder. The refresh commits (or records
//! its failure) only if the row is still the one it leased: the version and
//! lease-owner conditions of `Connection::commit_refresh` and
//! `Connection::record_failure`. Each answer here is held by the provider's
//! side until the test lets it go, so the order is certain, not timed.
//!
//! Which condition holds what: a disconnect and a reconnect both clear the
//! lease owner and bump the version, so either condition alone refuses their
//! late answer (deleting both fails those tests); a takeover changes only
//! the owner (a claim keeps the version), so the owner condition alone holds
//! it. No write today bumps the version of a row while leaving a live
//! lease's owner on it, so the version condition is never the only one
//! standing in these scenarios.

use super::{event_kinds, refresh_token_of};
use crate::backend_tests;
use crate::helpers::{
    mount_exchange, spawn_app_with_providers, start, token_at, Backend, FakeProvider, HeldAnswers,
    Rotating, TestApp, TestDb, ACCOUNT, ACME_ISSUER, OWNER, PASSWORD,
};
use diesel::prelude::*;
use tether::crypto::Secret;
use tether::db::models::connection::{Connection, Refreshed, Status, TokenSet};
use tether::db::models::instance::Takeover;
use tether::db::now;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

backend_tests!(
    a_disconnect_during_a_refresh_is_not_undone_by_its_late_answer,
    a_reconnect_during_a_refresh_is_not_undone_by_its_late_answer,
    a_lease_taken_over_while_the_first_holder_waits_is_not_undone_by_its_late_commit,
    a_late_refusal_does_not_mark_a_reconnected_connection_needs_reconnect,
    a_late_failure_does_not_touch_a_lease_taken_over_meanwhile,
    a_late_refusal_after_a_reconnect_records_no_needs_reconnect_event,
);

/// A connection whose refresh is at the provider, its answer held.
struct InFlight {
    app: TestApp,
    fake: FakeProvider,
    rotating: Rotating,
    held: HeldAnswers,
    key: String,
    /// The row as seeded, before the refresh leased it.
    seeded: Connection,
    /// The token request waiting for the refresh: its status and body.
    caller: Option<actix_web::rt::task::JoinHandle<(u16, serde_json::Value)>>,
}

/// Tenant `acme` with an expired `acme` connection of `account` holding
/// `rt-0` (a grant the provider honours when `granted`), its admin signed
/// in, and a token request whose refresh is at the provider: the provider
/// has acted on it and its answer is held.
async fn in_flight(backend: Backend, account: &str, granted: bool) -> InFlight {
    let fake = FakeProvider::start().await;
    let rotating = Rotating::new(true);
    rotating.mount(&fake).await;
    let held = HeldAnswers::start(&fake).await;
    let app =
        spawn_app_with_providers(TestDb::new(backend), &held.providers_toml(&fake), &[]).await;
    let tenant = app.create_admin("acme", OWNER);
    assert_eq!(app.login(OWNER, PASSWORD).await.status(), 303);
    if granted {
        rotating.grant("rt-0");
    }
    let seeded = app.seed(&tenant.id, account, "rt-0", -60, -1);
    let key = app.api_key(None, false);
    let caller = {
        let (client, address, key) = (app.client.clone(), app.address.clone(), key.clone());
        actix_web::rt::spawn(async move {
            let res = token_at(&client, &address, &key, "acme").await;
            let status = res.status().as_u16();
            (status, res.json().await.unwrap())
        })
    };
    held.until_held(1).await;
    assert_eq!(rotating.sent(), ["rt-0"]);
    let leased = app.connection(&seeded.id);
    assert!(leased.lease_owner.is_some(), "{leased:?}");
    InFlight {
        app,
        fake,
        rotating,
        held,
        key,
        seeded,
        caller: Some(caller),
    }
}

impl InFlight {
    /// Lets the provider's answer arrive; returns what the token request
    /// got, which it gets once the refresh has committed or been refused.
    async fn answer_arrives(&mut self) -> (u16, serde_json::Value) {
        self.held.release_one();
        self.caller
            .take()
            .expect("one answer")
            .await
            .expect("the token request ends")
    }
}

/// Reconnects the signed-in admin's `acme` account [`ACCOUNT`]
/// through the connect flow; the provider grants `at-reconnected` and
/// `rt-reconnected`.
async fn reconnect(app: &TestApp, fake: &FakeProvider) -> Connection {
    let (state, challenge) = start(app, &[]).await;
    mount_exchange(fake, &challenge, "at-reconnected", "rt-reconnected").await;
    let res = app
        .get(&format!(
            "/oauth/acme/callback?code=the-code&state={state}&iss={}",
            ACME_ISSUER
        ))
        .await;
    assert_eq!(res.status(), 303);
    app.acme_account("acme", ACCOUNT)
}

fn access_token_of(app: &TestApp, c: &Connection) -> String {
    c.tokens(&app.ctx.keys)
        .unwrap()
        .expect("tokens")
        .access_token
        .expose()
        .clone()
}

/// What the token API answers for the tenant's `account` (`None`: the default).
async fn token_for(app: &TestApp, key: &str, account: Option<&str>) -> (u16, serde_json::Value) {
    let mut url = format!("{}/api/v1/tenants/acme/connections/acme/token", app.address);
    if let Some(a) = account {
        url = format!("{url}?account={a}");
    }
    let res = app.client.get(url).bearer_auth(key).send().await.unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

/// Makes the lease of `id` lapse and its holder look gone (its heartbeat
/// silent for a minute, as when it is cut off from the database), and takes
/// it over as another instance, seeing the database all along, would.
fn take_over(app: &TestApp, id: &str, owner: &str) -> Connection {
    use tether::db::schema::{connections, instances};
    diesel::update(connections::table.find(id))
        .set(connections::lease_until.eq(Some(now() - chrono::Duration::seconds(1))))
        .execute(&mut app.conn())
        .unwrap();
    diesel::update(instances::table)
        .set(instances::heartbeat_at.eq(now() - chrono::Duration::minutes(1)))
        .execute(&mut app.conn())
        .unwrap();
    let other = owner.split(':').next().unwrap_or(owner);
    Connection::claim(
        &mut app.conn(),
        &tether::ids::ConnectionId::known(id),
        owner,
        now() + chrono::Duration::seconds(60),
        &Takeover::new(other, Some(std::time::Duration::MAX), now()),
    )
    .unwrap()
    .expect("the lapsed lease is taken over")
}

const SECOND: &str = "second-instance:takeover";

async fn a_disconnect_during_a_refresh_is_not_undone_by_its_late_answer(backend: Backend) {
    let mut f = in_flight(backend, "acct-1", true).await;
    Mock::given(method("POST"))
        .and(path("/revoke"))
        .respond_with(ResponseTemplate::new(200))
        .named("revocation")
        .mount(&f.fake.server)
        .await;

    // The tenant disconnects while the refresh is at the provider.
    let res = f
        .app
        .client
        .delete(format!(
            "{}/api/v1/tenants/acme/connections/acme",
            f.app.address
        ))
        .bearer_auth(&f.key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let disconnected = f.app.connection(&f.seeded.id);
    assert_eq!(disconnected.status(), Status::Disconnected);

    // Then the provider's answer arrives, with new tokens.
    let (status, body) = f.answer_arrives().await;
    assert_ne!(status, 200, "the late tokens are handed out: {body}");

    let after = f.app.connection(&f.seeded.id);
    assert_eq!(
        after.status(),
        Status::Disconnected,
        "the late answer undid the disconnect: {after:?}"
    );
    assert!(
        after.token_ciphertext.is_none() && after.key_id.is_none(),
        "tokens resurrected after the disconnect: {after:?}"
    );
    assert_eq!(after.version, disconnected.version, "{after:?}");
    assert!(after.lease_owner.is_none());
    assert!(
        !event_kinds(&f.app, &f.seeded.id).contains(&"refreshed".to_string()),
        "{:?}",
        event_kinds(&f.app, &f.seeded.id)
    );
    let (status, body) = token_for(&f.app, &f.key, None).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "not_connected", "{body}");
    let (status, body) = token_for(&f.app, &f.key, Some("acct-1")).await;
    assert_eq!(status, 404, "the account serves tokens again: {body}");

    // The provider saw one refresh and the revocation of the refresh
    // token Tether held; nothing was sent with the late answer's tokens.
    assert_eq!(f.rotating.sent(), ["rt-0"]);
    let revocations: Vec<String> = f
        .fake
        .requests()
        .await
        .iter()
        .filter(|r| r.url.path() == "/revoke")
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    assert_eq!(revocations.len(), 1, "{revocations:?}");
    assert!(revocations[0].contains("token=rt-0"), "{revocations:?}");
    assert_eq!(f.fake.refresh_calls().await, 1);
}

async fn a_reconnect_during_a_refresh_is_not_undone_by_its_late_answer(backend: Backend) {
    let mut f = in_flight(backend, ACCOUNT, true).await;

    // A person reconnects the account while the old refresh is at the provider.
    let reconnected = reconnect(&f.app, &f.fake).await;
    assert_eq!(reconnected.id, f.seeded.id, "the same row, overwritten");
    assert_eq!(access_token_of(&f.app, &reconnected), "at-reconnected");

    // Then the old refresh's answer arrives, with tokens of the old grant.
    let (status, body) = f.answer_arrives().await;
    assert_ne!(
        body["access_token"], "at-1",
        "the old grant's late tokens are handed out: {status} {body}"
    );

    let after = f.app.connection(&f.seeded.id);
    assert_eq!(after.status(), Status::Connected);
    assert_eq!(
        access_token_of(&f.app, &after),
        "at-reconnected",
        "the late answer overwrote the reconnect: {after:?}"
    );
    assert_eq!(refresh_token_of(&f.app, &after), "rt-reconnected");
    assert_eq!(after.version, reconnected.version, "{after:?}");
    assert!(after.lease_owner.is_none());
    let (status, body) = token_for(&f.app, &f.key, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["access_token"], "at-reconnected");
    assert_eq!(f.rotating.sent(), ["rt-0"], "the old grant refreshed once");
}

async fn a_lease_taken_over_while_the_first_holder_waits_is_not_undone_by_its_late_commit(
    backend: Backend,
) {
    let mut f = in_flight(backend, "acct-1", true).await;

    // The first holder's lease lapses while it waits, and another instance
    // takes the row over; its own refresh has not committed yet.
    let second = take_over(&f.app, &f.seeded.id, SECOND);
    assert_eq!(
        second.version, f.seeded.version,
        "a claim keeps the version"
    );

    // The first holder's answer arrives: its commit must be refused.
    let (status, body) = f.answer_arrives().await;
    assert_ne!(
        body["access_token"], "at-1",
        "the first holder's late tokens are handed out: {status} {body}"
    );
    let after = f.app.connection(&f.seeded.id);
    assert_eq!(
        after.lease_owner.as_deref(),
        Some(SECOND),
        "the first holder's late commit took the row from the lease's holder: {after:?}"
    );
    assert_eq!(after.version, second.version, "{after:?}");
    assert_eq!(refresh_token_of(&f.app, &after), "rt-0");

    // The holder of the lease commits its own refresh, and the row keeps it.
    let tokens = TokenSet {
        access_token: Secret::new("at-second".to_string()),
        refresh_token: Some(Secret::new("rt-second".to_string())),
        token_type: "Bearer".into(),
        raw: Secret::new(serde_json::json!({})),
    };
    let refreshed = Refreshed {
        expires_at: Some(now() + chrono::Duration::hours(1)),
        next_refresh_at: Some(now() + chrono::Duration::minutes(48)),
        refresh_expires_at: None,
        scopes: vec!["contacts.read".into()],
    };
    assert!(
        Connection::commit_refresh(
            &mut f.app.conn(),
            &second,
            SECOND,
            &second.seal(&f.app.ctx.keys, &tokens).unwrap(),
            &refreshed
        )
        .unwrap(),
        "the lease's holder could not commit"
    );
    let done = f.app.connection(&f.seeded.id);
    assert_eq!(done.status(), Status::Connected);
    assert_eq!(refresh_token_of(&f.app, &done), "rt-second");
    let (status, body) = token_for(&f.app, &f.key, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["access_token"], "at-second");
}

async fn a_late_refusal_does_not_mark_a_reconnected_connection_needs_reconnect(backend: Backend) {
    // The provider no longer honours rt-0 (which is why the person reconnects).
    let mut f = in_flight(backend, ACCOUNT, false).await;
    let reconnected = reconnect(&f.app, &f.fake).await;

    // The old refresh's answer arrives: invalid_grant, for the old grant.
    f.answer_arrives().await;

    let after = f.app.connection(&f.seeded.id);
    assert_eq!(
        after.status(),
        Status::Connected,
        "the old grant's late refusal marked the reconnected row: {after:?}"
    );
    assert_eq!(after.failure_count, 0, "{after:?}");
    assert!(after.last_error.is_none(), "{after:?}");
    assert_eq!(after.next_refresh_at, reconnected.next_refresh_at);
    assert_eq!(after.version, reconnected.version);
    assert_eq!(access_token_of(&f.app, &after), "at-reconnected");
    let (status, body) = token_for(&f.app, &f.key, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["access_token"], "at-reconnected");
}

async fn a_late_failure_does_not_touch_a_lease_taken_over_meanwhile(backend: Backend) {
    let mut f = in_flight(backend, "acct-1", false).await;
    let second = take_over(&f.app, &f.seeded.id, SECOND);

    // The first holder's answer arrives: invalid_grant.
    f.answer_arrives().await;

    let after = f.app.connection(&f.seeded.id);
    assert_eq!(
        after.lease_owner.as_deref(),
        Some(SECOND),
        "the first holder's late failure took the row from the lease's holder: {after:?}"
    );
    assert_eq!(after.status(), Status::Connected, "{after:?}");
    assert_eq!(after.failure_count, 0, "{after:?}");
    assert_eq!(after.version, second.version);
}

async fn a_late_refusal_after_a_reconnect_records_no_needs_reconnect_event(backend: Backend) {
    let mut f = in_flight(backend, ACCOUNT, false).await;
    reconnect(&f.app, &f.fake).await;
    f.answer_arrives().await;

    assert_eq!(f.app.connection(&f.seeded.id).status(), Status::Connected);
    let kinds = event_kinds(&f.app, &f.seeded.id);
    assert!(
        !kinds.contains(&"needs_reconnect".to_string()),
        "a needs_reconnect event (a webhook, where configured) for a row the refusal did not touch: {kinds:?}"
    );
}
