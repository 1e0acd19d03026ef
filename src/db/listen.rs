//! Cross-instance cache coherence on PostgreSQL. Every write to a connection
//! sends `NOTIFY tether_connections, '<tenant id> <provider>'` in the writing
//! transaction (delivered when it commits); every instance keeps one extra
//! database session that `LISTEN`s on that channel and drops the matching
//! entries of its token cache the moment a notification arrives.
//!
//! The session is libpq's own (the same bundled library diesel uses), read on
//! a thread of its own that blocks on the socket, so a notification is acted
//! on within microseconds of its arrival, not at the next poll. While the
//! session is down the cache is flushed and falls back to its short lifetime
//! (`TETHER_TOKEN_CACHE_MS`), and it is flushed again once listening resumes
//! (notifications sent in between were missed). A flush keeps the entries
//! as a last resort while the database is away (see `app::cache`).

use crate::ids::{ProviderKey, TenantId};
use diesel::prelude::*;
use pq_sys::*;
use std::ffi::{CStr, CString};
use std::sync::Weak;
use std::time::Duration;

/// The channel every instance listens on.
pub const CHANNEL: &str = "tether_connections";

/// Tells the other instances that a connection of (tenant, provider) changed.
/// Part of the caller's transaction, delivered on commit; a no-op on SQLite,
/// which serves one instance.
pub fn notify_changed(
    conn: &mut super::DbConn,
    tenant_id: &TenantId,
    provider: &ProviderKey,
) -> QueryResult<()> {
    if let super::DbConn::Postgres(pg) = conn {
        diesel::sql_query("SELECT pg_notify($1, $2)")
            .bind::<diesel::sql_types::Text, _>(CHANNEL)
            .bind::<diesel::sql_types::Text, _>(format!("{tenant_id} {provider}"))
            .execute(pg)?;
    }
    Ok(())
}

/// Whoever keeps state that other instances' writes make stale (the token
/// cache): told what the listener hears.
pub trait Hearer: Send + Sync + 'static {
    /// A connection of (tenant, provider) was written by another instance.
    fn changed(&self, tenant_id: &TenantId, provider: &ProviderKey);
    /// Something was written, nobody said what.
    fn anything_changed(&self);
    /// Whether other instances' writes are heard from now on.
    fn hearing(&self, heard: bool);
}

/// Starts the listener thread for `cache`; it ends when the cache is dropped.
pub fn spawn<H: Hearer>(database_url: &str, cache: Weak<H>) {
    let database_url = super::with_connect_timeout(database_url);
    let separator = if database_url.contains('?') { '&' } else { '?' };
    let Ok(conninfo) = CString::new(format!(
        "{database_url}{separator}application_name=tether-listener"
    )) else {
        log::error!(
            "the database URL cannot be used for LISTEN; the token cache stays short-lived"
        );
        return;
    };
    let spawned = std::thread::Builder::new()
        .name("tether-listener".into())
        .spawn(move || {
            let mut pause = Duration::from_millis(250);
            loop {
                match Session::open(&conninfo) {
                    Ok(session) => {
                        let Some(c) = cache.upgrade() else { return };
                        // Whatever was sent before this session listened is unknown.
                        c.hearing(true);
                        drop(c);
                        log::info!("token cache: listening for other instances' writes");
                        pause = Duration::from_millis(250);
                        let ended = session.serve(&cache);
                        let Some(c) = cache.upgrade() else { return };
                        c.hearing(false);
                        log::warn!(
                            "token cache: listener lost ({ended}); cache flushed, short-lived until it is back"
                        );
                    }
                    Err(e) => {
                        if cache.strong_count() == 0 {
                            return;
                        }
                        log::warn!("token cache: cannot listen ({e}); retrying in {pause:?}");
                    }
                }
                std::thread::sleep(pause);
                // At most a second apart: once the database is back, the
                // cache must be coherent again within seconds, not minutes.
                pause = (pause * 2).min(Duration::from_secs(1));
            }
        });
    if let Err(e) = spawned {
        log::error!("cannot start the token cache listener: {e}");
    }
}

extern "C" fn ignore_notice(_: *mut std::ffi::c_void, _: *const std::os::raw::c_char) {}

/// One libpq session that has run `LISTEN`.
struct Session(*mut PGconn);

impl Drop for Session {
    fn drop(&mut self) {
        // SAFETY: the pointer came from PQconnectdb and is finished once.
        unsafe { PQfinish(self.0) }
    }
}

impl Session {
    fn open(conninfo: &CStr) -> Result<Session, String> {
        // SAFETY: conninfo is a valid C string; the result is owned by Session.
        let session = Session(unsafe { PQconnectdb(conninfo.as_ptr()) });
        if session.0.is_null() {
            return Err("out of memory".into());
        }
        // libpq would print server notices (such as the FATAL of a
        // terminated session) to stderr; the outcome is logged instead.
        // SAFETY: a live connection and a function that ignores its input.
        unsafe { PQsetNoticeProcessor(session.0, Some(ignore_notice), std::ptr::null_mut()) };
        session.check()?;
        session.exec(&format!("LISTEN {CHANNEL}"))?;
        Ok(session)
    }

    fn error(&self) -> String {
        // SAFETY: PQerrorMessage returns a string owned by the connection.
        let message = unsafe { CStr::from_ptr(PQerrorMessage(self.0)) };
        // libpq's messages may name the host, never the password.
        message.to_string_lossy().trim().to_string()
    }

    fn check(&self) -> Result<(), String> {
        // SAFETY: self.0 is a live connection.
        if unsafe { PQstatus(self.0) } == ConnStatusType::CONNECTION_OK {
            Ok(())
        } else {
            Err(self.error())
        }
    }

    fn exec(&self, sql: &str) -> Result<(), String> {
        let sql = CString::new(sql).map_err(|e| e.to_string())?;
        // SAFETY: a live connection and a valid C string; the result is cleared.
        unsafe {
            let result = PQexec(self.0, sql.as_ptr());
            let ok = matches!(
                PQresultStatus(result),
                ExecStatusType::PGRES_COMMAND_OK | ExecStatusType::PGRES_TUPLES_OK
            );
            PQclear(result);
            if ok {
                Ok(())
            } else {
                Err(self.error())
            }
        }
    }

    /// Reads notifications until the session fails or the cache is gone;
    /// returns why it ended.
    fn serve<H: Hearer>(&self, cache: &Weak<H>) -> String {
        // Quiet sessions are checked now and then, so a silently dead
        // network path is noticed (libpq only sees it when it writes).
        const CHECK_EVERY: Duration = Duration::from_secs(10);
        // SAFETY: self.0 is a live connection for the whole loop.
        let socket = unsafe { PQsocket(self.0) };
        if socket < 0 {
            return "no socket".into();
        }
        loop {
            let deadline = unsafe { PQgetCurrentTimeUSec() } + CHECK_EVERY.as_micros() as i64;
            let ready = unsafe { PQsocketPoll(socket, 1, 0, deadline) };
            if cache.strong_count() == 0 {
                return "the instance stopped".into();
            }
            if ready < 0 {
                return "poll failed".into();
            }
            if ready == 0 {
                if let Err(e) = self.exec("SELECT 1") {
                    return e;
                }
            } else if unsafe { PQconsumeInput(self.0) } == 0 {
                return self.error();
            }
            loop {
                let notice = unsafe { PQnotifies(self.0) };
                if notice.is_null() {
                    break;
                }
                // SAFETY: libpq hands us the notification; we free it once.
                let payload = unsafe { CStr::from_ptr((*notice).extra) }
                    .to_string_lossy()
                    .into_owned();
                unsafe { PQfreemem(notice.cast()) };
                let Some(c) = cache.upgrade() else {
                    return "the instance stopped".into();
                };
                match payload.split_once(' ') {
                    // Written by `notify_changed`.
                    Some((tenant_id, provider)) => {
                        c.changed(&TenantId::known(tenant_id), &ProviderKey::known(provider))
                    }
                    None => c.anything_changed(),
                }
            }
            if let Err(e) = self.check() {
                return e;
            }
        }
    }
}
