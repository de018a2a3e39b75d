//! Connectors move events between the outside world and the engine; codecs turn bytes into rows
//! and back. Each connector is a module with the same layout: a `spec.rs` declaring its options
//! (with their validation), its delivery guarantees and whether it moves, which builds its
//! config struct from the stream's `WITH (...)` options up front; and beside it a connection
//! check, a source and a sink. [`registry`] lists the connectors, [`endpoint::Endpoint`] picks
//! the one of a stream, [`check`] validates a program's streams for `weir check` and the node
//! alike, [`delivery`] asks the specs what a rule's guarantee needs; [`live`] holds what the
//! network connectors share (health, backoff). The file connector also has a batch form for `weir run`
//! that feeds an [`weir_engine::Ingest`] directly.

pub mod amqp;
pub mod check;
pub mod codec;
pub mod debs;
pub mod delivery;
pub mod embedded;
pub mod endpoint;
pub mod file;
pub mod group;
pub mod http;
pub mod kafka;
pub mod live;
pub mod mqtt;
pub mod nats;
pub mod options;
pub mod registry;
pub mod spec;
pub mod tls;

pub use endpoint::Endpoint;

use std::path::PathBuf;

/// Errors of connectors, classified for retry decisions.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    #[error("{path}: {source}")]
    /// A file could not be read or written.
    Io {
        /// The file.
        path: PathBuf,
        #[source]
        /// Why.
        source: std::io::Error,
    },
    #[error("invalid connector setting: {0}")]
    /// The stream's settings are wrong: the user's to fix.
    Config(String),
    #[error("cannot reach {0}")]
    /// A broker or server could not be reached: it may come back.
    Unreachable(String),
}

impl weir_core::Classify for ConnectorError {
    fn blame(&self) -> weir_core::Blame {
        match self {
            ConnectorError::Io { .. } | ConnectorError::Unreachable(_) => {
                weir_core::Blame::External
            }
            ConnectorError::Config(_) => weir_core::Blame::User,
        }
    }
}

/// An input record that could not become an event, with the reason; written to the dead-letter
/// output so that bad input is never silently lost.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// The stream the record came in on.
    pub stream: String,
    /// 1-based line (or record) number in the input.
    pub line: u64,
    /// Why it is not an event.
    pub reason: String,
    /// The record as it came.
    pub raw: String,
}

impl DeadLetter {
    /// The dead letter as one JSON object.
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
