//! Tenant admins who sign in to the settings pages.

use crate::db::schema::{tenants, users};
use crate::db::{new_id, now, DbConn};
use crate::error::{AppError, AppResult, Code};
use crate::ids::{ExternalTenantId, TenantId};
use chrono::NaiveDateTime;
use diesel::prelude::*;

/// `Debug` (at the end of the file) hides the password hash.
#[derive(Clone, Queryable, Selectable, Identifiable)]
#[diesel(table_name = users)]
pub struct User {
    pub id: String,
    pub tenant_id: TenantId,
    pub email: String,
    pub password_hash: Option<String>,
    pub role: String,
    pub created_at: NaiveDateTime,
    pub last_login_at: Option<NaiveDateTime>,
    /// Sessions carry the generation they were made in; bumping it ends
    /// every one of them at their next request.
    pub session_generation: i64,
}

#[derive(Insertable)]
#[diesel(table_name = users)]
struct NewUser<'a> {
    id: &'a str,
    tenant_id: &'a str,
    email: &'a str,
    password_hash: Option<&'a str>,
    role: &'a str,
    created_at: NaiveDateTime,
}

/// Lower-cases and checks an email address (enough to catch typos; the CRM owns identity).
pub fn normalize_email(email: &str) -> AppResult<String> {
    let email = email.trim().to_lowercase();
    let valid = email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && matches!(email.split_once('@'), Some((local, domain)) if !local.is_empty() && domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.'));
    if valid {
        Ok(email)
    } else {
        Err(AppError::bad_request(
            Code::InvalidEmail,
            "that is not an email address",
        ))
    }
}

impl User {
    /// Creates an admin of `tenant_id`. Emails are unique across tenants: the
    /// login form identifies the tenant by the email alone.
    pub fn create(
        conn: &mut DbConn,
        tenant_id: &TenantId,
        email: &str,
        password_hash: Option<&str>,
    ) -> AppResult<User> {
        let email = normalize_email(email)?;
        if User::by_email(conn, &email)?.is_some() {
            return Err(AppError::conflict(
                Code::UserExists,
                format!("a user with email {email} already exists"),
            ));
        }
        let id = new_id();
        diesel::insert_into(users::table)
            .values(NewUser {
                id: &id,
                tenant_id,
                email: &email,
                password_hash,
                role: "admin",
                created_at: now(),
            })
            .execute(conn)?;
        Ok(users::table
            .find(&id)
            .select(User::as_select())
            .first(conn)?)
    }

    pub fn by_email(conn: &mut DbConn, email: &str) -> QueryResult<Option<User>> {
        users::table
            .filter(users::email.eq(email.trim().to_lowercase()))
            .select(User::as_select())
            .first(conn)
            .optional()
    }

    /// Every user with the external id of its tenant, optionally for one tenant.
    pub fn list(
        conn: &mut DbConn,
        tenant_external_id: Option<&ExternalTenantId>,
    ) -> QueryResult<Vec<(User, String)>> {
        let mut q = users::table
            .inner_join(tenants::table)
            .select((User::as_select(), tenants::external_id))
            .order((tenants::external_id.asc(), users::email.asc()))
            .into_boxed();
        if let Some(ext) = tenant_external_id {
            q = q.filter(tenants::external_id.eq(ext.clone()));
        }
        q.load(conn)
    }

    /// The user's session generation, or `None` when the user is gone.
    pub fn session_generation(conn: &mut DbConn, id: &str) -> QueryResult<Option<i64>> {
        users::table
            .find(id)
            .select(users::session_generation)
            .first(conn)
            .optional()
    }

    /// The user's session generation and its tenant's external id.
    pub fn session_state(conn: &mut DbConn, id: &str) -> QueryResult<Option<(i64, String)>> {
        use crate::db::schema::tenants;
        users::table
            .inner_join(tenants::table)
            .filter(users::id.eq(id))
            .select((users::session_generation, tenants::external_id))
            .first(conn)
            .optional()
    }

    /// Ends every session of the user (sign-out, sign out everywhere);
    /// false when there is no such user.
    pub fn end_sessions(conn: &mut DbConn, id: &str) -> QueryResult<bool> {
        let n = diesel::update(users::table.find(id))
            .set(users::session_generation.eq(users::session_generation + 1))
            .execute(conn)?;
        Ok(n == 1)
    }

    /// Removes a user; their sessions end with them.
    pub fn remove(conn: &mut DbConn, email: &str) -> QueryResult<bool> {
        let n = diesel::delete(users::table.filter(users::email.eq(email.trim().to_lowercase())))
            .execute(conn)?;
        Ok(n == 1)
    }

    pub fn touch_login(conn: &mut DbConn, id: &str) -> QueryResult<usize> {
        diesel::update(users::table.find(id))
            .set(users::last_login_at.eq(now()))
            .execute(conn)
    }

    pub fn count(conn: &mut DbConn) -> QueryResult<i64> {
        users::table.count().get_result(conn)
    }
}

/// The password hash is left out: it is what an offline guesser needs.
impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("tenant_id", &self.tenant_id)
            .field("email", &self.email)
            .field(
                "password_hash",
                &crate::crypto::redacted(&self.password_hash),
            )
            .field("role", &self.role)
            .field("created_at", &self.created_at)
            .field("last_login_at", &self.last_login_at)
            .field("session_generation", &self.session_generation)
            .finish_non_exhaustive()
    }
}
