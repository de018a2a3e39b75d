//! The file connector's spec: its options, its delivery guarantees.

use super::FileConfig;
use crate::delivery::{self, Delivery};
use crate::spec::{ConnectorSpec, Kind, Moves, OptionSpec};

/// What the file connector takes and gives.
pub const SPEC: ConnectorSpec = ConnectorSpec {
    name: "file",
    summary: "A file of JSON lines or CSV, or stdin/stdout (`-`), for `weir run`: replay \
              recorded events, capture results.",
    feature: None,
    options: &[&[OptionSpec {
        name: "path",
        kind: Kind::Text,
        default: None,
        doc: "required: the file, or `-` for stdin (source) or stdout (sink); the format follows its extension unless `format` says",
    }]],
    source: "at_most_once: a file is read again from its start whenever the rule starts",
    sink: "at_least_once (appended as results come)",
    moves: Moves::No("the file is on this machine"),
    connection_test: "none",
    not_on_node: Some("a node does not open files named by rules: whoever may install rules would read and write the node's disk"),
};

impl FileConfig {
    /// Why this stream cannot give `d` as a source (`input`) or sink.
    pub(crate) fn cannot_give(&self, d: Delivery, input: bool) -> Option<String> {
        match input {
            true => Some(
                "a file source is read again from its start whenever the rule starts".to_owned(),
            ),
            false => delivery::no_exactly_once_sink(d, "file"),
        }
    }
}
