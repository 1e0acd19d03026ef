//! Tenants: the CRM's client businesses, keyed by the CRM's own id.

use crate::db::schema::{
    api_keys, connect_links, connections, events, integration_settings, oauth_states, tenants,
    users,
};
use crate::db::{new_id, now, DbConn};
use crate::error::{AppError, AppResult, Code};
use crate::ids::{ExternalTenantId, TenantId};
use chrono::NaiveDateTime;
use diesel::prelude::*;

#[derive(Debug, Clone, Queryable, Selectable, Identifiable, serde::Serialize)]
#[diesel(table_name = tenants)]
pub struct Tenant {
    pub id: TenantId,
    pub external_id: ExternalTenantId,
    pub name: String,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

/// What a tenant holds, table by table: what its removal erases (or, in a
/// dry run, would erase).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Holdings {
    /// Connection rows, connected or not.
    pub connections: i64,
    /// Connections holding tokens.
    pub tokens: i64,
    /// Admins who sign in to the settings pages.
    pub users: i64,
    pub connect_links: i64,
    /// Pending (or finished) authorizations.
    pub oauth_states: i64,
    /// The tenant's audit trail.
    pub events: i64,
    /// API keys limited to this tenant.
    pub api_keys: i64,
    /// Integration settings (enabled switch, preferences), one per provider.
    pub integration_settings: i64,
    /// Webhook deliveries naming the tenant still queued (counted and
    /// erased by the removal itself, `offboarding`, which owns the outbox's
    /// part: 0 here).
    pub webhook_deliveries: i64,
}

#[derive(Insertable)]
#[diesel(table_name = tenants)]
struct NewTenant<'a> {
    id: &'a str,
    external_id: &'a str,
    name: &'a str,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
}

fn validate_name(name: &str) -> AppResult<()> {
    if name.trim().is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(AppError::bad_request(
            Code::InvalidName,
            "a tenant name is 1 to 200 printable characters",
        ));
    }
    Ok(())
}

impl Tenant {
    /// Creates a tenant; the external id must be new.
    pub fn create(conn: &mut DbConn, external_id: &str, name: &str) -> AppResult<Tenant> {
        let external = ExternalTenantId::parse(external_id)?;
        validate_name(name)?;
        if Tenant::by_external_id(conn, &external)?.is_some() {
            return Err(AppError::conflict(
                Code::TenantExists,
                format!("tenant '{external_id}' already exists"),
            ));
        }
        let id = new_id();
        let t = now();
        diesel::insert_into(tenants::table)
            .values(NewTenant {
                id: &id,
                external_id,
                name: name.trim(),
                created_at: t,
                updated_at: t,
            })
            .execute(conn)
            .map_err(|e| match e {
                diesel::result::Error::DatabaseError(
                    diesel::result::DatabaseErrorKind::UniqueViolation,
                    _,
                ) => AppError::conflict(
                    Code::TenantExists,
                    format!("tenant '{external_id}' already exists"),
                ),
                e => e.into(),
            })?;
        Ok(tenants::table
            .find(&id)
            .select(Tenant::as_select())
            .first(conn)?)
    }

    /// Creates the tenant, or renames it if it exists. Returns it and whether it was created.
    pub fn provision(
        conn: &mut DbConn,
        external_id: &str,
        name: &str,
    ) -> AppResult<(Tenant, bool)> {
        let external = ExternalTenantId::parse(external_id)?;
        validate_name(name)?;
        match Tenant::by_external_id(conn, &external)? {
            Some(t) => {
                diesel::update(tenants::table.find(&t.id))
                    .set((tenants::name.eq(name.trim()), tenants::updated_at.eq(now())))
                    .execute(conn)?;
                Ok((
                    tenants::table
                        .find(&t.id)
                        .select(Tenant::as_select())
                        .first(conn)?,
                    false,
                ))
            }
            None => match Tenant::create(conn, external_id, name) {
                Ok(t) => Ok((t, true)),
                // Created meanwhile by a concurrent call: rename it instead.
                Err(e) if e.is(Code::TenantExists) => Tenant::provision(conn, external_id, name),
                Err(e) => Err(e),
            },
        }
    }

    pub fn by_external_id(
        conn: &mut DbConn,
        external_id: &ExternalTenantId,
    ) -> QueryResult<Option<Tenant>> {
        tenants::table
            .filter(tenants::external_id.eq(external_id))
            .select(Tenant::as_select())
            .first(conn)
            .optional()
    }

    pub fn by_id(conn: &mut DbConn, id: &TenantId) -> QueryResult<Option<Tenant>> {
        tenants::table
            .find(id)
            .select(Tenant::as_select())
            .first(conn)
            .optional()
    }

    /// The tenant with that external id, or a 404 naming it.
    pub fn require(conn: &mut DbConn, external_id: &ExternalTenantId) -> AppResult<Tenant> {
        Tenant::by_external_id(conn, external_id)?
            .ok_or_else(|| AppError::not_found(format!("no tenant '{external_id}'")))
    }

    pub fn list(conn: &mut DbConn) -> QueryResult<Vec<Tenant>> {
        tenants::table
            .order(tenants::external_id.asc())
            .select(Tenant::as_select())
            .load(conn)
    }

    /// What the tenant holds, counted.
    pub fn holdings(conn: &mut DbConn, id: &TenantId) -> QueryResult<Holdings> {
        Ok(Holdings {
            connections: connections::table
                .filter(connections::tenant_id.eq(id))
                .count()
                .get_result(conn)?,
            tokens: connections::table
                .filter(connections::tenant_id.eq(id))
                .filter(connections::token_ciphertext.is_not_null())
                .count()
                .get_result(conn)?,
            users: users::table
                .filter(users::tenant_id.eq(id))
                .count()
                .get_result(conn)?,
            connect_links: connect_links::table
                .filter(connect_links::tenant_id.eq(id))
                .count()
                .get_result(conn)?,
            oauth_states: oauth_states::table
                .filter(oauth_states::tenant_id.eq(id))
                .count()
                .get_result(conn)?,
            events: events::table
                .filter(events::tenant_id.eq(id))
                .count()
                .get_result(conn)?,
            api_keys: api_keys::table
                .filter(api_keys::tenant_id.eq(id))
                .count()
                .get_result(conn)?,
            integration_settings: integration_settings::table
                .filter(integration_settings::tenant_id.eq(id))
                .count()
                .get_result(conn)?,
            webhook_deliveries: 0,
        })
    }

    /// Deletes the tenant and every row it owns, children first (the
    /// foreign keys would cascade, but the counts are the report); returns
    /// what was deleted. The caller runs it in a transaction.
    pub fn erase(conn: &mut DbConn, id: &TenantId) -> QueryResult<Holdings> {
        let tokens = connections::table
            .filter(connections::tenant_id.eq(id))
            .filter(connections::token_ciphertext.is_not_null())
            .count()
            .get_result(conn)?;
        let integration_settings =
            super::integration_setting::IntegrationSetting::delete_for_tenant(conn, id)? as i64;
        let erased = Holdings {
            integration_settings,
            oauth_states: diesel::delete(oauth_states::table.filter(oauth_states::tenant_id.eq(id)))
                .execute(conn)? as i64,
            connect_links: diesel::delete(
                connect_links::table.filter(connect_links::tenant_id.eq(id)),
            )
            .execute(conn)? as i64,
            events: diesel::delete(events::table.filter(events::tenant_id.eq(id))).execute(conn)?
                as i64,
            connections: diesel::delete(connections::table.filter(connections::tenant_id.eq(id)))
                .execute(conn)? as i64,
            tokens,
            users: diesel::delete(users::table.filter(users::tenant_id.eq(id))).execute(conn)?
                as i64,
            api_keys: diesel::delete(api_keys::table.filter(api_keys::tenant_id.eq(id)))
                .execute(conn)? as i64,
            webhook_deliveries: 0,
        };
        diesel::delete(tenants::table.find(id)).execute(conn)?;
        Ok(erased)
    }

    pub fn count(conn: &mut DbConn) -> QueryResult<i64> {
        tenants::table.count().get_result(conn)
    }
}
