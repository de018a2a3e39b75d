//! A core group on NATS JetStream: the stream's subject is split into partitions
//! `<subject>.<p>`, each read through one durable pull consumer whose pinned-client priority
//! group decides the reader. The server pins one puller per consumer and moves the pin to a
//! waiting puller when the pinned one stops pulling for the consumer's priority timeout (its node
//! left or died) or when it is released. Every member pulls every partition, so a lost member's
//! partitions go to the others. For balance, members announce themselves every second on the
//! group's subject; a joining member listens for a moment first (as Kafka's initial rebalance
//! delay), pulls the partitions that fall to it in the order of the members' ids, and only then
//! the others, on standby. One holding more than its share releases the surplus, others' first,
//! to the waiting pullers. Who owns a partition is only ever the server's pin, which comes with
//! the first message the server hands the new owner.
//!
//! A partition's position lives with its state in the rule's changelog. Its consumer is
//! acknowledged (all up to a sequence) only as far as the changelog covers; what the previous
//! owner was handed beyond that, the consumer hands out again after its ack wait, so a partition
//! changes hands even when no new message comes (one whose owner had processed and acknowledged
//! everything has nothing to hand over until its next message). A new owner first reads, in
//! stream order, from its state through everything the consumer has handed out
//! ([`JetStreamMember::backfill`]), and drops what its state already holds.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PriorityPolicy};
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::NatsConfig;
use crate::group::GroupEvent;

/// The priority group every member pulls in.
const GROUP: &str = "weir";
/// How long a pinned member may stop pulling before its partition goes to another: the time a
/// dead node's partitions wait.
const PIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Pull requests expire well within [`PIN_TIMEOUT`], so an idle owner renews its pin.
const PULL_EXPIRES: Duration = Duration::from_secs(1);
/// How long a member leaves a partition it released alone, so that a waiting member takes it.
const REST: Duration = Duration::from_secs(3);
/// After this long unacknowledged, a message is handed out again (to whoever holds the pin).
const ACK_WAIT: Duration = Duration::from_secs(5);
/// Messages a partition may have handed out unacknowledged: several checkpoints' worth.
const MAX_ACK_PENDING: i64 = 200_000;
/// How often a member announces itself, checks its pins and its share.
const BALANCE_EVERY: Duration = Duration::from_secs(1);
/// A member not heard from for this long no longer counts for the shares.
const SILENT: Duration = Duration::from_secs(3);
/// How long a joining member listens before pulling its partitions, and then before pulling
/// the others' on standby.
const JOIN_WAIT: Duration = Duration::from_millis(1500);

/// One message a partition's puller took, with the pin it came under.
struct Pulled {
    partition: i32,
    pin: Option<String>,
    seq: u64,
    payload: Bytes,
    /// Where the message is acknowledged.
    reply: Option<async_nats::Subject>,
}

/// One node's membership of a JetStream core group.
pub struct JetStreamMember {
    config: NatsConfig,
    stream: jetstream::stream::Stream,
    /// Consumer name per partition.
    consumers: Vec<String>,
    tx: mpsc::Sender<Result<Pulled, String>>,
    rx: mpsc::Receiver<Result<Pulled, String>>,
    pullers: BTreeMap<i32, JoinHandle<()>>,
    /// The pin this member holds per partition it owns.
    pins: BTreeMap<i32, String>,
    /// Partitions revoked to balance the group, to unpin once their tasks stopped.
    releasing: BTreeSet<i32>,
    /// Released partitions not pulled until then.
    resting: BTreeMap<i32, Instant>,
    /// Per partition held, the acknowledgement subject of each message handed on and not yet
    /// acknowledged, by stream sequence.
    unacked: BTreeMap<i32, BTreeMap<u64, async_nats::Subject>>,
    pending: VecDeque<GroupEvent>,
    balance: tokio::time::Interval,
    client: async_nats::Client,
    /// The group's announcement subject, this member's id on it, and when each member was
    /// last heard.
    announce: String,
    me: String,
    announcements: async_nats::Subscriber,
    heard: BTreeMap<String, Instant>,
    /// When this member starts pulling the partitions that fall to others.
    standby_from: Instant,
}

impl JetStreamMember {
    /// Joins the stream's group: one pinned-client consumer per partition.
    pub async fn join(config: &NatsConfig) -> Result<JetStreamMember, String> {
        let (Some(name), Some(n)) = (&config.stream, config.partitions) else {
            return Err("a JetStream group needs stream and partitions".into());
        };
        let client = config
            .options()
            .await?
            .connect(&config.url)
            .await
            .map_err(|e| e.to_string())?;
        let stream = config.js_stream(&client, name).await?;
        let group = config.group.clone().unwrap_or_else(|| "weir".to_owned());
        let announce = format!("weir.group.{name}.{group}");
        let announcements = client
            .subscribe(announce.clone())
            .await
            .map_err(|e| e.to_string())?;
        let (tx, rx) = mpsc::channel(4096);
        let mut member = JetStreamMember {
            config: config.clone(),
            stream,
            consumers: (0..n).map(|p| format!("{group}-p{p}")).collect(),
            tx,
            rx,
            pullers: BTreeMap::new(),
            pins: BTreeMap::new(),
            releasing: BTreeSet::new(),
            resting: BTreeMap::new(),
            unacked: BTreeMap::new(),
            pending: VecDeque::new(),
            balance: tokio::time::interval(BALANCE_EVERY),
            me: client.new_inbox(),
            client,
            announce,
            announcements,
            heard: BTreeMap::new(),
            standby_from: Instant::now() + 2 * JOIN_WAIT,
        };
        let listened = Instant::now() + JOIN_WAIT;
        while Instant::now() < listened {
            member.announce_and_hear().await?;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        member.announce_and_hear().await?;
        tracing::info!(member = %member.me, heard = member.heard.len(), "joined the group");
        for p in 0..n as i32 {
            if member.falls_to_me(p) {
                member.pull(p).await?;
            }
        }
        Ok(member)
    }

    /// Announces this member and takes in the others' announcements.
    async fn announce_and_hear(&mut self) -> Result<(), String> {
        self.client
            .publish(self.announce.clone(), self.me.clone().into())
            .await
            .map_err(|e| e.to_string())?;
        let now = Instant::now();
        while let Some(Some(m)) = self.announcements.next().now_or_never() {
            let id = String::from_utf8_lossy(&m.payload).into_owned();
            // A member leaving says so ("-<id>"), so that shares grow at once.
            match id.strip_prefix('-') {
                Some(gone) => self.heard.remove(gone),
                None => self.heard.insert(id, now),
            };
        }
        self.heard.insert(self.me.clone(), now);
        self.heard.retain(|_, at| now.duration_since(*at) < SILENT);
        Ok(())
    }

    /// Whether partition `p` falls to this member when the members heard share the
    /// partitions round robin in the order of their ids.
    fn falls_to_me(&self, p: i32) -> bool {
        let at = self.heard.keys().position(|m| *m == self.me).unwrap_or(0);
        p as usize % self.heard.len().max(1) == at
    }

    /// Starts pulling partition `p` (on standby until the server pins this puller).
    async fn pull(&mut self, p: i32) -> Result<(), String> {
        let config = pull::Config {
            durable_name: Some(self.consumers[p as usize].clone()),
            filter_subject: self.config.partition_subject(p as u32),
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::All,
            ack_wait: ACK_WAIT,
            max_ack_pending: MAX_ACK_PENDING,
            priority_policy: PriorityPolicy::PinnedClient,
            priority_groups: vec![GROUP.to_owned()],
            priority_timeout: PIN_TIMEOUT,
            // A deleted rule's consumers go once nobody pulls them for a day.
            inactive_threshold: Duration::from_secs(24 * 3600),
            ..Default::default()
        };
        let consumer = self
            .stream
            .get_or_create_consumer(&self.consumers[p as usize], config)
            .await
            .map_err(|e| format!("consumer {}: {e}", self.consumers[p as usize]))?;
        let tx = self.tx.clone();
        let puller = tokio::spawn(async move {
            loop {
                let messages = consumer
                    .stream()
                    .group(GROUP)
                    .max_messages_per_batch(256)
                    .expires(PULL_EXPIRES)
                    .messages()
                    .await;
                let mut messages = match messages {
                    Ok(m) => m,
                    Err(e) => {
                        if tx.send(Err(e.to_string())).await.is_err() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                while let Some(m) = messages.next().await {
                    let pulled = m.map_err(|e| e.to_string()).map(|m| Pulled {
                        partition: p,
                        pin: m
                            .headers
                            .as_ref()
                            .and_then(|h| h.get_last(async_nats::header::NATS_PIN_ID))
                            .map(|v| v.as_str().to_owned()),
                        seq: m.info().map_or(0, |i| i.stream_sequence),
                        payload: m.payload.clone(),
                        reply: m.reply.clone(),
                    });
                    let failed = pulled.is_err();
                    if tx.send(pulled).await.is_err() {
                        return;
                    }
                    if failed {
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        if let Some(old) = self.pullers.insert(p, puller) {
            old.abort();
        }
        Ok(())
    }

    /// Waits for what the member hears next.
    pub async fn next(&mut self) -> Result<GroupEvent, String> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(event);
            }
            tokio::select! {
                pulled = self.rx.recv() => {
                    let m = pulled.ok_or("the partitions' pullers ended")??;
                    // Taken before the partition was released: its next owner reads it again.
                    if self.releasing.contains(&m.partition) || self.resting.contains_key(&m.partition) {
                        continue;
                    }
                    let pin = m.pin.unwrap_or_default();
                    // Compared before stored: the same pin comes with every message.
                    if self.pins.get(&m.partition) != Some(&pin) {
                        tracing::info!(member = %self.me, partition = m.partition, pin, "partition pinned to this member");
                        // A pin of its own again after losing it unnoticed: its task's state
                        // may be stale, so the task starts over from the changelog.
                        if self.pins.insert(m.partition, pin).is_some() {
                            self.pending.push_back(GroupEvent::Lost(vec![m.partition]));
                        }
                        self.pending.push_back(GroupEvent::Assigned(vec![m.partition]));
                    }
                    if let Some(reply) = m.reply {
                        self.unacked.entry(m.partition).or_default().insert(m.seq, reply);
                    }
                    self.pending.push_back(GroupEvent::Message {
                        partition: m.partition,
                        offset: m.seq,
                        payload: m.payload,
                    });
                }
                _ = self.balance.tick() => self.balance().await?,
            }
        }
    }

    /// Once a tick: announces this member, pulls rested partitions again, gives up partitions
    /// whose pin went to another member, and releases partitions above this member's share.
    async fn balance(&mut self) -> Result<(), String> {
        let now = Instant::now();
        let rested: Vec<i32> = self
            .resting
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(p, _)| *p)
            .collect();
        for p in rested {
            self.resting.remove(&p);
            self.pull(p).await?;
        }
        if now >= self.standby_from {
            for p in 0..self.consumers.len() as i32 {
                if !self.pullers.contains_key(&p) && !self.resting.contains_key(&p) {
                    self.pull(p).await?;
                }
            }
        }
        self.announce_and_hear().await?;
        let mut lost = Vec::new();
        for (p, name) in self.consumers.iter().enumerate() {
            let p = p as i32;
            if !self.pins.contains_key(&p) {
                continue;
            }
            let Ok(info) = self.stream.consumer_info(name).await else {
                continue;
            };
            if let Some(mine) = self.pins.get(&p) {
                let pinned = info
                    .priority_groups
                    .iter()
                    .find(|g| g.group == GROUP)
                    .and_then(|g| g.pinned_client_id.as_deref());
                if pinned != Some(mine.as_str()) {
                    tracing::info!(
                        partition = p,
                        mine,
                        ?pinned,
                        "partition pinned to another member"
                    );
                    lost.push(p);
                }
            }
        }
        for p in &lost {
            self.pins.remove(p);
            // Acknowledged by the new owner, as far as its state goes.
            self.unacked.remove(p);
        }
        let members = self.heard.len().max(1);
        let share = self.consumers.len().div_ceil(members);
        // Partitions that fall to others go first, the highest first.
        let mut held: Vec<i32> = self.pins.keys().copied().collect();
        held.sort_by_key(|p| (self.falls_to_me(*p), std::cmp::Reverse(*p)));
        let surplus: Vec<i32> = held
            .into_iter()
            .take(self.pins.len().saturating_sub(share))
            .collect();
        for p in &surplus {
            self.pins.remove(p);
            self.releasing.insert(*p);
        }
        if !surplus.is_empty() {
            tracing::info!(
                members,
                share,
                ?surplus,
                "releasing partitions to balance the group"
            );
        }
        if !lost.is_empty() {
            self.pending.push_back(GroupEvent::Lost(lost));
        }
        if !surplus.is_empty() {
            self.pending.push_back(GroupEvent::Revoked(surplus));
        }
        Ok(())
    }

    /// Unpins the partitions this member released, once their tasks have stopped, and rests
    /// from pulling them so that a waiting member takes each.
    pub async fn released(&mut self, parts: &[i32]) {
        for p in parts {
            if !self.releasing.remove(p) {
                continue;
            }
            self.unacked.remove(p);
            if let Some(puller) = self.pullers.remove(p) {
                puller.abort();
            }
            if let Err(e) = self
                .stream
                .unpin_consumer(&self.consumers[*p as usize], GROUP)
                .await
            {
                tracing::warn!(partition = p, error = %e, "partition not unpinned");
            }
            self.resting.insert(*p, Instant::now() + REST);
        }
    }

    /// Acknowledges, per partition, every message before the position `next` (which the
    /// changelog's state covers).
    pub async fn acknowledge(&mut self, next: &[(i32, u64)]) -> Result<(), String> {
        for (p, covered) in next {
            let Some(handed) = self.unacked.get_mut(p) else {
                continue;
            };
            let later = handed.split_off(covered);
            let done = std::mem::replace(handed, later);
            // All up to the last: the consumer's policy is AckPolicy::All.
            if let Some((_, reply)) = done.into_iter().next_back() {
                self.client
                    .publish(reply, "+ACK".into())
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }

    /// Stops pulling and unpins every partition this member holds, so the others take them
    /// without waiting out the pin timeout.
    pub async fn leave(&mut self) {
        let _ = self
            .client
            .publish(self.announce.clone(), format!("-{}", self.me).into())
            .await;
        self.releasing.extend(self.pins.keys());
        self.pins.clear();
        let parts: Vec<i32> = self.releasing.iter().copied().collect();
        self.released(&parts).await;
        for puller in std::mem::take(&mut self.pullers).into_values() {
            puller.abort();
        }
    }

    /// The messages of `partition` from stream sequence `from` on, in order, through `until`
    /// and through every message its consumer has handed out so far: those handed to the
    /// previous owner come again only after their ack wait, mixed with new ones.
    pub async fn backfill(
        &self,
        partition: i32,
        from: u64,
        until: u64,
    ) -> Result<Vec<(u64, Bytes)>, String> {
        let from = from.max(1);
        let delivered = self
            .stream
            .consumer_info(&self.consumers[partition as usize])
            .await
            .map_err(|e| e.to_string())?
            .delivered
            .stream_sequence;
        let through = until.max(delivered);
        if through < from {
            return Ok(Vec::new());
        }
        let consumer = self
            .stream
            .create_consumer(pull::OrderedConfig {
                filter_subject: self.config.partition_subject(partition as u32),
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: from,
                },
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string())?;
        let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        // `until` is a message of this partition, so the reader reaches it; the timeout ends
        // the read when no message of the partition lies between it and `through`.
        while let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(2), messages.next()).await
        {
            let m = m.map_err(|e| e.to_string())?;
            let seq = m.info().map_err(|e| e.to_string())?.stream_sequence;
            if seq > through {
                break;
            }
            out.push((seq, m.payload.clone()));
            if seq == through {
                break;
            }
        }
        Ok(out)
    }
}

impl Drop for JetStreamMember {
    fn drop(&mut self) {
        for puller in self.pullers.values() {
            puller.abort();
        }
    }
}
