//! `tether backup` and `tether restore` for the embedded SQLite database: a
//! consistent copy taken while Tether serves (SQLite's online backup API,
//! reading one snapshot), and a copy put back in place, checked first and
//! refused while any process has the database open. PostgreSQL has its own
//! tools (`pg_dump`, `pg_restore`).

use crate::config::Settings;
use crate::crypto::KeyRing;
use crate::db::{Backend, DbConn};
use diesel::{Connection as _, SqliteConnection};
use libsqlite3_sys as ffi;
use std::ffi::{CStr, CString};
use std::os::raw::c_int;
use std::path::{Path, PathBuf};

/// What `backup` and `restore` answer on a PostgreSQL URL.
pub const POSTGRES_REFUSAL: &str = "TETHER_DATABASE_URL names PostgreSQL: `tether backup` and `tether restore` copy the SQLite database only; back up PostgreSQL with its own tools (`pg_dump --format=custom`, and `pg_restore` to put it back)";

/// Pages copied per step unless told otherwise (4 MiB at SQLite's 4 KiB pages).
pub const PAGES_PER_STEP: i32 = 1024;

/// How far a copy has come, after each step.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub copied: i64,
    pub total: i64,
}

/// A backup written.
#[derive(Debug)]
pub struct BackedUp {
    pub database: PathBuf,
    pub pages: i64,
    pub bytes: u64,
    /// Key ids of the ring that wrote it (its `key_checks`): the keys that
    /// must be kept beside the file.
    pub key_ids: Vec<String>,
}

/// A backup put back.
#[derive(Debug)]
pub struct Restored {
    pub database: PathBuf,
    pub pages: i64,
    pub key_ids: Vec<String>,
    /// Where the database it replaced was copied, if there was one.
    pub previous: Option<PathBuf>,
}

/// The SQLite file the settings name; PostgreSQL is refused.
pub fn sqlite_path(settings: &Settings) -> Result<PathBuf, String> {
    match Backend::from_url(settings.database_url.expose())? {
        Backend::Sqlite(path) => Ok(path),
        Backend::Postgres(_) => Err(POSTGRES_REFUSAL.into()),
    }
}

/// Copies the live database to `file` as of one moment, without stopping
/// writers: the copy reads a single snapshot (one read transaction across
/// every step), so a refresh committing meanwhile is either wholly in it or
/// not at all. `file` is written beside itself and renamed into place once
/// complete and checked, so an existing backup is replaced only by a whole one.
pub fn backup(
    settings: &Settings,
    file: &Path,
    pages_per_step: i32,
    mut progress: impl FnMut(Progress),
) -> Result<BackedUp, String> {
    let database = sqlite_path(settings)?;
    if !database.is_file() {
        return Err(format!("there is no database at {}", database.display()));
    }
    if same_file(&database, file) {
        return Err(format!(
            "{} is the database itself: write the backup elsewhere",
            file.display()
        ));
    }
    let source = Sqlite::open(&database, ffi::SQLITE_OPEN_READWRITE)?;
    source.exec("PRAGMA busy_timeout = 10000")?;
    // The snapshot: every step below reads inside this one transaction.
    source.exec("BEGIN")?;
    source.strings("SELECT count(*) FROM sqlite_master")?;
    let partial = Scratch::create(file, "partial")?;
    let dest = Sqlite::open(&partial.path, ffi::SQLITE_OPEN_READWRITE)?;
    let pages = copy(&source, &dest, pages_per_step, &mut progress)?;
    source.exec("COMMIT")?;
    drop(source);
    // A standalone file: no -wal or -shm needed to read it.
    dest.exec("PRAGMA journal_mode = DELETE")?;
    check_integrity(&dest, file)?;
    let key_ids =
        key_ids(&dest).map_err(|_| format!("{} is not a Tether database", database.display()))?;
    drop(dest);
    let bytes = partial.persist(file)?;
    Ok(BackedUp {
        database,
        pages,
        bytes,
        key_ids,
    })
}

/// Puts the backup `file` in place of the database the settings name, after
/// checking that it is a Tether database that `ring` opens (migrated to this
/// version on a scratch copy first). Refused, with nothing changed, while any
/// process has the database open: a running `tether serve` keeps it open for
/// as long as it runs. The database replaced is copied aside first.
pub fn restore(
    settings: &Settings,
    file: &Path,
    ring: &KeyRing,
    pages_per_step: i32,
    mut progress: impl FnMut(Progress),
) -> Result<Restored, String> {
    let database = sqlite_path(settings)?;
    if !file.is_file() {
        return Err(format!("there is no backup at {}", file.display()));
    }
    if same_file(&database, file) {
        return Err(format!("{} is the database itself", file.display()));
    }
    if !is_sqlite_file(file) {
        return Err(format!("{} is not a SQLite database", file.display()));
    }
    if let Some(dir) = database.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }

    // 1. A scratch copy of the backup beside the database, migrated and
    //    checked: the backup itself is only read.
    let staged = Scratch::create(&database, "restore")?;
    {
        let backup = Sqlite::open(file, ffi::SQLITE_OPEN_READONLY)?;
        let scratch = Sqlite::open(&staged.path, ffi::SQLITE_OPEN_READWRITE)?;
        copy(&backup, &scratch, pages_per_step, &mut |_| {})?;
        if key_ids(&scratch).is_err() {
            return Err(format!(
                "{} is not a Tether database (it has no key_checks table)",
                file.display()
            ));
        }
    }
    let key_ids = {
        let path = staged
            .path
            .to_str()
            .ok_or("the database path is not UTF-8")?;
        let mut conn = DbConn::Sqlite(
            SqliteConnection::establish(path).map_err(|e| format!("cannot open a copy: {e}"))?,
        );
        crate::db::migrate(&mut conn)
            .map_err(|e| format!("{} cannot be migrated: {e}", file.display()))?;
        match crate::keys::check(&mut conn, ring) {
            Ok(Ok(())) => {}
            Ok(Err(finding)) => {
                return Err(format!(
                    "the configured key ring cannot open {}: {finding}. Nothing was changed",
                    file.display()
                ))
            }
            Err(e) => return Err(format!("cannot read {}: {e}", file.display())),
        }
        drop(conn);
        let scratch = Sqlite::open(&staged.path, ffi::SQLITE_OPEN_READWRITE)?;
        check_integrity(&scratch, file)?;
        key_ids(&scratch)?
    };

    // 2. The database, locked against every other process for the rest
    //    (a new one private, as the backups are).
    if !database.exists() {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        match options.open(&database) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("cannot write {}: {e}", database.display())),
        }
    }
    let target = Sqlite::open(
        &database,
        ffi::SQLITE_OPEN_READWRITE | ffi::SQLITE_OPEN_CREATE,
    )?;
    target.exec("PRAGMA busy_timeout = 0; PRAGMA locking_mode = EXCLUSIVE")?;
    if let Err(e) = target.exec("BEGIN EXCLUSIVE; COMMIT") {
        return Err(if e.busy() {
            format!(
                "{} is open in another process (a running `tether serve`, or another tether command): stop it, then restore. Nothing was changed",
                database.display()
            )
        } else {
            e.to_string()
        });
    }

    // 3. What it held, aside; then the backup, in place (same file, so no
    //    stale -wal of the old database can be replayed onto the new one).
    let previous = if target.strings("SELECT count(*) FROM sqlite_master")? != ["0"] {
        let aside = aside_name(&database);
        let copy_aside = Scratch::create(&aside, "partial")?;
        let dest = Sqlite::open(&copy_aside.path, ffi::SQLITE_OPEN_READWRITE)?;
        copy(&target, &dest, pages_per_step, &mut |_| {})?;
        dest.exec("PRAGMA journal_mode = DELETE")?;
        drop(dest);
        copy_aside.persist(&aside)?;
        Some(aside)
    } else {
        None
    };
    // Written through the WAL, as Tether runs it: closing the handle then
    // leaves no rollback journal behind (exclusive mode would keep one).
    target.exec("PRAGMA journal_mode = WAL")?;
    let staged_db = Sqlite::open(&staged.path, ffi::SQLITE_OPEN_READONLY)?;
    let pages = copy(&staged_db, &target, pages_per_step, &mut progress)?;
    drop(staged_db);
    check_integrity(&target, &database)?;
    drop(target);
    drop(staged);
    Ok(Restored {
        database,
        pages,
        key_ids,
        previous,
    })
}

/// Held by `tether serve` for as long as it runs: an open handle on the
/// SQLite database, which `restore` sees (a pool may briefly hold none).
pub struct Presence {
    _db: Sqlite,
}

impl Presence {
    /// `None` on PostgreSQL.
    pub fn hold(settings: &Settings) -> Result<Option<Presence>, String> {
        let Ok(path) = sqlite_path(settings) else {
            return Ok(None);
        };
        let db = Sqlite::open(&path, ffi::SQLITE_OPEN_READWRITE)?;
        db.exec("PRAGMA busy_timeout = 10000")?;
        // A first read opens the WAL; the handle then keeps its shared lock
        // on the file until it is closed.
        db.strings("PRAGMA user_version")?;
        Ok(Some(Presence { _db: db }))
    }
}

/// `tether.db` -> `tether.db.before-restore-20261101T101500Z`.
fn aside_name(database: &Path) -> PathBuf {
    let name = database
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "tether.db".into());
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    database.with_file_name(format!("{name}.before-restore-{stamp}"))
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

fn is_sqlite_file(path: &Path) -> bool {
    use std::io::Read;
    let mut header = [0u8; 16];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut header))
        .is_ok_and(|()| &header == b"SQLite format 3\0")
}

fn check_integrity(db: &Sqlite, what: &Path) -> Result<(), String> {
    let found = db.strings("PRAGMA quick_check")?;
    if found == ["ok"] {
        Ok(())
    } else {
        Err(format!(
            "the copy of {} fails SQLite's integrity check: {}",
            what.display(),
            found.join("; ")
        ))
    }
}

fn key_ids(db: &Sqlite) -> Result<Vec<String>, SqlError> {
    db.strings("SELECT key_id FROM key_checks ORDER BY key_id")
}

/// Creates (or empties) `path`, readable by its owner only.
fn private_file(path: &Path) -> Result<(), String> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
        .open(path)
        .map(drop)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// A file being written beside its destination (mode 0600: it holds sealed
/// tokens), removed unless persisted.
struct Scratch {
    path: PathBuf,
    kept: bool,
}

impl Scratch {
    fn create(next_to: &Path, what: &str) -> Result<Scratch, String> {
        let name = next_to
            .file_name()
            .ok_or_else(|| format!("{} names no file", next_to.display()))?
            .to_string_lossy();
        let path = next_to.with_file_name(format!(".{name}.{what}-{}", std::process::id()));
        private_file(&path)?;
        Ok(Scratch { path, kept: false })
    }

    /// Flushes it to disk and renames it to `to`; returns its size.
    fn persist(mut self, to: &Path) -> Result<u64, String> {
        let file = std::fs::File::open(&self.path)
            .and_then(|f| f.sync_all().map(|()| f))
            .map_err(|e| format!("cannot flush {}: {e}", self.path.display()))?;
        let bytes = file.metadata().map(|m| m.len()).unwrap_or_default();
        std::fs::rename(&self.path, to)
            .map_err(|e| format!("cannot write {}: {e}", to.display()))?;
        self.kept = true;
        Ok(bytes)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !self.kept {
            for suffix in ["", "-journal", "-wal", "-shm"] {
                let mut p = self.path.clone().into_os_string();
                p.push(suffix);
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

/// Copies the whole of `src` over `dest` with the online backup API,
/// `pages_per_step` at a time; returns the pages copied.
fn copy(
    src: &Sqlite,
    dest: &Sqlite,
    pages_per_step: i32,
    progress: &mut dyn FnMut(Progress),
) -> Result<i64, SqlError> {
    // SAFETY: both handles are open for the life of `Sqlite`; the names are
    // NUL-terminated literals; the backup is finished before returning.
    let backup =
        unsafe { ffi::sqlite3_backup_init(dest.db, c"main".as_ptr(), src.db, c"main".as_ptr()) };
    if backup.is_null() {
        return Err(dest.error(ffi::SQLITE_ERROR));
    }
    let outcome = loop {
        // SAFETY: `backup` is live until `sqlite3_backup_finish` below.
        let rc = unsafe { ffi::sqlite3_backup_step(backup, pages_per_step) };
        let (total, remaining) = unsafe {
            (
                ffi::sqlite3_backup_pagecount(backup),
                ffi::sqlite3_backup_remaining(backup),
            )
        };
        let (total, remaining) = (i64::from(total), i64::from(remaining));
        match rc {
            ffi::SQLITE_DONE => break Ok(total),
            ffi::SQLITE_OK => progress(Progress {
                copied: total - remaining,
                total,
            }),
            rc => break Err(SqlError::from_code(rc)),
        }
    };
    // SAFETY: finishes the live backup exactly once.
    let rc = unsafe { ffi::sqlite3_backup_finish(backup) };
    match outcome {
        Ok(_) if rc != ffi::SQLITE_OK => Err(dest.error(rc)),
        other => other,
    }
}

/// A SQLite error: its code and message.
#[derive(Debug)]
struct SqlError {
    code: c_int,
    message: String,
}

impl SqlError {
    fn from_code(code: c_int) -> SqlError {
        // SAFETY: sqlite3_errstr returns a static string for any code.
        let message = unsafe { CStr::from_ptr(ffi::sqlite3_errstr(code)) }
            .to_string_lossy()
            .into_owned();
        SqlError { code, message }
    }

    fn busy(&self) -> bool {
        matches!(self.code & 0xff, ffi::SQLITE_BUSY | ffi::SQLITE_LOCKED)
    }
}

impl std::fmt::Display for SqlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SQLite: {}", self.message)
    }
}

impl From<SqlError> for String {
    fn from(e: SqlError) -> String {
        e.to_string()
    }
}

/// A raw SQLite handle: what the backup API and file locks need, which
/// Diesel's connection does not expose.
struct Sqlite {
    db: *mut ffi::sqlite3,
    path: PathBuf,
}

impl Sqlite {
    fn open(path: &Path, flags: c_int) -> Result<Sqlite, String> {
        let c_path = CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| format!("{} contains a NUL byte", path.display()))?;
        let mut db = std::ptr::null_mut();
        // SAFETY: a NUL-terminated path and an out pointer; the handle is
        // closed by Drop even when opening failed, as SQLite asks.
        let rc = unsafe {
            ffi::sqlite3_open_v2(
                c_path.as_ptr(),
                &mut db,
                flags | ffi::SQLITE_OPEN_NOMUTEX,
                std::ptr::null(),
            )
        };
        let handle = Sqlite {
            db,
            path: path.to_path_buf(),
        };
        if rc != ffi::SQLITE_OK {
            return Err(format!(
                "cannot open {}: {}",
                path.display(),
                handle.error(rc)
            ));
        }
        Ok(handle)
    }

    fn error(&self, code: c_int) -> SqlError {
        if self.db.is_null() {
            return SqlError::from_code(code);
        }
        // SAFETY: the handle is open; the message is copied at once.
        let (code, message) = unsafe {
            (
                ffi::sqlite3_extended_errcode(self.db),
                CStr::from_ptr(ffi::sqlite3_errmsg(self.db))
                    .to_string_lossy()
                    .into_owned(),
            )
        };
        SqlError { code, message }
    }

    fn exec(&self, sql: &str) -> Result<(), SqlError> {
        let c_sql = CString::new(sql).expect("SQL without NUL");
        // SAFETY: no callback; the error message is left to sqlite3_errmsg.
        let rc = unsafe {
            ffi::sqlite3_exec(
                self.db,
                c_sql.as_ptr(),
                None,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
        if rc == ffi::SQLITE_OK {
            Ok(())
        } else {
            Err(self.error(rc))
        }
    }

    /// The first column of every row of one statement, as text.
    fn strings(&self, sql: &str) -> Result<Vec<String>, SqlError> {
        let c_sql = CString::new(sql).expect("SQL without NUL");
        let mut stmt = std::ptr::null_mut();
        // SAFETY: one statement, prepared, stepped and finalized here.
        let rc = unsafe {
            ffi::sqlite3_prepare_v2(self.db, c_sql.as_ptr(), -1, &mut stmt, std::ptr::null_mut())
        };
        if rc != ffi::SQLITE_OK {
            return Err(self.error(rc));
        }
        let mut out = Vec::new();
        let result = loop {
            match unsafe { ffi::sqlite3_step(stmt) } {
                ffi::SQLITE_ROW => {
                    let text = unsafe { ffi::sqlite3_column_text(stmt, 0) };
                    out.push(if text.is_null() {
                        String::new()
                    } else {
                        unsafe { CStr::from_ptr(text.cast()) }
                            .to_string_lossy()
                            .into_owned()
                    });
                }
                ffi::SQLITE_DONE => break Ok(out),
                rc => break Err(self.error(rc)),
            }
        };
        unsafe { ffi::sqlite3_finalize(stmt) };
        result
    }
}

impl Drop for Sqlite {
    fn drop(&mut self) {
        // SAFETY: every statement and backup made on it is finished by now.
        unsafe { ffi::sqlite3_close(self.db) };
    }
}

impl std::fmt::Debug for Sqlite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sqlite({})", self.path.display())
    }
}
