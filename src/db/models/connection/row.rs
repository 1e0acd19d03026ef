//! The connection row: its type, its status, and what can be read off it
//! (including its sealed token set, opened and sealed for the row).

use crate::crypto::{Aad, CryptoError, KeyRing, Sealed, Secret};
use crate::db::schema::connections;
use crate::error::AppError;
use crate::ids::{AccountId, ConnectionId, ProviderKey, TenantId};
use chrono::NaiveDateTime;
use diesel::prelude::*;

/// Where a connection stands: the column type of `connections.status`. A
/// stored name this version does not know is an error naming it when read,
/// never taken for another status.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, diesel::AsExpression, diesel::FromSqlRow,
)]
#[diesel(sql_type = diesel::sql_types::Text)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Connected,
    /// The provider said the grant is gone: only the user can fix it.
    NeedsReconnect,
    /// Refreshing fails for now; retrying.
    Error,
    Disconnected,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Connected => "connected",
            Status::NeedsReconnect => "needs_reconnect",
            Status::Error => "error",
            Status::Disconnected => "disconnected",
        }
    }

    pub const ALL: [Status; 4] = [
        Status::Connected,
        Status::NeedsReconnect,
        Status::Error,
        Status::Disconnected,
    ];

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|status| status.as_str() == s)
    }
}

crate::db::models::text_column!(Status, "connections.status", Status::parse);

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status reads as its stored name (`row.status == "connected"`).
impl PartialEq<&str> for Status {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// How a connection's token came: the column type of `connections.kind`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, diesel::AsExpression, diesel::FromSqlRow,
)]
#[diesel(sql_type = diesel::sql_types::Text)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// An OAuth grant: refreshed, revoked on disconnect.
    #[serde(rename = "oauth")]
    OAuth,
    /// A token the account's owner created at the provider and gave Tether
    /// (a private integration token, an API key): checked
    /// against the account lookup when stored, never refreshed, and
    /// replaced in place by an OAuth grant of the same account.
    PrivateToken,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::OAuth => "oauth",
            Kind::PrivateToken => "private_token",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        [Kind::OAuth, Kind::PrivateToken]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

crate::db::models::text_column!(Kind, "connections.kind", Kind::parse);

/// The secret part of a connection, sealed as one JSON document.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TokenSet {
    pub access_token: Secret<String>,
    pub refresh_token: Option<Secret<String>>,
    pub token_type: String,
    /// The provider's whole token response, as received.
    pub raw: Secret<serde_json::Value>,
}

#[derive(Debug, Clone, Queryable, Selectable, Identifiable)]
#[diesel(table_name = connections)]
pub struct Connection {
    pub id: ConnectionId,
    pub tenant_id: TenantId,
    pub provider: ProviderKey,
    pub account_id: AccountId,
    pub account_name: Option<String>,
    pub status: Status,
    /// JSON array of granted scopes.
    pub scopes: String,
    pub token_ciphertext: Option<Vec<u8>>,
    pub key_id: Option<String>,
    pub expires_at: Option<NaiveDateTime>,
    pub refresh_expires_at: Option<NaiveDateTime>,
    pub next_refresh_at: Option<NaiveDateTime>,
    pub version: i64,
    pub lease_owner: Option<String>,
    pub lease_until: Option<NaiveDateTime>,
    pub failure_count: i32,
    pub last_error: Option<String>,
    /// JSON object of non-secret metadata (the provider's `keep_fields`).
    pub metadata: String,
    pub last_refreshed_at: Option<NaiveDateTime>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    /// The tenant's default account of this provider: the one served when a
    /// caller names none. Only admins move it (and a disconnect of it);
    /// refreshes never touch it.
    pub is_default: bool,
    /// The CRM's tags of the connect that made it (a JSON object), echoed
    /// in its events (`ids::Tags`).
    pub tags: Option<String>,
    /// When its current streak of failing refreshes began (status `error`);
    /// `None` otherwise.
    pub error_since: Option<NaiveDateTime>,
    /// How its token came.
    pub kind: Kind,
}

/// The answer when a caller names an account that is not connected. It
/// names neither tokens nor the other accounts.
pub fn unknown_account() -> AppError {
    AppError::not_found("no account with that id is connected to this provider")
}

pub(super) fn aad<'a>(id: &'a str, tenant_id: &'a str, provider: &'a str) -> Aad<'a> {
    Aad::Connection {
        id,
        tenant_id,
        provider,
    }
}

impl Connection {
    /// Whether the row holds a token set: a connected account (or one whose
    /// refresh is failing), not a disconnected one.
    pub fn has_tokens(&self) -> bool {
        self.token_ciphertext.is_some()
    }

    pub fn status(&self) -> Status {
        self.status
    }

    /// Whether half the access token's life has passed (tokens without an
    /// expiry or a known start count as past it). A token is never refreshed
    /// sooner, by the scheduler or on demand: a 4 s token gets at most about
    /// two refreshes per lifetime, however many callers want it.
    pub fn past_half_life(&self, at: NaiveDateTime) -> bool {
        match (self.last_refreshed_at, self.expires_at) {
            (Some(from), Some(to)) if to > from => at >= from + (to - from) / 2,
            _ => true,
        }
    }

    /// How a person recognises the account: its name, else its id.
    pub fn label(&self) -> &str {
        self.account_name.as_deref().unwrap_or(&self.account_id)
    }

    pub fn scopes(&self) -> Vec<String> {
        serde_json::from_str(&self.scopes).unwrap_or_default()
    }

    /// Its tags as JSON, if it has any.
    pub fn tags(&self) -> Option<crate::ids::Tags> {
        crate::ids::Tags::stored(self.tags.as_deref())
    }

    pub fn metadata(&self) -> serde_json::Value {
        serde_json::from_str(&self.metadata).unwrap_or_else(|_| serde_json::json!({}))
    }

    /// Opens the token set. `Ok(None)` when the tokens were erased.
    pub fn tokens(&self, ring: &KeyRing) -> Result<Option<TokenSet>, CryptoError> {
        let (Some(bytes), Some(kid)) = (&self.token_ciphertext, &self.key_id) else {
            return Ok(None);
        };
        let plain = ring.open(kid, bytes, aad(&self.id, &self.tenant_id, &self.provider))?;
        // A ciphertext that authenticates was written by us; a parse failure
        // would mean a format change, reported the same way as tampering.
        serde_json::from_slice(&plain)
            .map(Some)
            .map_err(|_| CryptoError::Tampered(kid.clone()))
    }

    /// Seals a token set for this row (bound to its id, tenant and provider).
    pub fn seal(&self, ring: &KeyRing, tokens: &TokenSet) -> QueryResult<Sealed> {
        let plaintext = serde_json::to_vec(tokens)
            .map_err(|e| diesel::result::Error::SerializationError(Box::new(e)))?;
        Ok(ring.seal(&plaintext, aad(&self.id, &self.tenant_id, &self.provider)))
    }
}
