//! The key ring against the data: proving at start that it opens what is
//! stored, counting rows per key id, and re-encrypting under the primary key.

use crate::crypto::{Aad, CryptoError, KeyRing, Sealed};
use crate::db::models::connection::{Connection, SealedRow};
use crate::db::models::instance::{Fingerprints, Instance, Peer};
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
    Ok(match findings(conn, ring)?.into_iter().next() {
        Some(finding) => Err(finding.to_string()),
        None => Ok(()),
    })
}

/// What the ring finds wrong with the stored data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Finding {
    /// A ring key is not the key that wrote under its id: what this instance
    /// seals could not be opened by the others, nor theirs here.
    #[error("encryption key '{0}' in TETHER_ENCRYPTION_KEYS is not the key that wrote the data under that id")]
    WrongKey(String),
    /// Rows are sealed with a key id the ring lacks: those rows fail here,
    /// every other row works.
    #[error("stored data is encrypted with key id '{0}', which TETHER_ENCRYPTION_KEYS does not contain: add '{0}' to the ring, after the primary (to retire a key, keep it in the ring until `tether keys rotate` has moved its rows; README: Rotating keys)")]
    MissingKey(String),
}

/// Every [`Finding`], wrong keys first.
pub fn findings(conn: &mut DbConn, ring: &KeyRing) -> QueryResult<Vec<Finding>> {
    let mut wrong = Vec::new();
    let mut missing = Vec::new();
    for check in KeyCheck::all(conn)? {
        let kid = check.key_id.as_str();
        if ring.contains(kid) {
            if ring
                .open(kid, &check.ciphertext, Aad::KeyCheck { key_id: kid })
                .is_err()
            {
                wrong.push(Finding::WrongKey(kid.to_string()));
            }
        } else if Connection::uses_key(conn, kid)?
            || OAuthState::uses_key(conn, kid)?
            || PendingInstall::uses_key(conn, kid)?
        {
            missing.push(Finding::MissingKey(kid.to_string()));
        }
    }
    wrong.extend(missing);
    Ok(wrong)
}

/// Where live instances disagree with this one (`me`, with `ring`): one
/// sentence each, naming the instance and the key id, never key material.
/// Instances of an earlier release tell nothing and are not judged.
pub fn disagreements(me: &Fingerprints, ring: &KeyRing, peers: &[Peer]) -> Vec<String> {
    let mut out = Vec::new();
    for peer in peers {
        let id = &peer.id;
        if let Some(theirs) = peer.key_ids.first() {
            if !ring.contains(theirs) {
                out.push(format!(
                    "instance {id} seals with encryption key '{theirs}', which this instance's TETHER_ENCRYPTION_KEYS lacks: rows it writes fail here until '{theirs}' is added (README: Rotating keys)"
                ));
            }
            let mine = ring.primary_id();
            if !peer.key_ids.iter().any(|k| k == mine) {
                out.push(format!(
                    "instance {id} lacks encryption key '{mine}', with which this instance seals: rows this instance writes fail there until '{mine}' is added to its TETHER_ENCRYPTION_KEYS (README: Rotating keys)"
                ));
            }
        }
        if let Some(theirs) = &peer.session_key_check {
            if *theirs != me.session_key_check {
                out.push(format!(
                    "instance {id} signs sessions with another TETHER_SESSION_KEY: an admin signed in through one instance is signed out by the other (README: Rotating keys)"
                ));
            }
        }
    }
    out
}

/// Why `keys rotate` with `ring` must wait: live instances that lack its
/// primary key (moving their rows to it would make those rows fail there).
pub fn rotation_blockers(conn: &mut DbConn, ring: &KeyRing) -> QueryResult<Vec<String>> {
    let primary = ring.primary_id();
    Ok(Instance::live_peers(conn, "", now())?
        .into_iter()
        .filter(|p| !p.key_ids.is_empty() && !p.key_ids.iter().any(|k| k == primary))
        .map(|p| {
            format!(
                "instance {} (running since {} UTC) lacks key '{primary}'",
                p.id,
                p.started_at.format("%Y-%m-%d %H:%M:%S")
            )
        })
        .collect())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(id: &str, key_ids: &[&str], session: Option<&str>) -> Peer {
        Peer {
            id: id.into(),
            started_at: chrono::NaiveDateTime::default(),
            key_ids: key_ids.iter().map(|k| k.to_string()).collect(),
            session_key_check: session.map(str::to_string),
        }
    }

    #[test]
    fn instances_are_told_apart_only_where_a_key_or_the_session_key_differs() {
        let ring = KeyRing::generate("k1").0;
        let me = Fingerprints {
            id: "me".into(),
            key_ids: "k1".into(),
            session_key_check: "s1".into(),
        };
        // Same keys (or a superset) and the same session key: nothing to say;
        // an instance of an earlier release tells nothing and is not judged.
        let agree = [
            peer("a", &["k1"], Some("s1")),
            peer("b", &["k1", "k0"], Some("s1")),
            peer("old", &[], None),
        ];
        assert!(disagreements(&me, &ring, &agree).is_empty());

        let told = disagreements(&me, &ring, &[peer("c", &["k2", "k1"], Some("s1"))]);
        assert_eq!(told.len(), 1, "{told:?}");
        assert!(told[0].contains("instance c seals with encryption key 'k2'"));

        let told = disagreements(&me, &ring, &[peer("d", &["k0"], Some("s2"))]);
        assert_eq!(told.len(), 3, "{told:?}");
        assert!(told[1].contains("instance d lacks encryption key 'k1'"));
        assert!(told[2].contains("another TETHER_SESSION_KEY"));
    }
}
