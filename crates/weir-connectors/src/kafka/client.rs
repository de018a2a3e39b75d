//! The Kafka client: configuration, sources, sinks, group members (rdkafka).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::metadata::Metadata;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::group::GroupEvent;
use crate::live::{Backoff, Health, Outgoing, PayloadRx, PayloadTx, Stop};

/// Results in flight to the broker at once.
const WINDOW: usize = 256;

/// Settings of a Kafka stream.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port[,host:port]`.
    pub brokers: String,
    /// The topic read or written.
    pub topic: String,
    /// Consumer group of sources; by default one per rule and stream (see
    /// [`crate::Endpoint::for_rule`]), so the rule's copies on several nodes share the
    /// partitions and other rules read everything.
    pub group: Option<String>,
    /// Partitions to create the topic with when it does not exist (else the broker's default).
    pub partitions: Option<i32>,
    /// Field whose value keys each result (sinks).
    pub key: Option<String>,
}

impl KafkaConfig {
    fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("client.id", "weir")
            .set("log_level", "4");
        c
    }

    fn consumer(&self, auto_commit: bool) -> Result<StreamConsumer, String> {
        let group = self.group.clone().unwrap_or_else(|| "weir".to_owned());
        self.client()
            .set("group.id", group)
            .set("enable.auto.commit", auto_commit.to_string())
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set("session.timeout.ms", "6000")
            .create()
            .map_err(|e| e.to_string())
    }

    /// Creates the topic with `partitions` when it is missing and asked for.
    async fn ensure_topic(&self) -> Result<(), String> {
        let Some(partitions) = self.partitions else {
            return Ok(());
        };
        let admin: AdminClient<DefaultClientContext> =
            self.client().create().map_err(|e| e.to_string())?;
        let topic = NewTopic::new(&self.topic, partitions, TopicReplication::Fixed(1));
        let results = admin
            .create_topics([&topic], &AdminOptions::new())
            .await
            .map_err(|e| e.to_string())?;
        for r in results {
            match r {
                Ok(_) => {}
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((t, e)) => return Err(format!("topic {t} not created: {e}")),
            }
        }
        Ok(())
    }

    /// The broker's metadata of `topic` (all topics if `None`), fetched off the async threads.
    async fn metadata(&self, topic: Option<String>) -> Result<Metadata, String> {
        let config = self.client();
        tokio::task::spawn_blocking(move || {
            let consumer: BaseConsumer = config.create().map_err(|e| e.to_string())?;
            consumer
                .fetch_metadata(topic.as_deref(), Duration::from_secs(5))
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// The topic's partition count, once the broker knows the topic.
    async fn partition_count(&self) -> Result<i32, String> {
        let md = self.metadata(Some(self.topic.clone())).await?;
        let n = md
            .topics()
            .iter()
            .find(|t| t.name() == self.topic)
            .map_or(0, |t| t.partitions().len() as i32);
        match n {
            0 => Err(format!("topic {} has no partitions yet", self.topic)),
            n => Ok(n),
        }
    }

    /// Fetches the cluster's metadata (5 s).
    pub async fn check(&self) -> Result<(), String> {
        self.metadata(None).await.map(|_| ())
    }

    /// Consumes into `tx` until `stop` (see the module doc for how positions are kept).
    pub async fn run_source(self, tx: PayloadTx, health: Arc<Health>, mut stop: Stop) {
        let mut backoff = Backoff::default();
        while !stop.is_set() {
            match self.consume(&tx, &health, &mut stop).await {
                Ok(()) => return,
                Err(_) if tx.is_closed() => return,
                Err(e) => health.down(e),
            }
            backoff.wait().await;
        }
    }

    async fn consume(
        &self,
        tx: &PayloadTx,
        health: &Health,
        stop: &mut Stop,
    ) -> Result<(), String> {
        self.ensure_topic().await?;
        let durable = matches!(tx, PayloadTx::Log(_));
        let consumer = self.consumer(!durable)?;
        match tx {
            PayloadTx::Log(input) => {
                // The rule's own position: after the last offset its log took per partition.
                let n = self.partition_count().await?;
                let mut tpl = TopicPartitionList::new();
                for p in 0..n {
                    let offset = match input.log.last_number(&p.to_string()) {
                        Ok(Some(o)) => Offset::Offset(o as i64 + 1),
                        Ok(None) => Offset::Beginning,
                        Err(e) => return Err(e.to_string()),
                    };
                    tpl.add_partition_offset(&self.topic, p, offset)
                        .map_err(|e| e.to_string())?;
                }
                consumer.assign(&tpl).map_err(|e| e.to_string())?;
            }
            PayloadTx::Channel(_) => consumer
                .subscribe(&[&self.topic])
                .map_err(|e| e.to_string())?,
        }
        health.up();
        loop {
            // Between messages only: a taken one is handed over (and, durable, committed).
            let msg = tokio::select! {
                biased;
                _ = stop.requested() => return Ok(()),
                m = consumer.recv() => m.map_err(|e| e.to_string())?,
            };
            let Some(payload) = msg.payload() else {
                continue;
            };
            health.count();
            let payload = bytes::Bytes::copy_from_slice(payload);
            let part = msg.partition().to_string();
            let number = durable.then_some((part.as_str(), msg.offset() as u64));
            if tx.send_numbered(payload, number).await.is_err() {
                return Ok(());
            }
            if durable {
                // Stored: the group may see it as read.
                let _ = consumer.commit_message(&msg, CommitMode::Async);
            }
        }
    }

    /// Produces what arrives on `rx`, waiting for the broker's acknowledgement of each.
    pub async fn run_sink(self, mut rx: PayloadRx, health: Arc<Health>) {
        if let Err(e) = self.ensure_topic().await {
            health.down(e);
        }
        let producer: FutureProducer = match self
            .client()
            .set("enable.idempotence", "true")
            .set("linger.ms", "2")
            .set("message.timeout.ms", "30000")
            .create()
        {
            Ok(p) => p,
            Err(e) => return health.down(e),
        };
        health.up();
        // Up to WINDOW results in flight, settled (counted) in the order they were sent.
        let mut in_flight: VecDeque<(DeliveryFuture, Outgoing)> = VecDeque::new();
        let mut backoff = Backoff::default();
        loop {
            while in_flight.len() < WINDOW {
                // Wait for a result only when nothing is in flight.
                let next = match in_flight.is_empty() {
                    true => rx.recv().await,
                    false => rx.try_recv().ok(),
                };
                let Some(out) = next else { break };
                let delivery = self.enqueue(&producer, &out, &health).await;
                in_flight.push_back((delivery, out));
            }
            let Some((delivery, out)) = in_flight.pop_front() else {
                return;
            };
            let mut delivered = delivery.await;
            // Failed for good after librdkafka's own retries: sent again (after the results
            // in flight behind it, so their order may change).
            while let Err(e) = delivered
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|(e, _)| e.to_string()))
            {
                health.down(e);
                backoff.wait().await;
                delivered = self.enqueue(&producer, &out, &health).await.await;
            }
            health.count();
            backoff.reset();
        }
    }

    /// Hands one result to the producer, waiting while its queue is full.
    async fn enqueue(
        &self,
        producer: &FutureProducer,
        out: &Outgoing,
        health: &Health,
    ) -> DeliveryFuture {
        let key = self
            .key
            .as_ref()
            .and_then(|field| crate::live::key_of(&out.payload, field));
        loop {
            let mut record = FutureRecord::<str, [u8]>::to(&self.topic).payload(&out.payload);
            if let Some(k) = &key {
                record = record.key(k.as_str());
            }
            // A result sent again after a crash carries the same id, for consumers that drop
            // repeats.
            if let Some(id) = &out.id {
                record = record.headers(OwnedHeaders::new().insert(Header {
                    key: "weir-id",
                    value: Some(id.as_str()),
                }));
            }
            match producer.send_result(record) {
                Ok(delivery) => return delivery,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => {
                    health.down(e);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }
}

/// Partitions the group protocol gave this member or took from it, reported from
/// librdkafka's rebalance callbacks to the member's loop.
struct Rebalances(tokio::sync::mpsc::UnboundedSender<GroupEvent>);

impl rdkafka::ClientContext for Rebalances {}

fn partitions(tpl: &TopicPartitionList) -> Vec<i32> {
    tpl.elements().iter().map(|e| e.partition()).collect()
}

impl rdkafka::consumer::ConsumerContext for Rebalances {
    fn pre_rebalance(
        &self,
        _: &rdkafka::consumer::BaseConsumer<Self>,
        rebalance: &rdkafka::consumer::Rebalance<'_>,
    ) {
        if let rdkafka::consumer::Rebalance::Revoke(tpl) = rebalance {
            let _ = self.0.send(GroupEvent::Revoked(partitions(tpl)));
        }
    }

    fn post_rebalance(
        &self,
        _: &rdkafka::consumer::BaseConsumer<Self>,
        rebalance: &rdkafka::consumer::Rebalance<'_>,
    ) {
        if let rdkafka::consumer::Rebalance::Assign(tpl) = rebalance {
            let _ = self.0.send(GroupEvent::Assigned(partitions(tpl)));
        }
    }
}

/// One node's membership of a stream's consumer group: Kafka's group protocol decides which
/// partitions it reads.
pub struct KafkaMember {
    consumer: StreamConsumer<Rebalances>,
    rebalances: tokio::sync::mpsc::UnboundedReceiver<GroupEvent>,
    topic: String,
}

impl KafkaConfig {
    /// Joins the stream's consumer group; reading starts at the group's committed offsets.
    pub async fn join_group(&self) -> Result<KafkaMember, String> {
        self.ensure_topic().await?;
        let (tx, rebalances) = tokio::sync::mpsc::unbounded_channel();
        let group = self.group.clone().unwrap_or_else(|| "weir".to_owned());
        let consumer: StreamConsumer<Rebalances> = self
            .client()
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "1000")
            .create_with_context(Rebalances(tx))
            .map_err(|e| e.to_string())?;
        consumer
            .subscribe(&[&self.topic])
            .map_err(|e| e.to_string())?;
        Ok(KafkaMember {
            consumer,
            rebalances,
            topic: self.topic.clone(),
        })
    }
}

impl KafkaMember {
    /// Waits for what the member hears next.
    pub async fn next(&mut self) -> Result<GroupEvent, String> {
        loop {
            // Rebalances first: librdkafka reports an assignment before it hands out the
            // partitions' messages, so a member always knows what it owns when one arrives.
            tokio::select! {
                biased;
                Some(event) = self.rebalances.recv() => return Ok(event),
                m = self.consumer.recv() => {
                    let m = m.map_err(|e| e.to_string())?;
                    let Some(payload) = m.payload() else { continue };
                    return Ok(GroupEvent::Message {
                        partition: m.partition(),
                        offset: m.offset() as u64,
                        payload: bytes::Bytes::copy_from_slice(payload),
                    });
                }
            }
        }
    }

    /// Commits, per partition, the offset of the next message to read.
    pub fn commit(&self, next: &[(i32, u64)]) -> Result<(), String> {
        if next.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for (p, o) in next {
            tpl.add_partition_offset(&self.topic, *p, Offset::Offset(*o as i64))
                .map_err(|e| e.to_string())?;
        }
        self.consumer
            .commit(&tpl, CommitMode::Async)
            .map_err(|e| e.to_string())
    }
}
