//! AMQP 0-9-1 (RabbitMQ, with lapin): direct, topic, fanout and headers exchanges, declared when
//! missing, as seed paper 001's connectors expect. Sources take deliveries with manual
//! acknowledgements: a message is acknowledged once its rule has taken it.

//!
//! The spec is always built, so a build without the `amqp` feature still names the connector
//! in its refusal; the client needs the feature (and lapin).

pub mod spec;

#[cfg(feature = "amqp")]
mod client;
#[cfg(feature = "amqp")]
pub use client::AmqpConfig;
