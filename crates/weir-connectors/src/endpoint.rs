//! Which connector a stream uses, built from its `WITH (...)` options and validated up front:
//! every problem with the options is reported at once, before anything connects.

use std::collections::BTreeMap;

#[cfg(feature = "amqp")]
use crate::amqp::AmqpConfig;
use crate::delivery::Delivery;
use crate::file::FileConfig;
use crate::http::HttpConfig;
#[cfg(feature = "kafka")]
use crate::kafka::KafkaConfig;
use crate::live::{Health, PayloadRx, PayloadTx, Stop};
use crate::mqtt::MqttConfig;
use crate::nats::NatsConfig;
use crate::options::{connector_of, OptionProblem, Opts};
use crate::spec::ConnectorSpec;
use crate::ConnectorError;
use std::sync::Arc;
use tokio::task::JoinHandle;

/// A stream's connector with its validated settings.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// A topic of the node's own hub (its embedded MQTT endpoint, HTTP ingest, other rules).
    Embedded {
        topic: String,
    },
    Mqtt(MqttConfig),
    #[cfg(feature = "amqp")]
    Amqp(AmqpConfig),
    Nats(NatsConfig),
    /// Webhook sink; as a source, events arrive by HTTP ingest.
    Http(HttpConfig),
    File(FileConfig),
    #[cfg(feature = "kafka")]
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
            "mqtt" => Endpoint::Mqtt(MqttConfig::from_opts(stream, &mut o)),
            #[cfg(feature = "amqp")]
            "amqp" => Endpoint::Amqp(AmqpConfig::from_opts(stream, &mut o)),
            "nats" => Endpoint::Nats(NatsConfig::from_opts(stream, &mut o)),
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
    pub fn for_rule(mut self, rule: &str, stream: &str) -> Endpoint {
        let group = match &mut self {
            #[cfg(feature = "kafka")]
            Endpoint::Kafka(c) => &mut c.group,
            Endpoint::Nats(c) => {
                c.durable_of_rule(rule, stream);
                &mut c.group
            }
            #[cfg(feature = "amqp")]
            Endpoint::Amqp(c) => {
                c.queue_of_rule(rule, stream);
                return self;
            }
            _ => return self,
        };
        group.get_or_insert_with(|| format!("weir-{rule}-{}", stream.to_ascii_lowercase()));
        self
    }

    /// The connector's spec.
    pub fn spec(&self) -> &'static ConnectorSpec {
        match self {
            Endpoint::Embedded { .. } => &crate::embedded::SPEC,
            Endpoint::Mqtt(_) => &crate::mqtt::spec::SPEC,
            #[cfg(feature = "amqp")]
            Endpoint::Amqp(_) => &crate::amqp::spec::SPEC,
            Endpoint::Nats(_) => &crate::nats::spec::SPEC,
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
            Endpoint::Mqtt(c) => c.cannot_give(d, input),
            #[cfg(feature = "amqp")]
            Endpoint::Amqp(c) => c.cannot_give(d, input),
            Endpoint::Nats(c) => c.cannot_give(d, input),
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
            Endpoint::Mqtt(c) => Some(tokio::spawn(c.clone().run_source(tx, health, stop))),
            #[cfg(feature = "amqp")]
            Endpoint::Amqp(c) => Some(tokio::spawn(c.clone().run_source(tx, health, stop))),
            Endpoint::Nats(c) => Some(tokio::spawn(c.clone().run_source(tx, health, stop))),
            #[cfg(feature = "kafka")]
            Endpoint::Kafka(c) => Some(tokio::spawn(c.clone().run_source(tx, health, stop))),
            Endpoint::File(c) => Some(tokio::spawn(crate::file::live::run_source(
                c.clone(),
                tx,
                health,
                stop,
            ))),
            Endpoint::Embedded { .. } | Endpoint::Http(_) => None,
        }
    }

    /// Starts writing what arrives on `rx` to the outside world. `None` for embedded topics,
    /// which the node publishes itself.
    pub fn spawn_sink(&self, rx: PayloadRx, health: Arc<Health>) -> Option<JoinHandle<()>> {
        match self {
            Endpoint::Mqtt(c) => Some(tokio::spawn(c.clone().run_sink(rx, health))),
            #[cfg(feature = "amqp")]
            Endpoint::Amqp(c) => Some(tokio::spawn(c.clone().run_sink(rx, health))),
            Endpoint::Nats(c) => Some(tokio::spawn(c.clone().run_sink(rx, health))),
            #[cfg(feature = "kafka")]
            Endpoint::Kafka(c) => Some(tokio::spawn(c.clone().run_sink(rx, health))),
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
        let unreachable = |e: String| ConnectorError::Unreachable(format!("{}: {e}", self.kind()));
        match self {
            Endpoint::Mqtt(c) => c.check().await.map_err(unreachable),
            #[cfg(feature = "amqp")]
            Endpoint::Amqp(c) => c.check().await.map_err(unreachable),
            Endpoint::Nats(c) => c.check().await.map_err(unreachable),
            #[cfg(feature = "kafka")]
            Endpoint::Kafka(c) => c.check().await.map_err(unreachable),
            Endpoint::Http(_) | Endpoint::File(_) | Endpoint::Embedded { .. } => Ok(()),
        }
    }
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
