//! API keys for the CRM's internal services. Only a SHA-256 of the secret is
//! stored; the key is shown once, when created.

use crate::crypto::{random_token, sha256_hex, Secret};
use crate::db::schema::{api_keys, tenants};
use crate::db::{new_id, now, DbConn};
use crate::error::{AppError, AppResult, Code};
use crate::ids::TenantId;
use chrono::NaiveDateTime;
use diesel::prelude::*;
use subtle::ConstantTimeEq;

/// `Debug` (at the end of the file) hides the secret's hash.
#[derive(Clone, Queryable, Selectable, Identifiable)]
#[diesel(table_name = api_keys)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    pub prefix: String,
    pub secret_hash: String,
    /// `None`: the key may act for every tenant.
    pub tenant_id: Option<TenantId>,
    pub is_admin: bool,
    pub created_at: NaiveDateTime,
    pub last_used_at: Option<NaiveDateTime>,
    pub revoked_at: Option<NaiveDateTime>,
}

#[derive(Insertable)]
#[diesel(table_name = api_keys)]
struct NewApiKey<'a> {
    id: &'a str,
    name: &'a str,
    prefix: &'a str,
    secret_hash: &'a str,
    tenant_id: Option<&'a TenantId>,
    is_admin: bool,
    created_at: NaiveDateTime,
}

/// Keys read `tth_<prefix>_<secret>`; the prefix finds the row, the whole key is hashed.
const KEY_TAG: &str = "tth";

impl ApiKey {
    /// Creates a key and returns it with its secret, which is not stored.
    pub fn create(
        conn: &mut DbConn,
        name: &str,
        tenant_id: Option<&TenantId>,
        is_admin: bool,
    ) -> AppResult<(ApiKey, Secret<String>)> {
        if name.trim().is_empty()
            || name.chars().count() > 100
            || name.chars().any(char::is_control)
        {
            return Err(AppError::bad_request(
                Code::InvalidName,
                "a key name is 1 to 100 printable characters",
            ));
        }
        let prefix: String = random_token(6).replace(['-', '_'], "x");
        let key = format!("{KEY_TAG}_{prefix}_{}", random_token(32));
        let id = new_id();
        diesel::insert_into(api_keys::table)
            .values(NewApiKey {
                id: &id,
                name: name.trim(),
                prefix: &prefix,
                secret_hash: &sha256_hex(key.as_bytes()),
                tenant_id,
                is_admin,
                created_at: now(),
            })
            .execute(conn)?;
        let row = api_keys::table
            .find(&id)
            .select(ApiKey::as_select())
            .first(conn)?;
        Ok((row, Secret::new(key)))
    }

    /// The live key matching `presented`, compared in constant time.
    pub fn authenticate(conn: &mut DbConn, presented: &str) -> AppResult<ApiKey> {
        let invalid =
            || AppError::unauthorized("the API key is missing, malformed, revoked or unknown");
        let mut parts = presented.splitn(3, '_');
        let (Some(KEY_TAG), Some(prefix), Some(_)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid());
        };
        let key = api_keys::table
            .filter(api_keys::prefix.eq(prefix))
            .filter(api_keys::revoked_at.is_null())
            .select(ApiKey::as_select())
            .first(conn)
            .optional()?
            .ok_or_else(invalid)?;
        let presented_hash = sha256_hex(presented.as_bytes());
        if !bool::from(presented_hash.as_bytes().ct_eq(key.secret_hash.as_bytes())) {
            return Err(invalid());
        }
        Ok(key)
    }

    /// Records that the key was used (callers throttle this).
    pub fn touch(conn: &mut DbConn, id: &str) -> QueryResult<usize> {
        diesel::update(api_keys::table.find(id))
            .set(api_keys::last_used_at.eq(now()))
            .execute(conn)
    }

    /// Every key with its tenant's external id, newest first.
    pub fn list(conn: &mut DbConn) -> QueryResult<Vec<(ApiKey, Option<String>)>> {
        api_keys::table
            .left_join(tenants::table)
            .order(api_keys::created_at.desc())
            .select((ApiKey::as_select(), tenants::external_id.nullable()))
            .load(conn)
    }

    /// Revokes the key with that prefix; an already revoked key is reported as such.
    pub fn revoke(conn: &mut DbConn, prefix: &str) -> AppResult<ApiKey> {
        let key = api_keys::table
            .filter(api_keys::prefix.eq(prefix))
            .select(ApiKey::as_select())
            .first(conn)
            .optional()?
            .ok_or_else(|| AppError::not_found(format!("no API key with prefix '{prefix}'")))?;
        if key.revoked_at.is_some() {
            return Err(AppError::conflict(
                Code::AlreadyRevoked,
                format!("API key '{prefix}' was already revoked"),
            ));
        }
        diesel::update(api_keys::table.find(&key.id))
            .set(api_keys::revoked_at.eq(now()))
            .execute(conn)?;
        Ok(key)
    }
}

/// The hash is left out: with it, a guess at the key can be checked offline.
impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("prefix", &self.prefix)
            .field("secret_hash", &crate::crypto::Redacted)
            .field("tenant_id", &self.tenant_id)
            .field("is_admin", &self.is_admin)
            .field("created_at", &self.created_at)
            .field("last_used_at", &self.last_used_at)
            .field("revoked_at", &self.revoked_at)
            .finish_non_exhaustive()
    }
}
