//! Pending authorizations. The state value itself is stored only as a hash;
//! the PKCE verifier is sealed like a token.

use crate::crypto::{Aad, CryptoError, KeyRing, Sealed};
use crate::db::models::connection::SealedRow;
use crate::db::schema::oauth_states;
use crate::db::DbConn;
use chrono::NaiveDateTime;
use diesel::prelude::*;

#[derive(Debug, Clone, Queryable, Selectable, Identifiable)]
#[diesel(table_name = oauth_states)]
pub struct OAuthState {
    pub id: String,
    pub state_hash: String,
    pub tenant_id: String,
    pub user_id: Option<String>,
    pub session_binding: Option<String>,
    pub provider: String,
    pub pkce_ciphertext: Option<Vec<u8>>,
    pub key_id: Option<String>,
    pub redirect_uri: String,
    pub return_to: Option<String>,
    pub popup: bool,
    pub expires_at: NaiveDateTime,
    pub consumed_at: Option<NaiveDateTime>,
    pub created_at: NaiveDateTime,
}

fn aad<'a>(id: &'a str, tenant_id: &'a str, provider: &'a str) -> Aad<'a> {
    Aad::OAuthState {
        id,
        tenant_id,
        provider,
    }
}

impl OAuthState {
    /// Opens and re-seals a stored PKCE verifier (used by key rotation).
    pub fn reseal(ring: &KeyRing, row: &SealedRow) -> Result<Option<Sealed>, CryptoError> {
        let (Some(bytes), Some(kid)) = (&row.bytes, &row.key_id) else {
            return Ok(None);
        };
        let a = aad(&row.id, &row.tenant_id, &row.provider);
        let plain = ring.open(kid, bytes, a)?;
        Ok(Some(ring.seal(&plain, a)))
    }

    /// Up to `limit` sealed rows not under `primary`, in id order after `after`.
    /// States have no version: the ciphertext itself is the compare-and-swap token.
    pub fn sealed_batch(
        conn: &mut DbConn,
        primary: &str,
        after: &str,
        limit: i64,
    ) -> QueryResult<Vec<SealedRow>> {
        oauth_states::table
            .filter(oauth_states::key_id.is_not_null())
            .filter(oauth_states::key_id.ne(primary))
            .filter(oauth_states::id.gt(after))
            .order(oauth_states::id.asc())
            .limit(limit)
            .select((
                oauth_states::id,
                oauth_states::tenant_id,
                oauth_states::provider,
                oauth_states::key_id,
                oauth_states::pkce_ciphertext,
                0i64.into_sql::<diesel::sql_types::BigInt>(),
            ))
            .load(conn)
    }

    /// Replaces the sealed verifier if the row still holds the one we read.
    pub fn replace_sealed(
        conn: &mut DbConn,
        row: &SealedRow,
        sealed: &Sealed,
    ) -> QueryResult<bool> {
        let old = row.bytes.clone().unwrap_or_default();
        diesel::update(
            oauth_states::table
                .find(&row.id)
                .filter(oauth_states::pkce_ciphertext.eq(old)),
        )
        .set((
            oauth_states::pkce_ciphertext.eq(&sealed.bytes),
            oauth_states::key_id.eq(&sealed.key_id),
        ))
        .execute(conn)
        .map(|n| n == 1)
    }

    pub fn count_by_key(conn: &mut DbConn) -> QueryResult<Vec<(Option<String>, i64)>> {
        oauth_states::table
            .filter(oauth_states::key_id.is_not_null())
            .group_by(oauth_states::key_id)
            .select((oauth_states::key_id, diesel::dsl::count_star()))
            .order(oauth_states::key_id.asc())
            .load(conn)
    }

    pub fn uses_key(conn: &mut DbConn, key_id: &str) -> QueryResult<bool> {
        diesel::select(diesel::dsl::exists(
            oauth_states::table.filter(oauth_states::key_id.eq(key_id)),
        ))
        .get_result(conn)
    }
}
