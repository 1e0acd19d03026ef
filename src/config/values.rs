//! Parsing one variable's value: the public URL, networks, embedding
//! origins, booleans, whole numbers in a range, durations, and the CA bundle a path
//! names. Each returns why a value is wrong, never the value itself.

use std::path::Path;
use std::time::Duration;
use url::Url;

/// The certificates of the PEM bundle at `path`, each one a root rustls
/// takes. The file's content is never told: only what is wrong with it.
pub(super) fn read_ca_certs(path: &Path) -> Result<Vec<reqwest::Certificate>, String> {
    let pem = std::fs::read(path)
        .map_err(|e| format!("'{}' is not a readable file ({e})", path.display()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|_| format!("'{}' is not a PEM bundle", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "'{}' holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    // The client parses each certificate only when it is built: build one
    // now, so that a damaged certificate stops the start, not the first call.
    certs
        .iter()
        .fold(reqwest::Client::builder(), |b, c| {
            b.add_root_certificate(c.clone())
        })
        .build()
        .map_err(|_| {
            format!(
                "'{}' holds a certificate that is not a valid X.509 certificate",
                path.display()
            )
        })?;
    Ok(certs)
}

pub(super) fn parse_public_url(s: &str) -> Result<Url, String> {
    let url = Url::parse(s)
        .map_err(|_| "is not an absolute URL such as https://tether.example.com".to_string())?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("must start with http:// or https://".into());
    }
    if url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return Err("must not carry a query, a fragment or credentials".into());
    }
    if url.host_str().is_none() {
        return Err("has no host".into());
    }
    // Redirect URIs, links and the session cookie's path are all written
    // from the root: behind a path they would point outside Tether.
    if url.path() != "/" {
        return Err("must not have a path: Tether is served at the root of its host (redirect URIs, links and cookies assume it); give a scheme and host only, such as https://tether.example.com".into());
    }
    let trimmed = url.as_str().trim_end_matches('/').to_string();
    Url::parse(&trimmed).map_err(|_| "is not a valid URL".to_string())
}

/// `none`, or comma-separated networks (`10.0.0.0/8`) or single addresses.
pub(super) fn parse_networks(s: &str) -> Result<Vec<ipnet::IpNet>, String> {
    if s.eq_ignore_ascii_case("none") {
        return Ok(Vec::new());
    }
    s.split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .enumerate()
        .map(|(i, n)| {
            n.parse::<ipnet::IpNet>()
                .or_else(|_| n.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map(|net| net.trunc())
                .map_err(|_| {
                    format!(
                        "entry {} is not a network such as 10.0.0.0/8 or an address (or 'none')",
                        i + 1
                    )
                })
                .and_then(|net| {
                    // Trusting everyone lets every client write its own
                    // address into X-Forwarded-For.
                    if net.prefix_len() == 0 {
                        Err(format!(
                            "entry {} covers every address: any client could then choose the address rate limits count by sending X-Forwarded-For; list only the load balancers' networks",
                            i + 1
                        ))
                    } else {
                        Ok(net)
                    }
                })
        })
        .collect()
}

/// `none`, or comma-separated exact origins: `scheme://host[:port]` with
/// http or https, no path (not even `/`), query, credentials or wildcard.
/// Kept as browsers serialize them (lower-case host, no default port), which
/// is what a page's `window.location.origin` says.
pub(super) fn parse_origins(s: &str) -> Result<Vec<String>, String> {
    if s.eq_ignore_ascii_case("none") {
        return Ok(Vec::new());
    }
    let mut origins: Vec<String> = Vec::new();
    for (i, entry) in s.split(',').map(str::trim).enumerate() {
        let bad = |why: &str| {
            format!(
                "entry {} {why}; write origins such as https://crm.example.com or http://127.0.0.1:3000 (or 'none')",
                i + 1
            )
        };
        if entry.is_empty() {
            return Err(bad("is empty"));
        }
        if entry.contains('*') {
            return Err(bad("has a wildcard: every origin is listed exactly"));
        }
        let Some((scheme, rest)) = entry.split_once("://") else {
            return Err(bad("is not scheme://host[:port]"));
        };
        if !matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https") {
            return Err(bad("must start with http:// or https://"));
        }
        if rest.contains(['/', '?', '#', '@', '\\']) {
            return Err(bad(
                "must be only scheme://host[:port], without a path (not even a trailing /)",
            ));
        }
        if rest.is_empty() {
            return Err(bad("has no host"));
        }
        let url = Url::parse(entry).map_err(|_| bad("is not scheme://host[:port]"))?;
        if url.host_str().is_none_or(str::is_empty) {
            return Err(bad("has no host"));
        }
        let origin = url.origin().ascii_serialization();
        if !origins.contains(&origin) {
            origins.push(origin);
        }
    }
    Ok(origins)
}

pub(super) fn parse_bool(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err("must be true or false".into()),
    }
}

/// A duration such as `90s`, `30m`, `1h` or `2d` (a bare number is seconds),
/// from `min` to `max` seconds.
pub(crate) fn parse_duration(s: &str, min: u64, max: u64) -> Result<Duration, String> {
    let why = || format!("must be a duration such as 90s, 30m, 1h or 2d (from {min} s to {max} s)");
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let per = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(why()),
    };
    let secs = digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(per))
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(why)?;
    Ok(Duration::from_secs(secs))
}

pub(super) fn parse_range<T>(s: &str, min: u64, max: u64) -> Result<T, String>
where
    T: TryFrom<u64>,
{
    let n: u64 = s
        .parse()
        .map_err(|_| format!("must be a whole number from {min} to {max}"))?;
    if !(min..=max).contains(&n) {
        return Err(format!("must be a whole number from {min} to {max}"));
    }
    T::try_from(n).map_err(|_| format!("must be a whole number from {min} to {max}"))
}

/// `TETHER_CRM_NAME`: a name people read, 1 to 60 characters, no control
/// characters (it is written into pages, always HTML-escaped).
pub(super) fn parse_crm_name(s: &str) -> Result<String, String> {
    let n = s.chars().count();
    if n == 0 || n > 60 {
        return Err(format!("must be 1 to 60 characters (it has {n})"));
    }
    if s.chars().any(char::is_control) {
        return Err("must not contain control characters such as a newline".into());
    }
    Ok(s.to_string())
}
