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

use serde::{Deserialize, Serialize};
use weir_connectors::Endpoint;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    #[default]
    AtMostOnce,
    AtLeastOnce,
    ExactlyOnce,
}

impl Delivery {
    pub fn name(self) -> &'static str {
        match self {
            Delivery::AtMostOnce => "at_most_once",
            Delivery::AtLeastOnce => "at_least_once",
            Delivery::ExactlyOnce => "exactly_once",
        }
    }

    /// Whether inputs go through durable logs.
    pub fn durable(self) -> bool {
        self != Delivery::AtMostOnce
    }

    /// Why `endpoint` cannot serve as a source (`input`) or sink of a rule with this guarantee.
    pub fn refusal(self, stream: &str, endpoint: &Endpoint, input: bool) -> Option<String> {
        let why = match (self, endpoint, input) {
            (Delivery::AtMostOnce, _, _) => None,
            (_, Endpoint::File(_), true) => Some(
                "a file source is read again from its start whenever the rule starts".to_owned(),
            ),
            (_, Endpoint::Mqtt(c), true) if c.qos == 0 => Some(
                "MQTT QoS 0 messages are never redelivered; set qos = '1', session = 'persistent' and a client_id".to_owned(),
            ),
            // With a clean session the broker forgets what it had not delivered when the
            // connection drops: a crash loses the QoS 1 messages in flight.
            (_, Endpoint::Mqtt(c), true) if !c.persistent => Some(
                "with a clean session the broker drops the messages in flight when the rule's connection ends (a crash loses them); set session = 'persistent' and a client_id, so the broker keeps them for the rule".to_owned(),
            ),
            (_, Endpoint::Nats(c), true) if c.stream.is_none() => Some(
                "core NATS does not redeliver; read through JetStream with stream = '...'"
                    .to_owned(),
            ),
            // JetStream and Kafka number their messages: the input log takes each number once.
            (Delivery::ExactlyOnce, Endpoint::Nats(_), true) => None,
            #[cfg(feature = "kafka")]
            (Delivery::ExactlyOnce, Endpoint::Kafka(_), true) => None,
            (Delivery::ExactlyOnce, Endpoint::Mqtt(_) | Endpoint::Amqp(_), true) => {
                Some(format!(
                    "a {} message redelivered after a crash cannot be told from a new one, so this source gives at_least_once at most",
                    endpoint.kind()
                ))
            }
            (Delivery::ExactlyOnce, Endpoint::Embedded { .. }, false) => None,
            // Results carry ids JetStream deduplicates by.
            (Delivery::ExactlyOnce, Endpoint::Nats(c), false) if c.stream.is_some() => None,
            (Delivery::ExactlyOnce, _, false) => Some(format!(
                "a {} sink can neither take part in the checkpoint's atomic write nor drop a result sent twice; write to an embedded topic or a NATS JetStream stream, or use at_least_once",
                endpoint.kind()
            )),
            _ => None,
        }?;
        Some(format!(
            "{} stream {stream} cannot give {}: {why}",
            if input { "source" } else { "sink" },
            self.name()
        ))
    }
}
