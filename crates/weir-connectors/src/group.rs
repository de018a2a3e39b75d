//! The consumer groups of the distributed logs a core group reads: Kafka's group protocol, or
//! JetStream's pinned-client priority groups over partitioned subjects. Either way the log
//! decides which member reads which partition; a member hears what it was given or lost and
//! the messages of what it holds, each with the partition's own position (Kafka offset,
//! JetStream stream sequence).

use bytes::Bytes;

#[cfg(feature = "kafka")]
use crate::kafka::{KafkaConfig, KafkaMember};
#[cfg(feature = "nats")]
use crate::nats::{group::JetStreamMember, NatsConfig};
use crate::Endpoint;

/// What a group member hears next.
pub enum GroupEvent {
    /// A message of a partition this member holds.
    Message {
        /// Its partition.
        partition: i32,
        /// Its position there (Kafka offset, JetStream stream sequence).
        offset: u64,
        /// Its payload.
        payload: Bytes,
    },
    /// Partitions given to this member.
    Assigned(Vec<i32>),
    /// Partitions given to another member (or released by this one to balance the group).
    Revoked(Vec<i32>),
    /// Partitions another member took while this one did not hear of it (it stalled past the
    /// log's timeout): their state here may be older than the new owner's, so it must not be
    /// checkpointed again. Kafka revokes before it reassigns, so only JetStream says this.
    Lost(Vec<i32>),
}

/// A stream whose log shares its partitions among a group's members.
#[derive(Debug, Clone)]
pub enum GroupLog {
    #[cfg(feature = "kafka")]
    /// A Kafka topic, whose group protocol shares the partitions.
    Kafka(KafkaConfig),
    #[cfg(feature = "nats")]
    /// A JetStream stream over partitioned subjects, shared by pinned-client priority groups.
    JetStream(Box<NatsConfig>),
}

#[cfg_attr(
    not(any(feature = "kafka", feature = "nats")),
    allow(unused_variables, reason = "no log with groups is built in")
)]
impl GroupLog {
    /// The group log of a stream's endpoint, or why it has none.
    pub fn of(stream: &str, endpoint: &Endpoint) -> Result<GroupLog, String> {
        match endpoint {
            #[cfg(feature = "kafka")]
            Endpoint::Kafka(k) => Ok(GroupLog::Kafka(k.clone())),
            #[cfg(feature = "nats")]
            Endpoint::Nats(n) if n.stream.is_some() && n.partitions.is_some() => {
                Ok(GroupLog::JetStream(Box::new(n.clone())))
            }
            #[cfg(feature = "nats")]
            Endpoint::Nats(_) => Err(format!(
                "{stream} is a NATS stream without partitions: a group reads a JetStream stream split into partitioned subjects (stream = '<name>', partitions = 'N'; messages on <subject>.0 … <subject>.N-1)"
            )),
            other => Err(format!(
                "a group rule reads a Kafka topic or a partitioned JetStream stream, whose partitions the log's own group protocol shares among the nodes; {stream} is {}",
                other.kind()
            )),
        }
    }

    /// The key of a partition's position in checkpoints, after the `broker:` prefix.
    pub fn position(&self, partition: i32) -> String {
        match *self {
            #[cfg(feature = "kafka")]
            GroupLog::Kafka(ref k) => format!("kafka/{}/{partition}", k.topic),
            #[cfg(feature = "nats")]
            GroupLog::JetStream(ref n) => format!("nats/{}/{partition}", n.subject),
        }
    }

    /// Joins the stream's group (its `group` option; see [`Endpoint::for_rule`]).
    pub async fn join(&self) -> Result<GroupMember, String> {
        match *self {
            #[cfg(feature = "kafka")]
            GroupLog::Kafka(ref k) => k.join_group().await.map(GroupMember::Kafka),
            #[cfg(feature = "nats")]
            GroupLog::JetStream(ref n) => JetStreamMember::join(n)
                .await
                .map(|m| GroupMember::JetStream(Box::new(m))),
        }
    }
}

/// One node's membership of a group.
pub enum GroupMember {
    #[cfg(feature = "kafka")]
    /// A member of a Kafka consumer group.
    Kafka(KafkaMember),
    #[cfg(feature = "nats")]
    /// A member of JetStream's priority groups.
    JetStream(Box<JetStreamMember>),
}

#[cfg_attr(
    not(feature = "nats"),
    allow(
        unused_variables,
        reason = "only JetStream hands partitions over and back"
    )
)]
impl GroupMember {
    /// Waits for what the member hears next.
    pub async fn next(&mut self) -> Result<GroupEvent, String> {
        match *self {
            #[cfg(feature = "kafka")]
            GroupMember::Kafka(ref mut k) => k.next().await,
            #[cfg(feature = "nats")]
            GroupMember::JetStream(ref mut j) => j.next().await,
        }
    }

    /// Tells the log, per partition, the position of the next message the group's state does
    /// not cover yet: Kafka commits it, JetStream acknowledges everything before it.
    pub async fn commit(&mut self, next: &[(i32, u64)]) -> Result<(), String> {
        match *self {
            #[cfg(feature = "kafka")]
            GroupMember::Kafka(ref mut k) => k.commit(next),
            #[cfg(feature = "nats")]
            GroupMember::JetStream(ref mut j) => j.acknowledge(next).await,
        }
    }

    /// The revoked partitions' tasks have stopped: partitions this member released to balance
    /// the group can go to another member now.
    pub async fn released(&mut self, parts: &[i32]) {
        match *self {
            #[cfg(feature = "nats")]
            GroupMember::JetStream(ref mut j) => j.released(parts).await,
            #[cfg(feature = "kafka")]
            GroupMember::Kafka(_) => {}
        }
    }

    /// Leaves the group now, once every task has stopped, rather than when the log notices
    /// (Kafka's consumer leaves its group when dropped).
    pub async fn leave(&mut self) {
        match *self {
            #[cfg(feature = "nats")]
            GroupMember::JetStream(ref mut j) => j.leave().await,
            #[cfg(feature = "kafka")]
            GroupMember::Kafka(_) => {}
        }
    }

    /// What a new owner of `partition` reads first, in order: from position `from` (where its
    /// state ends) through the message at `until` it was handed first, and on JetStream through
    /// whatever the log had already handed the previous owner. Kafka never starts a member past
    /// the committed position, so there is nothing to read before `until`: empty.
    pub async fn backfill(
        &self,
        partition: i32,
        from: u64,
        until: u64,
    ) -> Result<Vec<(u64, Bytes)>, String> {
        match *self {
            #[cfg(feature = "kafka")]
            GroupMember::Kafka(_) => Ok(Vec::new()),
            #[cfg(feature = "nats")]
            GroupMember::JetStream(ref j) => j.backfill(partition, from, until).await,
        }
    }
}
