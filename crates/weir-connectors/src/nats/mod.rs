//! NATS core and JetStream (async-nats). Core subjects give at-most-once delivery; with `stream`
//! set, sources read through a durable JetStream consumer and acknowledge each message once its
//! rule has taken it (at-least-once and exactly-once rules instead keep their own position, see
//! `consume_jetstream`), and sinks wait for JetStream's acknowledgement of each publish.
//! With `partitions = 'N'` the subject is split into `<subject>.0` … `<subject>.N-1`: sources
//! read them all, sinks publish each result to the partition its `key` field hashes to (FNV-1a,
//! as the server's own `partition()` subject mapping), and a core group shares the partitions
//! among its nodes ([`group`]).
//!
//! The spec is always built, so a build without the `nats` feature still names the connector
//! in its refusal; the client needs the feature (and async-nats).

#[cfg(feature = "nats")]
pub mod changelog;
#[cfg(not(feature = "nats"))]
pub mod changelog {
    //! Without the `nats` feature there are no changelogs: rule options naming one are refused,
    //! `open` says why, and no [`Changelog`] value can exist, so the node's code is the same.

    /// A rule's state changelog, which this build cannot open.
    pub enum Changelog {}

    #[allow(missing_docs, reason = "the same calls as the NATS changelog's")]
    impl Changelog {
        pub async fn open(_url: &str, _rule: &str) -> Result<Changelog, String> {
            Err(super::NO_CHANGELOG.to_owned())
        }
        pub async fn put(&self, _: usize, _: u64, _: &[u8]) -> Result<(), String> {
            match *self {}
        }
        pub async fn get(&self, _: usize) -> Result<Option<(u64, Vec<u8>)>, String> {
            match *self {}
        }
        pub async fn put_positions(&self, _: u64, _: &[u8]) -> Result<(), String> {
            match *self {}
        }
        pub async fn get_positions(&self) -> Result<Option<(u64, Vec<u8>)>, String> {
            match *self {}
        }
    }
}

/// Why a rule cannot have a changelog in a build without the `nats` feature.
pub const NO_CHANGELOG: &str =
    "changelogs live in NATS JetStream, and this weir was built without its nats feature";
#[cfg(feature = "nats")]
pub mod group;
pub mod spec;

#[cfg(feature = "nats")]
mod client;
#[cfg(feature = "nats")]
pub use client::{NatsAuth, NatsConfig};
