//! The MQTT connector's spec: its options and their validation, its delivery guarantees.

use crate::spec::{ConnectorSpec, Kind, Moves, OptionSpec};
#[cfg(feature = "mqtt")]
use {
    super::MqttConfig,
    crate::delivery::{self, Delivery},
    crate::options::Opts,
    crate::tls::TlsOptions,
};

/// What the MQTT connector takes and gives.
pub const SPEC: ConnectorSpec = ConnectorSpec {
    name: "mqtt",
    summary: "An MQTT 3.1.1 or 5 broker (Mosquitto, EMQX, HiveMQ): topic filters with wildcards, \
              QoS 0 and 1, persistent sessions, shared subscriptions; `mqtts://` for TLS.",
    feature: Some("mqtt"),
    options: &[
        &[
            OptionSpec {
                name: "url",
                kind: Kind::Url(&["mqtt", "tcp", "mqtts", "ssl"]),
                default: Some("mqtt://127.0.0.1:1883"),
                doc: "the broker; `mqtt://user:password@host:port` to log in, `mqtts://` for TLS (port 8883)",
            },
            OptionSpec {
                name: "topic",
                kind: Kind::Text,
                default: None,
                doc: "required: the topic filter a source subscribes to (wildcards `+`, `#`), the topic a sink publishes to; else the url's path",
            },
            OptionSpec {
                name: "qos",
                kind: Kind::Int { min: 0, max: 1 },
                default: Some("0"),
                doc: "0 (at most once) or 1 (acknowledged once the rule has taken the message)",
            },
            OptionSpec {
                name: "version",
                kind: Kind::OneOf(&["3.1.1", "3", "4", "5", "5.0"]),
                default: Some("3.1.1"),
                doc: "the protocol version: 3.1.1 or 5",
            },
            OptionSpec {
                name: "client_id",
                kind: Kind::Text,
                default: None,
                doc: "a fixed client id (a persistent session needs one; default: a fresh id per connection)",
            },
            OptionSpec {
                name: "session",
                kind: Kind::OneOf(&["clean", "persistent"]),
                default: Some("clean"),
                doc: "`persistent`: the broker keeps the subscription and QoS 1 messages while the rule is away",
            },
            OptionSpec {
                name: "shared",
                kind: Kind::Text,
                default: None,
                doc: "share the subscription with other members of this group (`$share/<group>/<topic>`)",
            },
        ],
        crate::tls::OPTIONS,
    ],
    source: "at_least_once with `qos = '1'`, `session = 'persistent'` and a `client_id` (messages are acknowledged after the rule's durable log holds them); a redelivered message looks new, so not exactly_once",
    sink: "at_least_once (QoS 1 publishes are retried until acknowledged)",
    moves: Moves::Yes(
        "the broker keeps what the rule has not yet read, and a durable rule carries what its log holds",
    ),
    connection_test: "connects to the broker and waits for its CONNACK (3 s)",
    not_on_node: None,
};

#[cfg(feature = "mqtt")]
impl MqttConfig {
    pub(crate) fn from_opts(stream: &str, o: &mut Opts) -> MqttConfig {
        let url = o.url();
        let secure = matches!(url.scheme.as_str(), "mqtts" | "ssl");
        let tls = TlsOptions::from_opts(o, secure, "mqtts://");
        let topic = match o.get("topic") {
            Some(t) => t.to_owned(),
            None if !url.path.is_empty() => url.path.clone(),
            None => {
                o.fault(
                    "topic",
                    format!("option 'topic' is required (the MQTT topic filter of {stream})"),
                );
                String::new()
            }
        };
        let persistent = o.word("session") == "persistent";
        let client_id = o.get("client_id").map(str::to_owned);
        if persistent && client_id.is_none() {
            o.fault(
                "session",
                "a persistent session needs a fixed client_id".to_owned(),
            );
        }
        MqttConfig {
            port: url.port.unwrap_or(if secure { 8883 } else { 1883 }),
            host: url.host,
            topic,
            qos: o.number("qos"),
            v5: o.word("version").starts_with('5'),
            client_id,
            persistent,
            shared: o.get("shared").map(str::to_owned),
            login: url.login,
            tls,
        }
    }

    /// Why this stream cannot give `d` as a source (`input`) or sink.
    pub(crate) fn cannot_give(&self, d: Delivery, input: bool) -> Option<String> {
        if !input {
            return delivery::no_exactly_once_sink(d, "mqtt");
        }
        if self.qos == 0 {
            return Some("MQTT QoS 0 messages are never redelivered; set qos = '1', session = 'persistent' and a client_id".to_owned());
        }
        // With a clean session the broker forgets what it had not delivered when the
        // connection drops: a crash loses the QoS 1 messages in flight.
        if !self.persistent {
            return Some("with a clean session the broker drops the messages in flight when the rule's connection ends (a crash loses them); set session = 'persistent' and a client_id, so the broker keeps them for the rule".to_owned());
        }
        delivery::no_exactly_once_source(d, "mqtt")
    }
}
