//! The embedded connector: a topic of the node's own hub, which its MQTT endpoint, HTTP ingest
//! and other rules publish to. The default when a stream names no connector.

use crate::delivery::Delivery;
use crate::spec::{ConnectorSpec, Kind, Moves, OptionSpec};

/// What the embedded connector takes and gives.
pub const SPEC: ConnectorSpec = ConnectorSpec {
    name: "embedded",
    summary: "A topic of the node itself: clients publish to it through the node's MQTT endpoint \
              or HTTP ingest (`POST /v1/streams/{name}/events`), and rules write to it for other \
              rules and for tails. The default when a stream names no connector.",
    feature: None,
    options: &[&[OptionSpec {
        name: "topic",
        kind: Kind::Text,
        default: None,
        doc: "the node topic (default: the stream's name)",
    }]],
    source: "exactly_once: events go into the rule's durable log before the publisher is answered",
    sink: "exactly_once: results are published in the checkpoint's atomic write",
    moves: Moves::No("only this node receives its embedded topics"),
    connection_test: "none needed: the topic is the node's own",
    not_on_node: None,
};

/// An embedded topic gives every guarantee as source and sink.
pub(crate) fn cannot_give(_: Delivery, _: bool) -> Option<String> {
    None
}
