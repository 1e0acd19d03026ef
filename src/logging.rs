//! Log events, one per line: as text, or as JSON objects for a collector
//! (`TETHER_LOG_FORMAT`). A message that spans lines (a database's error
//! text often does) is folded onto one, so that a line is always one event.

use crate::config::LogFormat;
use std::io::Write;

/// Installs the logger for the process: `filter` as `RUST_LOG` reads.
pub fn init(filter: &str, format: LogFormat) {
    let mut builder = env_logger::Builder::new();
    builder.parse_filters(filter);
    match format {
        LogFormat::Text => builder.format(|out, record| writeln!(out, "{}", text(record))),
        LogFormat::Json => builder.format(|out, record| writeln!(out, "{}", json(record))),
    };
    builder.init();
}

/// Writes `message` to stderr whatever the filter: as it is in text, as an
/// event of target `tether` at `level` in JSON (so that every line stays
/// an object).
pub fn say(format: LogFormat, level: log::Level, message: &str) {
    match format {
        LogFormat::Text => eprintln!("{message}"),
        LogFormat::Json => eprintln!(
            "{}",
            serde_json::json!({
                "ts": timestamp(),
                "level": level.as_str(),
                "target": "tether",
                "message": message,
            })
        ),
    }
}

fn timestamp() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// `2026-12-07T03:04:05.678Z INFO  tether::access GET /x 200 ... key=value`.
fn text(record: &log::Record<'_>) -> String {
    let mut line = format!(
        "{} {:<5} {} {}",
        timestamp(),
        record.level(),
        record.target(),
        one_line(&record.args().to_string())
    );
    for (key, value) in fields(record) {
        line.push(' ');
        line.push_str(&key);
        line.push('=');
        line.push_str(&one_line(&value));
    }
    line
}

/// `{"ts":...,"level":"INFO","target":...,"message":...,<fields>}`.
fn json(record: &log::Record<'_>) -> String {
    let mut object = serde_json::Map::new();
    object.insert("ts".into(), timestamp().into());
    object.insert("level".into(), record.level().as_str().into());
    object.insert("target".into(), record.target().into());
    object.insert("message".into(), record.args().to_string().into());
    for (key, value) in fields(record) {
        // A field never overwrites the four every line has.
        object.entry(key).or_insert(value.into());
    }
    serde_json::Value::Object(object).to_string()
}

/// The event's key-value pairs (`log::info!(key = value; "...")`).
fn fields(record: &log::Record<'_>) -> Vec<(String, String)> {
    struct Collect(Vec<(String, String)>);
    impl<'kvs> log::kv::VisitSource<'kvs> for Collect {
        fn visit_pair(
            &mut self,
            key: log::kv::Key<'kvs>,
            value: log::kv::Value<'kvs>,
        ) -> Result<(), log::kv::Error> {
            self.0.push((key.to_string(), value.to_string()));
            Ok(())
        }
    }
    let mut collect = Collect(Vec::new());
    let _ = record.key_values().visit(&mut collect);
    collect.0
}

/// `text` with its line breaks (and other control characters) folded into
/// single spaces: one event, one line.
fn one_line(text: &str) -> String {
    if !text.contains(|c: char| c.is_control()) {
        return text.to_string();
    }
    text.split(|c: char| c.is_control())
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_is_one_line_in_either_format_with_its_fields() {
        let message = "connection to server failed\n\tIs the server running?\r\n";
        let kvs = [("status", 503), ("elapsed_ms", 12)];
        let both = |r: &log::Record<'_>| (text(r), json(r));
        let (t, j) = both(
            &log::Record::builder()
                .args(format_args!("{message}"))
                .level(log::Level::Warn)
                .target("tether::db")
                .key_values(&kvs)
                .build(),
        );

        assert_eq!(t.lines().count(), 1, "{t}");
        assert!(
            t.ends_with(
                "WARN  tether::db connection to server failed Is the server running? status=503 elapsed_ms=12"
            ),
            "{t}"
        );

        assert_eq!(j.lines().count(), 1, "{j}");
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["target"], "tether::db");
        assert_eq!(v["message"], message);
        assert_eq!(v["status"], "503");
        assert!(v["ts"].as_str().unwrap().ends_with('Z'));
    }
}
