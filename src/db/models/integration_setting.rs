//! Per-tenant integration settings: whether a tenant uses a provider the
//! operator enabled, and its preferences for it (a JSON object). No row
//! means the defaults: enabled, no settings.

use crate::db::schema::integration_settings;
use crate::db::{insert_integration_setting_if_absent, now, DbConn};
use crate::error::{AppError, AppResult, Code};
use crate::ids::{ProviderKey, TenantId};
use chrono::NaiveDateTime;
use diesel::prelude::*;

/// The settings text of a pair that has none.
pub const NO_SETTINGS: &str = "{}";

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = integration_settings)]
pub struct IntegrationSetting {
    pub tenant_id: TenantId,
    pub provider: ProviderKey,
    pub enabled: bool,
    /// A JSON object, serialised by Tether (compact, keys in order), so that
    /// equal settings are equal text.
    pub settings: String,
    pub updated_at: NaiveDateTime,
}

/// What a [`IntegrationSetting::save`] found and left.
#[derive(Debug, Clone)]
pub struct Saved {
    /// Enabled and settings before (the defaults for a pair never written).
    pub was_enabled: bool,
    pub old_settings: String,
    /// The row afterwards; `None` when the pair still has the defaults and
    /// was never written.
    pub row: Option<IntegrationSetting>,
}

impl Saved {
    pub fn enabled(&self) -> bool {
        self.row.as_ref().is_none_or(|r| r.enabled)
    }

    pub fn settings(&self) -> &str {
        self.row
            .as_ref()
            .map_or(NO_SETTINGS, |r| r.settings.as_str())
    }

    pub fn enabled_changed(&self) -> bool {
        self.enabled() != self.was_enabled
    }

    pub fn settings_changed(&self) -> bool {
        self.settings() != self.old_settings
    }
}

impl IntegrationSetting {
    /// The tenant's row for the provider, if it was ever written.
    pub fn find(
        conn: &mut DbConn,
        tenant_id: &TenantId,
        provider: &ProviderKey,
    ) -> QueryResult<Option<IntegrationSetting>> {
        integration_settings::table
            .find((tenant_id, provider))
            .select(IntegrationSetting::as_select())
            .first(conn)
            .optional()
    }

    /// Every row of the tenant, by provider.
    pub fn for_tenant(
        conn: &mut DbConn,
        tenant_id: &TenantId,
    ) -> QueryResult<Vec<IntegrationSetting>> {
        integration_settings::table
            .filter(integration_settings::tenant_id.eq(tenant_id))
            .order(integration_settings::provider.asc())
            .select(IntegrationSetting::as_select())
            .load(conn)
    }

    /// Whether the tenant switched the provider off.
    pub fn is_disabled(
        conn: &mut DbConn,
        tenant_id: &TenantId,
        provider: &ProviderKey,
    ) -> QueryResult<bool> {
        diesel::select(diesel::dsl::exists(
            integration_settings::table
                .find((tenant_id, provider))
                .filter(integration_settings::enabled.eq(false)),
        ))
        .get_result(conn)
    }

    /// Sets what is given (`None` keeps the current value); `settings` must
    /// be a validated JSON object in Tether's serialisation. One transaction;
    /// a row is written only when something changes. A concurrent save of
    /// the same pair makes this one a 409 `concurrent_update` that changes
    /// nothing.
    pub fn save(
        conn: &mut DbConn,
        tenant_id: &TenantId,
        provider: &ProviderKey,
        enabled: Option<bool>,
        settings: Option<&str>,
    ) -> AppResult<Saved> {
        conn.transaction(|conn| {
            let t = now();
            // Writes first: on SQLite that takes the write lock up front
            // (waiting on busy_timeout) instead of failing a lock upgrade.
            let inserted = insert_integration_setting_if_absent(conn, tenant_id, provider, t)?;
            let row = integration_settings::table
                .find((tenant_id, provider))
                .select(IntegrationSetting::as_select())
                .first(conn)?;
            let (was_enabled, old_settings) = (row.enabled, row.settings.clone());
            let new_enabled = enabled.unwrap_or(was_enabled);
            let new_settings = settings.unwrap_or(&old_settings).to_string();
            if new_enabled == was_enabled && new_settings == old_settings {
                if inserted {
                    // Nothing to keep: the pair stays one that was never written.
                    diesel::delete(integration_settings::table.find((tenant_id, provider)))
                        .execute(conn)?;
                }
                return Ok(Saved {
                    was_enabled,
                    old_settings,
                    row: (!inserted).then_some(row),
                });
            }
            // Compare-and-swap on what was read: on PostgreSQL another save
            // may have committed in between.
            let written = diesel::update(
                integration_settings::table
                    .find((tenant_id, provider))
                    .filter(integration_settings::enabled.eq(was_enabled))
                    .filter(integration_settings::settings.eq(&old_settings)),
            )
            .set((
                integration_settings::enabled.eq(new_enabled),
                integration_settings::settings.eq(&new_settings),
                integration_settings::updated_at.eq(t),
            ))
            .execute(conn)?;
            if written != 1 {
                return Err(AppError::conflict(
                    Code::ConcurrentUpdate,
                    "these settings were changed at the same moment; read them again and retry",
                ));
            }
            Ok(Saved {
                was_enabled,
                old_settings,
                row: Some(IntegrationSetting {
                    enabled: new_enabled,
                    settings: new_settings,
                    updated_at: t,
                    ..row
                }),
            })
        })
    }

    /// Erases every integration setting of the tenant (its removal);
    /// returns how many rows went.
    pub fn delete_for_tenant(conn: &mut DbConn, tenant_id: &TenantId) -> QueryResult<usize> {
        diesel::delete(
            integration_settings::table.filter(integration_settings::tenant_id.eq(tenant_id)),
        )
        .execute(conn)
    }
}
