//! Key rotation: reading, re-sealing and replacing stored ciphertexts.

use super::row::{aad, Connection};
use crate::crypto::{CryptoError, KeyRing};
use crate::db::schema::connections;
use crate::db::DbConn;
use crate::ids::{ConnectionId, ProviderKey, TenantId};
use diesel::prelude::*;

/// A sealed value as stored, with what is needed to re-seal it in place.
#[derive(Debug, Clone, Queryable)]
pub struct SealedRow {
    pub id: ConnectionId,
    pub tenant_id: TenantId,
    pub provider: ProviderKey,
    pub key_id: Option<String>,
    pub bytes: Option<Vec<u8>>,
    pub version: i64,
}

impl Connection {
    /// Opens and re-seals a stored row (used by key rotation).
    pub fn reseal(
        ring: &KeyRing,
        row: &SealedRow,
    ) -> Result<Option<crate::crypto::Sealed>, CryptoError> {
        let (Some(bytes), Some(kid)) = (&row.bytes, &row.key_id) else {
            return Ok(None);
        };
        let a = aad(&row.id, &row.tenant_id, &row.provider);
        let plain = ring.open(kid, bytes, a)?;
        Ok(Some(ring.seal(&plain, a)))
    }

    /// Up to `limit` sealed rows not under `primary`, in id order after `after`.
    pub fn sealed_batch(
        conn: &mut DbConn,
        primary: &str,
        after: &str,
        limit: i64,
    ) -> QueryResult<Vec<SealedRow>> {
        connections::table
            .filter(connections::key_id.is_not_null())
            .filter(connections::key_id.ne(primary))
            .filter(connections::id.gt(after))
            .order(connections::id.asc())
            .limit(limit)
            .select((
                connections::id,
                connections::tenant_id,
                connections::provider,
                connections::key_id,
                connections::token_ciphertext,
                connections::version,
            ))
            .load(conn)
    }

    /// Replaces a row's ciphertext if nobody wrote the row in between. The
    /// version is left alone: the token set itself did not change.
    pub fn replace_sealed(
        conn: &mut DbConn,
        row: &SealedRow,
        sealed: &crate::crypto::Sealed,
    ) -> QueryResult<bool> {
        diesel::update(
            connections::table
                .find(&row.id)
                .filter(connections::version.eq(row.version))
                .filter(connections::key_id.eq(row.key_id.as_deref().unwrap_or_default())),
        )
        .set((
            connections::token_ciphertext.eq(&sealed.bytes),
            connections::key_id.eq(&sealed.key_id),
        ))
        .execute(conn)
        .map(|n| n == 1)
    }

    /// Rows per key id.
    pub fn count_by_key(conn: &mut DbConn) -> QueryResult<Vec<(Option<String>, i64)>> {
        connections::table
            .filter(connections::key_id.is_not_null())
            .group_by(connections::key_id)
            .select((connections::key_id, diesel::dsl::count_star()))
            .order(connections::key_id.asc())
            .load(conn)
    }

    /// Whether any row is sealed under `key_id` (an index lookup).
    pub fn uses_key(conn: &mut DbConn, key_id: &str) -> QueryResult<bool> {
        diesel::select(diesel::dsl::exists(
            connections::table.filter(connections::key_id.eq(key_id)),
        ))
        .get_result(conn)
    }
}
