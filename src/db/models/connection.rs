//! Connections: one row per (tenant, provider, account), holding the whole
//! token set as one AEAD ciphertext bound to the row.

use crate::crypto::{Aad, CryptoError, KeyRing, Sealed, Secret};
use crate::db::listen::notify_changed;
use crate::db::models::instance::{Takeover, TAKEABLE};
use crate::db::schema::connections;
use crate::db::{now, DbConn};
use crate::error::{AppError, AppResult, Code};
use crate::ids::{ConnectionId, ExternalTenantId, ProviderKey, TenantId};
use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::Connection as _;

/// Where a connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
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

    pub fn parse(s: &str) -> Status {
        match s {
            "connected" => Status::Connected,
            "needs_reconnect" => Status::NeedsReconnect,
            "error" => Status::Error,
            // The CHECK constraint allows nothing else.
            _ => Status::Disconnected,
        }
    }
}

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
    pub account_id: String,
    pub account_name: Option<String>,
    pub status: String,
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
    /// JSON object of non-secret metadata (e.g. GoHighLevel's locationId).
    pub metadata: String,
    pub last_refreshed_at: Option<NaiveDateTime>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    /// The tenant's default account of this provider: the one served when a
    /// caller names none. Only admins move it (and a disconnect of it);
    /// refreshes never touch it.
    pub is_default: bool,
}

/// The answer when a caller names an account that is not connected. It
/// names neither tokens nor the other accounts.
pub fn unknown_account() -> AppError {
    AppError::not_found("no account with that id is connected to this provider")
}

/// `value` with LIKE's special characters turned into `%`: the pattern
/// still matches every row that holds `value` (and maybe more), and the
/// caller checks each candidate exactly.
fn like_escaped(value: &str) -> String {
    value
        .chars()
        .map(|c| {
            if matches!(c, '%' | '_' | '\\') {
                '%'
            } else {
                c
            }
        })
        .collect()
}

fn unique_violation(e: &diesel::result::Error) -> bool {
    matches!(
        e,
        diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::UniqueViolation, _)
    )
}

/// A freshly granted token set and what is known about its account.
#[derive(Debug)]
pub struct Grant<'a> {
    pub tenant_id: &'a TenantId,
    pub provider: &'a ProviderKey,
    pub account_id: &'a str,
    pub account_name: Option<&'a str>,
    pub scopes: &'a [String],
    pub tokens: &'a TokenSet,
    pub expires_at: Option<NaiveDateTime>,
    pub refresh_expires_at: Option<NaiveDateTime>,
    pub next_refresh_at: Option<NaiveDateTime>,
    pub metadata: &'a serde_json::Value,
}

#[derive(Insertable, AsChangeset)]
#[diesel(table_name = connections, treat_none_as_null = true)]
struct GrantRow<'a> {
    account_name: Option<&'a str>,
    status: &'a str,
    scopes: String,
    token_ciphertext: Option<Vec<u8>>,
    key_id: Option<String>,
    expires_at: Option<NaiveDateTime>,
    refresh_expires_at: Option<NaiveDateTime>,
    next_refresh_at: Option<NaiveDateTime>,
    lease_owner: Option<String>,
    lease_until: Option<NaiveDateTime>,
    failure_count: i32,
    last_error: Option<String>,
    metadata: String,
    last_refreshed_at: Option<NaiveDateTime>,
    updated_at: NaiveDateTime,
}

/// What a successful refresh changes besides the tokens.
#[derive(Debug, Clone)]
pub struct Refreshed {
    pub expires_at: Option<NaiveDateTime>,
    pub next_refresh_at: Option<NaiveDateTime>,
    /// When the (possibly renewed) refresh token lapses.
    pub refresh_expires_at: Option<NaiveDateTime>,
    pub scopes: Vec<String>,
}

/// What [`Connection::search`] filters on in SQL; every part is optional.
#[derive(Debug, Default)]
pub struct Search<'a> {
    pub tenant_id: Option<&'a str>,
    pub provider: Option<&'a str>,
    pub account_id: Option<&'a str>,
    /// Any of these statuses (empty: any).
    pub statuses: &'a [Status],
    /// Metadata fields the row must name (their values are checked by the caller).
    pub metadata_names: &'a [String],
}

/// `name` as it appears as a key in stored metadata (compact JSON).
fn json_key(name: &str) -> String {
    format!("{}:", serde_json::Value::from(name))
}

/// `text` as a LIKE pattern matching itself, with `\` as the escape.
fn like_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A sealed value as stored, with what is needed to re-seal it in place.
#[derive(Debug, Clone, Queryable)]
pub struct SealedRow {
    pub id: ConnectionId,
    pub tenant_id: TenantId,
    pub provider: ProviderKey,
    pub key_id: Option<String>,
    pub bytes: Option<Vec<u8>>,
    pub version: i64,
}

/// Raw SQL written with PostgreSQL's `$n` placeholders, for the backend at
/// hand (SQLite numbers them `?n`).
fn numbered(conn: &DbConn, sql: &str) -> String {
    match conn {
        DbConn::Postgres(_) => sql.to_string(),
        DbConn::Sqlite(_) => sql.replace('$', "?"),
    }
}

fn aad<'a>(id: &'a str, tenant_id: &'a str, provider: &'a str) -> Aad<'a> {
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

    /// Stores a new grant for (tenant, provider, account): a new row, or the
    /// existing one overwritten with status `connected`. Returns the row.
    pub fn store_grant(
        conn: &mut DbConn,
        ring: &KeyRing,
        grant: &Grant<'_>,
    ) -> AppResult<Connection> {
        let plaintext = serde_json::to_vec(grant.tokens).map_err(AppError::internal)?;
        let row = |id: &str| {
            let sealed = ring.seal(&plaintext, aad(id, grant.tenant_id, grant.provider));
            let t = now();
            GrantRow {
                account_name: grant.account_name,
                status: Status::Connected.as_str(),
                scopes: serde_json::to_string(grant.scopes).unwrap_or_else(|_| "[]".into()),
                token_ciphertext: Some(sealed.bytes),
                key_id: Some(sealed.key_id),
                expires_at: grant.expires_at,
                refresh_expires_at: grant.refresh_expires_at,
                next_refresh_at: grant.next_refresh_at,
                lease_owner: None,
                lease_until: None,
                failure_count: 0,
                last_error: None,
                metadata: grant.metadata.to_string(),
                last_refreshed_at: Some(t),
                updated_at: t,
            }
        };
        // A losing racer on the insert (same account, or a second default
        // through the partial unique index) sees the winner on the second pass.
        for _ in 0..2 {
            let has_default =
                Connection::default_for(conn, grant.tenant_id, grant.provider)?.is_some();
            let written =
                match Connection::find(conn, grant.tenant_id, grant.provider, grant.account_id)? {
                    Some(existing) => {
                        // A reconnect keeps its flag; an account that comes back
                        // while no other is default becomes the default.
                        let is_default = existing.is_default || !has_default;
                        diesel::update(connections::table.find(&existing.id))
                            .set((
                                row(&existing.id),
                                connections::version.eq(connections::version + 1),
                                connections::is_default.eq(is_default),
                            ))
                            .execute(conn)
                            .map(|_| existing.id)
                    }
                    None => {
                        let id = ConnectionId::fresh();
                        diesel::insert_into(connections::table)
                            .values((
                                connections::id.eq(&id),
                                connections::tenant_id.eq(grant.tenant_id),
                                connections::provider.eq(grant.provider),
                                connections::account_id.eq(grant.account_id),
                                connections::version.eq(0i64),
                                connections::created_at.eq(now()),
                                // The first account connected is the default.
                                connections::is_default.eq(!has_default),
                                row(&id),
                            ))
                            .execute(conn)
                            .map(|_| id)
                    }
                };
            match written {
                Ok(id) => {
                    notify_changed(conn, grant.tenant_id, grant.provider)?;
                    return Ok(Connection::by_id(conn, &id)?);
                }
                Err(e) if unique_violation(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(AppError::conflict(
            Code::ConcurrentUpdate,
            "the connection changed while saving; try again",
        ))
    }

    pub fn by_id(conn: &mut DbConn, id: &str) -> QueryResult<Connection> {
        connections::table
            .find(id)
            .select(Connection::as_select())
            .first(conn)
    }

    pub fn find(
        conn: &mut DbConn,
        tenant_id: &str,
        provider: &str,
        account_id: &str,
    ) -> QueryResult<Option<Connection>> {
        connections::table
            .filter(connections::tenant_id.eq(tenant_id))
            .filter(connections::provider.eq(provider))
            .filter(connections::account_id.eq(account_id))
            .select(Connection::as_select())
            .first(conn)
            .optional()
    }

    /// The tenant's default account of `provider`, if it holds tokens: what
    /// the token API, the proxy and the status serve when no account is named.
    /// This is the token API's one query, answered from the partial unique
    /// index `connections_default` (the bare `is_default` term matches its
    /// predicate on both backends). It runs on the backend's own connection,
    /// whose prepared-statement cache it then hits (through the multi-backend
    /// enum it is parsed again on every call).
    pub fn default_for(
        conn: &mut DbConn,
        tenant_id: &str,
        provider: &str,
    ) -> QueryResult<Option<Connection>> {
        macro_rules! query {
            () => {
                connections::table
                    .filter(connections::tenant_id.eq(tenant_id))
                    .filter(connections::provider.eq(provider))
                    .filter(connections::is_default)
                    .filter(connections::token_ciphertext.is_not_null())
                    .select(Connection::as_select())
            };
        }
        match conn {
            DbConn::Postgres(c) => query!().first(c).optional(),
            DbConn::Sqlite(c) => query!().first(c).optional(),
        }
    }

    /// The tenant holding `provider`'s account `account_id` (connected, with
    /// tokens), if any: a provider-initiated install may bind an account to
    /// one tenant only.
    pub fn holder(
        conn: &mut DbConn,
        provider: &str,
        account_id: &str,
    ) -> QueryResult<Option<TenantId>> {
        connections::table
            .filter(connections::provider.eq(provider))
            .filter(connections::account_id.eq(account_id))
            .filter(connections::token_ciphertext.is_not_null())
            .select(connections::tenant_id)
            .first(conn)
            .optional()
    }

    /// The tenant `provider`'s account `account_id` is bound to: the one
    /// holding its tokens, else the one whose row for it changed last (a
    /// location uninstalled and installed again goes back to its tenant).
    pub fn bound_tenant(
        conn: &mut DbConn,
        provider: &str,
        account_id: &str,
    ) -> QueryResult<Option<TenantId>> {
        if let Some(t) = Connection::holder(conn, provider, account_id)? {
            return Ok(Some(t));
        }
        connections::table
            .filter(connections::provider.eq(provider))
            .filter(connections::account_id.eq(account_id))
            .order(connections::updated_at.desc())
            .select(connections::tenant_id)
            .first(conn)
            .optional()
    }

    /// Every row (any tenant, any status) of `provider`'s account `account_id`.
    pub fn all_of_account(
        conn: &mut DbConn,
        provider: &str,
        account_id: &str,
    ) -> QueryResult<Vec<Connection>> {
        connections::table
            .filter(connections::provider.eq(provider))
            .filter(connections::account_id.eq(account_id))
            .order(connections::id.asc())
            .select(Connection::as_select())
            .load(conn)
    }

    /// Every row of `provider` whose metadata `field` is the string `value`
    /// (an account's parent company, say). The text match only narrows the rows;
    /// the parsed metadata decides.
    pub fn with_metadata(
        conn: &mut DbConn,
        provider: &str,
        field: &str,
        value: &str,
    ) -> QueryResult<Vec<Connection>> {
        let rows: Vec<Connection> = connections::table
            .filter(connections::provider.eq(provider))
            .filter(connections::metadata.like(format!("%{}%", like_escaped(value))))
            .order(connections::id.asc())
            .select(Connection::as_select())
            .load(conn)?;
        Ok(rows
            .into_iter()
            .filter(|c| c.metadata().get(field).and_then(|v| v.as_str()) == Some(value))
            .collect())
    }

    /// One connected account (holding tokens) of the tenant's `provider`.
    pub fn for_account(
        conn: &mut DbConn,
        tenant_id: &str,
        provider: &str,
        account_id: &str,
    ) -> QueryResult<Option<Connection>> {
        Ok(Connection::find(conn, tenant_id, provider, account_id)?.filter(|c| c.has_tokens()))
    }

    /// The named account, or the default when `account` is `None`.
    pub fn lookup(
        conn: &mut DbConn,
        tenant_id: &str,
        provider: &str,
        account: Option<&str>,
    ) -> QueryResult<Option<Connection>> {
        match account {
            None => Connection::default_for(conn, tenant_id, provider),
            Some(a) => Connection::for_account(conn, tenant_id, provider, a),
        }
    }

    /// Connected rows of `providers` whose metadata holds every one of
    /// `fragments` (metadata is compact JSON, so a fragment such as
    /// `"kind":"x"` matches exactly), each with the account ids its tenant
    /// holds of that provider. The caller reads the parsed metadata.
    pub fn connected_with_metadata(
        conn: &mut DbConn,
        providers: &[String],
        fragments: &[&str],
    ) -> QueryResult<Vec<(Connection, Vec<String>)>> {
        let mut query = connections::table
            .filter(connections::provider.eq_any(providers))
            .filter(connections::status.eq(Status::Connected.as_str()))
            .filter(connections::token_ciphertext.is_not_null())
            .into_boxed();
        for fragment in fragments {
            query =
                query.filter(connections::metadata.like(format!("%{}%", like_escaped(fragment))));
        }
        let rows: Vec<Connection> = query.select(Connection::as_select()).load(conn)?;
        rows.into_iter()
            .map(|row| {
                let held = connections::table
                    .filter(connections::tenant_id.eq(&row.tenant_id))
                    .filter(connections::provider.eq(&row.provider))
                    .filter(connections::token_ciphertext.is_not_null())
                    .select(connections::account_id)
                    .load(conn)?;
                Ok((row, held))
            })
            .collect()
    }

    /// Every connected account of the tenant's `provider`: the default first,
    /// then in the order they were connected.
    pub fn accounts(
        conn: &mut DbConn,
        tenant_id: &str,
        provider: &str,
    ) -> QueryResult<Vec<Connection>> {
        connections::table
            .filter(connections::tenant_id.eq(tenant_id))
            .filter(connections::provider.eq(provider))
            .filter(connections::token_ciphertext.is_not_null())
            // true sorts last on both backends, so descending puts the default first.
            .order((
                connections::is_default.desc(),
                connections::created_at.asc(),
                connections::id.asc(),
            ))
            .select(Connection::as_select())
            .load(conn)
    }

    /// Makes the connected account `id` its tenant's default for its provider,
    /// in one transaction: the flag leaves the old default and comes to this
    /// one, and both rows get a new `version` and `updated_at`, so that any
    /// reader that decided from the old rows sees they moved on. A row whose
    /// refresh is under way (leased) is not touched, because its refresh
    /// commits with a compare-and-swap on `version` that a bump would make
    /// fail, losing the provider's new tokens: then nothing changes and the
    /// caller is asked to retry in a moment. Returns the new default.
    pub fn make_default(conn: &mut DbConn, id: &str) -> AppResult<Connection> {
        let target = Connection::by_id(conn, id)
            .optional()?
            .filter(|c| c.has_tokens())
            .ok_or_else(unknown_account)?;
        if target.is_default {
            return Ok(target);
        }
        let busy = || {
            AppError::unavailable(
                Code::RefreshInProgress,
                "a refresh of one of these accounts is under way; try again in a moment",
                2,
            )
        };
        conn.transaction(|conn| {
            let t = now();
            // Writes first: on SQLite that takes the write lock up front
            // (waiting on busy_timeout) instead of failing a lock upgrade.
            diesel::update(
                connections::table
                    .filter(connections::tenant_id.eq(&target.tenant_id))
                    .filter(connections::provider.eq(&target.provider))
                    .filter(connections::is_default)
                    .filter(connections::id.ne(&target.id))
                    .filter(
                        connections::lease_until
                            .is_null()
                            .or(connections::lease_until.lt(t)),
                    ),
            )
            .set((
                connections::is_default.eq(false),
                connections::version.eq(connections::version + 1),
                connections::updated_at.eq(t),
            ))
            .execute(conn)?;
            let set = diesel::update(
                connections::table
                    .find(&target.id)
                    .filter(connections::token_ciphertext.is_not_null())
                    .filter(
                        connections::lease_until
                            .is_null()
                            .or(connections::lease_until.lt(t)),
                    ),
            )
            .set((
                connections::is_default.eq(true),
                connections::version.eq(connections::version + 1),
                connections::updated_at.eq(t),
            ))
            .execute(conn);
            match set {
                // A leased old default kept its flag: the index refuses a second.
                Err(e) if unique_violation(&e) => Err(busy()),
                Err(e) => Err(e.into()),
                Ok(1) => {
                    notify_changed(conn, &target.tenant_id, &target.provider)?;
                    Ok(Connection::by_id(conn, &target.id)?)
                }
                Ok(_) => match Connection::by_id(conn, &target.id).optional()? {
                    Some(c) if c.has_tokens() => Err(busy()),
                    _ => Err(unknown_account()),
                },
            }
        })
    }

    pub fn status(&self) -> Status {
        Status::parse(&self.status)
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

    /// Takes the lease if nobody holds it: the one guard that keeps a
    /// refresh token from being sent twice. A lapsed lease is taken only as
    /// `takeover` allows (its holder may hold the answer; see
    /// `db::models::instance`). Returns the row as leased.
    pub fn claim(
        conn: &mut DbConn,
        id: &str,
        owner: &str,
        until: NaiveDateTime,
        takeover: &Takeover,
    ) -> QueryResult<Option<Connection>> {
        use diesel::sql_types::{Bool, Text, Timestamp};
        let (own, others, since) = takeover.binds();
        let sql = format!(
            "UPDATE connections SET lease_owner = $1, lease_until = $2 WHERE id = $3 \
             AND token_ciphertext IS NOT NULL AND status IN ('connected', 'error') \
             AND (lease_until IS NULL OR lease_until < $4) AND {}",
            TAKEABLE
                .replace("{own}", "$5")
                .replace("{others}", "$6")
                .replace("{since}", "$7")
        );
        let taken = diesel::sql_query(numbered(conn, &sql))
            .bind::<Text, _>(owner)
            .bind::<Timestamp, _>(until)
            .bind::<Text, _>(id)
            .bind::<Timestamp, _>(now())
            .bind::<Text, _>(own)
            .bind::<Bool, _>(others)
            .bind::<Timestamp, _>(since)
            .execute(conn)?;
        if taken == 1 {
            Connection::by_id(conn, id).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Whether a claim of `id` under `takeover` would find its lease free.
    pub fn lease_free(conn: &mut DbConn, id: &str, takeover: &Takeover) -> QueryResult<bool> {
        use diesel::sql_types::{BigInt, Bool, Text, Timestamp};
        #[derive(QueryableByName)]
        struct Count {
            #[diesel(sql_type = BigInt)]
            n: i64,
        }
        let (own, others, since) = takeover.binds();
        let sql = format!(
            "SELECT COUNT(*) AS n FROM connections WHERE id = $1 \
             AND (lease_until IS NULL OR lease_until < $2) AND {}",
            TAKEABLE
                .replace("{own}", "$3")
                .replace("{others}", "$4")
                .replace("{since}", "$5")
        );
        let found: Count = diesel::sql_query(numbered(conn, &sql))
            .bind::<Text, _>(id)
            .bind::<Timestamp, _>(now())
            .bind::<Text, _>(own)
            .bind::<Bool, _>(others)
            .bind::<Timestamp, _>(since)
            .get_result(conn)?;
        Ok(found.n > 0)
    }

    /// Seals a token set for this row (bound to its id, tenant and provider).
    pub fn seal(&self, ring: &KeyRing, tokens: &TokenSet) -> QueryResult<Sealed> {
        let plaintext = serde_json::to_vec(tokens)
            .map_err(|e| diesel::result::Error::SerializationError(Box::new(e)))?;
        Ok(ring.seal(&plaintext, aad(&self.id, &self.tenant_id, &self.provider)))
    }

    /// Commits a refreshed token set, sealed for this row by [`Connection::seal`],
    /// if the row is still the one we leased (compare-and-swap on version and
    /// lease owner), and releases the lease. The lease may have lapsed: an
    /// answer held through an outage is stored as long as nobody else took
    /// the row (a claim names a new owner; a disconnect, a reconnect and
    /// every other commit move the version on).
    pub fn commit_refresh(
        conn: &mut DbConn,
        leased: &Connection,
        owner: &str,
        sealed: &Sealed,
        refreshed: &Refreshed,
    ) -> QueryResult<bool> {
        let t = now();
        let n = diesel::update(
            connections::table
                .find(&leased.id)
                .filter(connections::version.eq(leased.version))
                .filter(connections::lease_owner.eq(owner)),
        )
        .set((
            connections::token_ciphertext.eq(&sealed.bytes),
            connections::key_id.eq(&sealed.key_id),
            connections::status.eq(Status::Connected.as_str()),
            connections::expires_at.eq(refreshed.expires_at),
            connections::next_refresh_at.eq(refreshed.next_refresh_at),
            connections::refresh_expires_at.eq(refreshed.refresh_expires_at),
            connections::scopes
                .eq(serde_json::to_string(&refreshed.scopes).unwrap_or_else(|_| "[]".into())),
            connections::version.eq(connections::version + 1),
            connections::lease_owner.eq(None::<String>),
            connections::lease_until.eq(None::<NaiveDateTime>),
            connections::failure_count.eq(0),
            connections::last_error.eq(None::<String>),
            connections::last_refreshed_at.eq(t),
            connections::updated_at.eq(t),
        ))
        .execute(conn)?;
        notify_changed(conn, &leased.tenant_id, &leased.provider)?;
        Ok(n == 1)
    }

    /// Records a failed refresh and releases the lease. `status` is
    /// `needs_reconnect` (no more tries: `next_refresh_at` is cleared) or `error`.
    pub fn record_failure(
        conn: &mut DbConn,
        leased: &Connection,
        owner: &str,
        status: Status,
        error: &str,
        next_refresh_at: Option<NaiveDateTime>,
    ) -> QueryResult<bool> {
        let n = diesel::update(
            connections::table
                .find(&leased.id)
                .filter(connections::version.eq(leased.version))
                .filter(connections::lease_owner.eq(owner)),
        )
        .set((
            connections::status.eq(status.as_str()),
            connections::next_refresh_at.eq(next_refresh_at),
            connections::failure_count.eq(connections::failure_count + 1),
            connections::last_error.eq(error),
            connections::lease_owner.eq(None::<String>),
            connections::lease_until.eq(None::<NaiveDateTime>),
            connections::updated_at.eq(now()),
        ))
        .execute(conn)?;
        notify_changed(conn, &leased.tenant_id, &leased.provider)?;
        Ok(n == 1)
    }

    /// Pushes our lease's end out to `until`, if we still hold it.
    pub fn extend_lease(
        conn: &mut DbConn,
        id: &str,
        owner: &str,
        until: NaiveDateTime,
    ) -> QueryResult<bool> {
        diesel::update(
            connections::table
                .find(id)
                .filter(connections::lease_owner.eq(owner))
                .filter(connections::lease_until.gt(now())),
        )
        .set(connections::lease_until.eq(until))
        .execute(conn)
        .map(|n| n == 1)
    }

    /// Leases up to `limit` connections due for refresh (oldest due first) to
    /// `owner` and returns them. On PostgreSQL, `FOR UPDATE SKIP LOCKED` lets
    /// instances claiming at the same moment take disjoint rows; SQLite
    /// serialises writers, so the same conditional UPDATE suffices. Only rows
    /// sealed with a key of `ring` are taken: a row another instance sealed
    /// with a key this one lacks is left to the instances that can open it.
    pub fn claim_due(
        conn: &mut DbConn,
        owner: &str,
        until: NaiveDateTime,
        limit: i64,
        takeover: &Takeover,
        ring: &KeyRing,
    ) -> QueryResult<Vec<Connection>> {
        use diesel::sql_types::{BigInt, Bool, Text, Timestamp};
        #[derive(QueryableByName)]
        struct Id {
            #[diesel(sql_type = Text)]
            id: String,
        }
        // Key ids are letters, digits, '-' and '_' (`KeyRing::parse`): safe
        // to quote inline, and their number varies, which binds cannot.
        let key_ids = ring
            .key_ids()
            .iter()
            .map(|k| format!("'{k}'"))
            .collect::<Vec<_>>()
            .join(", ");
        let due = format!(
            "next_refresh_at <= $3 AND status IN ('connected', 'error') \
             AND token_ciphertext IS NOT NULL AND key_id IN ({key_ids}) \
             AND (lease_until IS NULL OR lease_until < $3) \
             AND {} ORDER BY next_refresh_at LIMIT $4",
            TAKEABLE
                .replace("{own}", "$5")
                .replace("{others}", "$6")
                .replace("{since}", "$7")
        );
        let lock = match conn {
            DbConn::Postgres(_) => " FOR UPDATE SKIP LOCKED",
            DbConn::Sqlite(_) => "",
        };
        let sql = format!(
            "UPDATE connections SET lease_owner = $1, lease_until = $2 WHERE id IN \
             (SELECT id FROM connections WHERE {due}{lock}) RETURNING id"
        );
        let (own, others, since) = takeover.binds();
        let ids: Vec<Id> = diesel::sql_query(numbered(conn, &sql))
            .bind::<Text, _>(owner)
            .bind::<Timestamp, _>(until)
            .bind::<Timestamp, _>(now())
            .bind::<BigInt, _>(limit)
            .bind::<Text, _>(own)
            .bind::<Bool, _>(others)
            .bind::<Timestamp, _>(since)
            .load(conn)?;
        let ids: Vec<String> = ids.into_iter().map(|r| r.id).collect();
        connections::table
            .filter(connections::id.eq_any(&ids))
            .filter(connections::lease_owner.eq(owner))
            .select(Connection::as_select())
            .load(conn)
    }

    /// Live connections whose refresh token lapses before `horizon` (up to 100).
    pub fn refresh_token_lapsing(
        conn: &mut DbConn,
        horizon: NaiveDateTime,
    ) -> QueryResult<Vec<Connection>> {
        connections::table
            .filter(connections::refresh_expires_at.le(horizon))
            .filter(
                connections::status.eq_any([Status::Connected.as_str(), Status::Error.as_str()]),
            )
            .filter(connections::token_ciphertext.is_not_null())
            .order(connections::refresh_expires_at.asc())
            .limit(100)
            .select(Connection::as_select())
            .load(conn)
    }

    /// Connections per status, for metrics.
    pub fn count_by_status(conn: &mut DbConn) -> QueryResult<Vec<(String, i64)>> {
        connections::table
            .group_by(connections::status)
            .select((connections::status, diesel::dsl::count_star()))
            .load(conn)
    }

    /// Releases every lease held by one instance (lease owners are
    /// `<instance>:<attempt>`), at the end of a graceful shutdown.
    pub fn release_all_of(conn: &mut DbConn, instance_id: &str) -> QueryResult<usize> {
        diesel::update(
            connections::table.filter(connections::lease_owner.like(format!("{instance_id}:%"))),
        )
        .set((
            connections::lease_owner.eq(None::<String>),
            connections::lease_until.eq(None::<NaiveDateTime>),
        ))
        .execute(conn)
    }

    /// Releases a lease without changing anything else.
    pub fn release(conn: &mut DbConn, id: &str, owner: &str) -> QueryResult<usize> {
        diesel::update(
            connections::table
                .find(id)
                .filter(connections::lease_owner.eq(owner)),
        )
        .set((
            connections::lease_owner.eq(None::<String>),
            connections::lease_until.eq(None::<NaiveDateTime>),
        ))
        .execute(conn)
    }

    /// Marks the connection disconnected, erases its tokens and clears its
    /// default flag; if it was the default, the earliest-connected remaining
    /// account becomes the default, so that no other account silently takes
    /// over by recency. One transaction. Returns the default afterwards
    /// (`None`: the provider is not connected any more). The promoted row's
    /// version is left alone: its tokens did not change, and a bump would
    /// make a refresh of it under way fail its compare-and-swap.
    pub fn erase(conn: &mut DbConn, id: &str) -> QueryResult<Option<Connection>> {
        conn.transaction(|conn| {
            diesel::update(connections::table.find(id))
                .set((
                    connections::status.eq(Status::Disconnected.as_str()),
                    connections::token_ciphertext.eq(None::<Vec<u8>>),
                    connections::key_id.eq(None::<String>),
                    connections::expires_at.eq(None::<NaiveDateTime>),
                    connections::next_refresh_at.eq(None::<NaiveDateTime>),
                    connections::lease_owner.eq(None::<String>),
                    connections::lease_until.eq(None::<NaiveDateTime>),
                    connections::is_default.eq(false),
                    connections::version.eq(connections::version + 1),
                    connections::updated_at.eq(now()),
                ))
                .execute(conn)?;
            let Some(erased) = Connection::by_id(conn, id).optional()? else {
                return Ok(None);
            };
            notify_changed(conn, &erased.tenant_id, &erased.provider)?;
            if let Some(default) =
                Connection::default_for(conn, &erased.tenant_id, &erased.provider)?
            {
                return Ok(Some(default));
            }
            let Some(next) = Connection::accounts(conn, &erased.tenant_id, &erased.provider)?
                .into_iter()
                .next()
            else {
                return Ok(None);
            };
            diesel::update(connections::table.find(&next.id))
                .set(connections::is_default.eq(true))
                .execute(conn)?;
            Ok(Some(Connection {
                is_default: true,
                ..next
            }))
        })
    }

    /// Opens and re-seals a stored row (used by key rotation).
    pub fn reseal(
        ring: &KeyRing,
        row: &SealedRow,
    ) -> Result<Option<crate::crypto::Sealed>, CryptoError> {
        let (Some(bytes), Some(kid)) = (&row.bytes, &row.key_id) else {
            return Ok(None);
        };
        let a = aad(&row.id, &row.tenant_id, &row.provider);
        let plain = ring.open(kid, bytes, a)?;
        Ok(Some(ring.seal(&plain, a)))
    }

    /// Up to `limit` sealed rows not under `primary`, in id order after `after`.
    pub fn sealed_batch(
        conn: &mut DbConn,
        primary: &str,
        after: &str,
        limit: i64,
    ) -> QueryResult<Vec<SealedRow>> {
        connections::table
            .filter(connections::key_id.is_not_null())
            .filter(connections::key_id.ne(primary))
            .filter(connections::id.gt(after))
            .order(connections::id.asc())
            .limit(limit)
            .select((
                connections::id,
                connections::tenant_id,
                connections::provider,
                connections::key_id,
                connections::token_ciphertext,
                connections::version,
            ))
            .load(conn)
    }

    /// Replaces a row's ciphertext if nobody wrote the row in between. The
    /// version is left alone: the token set itself did not change.
    pub fn replace_sealed(
        conn: &mut DbConn,
        row: &SealedRow,
        sealed: &crate::crypto::Sealed,
    ) -> QueryResult<bool> {
        diesel::update(
            connections::table
                .find(&row.id)
                .filter(connections::version.eq(row.version))
                .filter(connections::key_id.eq(row.key_id.as_deref().unwrap_or_default())),
        )
        .set((
            connections::token_ciphertext.eq(&sealed.bytes),
            connections::key_id.eq(&sealed.key_id),
        ))
        .execute(conn)
        .map(|n| n == 1)
    }

    /// Rows per key id.
    pub fn count_by_key(conn: &mut DbConn) -> QueryResult<Vec<(Option<String>, i64)>> {
        connections::table
            .filter(connections::key_id.is_not_null())
            .group_by(connections::key_id)
            .select((connections::key_id, diesel::dsl::count_star()))
            .order(connections::key_id.asc())
            .load(conn)
    }

    /// Connections matching `search` (rows holding tokens only: a
    /// disconnected row is not a connection any more), with their tenant's
    /// external id, in tenant external id, provider, account id (then row
    /// id) order: the first `limit` of them, and whether more matched. `keep` is asked about each row the SQL filters let through
    /// (metadata lives in a JSON text column that SQL cannot read portably);
    /// rows are read in batches, so a scan never holds more than one batch
    /// besides the answer.
    pub fn search(
        conn: &mut DbConn,
        search: &Search<'_>,
        limit: usize,
        keep: impl Fn(&Connection) -> bool,
    ) -> QueryResult<(Vec<(Connection, ExternalTenantId)>, bool)> {
        use crate::db::schema::tenants;
        const BATCH: i64 = 500;
        let statuses: Vec<&str> = search.statuses.iter().map(|s| s.as_str()).collect();
        let mut found = Vec::new();
        let mut offset = 0;
        loop {
            // Sorted in SQL, before the limit: the first rows of the order,
            // not a sort of whichever rows came first.
            let mut q = connections::table
                .inner_join(tenants::table)
                .filter(connections::token_ciphertext.is_not_null())
                .order((
                    tenants::external_id.asc(),
                    connections::provider.asc(),
                    connections::account_id.asc(),
                    connections::id.asc(),
                ))
                .offset(offset)
                .limit(BATCH)
                .select((Connection::as_select(), tenants::external_id))
                .into_boxed();
            if let Some(t) = search.tenant_id {
                q = q.filter(connections::tenant_id.eq(t.to_string()));
            }
            if let Some(p) = search.provider {
                q = q.filter(connections::provider.eq(p.to_string()));
            }
            if let Some(a) = search.account_id {
                q = q.filter(connections::account_id.eq(a.to_string()));
            }
            if !statuses.is_empty() {
                q = q.filter(connections::status.eq_any(statuses.clone()));
            }
            // A bound pattern, never SQL text: narrows the scan to rows whose
            // metadata names the field; `keep` decides on the parsed value.
            for name in search.metadata_names {
                q = q.filter(
                    connections::metadata
                        .like(format!("%{}%", like_literal(&json_key(name))))
                        .escape('\\'),
                );
            }
            let batch: Vec<(Connection, ExternalTenantId)> = q.load(conn)?;
            let full = batch.len() as i64 == BATCH;
            offset += BATCH;
            for (row, tenant) in batch {
                if keep(&row) {
                    if found.len() == limit {
                        return Ok((found, true));
                    }
                    found.push((row, tenant));
                }
            }
            if !full {
                return Ok((found, false));
            }
        }
    }

    /// Every row of the tenant (connected or not), for its removal.
    pub fn of_tenant(conn: &mut DbConn, tenant_id: &str) -> QueryResult<Vec<Connection>> {
        connections::table
            .filter(connections::tenant_id.eq(tenant_id))
            .order((connections::provider.asc(), connections::created_at.asc()))
            .select(Connection::as_select())
            .load(conn)
    }

    /// Whether any row is sealed under `key_id` (an index lookup).
    pub fn uses_key(conn: &mut DbConn, key_id: &str) -> QueryResult<bool> {
        diesel::select(diesel::dsl::exists(
            connections::table.filter(connections::key_id.eq(key_id)),
        ))
        .get_result(conn)
    }
}
