//! The Kafka connector's spec: its options and their validation, its delivery guarantees.

use crate::spec::{ConnectorSpec, Kind, Moves, OptionSpec};
#[cfg(feature = "kafka")]
use {
    super::KafkaConfig,
    crate::delivery::{self, Delivery},
    crate::options::Opts,
};

/// What the Kafka connector takes and gives.
pub const SPEC: ConnectorSpec = ConnectorSpec {
    name: "kafka",
    summary: "An Apache Kafka broker (or one that speaks its protocol, such as Redpanda or \
              tansu): consumer groups share a topic's partitions; durable rules keep each \
              partition's offset with their input and commit it to the group; the producer is \
              idempotent and keys results by a column. No TLS or SASL yet: the Kafka client \
              encrypts with OpenSSL only, and weir's one TLS stack is rustls.",
    feature: Some("kafka"),
    options: &[&[
        OptionSpec {
            name: "url",
            kind: Kind::Url(&["kafka"]),
            default: Some("kafka://127.0.0.1:9092"),
            doc: "the first bootstrap server",
        },
        OptionSpec {
            name: "brokers",
            kind: Kind::Text,
            default: None,
            doc: "all bootstrap servers, `host:port,host:port` (instead of the url's)",
        },
        OptionSpec {
            name: "topic",
            kind: Kind::Text,
            default: None,
            doc: "required: the topic",
        },
        OptionSpec {
            name: "group",
            kind: Kind::Text,
            default: None,
            doc: "a source's consumer group (default `weir-<rule>-<stream>`: the rule's copies share the partitions)",
        },
        OptionSpec {
            name: "partitions",
            kind: Kind::Int { min: 1, max: 10_000 },
            default: None,
            doc: "create a missing topic with this many partitions (default: the broker's)",
        },
    ]],
    source: "exactly_once: the rule's log takes each partition offset once",
    sink: "at_least_once (the idempotent producer waits for each acknowledgement)",
    moves: Moves::Yes(
        "the broker keeps what the rule has not yet read, and a durable rule carries what its log holds",
    ),
    connection_test: "fetches the cluster's metadata (5 s)",
    not_on_node: None,
};

#[cfg(feature = "kafka")]
impl KafkaConfig {
    pub(crate) fn from_opts(stream: &str, o: &mut Opts) -> KafkaConfig {
        let url = o.url();
        let mut brokers = format!("{}:{}", url.host, url.port.unwrap_or(9092));
        // The Kafka client (librdkafka) encrypts and runs SCRAM with OpenSSL only, and weir's
        // one TLS stack is rustls: credentials are refused rather than sent in plain text.
        if url.login.is_some() {
            o.fault(
                "url",
                "a user and password in the url: Kafka with TLS or SASL is not supported yet; reach the broker on a network you trust".to_owned(),
            );
        }
        if let Some(more) = o.get("brokers") {
            brokers = more.to_owned();
        }
        let topic = match o.get("topic") {
            Some(t) => t.to_owned(),
            None => {
                o.fault(
                    "topic",
                    format!("option 'topic' is required (the Kafka topic of {stream})"),
                );
                String::new()
            }
        };
        KafkaConfig {
            brokers,
            topic,
            group: o.get("group").map(str::to_owned),
            partitions: o
                .get("partitions")
                .is_some()
                .then(|| o.number("partitions")),
            key: o.get("key").map(str::to_owned),
        }
    }

    /// Why this stream cannot give `d` as a source (`input`) or sink.
    pub(crate) fn cannot_give(&self, d: Delivery, input: bool) -> Option<String> {
        match input {
            true => None,
            false => delivery::no_exactly_once_sink(d, "kafka"),
        }
    }
}
