//! Connectors move events between the outside world and the engine; codecs turn bytes into rows
//! and back. Each connector is a module with the same layout: a `spec.rs` declaring its options
//! (with their validation), its delivery guarantees and whether it moves, which builds its
//! config struct from the stream's `WITH (...)` options up front; and beside it a connection
//! check, a source and a sink. [`registry`] lists the connectors, [`endpoint::Endpoint`] picks
//! the one of a stream, [`check`] validates a program's streams for `weir check` and the node
//! alike, [`delivery`] asks the specs what a rule's guarantee needs; [`live`] holds what the
//! network connectors share (health, backoff). The file connector also has a batch form for `weir run`
//! that feeds an [`weir_engine::Ingest`] directly.

// The workspace asks for docs on every public item (missing_docs); this crate's older items
// are not all documented yet. Remove this allow once `cargo check` finds none here.
#![allow(missing_docs)]

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
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid connector setting: {0}")]
    Config(String),
    #[error("cannot reach {0}")]
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
