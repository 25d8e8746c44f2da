//! Which apiguard this is: the version and the git revision it was built from (`build.rs`),
//! the same for the CLI and the limiter, which both print it with `--version`; the limiter
//! also exports it as its `build_info` metric.
#![forbid(unsafe_code)]

/// The workspace's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// A short git commit id, or `unknown` when built outside a git checkout without
/// `APIGUARD_GIT_REVISION`.
pub const REVISION: &str = env!("APIGUARD_GIT_REVISION");

/// `0.1.0 (revision 0123456789ab)`: what `--version` prints after the program's name.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (revision ",
    env!("APIGUARD_GIT_REVISION"),
    ")"
);
