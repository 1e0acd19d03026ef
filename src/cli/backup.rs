//! `tether backup` and `tether restore`: copies of the SQLite database, with
//! progress on stderr.

use crate::config::Settings;
use crate::startup;

/// A progress line on stderr after each step, for a copy of more than one step.
fn progress_line(what: &'static str, pages_per_step: i32) -> impl FnMut(crate::backup::Progress) {
    move |p| {
        if p.total > i64::from(pages_per_step) {
            eprintln!(
                "{what}: {} of {} pages ({}%)",
                p.copied,
                p.total,
                p.copied * 100 / p.total.max(1)
            );
        }
    }
}

pub(super) fn backup(
    settings: &Settings,
    file: &std::path::Path,
    pages_per_step: i32,
) -> Result<(), String> {
    let done = crate::backup::backup(
        settings,
        file,
        pages_per_step,
        progress_line("backup", pages_per_step),
    )?;
    println!(
        "backed up {} to {}: {} pages, {} bytes, as of one moment",
        done.database.display(),
        file.display(),
        done.pages,
        done.bytes
    );
    println!(
        "keep the encryption keys with these ids beside it (TETHER_ENCRYPTION_KEYS): {}; without them the backup cannot be opened",
        done.key_ids.join(", ")
    );
    Ok(())
}

pub(super) fn restore(
    settings: &Settings,
    file: &std::path::Path,
    pages_per_step: i32,
) -> Result<(), String> {
    // Checked before the key ring: on PostgreSQL there is nothing to restore.
    crate::backup::sqlite_path(settings)?;
    let ring = startup::existing_key_ring(settings)?.ok_or_else(|| {
        format!(
            "no key ring to check the backup with: set TETHER_ENCRYPTION_KEYS to the keys it was taken under{}",
            if settings.is_production() {
                String::new()
            } else {
                format!(
                    " (or put the development key file {} back)",
                    settings.data_dir.join(startup::DEV_KEY_FILE).display()
                )
            }
        )
    })?;
    let done = crate::backup::restore(
        settings,
        file,
        &ring,
        pages_per_step,
        progress_line("restore", pages_per_step),
    )?;
    println!(
        "restored {} into {}: {} pages; key ids in it: {}",
        file.display(),
        done.database.display(),
        done.pages,
        done.key_ids.join(", ")
    );
    if let Some(previous) = &done.previous {
        println!(
            "the database it replaced is kept as {}: delete it once Tether runs well",
            previous.display()
        );
    }
    Ok(())
}
