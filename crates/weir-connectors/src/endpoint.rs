//! Which connector a stream uses, built from its `WITH (...)` options and validated up front:
//! every problem with the options is reported at once, before anything connects.

use std::collections::BTreeMap;

#[cfg(feature = "amqp")]
use crate::amqp::AmqpConfig;
use crate::delivery::Delivery;
use crate::file::FileConfig;
#[cfg(feature = "http")]
use crate::http::HttpConfig;
#[cfg(feature = "kafka")]
use crate::kafka::KafkaConfig;
use crate::live::{Health, PayloadRx, PayloadTx, Stop};
#[cfg(feature = "mqtt")]
use crate::mqtt::MqttConfig;
#[cfg(feature = "nats")]
use crate::nats::NatsConfig;
use crate::options::{connector_of, OptionProblem, Opts};
use crate::spec::ConnectorSpec;
use crate::ConnectorError;
use std::sync::Arc;
use tokio::task::JoinHandle;

/// A stream's connector with its validated settings.
#[derive(Debug, Clone)]
#[allow(
    clippy::large_enum_variant,
    reason = "built once per stream; which variant is largest depends on the connectors built in"
)]
pub enum Endpoint {
    /// A topic of the node's own hub (its embedded MQTT endpoint, HTTP ingest, other rules).
    Embedded {
        /// The topic's name (the stream's, unless `topic` says otherwise).
        topic: String,
    },
    #[cfg(feature = "mqtt")]
    /// An MQTT broker.
    Mqtt(MqttConfig),
    #[cfg(feature = "amqp")]
    /// An AMQP broker.
    Amqp(AmqpConfig),
    #[cfg(feature = "nats")]
    /// A NATS server, core or JetStream.
    Nats(NatsConfig),
    /// Webhook sink; as a source, events arrive by HTTP ingest.
    #[cfg(feature = "http")]
    Http(HttpConfig),
    /// A file, or stdin/stdout.
    File(FileConfig),
    #[cfg(feature = "kafka")]
    /// A Kafka broker.
    Kafka(KafkaConfig),
}

impl Endpoint {
    /// The endpoint of stream `stream` declared with `options`.
    pub fn from_options(
        stream: &str,
        options: &BTreeMap<String, String>,
    ) -> Result<Endpoint, ConnectorError> {
        let (endpoint, problems) = Endpoint::build(stream, options);
        if problems.is_empty() {
            return Ok(endpoint);
        }
        let all: Vec<String> = problems.into_iter().map(|p| p.message).collect();
        Err(ConnectorError::Config(format!(
            "stream {stream}: {}",
            all.join("; ")
        )))
    }

    /// The endpoint, and every problem with the options (each naming its option).
    pub fn build(
        stream: &str,
        options: &BTreeMap<String, String>,
    ) -> (Endpoint, Vec<OptionProblem>) {
        let placeholder = || Endpoint::Embedded {
            topic: stream.to_owned(),
        };
        let spec = match connector_of(options) {
            Ok(spec) => spec,
            Err(problem) => return (placeholder(), vec![problem]),
        };
        let mut o = Opts::new(options, spec);
        let endpoint = match spec.name {
            "embedded" => Endpoint::Embedded {
                topic: o.get("topic").unwrap_or(stream).to_owned(),
            },
            #[cfg(feature = "mqtt")]
            "mqtt" => Endpoint::Mqtt(MqttConfig::from_opts(stream, &mut o)),
            #[cfg(feature = "amqp")]
            "amqp" => Endpoint::Amqp(AmqpConfig::from_opts(stream, &mut o)),
            #[cfg(feature = "nats")]
            "nats" => Endpoint::Nats(NatsConfig::from_opts(stream, &mut o)),
            #[cfg(feature = "http")]
            "http" => Endpoint::Http(HttpConfig::from_opts(&mut o)),
            "file" => match FileConfig::new(o.required("path"), options, None) {
                Ok(c) => Endpoint::File(c),
                Err(e) => {
                    o.fault("path", e.to_string());
                    placeholder()
                }
            },
            #[cfg(feature = "kafka")]
            "kafka" => Endpoint::Kafka(KafkaConfig::from_opts(stream, &mut o)),
            other => unreachable!("connector '{other}' is in the registry but not built"),
        };
        (endpoint, o.problems)
    }

    /// The endpoint as rule `rule` uses it: settings whose default depends on the rule filled
    /// in (a Kafka source's consumer group, the name of a JetStream group's consumers and an
    /// AMQP source's queue, `weir-<rule>-<stream>`).
    #[cfg_attr(
        not(any(feature = "kafka", feature = "nats", feature = "amqp")),
        allow(
            unused_variables,
            reason = "only these connectors name things per rule"
        )
    )]
    pub fn for_rule(mut self, rule: &str, stream: &str) -> Endpoint {
        match &mut self {
            #[cfg(feature = "kafka")]
            Endpoint::Kafka(c) => {
                c.group.get_or_insert_with(|| rule_group(rule, stream));
            }
            #[cfg(feature = "nats")]
            Endpoint::Nats(c) => {
                c.durable_of_rule(rule, stream);
                c.group.get_or_insert_with(|| rule_group(rule, stream));
            }
            #[cfg(feature = "amqp")]
            Endpoint::Amqp(c) => c.queue_of_rule(rule, stream),
            _ => {}
        }
        self
    }

    /// The connector's spec.
    pub fn spec(&self) -> &'static ConnectorSpec {
        match self {
            Endpoint::Embedded { .. } => &crate::embedded::SPEC,
            #[cfg(feature = "mqtt")]
            Endpoint::Mqtt(_) => &crate::mqtt::spec::SPEC,
            #[cfg(feature = "amqp")]
            Endpoint::Amqp(_) => &crate::amqp::spec::SPEC,
            #[cfg(feature = "nats")]
            Endpoint::Nats(_) => &crate::nats::spec::SPEC,
            #[cfg(feature = "http")]
            Endpoint::Http(_) => &crate::http::spec::SPEC,
            Endpoint::File(_) => &crate::file::spec::SPEC,
            #[cfg(feature = "kafka")]
            Endpoint::Kafka(_) => &crate::kafka::spec::SPEC,
        }
    }

    /// The connector's name as written in `WITH (connector = ...)`.
    pub fn kind(&self) -> &'static str {
        self.spec().name
    }

    /// Why this stream cannot give `d` as a source (`input`) or sink (`None` when it can);
    /// each connector's spec module decides.
    pub(crate) fn cannot_give(&self, d: Delivery, input: bool) -> Option<String> {
        match self {
            Endpoint::Embedded { .. } => crate::embedded::cannot_give(d, input),
            #[cfg(feature = "mqtt")]
            Endpoint::Mqtt(c) => c.cannot_give(d, input),
            #[cfg(feature = "amqp")]
            Endpoint::Amqp(c) => c.cannot_give(d, input),
            #[cfg(feature = "nats")]
            Endpoint::Nats(c) => c.cannot_give(d, input),
            #[cfg(feature = "http")]
            Endpoint::Http(c) => c.cannot_give(d, input),
            Endpoint::File(c) => c.cannot_give(d, input),
            #[cfg(feature = "kafka")]
            Endpoint::Kafka(c) => c.cannot_give(d, input),
        }
    }

    /// Starts reading from the outside world into `tx`. `None` for endpoints the node feeds
    /// itself (embedded topics, HTTP ingest).
    pub fn spawn_source(
        &self,
        tx: PayloadTx,
        health: Arc<Health>,
        stop: Stop,
    ) -> Option<JoinHandle<()>> {
        match self {
            #[cfg(feature = "mqtt")]
            Endpoint::Mqtt(c) => Some(tokio::spawn(c.clone().run_source(tx, health, stop))),
            #[cfg(feature = "amqp")]
            Endpoint::Amqp(c) => Some(tokio::spawn(c.clone().run_source(tx, health, stop))),
            #[cfg(feature = "nats")]
            Endpoint::Nats(c) => Some(tokio::spawn(c.clone().run_source(tx, health, stop))),
            #[cfg(feature = "kafka")]
            Endpoint::Kafka(c) => Some(tokio::spawn(c.clone().run_source(tx, health, stop))),
            Endpoint::File(c) => Some(tokio::spawn(crate::file::live::run_source(
                c.clone(),
                tx,
                health,
                stop,
            ))),
            #[cfg(feature = "http")]
            Endpoint::Http(_) => None,
            Endpoint::Embedded { .. } => None,
        }
    }

    /// Starts writing what arrives on `rx` to the outside world. `None` for embedded topics,
    /// which the node publishes itself.
    pub fn spawn_sink(&self, rx: PayloadRx, health: Arc<Health>) -> Option<JoinHandle<()>> {
        match self {
            #[cfg(feature = "mqtt")]
            Endpoint::Mqtt(c) => Some(tokio::spawn(c.clone().run_sink(rx, health))),
            #[cfg(feature = "amqp")]
            Endpoint::Amqp(c) => Some(tokio::spawn(c.clone().run_sink(rx, health))),
            #[cfg(feature = "nats")]
            Endpoint::Nats(c) => Some(tokio::spawn(c.clone().run_sink(rx, health))),
            #[cfg(feature = "kafka")]
            Endpoint::Kafka(c) => Some(tokio::spawn(c.clone().run_sink(rx, health))),
            #[cfg(feature = "http")]
            Endpoint::Http(c) => Some(tokio::spawn(c.clone().run_sink(rx, health))),
            Endpoint::File(c) => Some(tokio::spawn(crate::file::live::run_sink(
                c.clone(),
                rx,
                health,
            ))),
            Endpoint::Embedded { .. } => None,
        }
    }

    /// A connection test: can the broker be reached with these settings?
    pub async fn check(&self) -> Result<(), ConnectorError> {
        let reached: Result<(), String> = match self {
            #[cfg(feature = "mqtt")]
            Endpoint::Mqtt(c) => c.check().await,
            #[cfg(feature = "amqp")]
            Endpoint::Amqp(c) => c.check().await,
            #[cfg(feature = "nats")]
            Endpoint::Nats(c) => c.check().await,
            #[cfg(feature = "kafka")]
            Endpoint::Kafka(c) => c.check().await,
            // Nothing to reach: webhooks are tried per result, files and topics are local.
            _ => Ok(()),
        };
        reached.map_err(|e| ConnectorError::Unreachable(format!("{}: {e}", self.kind())))
    }
}

/// The consumer group (Kafka) or group name (JetStream) of a rule's stream unless the stream
/// names one: one per rule and stream.
#[cfg(any(feature = "kafka", feature = "nats"))]
fn rule_group(rule: &str, stream: &str) -> String {
    format!("weir-{rule}-{}", stream.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[cfg(feature = "mqtt")]
    #[test]
    fn defaults_and_problems() {
        let e = Endpoint::from_options("s", &opts(&[])).unwrap();
        assert!(matches!(e, Endpoint::Embedded { topic } if topic == "s"));
        let err = Endpoint::from_options(
            "s",
            &opts(&[("connector", "mqtt"), ("qos", "3"), ("url", "http://x")]),
        )
        .unwrap_err()
        .to_string();
        for part in ["'qos' = '3'", "url scheme 'http'", "'topic' is required"] {
            assert!(err.contains(part), "{part} missing from {err}");
        }
    }

    #[cfg(feature = "kafka")]
    #[test]
    fn kafka_options() {
        let err =
            Endpoint::from_options("s", &opts(&[("connector", "kafka"), ("partitions", "0")]))
                .unwrap_err()
                .to_string();
        for part in ["'topic' is required", "'partitions' = '0'"] {
            assert!(err.contains(part), "{part} missing from {err}");
        }
        let kafka = Endpoint::from_options(
            "Src",
            &opts(&[
                ("connector", "kafka"),
                ("url", "kafka://k:9093"),
                ("topic", "t"),
            ]),
        )
        .unwrap()
        .for_rule("r1", "Src");
        match kafka {
            Endpoint::Kafka(c) => {
                assert_eq!(c.brokers, "k:9093");
                // One consumer group per rule and stream unless the stream names one.
                assert_eq!(c.group.as_deref(), Some("weir-r1-src"));
            }
            other => panic!("{other:?}"),
        }
    }
}
