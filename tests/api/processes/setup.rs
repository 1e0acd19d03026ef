//! Connections, seeded through the test's own pool: each in its own tenant
//! with a grant at the strict provider; and where their rows settle once
//! nothing is in flight.

use super::instance::Instance;
use super::strict_provider::Strict;
use crate::helpers::{settings_for, Backend, TestDb};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tether::crypto::{KeyRing, Secret};
use tether::db::models::api_key::{ApiKey, Rights};
use tether::db::models::connection::{Connection, Grant, Status, TokenSet};
use tether::db::models::tenant::Tenant;
use tether::ids::{ProviderKey, TenantId};
use wiremock::MockServer;

pub(crate) struct Setup {
    /// Dropped last: the instances (declared after) are gone by then.
    pub(crate) db: TestDb,
    pub(crate) ctx: tether::startup::Context,
    pub(crate) provider: Strict,
    server: MockServer,
    /// Per connection: tenant external id, connection id, grant name.
    pub(crate) conns: Vec<(String, String, String)>,
    pub(crate) api_key: String,
    pub(crate) seeded_at: Instant,
}

impl Setup {
    /// `n` connections, each in its own tenant with a grant at the provider,
    /// expiring in `life` seconds.
    pub(crate) async fn new(backend: Backend, n: usize, life: i64, delay: Duration) -> Setup {
        let db = TestDb::new(backend);
        let ctx = tether::startup::prepare(settings_for(&db, &[])).expect("prepare the database");
        let (provider, server) = Strict::start(delay, life).await;
        let mut conn = ctx.pool.get().expect("pooled connection");
        let mut conns = Vec::new();
        for i in 0..n {
            let external = format!("proc-{i:02}");
            let tenant = Tenant::create(&mut conn, &external, &external).expect("tenant");
            let grant = format!("g{i:02}");
            provider.grant(&grant);
            let row = seed(&mut conn, &ctx.keys, &tenant.id, &grant, life);
            conns.push((external, row.id.to_string(), grant));
        }
        let (_, key) =
            ApiKey::create(&mut conn, "load", None, &Rights::unlimited(false)).expect("api key");
        drop(conn);
        Setup {
            db,
            ctx,
            provider,
            server,
            conns,
            api_key: key.expose().clone(),
            seeded_at: Instant::now(),
        }
    }

    pub(crate) fn row(&self, i: usize) -> Connection {
        Connection::by_id(
            &mut self.ctx.pool.get().expect("pooled connection"),
            &tether::ids::ConnectionId::known(self.conns[i].1.as_str()),
        )
        .expect("connection row")
    }

    pub(crate) fn stored_rt(&self, row: &Connection) -> Option<String> {
        row.tokens(&self.ctx.keys)
            .ok()
            .flatten()
            .and_then(|t| t.refresh_token)
            .map(|t| t.expose().clone())
    }

    pub(crate) fn instance(&self, name: &'static str, extra: &[(&str, &str)]) -> Instance {
        Instance::new(&self.db, name, &self.server.uri(), extra)
    }

    /// An instance of each of `names` with `extra` settings, started one
    /// after the other.
    pub(crate) async fn started(
        &self,
        names: &[&'static str],
        extra: &[(&str, &str)],
    ) -> Vec<Instance> {
        let mut instances: Vec<Instance> = names.iter().map(|n| self.instance(n, extra)).collect();
        for i in &mut instances {
            i.start().await;
        }
        instances
    }

    pub(crate) fn tenants(&self) -> Vec<String> {
        self.conns.iter().map(|(t, _, _)| t.clone()).collect()
    }
}

/// The instances of a test that runs on every instance a backend allows: one
/// on SQLite, two on PostgreSQL.
pub(crate) fn instance_names(backend: Backend) -> &'static [&'static str] {
    match backend {
        Backend::Sqlite => &["a"],
        Backend::Postgres => &["a", "b"],
    }
}

/// A freshly connected `acme` grant whose live refresh token is `rt`.
pub(crate) fn seed(
    conn: &mut tether::db::PooledConn,
    keys: &KeyRing,
    tenant_id: &str,
    rt: &str,
    life: i64,
) -> Connection {
    let access = format!("at-seed-{rt}");
    let tokens = TokenSet {
        access_token: Secret::new(access.clone()),
        refresh_token: Some(Secret::new(rt.to_string())),
        token_type: "Bearer".into(),
        raw: Secret::new(serde_json::json!({ "access_token": access, "refresh_token": rt })),
    };
    let scopes = vec!["contacts.read".to_string()];
    let metadata = serde_json::json!({});
    let t = tether::db::now();
    Connection::store_grant(
        conn,
        keys,
        &Grant {
            kind: tether::db::models::connection::Kind::OAuth,
            tenant_id: &TenantId::known(tenant_id),
            provider: &ProviderKey::known("acme"),
            account_id: &tether::ids::AccountId::known(rt),
            account_name: None,
            scopes: &scopes,
            tokens: &tokens,
            expires_at: Some(t + chrono::Duration::seconds(life)),
            refresh_expires_at: None,
            // At 80% of its life: the tests measure what Tether plans after.
            next_refresh_at: Some(t + chrono::Duration::milliseconds(life * 800)),
            metadata: &metadata,
            parent_account_id: None,
            tags: None,
        },
    )
    .expect("store grant")
}

/// Where the rows ended up once nothing is in flight.
pub(crate) struct Settled {
    /// Connections that need a reconnect, with their rows.
    pub(crate) lost: BTreeMap<usize, Connection>,
    /// Connections that are unleased and hold the provider's live refresh
    /// token, with their rows.
    pub(crate) live: BTreeMap<usize, Connection>,
    /// Connections that never got there: why.
    pub(crate) unsettled: BTreeMap<usize, String>,
}

/// Polls the rows until each connection either needs a reconnect or, read
/// twice unleased at one version around a look at the provider, holds the
/// provider's live refresh token; gives up after `within`.
pub(crate) async fn settle(setup: &Setup, within: Duration) -> Settled {
    let deadline = Instant::now() + within;
    let mut lost = BTreeMap::new();
    let mut live = BTreeMap::new();
    let mut last = BTreeMap::new();
    let unleased = |r: &Connection| r.lease_until.is_none_or(|u| u < tether::db::now());
    loop {
        let n = setup.conns.len();
        let before: Vec<Connection> = (0..n).map(|i| setup.row(i)).collect();
        let provider = setup.provider.live();
        let after: Vec<Connection> = (0..n).map(|i| setup.row(i)).collect();
        for i in 0..n {
            if lost.contains_key(&i) || live.contains_key(&i) {
                continue;
            }
            let (r1, r2) = (&before[i], &after[i]);
            let grant = &setup.conns[i].2;
            if r2.status() == Status::NeedsReconnect {
                lost.insert(i, r2.clone());
            } else if r1.version == r2.version && unleased(r1) && unleased(r2) {
                let stored = setup.stored_rt(r2);
                if stored.is_some() && stored.as_ref() == provider.get(grant) {
                    live.insert(i, r2.clone());
                } else {
                    last.insert(
                        i,
                        format!(
                            "status {}, stores {stored:?}, the provider's live one is {:?}",
                            r2.status,
                            provider.get(grant)
                        ),
                    );
                }
            } else {
                last.insert(i, format!("status {}, leased or moving", r2.status));
            }
        }
        if lost.len() + live.len() == n || Instant::now() > deadline {
            last.retain(|i, _| !lost.contains_key(i) && !live.contains_key(i));
            return Settled {
                lost,
                live,
                unsettled: last,
            };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
