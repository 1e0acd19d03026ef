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
    /// An account's id at its provider (a HubSpot portal, a GoHighLevel
    /// location, a Google user): the provider's own text, checked once by
    /// [`AccountId::parse`].
    AccountId
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

/// For the command line (`--tenant`): the parse's message as the error.
impl std::str::FromStr for ExternalTenantId {
    type Err = String;

    fn from_str(raw: &str) -> Result<ExternalTenantId, String> {
        ExternalTenantId::parse(raw).map_err(|e| e.message().to_string())
    }
}

impl AccountId {
    /// 1 to 256 characters and no control character: anything a provider
    /// would issue, nothing that could forge a log line; else a 400.
    pub fn parse(raw: &str) -> AppResult<AccountId> {
        AccountId::check(raw).ok_or_else(|| {
            AppError::bad_request(
                Code::InvalidAccount,
                "account is a provider's account id: 1 to 256 characters, no control characters",
            )
        })
    }

    /// The one account of a provider that names none (no identity lookup,
    /// nothing in the token response): `default`.
    pub fn unnamed() -> AccountId {
        AccountId("default".into())
    }

    /// [`AccountId::parse`] without the error, for text read from a
    /// provider's answer (where a bad id is the provider's fault, reported
    /// by the caller in its own words).
    pub fn check(raw: &str) -> Option<AccountId> {
        let count = raw.chars().count();
        let ok = (1..=256).contains(&count) && !raw.chars().any(char::is_control);
        ok.then(|| AccountId(raw.to_string()))
    }
}

impl ConnectionId {
    /// A fresh id for a new row.
    pub fn fresh() -> ConnectionId {
        ConnectionId(uuid::Uuid::new_v4().to_string())
    }
}

/// Tags the CRM sets on a connect (a conversation id, a user id): a small
/// flat JSON object, stored with the connection and echoed in its events.
/// At most [`Tags::MAX_KEYS`] keys of 1 to 64 characters, each a string of
/// at most 256 characters, a number or a boolean; at most 2 KiB as JSON.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(transparent)]
pub struct Tags(serde_json::Map<String, serde_json::Value>);

impl Tags {
    pub const MAX_KEYS: usize = 16;
    pub const MAX_KEY_CHARS: usize = 64;
    pub const MAX_VALUE_CHARS: usize = 256;
    pub const MAX_BYTES: usize = 2048;

    /// The tags `value` holds, or a 400 `invalid_tags` saying what is wrong.
    pub fn parse(value: &serde_json::Value) -> AppResult<Tags> {
        let invalid = |why: String| AppError::bad_request(Code::InvalidTags, why);
        let serde_json::Value::Object(map) = value else {
            return Err(invalid(
                "tags must be a JSON object, such as {\"conversation\": \"c-42\"}".into(),
            ));
        };
        if map.len() > Tags::MAX_KEYS {
            return Err(invalid(format!(
                "tags has {} keys; at most {} are allowed",
                map.len(),
                Tags::MAX_KEYS
            )));
        }
        for (key, v) in map {
            let count = key.chars().count();
            if count == 0 || count > Tags::MAX_KEY_CHARS || key.chars().any(char::is_control) {
                return Err(invalid(format!(
                    "a tag's key is 1 to {} characters without control characters",
                    Tags::MAX_KEY_CHARS
                )));
            }
            match v {
                serde_json::Value::String(s) if s.chars().count() > Tags::MAX_VALUE_CHARS => {
                    return Err(invalid(format!(
                        "tag '{key}' is longer than {} characters",
                        Tags::MAX_VALUE_CHARS
                    )));
                }
                serde_json::Value::String(_)
                | serde_json::Value::Number(_)
                | serde_json::Value::Bool(_) => {}
                _ => {
                    return Err(invalid(format!(
                        "tag '{key}' must be a string, a number or a boolean"
                    )))
                }
            }
        }
        let tags = Tags(map.clone());
        if tags.to_json().len() > Tags::MAX_BYTES {
            return Err(invalid(format!(
                "tags are longer than {} bytes as JSON",
                Tags::MAX_BYTES
            )));
        }
        Ok(tags)
    }

    /// The JSON text stored in a row.
    pub fn to_json(&self) -> String {
        self.to_value().to_string()
    }

    /// Tags Tether stored itself (a row's `tags` column); `None` when there
    /// are none (or the text is no JSON object, which Tether never writes).
    pub fn stored(text: Option<&str>) -> Option<Tags> {
        text.and_then(|t| serde_json::from_str(t).ok()).map(Tags)
    }

    /// The tags as a JSON object.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::Value::Object(self.0.clone())
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

    #[test]
    fn an_account_id_counts_characters_and_refuses_control_characters() {
        // 256 three-byte characters are 768 bytes and still one valid id.
        assert!(AccountId::parse(&"é".repeat(256)).is_ok());
        assert!(AccountId::parse(&"a".repeat(257)).is_err());
        assert!(AccountId::parse("").is_err());
        assert!(AccountId::parse("loc\nforged").is_err());
        assert_eq!(&*AccountId::parse("loc-1").unwrap(), "loc-1");
    }

    #[test]
    fn tags_are_a_small_flat_object() {
        use serde_json::json;
        let ok = Tags::parse(&json!({"conversation": "c-42", "user": 7, "vip": true})).unwrap();
        assert_eq!(Tags::stored(Some(&ok.to_json())), Some(ok.clone()));
        assert_eq!(
            ok.to_value(),
            json!({"conversation": "c-42", "user": 7, "vip": true})
        );
        let many: serde_json::Map<_, _> = (0..17).map(|i| (format!("k{i}"), json!(i))).collect();
        for bad in [
            json!("c-42"),
            json!(["c-42"]),
            serde_json::Value::Object(many),
            json!({"conversation": "x".repeat(257)}),
            json!({"conversation": {"id": "c-42"}}),
            json!({"conversation": null}),
            json!({"": "empty key"}),
            json!({"k".repeat(65): "long key"}),
        ] {
            let e = Tags::parse(&bad).unwrap_err();
            assert!(e.is(Code::InvalidTags), "{bad}");
        }
        let big: serde_json::Map<_, _> = (0..16)
            .map(|i| (format!("k{i}"), json!("v".repeat(200))))
            .collect();
        assert!(
            Tags::parse(&serde_json::Value::Object(big)).is_err(),
            "over 2 KiB"
        );
    }
}
