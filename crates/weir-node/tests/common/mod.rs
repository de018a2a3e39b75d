//! Helpers for node tests: a node on free ports with its own data directory, a JSON client,
//! and MQTT clients. Every test uses its own topics, queues and subjects, so tests run in
//! parallel against the machine's brokers.

#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;
use tokio::sync::mpsc;
use weir_node::hub::{Hub, Message, Subscription};
use weir_node::{NodeConfig, Running};

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}_{}_{}", std::process::id(), nanos % 1_000_000_000)
}

pub fn data_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(unique(&format!("weir-test-{name}")));
    let _ = std::fs::remove_dir_all(&d);
    d
}

pub fn config(dir: &std::path::Path) -> NodeConfig {
    NodeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        mqtt_listen: Some("127.0.0.1:0".parse().unwrap()),
        data_dir: dir.to_path_buf(),
        workers: 2,
        ..NodeConfig::default()
    }
}

pub struct TestNode {
    pub running: Running,
    pub base: String,
    http: reqwest::Client,
}

impl TestNode {
    pub async fn start(dir: &std::path::Path) -> TestNode {
        Self::with(config(dir)).await
    }

    pub async fn with(config: NodeConfig) -> TestNode {
        let running = weir_node::start(config).await.expect("node starts");
        TestNode {
            base: format!("http://{}", running.http),
            running,
            http: reqwest::Client::new(),
        }
    }

    pub fn mqtt_port(&self) -> u16 {
        self.running.mqtt.unwrap().port()
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// Polls a rule's status until `check` holds (or fails the test after 10 s).
    pub async fn wait_status(&self, id: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..100 {
            let (_, s) = self.get(&format!("/v1/rules/{id}/status")).await;
            if check(&s) {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (_, s) = self.get(&format!("/v1/rules/{id}/status")).await;
        panic!("rule {id}: {what} never happened; status: {s:#}");
    }

    pub async fn stop(self) {
        self.running.stop().await;
    }
}

/// Connected, subscribed MQTT client on 127.0.0.1:`port`; messages arrive on the receiver.
pub async fn mqtt_subscribe(port: u16, topic: &str) -> mpsc::Receiver<Bytes> {
    let mut o = MqttOptions::new(unique("sub"), "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(10));
    let (client, mut events) = AsyncClient::new(o, 64);
    client.subscribe(topic, QoS::AtLeastOnce).await.unwrap();
    let (tx, rx) = mpsc::channel(1024);
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let mut ready = Some(ready_tx);
    tokio::spawn(async move {
        let _client = client;
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if tx.send(p.payload).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(5), ready_rx)
        .await
        .expect("subscribed")
        .unwrap();
    rx
}

/// Publishes each payload at QoS 1 and waits until the broker has acknowledged them all.
pub async fn mqtt_publish(port: u16, topic: &str, payloads: &[String]) {
    let o = MqttOptions::new(unique("pub"), "127.0.0.1", port);
    let (client, mut events) = AsyncClient::new(o, 1024);
    for p in payloads {
        client
            .publish(topic, QoS::AtLeastOnce, false, p.clone())
            .await
            .unwrap();
    }
    let mut acked = 0;
    let wait = async {
        while acked < payloads.len() {
            if let Event::Incoming(Packet::PubAck(_)) =
                events.poll().await.expect("broker reachable")
            {
                acked += 1;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .expect("acknowledged");
    let _ = client.disconnect().await;
}

/// The next `n` JSON messages, or a failure naming what arrived.
pub async fn take_json(rx: &mut mpsc::Receiver<Bytes>, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    while out.len() < n {
        match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
            Ok(Some(b)) => out.push(serde_json::from_slice(&b).expect("JSON output")),
            _ => panic!("expected {n} messages, got {}: {out:?}", out.len()),
        }
    }
    out
}

/// Asserts nothing more arrives within `ms`.
pub async fn expect_quiet(rx: &mut mpsc::Receiver<Bytes>, ms: u64) {
    if let Ok(Some(b)) = tokio::time::timeout(Duration::from_millis(ms), rx.recv()).await {
        panic!("unexpected message: {}", String::from_utf8_lossy(&b));
    }
}

/// Every message published on the node's topics matching `filter`, in order and none dropped:
/// the publisher waits while the test has not read them.
pub fn tap(hub: &std::sync::Arc<Hub>, filter: &str) -> (Subscription, mpsc::Receiver<Message>) {
    let (batches_tx, mut batches) = mpsc::channel::<std::sync::Arc<weir_node::hub::Published>>(64);
    let (tx, rx) = mpsc::channel(4096);
    tokio::spawn(async move {
        while let Some(b) = batches.recv().await {
            for p in &b.payloads {
                let m = Message {
                    topic: b.topic.clone(),
                    payload: p.clone(),
                };
                if tx.send(m).await.is_err() {
                    return;
                }
            }
        }
    });
    (hub.read(filter, batches_tx), rx)
}

pub mod cluster;
pub mod openapi;
pub mod private;
pub mod tansu;
#[allow(unused_imports)] // only the tests of several nodes use them
pub use cluster::{amqp_results, Pair};
#[allow(unused_imports)] // only the Kafka tests use them
pub use tansu::{produce, windows, Tansu};
