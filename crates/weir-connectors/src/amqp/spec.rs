//! The AMQP connector's spec: its options and their validation, its delivery guarantees.

use crate::spec::{ConnectorSpec, Kind, Moves, OptionSpec};
#[cfg(feature = "amqp")]
use {
    super::AmqpConfig,
    crate::delivery::{self, Delivery},
    crate::options::Opts,
    crate::tls::TlsOptions,
};

/// What the AMQP connector takes and gives.
pub const SPEC: ConnectorSpec = ConnectorSpec {
    name: "amqp",
    summary: "An AMQP 0-9-1 broker (RabbitMQ): direct, topic, fanout and headers exchanges, \
              declared when missing; sources acknowledge each message once their rule has taken \
              it. A source without a `queue` consumes a queue of its rule's own, \
              `weir-<rule>-<stream>`, which the broker removes after 24 h without a consumer.",
    feature: Some("amqp"),
    options: &[
        &[
            OptionSpec {
                name: "url",
                kind: Kind::Url(&["amqp", "amqps"]),
                default: Some("amqp://127.0.0.1:5672/%2f"),
                doc: "the broker and virtual host; `amqp://user:password@host:port/vhost`, `amqps://` for TLS (port 5671)",
            },
            OptionSpec {
                name: "exchange",
                kind: Kind::Text,
                default: None,
                doc: "the exchange (declared when missing); without one, the default exchange, where the routing key names the queue",
            },
            OptionSpec {
                name: "exchange_type",
                kind: Kind::OneOf(&["direct", "topic", "fanout", "headers"]),
                default: Some("direct"),
                doc: "the kind of exchange declared",
            },
            OptionSpec {
                name: "routing_key",
                kind: Kind::Text,
                default: None,
                doc: "the routing key a sink publishes with and a source's queue is bound by (`topic` is its other name)",
            },
            OptionSpec {
                name: "topic",
                kind: Kind::Text,
                default: None,
                doc: "the routing key, when `routing_key` is not given",
            },
            OptionSpec {
                name: "queue",
                kind: Kind::Text,
                default: None,
                doc: "the queue a source consumes (default: `weir-<rule>-<stream>`, or the routing key on the default exchange)",
            },
            OptionSpec {
                name: "durable",
                kind: Kind::Bool,
                default: Some("true"),
                doc: "whether declared exchanges and queues survive a broker restart",
            },
            OptionSpec {
                name: "prefetch",
                kind: Kind::Int { min: 1, max: 65535 },
                default: Some("256"),
                doc: "how many unacknowledged messages the broker sends a source at once",
            },
        ],
        crate::tls::OPTIONS,
    ],
    source: "at_least_once (messages are acknowledged after the rule's durable log holds them); a redelivered message looks new, so not exactly_once",
    sink: "at_least_once (publisher confirms)",
    moves: Moves::Yes(
        "the broker keeps what the rule has not yet read, and a durable rule carries what its log holds",
    ),
    connection_test: "opens a connection and a channel, then closes them (3 s)",
    not_on_node: None,
};

#[cfg(feature = "amqp")]
impl AmqpConfig {
    pub(crate) fn from_opts(stream: &str, o: &mut Opts) -> AmqpConfig {
        let url = o.url();
        let tls = TlsOptions::from_opts(o, url.scheme == "amqps", "amqps://");
        let routing_key = o
            .get("routing_key")
            .or(o.get("topic"))
            .unwrap_or_default()
            .to_owned();
        let exchange = o.get("exchange").unwrap_or_default().to_owned();
        // On the default exchange the routing key is the name of the queue it reaches.
        let queue = o.get("queue").map(str::to_owned).or_else(|| {
            (exchange.is_empty() && !routing_key.is_empty()).then(|| routing_key.clone())
        });
        if exchange.is_empty() && queue.is_none() && routing_key.is_empty() {
            o.fault(
                "connector",
                format!("stream {stream} needs an exchange, a queue or a routing key (topic)"),
            );
        }
        AmqpConfig {
            url: o.fitting("url").unwrap_or_default().to_owned(),
            exchange,
            exchange_type: o.word("exchange_type"),
            queue,
            expires_ms: None,
            routing_key,
            durable: o.bool("durable"),
            prefetch: o.number("prefetch"),
            tls,
        }
    }

    /// Why this stream cannot give `d` as a source (`input`) or sink.
    pub(crate) fn cannot_give(&self, d: Delivery, input: bool) -> Option<String> {
        match input {
            true => delivery::no_exactly_once_source(d, "amqp"),
            false => delivery::no_exactly_once_sink(d, "amqp"),
        }
    }
}
