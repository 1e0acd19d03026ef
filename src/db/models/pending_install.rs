//! Provider-initiated installs no tenant has claimed yet (a marketplace's
//! installs reach the callback without a state, so without a tenant). The grant is sealed like a connection's token set, bound to this
//! row; the row lives until it is claimed, replaced or swept.

use crate::crypto::{Aad, CryptoError, KeyRing, Sealed};
use crate::db::models::connection::{SealedRow, TokenSet};
use crate::db::schema::pending_installs;
use crate::db::{new_id, now, DbConn};
use crate::ids::{AccountId, ProviderKey};
use chrono::NaiveDateTime;
use diesel::prelude::*;

/// `Debug` shows the ciphertext's length only.
#[derive(Clone, Queryable, Selectable, Identifiable)]
#[diesel(table_name = pending_installs)]
pub struct PendingInstall {
    pub id: String,
    pub provider: ProviderKey,
    pub account_id: AccountId,
    pub account_name: Option<String>,
    /// JSON array of granted scopes.
    pub scopes: String,
    /// JSON object of non-secret metadata (the provider's `keep_fields`).
    pub metadata: String,
    pub token_ciphertext: Vec<u8>,
    pub key_id: String,
    /// When the access token lapses (`None`: it does not).
    pub token_expires_at: Option<NaiveDateTime>,
    pub created_at: NaiveDateTime,
    /// When the install is swept if nobody claimed it.
    pub expires_at: NaiveDateTime,
}

impl std::fmt::Debug for PendingInstall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingInstall")
            .field("id", &self.id)
            .field("provider", &self.provider)
            .field("account_id", &self.account_id)
            .field("ciphertext_len", &self.token_ciphertext.len())
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// An install to hold.
#[derive(Debug)]
pub struct NewInstall<'a> {
    pub provider: &'a ProviderKey,
    pub account_id: &'a AccountId,
    pub account_name: Option<&'a str>,
    pub scopes: &'a [String],
    pub metadata: &'a serde_json::Value,
    /// The business the account belongs to (the provider's `parent_account`).
    pub parent_account_id: Option<&'a AccountId>,
    pub tokens: &'a TokenSet,
    pub token_expires_at: Option<NaiveDateTime>,
    /// How long it is held from now.
    pub held_for: chrono::Duration,
}

fn aad<'a>(id: &'a str, provider: &'a str) -> Aad<'a> {
    Aad::PendingInstall { id, provider }
}

impl PendingInstall {
    /// Holds an install, replacing any earlier unclaimed one of the same
    /// account (whose id then claims nothing). Returns the row.
    pub fn hold(
        conn: &mut DbConn,
        ring: &KeyRing,
        new: &NewInstall<'_>,
    ) -> QueryResult<PendingInstall> {
        let plaintext = serde_json::to_vec(new.tokens)
            .map_err(|e| diesel::result::Error::SerializationError(Box::new(e)))?;
        let id = new_id();
        let sealed = ring.seal(&plaintext, aad(&id, new.provider));
        let t = now();
        conn.transaction(|conn| {
            PendingInstall::drop_account(conn, new.provider, new.account_id)?;
            diesel::insert_into(pending_installs::table)
                .values((
                    pending_installs::id.eq(&id),
                    pending_installs::provider.eq(new.provider),
                    pending_installs::account_id.eq(new.account_id),
                    pending_installs::account_name.eq(new.account_name),
                    pending_installs::scopes
                        .eq(serde_json::to_string(new.scopes).unwrap_or_else(|_| "[]".into())),
                    pending_installs::metadata.eq(new.metadata.to_string()),
                    pending_installs::parent_account_id.eq(new.parent_account_id),
                    pending_installs::token_ciphertext.eq(&sealed.bytes),
                    pending_installs::key_id.eq(&sealed.key_id),
                    pending_installs::token_expires_at.eq(new.token_expires_at),
                    pending_installs::created_at.eq(t),
                    pending_installs::expires_at.eq(t + new.held_for),
                ))
                .execute(conn)?;
            PendingInstall::by_id(conn, &id)?.ok_or(diesel::result::Error::NotFound)
        })
    }

    pub fn by_id(conn: &mut DbConn, id: &str) -> QueryResult<Option<PendingInstall>> {
        pending_installs::table
            .find(id)
            .select(PendingInstall::as_select())
            .first(conn)
            .optional()
    }

    /// The unexpired installs, newest first (up to `limit`).
    pub fn unclaimed(conn: &mut DbConn, limit: i64) -> QueryResult<Vec<PendingInstall>> {
        pending_installs::table
            .filter(pending_installs::expires_at.gt(now()))
            .order((
                pending_installs::created_at.desc(),
                pending_installs::id.asc(),
            ))
            .limit(limit)
            .select(PendingInstall::as_select())
            .load(conn)
    }

    /// Up to `limit` installs whose day is over.
    pub fn expired(conn: &mut DbConn, limit: i64) -> QueryResult<Vec<PendingInstall>> {
        pending_installs::table
            .filter(pending_installs::expires_at.le(now()))
            .order(pending_installs::expires_at.asc())
            .limit(limit)
            .select(PendingInstall::as_select())
            .load(conn)
    }

    /// Deletes the row; `true` for exactly one caller (the one that claims,
    /// or sweeps, it).
    pub fn take(conn: &mut DbConn, id: &str) -> QueryResult<bool> {
        diesel::delete(pending_installs::table.find(id))
            .execute(conn)
            .map(|n| n == 1)
    }

    /// Drops the unclaimed install of `provider`'s account, if any.
    pub fn drop_account(
        conn: &mut DbConn,
        provider: &ProviderKey,
        account_id: &AccountId,
    ) -> QueryResult<usize> {
        diesel::delete(
            pending_installs::table
                .filter(pending_installs::provider.eq(provider))
                .filter(pending_installs::account_id.eq(account_id)),
        )
        .execute(conn)
    }

    /// Drops the unclaimed installs of `provider`'s accounts that belong to
    /// `parent` (an agency's company).
    pub fn drop_of_parent(
        conn: &mut DbConn,
        provider: &ProviderKey,
        parent: &AccountId,
    ) -> QueryResult<usize> {
        diesel::delete(
            pending_installs::table
                .filter(pending_installs::provider.eq(provider))
                .filter(pending_installs::parent_account_id.eq(parent)),
        )
        .execute(conn)
    }

    /// Opens the sealed grant.
    pub fn tokens(&self, ring: &KeyRing) -> Result<TokenSet, CryptoError> {
        let plain = ring.open(
            &self.key_id,
            &self.token_ciphertext,
            aad(&self.id, &self.provider),
        )?;
        serde_json::from_slice(&plain).map_err(|_| CryptoError::Tampered(self.key_id.clone()))
    }

    /// How a person recognises the account: its name, else its id.
    pub fn label(&self) -> &str {
        self.account_name.as_deref().unwrap_or(&self.account_id)
    }

    pub fn scopes(&self) -> Vec<String> {
        serde_json::from_str(&self.scopes).unwrap_or_default()
    }

    pub fn metadata(&self) -> serde_json::Value {
        serde_json::from_str(&self.metadata).unwrap_or_else(|_| serde_json::json!({}))
    }

    /// Opens and re-seals a stored grant (used by key rotation).
    pub fn reseal(ring: &KeyRing, row: &SealedRow) -> Result<Option<Sealed>, CryptoError> {
        let (Some(bytes), Some(kid)) = (&row.bytes, &row.key_id) else {
            return Ok(None);
        };
        let a = aad(&row.id, &row.provider);
        let plain = ring.open(kid, bytes, a)?;
        Ok(Some(ring.seal(&plain, a)))
    }

    /// Up to `limit` rows not under `primary`, in id order after `after`. The
    /// ciphertext itself is the compare-and-swap token.
    pub fn sealed_batch(
        conn: &mut DbConn,
        primary: &str,
        after: &str,
        limit: i64,
    ) -> QueryResult<Vec<SealedRow>> {
        let rows: Vec<(String, ProviderKey, String, Vec<u8>)> = pending_installs::table
            .filter(pending_installs::key_id.ne(primary))
            .filter(pending_installs::id.gt(after))
            .order(pending_installs::id.asc())
            .limit(limit)
            .select((
                pending_installs::id,
                pending_installs::provider,
                pending_installs::key_id,
                pending_installs::token_ciphertext,
            ))
            .load(conn)?;
        Ok(rows
            .into_iter()
            .map(|(id, provider, key_id, bytes)| SealedRow {
                id: crate::ids::ConnectionId::known(id),
                tenant_id: crate::ids::TenantId::known(""),
                provider,
                key_id: Some(key_id),
                bytes: Some(bytes),
                version: 0,
            })
            .collect())
    }

    /// Replaces the sealed grant if the row still holds the one we read.
    pub fn replace_sealed(
        conn: &mut DbConn,
        row: &SealedRow,
        sealed: &Sealed,
    ) -> QueryResult<bool> {
        let old = row.bytes.clone().unwrap_or_default();
        diesel::update(
            pending_installs::table
                .find(row.id.as_str())
                .filter(pending_installs::token_ciphertext.eq(old)),
        )
        .set((
            pending_installs::token_ciphertext.eq(&sealed.bytes),
            pending_installs::key_id.eq(&sealed.key_id),
        ))
        .execute(conn)
        .map(|n| n == 1)
    }

    pub fn count_by_key(conn: &mut DbConn) -> QueryResult<Vec<(String, i64)>> {
        pending_installs::table
            .group_by(pending_installs::key_id)
            .select((pending_installs::key_id, diesel::dsl::count_star()))
            .order(pending_installs::key_id.asc())
            .load(conn)
    }

    pub fn uses_key(conn: &mut DbConn, key_id: &str) -> QueryResult<bool> {
        diesel::select(diesel::dsl::exists(
            pending_installs::table.filter(pending_installs::key_id.eq(key_id)),
        ))
        .get_result(conn)
    }
}
