//! The CRM's handoff of a signed-in admin: `POST /sso` with form field `token`.
//!
//! A token is `base64url(claims JSON) "." base64url(HMAC-SHA256(secret, first part))`
//! with claims `{"tenant": "<external id>", "email": "...", "exp": <unix seconds>,
//! "nonce": "<random, 16-128 chars>"}`. It expires at most 5 minutes after it
//! is made and is accepted once. The tenant must exist; its admin is created
//! on first use (without a password: SSO only).

use crate::crypto::sha256_hex;
use crate::db::models::{tenant::Tenant, user::User};
use crate::db::{now, DbConn};
use crate::error::{AppError, AppResult, Code};
use crate::ids::ExternalTenantId;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Longest lifetime a token may claim.
pub const MAX_TTL_SECS: i64 = 300;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Claims {
    pub tenant: String,
    pub email: String,
    pub exp: i64,
    pub nonce: String,
}

fn mac(secret: &[u8]) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length")
}

/// Makes a token (what the CRM does; here for tests and the README's example).
pub fn sign(secret: &[u8], claims: &Claims) -> String {
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
    let mut m = mac(secret);
    m.update(payload.as_bytes());
    format!(
        "{payload}.{}",
        URL_SAFE_NO_PAD.encode(m.finalize().into_bytes())
    )
}

fn invalid(why: &str) -> AppError {
    AppError::bad_request(
        Code::InvalidSsoToken,
        format!("This sign-in link is not valid ({why}). Open Tether from the CRM again."),
    )
}

/// Checks the signature (in constant time), the expiry window and the claims.
pub fn verify(secret: &[u8], token: &str, now_unix: i64) -> AppResult<Claims> {
    if token.len() > 4096 {
        return Err(invalid("malformed"));
    }
    let (payload, sig) = token.split_once('.').ok_or_else(|| invalid("malformed"))?;
    let sig = URL_SAFE_NO_PAD
        .decode(sig)
        .map_err(|_| invalid("malformed"))?;
    let mut m = mac(secret);
    m.update(payload.as_bytes());
    m.verify_slice(&sig).map_err(|_| invalid("bad signature"))?;
    let raw = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| invalid("malformed"))?;
    let claims: Claims = serde_json::from_slice(&raw).map_err(|_| invalid("malformed claims"))?;
    if claims.exp <= now_unix {
        return Err(invalid("expired"));
    }
    if claims.exp - now_unix > MAX_TTL_SECS {
        return Err(invalid("expiry more than 5 minutes ahead"));
    }
    if !(16..=128).contains(&claims.nonce.len()) {
        return Err(invalid("nonce must be 16 to 128 characters"));
    }
    Ok(claims)
}

/// Spends the nonce and returns the tenant's admin, creating it on first use.
pub fn admit(conn: &mut DbConn, claims: &Claims) -> AppResult<User> {
    let tenant = Tenant::by_external_id(conn, &ExternalTenantId::parse(&claims.tenant)?)?
        .ok_or_else(|| AppError::not_found(format!("no tenant '{}'", claims.tenant)))?;
    let email = crate::db::models::user::normalize_email(&claims.email)?;
    let existing = User::by_email(conn, &email)?;
    if let Some(u) = &existing {
        if u.tenant_id != tenant.id {
            return Err(AppError::forbidden(
                "this email belongs to another tenant's admin",
            ));
        }
    }
    // Spend the nonce last, so a link refused above can be fixed and reused.
    let expires_at = now() + chrono::Duration::seconds(MAX_TTL_SECS + 60);
    if !crate::db::models::sso_nonce::spend(conn, &sha256_hex(claims.nonce.as_bytes()), expires_at)?
    {
        return Err(invalid("already used"));
    }
    match existing {
        Some(u) => Ok(u),
        None => User::create(conn, &tenant.id, &email, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> Claims {
        Claims {
            tenant: "acme".into(),
            email: "owner@acme.example".into(),
            exp,
            nonce: "0123456789abcdef".into(),
        }
    }

    #[test]
    fn a_signed_token_verifies_and_a_tampered_one_does_not() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let token = sign(secret, &claims(1_000 + 120));
        assert_eq!(verify(secret, &token, 1_000).unwrap().tenant, "acme");
        assert!(verify(b"another secret of at least 32 chars!", &token, 1_000).is_err());
        let mut forged = token.clone();
        forged.insert(3, 'x');
        assert!(verify(secret, &forged, 1_000).is_err());
        assert_eq!(
            verify(secret, &token, 1_200).unwrap_err().code(),
            "invalid_sso_token"
        );
        let far = sign(secret, &claims(1_000 + 3600));
        assert!(verify(secret, &far, 1_000)
            .unwrap_err()
            .message()
            .contains("5 minutes"));
        assert!(verify(secret, "garbage", 1_000).is_err());
    }
}
