//! Why the relay could not start.

use std::io;

/// Why the relay could not start.
#[derive(Debug)]
pub enum StartError {
    /// A socket could not be opened (address, port, permission...).
    Io(String, io::Error),
    /// The core refused the configuration.
    Config(String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Io(what, e) => write!(f, "{what}: {e}"),
            StartError::Config(m) => write!(f, "configuration refused: {m}"),
        }
    }
}

impl std::error::Error for StartError {}
