//! Connectors move events between the outside world and the engine; codecs turn bytes into rows
//! and back. Each connector is a module with the same layout: a config validated up front, a
//! source that feeds an [`weir_engine::Ingest`], a sink that drains an
//! [`weir_engine::OutputStream`].

pub mod codec;
pub mod file;

use std::path::PathBuf;

/// Errors of connectors, classified for retry decisions.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid connector setting: {0}")]
    Config(String),
}

impl weir_core::Classify for ConnectorError {
    fn blame(&self) -> weir_core::Blame {
        match self {
            ConnectorError::Io { .. } => weir_core::Blame::External,
            ConnectorError::Config(_) => weir_core::Blame::User,
        }
    }
}

/// An input record that could not become an event, with the reason; written to the dead-letter
/// output so that bad input is never silently lost.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub stream: String,
    /// 1-based line (or record) number in the input.
    pub line: u64,
    pub reason: String,
    pub raw: String,
}

impl DeadLetter {
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "stream": self.stream,
            "line": self.line,
            "reason": self.reason,
            "raw": self.raw,
        })
        .to_string()
    }
}
