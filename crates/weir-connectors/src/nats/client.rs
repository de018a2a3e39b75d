//! The NATS connector's client: its settings, source, sink and connection test.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::message::PublishMessage;
use futures::StreamExt;

use crate::live::{Backoff, Health, Login, Outgoing, PayloadRx, PayloadTx, Secret, Stop};
use crate::tls::TlsOptions;

/// Settings of a NATS stream.
#[derive(Debug, Clone)]
pub struct NatsConfig {
    /// The server, `nats://` or `tls://`.
    pub url: String,
    /// The subject read or written (with `partitions`, the prefix of the partitions' subjects).
    pub subject: String,
    /// Core queue group: members share the messages.
    pub queue: Option<String>,
    /// JetStream stream that stores the subject (created when missing).
    pub stream: Option<String>,
    /// Durable consumer name, so a restarted source resumes where it stopped.
    pub durable: Option<String>,
    /// A durable consumer of a rule's own is deleted by the server after this long unused
    /// (it outlives the rule's restarts and moves, not the rule).
    pub inactive_ms: Option<u64>,
    /// Partitioned subjects `<subject>.<p>`, p in 0..N.
    pub partitions: Option<u32>,
    /// The stream's key field: with partitions, it picks a result's partition (sinks).
    pub key: Option<String>,
    /// Name of a core group's consumers (see [`crate::Endpoint::for_rule`]).
    pub group: Option<String>,
    /// How the client proves who it is, if the server asks.
    pub auth: NatsAuth,
    /// TLS with `tls://` URLs.
    pub tls: TlsOptions,
}

/// NATS client authentication: at most one of these.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum NatsAuth {
    #[default]
    /// No credentials.
    None,
    /// `nats://user:password@host`.
    Login(Login),
    /// Option `token`.
    Token(Secret),
    /// Option `nkey`: the user's seed (`SU...`).
    Nkey(Secret),
    /// Option `credentials_file`: a user JWT and its nkey seed (`.creds`).
    Credentials(std::path::PathBuf),
}

impl NatsConfig {
    /// The client options of this stream: its authentication and TLS.
    pub(super) async fn options(&self) -> Result<async_nats::ConnectOptions, String> {
        let options = match &self.auth {
            NatsAuth::None => async_nats::ConnectOptions::new(),
            NatsAuth::Login(l) => async_nats::ConnectOptions::with_user_and_password(
                l.user.clone(),
                l.password.clone(),
            ),
            NatsAuth::Token(t) => async_nats::ConnectOptions::with_token(t.0.clone()),
            NatsAuth::Nkey(seed) => async_nats::ConnectOptions::with_nkey(seed.0.clone()),
            NatsAuth::Credentials(file) => {
                let text = weir_core::files::read_settings_file(file, "credentials_file")?;
                let text = String::from_utf8(text)
                    .map_err(|_| format!("credentials_file {}: not text", file.display()))?;
                async_nats::ConnectOptions::with_credentials(&text).map_err(|_| {
                    format!(
                        "credentials_file {}: not a NATS credentials file",
                        file.display()
                    )
                })?
            }
        };
        if !self.tls.enabled {
            return Ok(options);
        }
        Ok(options
            .require_tls(true)
            .tls_client_config(self.tls.client_config()?))
    }

    /// A JetStream source of rule `rule` without a durable consumer gets one of its own, so
    /// that a restart or a move resumes after what was acknowledged.
    pub fn durable_of_rule(&mut self, rule: &str, stream: &str) {
        if self.stream.is_some() && self.durable.is_none() {
            self.durable = Some(format!("weir-{rule}-{}", stream.to_ascii_lowercase()));
            self.inactive_ms = Some(24 * 3600 * 1000);
        }
    }

    /// The subjects the stream reads: all its partitions when it has some.
    fn filter(&self) -> String {
        match self.partitions {
            Some(_) => format!("{}.*", self.subject),
            None => self.subject.clone(),
        }
    }

    /// Partition `p`'s subject.
    pub(super) fn partition_subject(&self, p: u32) -> String {
        format!("{}.{p}", self.subject)
    }

    /// The subject a result goes to: its key's partition (round robin over `turn` without a
    /// key field in it).
    fn subject_for(&self, payload: &[u8], turn: &mut u32) -> String {
        let Some(n) = self.partitions else {
            return self.subject.clone();
        };
        let p = match self
            .key
            .as_deref()
            .and_then(|f| crate::live::key_of(payload, f))
        {
            Some(key) => weir_core::hash::fnv1a_32(key.as_bytes()) % n,
            None => {
                *turn = turn.wrapping_add(1);
                *turn % n
            }
        };
        self.partition_subject(p)
    }

    async fn connect(&self, health: &Arc<Health>) -> Result<async_nats::Client, String> {
        let h = health.clone();
        self.options()
            .await?
            .retry_on_initial_connect()
            .event_callback(move |event| {
                let h = h.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => h.up(),
                        async_nats::Event::Disconnected => h.down("disconnected"),
                        // A refused login or handshake: the client keeps trying, the rule's
                        // health says why it is not up.
                        e @ (async_nats::Event::ClientError(_)
                        | async_nats::Event::ServerError(_)) => h.down(e),
                        other => tracing::info!(event = %other, "nats"),
                    }
                }
            })
            .connect(&self.url)
            .await
            .map_err(|e| e.to_string())
    }

    pub(super) async fn js_stream(
        &self,
        client: &async_nats::Client,
        name: &str,
    ) -> Result<jetstream::stream::Stream, String> {
        jetstream::new(client.clone())
            .get_or_create_stream(jetstream::stream::Config {
                name: name.to_owned(),
                subjects: vec![self.filter()],
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string())
    }

    /// Subscribes (core) or consumes (JetStream) into `tx` until `stop`.
    pub async fn run_source(self, tx: PayloadTx, health: Arc<Health>, mut stop: Stop) {
        let client = match self.connect(&health).await {
            Ok(c) => c,
            Err(e) => return health.down(e),
        };
        // Up once messages can arrive: core NATS delivers nothing published before the
        // subscription is made.
        let mut backoff = Backoff::default();
        match &self.stream {
            None => {
                while !stop.is_set() {
                    let sub = match &self.queue {
                        Some(q) => client.queue_subscribe(self.filter(), q.clone()).await,
                        None => client.subscribe(self.filter()).await,
                    };
                    let mut sub = match sub {
                        Ok(s) => {
                            // The server has the subscription once a flush comes back.
                            if let Err(e) = client.flush().await {
                                health.down(e);
                                backoff.wait().await;
                                continue;
                            }
                            health.up();
                            s
                        }
                        Err(e) => {
                            health.down(e);
                            backoff.wait().await;
                            continue;
                        }
                    };
                    loop {
                        let msg = tokio::select! {
                            biased;
                            _ = stop.requested() => return,
                            m = sub.next() => match m {
                                Some(m) => m,
                                None => break,
                            },
                        };
                        health.count();
                        if tx.send(msg.payload).await.is_err() {
                            return;
                        }
                    }
                    backoff.wait().await;
                }
            }
            Some(name) => {
                while !stop.is_set() {
                    if let Err(e) = self
                        .consume_jetstream(&client, name, &tx, &health, &mut stop)
                        .await
                    {
                        if tx.is_closed() {
                            return;
                        }
                        health.down(e);
                    }
                    tokio::select! {
                        _ = stop.requested() => return,
                        _ = backoff.wait() => {}
                    }
                }
            }
        }
    }

    async fn consume_jetstream(
        &self,
        client: &async_nats::Client,
        name: &str,
        tx: &PayloadTx,
        health: &Health,
        stop: &mut Stop,
    ) -> Result<(), String> {
        let stream = self.js_stream(client, name).await?;
        // The stream keeps what is published from now on, for the consumer to read.
        health.up();
        if let PayloadTx::Log(input) = tx {
            // A durable rule keeps its own position: the stream sequence of the last message
            // its log took. It reads in stream order from just after it, without
            // acknowledgements, so nothing is skipped or stored twice across crashes.
            let last = input.log.last_number("").map_err(|e| e.to_string())?;
            let deliver_policy = match last {
                Some(seq) => DeliverPolicy::ByStartSequence {
                    start_sequence: seq + 1,
                },
                None => DeliverPolicy::All,
            };
            let config = jetstream::consumer::pull::OrderedConfig {
                filter_subject: self.filter(),
                deliver_policy,
                ..Default::default()
            };
            let consumer = stream
                .create_consumer(config)
                .await
                .map_err(|e| e.to_string())?;
            let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
            // An ordered consumer can stall silently when the server restarts: after a
            // reconnect it is made again from the stored position.
            let connection = health.reconnects.load(Ordering::Relaxed);
            loop {
                let next = tokio::select! {
                    biased;
                    _ = stop.requested() => return Ok(()),
                    n = tokio::time::timeout(Duration::from_secs(1), messages.next()) => n,
                };
                let msg = match next {
                    Ok(Some(msg)) => msg.map_err(|e| e.to_string())?,
                    Ok(None) => return Ok(()),
                    Err(_) if health.reconnects.load(Ordering::Relaxed) != connection => {
                        return Ok(())
                    }
                    Err(_) => continue,
                };
                health.count();
                let seq = msg.info().ok().map(|i| ("", i.stream_sequence));
                if tx.send_numbered(msg.payload.clone(), seq).await.is_err() {
                    return Err("rule stopped".to_owned());
                }
            }
        }
        let config = jetstream::consumer::pull::Config {
            durable_name: self.durable.clone(),
            filter_subject: self.filter(),
            inactive_threshold: self
                .inactive_ms
                .map(Duration::from_millis)
                .unwrap_or_default(),
            ..Default::default()
        };
        let consumer = match &self.durable {
            Some(d) => stream.get_or_create_consumer(d, config).await,
            None => stream.create_consumer(config).await,
        }
        .map_err(|e| e.to_string())?;
        // Pulled in bounded batches, each handed over and acknowledged whole: a stop between
        // batches leaves nothing delivered but unacknowledged, which the consumer would only
        // deliver again after its ack wait (and behind newer messages, so too late for a
        // window).
        while !stop.is_set() {
            let mut batch = consumer
                .batch()
                .max_messages(256)
                .expires(Duration::from_millis(500))
                .messages()
                .await
                .map_err(|e| e.to_string())?;
            while let Some(msg) = batch.next().await {
                let msg = msg.map_err(|e| e.to_string())?;
                health.count();
                if tx.send(msg.payload.clone()).await.is_err() {
                    return Err("rule stopped".to_owned());
                }
                msg.ack().await.map_err(|e| e.to_string())?;
            }
        }
        // The acknowledgements reach the server before the connection goes.
        client.flush().await.map_err(|e| e.to_string())
    }

    /// Publishes what arrives on `rx` (on JetStream, waiting for each acknowledgement).
    pub async fn run_sink(self, mut rx: PayloadRx, health: Arc<Health>) {
        let client = match self.connect(&health).await {
            Ok(c) => c,
            Err(e) => return health.down(e),
        };
        health.up();
        let js = match &self.stream {
            Some(name) => {
                if let Err(e) = self.js_stream(&client, name).await {
                    health.down(e);
                }
                Some(jetstream::new(client.clone()))
            }
            None => None,
        };
        let mut backoff = Backoff::default();
        let mut turn = 0;
        while let Some(Outgoing { payload, id }) = rx.recv().await {
            let subject = self.subject_for(&payload, &mut turn);
            loop {
                let sent = match &js {
                    Some(js) => {
                        // JetStream drops a message whose id it has seen within its
                        // duplicate window: a result sent again after a crash lands once.
                        let mut publish = PublishMessage::build().payload(payload.clone());
                        if let Some(id) = &id {
                            publish = publish.message_id(id);
                        }
                        match js.send_publish(subject.clone(), publish).await {
                            Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
                            Err(e) => Err(e.to_string()),
                        }
                    }
                    None => client
                        .publish(subject.clone(), payload.clone())
                        .await
                        .map_err(|e| e.to_string()),
                };
                match sent {
                    Ok(()) => {
                        health.count();
                        backoff.reset();
                        break;
                    }
                    Err(e) => {
                        health.down(e);
                        backoff.wait().await;
                    }
                }
            }
        }
        // Core NATS keeps nothing for later: the client's buffer must reach the server before
        // the sink ends. A flush fails while the first connection is still being made (a busy
        // machine), so it is tried again for a while.
        for _ in 0..100 {
            if client.flush().await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Connects, logs in and flushes (3 s).
    pub async fn check(&self) -> Result<(), String> {
        let connect = self.options().await?.connect(&self.url);
        let client = tokio::time::timeout(Duration::from_secs(3), connect)
            .await
            .map_err(|_| format!("no answer from {} within 3 s", self.url))?
            .map_err(|e| e.to_string())?;
        client.flush().await.map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Endpoint;

    fn nats(pairs: &[(&str, &str)]) -> NatsConfig {
        let options: std::collections::BTreeMap<String, String> =
            [("connector", "nats"), ("topic", "readings")]
                .iter()
                .chain(pairs)
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        match Endpoint::from_options("s", &options).unwrap() {
            Endpoint::Nats(c) => c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn partitioned_subjects_and_keys() {
        let c = nats(&[("partitions", "4"), ("key", "sensor")]);
        assert_eq!(c.filter(), "readings.*");
        let mut turn = 0;
        let to = |sensor: i64, turn: &mut u32| {
            c.subject_for(format!(r#"{{"sensor":{sensor}}}"#).as_bytes(), turn)
        };
        // One key, one partition: its state lives in one place.
        assert_eq!(to(7, &mut turn), to(7, &mut turn));
        let spread: std::collections::BTreeSet<String> =
            (0..40).map(|s| to(s, &mut turn)).collect();
        assert_eq!(spread.len(), 4, "{spread:?}");
        // Without the key field, results go round the partitions.
        let unkeyed: Vec<String> = (0..4).map(|_| c.subject_for(b"{}", &mut turn)).collect();
        assert_eq!(
            unkeyed
                .iter()
                .collect::<std::collections::BTreeSet<_>>()
                .len(),
            4
        );

        // Without partitions the key is the engine's alone.
        let plain = nats(&[("key", "sensor")]);
        assert_eq!(plain.filter(), "readings");
        assert_eq!(plain.subject_for(br#"{"sensor":1}"#, &mut turn), "readings");
    }
}
