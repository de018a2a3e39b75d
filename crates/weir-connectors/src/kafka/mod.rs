//! Apache Kafka (rdkafka, with the librdkafka it bundles). At-most-once sources join the
//! stream's consumer group, so the rule on several nodes shares the topic's partitions by
//! Kafka's own group protocol, and commit as they read. At-least-once and exactly-once sources
//! keep their own position instead: every message goes into the rule's durable log numbered by
//! its partition and offset, and reading resumes after the last number of each partition, so
//! nothing is skipped or stored twice across crashes and moves; the offsets are committed to the
//! group too, for the lag Kafka's tools show. Sinks wait for the broker's acknowledgement of
//! each result (idempotent producer) and key it by a field when `key` is set, so one key
//! always lands in one partition.

//!
//! The spec is always built, so a build without the `kafka` feature still names the connector
//! in its refusal; the client needs the feature (and librdkafka).

pub mod spec;

#[cfg(feature = "kafka")]
mod client;
#[cfg(feature = "kafka")]
pub use client::{KafkaConfig, KafkaMember};
