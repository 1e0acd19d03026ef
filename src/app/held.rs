//! Token sets a provider handed out that the database could not take. A
//! provider that rotates refresh tokens has retired the old one the moment
//! it answered: losing its answer loses the grant. So an answer the database
//! refuses (it is away, locked, full) is held here, sealed exactly as it will
//! be stored, served to callers as the connection's current token set, and
//! stored by the keeper (`refresh::keeper`) as soon as the database answers
//! again.
//!
//! Nobody may refresh a held connection meanwhile: in this process the
//! scheduler pauses and on-demand refreshes serve the held answer; other
//! instances see this instance's lease on the row, and a lapsed lease is
//! only taken over from an instance that stopped beating its heart while
//! they could see the database (`db::models::instance`). A graceful stop
//! that cannot store what it holds writes it to a spill file, stored by the
//! next start before it serves (docs/design.md, "Held answers").

use crate::crypto::Sealed;
use crate::db::models::connection::{Connection, Refreshed, Status};
use crate::db::models::event::Actor;
use crate::ids::{AccountId, ConnectionId, ProviderKey, TenantId};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chrono::NaiveDateTime;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A refresh's answer, sealed for its row, waiting for the database.
#[derive(Debug)]
pub struct HeldAnswer {
    /// The row as it was leased: the commit's compare-and-swap.
    pub leased: Connection,
    pub owner: String,
    pub sealed: Sealed,
    pub refreshed: Refreshed,
    pub actor: Actor,
}

impl HeldAnswer {
    /// The row as it will be once stored: what callers are served meanwhile.
    pub fn row(&self) -> Connection {
        let mut row = self.leased.clone();
        row.token_ciphertext = Some(self.sealed.bytes.clone());
        row.key_id = Some(self.sealed.key_id.clone());
        row.status = Status::Connected;
        row.expires_at = self.refreshed.expires_at;
        row.next_refresh_at = self.refreshed.next_refresh_at;
        row.refresh_expires_at = self.refreshed.refresh_expires_at;
        row.scopes = serde_json::to_string(&self.refreshed.scopes).unwrap_or_else(|_| "[]".into());
        row.version += 1;
        row.lease_owner = None;
        row.lease_until = None;
        row.failure_count = 0;
        row.last_error = None;
        row
    }
}

/// A new grant, a code exchange's or a location token mint's, that the
/// database could not take: the provider's answer, kept with the very save
/// that failed (sealing, the account-holder rule, the event), for the keeper
/// to run again. It exists only in this process: a stop that cannot store
/// it loses it, and the person connects again (a mint is simply made again);
/// nothing a tenant had before is lost by that.
pub struct HeldGrant {
    pub tenant_id: TenantId,
    pub provider: ProviderKey,
    /// What the person who made it was told, and the log says.
    pub what: String,
    pub save: SaveGrant,
}

/// The save of a [`HeldGrant`], run again by the keeper.
pub type SaveGrant =
    Box<dyn Fn(&mut crate::db::DbConn) -> crate::error::AppResult<()> + Send + Sync>;

/// An answer, and whether it waits for the database (its first store
/// failed) rather than being stored right now.
type Entry = (Arc<HeldAnswer>, bool);

/// The answers this process holds, by connection id: each from the moment
/// it arrives until it is stored.
#[derive(Default)]
pub struct Held {
    answers: Mutex<HashMap<ConnectionId, Entry>>,
    grants: Mutex<Vec<Arc<HeldGrant>>>,
    /// Wakes the keeper when an answer starts waiting.
    pub(crate) added: tokio::sync::Notify,
    /// One storer at a time (the keeper, a draining stop), so that an answer
    /// is never stored twice and the second attempt mistaken for a conflict.
    pub(crate) storing: tokio::sync::Mutex<()>,
}

impl Held {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ConnectionId, Entry>> {
        self.answers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps `answer`: served from now on, until it is stored or superseded.
    pub fn hold(&self, answer: Arc<HeldAnswer>) {
        let id = answer.leased.id.clone();
        self.lock().insert(id, (answer, false));
    }

    /// `answer` could not be stored: it waits for the database, and the
    /// keeper is told.
    pub fn wait(&self, answer: &Arc<HeldAnswer>) {
        if let Some(entry) = self.lock().get_mut(&answer.leased.id) {
            if Arc::ptr_eq(&entry.0, answer) {
                entry.1 = true;
            }
        }
        self.added.notify_one();
    }

    /// Whether no answer waits for the database (new grants aside: they
    /// hold nothing up).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps a new grant for the keeper, and tells it.
    pub fn hold_grant(&self, grant: HeldGrant) {
        self.grants
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::new(grant));
        self.added.notify_one();
    }

    /// The new grants waiting for the database.
    pub fn grants(&self) -> Vec<Arc<HeldGrant>> {
        self.grants
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn release_grant(&self, grant: &Arc<HeldGrant>) {
        self.grants
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|g| !Arc::ptr_eq(g, grant));
    }

    /// Answers and new grants waiting for the database.
    pub fn waiting_total(&self) -> usize {
        self.len() + self.grants.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// How many answers wait for the database.
    pub fn len(&self) -> usize {
        self.lock().values().filter(|(_, waiting)| *waiting).count()
    }

    /// Whether an answer for connection `id` is here (waiting or being stored).
    pub fn holds(&self, id: &ConnectionId) -> bool {
        self.lock().contains_key(id)
    }

    /// The held row of connection `id`, as it will be stored.
    pub fn row_of(&self, id: &ConnectionId) -> Option<Connection> {
        self.lock().get(id).map(|(a, _)| a.row())
    }

    /// The held row for `account` (`None`: the default) of (tenant, provider).
    pub fn row_for(
        &self,
        tenant_id: &TenantId,
        provider: &ProviderKey,
        account: Option<&AccountId>,
    ) -> Option<Connection> {
        self.lock()
            .values()
            .find(|(a, _)| {
                let r = &a.leased;
                r.tenant_id == *tenant_id
                    && r.provider == *provider
                    && account.map_or(r.is_default, |acc| r.account_id == *acc)
            })
            .map(|(a, _)| a.row())
    }

    /// The answers waiting for the database.
    pub(crate) fn waiting(&self) -> Vec<Arc<HeldAnswer>> {
        self.lock()
            .values()
            .filter(|(_, waiting)| *waiting)
            .map(|(a, _)| a.clone())
            .collect()
    }

    /// Lets go of `answer` (stored or superseded), unless a newer one for
    /// the same connection replaced it meanwhile.
    pub(crate) fn release(&self, answer: &Arc<HeldAnswer>) {
        let mut map = self.lock();
        let id = &answer.leased.id;
        if map.get(id).is_some_and(|(a, _)| Arc::ptr_eq(a, answer)) {
            map.remove(id);
        }
    }
}

// ---------------------------------------------------------------------------
// The spill file: what a stop could not store, for the next start.

/// One held answer in a spill file: nothing in it is secret (the token set
/// is the sealed ciphertext, bound to its row).
#[derive(serde::Serialize, serde::Deserialize)]
struct Spilled {
    connection_id: String,
    tenant_id: String,
    provider: String,
    version: i64,
    owner: String,
    key_id: String,
    ciphertext: String,
    expires_at: Option<NaiveDateTime>,
    next_refresh_at: Option<NaiveDateTime>,
    refresh_expires_at: Option<NaiveDateTime>,
    scopes: Vec<String>,
    actor: String,
}

/// The spill file of instance `instance` in `dir`.
pub fn spill_path(dir: &Path, instance: &str) -> PathBuf {
    dir.join(format!("held-answers-{instance}.jsonl"))
}

/// Writes every answer still held to this instance's spill file (mode
/// 0600, written whole then renamed into place); returns how many.
pub fn spill(held: &Held, instance: &str, dir: &Path) -> std::io::Result<usize> {
    use std::io::Write;
    let answers = held.waiting();
    if answers.is_empty() {
        return Ok(0);
    }
    std::fs::create_dir_all(dir)?;
    let path = spill_path(dir, instance);
    let partial = path.with_extension("partial");
    let mut file = open_private(&partial)?;
    for a in &answers {
        let line = Spilled {
            connection_id: a.leased.id.to_string(),
            tenant_id: a.leased.tenant_id.to_string(),
            provider: a.leased.provider.to_string(),
            version: a.leased.version,
            owner: a.owner.clone(),
            key_id: a.sealed.key_id.clone(),
            ciphertext: B64.encode(&a.sealed.bytes),
            expires_at: a.refreshed.expires_at,
            next_refresh_at: a.refreshed.next_refresh_at,
            refresh_expires_at: a.refreshed.refresh_expires_at,
            scopes: a.refreshed.scopes.clone(),
            actor: a.actor.to_string(),
        };
        serde_json::to_writer(&mut file, &line)?;
        file.write_all(b"\n")?;
    }
    file.sync_all()?;
    std::fs::rename(&partial, &path)?;
    Ok(answers.len())
}

fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// The actor a spilled answer's event names.
fn actor_from(stored: &str) -> Actor {
    match stored {
        "scheduler" => Actor::Scheduler,
        "token-api" => Actor::TokenApi,
        "cli" => Actor::Cli,
        "admin" => Actor::Admin {
            email: String::new(),
        },
        s => match s.split_once(':') {
            Some(("api", name)) => Actor::ApiKey { name: name.into() },
            Some(("admin", email)) => Actor::Admin {
                email: email.into(),
            },
            _ => Actor::Scheduler,
        },
    }
}

/// A spilled answer read back. Its row is read from the database by the
/// one who stores it: `version` is the row's as it was leased.
pub struct Unspilled {
    pub connection_id: ConnectionId,
    pub tenant_id: TenantId,
    pub provider: ProviderKey,
    pub version: i64,
    pub owner: String,
    pub sealed: Sealed,
    pub refreshed: Refreshed,
    pub actor: Actor,
}

impl Unspilled {
    /// The held answer again, for `row` (the connection as stored now).
    pub fn answer(self, mut row: Connection) -> Result<HeldAnswer, String> {
        if *row.tenant_id != *self.tenant_id || *row.provider != *self.provider {
            return Err(format!(
                "a spilled answer does not match connection {}",
                self.connection_id
            ));
        }
        row.version = self.version;
        Ok(HeldAnswer {
            leased: row,
            owner: self.owner,
            sealed: self.sealed,
            refreshed: self.refreshed,
            actor: self.actor,
        })
    }
}

/// The spill files in `dir` (left by stops of instances that used it).
pub fn spill_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("held-answers-") && n.ends_with(".jsonl"))
        })
        .collect();
    files.sort();
    files
}

/// Reads one spill file whole; a damaged line refuses it all.
pub fn read_spill(file: &Path) -> Result<Vec<Unspilled>, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read the spill file {}: {e}", file.display()))?;
    let mut answers = Vec::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let damaged = || {
            format!(
                "the spill file {} is damaged at line {}",
                file.display(),
                n + 1
            )
        };
        let s: Spilled = serde_json::from_str(line).map_err(|_| damaged())?;
        let bytes = B64.decode(&s.ciphertext).map_err(|_| damaged())?;
        answers.push(Unspilled {
            // Written by this code; the sealed token set is bound to them.
            connection_id: ConnectionId::known(s.connection_id),
            tenant_id: TenantId::known(s.tenant_id),
            provider: ProviderKey::known(s.provider),
            version: s.version,
            owner: s.owner,
            sealed: Sealed {
                key_id: s.key_id,
                bytes,
            },
            refreshed: Refreshed {
                expires_at: s.expires_at,
                next_refresh_at: s.next_refresh_at,
                refresh_expires_at: s.refresh_expires_at,
                scopes: s.scopes,
            },
            actor: actor_from(&s.actor),
        });
    }
    Ok(answers)
}
