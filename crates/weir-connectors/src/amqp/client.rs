//! The AMQP client: configuration, sources and sinks (lapin, on tokio).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::tcp::RustlsConnector;
use lapin::types::FieldTable;
use lapin::uri::AMQPUri;
use lapin::{
    AsyncTcpStream, BasicProperties, Channel, Confirmation, Connection, ConnectionProperties,
    ExchangeKind,
};

use crate::live::{Backoff, Health, PayloadRx, PayloadTx, Stop};
use crate::tls::TlsOptions;

/// Settings of an AMQP stream.
#[derive(Debug, Clone)]
pub struct AmqpConfig {
    /// The broker, `amqp://` or `amqps://` with the virtual host in the path.
    pub url: String,
    /// Empty for the default exchange (routing key = queue name).
    pub exchange: String,
    /// direct, topic, fanout or headers; declared when missing.
    pub exchange_type: String,
    /// The queue a source consumes; a rule names one of its own when the stream names none
    /// ([`AmqpConfig::queue_of_rule`]).
    pub queue: Option<String>,
    /// A queue of a rule's own is deleted by the broker after this long without a consumer
    /// (it outlives the rule's restarts and moves, not the rule).
    pub expires_ms: Option<u64>,
    /// What sinks publish with, and what a source's queue is bound by.
    pub routing_key: String,
    /// Whether declared exchanges and queues survive a broker restart.
    pub durable: bool,
    /// How many unacknowledged deliveries a source may hold.
    pub prefetch: u16,
    /// TLS with `amqps://` (port 5671 unless the URL says otherwise).
    pub tls: TlsOptions,
}

impl AmqpConfig {
    fn kind(&self) -> ExchangeKind {
        match self.exchange_type.as_str() {
            "topic" => ExchangeKind::Topic,
            "fanout" => ExchangeKind::Fanout,
            "headers" => ExchangeKind::Headers,
            _ => ExchangeKind::Direct,
        }
    }

    /// Connects, over TLS with this stream's settings for `amqps://` (the client's own TLS
    /// setup takes no client certificate in PEM, so the handshake is made here).
    async fn connect(&self) -> Result<Connection, lapin::Error> {
        let props = ConnectionProperties::default();
        if !self.tls.enabled {
            return Connection::connect(&self.url, props).await;
        }
        let failed = |e: String| lapin::Error::from(std::io::Error::other(e));
        let uri: AMQPUri = self.url.parse().map_err(failed)?;
        let connector = Arc::new(RustlsConnector::from(
            self.tls.client_config().map_err(failed)?,
        ));
        let runtime = lapin::runtime::default_runtime()?;
        let connect = async move |uri: AMQPUri, runtime| {
            let host = uri.authority.host.clone();
            let addrs: Vec<std::net::SocketAddr> =
                tokio::net::lookup_host((host.as_str(), uri.authority.port))
                    .await?
                    .collect();
            let plain = AsyncTcpStream::connect(&runtime, addrs).await?;
            Ok(plain.into_rustls(&connector, &host).await?)
        };
        Connection::connector(uri, runtime, connect, props).await
    }

    async fn channel(&self) -> Result<(Connection, Channel), lapin::Error> {
        let conn = self.connect().await?;
        let channel = conn.create_channel().await?;
        if !self.exchange.is_empty() {
            let opts = ExchangeDeclareOptions {
                durable: self.durable,
                ..Default::default()
            };
            channel
                .exchange_declare(
                    self.exchange.as_str().into(),
                    self.kind(),
                    opts,
                    FieldTable::default(),
                )
                .await?;
        }
        Ok((conn, channel))
    }

    /// The queue of rule `rule` for a stream that names none: messages published while the
    /// rule restarts or moves to another node wait in it, and whatever node runs the rule
    /// consumes it.
    pub fn queue_of_rule(&mut self, rule: &str, stream: &str) {
        if self.queue.is_none() {
            self.queue = Some(format!("weir-{rule}-{}", stream.to_ascii_lowercase()));
            self.expires_ms = Some(24 * 3600 * 1000);
        }
    }

    /// Declares the queue (and its binding) and starts consuming.
    async fn consume(&self, channel: &Channel) -> Result<lapin::Consumer, lapin::Error> {
        let opts = QueueDeclareOptions {
            durable: self.durable && self.queue.is_some(),
            exclusive: self.queue.is_none(),
            auto_delete: self.queue.is_none(),
            ..Default::default()
        };
        let name = self.queue.as_deref().unwrap_or("");
        let mut args = FieldTable::default();
        if let Some(ms) = self.expires_ms {
            args.insert(
                "x-expires".into(),
                lapin::types::AMQPValue::LongLongInt(ms as i64),
            );
        }
        let queue = channel.queue_declare(name.into(), opts, args).await?;
        if !self.exchange.is_empty() {
            channel
                .queue_bind(
                    queue.name().clone(),
                    self.exchange.as_str().into(),
                    self.routing_key.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        channel
            .basic_qos(self.prefetch, BasicQosOptions::default())
            .await?;
        channel
            .basic_consume(
                queue.name().clone(),
                "weir".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
    }

    /// Consumes into `tx` until `stop`, acknowledging each message once its rule has taken it.
    pub async fn run_source(self, tx: PayloadTx, health: Arc<Health>, mut stop: Stop) {
        let mut backoff = Backoff::default();
        while !stop.is_set() {
            let consumer = match self.channel().await {
                Ok((conn, channel)) => match self.consume(&channel).await {
                    Ok(consumer) => Some((conn, consumer)),
                    Err(e) => {
                        health.down(e);
                        None
                    }
                },
                Err(e) => {
                    health.down(e);
                    None
                }
            };
            if let Some((conn, mut consumer)) = consumer {
                health.up();
                backoff.reset();
                loop {
                    // Between messages only: a taken one is handed over and acknowledged.
                    // Closing the connection returns what the client had been sent but not
                    // handed over to the queue, for whoever consumes it next.
                    let delivery = tokio::select! {
                        biased;
                        _ = stop.requested() => {
                            let _ = conn.close(200, "the rule stopped".into()).await;
                            return;
                        }
                        d = consumer.next() => match d {
                            Some(d) => d,
                            None => break,
                        },
                    };
                    let delivery = match delivery {
                        Ok(d) => d,
                        Err(e) => {
                            health.down(e);
                            break;
                        }
                    };
                    health.count();
                    if tx.send(delivery.data.clone().into()).await.is_err() {
                        return;
                    }
                    if let Err(e) = delivery.acker.ack(BasicAckOptions::default()).await {
                        health.down(e);
                        break;
                    }
                }
            }
            tokio::select! {
                _ = stop.requested() => return,
                _ = backoff.wait() => {}
            }
        }
    }

    /// Publishes what arrives on `rx`, waiting for the broker's confirmation of each.
    pub async fn run_sink(self, mut rx: PayloadRx, health: Arc<Health>) {
        let mut backoff = Backoff::default();
        let routing_key = match (self.routing_key.is_empty(), &self.queue) {
            (true, Some(q)) => q.clone(),
            _ => self.routing_key.clone(),
        };
        let props = BasicProperties::default().with_content_type("application/json".into());
        // A message that failed to go out is retried on the next connection.
        let mut pending = None;
        loop {
            // Publisher confirms: a message counts once the broker has taken responsibility.
            let confirmed = match self.channel().await {
                Ok((conn, channel)) => channel
                    .confirm_select(ConfirmSelectOptions::default())
                    .await
                    .map(|_| (conn, channel)),
                Err(e) => Err(e),
            };
            let (_conn, channel) = match confirmed {
                Ok(c) => c,
                Err(e) => {
                    health.down(e);
                    backoff.wait().await;
                    continue;
                }
            };
            health.up();
            backoff.reset();
            loop {
                let payload = match pending.take() {
                    Some(p) => p,
                    None => match rx.recv().await {
                        Some(out) => out.payload,
                        None => return,
                    },
                };
                let sent = channel
                    .basic_publish(
                        self.exchange.as_str().into(),
                        routing_key.as_str().into(),
                        BasicPublishOptions::default(),
                        &payload,
                        props.clone(),
                    )
                    .await;
                let confirmed = match sent {
                    Ok(confirm) => match confirm.await {
                        Ok(Confirmation::Nack(_)) => Err("the broker refused the message".into()),
                        Ok(_) => Ok(()),
                        Err(e) => Err(e.to_string()),
                    },
                    Err(e) => Err(e.to_string()),
                };
                match confirmed {
                    Ok(()) => health.count(),
                    Err(e) => {
                        health.down(e);
                        pending = Some(payload);
                        break;
                    }
                }
            }
            backoff.wait().await;
        }
    }

    /// Opens a connection and a channel, then closes them (3 s).
    pub async fn check(&self) -> Result<(), String> {
        let connect = async {
            let (conn, _channel) = self.channel().await.map_err(|e| e.to_string())?;
            conn.close(200, "check".into())
                .await
                .map_err(|e| e.to_string())
        };
        tokio::time::timeout(Duration::from_secs(3), connect)
            .await
            .map_err(|_| format!("no answer from {} within 3 s", self.url))?
    }
}
