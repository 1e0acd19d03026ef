//! Names the commit this binary is built from (`TETHER_COMMIT`: `tether
//! --version`, `tether_build_info`): `git rev-parse --short HEAD` in a git
//! checkout, `GIT_COMMIT` when the builder sets it (a Docker context has no
//! `.git`: `--build-arg GIT_COMMIT=...`), else `unknown`. Runs again only
//! when HEAD moves or a migration is added, not on every build.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!text.is_empty()).then_some(text)
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    // The migrations are embedded (diesel's `embed_migrations!`): a new
    // folder must rebuild the crate, which a file list alone would not.
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-env-changed=GIT_COMMIT");
    // It lands in a metric's label and a version line: a plain word only.
    let given = std::env::var("GIT_COMMIT")
        .ok()
        .map(|c| c.trim().to_string())
        .filter(|c| {
            !c.is_empty()
                && c.len() <= 64
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        });
    let commit = given.or_else(|| {
        let commit = git(&["rev-parse", "--short", "HEAD"])?;
        // HEAD names a branch whose ref moves on commit; in a worktree both
        // live in git's own folders, which `--git-path` finds.
        for path in [
            git(&["rev-parse", "--git-path", "HEAD"]),
            git(&["rev-parse", "--symbolic-full-name", "HEAD"])
                .and_then(|r| git(&["rev-parse", "--git-path", &r])),
            git(&["rev-parse", "--git-path", "packed-refs"]),
        ]
        .into_iter()
        .flatten()
        // A path that does not exist (no packed-refs yet) would make cargo
        // run this script on every build.
        .filter(|p| std::path::Path::new(p).exists())
        {
            println!("cargo:rerun-if-changed={path}");
        }
        Some(commit)
    });
    println!(
        "cargo:rustc-env=TETHER_COMMIT={}",
        commit.as_deref().unwrap_or("unknown")
    );
}
