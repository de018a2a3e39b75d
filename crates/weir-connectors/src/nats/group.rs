//! A core group on NATS JetStream: the stream's subject is split into partitions
//! `<subject>.<p>`, each read through one durable pull consumer whose pinned-client priority
//! group decides the reader. The server pins one puller per consumer and moves the pin to a
//! waiting puller when the pinned one stops pulling for the consumer's priority timeout (its node
//! left or died) or when it is released. Every member pulls every partition, so a lost member's
//! partitions go to the others. For balance, members announce themselves every second on the
//! group's subject, and one holding more than its share of the partitions releases the surplus
//! to the waiting pullers; who owns a partition is only ever the server's pin.
//!
//! The consumers acknowledge nothing: a partition's position lives with its state in the rule's
//! changelog, and a new owner first reads, in stream order, what the consumer handed the previous
//! owner beyond that state ([`JetStreamMember::backfill`]).

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
/// How often a member announces itself, checks its pins and its share.
const BALANCE_EVERY: Duration = Duration::from_secs(1);
/// A member not heard from for this long no longer counts for the shares.
const SILENT: Duration = Duration::from_secs(3);

/// One message a partition's puller took, with the pin it came under.
struct Pulled {
    partition: i32,
    pin: Option<String>,
    seq: u64,
    payload: Bytes,
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
    pending: VecDeque<GroupEvent>,
    balance: tokio::time::Interval,
    client: async_nats::Client,
    /// The group's announcement subject, this member's id on it, and when each member was
    /// last heard.
    announce: String,
    me: String,
    announcements: async_nats::Subscriber,
    heard: BTreeMap<String, Instant>,
}

impl JetStreamMember {
    pub async fn join(config: &NatsConfig) -> Result<JetStreamMember, String> {
        let (Some(name), Some(n)) = (&config.stream, config.partitions) else {
            return Err("a JetStream group needs stream and partitions".into());
        };
        let client = async_nats::connect(&config.url)
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
            pending: VecDeque::new(),
            balance: tokio::time::interval(BALANCE_EVERY),
            me: client.new_inbox(),
            client,
            announce,
            announcements,
            heard: BTreeMap::new(),
        };
        for p in 0..n as i32 {
            member.pull(p).await?;
        }
        Ok(member)
    }

    /// Starts pulling partition `p` (on standby until the server pins this puller).
    async fn pull(&mut self, p: i32) -> Result<(), String> {
        let config = pull::Config {
            durable_name: Some(self.consumers[p as usize].clone()),
            filter_subject: self.config.partition_subject(p as u32),
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::None,
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
                    match self.pins.insert(m.partition, pin.clone()) {
                        Some(held) if held == pin => {}
                        held => {
                            tracing::info!(partition = m.partition, pin, ?held, "partition pinned to this member");
                            // A pin of its own again after losing it unnoticed: its task's state
                            // may be stale, so the task starts over from the changelog.
                            if held.is_some() {
                                self.pending.push_back(GroupEvent::Revoked(vec![m.partition]));
                            }
                            self.pending.push_back(GroupEvent::Assigned(vec![m.partition]));
                        }
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
        self.client
            .publish(self.announce.clone(), self.me.clone().into())
            .await
            .map_err(|e| e.to_string())?;
        while let Some(Some(m)) = self.announcements.next().now_or_never() {
            self.heard
                .insert(String::from_utf8_lossy(&m.payload).into_owned(), now);
        }
        self.heard.retain(|_, at| now.duration_since(*at) < SILENT);
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
        }
        let members = self.heard.len().max(1);
        let share = self.consumers.len().div_ceil(members);
        let surplus: Vec<i32> = self
            .pins
            .keys()
            .rev()
            .take(self.pins.len().saturating_sub(share))
            .copied()
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
        let revoked: Vec<i32> = lost.into_iter().chain(surplus).collect();
        if !revoked.is_empty() {
            self.pending.push_back(GroupEvent::Revoked(revoked));
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

    /// Stops pulling and unpins every partition this member holds, so the others take them
    /// without waiting out the pin timeout.
    pub async fn leave(&mut self) {
        self.releasing.extend(self.pins.keys());
        self.pins.clear();
        let parts: Vec<i32> = self.releasing.iter().copied().collect();
        self.released(&parts).await;
        for puller in std::mem::take(&mut self.pullers).into_values() {
            puller.abort();
        }
    }

    /// The messages of `partition` with stream sequences in `from..until`, in order.
    pub async fn backfill(
        &self,
        partition: i32,
        from: u64,
        until: u64,
    ) -> Result<Vec<(u64, Bytes)>, String> {
        let from = from.max(1);
        if until <= from {
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
        // `until` is a message of this partition, so the reader reaches it; the timeout only
        // guards against its deletion by the stream's limits meanwhile.
        while let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(2), messages.next()).await
        {
            let m = m.map_err(|e| e.to_string())?;
            let seq = m.info().map_err(|e| e.to_string())?.stream_sequence;
            if seq >= until {
                break;
            }
            out.push((seq, m.payload.clone()));
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
