//! Bounds on the YAML that `apiguard validate` reads, checked before it is parsed.
//!
//! libyaml, under serde_yaml_ng, works in time quadratic in the nesting depth: at every token
//! its scanner walks one saved simple key per open flow collection. serde_yaml_ng collects a
//! whole document's events before it deserialises, so its recursion limit (128) applies only
//! after the work is done: 40,000 nested flow sequences (80 KB) took 13.6 s, 100,000 over a
//! minute. So the input is capped in size, and its nesting is measured first by the same
//! parser, libyaml ported to safe Rust (libyaml-safer, which follows libyaml's behaviour line
//! by line), one event at a time, stopping at the first collection past [`MAX_DEPTH`]: the
//! scanner runs ahead of the events by at most one line of 1,024 characters (a simple key's
//! reach), so stopping there costs O(events × depth limit), not O(size × depth); the events
//! are capped too ([`MAX_EVENTS`]), which bounds serde_yaml_ng's memory as well. A hand-written
//! scan of brackets and indentation could be fooled: whether a `[` opens a collection depends
//! on quoting, plain scalars, block scalars and indentation, which only a YAML scanner knows.

use std::io::Read;
use std::path::Path;

/// Largest YAML file `apiguard validate` reads. Envoy configurations and Istio manifests,
/// inline keys and policies included, are far smaller.
pub const MAX_BYTES: u64 = 4 * 1024 * 1024;

/// Deepest nesting of collections (block or flow) in one document. serde_yaml_ng refuses
/// deeper documents anyway (its recursion limit is 128); the project's Envoy files nest 16.
pub const MAX_DEPTH: usize = 128;

/// Most parser events (scalars, collection starts and ends, documents) in the whole input.
/// serde_yaml_ng keeps a document's events in memory before deserialising (≈ 160 bytes
/// each), and each costs up to [`MAX_DEPTH`] steps in libyaml's scanner: this bounds both.
/// The project's Envoy files make one per 11 to 31 bytes: a 4 MiB file, at most about 400,000.
pub const MAX_EVENTS: usize = 1_000_000;

/// Why YAML input was refused before it was parsed.
#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    #[error("larger than {MAX_BYTES} bytes, the limit for YAML input")]
    TooLarge,
    #[error("collections nested deeper than {MAX_DEPTH} levels at line {line} column {column}, the limit for YAML input")]
    TooDeep { line: u64, column: u64 },
    #[error("more than {MAX_EVENTS} YAML events (scalars, collections and their ends), the limit for YAML input")]
    TooManyEvents,
    #[error("not YAML: {0}")]
    Syntax(String),
}

/// Reads `path` up to [`MAX_BYTES`]; `Ok(Err(_))` when it is larger.
pub fn read_capped(path: &Path) -> std::io::Result<Result<Vec<u8>, LimitError>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_BYTES {
        return Ok(Err(LimitError::TooLarge));
    }
    Ok(Ok(bytes))
}

/// Checks that no document of `bytes` nests collections deeper than [`MAX_DEPTH`] and that
/// the input makes at most [`MAX_EVENTS`] events, reading events only as far as the first
/// that breaks a limit, or the first syntax error (serde_yaml_ng's libyaml would stop there
/// too; the error is reported as it is, rather than parsing further).
pub fn check_depth(bytes: &[u8]) -> Result<(), LimitError> {
    use libyaml_safer::{EventData, Parser};
    let mut parser = Parser::new();
    parser.set_input(bytes);
    let mut depth = 0usize;
    for (n, event) in parser.enumerate() {
        if n >= MAX_EVENTS {
            return Err(LimitError::TooManyEvents);
        }
        let event = event.map_err(|e| LimitError::Syntax(e.to_string()))?;
        match event.data {
            EventData::SequenceStart { .. } | EventData::MappingStart { .. } => {
                depth += 1;
                if depth > MAX_DEPTH {
                    let at = event.start_mark;
                    return Err(LimitError::TooDeep {
                        line: at.line + 1,
                        column: at.column + 1,
                    });
                }
            }
            EventData::SequenceEnd | EventData::MappingEnd => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}
