//! The rows a test reads or seeds behind Tether's back: tenants, the acme
//! connection of a tenant, a connection made due or waited on, API keys, and
//! grants stored through Tether's own model.

use super::TestApp;
use diesel::prelude::*;
use tether::crypto::Secret;
use tether::db::models::api_key::{ApiKey, Rights};
use tether::db::models::connection::{Connection, Grant, TokenSet};
use tether::db::models::tenant::Tenant;
use tether::db::now;
use tether::ids::{AccountId, ConnectionId, ExternalTenantId, ProviderKey, TenantId};

impl TestApp {
    /// Everything a rejected request must leave alone, as one comparable string.
    pub fn snapshot(&self) -> String {
        #[derive(QueryableByName)]
        struct Row {
            #[diesel(sql_type = diesel::sql_types::Text)]
            v: String,
        }
        let queries = [
            "SELECT id || '|' || status || '|' || CAST(version AS TEXT) || '|' || COALESCE(key_id, '-') || '|' || CAST(updated_at AS TEXT) AS v FROM connections ORDER BY id",
            "SELECT id || '|' || COALESCE(CAST(consumed_at AS TEXT), '-') AS v FROM oauth_states ORDER BY id",
            "SELECT CAST(COUNT(*) AS TEXT) AS v FROM events",
            "SELECT id || '|' || CAST(session_generation AS TEXT) AS v FROM users ORDER BY id",
            "SELECT token_hash || '|' || COALESCE(CAST(used_at AS TEXT), '-') AS v FROM connect_links ORDER BY token_hash",
            "SELECT CAST(COUNT(*) AS TEXT) AS v FROM tenants",
            "SELECT tenant_id || '|' || provider || '|' || CAST(enabled AS TEXT) || '|' || settings || '|' || CAST(updated_at AS TEXT) AS v FROM integration_settings ORDER BY tenant_id, provider",
            "SELECT tenant_id || '|' || provider || '|' || account_id || '|' || settings || '|' || CAST(updated_at AS TEXT) AS v FROM account_settings ORDER BY tenant_id, provider, account_id",
        ];
        let mut conn = self.conn();
        queries
            .iter()
            .map(|q| {
                let rows = diesel::sql_query(*q).load::<Row>(&mut conn).unwrap();
                rows.into_iter().map(|r| r.v).collect::<Vec<_>>().join(",")
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The tenant with this external id; it must exist.
    pub fn tenant(&self, external_id: &str) -> Tenant {
        Tenant::by_external_id(&mut self.conn(), &ExternalTenantId::known(external_id))
            .unwrap()
            .unwrap_or_else(|| panic!("no tenant {external_id}"))
    }

    /// The tenant with this external id (and that name), created if missing.
    pub fn ensure_tenant(&self, external_id: &str) -> Tenant {
        let mut conn = self.conn();
        match Tenant::by_external_id(&mut conn, &ExternalTenantId::known(external_id)).unwrap() {
            Some(t) => t,
            None => Tenant::create(&mut conn, external_id, external_id).unwrap(),
        }
    }

    /// The tenant's default connection to `provider`, if it has one.
    pub fn default_connection(&self, tenant: &str, provider: &str) -> Option<Connection> {
        let t = self.tenant(tenant);
        Connection::default_for(&mut self.conn(), &t.id, &ProviderKey::known(provider)).unwrap()
    }

    /// The tenant's default `acme` connection; it must have one.
    pub fn acme_connection(&self, tenant: &str) -> Connection {
        self.default_connection(tenant, "acme")
            .unwrap_or_else(|| panic!("{tenant} has no acme connection"))
    }

    /// The tenant's `acme` connection of `account`, by account rather than as
    /// the default: it is found after a disconnect too.
    pub fn acme_account(&self, tenant: &str, account: &str) -> Connection {
        let t = self.tenant(tenant);
        Connection::find(
            &mut self.conn(),
            &t.id,
            &ProviderKey::known("acme"),
            &AccountId::known(account),
        )
        .unwrap()
        .unwrap_or_else(|| panic!("{tenant} has no acme connection of {account}"))
    }

    /// The connection row with this id.
    pub fn connection(&self, id: &str) -> Connection {
        Connection::by_id(&mut self.conn(), &ConnectionId::known(id)).unwrap()
    }

    /// Makes the connection due now, as if its time had come.
    pub fn make_due(&self, id: &str) {
        use tether::db::schema::connections;
        diesel::update(connections::table.find(id))
            .set(connections::next_refresh_at.eq(Some(now() - chrono::Duration::seconds(1))))
            .execute(&mut self.conn())
            .unwrap();
    }

    /// Waits until `done` holds for the connection: polls the row (the refresh
    /// runs on a task the scheduler spawned), failing after 20 s.
    pub async fn until(&self, id: &str, done: impl Fn(&Connection) -> bool) -> Connection {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let row = self.connection(id);
            if done(&row) {
                return row;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting; last row: {row:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// A new API key's secret: for the tenant with that external id, or
    /// global; an admin key may provision tenants.
    pub fn api_key(&self, tenant: Option<&str>, admin: bool) -> String {
        let tenant_id = tenant.map(|ext| self.tenant(ext).id);
        let (_, secret) = ApiKey::create(
            &mut self.conn(),
            "crm",
            tenant_id.as_ref(),
            &Rights::unlimited(admin),
        )
        .unwrap();
        secret.expose().clone()
    }

    /// A new API key's secret with only `scopes` (names separated by
    /// spaces), limited to `providers` if given, for every tenant.
    pub fn scoped_key(&self, scopes: &str, providers: Option<&[&str]>) -> String {
        let rights = Rights {
            scopes: tether::db::models::api_key::Scopes::parse(scopes).unwrap(),
            providers: providers.map(|p| p.iter().map(|s| s.to_string()).collect()),
        };
        let (_, secret) = ApiKey::create(&mut self.conn(), "scoped", None, &rights).unwrap();
        secret.expose().clone()
    }

    /// Stores an `acme` connection holding `rt`, as [`seed_on`] does.
    pub fn seed(
        &self,
        tenant_id: &str,
        account: &str,
        rt: &str,
        expires_in: i64,
        due_in: i64,
    ) -> Connection {
        seed_on(
            &mut self.conn(),
            &self.ctx.keys,
            tenant_id,
            account,
            rt,
            expires_in,
            due_in,
        )
    }
}

/// Stores a `demo` grant for `account` with the given tokens, through
/// Tether's own model: an hour to live, due for refresh in 48 minutes.
pub fn store(
    app: &TestApp,
    tenant_id: &str,
    account: &str,
    access: &str,
    refresh: &str,
) -> Connection {
    let tokens = TokenSet {
        access_token: Secret::new(access.to_string()),
        refresh_token: Some(Secret::new(refresh.to_string())),
        token_type: "Bearer".into(),
        raw: Secret::new(serde_json::json!({ "access_token": access, "refresh_token": refresh })),
    };
    let scopes = vec!["contacts.read".to_string()];
    let metadata = serde_json::json!({ "locationId": "loc_1" });
    Connection::store_grant(
        &mut app.conn(),
        &app.ctx.keys,
        &Grant {
            kind: tether::db::models::connection::Kind::OAuth,
            tenant_id: &TenantId::known(tenant_id),
            provider: &ProviderKey::known("demo"),
            account_id: &AccountId::known(account),
            account_name: Some("Main Street Dental"),
            scopes: &scopes,
            tokens: &tokens,
            expires_at: Some(now() + chrono::Duration::hours(1)),
            refresh_expires_at: None,
            next_refresh_at: Some(now() + chrono::Duration::minutes(48)),
            metadata: &metadata,
            parent_account_id: None,
            tags: None,
        },
    )
    .expect("store grant")
}

/// Stores an `acme` connection holding `rt`, expiring in `expires_in` seconds
/// and due for refresh in `due_in` seconds. Its access token was issued an
/// hour ago, so it is past half its life (when a refresh may happen).
pub fn seed_on(
    conn: &mut tether::db::PooledConn,
    keys: &tether::crypto::KeyRing,
    tenant_id: &str,
    account: &str,
    rt: &str,
    expires_in: i64,
    due_in: i64,
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
    let c = Connection::store_grant(
        conn,
        keys,
        &Grant {
            kind: tether::db::models::connection::Kind::OAuth,
            tenant_id: &TenantId::known(tenant_id),
            provider: &ProviderKey::known("acme"),
            account_id: &AccountId::known(account),
            account_name: None,
            scopes: &scopes,
            tokens: &tokens,
            expires_at: Some(now() + chrono::Duration::seconds(expires_in)),
            refresh_expires_at: None,
            next_refresh_at: Some(now() + chrono::Duration::seconds(due_in)),
            metadata: &metadata,
            parent_account_id: None,
            tags: None,
        },
    )
    .expect("store grant");
    issued_ago(conn, &c.id, 3600)
}

/// Makes a connection's access token `secs` old (as if issued then).
pub fn issued_ago(conn: &mut tether::db::PooledConn, id: &str, secs: i64) -> Connection {
    use tether::db::schema::connections;
    diesel::update(connections::table.find(id))
        .set(connections::last_refreshed_at.eq(Some(now() - chrono::Duration::seconds(secs))))
        .execute(conn)
        .unwrap();
    Connection::by_id(conn, &ConnectionId::known(id)).unwrap()
}
