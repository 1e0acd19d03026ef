//! Times as a person reads them: relative first ("in 58 min", "2 h ago"),
//! with the exact time beside it for a tooltip and for the `datetime` of a
//! `<time>` element. The server writes both in UTC; `static/app.js` keeps the
//! relative text current and shows the exact time in the viewer's own zone.

use chrono::{DateTime, NaiveDateTime, Utc};

/// One time on a page.
#[derive(Debug, Clone)]
pub struct Moment {
    /// RFC 3339 in UTC, for `<time datetime>`.
    pub iso: String,
    /// "in 58 min", "2 h ago", "just now".
    pub relative: String,
    /// "7 Dec 2026, 14:05 UTC", for the tooltip (and readers without script).
    pub exact: String,
    /// Already passed when the page was drawn.
    pub past: bool,
}

impl Moment {
    /// `t` as seen at `now`.
    pub fn at(t: DateTime<Utc>, now: DateTime<Utc>) -> Moment {
        let secs = (t - now).num_seconds();
        Moment {
            iso: t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            relative: relative(secs),
            exact: t.format("%-d %b %Y, %H:%M UTC").to_string(),
            past: secs < 0,
        }
    }

    /// A stored (UTC) time, seen now.
    pub fn of(t: NaiveDateTime) -> Moment {
        Moment::at(t.and_utc(), Utc::now())
    }

    /// An RFC 3339 time (as the status view gives it), seen now.
    pub fn parse(iso: Option<&str>) -> Option<Moment> {
        let t = DateTime::parse_from_rfc3339(iso?).ok()?;
        Some(Moment::at(t.with_timezone(&Utc), Utc::now()))
    }
}

/// `secs` from now as words: "in 58 min", "3 h ago", "in 10 days"; within
/// a minute either way, "just now". Rounded down to the unit shown, as
/// `static/app.js` does, so the page and the script agree.
pub fn relative(secs: i64) -> String {
    let n = secs.unsigned_abs();
    if n < 60 {
        return "just now".into();
    }
    let (count, unit) = match n {
        n if n < 3_600 => (n / 60, "min"),
        n if n < 86_400 => (n / 3_600, "h"),
        n => (n / 86_400, if n < 2 * 86_400 { "day" } else { "days" }),
    };
    if secs > 0 {
        format!("in {count} {unit}")
    } else {
        format!("{count} {unit} ago")
    }
}

/// A span of `secs` as words ("15 minutes", "2 hours"), for what a link or
/// a window lasts.
pub fn span(secs: i64) -> String {
    let n = secs.max(0);
    let (count, unit) = match n {
        n if n < 3_600 => ((n + 59) / 60, "minute"),
        n if n < 86_400 => ((n + 1_799) / 3_600, "hour"),
        n => ((n + 43_199) / 86_400, "day"),
    };
    if count == 1 {
        format!("1 {unit}")
    } else {
        format!("{count} {unit}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times_read_as_words_either_way() {
        assert_eq!(relative(0), "just now");
        assert_eq!(relative(-59), "just now");
        assert_eq!(relative(58 * 60 + 30), "in 58 min");
        assert_eq!(relative(-2 * 3_600 - 5), "2 h ago");
        assert_eq!(relative(86_400 + 10), "in 1 day");
        assert_eq!(relative(10 * 86_400 + 5), "in 10 days");
        assert_eq!(relative(-3 * 86_400), "3 days ago");
    }

    #[test]
    fn spans_round_up_to_what_a_person_is_told() {
        assert_eq!(span(15 * 60), "15 minutes");
        assert_eq!(span(14 * 60 + 50), "15 minutes");
        assert_eq!(span(60), "1 minute");
        assert_eq!(span(2 * 3_600), "2 hours");
        assert_eq!(span(7 * 86_400), "7 days");
    }

    #[test]
    fn a_moment_knows_whether_it_has_passed() {
        let now = Utc::now();
        let past = Moment::at(now - chrono::Duration::hours(2), now);
        assert!(past.past);
        assert_eq!(past.relative, "2 h ago");
        assert!(past.exact.ends_with("UTC"), "{}", past.exact);
        assert!(past.iso.ends_with('Z'), "{}", past.iso);
        assert!(!Moment::at(now + chrono::Duration::minutes(5), now).past);
    }
}
