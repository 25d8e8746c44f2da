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
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git")
            .args(args)
            .current_dir(&root)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
            .filter(|r| !r.is_empty())
    };
    // Built again when HEAD moves (a commit, a checkout, refs packed by a fetch or a gc). Only
    // paths that exist are named: cargo re-runs a script on every build for one that does not.
    // `--git-dir` also finds a worktree's, where `.git` is a file.
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        let dir = root.join(dir);
        let mut watch = vec![dir.join("HEAD"), dir.join("packed-refs")];
        if let Some(r) = std::fs::read_to_string(dir.join("HEAD"))
            .ok()
            .and_then(|h| h.trim().strip_prefix("ref: ").map(str::to_owned))
        {
            watch.push(dir.join(r));
        }
        for path in watch.iter().filter(|p| p.exists()) {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    git(&["rev-parse", "--short=12", "HEAD"])
}
