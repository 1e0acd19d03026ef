//! What every command shares in its output: exit codes and why a command
//! stopped, the confirmation asked before what cannot be undone (`--yes`),
//! aligned columns, `--json` arrays, and how times are written.

use std::io::{BufRead, IsTerminal, Write};

/// Exit code of a command used wrongly (as clap's own).
pub(super) const USAGE: u8 = 2;
/// Exit code of a command that did its work, but not all of it: a
/// revocation at a provider failed, or an import line was refused.
pub(super) const PARTLY: u8 = 3;

/// Why a command stopped.
pub(super) enum Stop {
    /// Something failed (exit 1).
    Error(String),
    /// The command needs another argument to go on (exit 2).
    Usage(String),
}

impl From<String> for Stop {
    fn from(e: String) -> Stop {
        Stop::Error(e)
    }
}

/// Asks on the terminal before what cannot be undone: the person types
/// `answer`. Without a terminal, only `yes` (the command's `--yes`) goes on.
pub(super) fn confirm(question: &str, answer: &str, yes: bool, command: &str) -> Result<(), Stop> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(Stop::Usage(format!(
            "{command} cannot be undone and there is no terminal to confirm on: pass --yes (nothing was changed)"
        )));
    }
    eprint!("{question} ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the answer: {e}"))?;
    if line.trim() == answer {
        Ok(())
    } else {
        Err(Stop::Error(format!(
            "not confirmed (the answer was not '{answer}'): nothing was changed"
        )))
    }
}

/// Prints `rows` in columns under `header`, each as wide as its widest cell.
pub(super) fn print_table<const N: usize>(header: [&str; N], rows: &[[String; N]]) {
    let mut widths = header.map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; N]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header);
    for row in rows {
        line(row.each_ref().map(String::as_str));
    }
}

/// Prints `items` as one JSON array on stdout.
pub(super) fn print_json(items: Vec<serde_json::Value>) {
    println!("{}", serde_json::Value::Array(items));
}

/// A time in a list: minutes, UTC.
pub(super) fn minute(t: chrono::NaiveDateTime) -> String {
    t.format("%Y-%m-%d %H:%M").to_string()
}

/// A time in JSON: RFC 3339, UTC.
pub(super) fn rfc3339(t: chrono::NaiveDateTime) -> String {
    t.and_utc()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
