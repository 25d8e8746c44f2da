//! Records which source the binaries were built from: `APIGUARD_GIT_REVISION` from the
//! environment (image builds, where there is no `.git`, pass it as a build argument), else
//! `git rev-parse --short=12 HEAD` of the repository, else `unknown`. Read through
//! this crate by `apiguard --version`, `apiguard-limiter --version` and the
//! limiter's `build_info` metric.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=APIGUARD_GIT_REVISION");
    let revision = std::env::var("APIGUARD_GIT_REVISION")
        .ok()
        .filter(|r| !r.trim().is_empty())
        .or_else(git_head)
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=APIGUARD_GIT_REVISION={}", revision.trim());
}

fn git_head() -> Option<String> {
    let root = Path::new(&std::env::var("CARGO_MANIFEST_DIR").ok()?)
        .parent()?
        .to_owned();
    let git = root.join(".git");
    // Built again when HEAD moves: a commit, a checkout, a fetch that packs refs.
    println!("cargo:rerun-if-changed={}", git.join("HEAD").display());
    println!(
        "cargo:rerun-if-changed={}",
        git.join("packed-refs").display()
    );
    if let Ok(head) = std::fs::read_to_string(git.join("HEAD")) {
        if let Some(r) = head.trim().strip_prefix("ref: ") {
            println!("cargo:rerun-if-changed={}", git.join(r).display());
        }
    }
    let out = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(&root)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .filter(|r| !r.is_empty())
}
