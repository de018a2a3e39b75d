//! Delivery guarantees: what a rule asks for, and whether its connectors can give it.
//!
//! - `at_most_once`: sources hand messages straight to the rule; a crash loses what is in
//!   flight. State is still checkpointed, so windows and patterns survive restarts.
//! - `at_least_once`: every message is stored in a durable log before its source acknowledges
//!   it to the broker (MQTT QoS 1 PUBACK, AMQP ack, JetStream ack, the HTTP 200 of an ingest),
//!   and the rule reads the log from the position of its last checkpoint. After a crash, what
//!   came after that checkpoint is processed again, so results may repeat.
//! - `exactly_once`: as at-least-once, and results are held back until the checkpoint that
//!   covers them is safe, then published in one atomic write with a marker of the epoch, so
//!   they appear once however often the rule restarts. Needs sources whose messages cannot be
//!   delivered twice into the log (embedded topics, HTTP ingest, JetStream and Kafka, whose
//!   stream sequences and partition offsets the log keeps) and sinks that take part in that write (embedded topics) or drop
//!   a result sent twice (JetStream, by the result's stable Nats-Msg-Id, within the stream's
//!   duplicate window).
//!
//! Acknowledging after the durable append rather than after the checkpoint gives the same
//! guarantee without holding messages at the broker: Mosquitto, for one, stops delivering after
//! 20 unacknowledged QoS 1 messages, which would cap a rule at 20 messages per checkpoint.

use crate::Endpoint;
use serde::{Deserialize, Serialize};

/// A rule's delivery guarantee.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// A crash may lose what is in flight.
    #[default]
    AtMostOnce,
    /// Nothing is lost; after a crash, results may repeat.
    AtLeastOnce,
    /// Nothing is lost and every result appears once.
    ExactlyOnce,
}

impl Delivery {
    /// The guarantee as written in a rule's options.
    pub fn name(self) -> &'static str {
        match self {
            Delivery::AtMostOnce => "at_most_once",
            Delivery::AtLeastOnce => "at_least_once",
            Delivery::ExactlyOnce => "exactly_once",
        }
    }

    /// The guarantee called `name` (`at_least_once`, ...).
    pub fn from_name(name: &str) -> Result<Delivery, String> {
        [
            Delivery::AtMostOnce,
            Delivery::AtLeastOnce,
            Delivery::ExactlyOnce,
        ]
        .into_iter()
        .find(|d| d.name() == name)
        .ok_or_else(|| {
            format!("'{name}' is not a guarantee: use at_most_once, at_least_once or exactly_once")
        })
    }

    /// Whether inputs go through durable logs.
    pub fn durable(self) -> bool {
        self != Delivery::AtMostOnce
    }

    /// Why `endpoint` cannot serve as a source (`input`) or sink of a rule with this guarantee;
    /// each connector's spec says what it can give.
    pub fn refusal(self, stream: &str, endpoint: &Endpoint, input: bool) -> Option<String> {
        if self == Delivery::AtMostOnce {
            return None;
        }
        let why = endpoint.cannot_give(self, input)?;
        Some(format!(
            "{} stream {stream} cannot give {}: {why}",
            if input { "source" } else { "sink" },
            self.name()
        ))
    }
}

/// Why a sink of connector `kind`, which neither takes part in a checkpoint's atomic write
/// nor drops a result sent twice, cannot give exactly-once.
pub(crate) fn no_exactly_once_sink(d: Delivery, kind: &str) -> Option<String> {
    (d == Delivery::ExactlyOnce).then(|| format!(
        "a sink of connector {kind} can neither take part in the checkpoint's atomic write nor drop a result sent twice; write to an embedded topic or a NATS JetStream stream, or use at_least_once"
    ))
}

/// Why a source of connector `kind`, whose redelivered messages look new, cannot give
/// exactly-once.
#[cfg(any(feature = "mqtt", feature = "amqp"))]
pub(crate) fn no_exactly_once_source(d: Delivery, kind: &str) -> Option<String> {
    (d == Delivery::ExactlyOnce).then(|| format!(
        "a message of connector {kind} redelivered after a crash cannot be told from a new one, so this source gives at_least_once at most"
    ))
}
