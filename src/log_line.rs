//! A log line and its level: shared vocabulary (the key notes of `jwt::shared` have levels
//! too), so it imports nothing.

/// How loud a line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Debug,
    Info,
    Warn,
}

/// A line the glue writes to the host's log as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub level: Level,
    pub text: String,
}
