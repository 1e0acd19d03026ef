//! Admin accounts' passwords: hashing (argon2id with the crate's defaults),
//! checking, and signing in with one.

use crate::app::App;
use crate::db::models::user::User;
use crate::error::{AppError, AppResult, Code};
use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use std::sync::OnceLock;

/// Shortest password `tether user add` accepts.
pub const MIN_PASSWORD_LEN: usize = 12;

pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

/// Whether `password` matches the stored PHC-format `hash`.
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// The admin whose `email` and `password` these are, or `None`. Unknown
/// emails cost a hash check too, so that timing does not tell which exist.
/// Absurdly long input is a 400 before any work. The hash is read and the
/// database connection given back before it is checked (on
/// [`App::password_checks`]), so that a flood of sign-ins takes CPU, not
/// the connections every token request needs.
pub async fn sign_in_with_password(
    app: &App,
    email: &str,
    password: &str,
) -> AppResult<Option<User>> {
    if email.len() > 254 || password.len() > 1024 {
        return Err(AppError::bad_request(
            Code::InvalidForm,
            "that email or password is far too long",
        ));
    }
    let email = email.to_string();
    let user = app.db(move |c| Ok(User::by_email(c, &email)?)).await?;
    let hash = user
        .as_ref()
        .and_then(|u| u.password_hash.clone())
        .unwrap_or_else(|| dummy_hash().to_string());
    let password = password.to_string();
    let ok = app
        .password_checks
        .run(move || verify_password(&password, &hash))
        .await?;
    let user = user.filter(|u| ok && u.password_hash.is_some());
    if let Some(user) = &user {
        let id = user.id.clone();
        app.db(move |c| Ok(User::touch_login(c, &id)?)).await?;
    }
    Ok(user)
}

/// A hash of a random password, verified against for unknown emails.
fn dummy_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| hash_password(&crate::crypto::random_token(16)).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_differ_per_salt() {
        let a = hash_password("correct horse battery").unwrap();
        let b = hash_password("correct horse battery").unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery", &a));
        assert!(!verify_password("wrong", &a));
        assert!(!verify_password("x", "not a hash"));
    }
}
