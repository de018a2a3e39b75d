//! The MQTT connector's client: its settings, source, sink and connection test.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::live::{Backoff, Health, PayloadRx, PayloadTx, Stop};
use crate::tls::TlsOptions;

/// Largest MQTT packet weir sends or accepts: the 1 MiB record limit plus headers.
const MAX_PACKET: usize = (1 << 20) + 4096;

/// Settings of an MQTT stream.
#[derive(Debug, Clone)]
pub struct MqttConfig {
    /// The broker's host.
    pub host: String,
    /// The broker's port (1883, or 8883 with TLS, unless the URL says).
    pub port: u16,
    /// A topic filter for sources, a topic for sinks.
    pub topic: String,
    /// 0 or 1.
    pub qos: u8,
    /// MQTT 5 rather than 3.1.1.
    pub v5: bool,
    /// The client id; one is made up when none is given.
    pub client_id: Option<String>,
    /// Keep the session (and QoS 1 messages) across disconnects; needs a client_id.
    pub persistent: bool,
    /// Share the subscription with other members of this group (`$share/group/filter`).
    pub shared: Option<String>,
    /// The user name and password of the URL (`mqtt://user:password@host`).
    pub login: Option<crate::live::Login>,
    /// TLS with `mqtts://` (port 8883 unless the URL says otherwise).
    pub tls: TlsOptions,
}

impl MqttConfig {
    /// What sources subscribe to.
    pub fn subscription(&self) -> String {
        match &self.shared {
            Some(group) => format!("$share/{group}/{}", self.topic),
            None => self.topic.clone(),
        }
    }

    fn client_id(&self, role: &str) -> String {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        self.client_id.clone().unwrap_or_else(|| {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            format!("weir-{role}-{}-{n}", std::process::id())
        })
    }

    /// Subscribes and hands messages to `tx` until `stop`, acknowledging a QoS 1 message once its
    /// rule has taken it.
    pub async fn run_source(self, tx: PayloadTx, health: Arc<Health>, stop: Stop) {
        if self.v5 {
            v5::run_source(self, tx, health, stop).await
        } else {
            v4::run_source(self, tx, health, stop).await
        }
    }

    /// Publishes what arrives on `rx`.
    pub async fn run_sink(self, rx: PayloadRx, health: Arc<Health>) {
        if self.v5 {
            v5::run_sink(self, rx, health).await
        } else {
            v4::run_sink(self, rx, health).await
        }
    }

    /// Connects and waits for the broker's CONNACK (3 s).
    pub async fn check(&self) -> Result<(), String> {
        if self.v5 {
            v5::check(self).await
        } else {
            v4::check(self).await
        }
    }
}

/// The client code, once for each protocol version: the two rumqttc APIs differ only in the
/// names each version module imports and in `tune` and `prompt`.
macro_rules! mqtt_client {
    () => {
        use super::*;

        fn qos(level: u8) -> QoS {
            if level == 0 {
                QoS::AtMostOnce
            } else {
                QoS::AtLeastOnce
            }
        }

        /// A client with these settings; `Err` when its TLS files cannot be read.
        fn client(c: &MqttConfig, role: &str) -> Result<(AsyncClient, EventLoop), String> {
            let mut o = MqttOptions::new(c.client_id(role), &c.host, c.port);
            o.set_keep_alive(Duration::from_secs(15));
            if let Some(l) = &c.login {
                o.set_credentials(l.user.clone(), l.password.clone());
            }
            if c.tls.enabled {
                let config = c.tls.client_config()?;
                o.set_transport(rumqttc::Transport::tls_with_config(
                    rumqttc::TlsConfiguration::Rustls(Arc::new(config)),
                ));
            }
            // Sources acknowledge after handing a message on; sinks receive nothing to ack.
            o.set_manual_acks(role == "source");
            tune(&mut o, c.persistent);
            let (client, mut events) = AsyncClient::new(o, 512);
            prompt(&mut events);
            Ok((client, events))
        }

        pub(super) async fn run_source(
            c: MqttConfig,
            tx: PayloadTx,
            health: Arc<Health>,
            mut stop: Stop,
        ) {
            let mut backoff = Backoff::default();
            let (client, mut events) = loop {
                match client(&c, "source") {
                    Ok(made) => break made,
                    Err(e) => {
                        health.down(e);
                        tokio::select! {
                            _ = stop.requested() => return,
                            _ = backoff.wait() => {}
                        }
                    }
                }
            };
            let filter = c.subscription();
            loop {
                // Between messages only: a taken one is handed over and acknowledged. What the
                // broker sent but the rule did not take stays unacknowledged, for the session
                // to deliver again.
                let event = tokio::select! {
                    biased;
                    _ = stop.requested() => return leave(client, events).await,
                    e = events.poll() => e,
                };
                match event {
                    Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                        health.up();
                        backoff.reset();
                        // Subscribing again is harmless where the session survived, and
                        // needed where the broker kept the session but not its subscriptions.
                        if let Err(e) = client.try_subscribe(filter.clone(), qos(c.qos)) {
                            health.down(e);
                        }
                    }
                    Ok(Event::Incoming(Incoming::Publish(p))) => {
                        health.count();
                        if tx.send(p.payload.clone()).await.is_err() {
                            return;
                        }
                        if let Err(e) = client.try_ack(&p) {
                            tracing::warn!(error = %e, "MQTT acknowledgement not sent");
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        health.down(e);
                        backoff.wait().await;
                    }
                }
            }
        }

        /// Sends the acknowledgements still queued, then a clean disconnect: the persistent
        /// session then holds exactly what the rule did not take (a message that arrives
        /// meanwhile is neither taken nor acknowledged).
        async fn leave(client: AsyncClient, mut events: EventLoop) {
            let _ = client.try_disconnect();
            let flushed = async {
                while let Ok(e) = events.poll().await {
                    if matches!(e, Event::Outgoing(Outgoing::Disconnect)) {
                        return;
                    }
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(5), flushed).await;
        }

        pub(super) async fn run_sink(c: MqttConfig, mut rx: PayloadRx, health: Arc<Health>) {
            let mut backoff = Backoff::default();
            let (client, mut events) = loop {
                match client(&c, "sink") {
                    Ok(made) => break made,
                    Err(_) if rx.is_closed() => return,
                    Err(e) => {
                        health.down(e);
                        backoff.wait().await;
                    }
                }
            };
            let driver_health = health.clone();
            let confirmed = c.qos > 0;
            // QoS 1 results the broker has not acknowledged yet, oldest first. A broker that
            // comes back without the session makes the client drop what it had in flight, so
            // the sink sends those again itself.
            let unacked: Arc<std::sync::Mutex<std::collections::VecDeque<Bytes>>> = Arc::default();
            let (in_flight, resender, topic) = (unacked.clone(), client.clone(), c.topic.clone());
            let driver = tokio::spawn(async move {
                let mut backoff = Backoff::default();
                loop {
                    match events.poll().await {
                        Ok(Event::Incoming(Incoming::ConnAck(ack))) => {
                            driver_health.up();
                            backoff.reset();
                            let again: Vec<Bytes> = match ack.session_present {
                                true => Vec::new(),
                                false => in_flight.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect(),
                            };
                            if !again.is_empty() {
                                let (client, topic) = (resender.clone(), topic.clone());
                                tokio::spawn(async move {
                                    for payload in again {
                                        if client.publish_bytes(topic.clone(), QoS::AtLeastOnce, false, payload).await.is_err() {
                                            return;
                                        }
                                    }
                                });
                            }
                        }
                        // QoS 1 publishes count once the broker has acknowledged them.
                        Ok(Event::Incoming(Incoming::PubAck(_))) => {
                            in_flight.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
                            driver_health.count()
                        }
                        Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
                        Ok(_) => {}
                        Err(e) => {
                            driver_health.down(e);
                            backoff.wait().await;
                        }
                    }
                }
            });
            while let Some(out) = rx.recv().await {
                if confirmed {
                    unacked.lock().unwrap_or_else(|e| e.into_inner()).push_back(out.payload.clone());
                }
                if client
                    .publish_bytes(c.topic.clone(), qos(c.qos), false, out.payload)
                    .await
                    .is_err()
                {
                    break;
                }
                if !confirmed {
                    health.count();
                }
            }
            // Queued publishes go out before the disconnect that ends the driver.
            let _ = client.disconnect().await;
            let _ = tokio::time::timeout(Duration::from_secs(5), driver).await;
        }

        pub(super) async fn check(c: &MqttConfig) -> Result<(), String> {
            let mut probe = c.clone();
            probe.client_id = None;
            probe.persistent = false;
            let (_client, mut events) = client(&probe, "check")?;
            let connack = async {
                loop {
                    match events.poll().await {
                        Ok(Event::Incoming(Incoming::ConnAck(_))) => return Ok(()),
                        Ok(_) => {}
                        Err(e) => return Err(e.to_string()),
                    }
                }
            };
            tokio::time::timeout(Duration::from_secs(3), connack)
                .await
                .map_err(|_| format!("no answer from {}:{} within 3 s", c.host, c.port))?
        }
    };
}

mod v4 {
    use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet as Incoming, QoS};

    /// Small packets go out at once (TCP_NODELAY): with Nagle's algorithm a publish or an
    /// acknowledgement waits while the one before it is unacknowledged, up to the broker's
    /// delayed ACK (40 ms). Throughput is the same either way (BENCHMARKS.md).
    fn prompt(e: &mut EventLoop) {
        e.network_options.set_tcp_nodelay(true);
    }

    fn tune(o: &mut MqttOptions, persistent: bool) {
        o.set_clean_session(!persistent);
        o.set_max_packet_size(MAX_PACKET, MAX_PACKET);
    }

    mqtt_client!();
}

mod v5 {
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::{AsyncClient, Event, EventLoop, Incoming, MqttOptions};
    use rumqttc::Outgoing;

    /// As version 3.1.1's `prompt`: no Nagle's algorithm.
    fn prompt(e: &mut EventLoop) {
        let mut n = e.options.network_options();
        n.set_tcp_nodelay(true);
        e.options.set_network_options(n);
    }

    fn tune(o: &mut MqttOptions, persistent: bool) {
        o.set_clean_start(!persistent);
        o.set_max_packet_size(Some(MAX_PACKET as u32));
        if persistent {
            let mut props = o.connect_properties().unwrap_or_default();
            props.session_expiry_interval = Some(u32::MAX);
            o.set_connect_properties(props);
        }
    }

    mqtt_client!();
}
