//! Nonces of the CRM's signed sign-in handoffs already spent (`sso`).

use crate::db::schema::sso_nonces;
use crate::db::{now, DbConn};
use chrono::NaiveDateTime;
use diesel::prelude::*;

/// Spends the nonce whose SHA-256 is `nonce_hash`, remembered until
/// `expires_at`; `Ok(false)` if it was spent before. Forgets expired ones.
pub fn spend(conn: &mut DbConn, nonce_hash: &str, expires_at: NaiveDateTime) -> QueryResult<bool> {
    diesel::delete(sso_nonces::table.filter(sso_nonces::expires_at.lt(now()))).execute(conn)?;
    let spent = diesel::insert_into(sso_nonces::table)
        .values((
            sso_nonces::nonce_hash.eq(nonce_hash),
            sso_nonces::expires_at.eq(expires_at),
        ))
        .execute(conn);
    match spent {
        Ok(_) => Ok(true),
        Err(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UniqueViolation,
            _,
        )) => Ok(false),
        Err(e) => Err(e),
    }
}
