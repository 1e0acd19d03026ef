//! Pending authorizations. The state value itself is stored only as a hash;
//! the PKCE verifier is sealed like a token.

use crate::crypto::{Aad, CryptoError, KeyRing, Sealed, Secret};
use crate::db::models::connection::SealedRow;
use crate::db::schema::oauth_states;
use crate::db::{new_id, now, DbConn};
use crate::ids::TenantId;
use chrono::NaiveDateTime;
use diesel::prelude::*;

#[derive(Debug, Clone, Queryable, Selectable, Identifiable)]
#[diesel(table_name = oauth_states)]
pub struct OAuthState {
    pub id: String,
    pub state_hash: String,
    pub tenant_id: TenantId,
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
    /// The CRM's tags of the connect link that started it (`ids::Tags`).
    pub tags: Option<String>,
    /// The listed CRM origin whose page opened a connect link's flow in a
    /// popup: the callback posts the outcome to it (and to nobody else).
    pub embed_origin: Option<String>,
    /// The account a reconnect was started for: a callback with another
    /// is refused.
    pub reconnect_account: Option<String>,
}

fn aad<'a>(id: &'a str, tenant_id: &'a str, provider: &'a str) -> Aad<'a> {
    Aad::OAuthState {
        id,
        tenant_id,
        provider,
    }
}

/// A pending authorization to record.
#[derive(Debug)]
pub struct NewState<'a> {
    pub state_hash: &'a str,
    pub tenant_id: &'a str,
    pub user_id: Option<&'a str>,
    pub session_binding: Option<&'a str>,
    pub provider: &'a str,
    pub verifier: Option<&'a Secret<String>>,
    pub redirect_uri: &'a str,
    pub return_to: Option<&'a str>,
    pub popup: bool,
    pub expires_at: NaiveDateTime,
    /// The CRM's tags, as JSON text, carried to the connection.
    pub tags: Option<&'a str>,
    /// The CRM page's origin, for a connect link opened in its popup.
    pub embed_origin: Option<&'a str>,
    /// A reconnect of this account (its provider id).
    pub reconnect_account: Option<&'a str>,
}

impl OAuthState {
    /// Records a pending authorization, sealing the PKCE verifier to the row.
    pub fn create(conn: &mut DbConn, ring: &KeyRing, new: &NewState<'_>) -> QueryResult<String> {
        let id = new_id();
        let sealed = new
            .verifier
            .map(|v| ring.seal(v.expose().as_bytes(), aad(&id, new.tenant_id, new.provider)));
        diesel::insert_into(oauth_states::table)
            .values((
                oauth_states::id.eq(&id),
                oauth_states::state_hash.eq(new.state_hash),
                oauth_states::tenant_id.eq(new.tenant_id),
                oauth_states::user_id.eq(new.user_id),
                oauth_states::session_binding.eq(new.session_binding),
                oauth_states::provider.eq(new.provider),
                oauth_states::pkce_ciphertext.eq(sealed.as_ref().map(|s| s.bytes.clone())),
                oauth_states::key_id.eq(sealed.map(|s| s.key_id)),
                oauth_states::redirect_uri.eq(new.redirect_uri),
                oauth_states::return_to.eq(new.return_to),
                oauth_states::popup.eq(new.popup),
                oauth_states::expires_at.eq(new.expires_at),
                oauth_states::created_at.eq(now()),
                oauth_states::tags.eq(new.tags),
                oauth_states::embed_origin.eq(new.embed_origin),
                oauth_states::reconnect_account.eq(new.reconnect_account),
            ))
            .execute(conn)?;
        Ok(id)
    }

    pub fn by_hash(conn: &mut DbConn, state_hash: &str) -> QueryResult<Option<OAuthState>> {
        oauth_states::table
            .filter(oauth_states::state_hash.eq(state_hash))
            .select(OAuthState::as_select())
            .first(conn)
            .optional()
    }

    /// Marks the state used. `false` when it was already used or has expired
    /// meanwhile: exactly one caller ever gets `true`.
    pub fn consume(conn: &mut DbConn, id: &str) -> QueryResult<bool> {
        let t = now();
        diesel::update(
            oauth_states::table
                .find(id)
                .filter(oauth_states::consumed_at.is_null())
                .filter(oauth_states::expires_at.gt(t)),
        )
        .set(oauth_states::consumed_at.eq(t))
        .execute(conn)
        .map(|n| n == 1)
    }

    /// The PKCE verifier, when the flow used one.
    pub fn verifier(&self, ring: &KeyRing) -> Result<Option<Secret<String>>, CryptoError> {
        let (Some(bytes), Some(kid)) = (&self.pkce_ciphertext, &self.key_id) else {
            return Ok(None);
        };
        let plain = ring.open(kid, bytes, aad(&self.id, &self.tenant_id, &self.provider))?;
        String::from_utf8(plain)
            .map(|s| Some(Secret::new(s)))
            .map_err(|_| CryptoError::Tampered(kid.clone()))
    }

    /// Deletes states that expired before `before`.
    pub fn delete_expired(conn: &mut DbConn, before: NaiveDateTime) -> QueryResult<usize> {
        diesel::delete(oauth_states::table.filter(oauth_states::expires_at.lt(before)))
            .execute(conn)
    }

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
