//! A tenant's settings for one account of a provider: a JSON object whose
//! keys override the provider's settings (`integration_setting`) for that
//! account. No row: the account has the provider's settings.

use crate::db::schema::account_settings;
use crate::db::{now, DbConn};
use crate::ids::{AccountId, ProviderKey, TenantId};
use chrono::NaiveDateTime;
use diesel::prelude::*;

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = account_settings)]
pub struct AccountSetting {
    pub tenant_id: TenantId,
    pub provider: ProviderKey,
    pub account_id: AccountId,
    /// A JSON object, serialised by Tether (compact, keys in order).
    pub settings: String,
    pub updated_at: NaiveDateTime,
}

impl AccountSetting {
    pub fn find(
        conn: &mut DbConn,
        tenant_id: &TenantId,
        provider: &ProviderKey,
        account_id: &AccountId,
    ) -> QueryResult<Option<AccountSetting>> {
        account_settings::table
            .find((tenant_id, provider, account_id))
            .select(AccountSetting::as_select())
            .first(conn)
            .optional()
    }

    /// The tenant's settings of every account of `provider` that has some.
    pub fn of_provider(
        conn: &mut DbConn,
        tenant_id: &TenantId,
        provider: &ProviderKey,
    ) -> QueryResult<Vec<AccountSetting>> {
        account_settings::table
            .filter(account_settings::tenant_id.eq(tenant_id))
            .filter(account_settings::provider.eq(provider))
            .select(AccountSetting::as_select())
            .load(conn)
    }

    /// Writes the account's settings (`{}`: none of its own, the row goes);
    /// returns the settings it had before (`{}` for none).
    pub fn save(
        conn: &mut DbConn,
        tenant_id: &TenantId,
        provider: &ProviderKey,
        account_id: &AccountId,
        settings: &str,
    ) -> QueryResult<String> {
        let before = AccountSetting::find(conn, tenant_id, provider, account_id)?
            .map_or_else(|| "{}".to_string(), |r| r.settings);
        let row = account_settings::table.find((tenant_id, provider, account_id));
        if settings == "{}" {
            diesel::delete(row).execute(conn)?;
        } else if before == "{}" {
            diesel::insert_into(account_settings::table)
                .values((
                    account_settings::tenant_id.eq(tenant_id),
                    account_settings::provider.eq(provider),
                    account_settings::account_id.eq(account_id),
                    account_settings::settings.eq(settings),
                    account_settings::updated_at.eq(now()),
                ))
                .execute(conn)?;
        } else {
            diesel::update(row)
                .set((
                    account_settings::settings.eq(settings),
                    account_settings::updated_at.eq(now()),
                ))
                .execute(conn)?;
        }
        Ok(before)
    }
}
