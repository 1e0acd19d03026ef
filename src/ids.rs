//! Identifiers, each its own type so that one cannot be passed for another:
//! Tether's tenant id and the CRM's, an admin's email.
//! They are parsed once where they come in (a path, a form, the session, a
//! row) and passed on as these types; each reads as `&str` where a query
//! needs the text.

use crate::db::models::tenant::validate_external_id;
use crate::error::AppResult;
use std::fmt;
use std::ops::Deref;

macro_rules! id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl Deref for $name {
            type Target = str;

            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id!(
    /// Tether's own id of a tenant (`tenants.id`).
    TenantId
);
id!(
    /// The CRM's id of a tenant (`tenants.external_id`), as it appears in
    /// `/api/v1/tenants/{tenant}`.
    ExternalTenantId
);
id!(
    /// An admin's email, trimmed and lower-cased.
    Email
);

impl TenantId {
    /// The id of a row Tether wrote (or of a session it signed).
    pub fn known(id: impl Into<String>) -> TenantId {
        TenantId(id.into())
    }
}

impl ExternalTenantId {
    /// 1 to 128 letters, digits, `-`, `_`, `.` or `:`; else a 400.
    pub fn parse(raw: &str) -> AppResult<ExternalTenantId> {
        validate_external_id(raw)?;
        Ok(ExternalTenantId(raw.to_string()))
    }
}

impl Email {
    /// An address Tether stored (or signed into a session) itself.
    pub fn known(email: impl Into<String>) -> Email {
        Email(email.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_at_the_edge_and_read_as_text() {
        let ext = ExternalTenantId::parse("acme-1").unwrap();
        assert_eq!(&*ext, "acme-1");
        assert!(ExternalTenantId::parse("").is_err());
        assert!(ExternalTenantId::parse("a/b").is_err());
        assert_eq!(TenantId::known("t1").to_string(), "t1");
    }
}
