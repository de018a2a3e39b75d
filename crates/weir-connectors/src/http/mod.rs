//! HTTP: events arrive by the node's ingest endpoint (`POST /v1/streams/{name}/events`); as a
//! sink, each event is POSTed (or PUT) as JSON to a webhook, retried with backoff while the
//! server fails, is away, or answers 408 or 429 (after its Retry-After); another 4xx refuses
//! that event for good.
//!
//! The spec is always built, so a build without the `http` feature still names the connector
//! in its refusal; the client needs the feature (and reqwest).

pub mod spec;

#[cfg(feature = "http")]
mod client;
#[cfg(feature = "http")]
pub use client::HttpConfig;
