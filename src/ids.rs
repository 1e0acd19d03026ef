//! Identifiers, each its own type so that one cannot be passed for another:
//! Tether's tenant id and the CRM's, a connection's row id, a provider's key,
//! an admin's email. They are parsed once where they come in (a path, a
//! form, the session, the provider catalogue) and passed on as these types;
//! rows carry them too (diesel reads and writes them as text), and each
//! reads as `&str` where a query needs the text.

use crate::error::AppResult;
use crate::error::{AppError, Code};
use diesel_derive_newtype::DieselNewType;
use std::fmt;
use std::ops::Deref;

macro_rules! id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, DieselNewType, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl $name {
            /// An id Tether wrote, signed or checked itself (a row, the
            /// session, the catalogue); text from outside is parsed instead.
            pub fn known(id: impl Into<String>) -> $name {
                $name(id.into())
            }

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
id!(
    /// One row of `connections`: a tenant's account at a provider.
    ConnectionId
);
id!(
    /// A provider's key in the catalogue (`gohighlevel`, `hubspot`, a custom
    /// provider's table name): lower-case letters, digits, `-` and `_`.
    ProviderKey
);

impl ExternalTenantId {
    /// 1 to 128 letters, digits, `-`, `_`, `.` or `:` (it appears in
    /// URLs, so it keeps to a safe alphabet); else a 400.
    pub fn parse(raw: &str) -> AppResult<ExternalTenantId> {
        let ok = (1..=128).contains(&raw.len())
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
        if !ok {
            return Err(AppError::bad_request(
                Code::InvalidTenant,
                "a tenant id is 1 to 128 characters of letters, digits, '-', '_', '.' or ':'",
            ));
        }
        Ok(ExternalTenantId(raw.to_string()))
    }
}

impl ConnectionId {
    /// A fresh id for a new row.
    pub fn fresh() -> ConnectionId {
        ConnectionId(uuid::Uuid::new_v4().to_string())
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
