//! Importing tokens the CRM stored itself before Tether, so that nobody has
//! to reconnect on cut-over. An import goes through the same model path as a
//! real connect ([`oauth::save_imported`]): sealed like any connection, its
//! refresh planned the same way, an event recorded (actor `import:...`).
//!
//! Whose the token is, the provider says ([`verify`], before anything is
//! stored): the account lookup a connect makes, with the imported access
//! token; identity-bearing metadata comes from that check, never from the
//! caller. An access token that has expired cannot be checked and is
//! refused; one that expires within the refresh margin is made due at once
//! (`next_refresh_at = now`): the scheduler of every running instance
//! refreshes it at its next tick, and the internal API's import refreshes it
//! inline before answering (see [`import`]).
//!
//! No message here ever contains a token, nor any value of the request other
//! than the tenant, provider and account ids.

use super::grant::{self, Arrival, NewGrant};
use crate::app::App;
use crate::config::Settings;
use crate::crypto::{KeyRing, Secret};
use crate::db::models::connection::{Connection, TokenSet};
use crate::db::models::event::Actor;
use crate::db::{now, DbConn};
use crate::error::{AppError, AppResult, Code};
use crate::ids::{AccountId, TenantId};
use crate::oauth::token::{TokenResponse, MAX_EXPIRES_IN};
use crate::oauth::{Authorized, Unchecked};
use crate::providers::{Provider, RefreshStyle};
use chrono::{Duration, NaiveDateTime};
use serde_json::{Map, Value};
use std::sync::Arc;

/// The longest access or refresh token accepted.
pub const MAX_TOKEN_LEN: usize = 8192;
/// The largest `metadata` object accepted, serialised.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;
/// The most scopes one import may name.
pub const MAX_SCOPES: usize = 200;

/// The fields an import takes.
const FIELDS: [&str; 9] = [
    "access_token",
    "refresh_token",
    "token_type",
    "expires_at",
    "expires_in",
    "scopes",
    "account",
    "metadata",
    "replace",
];

fn refused(message: impl Into<String>) -> AppError {
    AppError::bad_request(Code::InvalidImport, message)
}

/// When the imported access token expires, as given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expiry {
    /// Not said: as a token response without `expires_in`, it does not expire.
    Unknown,
    At(NaiveDateTime),
    In(i64),
}

/// One import, read and checked. Its `Debug` hides the tokens.
pub struct Request {
    access_token: Secret<String>,
    refresh_token: Option<Secret<String>>,
    token_type: String,
    expiry: Expiry,
    scopes: Option<Vec<String>>,
    account_id: Option<AccountId>,
    account_name: Option<String>,
    metadata: Value,
    /// Overwrite an account that is already connected (default: skip it).
    pub replace: bool,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("access_token", &crate::crypto::Redacted)
            .field(
                "refresh_token",
                &crate::crypto::redacted(&self.refresh_token),
            )
            .field("expiry", &self.expiry)
            .field("scopes", &self.scopes)
            .field("account_id", &self.account_id)
            .field("replace", &self.replace)
            .finish_non_exhaustive()
    }
}

/// A field name fit to repeat in a message: a short plain identifier (a
/// misspelt field), else not named (it might be a token pasted as a key).
fn field_label(name: &str) -> String {
    let plain = (1..=24).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if plain {
        format!("'{name}'")
    } else {
        "with an unusual name".into()
    }
}

/// An optional field: absent and `null` are the same.
fn optional<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.get(name).filter(|v| !v.is_null())
}

/// A token as a provider issues it: 1 to [`MAX_TOKEN_LEN`] visible ASCII
/// characters (RFC 6750's b64token and the like; no spaces).
fn token_field(obj: &Map<String, Value>, name: &str) -> AppResult<Option<Secret<String>>> {
    match optional(obj, name) {
        None => Ok(None),
        Some(Value::String(s))
            if (1..=MAX_TOKEN_LEN).contains(&s.len())
                && s.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Ok(Some(Secret::new(s.clone())))
        }
        Some(_) => Err(refused(format!(
            "{name} must be a string of 1 to {MAX_TOKEN_LEN} visible ASCII characters (no spaces)"
        ))),
    }
}

/// A short display string: at most 256 characters, no control characters.
fn text_field(v: &Value, name: &str) -> AppResult<String> {
    match v {
        Value::String(s)
            if !s.is_empty() && s.chars().count() <= 256 && !s.chars().any(char::is_control) =>
        {
            Ok(s.clone())
        }
        _ => Err(refused(format!(
            "{name} must be a string of 1 to 256 characters without control characters"
        ))),
    }
}

impl Request {
    /// Reads an import from its JSON object; any field it does not know, or
    /// any value out of shape, is refused with a reason that repeats none of
    /// the values.
    pub fn parse(value: &Value) -> AppResult<Request> {
        let obj = value
            .as_object()
            .ok_or_else(|| refused("an import is a JSON object"))?;
        if let Some(unknown) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(refused(format!(
                "unknown field {} (the fields are {})",
                field_label(unknown),
                FIELDS.join(", ")
            )));
        }
        let access_token =
            token_field(obj, "access_token")?.ok_or_else(|| refused("access_token is required"))?;
        let refresh_token = token_field(obj, "refresh_token")?;
        let token_type = match optional(obj, "token_type") {
            None => "Bearer".to_string(),
            Some(Value::String(s))
                if (1..=32).contains(&s.len())
                    && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') =>
            {
                s.clone()
            }
            Some(_) => {
                return Err(refused(
                    "token_type must be a word such as Bearer (1 to 32 letters, digits or '-')",
                ))
            }
        };
        let expiry = match (optional(obj, "expires_at"), optional(obj, "expires_in")) {
            (Some(_), Some(_)) => {
                return Err(refused(
                    "give expires_at or expires_in, not both: they could disagree",
                ))
            }
            (Some(at), None) => {
                let at = at
                    .as_str()
                    .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                    .ok_or_else(|| {
                        refused("expires_at must be an RFC 3339 time, such as 2026-12-01T10:00:00Z")
                    })?;
                Expiry::At(at.naive_utc())
            }
            (None, Some(secs)) => match secs.as_i64() {
                Some(s) if s >= 0 => Expiry::In(s.min(MAX_EXPIRES_IN)),
                _ => {
                    return Err(refused(
                        "expires_in must be a whole number of seconds from now (0 or more)",
                    ))
                }
            },
            (None, None) => Expiry::Unknown,
        };
        let scopes = match optional(obj, "scopes") {
            None => None,
            Some(Value::Array(items)) if items.len() <= MAX_SCOPES => {
                let scopes = items
                    .iter()
                    .map(|s| match s.as_str() {
                        Some(s)
                            if (1..=512).contains(&s.len())
                                && !s.chars().any(|c| c.is_whitespace() || c.is_control()) =>
                        {
                            Ok(s.to_string())
                        }
                        _ => Err(refused(
                            "each scope must be a string of 1 to 512 characters without spaces",
                        )),
                    })
                    .collect::<AppResult<Vec<_>>>()?;
                Some(scopes)
            }
            Some(_) => {
                return Err(refused(format!(
                    "scopes must be an array of at most {MAX_SCOPES} strings"
                )))
            }
        };
        let (account_id, account_name) = match optional(obj, "account") {
            None => (None, None),
            Some(Value::Object(account)) => {
                if let Some(unknown) = account
                    .keys()
                    .find(|k| !["id", "name"].contains(&k.as_str()))
                {
                    return Err(refused(format!(
                        "unknown field {} in account (the fields are id, name)",
                        field_label(unknown)
                    )));
                }
                let id = match account.get("id") {
                    Some(Value::String(id)) => AccountId::check(id),
                    // Numeric ids (a hub's) read as their digits.
                    Some(Value::Number(n)) if n.is_u64() => AccountId::check(&n.to_string()),
                    _ => None,
                }
                .ok_or_else(|| {
                    AppError::bad_request(
                        Code::InvalidAccount,
                        "account.id is a provider's account id: 1 to 256 characters, no control characters",
                    )
                })?;
                let name = optional(account, "name")
                    .map(|n| text_field(n, "account.name"))
                    .transpose()?;
                (Some(id), name)
            }
            Some(_) => {
                return Err(refused(
                    "account must be an object: {\"id\": \"...\", \"name\": \"...\"}",
                ))
            }
        };
        let metadata = match optional(obj, "metadata") {
            None => Value::Object(Map::new()),
            Some(m @ Value::Object(_)) if m.to_string().len() <= MAX_METADATA_BYTES => m.clone(),
            Some(Value::Object(_)) => {
                return Err(refused(format!(
                    "metadata is larger than {} KiB",
                    MAX_METADATA_BYTES / 1024
                )))
            }
            Some(_) => return Err(refused("metadata must be a JSON object")),
        };
        let replace = match optional(obj, "replace") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(refused("replace must be true or false")),
        };
        Ok(Request {
            access_token,
            refresh_token,
            token_type,
            expiry,
            scopes,
            account_id,
            account_name,
            metadata,
            replace,
        })
    }
}

/// The metadata keys a provider routes or mints by, which only its own
/// answers may set: the fields its account lookup's URL is filled from
/// (a location's id), and the top-level fields its account ids and
/// business are read from in a token response.
fn identity_keys(provider: &Provider) -> Vec<String> {
    let template = provider.userinfo_url.as_deref().unwrap_or_default();
    let mut keys: Vec<String> = crate::providers::placeholders(template)
        .unwrap_or_default()
        .into_iter()
        .map(str::to_string)
        .collect();
    let pointers = provider.account_id.iter().chain(&provider.parent_account);
    for pointer in pointers {
        if let Some(key) = pointer.strip_prefix('/').filter(|k| !k.contains('/')) {
            keys.push(key.replace("~1", "/").replace("~0", "~"));
        }
    }
    keys
}

/// Checks an import with the provider before anything is stored: whose the
/// access token is, by the same account lookup a connect makes. The
/// account id must be the one the provider names (or, where the lookup's
/// URL is the account's own, the lookup must answer for it); the name comes
/// from the lookup when the import gives none; identity-bearing metadata is
/// dropped and set from what was checked. Refused: a client-credentials
/// provider (only its signed install names a site), an access token that
/// has expired (nothing can check it), a provider whose accounts are named
/// only in token responses.
pub async fn verify(
    http: &reqwest::Client,
    provider: &Provider,
    mut request: Request,
) -> AppResult<Request> {
    let name = &provider.display_name;
    if provider.flow == crate::providers::Flow::ClientCredentials {
        return Err(refused(format!(
            "{name} accounts cannot be imported: only {name}'s signed install names a site; install the app there"
        )));
    }
    let mut metadata = match std::mem::take(&mut request.metadata) {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    let keys = identity_keys(provider);
    metadata.retain(|k, _| !keys.contains(k));
    if provider.userinfo_url.is_none() {
        if provider.account_id.is_empty() {
            // One account per tenant, named by nothing: nothing to claim.
            request.metadata = Value::Object(metadata);
            return Ok(request);
        }
        return Err(refused(format!(
            "Tether cannot check whose this token is: {name} names accounts only when a code is exchanged; connect the account instead"
        )));
    }
    let t = now();
    let expired = match request.expiry {
        Expiry::At(at) => at <= t,
        Expiry::In(secs) => secs <= 0,
        Expiry::Unknown => false,
    };
    if expired {
        return Err(refused(format!(
            "the access token has expired, so {name} cannot say whose it is: import it while it is valid, or have the account reconnect"
        )));
    }
    let token = request.access_token.expose();
    let given = request.account_id.as_ref();
    let checked = match crate::oauth::check_token(http, provider, token, given).await {
        Ok(checked) => checked,
        Err(Unchecked::AccountNeeded(field)) => {
            return Err(AppError::bad_request(
                Code::InvalidAccount,
                format!("account.id is required: {name}'s lookup is by the account's {field}"),
            ))
        }
        Err(Unchecked::UnusableAccount) => {
            return Err(AppError::bad_request(
                Code::InvalidAccount,
                "account.id is an id of letters, digits, '-', '_' and '.'",
            ))
        }
        Err(Unchecked::Refused) => {
            return Err(refused(format!(
                "{name} did not accept the access token for {}: it is not that account's, or no longer valid",
                given.map_or_else(|| "the account".to_string(), |a| a.to_string())
            )))
        }
        Err(Unchecked::Mismatch(named)) => {
            let given = given.map(ToString::to_string).unwrap_or_default();
            return Err(AppError::bad_request(
                Code::InvalidAccount,
                format!("{name} says this access token is account {named}'s, not {given}'s"),
            ));
        }
        Err(Unchecked::Failed(e)) => return Err(e),
    };
    request.account_id = checked.account_id;
    if request.account_name.is_none() {
        request.account_name = checked.account_name;
    }
    if let Value::Object(vouched) = checked.filled {
        metadata.extend(vouched);
    }
    request.metadata = Value::Object(metadata);
    Ok(request)
}

/// What an import did (or, in a dry run, would do).
#[derive(Debug)]
pub enum Outcome {
    /// Stored: `connection` is the row (`None` in a dry run).
    Imported {
        account_id: AccountId,
        /// It overwrote a connected account (`replace`).
        replaced: bool,
        /// Expired or within the refresh margin: its refresh is due now.
        due: bool,
        connection: Option<Box<Connection>>,
    },
    /// The account is already connected and `replace` was not asked: nothing
    /// was written.
    AlreadyConnected { account_id: AccountId },
}

/// Checks `request` against the provider and the tenant's connections and,
/// unless `dry_run`, stores it as the tenant's connection of `provider`. An
/// account already connected is left alone unless the request says
/// `replace`. Two imports of one account at the same moment may both pass
/// the check; the later write then counts as a reconnection, as two
/// concurrent connects of one account would.
#[allow(clippy::too_many_arguments)]
pub fn apply(
    conn: &mut DbConn,
    ring: &KeyRing,
    settings: &Settings,
    provider: &Arc<Provider>,
    tenant_id: &TenantId,
    request: &Request,
    actor: &Actor,
    dry_run: bool,
) -> AppResult<Outcome> {
    let account_id = match (&request.account_id, provider.account_id.first()) {
        (Some(id), _) => id.clone(),
        // A provider with identities keeps one row per account: a "default"
        // row would sit beside the real account once someone reconnects.
        (None, Some(_)) => {
            return Err(refused(format!(
                "account.id is required: {} connections are kept per provider account",
                provider.display_name
            )))
        }
        (None, None) => AccountId::unnamed(),
    };
    let t = now();
    let expires_at = match request.expiry {
        Expiry::Unknown => None,
        Expiry::At(at) => Some(at.min(t + Duration::seconds(MAX_EXPIRES_IN))),
        Expiry::In(secs) => Some(t + Duration::seconds(secs)),
    };
    let renewable = match provider.refresh {
        RefreshStyle::None => false,
        style if style.renews_without_refresh_token() => true,
        _ => request.refresh_token.is_some(),
    };
    if !renewable && expires_at.is_some_and(|at| at <= t) {
        return Err(refused(match provider.refresh {
            RefreshStyle::None => format!(
                "the access token has expired and {} tokens cannot be refreshed: the account must reconnect",
                provider.display_name
            ),
            _ => "the access token has expired and there is no refresh_token to renew it: the account must reconnect".to_string(),
        }));
    }
    let margin = Duration::seconds(settings.refresh.margin.as_secs() as i64);
    let due = renewable && expires_at.is_some_and(|at| at <= t + margin);
    let connected = Connection::for_account(conn, tenant_id, &provider.key, &account_id)?.is_some();
    if connected && !request.replace {
        return Ok(Outcome::AlreadyConnected { account_id });
    }
    if dry_run {
        return Ok(Outcome::Imported {
            account_id,
            replaced: connected,
            due,
            connection: None,
        });
    }
    let mut raw = Map::new();
    raw.insert(
        "access_token".into(),
        request.access_token.expose().as_str().into(),
    );
    if let Some(rt) = &request.refresh_token {
        raw.insert("refresh_token".into(), rt.expose().as_str().into());
    }
    raw.insert("token_type".into(), request.token_type.as_str().into());
    let authorized = Authorized {
        response: TokenResponse {
            tokens: TokenSet {
                access_token: request.access_token.clone(),
                refresh_token: request.refresh_token.clone(),
                token_type: request.token_type.clone(),
                raw: Secret::new(Value::Object(raw.clone())),
            },
            // Negative for a token that has expired: its expiry is then in
            // the past, as it is.
            expires_in: expires_at.map(|at| (at - t).num_seconds()),
            scopes: request.scopes.clone(),
            raw: Value::Object(raw),
        },
        account_id: account_id.clone(),
        account_name: request.account_name.clone(),
        scopes: request
            .scopes
            .clone()
            .unwrap_or_else(|| provider.scopes.clone()),
        metadata: request.metadata.clone(),
    };
    let grant = NewGrant {
        provider: provider.clone(),
        tenant: tenant_id.clone(),
        authorized,
        actor: actor.clone(),
        arrival: Arrival::Import { due },
        tags: None,
    };
    let (connection, replaced) = grant::store(conn, ring, settings, &grant)?;
    Ok(Outcome::Imported {
        account_id,
        replaced,
        due,
        connection: Some(Box::new(connection)),
    })
}

/// What the internal API's import did, with the inline refresh of a token
/// that was due.
#[derive(Debug)]
pub struct Imported {
    pub outcome: Outcome,
    /// `None`: no refresh was due (or nothing was stored). Otherwise the
    /// refresh's outcome; a failure leaves the import in place, with the
    /// connection's status saying what the provider answered.
    pub refresh: Option<AppResult<Connection>>,
}

impl Imported {
    pub fn account_id(&self) -> &AccountId {
        match &self.outcome {
            Outcome::Imported { account_id, .. } | Outcome::AlreadyConnected { account_id } => {
                account_id
            }
        }
    }

    /// Whether tokens were stored (not skipped).
    pub fn imported(&self) -> bool {
        matches!(self.outcome, Outcome::Imported { .. })
    }

    /// Whether the import overwrote a connected account.
    pub fn replaced(&self) -> bool {
        matches!(self.outcome, Outcome::Imported { replaced: true, .. })
    }

    /// What happened, for the caller.
    pub fn message(&self, provider: &Provider) -> String {
        let (name, account) = (&provider.display_name, self.account_id());
        if !self.imported() {
            return format!(
                "Skipped: {account} is already connected to {name}; send \"replace\": true to overwrite its tokens."
            );
        }
        let verb = if self.replaced() {
            "Replaced the tokens of"
        } else {
            "Imported"
        };
        let then = match &self.refresh {
            None => "",
            Some(Ok(_)) => " The token was due and has been refreshed.",
            Some(Err(_)) => " The token was due, and refreshing it failed: see refresh_error.",
        };
        format!("{verb} {name} account {account}.{then}")
    }
}

/// Imports `request` for the tenant and, when its token is due, refreshes
/// it at once (through the same single-flight refresh as every other), so
/// that the caller learns now whether the imported refresh token works.
pub async fn import(
    app: &Arc<App>,
    tenant_id: &TenantId,
    provider: &Arc<Provider>,
    request: Request,
    actor: &Actor,
) -> AppResult<Imported> {
    let request = verify(&app.http, provider, request).await?;
    let (keys, settings, p, t, a) = (
        app.keys.clone(),
        app.settings.clone(),
        provider.clone(),
        tenant_id.clone(),
        actor.clone(),
    );
    let outcome = app
        .db(move |c| apply(c, &keys, &settings, &p, &t, &request, &a, false))
        .await?;
    let Outcome::Imported {
        connection: Some(connection),
        due,
        replaced,
        ..
    } = &outcome
    else {
        return Ok(Imported {
            outcome,
            refresh: None,
        });
    };
    grant::stored(app, connection);
    log::info!(
        "imported tenant={tenant_id} provider={} connection={} replaced={replaced} due={due} actor={actor}",
        provider.key,
        connection.id
    );
    let refresh = if *due {
        Some(crate::refresh::refresh_now(app, &connection.id, actor, None).await)
    } else {
        None
    };
    Ok(Imported { outcome, refresh })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn refusal(v: Value) -> String {
        Request::parse(&v).unwrap_err().message().to_string()
    }

    #[test]
    fn a_minimal_import_reads_and_hides_its_tokens() {
        let r =
            Request::parse(&json!({"access_token": "at-secret-1", "refresh_token": "rt-secret-1"}))
                .unwrap();
        assert_eq!(r.expiry, Expiry::Unknown);
        assert_eq!(r.token_type, "Bearer");
        assert!(!r.replace);
        let shown = format!("{r:?}");
        assert!(!shown.contains("secret"), "{shown}");
    }

    #[test]
    fn bad_fields_are_refused_without_repeating_their_values() {
        let cases = [
            json!({"refresh_token": "tok-secret"}),
            json!({"access_token": ""}),
            json!({"access_token": "has space tok-secret"}),
            json!({"access_token": "x".repeat(MAX_TOKEN_LEN + 1)}),
            json!({"access_token": "a", "refresh_token": 7}),
            json!({"access_token": "a", "expires_at": "tok-secret"}),
            json!({"access_token": "a", "expires_at": "2026-12-01T10:00:00Z", "expires_in": 60}),
            json!({"access_token": "a", "expires_in": -1}),
            json!({"access_token": "a", "expires_in": "tok-secret"}),
            json!({"access_token": "a", "scopes": "tok-secret"}),
            json!({"access_token": "a", "scopes": ["tok secret"]}),
            json!({"access_token": "a", "account": {"id": ""}}),
            json!({"access_token": "a", "account": {"id": "x".repeat(257)}}),
            json!({"access_token": "a", "account": {"id": "a\nb"}}),
            json!({"access_token": "a", "account": {"id": "a", "tok-secret-0123456789abcdef": 1}}),
            json!({"access_token": "a", "account": "tok-secret"}),
            json!({"access_token": "a", "metadata": ["tok-secret"]}),
            json!({"access_token": "a", "metadata": {"k": "x".repeat(MAX_METADATA_BYTES)}}),
            json!({"access_token": "a", "replace": "yes"}),
            json!({"access_token": "a", "tok-secret-0123456789abcdef": "tok-secret"}),
            json!({"access_token": "a", "token_type": "tok secret"}),
            json!("tok-secret"),
        ];
        for case in cases {
            let message = refusal(case.clone());
            assert!(!message.contains("tok-secret"), "{case}: {message}");
            assert!(!message.is_empty());
        }
        assert!(refusal(
            json!({"access_token": "a", "expires_at": "2026-12-01T10:00:00Z", "expires_in": 60})
        )
        .contains("not both"));
        assert!(refusal(json!({"access_token": "a", "metadata": 1})).contains("object"));
        assert!(
            refusal(json!({"access_token": "a", "refresh-token": "r"})).contains("'refresh-token'")
        );
    }

    #[test]
    fn expiries_read_as_a_time_or_seconds_and_are_capped_at_a_year() {
        let at = Request::parse(
            &json!({"access_token": "a", "expires_at": "2026-12-01T11:00:00+01:00"}),
        )
        .unwrap();
        let want = chrono::DateTime::parse_from_rfc3339("2026-12-01T10:00:00Z")
            .unwrap()
            .naive_utc();
        assert_eq!(at.expiry, Expiry::At(want));
        let long =
            Request::parse(&json!({"access_token": "a", "expires_in": 10_i64.pow(15)})).unwrap();
        assert_eq!(long.expiry, Expiry::In(MAX_EXPIRES_IN));
        let numeric =
            Request::parse(&json!({"access_token": "a", "account": {"id": 4242}})).unwrap();
        assert_eq!(numeric.account_id.as_deref(), Some("4242"));
    }
}
