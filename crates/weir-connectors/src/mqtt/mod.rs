//! MQTT 3.1.1 and 5 (rumqttc): topic filters with wildcards, QoS 0 and 1, persistent sessions
//! and shared subscriptions. Sources acknowledge a QoS 1 message once its rule has taken it.
//!
//! The spec is always built, so a build without the `mqtt` feature still names the connector
//! in its refusal; the client needs the feature (and rumqttc).

pub mod spec;

#[cfg(feature = "mqtt")]
mod client;
#[cfg(feature = "mqtt")]
pub use client::MqttConfig;
