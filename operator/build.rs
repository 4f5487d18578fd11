//! Puts the git revision into `GOIM_GIT_REVISION` for `--version` (`0.1.0 (abc1234)`): the
//! builder's `GOIM_GIT_REVISION` when set (images/Dockerfile passes it: a build context may
//! lack .git), else `git rev-parse --short HEAD`, else "unknown" (a source tarball, no git).
//! The same script is the root crate's build.rs.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=GOIM_GIT_REVISION");
    let given = std::env::var("GOIM_GIT_REVISION").ok().filter(|r| !r.trim().is_empty());
    let revision = given.map(|r| r.trim().to_owned()).or_else(from_git).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=GOIM_GIT_REVISION={revision}");
    println!("cargo:rerun-if-changed=build.rs");
    // Rerun when HEAD moves: HEAD itself (a checkout) and the ref it names (a commit). Only
    // paths that exist: a missing one would rerun this script on every build.
    let Some(git) = git_dir() else { return };
    let head = git.join("HEAD");
    if head.is_file() {
        println!("cargo:rerun-if-changed={}", head.display());
    }
    if let Some(reference) =
        std::fs::read_to_string(&head).ok().and_then(|h| h.strip_prefix("ref: ").map(|r| git.join(r.trim())))
        && reference.is_file()
    {
        println!("cargo:rerun-if-changed={}", reference.display());
    }
    let packed = git.join("packed-refs");
    if packed.is_file() {
        println!("cargo:rerun-if-changed={}", packed.display());
    }
}

/// The repository's git directory (`git rev-parse --git-dir`, absolute).
fn git_dir() -> Option<std::path::PathBuf> {
    let out = Command::new("git").args(["rev-parse", "--absolute-git-dir"]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let dir = String::from_utf8(out.stdout).ok()?;
    Some(Path::new(dir.trim()).to_path_buf())
}

/// `git rev-parse --short HEAD`, when this is a git checkout and git is installed.
fn from_git() -> Option<String> {
    let out = Command::new("git").args(["rev-parse", "--short", "HEAD"]).output().ok()?;
    let revision = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !revision.is_empty()).then_some(revision)
}
