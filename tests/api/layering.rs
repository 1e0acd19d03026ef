//! Layering rules for `src/`, checked by reading the source tree: the domain
//! must not name the web layer, and the file-level import graph must have no
//! cycle. Both read each file's tokens, from a small lexer that drops
//! comments and literals.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;

/// A file's path relative to `src/`, with `/` separators, e.g. `web/mod.rs`.
type FileName = String;
/// A module path as segments, e.g. `["db", "models"]`; the crate root is empty.
type ModPath = Vec<String>;
/// Every `.rs` file under `src/` and its source text.
type Sources = BTreeMap<FileName, String>;
/// The import graph: each file and the set of files it names.
type Graph = BTreeMap<FileName, BTreeSet<FileName>>;

/// Reads every `.rs` file under `src/` (recursively).
fn sources() -> Sources {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let (mut files, mut dirs) = (Sources::new(), vec![root.clone()]);
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read a directory under src/") {
            let path = entry.expect("read a directory entry under src/").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                let name = path.strip_prefix(&root).expect("a path under src/");
                let text = std::fs::read_to_string(&path).expect("read a file under src/");
                files.insert(name.to_string_lossy().replace('\\', "/"), text);
            }
        }
    }
    files
}

/// The module path of a file: `a/b.rs` -> [a, b], `a/mod.rs` -> [a],
/// `lib.rs` and `main.rs` -> []. Its child modules live in the directory of
/// the same path (`a/b/`, `a/`, `src/`).
fn module_path(file: &str) -> ModPath {
    let stem = file.trim_end_matches(".rs");
    let stem = stem.strip_suffix("/mod").unwrap_or(stem);
    if stem == "lib" || stem == "main" {
        return Vec::new();
    }
    stem.split('/').map(String::from).collect()
}

/// Whether `c` can be part of an identifier (or a number).
fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// If a comment or a literal starts at `s[i]` (the start of a token), returns
/// the index just past its end, or the end of `s` if it is unterminated;
/// otherwise returns `i`. A lifetime (`'a`) is not a literal.
fn comment_or_literal_end(s: &[char], i: usize) -> usize {
    let at = |k: usize| s.get(k).copied();
    match s[i] {
        '/' if at(i + 1) == Some('/') => (i..s.len()).find(|&k| s[k] == '\n').unwrap_or(s.len()),
        '/' if at(i + 1) == Some('*') => block_comment_end(s, i),
        '"' => quoted_end(s, i + 1, '"'),
        // '\n', '\'', '\u{..}': an escape, then up to the closing quote.
        '\'' if at(i + 1) == Some('\\') => quoted_end(s, i + 1, '\''),
        // 'x'; a lifetime such as 'a has no closing quote two chars on.
        '\'' if at(i + 2) == Some('\'') => i + 3,
        'b' | 'c' | 'r' => raw_string_end(s, i).unwrap_or(i),
        _ => i,
    }
}

/// The end of the (possibly nested) block comment starting at `s[i]`.
fn block_comment_end(s: &[char], i: usize) -> usize {
    let (mut depth, mut k) = (0, i);
    while k + 1 < s.len() {
        if (s[k], s[k + 1]) == ('/', '*') {
            depth += 1;
            k += 2;
        } else if (s[k], s[k + 1]) == ('*', '/') {
            depth -= 1;
            k += 2;
            if depth == 0 {
                return k;
            }
        } else {
            k += 1;
        }
    }
    s.len()
}

/// The index just past the `quote` that closes a literal whose body starts at
/// `s[start]`; a backslash escapes the character after it.
fn quoted_end(s: &[char], start: usize, quote: char) -> usize {
    let mut k = start;
    while k < s.len() {
        match s[k] {
            '\\' => k += 2,
            c if c == quote => return k + 1,
            _ => k += 1,
        }
    }
    s.len()
}

/// If a raw string (`r"…"`, `r#"…"#` with any number of `#`, or the same
/// after `b` or `c`) starts at `s[i]`, the index just past it.
fn raw_string_end(s: &[char], i: usize) -> Option<usize> {
    let mut k = if s[i] == 'b' || s[i] == 'c' { i + 1 } else { i };
    if s.get(k) != Some(&'r') {
        return None;
    }
    k += 1;
    let hashes = s[k..].iter().take_while(|&&c| c == '#').count();
    k += hashes;
    if s.get(k) != Some(&'"') {
        return None;
    }
    let closing: Vec<char> = std::iter::once('"')
        .chain(std::iter::repeat_n('#', hashes))
        .collect();
    let close = (k + 1..s.len()).find(|&q| s[q..].starts_with(&closing));
    Some(close.map_or(s.len(), |q| q + closing.len()))
}

/// One token of code: an identifier or number, `::`, or any other single
/// character, with its 1-based line number.
struct Token {
    text: String,
    line: usize,
}

/// Lexes Rust source into tokens, dropping whitespace, comments (nested
/// block comments included) and string, byte-string, raw-string and char
/// literals.
fn tokens(src: &str) -> Vec<Token> {
    let s: Vec<char> = src.chars().collect();
    let (mut out, mut line, mut i) = (Vec::new(), 1, 0);
    while i < s.len() {
        let start = i;
        i = comment_or_literal_end(&s, start);
        if i == start {
            i += 1;
            if is_ident_char(s[start]) {
                while i < s.len() && is_ident_char(s[i]) {
                    i += 1;
                }
            } else if s[start] == ':' && s.get(i) == Some(&':') {
                i += 1;
            }
            if !s[start].is_whitespace() {
                let text = s[start..i].iter().collect();
                out.push(Token { text, line });
            }
        }
        line += s[start..i].iter().filter(|&&c| c == '\n').count();
    }
    out
}

/// Whether a token is an identifier (not a number or punctuation).
fn is_ident(text: &str) -> bool {
    text.starts_with(|c: char| c.is_alphabetic() || c == '_')
}

/// Whether a token could be a module's name (snake case): bare `Name::` or
/// `Vec::` is a type, not a child module.
fn is_module_name(text: &str) -> bool {
    is_ident(text)
        && text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Finds the module paths named in `src`, the source of the file whose
/// module path is `module`, as (line, absolute module path): every path
/// starting with `crate::`, `super::` or `self::` (groups expanded;
/// `super`/`self` relative to the enclosing inline `mod name { … }`), and
/// every bare `name::`, taken as the file's child module `module::name`.
fn mentions(src: &str, module: &[String]) -> Vec<(usize, ModPath)> {
    let toks = tokens(src);
    let text = |k: usize| toks.get(k).map_or("", |t| t.text.as_str());
    let mut found = Vec::new();
    let mut here = module.to_vec(); // the module the current token is in
    let mut opened_at = Vec::new(); // the brace depth outside each open inline module
    let (mut depth, mut path_end) = (0_usize, 0); // tokens before `path_end` belong to a path already read
    for i in 0..toks.len() {
        match text(i) {
            "{" => depth += 1,
            "}" => {
                depth = depth.saturating_sub(1);
                if opened_at.last() == Some(&depth) {
                    opened_at.pop();
                    here.pop();
                }
            }
            "mod" if is_ident(text(i + 1)) && text(i + 2) == "{" => {
                opened_at.push(depth);
                here.push(text(i + 1).to_string());
            }
            _ => {}
        }
        if i < path_end || text(i + 1) != "::" || (i > 0 && text(i - 1) == "::") {
            continue;
        }
        if matches!(text(i), "crate" | "super" | "self") {
            let (paths, end) = read_path(&toks, i);
            path_end = end;
            found.extend(paths.iter().map(|p| (toks[i].line, absolute(p, &here))));
        } else if is_module_name(text(i)) {
            found.push((toks[i].line, [module, &[text(i).to_string()]].concat()));
        }
    }
    found
}

/// Reads the path whose first segment is `toks[i]`, expanding `{…}` groups
/// recursively (`*` names the prefix, `as name` is skipped). Returns each
/// path as written and the index of the first token after the whole path.
fn read_path(toks: &[Token], mut i: usize) -> (Vec<ModPath>, usize) {
    let text = |k: usize| toks.get(k).map_or("", |t| t.text.as_str());
    let mut prefix = Vec::new();
    while i < toks.len() {
        if text(i) == "{" {
            let mut paths = Vec::new();
            i += 1;
            while i < toks.len() && text(i) != "}" {
                let (inner, end) = read_path(toks, i);
                paths.extend(inner.into_iter().map(|p| [prefix.clone(), p].concat()));
                i = end.max(i + 1);
                while i < toks.len() && text(i) != "," && text(i) != "}" {
                    i += 1; // `as name`
                }
                if text(i) == "," {
                    i += 1;
                }
            }
            return (paths, i + 1);
        }
        if text(i) == "*" {
            return (vec![prefix], i + 1);
        }
        if !is_ident(text(i)) {
            break;
        }
        prefix.push(text(i).to_string());
        if text(i + 1) != "::" {
            return (vec![prefix], i + 1);
        }
        i += 2;
    }
    (vec![prefix], i)
}

/// Makes a path as written absolute: `crate` starts at the root, anything
/// else at `here`; each `super` goes up one, and `self` (leading, or from
/// `{self, …}`) stays put.
fn absolute(path: &[String], here: &[String]) -> ModPath {
    let mut out = if path[0] == "crate" {
        Vec::new()
    } else {
        here.to_vec()
    };
    for segment in path {
        match segment.as_str() {
            "crate" | "self" => {}
            "super" => {
                out.pop();
            }
            _ => out.push(segment.clone()),
        }
    }
    out
}

/// The file of the longest prefix of `path` that exists (`src/<p>.rs` or `src/<p>/mod.rs`).
fn resolve(path: &[String], files: &Sources) -> Option<FileName> {
    (1..=path.len()).rev().find_map(|n| {
        let p = path[..n].join("/");
        [format!("{p}.rs"), format!("{p}/mod.rs")]
            .into_iter()
            .find(|file| files.contains_key(file))
    })
}

/// Builds the import graph of `src/`: an edge from each file to every other
/// file a path in it resolves to, except `lib.rs` and `main.rs`.
fn import_graph(files: &Sources) -> Graph {
    let mut graph = Graph::new();
    for (file, src) in files {
        let mut targets = BTreeSet::new();
        for (_, path) in mentions(src, &module_path(file)) {
            match resolve(&path, files) {
                Some(target) if target != *file && target != "lib.rs" && target != "main.rs" => {
                    targets.insert(target);
                }
                _ => {}
            }
        }
        graph.insert(file.clone(), targets);
    }
    graph
}

/// The files reachable from `start` by one or more edges.
fn reachable(graph: &Graph, start: &str) -> BTreeSet<FileName> {
    let (mut seen, mut todo) = (BTreeSet::new(), vec![start.to_string()]);
    while let Some(file) = todo.pop() {
        for target in &graph[&file] {
            if seen.insert(target.clone()) {
                todo.push(target.clone());
            }
        }
    }
    seen
}

/// A shortest cycle through `start` (which must be on one), found breadth
/// first and spelled `src/start -> … -> src/start`.
fn cycle_through(graph: &Graph, start: &str) -> String {
    let mut parent: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = VecDeque::from([start]);
    while let Some(file) = queue.pop_front() {
        if graph[file].contains(start) {
            let mut path = vec![start, file];
            while *path.last().unwrap() != start {
                path.push(parent[path.last().unwrap()]);
            }
            let spelled: Vec<String> = path.iter().rev().map(|f| format!("src/{f}")).collect();
            return spelled.join(" -> ");
        }
        for target in &graph[file] {
            if !parent.contains_key(target.as_str()) {
                parent.insert(target, file);
                queue.push_back(target);
            }
        }
    }
    panic!("{start} is on no cycle")
}

/// One line per strongly connected component that has a cycle (files that
/// reach each other): a cycle through its first file, and all its files.
fn cycles(graph: &Graph) -> Vec<String> {
    let reach: BTreeMap<&FileName, _> = graph.keys().map(|f| (f, reachable(graph, f))).collect();
    let (mut reported, mut lines) = (BTreeSet::new(), Vec::new());
    for (file, from_file) in &reach {
        if reported.contains(*file) || !from_file.contains(*file) {
            continue;
        }
        let component: Vec<&FileName> = from_file
            .iter()
            .filter(|other| reach[other].contains(*file))
            .collect();
        let members: Vec<&str> = component.iter().map(|f| f.as_str()).collect();
        lines.push(format!(
            "{}   (all of: {})",
            cycle_through(graph, file),
            members.join(", ")
        ));
        reported.extend(component);
    }
    lines
}

#[test]
fn domain_files_do_not_name_the_web_layer() {
    let wiring = ["startup.rs", "main.rs", "lib.rs"];
    let mut offences = Vec::new();
    for (file, src) in &sources() {
        if file.starts_with("web/")
            || file.starts_with("demo/")
            || file.starts_with("cli/")
            || wiring.contains(&file.as_str())
        {
            continue;
        }
        for (line, path) in mentions(src, &module_path(file)) {
            if path.first().is_some_and(|s| s == "web") {
                offences.push(format!("src/{file}:{line}"));
            }
        }
    }
    offences.dedup();
    assert!(
        offences.is_empty(),
        "domain files name crate::web:\n{}",
        offences.join("\n")
    );
}

#[test]
fn the_import_graph_of_src_has_no_cycle() {
    let graph = import_graph(&sources());
    let edges: usize = graph.values().map(BTreeSet::len).sum();
    assert!(
        edges > 50,
        "only {edges} import edges in src/: the scanner reads nothing"
    );
    let cycles = cycles(&graph);
    assert!(
        cycles.is_empty(),
        "src/ has import cycles:\n{}",
        cycles.join("\n")
    );
}

/// The top-level modules of `src/`, lowest first: a module may name only
/// modules on a line above its own, so every arrow points down and no two
/// folders can form a circle. Modules on one line are peers that do not
/// name each other. `lib.rs` and `main.rs` (the crate's roots) and the
/// `redaction_tests` module (a test over the whole crate) are outside.
const RANKS: &[&[&str]] = &[
    &["crypto"],
    &["error"],
    &["ids", "metrics", "ratelimit"],
    &["db"],
    &["config"],
    &["logging", "keys", "api_keys", "sso", "providers"],
    &["backup", "demo", "oauth"],
    &["platform"],
    &["app"],
    &["auth", "refresh"],
    &["webhooks"],
    &["connections"],
    &["platforms"],
    &["offboarding"],
    &["workers"],
    &["web"],
    &["startup"],
    &["cli"],
];

/// The rank of a file's top-level module, or `None` for the roots.
fn rank_of(top: &str) -> Option<usize> {
    RANKS.iter().position(|line| line.contains(&top))
}

/// The top-level module a file belongs to: `web/api/mod.rs` -> `web`.
fn top_module(file: &str) -> &str {
    file.split('/')
        .next()
        .unwrap_or(file)
        .trim_end_matches(".rs")
}

#[test]
fn every_import_points_down_the_ranks() {
    let files = sources();
    let outside = ["lib", "main", "redaction_tests"];
    let mut offences = Vec::new();
    for (file, src) in &files {
        let top = top_module(file);
        if outside.contains(&top) {
            continue;
        }
        let Some(rank) = rank_of(top) else {
            offences.push(format!("src/{file}: module `{top}` has no rank in RANKS"));
            continue;
        };
        for (line, path) in mentions(src, &module_path(file)) {
            let Some(target) = resolve(&path, &files) else {
                continue;
            };
            let to = top_module(&target);
            if to == top || outside.contains(&to) {
                continue;
            }
            match rank_of(to) {
                Some(r) if r < rank => {}
                _ => offences.push(format!(
                    "src/{file}:{line}: `{top}` (rank {rank}) names `{}` (rank {})",
                    path.join("::"),
                    rank_of(to).map_or("none".into(), |r| r.to_string())
                )),
            }
        }
    }
    offences.dedup();
    assert!(
        offences.is_empty(),
        "imports that do not point down (see RANKS):\n{}",
        offences.join("\n")
    );
}

/// Words that name a platform with a home of its own, or one of its facts
/// (its metadata fields, headers, hosts, grants), lower case. A word that is
/// part of a longer one counts (`TETHER_GOHIGHLEVEL_APP_ID`).
const PLATFORM_WORDS: &[&str] = &[
    "gohighlevel",
    "leadconnector",
    "locationid",
    "companyid",
    "usertype",
    "approvedlocations",
    "instanceid",
    "hubspot",
    "hub_id",
    "instagram",
    "ig_refresh_token",
    "ig_exchange_token",
    "wixapis",
];

/// Short names that count only as a whole part of a word (`X-GHL-Signature`,
/// `wix`), not inside another (`highlight`).
const PLATFORM_PARTS: &[&str] = &["ghl", "wix"];

/// The code of a Rust file without its comments (string literals kept: a
/// platform's name in a string is still a platform's name in the code).
fn without_comments(src: &str) -> String {
    let s: Vec<char> = src.chars().collect();
    let (mut out, mut i) = (String::new(), 0);
    while i < s.len() {
        let end = comment_or_literal_end(&s, i);
        let comment = s[i] == '/' && matches!(s.get(i + 1), Some('/') | Some('*'));
        if end == i {
            out.push(s[i]);
            i += 1;
        } else {
            if comment {
                // Keep the line breaks, so that line numbers stay right.
                out.extend(s[i..end].iter().filter(|&&c| c == '\n'));
            } else {
                out.extend(&s[i..end]);
            }
            i = end;
        }
    }
    out
}

/// The platform words on each line of `code`, as (line, word).
fn platform_words(code: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (n, line) in code.lines().enumerate() {
        for word in line.split(|c: char| !(c.is_alphanumeric() || c == '_')) {
            let lower = word.to_ascii_lowercase();
            let named = PLATFORM_WORDS.iter().any(|w| lower.contains(w))
                || lower.split('_').any(|part| PLATFORM_PARTS.contains(&part));
            if named {
                found.push((n + 1, word.to_string()));
            }
        }
    }
    found
}

/// Generic code reaches the platforms through the seam (`src/platform.rs`)
/// and never names one: what a platform is lives in `src/providers/` (its
/// preset, the data) and `src/platforms/` (its behaviour).
#[test]
fn only_the_platforms_homes_name_a_platform() {
    let homes = ["providers/", "platforms/", "redaction_tests.rs"];
    let mut offences = Vec::new();
    let mut read = 0;
    for (file, src) in &sources() {
        if homes.iter().any(|home| file.starts_with(home)) {
            continue;
        }
        read += 1;
        for (line, word) in platform_words(&without_comments(src)) {
            offences.push(format!("src/{file}:{line}: {word}"));
        }
    }
    assert!(
        read > 50,
        "only {read} files read outside the platforms' homes"
    );
    assert!(
        offences.is_empty(),
        "generic code names a platform (move it into src/platforms/ behind the seam):\n{}",
        offences.join("\n")
    );
}

#[test]
fn the_platform_scanner_reads_code_and_strings_but_not_comments() {
    let snippet = r##"let key = "gohighlevel"; // wix in a comment
/* hubspot */ const TETHER_GOHIGHLEVEL_APP_ID: &str = "";
let h = "X-GHL-Signature"; let s = "highlight"; let r = r#"{"locationId":1}"#;
/// Instagram in a doc comment
let w = wix::Wix;
"##;
    let found: Vec<String> = platform_words(&without_comments(snippet))
        .iter()
        .map(|(line, word)| format!("{line}:{word}"))
        .collect();
    assert_eq!(
        found,
        [
            "1:gohighlevel",
            "2:TETHER_GOHIGHLEVEL_APP_ID",
            "3:GHL",
            "3:locationId",
            "5:wix",
            "5:Wix"
        ]
    );
}

#[test]
fn the_import_scanner_reads_grouped_uses_inline_modules_and_skips_strings() {
    let snippet = r##"use crate::{a::b, c::{d, e}};
use crate::f::{self, g as h, *};
let s = "crate::x \" crate::x2"; let bytes = b"crate::bx"; let c_str = c"crate::cx";
// crate::y
/* crate::w /* nested */ crate::v */ let r = r#"crate::z "quoted" "#; let q = br#"crate::q"#;
let c = '"'; let quote = '\''; let u = '\u{1F600}'; let bs = b'\\'; crate::after::chars();
fn f<'a>(x: &'a str) -> &'a str { crate :: spaced :: path(x) }
mod tests {
    use super::*;
    use self::inner::X;
}
models::Item::new(); super::super::top::T; String::new();
"##;
    let module = ["m".to_string(), "n".to_string()];
    let found: Vec<String> = mentions(snippet, &module)
        .iter()
        .map(|(line, path)| format!("{line}:{}", path.join("::")))
        .collect();
    let expected = "1:a::b 1:c::d 1:c::e 2:f 2:f::g 2:f 6:after::chars 7:spaced::path \
                    9:m::n 10:m::n::tests::inner::X 12:m::n::models 12:top::T";
    assert_eq!(found.join(" "), expected);
}

/// Every browser POST route's handler takes its form as `CsrfForm<_>`, the
/// extractor that checks the CSRF token before the handler runs, so a new
/// form cannot be added without the check.
#[test]
fn every_browser_post_handler_takes_a_csrf_checked_form() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/web");
    let mut checked = 0;
    for file in ["pages.rs", "oauth.rs"] {
        let src = std::fs::read_to_string(dir.join(file)).expect("read a web file");
        for chunk in src.split("web::post().to(").skip(1) {
            let handler = chunk.split(')').next().expect("a handler name").trim();
            // SSO is the CRM's cross-site form: its signed, single-use token
            // is what proves it (tests/api/signin.rs).
            if file == "pages.rs" && handler == "sso" {
                continue;
            }
            let start = src
                .find(&format!("async fn {handler}("))
                .unwrap_or_else(|| panic!("{file}: no async fn {handler}"));
            let params = &src[start..start + src[start..].find('{').expect("a body")];
            assert!(
                params.contains("CsrfForm<"),
                "{file}: POST handler {handler} does not take a CsrfForm"
            );
            checked += 1;
        }
    }
    assert!(checked >= 6, "found only {checked} POST handlers");
}
