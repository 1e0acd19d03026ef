//! The key ring against the data: proving at start that it opens what is
//! stored, counting rows per key id, and re-encrypting under the primary key.

use crate::crypto::{Aad, CryptoError, KeyRing, Sealed};
use crate::db::models::connection::{Connection, SealedRow};
use crate::db::models::key_check::KeyCheck;
use crate::db::models::oauth_state::OAuthState;
use crate::db::models::pending_install::PendingInstall;
use crate::db::{insert_key_check_if_absent, now, DbConn};
use diesel::QueryResult;

const CHECK_PLAINTEXT: &[u8] = b"tether key check v1";

/// Records a check value for each key of the ring that has none yet, then
/// verifies the ring (see [`verify`]). Run at start.
pub fn ensure_checks(conn: &mut DbConn, ring: &KeyRing) -> Result<(), String> {
    // Verified before anything is recorded: a refused ring leaves no check
    // behind that would tie its key ids to keys nobody uses.
    verify(conn, ring)?;
    let known = KeyCheck::all(conn).map_err(db_error)?;
    for kid in ring.key_ids() {
        if !known.iter().any(|k| k.key_id == kid) {
            // Only the primary seals, so seal the check with a one-key view of the ring.
            let sealed = seal_with(ring, kid);
            insert_key_check_if_absent(
                conn,
                &KeyCheck {
                    key_id: kid.to_string(),
                    ciphertext: sealed.bytes,
                    created_at: now(),
                },
            )
            .map_err(db_error)?;
        }
    }
    verify(conn, ring)
}

/// Checks, without writing, that every key id the data uses is in the ring and
/// that each ring key is the one that wrote under its id. The error names the key id.
pub fn verify(conn: &mut DbConn, ring: &KeyRing) -> Result<(), String> {
    check(conn, ring).map_err(db_error)?
}

/// As [`verify`], with the two ways it fails apart: the outer error is the
/// database's (its text stays in the log), the inner one is Tether's own
/// finding about a key, fit to show (it names the key id, never key material).
pub fn check(conn: &mut DbConn, ring: &KeyRing) -> QueryResult<Result<(), String>> {
    for check in KeyCheck::all(conn)? {
        let kid = check.key_id.as_str();
        if ring.contains(kid) {
            if ring
                .open(kid, &check.ciphertext, Aad::KeyCheck { key_id: kid })
                .is_err()
            {
                return Ok(Err(format!(
                    "encryption key '{kid}' in TETHER_ENCRYPTION_KEYS is not the key that wrote the data under that id"
                )));
            }
        } else if Connection::uses_key(conn, kid)?
            || OAuthState::uses_key(conn, kid)?
            || PendingInstall::uses_key(conn, kid)?
        {
            return Ok(Err(format!(
                "stored data is encrypted with key id '{kid}', which TETHER_ENCRYPTION_KEYS does not contain; add it back (after the primary) and run `tether keys rotate`"
            )));
        }
    }
    Ok(Ok(()))
}

fn seal_with(ring: &KeyRing, kid: &str) -> Sealed {
    // Reorders a clone of the ring so that `kid` seals; the check is bound to its id.
    let ring = ring.with_primary(kid);
    ring.seal(CHECK_PLAINTEXT, Aad::KeyCheck { key_id: kid })
}

fn db_error(e: diesel::result::Error) -> String {
    format!("database error: {e}")
}

/// Rows per key id, for `tether keys status`.
#[derive(Debug, Default)]
pub struct KeyUsage {
    pub key_id: String,
    pub in_ring: bool,
    pub primary: bool,
    pub connections: i64,
    pub oauth_states: i64,
    /// Unclaimed provider-initiated installs.
    pub pending_installs: i64,
}

pub fn usage(conn: &mut DbConn, ring: &KeyRing) -> QueryResult<Vec<KeyUsage>> {
    let mut out: Vec<KeyUsage> = ring
        .key_ids()
        .into_iter()
        .map(|kid| KeyUsage {
            key_id: kid.to_string(),
            in_ring: true,
            primary: kid == ring.primary_id(),
            ..Default::default()
        })
        .collect();
    let mut entry = |kid: &str| -> usize {
        if let Some(i) = out.iter().position(|u| u.key_id == kid) {
            return i;
        }
        out.push(KeyUsage {
            key_id: kid.to_string(),
            ..Default::default()
        });
        out.len() - 1
    };
    let mut rows = Vec::new();
    for (kid, n) in Connection::count_by_key(conn)? {
        rows.push((entry(kid.as_deref().unwrap_or_default()), n, 0));
    }
    for (kid, n) in OAuthState::count_by_key(conn)? {
        rows.push((entry(kid.as_deref().unwrap_or_default()), n, 1));
    }
    for (kid, n) in PendingInstall::count_by_key(conn)? {
        rows.push((entry(&kid), n, 2));
    }
    for (i, n, table) in rows {
        match table {
            0 => out[i].connections = n,
            1 => out[i].oauth_states = n,
            _ => out[i].pending_installs = n,
        }
    }
    Ok(out)
}

/// What a rotation did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RotationReport {
    pub rotated: u64,
    /// Rows written by someone else while we worked (they are sealed anew by that writer).
    pub changed_meanwhile: u64,
    /// Rows that did not open: their ids, for the operator.
    pub failed: Vec<String>,
}

/// The sealed tables, each with how to page through, re-seal and replace its rows.
struct SealedTable {
    name: &'static str,
    batch: fn(&mut DbConn, &str, &str, i64) -> QueryResult<Vec<SealedRow>>,
    reseal: fn(&KeyRing, &SealedRow) -> Result<Option<Sealed>, CryptoError>,
    replace: fn(&mut DbConn, &SealedRow, &Sealed) -> QueryResult<bool>,
}

const SEALED_TABLES: [SealedTable; 3] = [
    SealedTable {
        name: "connections",
        batch: Connection::sealed_batch,
        reseal: Connection::reseal,
        replace: Connection::replace_sealed,
    },
    SealedTable {
        name: "oauth_states",
        batch: OAuthState::sealed_batch,
        reseal: OAuthState::reseal,
        replace: OAuthState::replace_sealed,
    },
    SealedTable {
        name: "pending_installs",
        batch: PendingInstall::sealed_batch,
        reseal: PendingInstall::reseal,
        replace: PendingInstall::replace_sealed,
    },
];

/// Re-encrypts every row not under the primary key, `batch` rows at a time,
/// each with a compare-and-swap so that a row written meanwhile by a running
/// server is left to that server. Safe to run again: done rows are skipped.
pub fn rotate(
    conn: &mut DbConn,
    ring: &KeyRing,
    batch: i64,
    mut progress: impl FnMut(&str),
) -> QueryResult<RotationReport> {
    let primary = ring.primary_id().to_string();
    let mut report = RotationReport::default();
    for table in &SEALED_TABLES {
        let mut after = String::new();
        let mut done = 0u64;
        loop {
            let rows = (table.batch)(conn, &primary, &after, batch)?;
            let Some(last) = rows.last() else { break };
            after = last.id.to_string();
            for row in &rows {
                match (table.reseal)(ring, row) {
                    Ok(Some(sealed)) => {
                        if (table.replace)(conn, row, &sealed)? {
                            report.rotated += 1;
                            done += 1;
                        } else {
                            report.changed_meanwhile += 1;
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        log::warn!("{} row {} did not open: {e}", table.name, row.id);
                        report.failed.push(format!("{} {}", table.name, row.id));
                    }
                }
            }
            progress(&format!("{}: {done} rows re-encrypted so far", table.name));
        }
    }
    Ok(report)
}
