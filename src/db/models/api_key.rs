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

/// What a key may do. Each route of the internal API needs one scope (the
/// `Scoped` extractor of `web::api::rights`), and the document lists it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Scope {
    /// Read a connection's access token (and renew it on demand).
    TokenRead,
    /// Read connections, their settings and their events; check a token.
    StatusRead,
    /// Find which tenant holds an account (the directory, agency
    /// locations, unclaimed installs).
    DirectoryRead,
    /// Call a provider's API through the proxy.
    Proxy,
    /// Create connect links and sessions for a tenant's people.
    Links,
    /// Change connections: disconnect, choose the default account, store a
    /// private token, write integration settings.
    ConnectionsWrite,
    /// Provision and remove tenants, import tokens, assign installs.
    Admin,
}

impl Scope {
    /// Every scope, in the order they are listed.
    pub const ALL: [Scope; 7] = [
        Scope::TokenRead,
        Scope::StatusRead,
        Scope::DirectoryRead,
        Scope::Proxy,
        Scope::Links,
        Scope::ConnectionsWrite,
        Scope::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::TokenRead => "token:read",
            Scope::StatusRead => "status:read",
            Scope::DirectoryRead => "directory:read",
            Scope::Proxy => "proxy",
            Scope::Links => "links",
            Scope::ConnectionsWrite => "connections:write",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(name: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// The bit of this scope in [`Scopes`].
    fn bit(self) -> u8 {
        1 << Scope::ALL.iter().position(|s| *s == self).unwrap_or(0)
    }
}

/// A set of [`Scope`]s, stored as their names separated by spaces.
#[derive(Clone, Copy, PartialEq, Eq, Default, diesel::deserialize::FromSqlRow)]
pub struct Scopes(u8);

impl Scopes {
    /// What a key had before scopes existed, and what `--scope` defaults
    /// to: everything but [`Scope::Admin`].
    pub fn all_but_admin() -> Scopes {
        Scope::ALL
            .into_iter()
            .filter(|s| *s != Scope::Admin)
            .collect()
    }

    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The scopes in the set, in [`Scope::ALL`]'s order.
    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL.into_iter().filter(move |s| self.contains(*s))
    }

    /// Names separated by spaces or commas; `all` for every scope. An
    /// unknown name is an error listing the known ones.
    pub fn parse(list: &str) -> Result<Scopes, String> {
        let mut set = Scopes::default();
        for name in list.split([' ', ',']).filter(|n| !n.is_empty()) {
            if name == "all" {
                set = Scope::ALL.into_iter().collect();
                continue;
            }
            let scope = Scope::parse(name).ok_or_else(|| {
                let known: Vec<&str> = Scope::ALL.iter().map(|s| s.as_str()).collect();
                format!(
                    "unknown scope '{name}' (known: {}, or all)",
                    known.join(", ")
                )
            })?;
            set = set.with(scope);
        }
        Ok(set)
    }

    pub fn with(self, scope: Scope) -> Scopes {
        Scopes(self.0 | scope.bit())
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        iter.into_iter().fold(Scopes::default(), Scopes::with)
    }
}

impl std::fmt::Display for Scopes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.iter().map(Scope::as_str).collect();
        f.write_str(&names.join(" "))
    }
}

impl std::fmt::Debug for Scopes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Scopes({self})")
    }
}

impl<DB> diesel::deserialize::FromSql<diesel::sql_types::Text, DB> for Scopes
where
    DB: diesel::backend::Backend,
    String: diesel::deserialize::FromSql<diesel::sql_types::Text, DB>,
{
    fn from_sql(bytes: DB::RawValue<'_>) -> diesel::deserialize::Result<Self> {
        let names = String::from_sql(bytes)?;
        Ok(Scopes::parse(&names)
            .map_err(|e| format!("api_keys.scopes: {e}, which this version does not know"))?)
    }
}

/// What a key may do and where: its scopes, and the providers it is
/// limited to (`None`: every provider).
#[derive(Clone, Debug)]
pub struct Rights {
    pub scopes: Scopes,
    pub providers: Option<Vec<String>>,
}

impl Rights {
    /// What a key could do before scopes existed: every provider, every
    /// scope but admin, and admin too for an admin key.
    pub fn unlimited(admin: bool) -> Rights {
        let scopes = Scopes::all_but_admin();
        Rights {
            scopes: if admin {
                scopes.with(Scope::Admin)
            } else {
                scopes
            },
            providers: None,
        }
    }
}

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
    /// Whether the key has the admin scope: read only where `scopes` is
    /// `NULL` (a key the release before scopes created during a rolling
    /// upgrade), and kept equal to it for that release.
    pub(crate) is_admin: bool,
    pub created_at: NaiveDateTime,
    pub last_used_at: Option<NaiveDateTime>,
    pub revoked_at: Option<NaiveDateTime>,
    /// What the key may do: [`ApiKey::scopes`].
    #[diesel(column_name = scopes)]
    pub(crate) stored_scopes: Option<Scopes>,
    /// Provider keys separated by spaces; `None`: every provider.
    pub(crate) providers: Option<String>,
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
    scopes: String,
    providers: Option<String>,
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
        rights: &Rights,
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
        if rights.scopes.is_empty() {
            return Err(AppError::bad_request(
                Code::InvalidScope,
                "a key needs at least one scope",
            ));
        }
        if rights.providers.as_ref().is_some_and(Vec::is_empty) {
            return Err(AppError::bad_request(
                Code::InvalidScope,
                "a key limited to providers needs at least one",
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
                is_admin: rights.scopes.contains(Scope::Admin),
                scopes: rights.scopes.to_string(),
                providers: rights.providers.as_ref().map(|p| p.join(" ")),
                created_at: now(),
            })
            .execute(conn)?;
        let row = api_keys::table
            .find(&id)
            .select(ApiKey::as_select())
            .first(conn)?;
        Ok((row, Secret::new(key)))
    }

    /// What the key may do.
    pub fn scopes(&self) -> Scopes {
        self.stored_scopes
            .unwrap_or_else(|| Rights::unlimited(self.is_admin).scopes)
    }

    /// Whether the key may act for `scope`.
    pub fn may(&self, scope: Scope) -> bool {
        self.scopes().contains(scope)
    }

    /// Whether the key may act on `provider`'s connections.
    pub fn covers(&self, provider: &str) -> bool {
        self.providers
            .as_deref()
            .is_none_or(|list| list.split(' ').any(|p| p == provider))
    }

    /// The providers the key is limited to, if it is.
    pub fn providers(&self) -> Option<Vec<&str>> {
        self.providers.as_deref().map(|l| l.split(' ').collect())
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
            .field("scopes", &self.scopes())
            .field("providers", &self.providers)
            .field("created_at", &self.created_at)
            .field("last_used_at", &self.last_used_at)
            .field("revoked_at", &self.revoked_at)
            .finish_non_exhaustive()
    }
}
