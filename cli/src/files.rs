//! Reading the files the commands are given, for every command (`main.rs` and the command
//! modules alike), so no command module imports the crate root.

use std::path::Path;
use std::process::ExitCode;

/// Reads a file, or explains why not (exit code 2).
pub fn read(path: &Path) -> Result<Vec<u8>, ExitCode> {
    std::fs::read(path).map_err(|e| {
        eprintln!("apiguard: cannot read {}: {e}", path.display());
        ExitCode::from(2)
    })
}
