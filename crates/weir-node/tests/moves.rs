//! Moves lose nothing and double nothing. Two nodes share a control plane; for each guarantee
//! a broker can give, a windowed and pattern rule runs on node `a` and never moves, and the
//! same rule moves between `a` and `b` 24 times — at random moments while events flow, and
//! right before a window closes — over RabbitMQ, MQTT and NATS JetStream. The rule that moved
//! must emit exactly what the one that stayed emits: every window and match once, with the
//! same values.
//!
//! The random moments come from a seed printed at the start; `WEIR_MOVES_SEED=<n>` repeats a
//! run.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::FieldTable;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{json, Value};

const BASE: i64 = 1_700_000_000_000;
/// Moves per rule.
const MOVES: usize = 24;
/// Events between two moves, on average.
const CHUNK: usize = 100;
/// Event time between two events; a window of 1 s holds 50.
const STEP: i64 = 20;

/// The events of a run: three keys, values that rise and fall (pattern matches), every 13th
/// event 700 ms behind (out of order, some of them late behind the 500 ms watermark delay).
fn event(i: usize) -> Value {
    let late = if i % 13 == 5 { 700 } else { 0 };
    let key = ["a", "b", "c"][i % 3];
    json!({
        "k": key,
        "ts": BASE + i as i64 * STEP - late,
        "v": ((i * 7) % 11 + (i / 50) % 3) as i64,
    })
}

/// A rule reading `source` (connector options) with a tumbling window and a V-shape pattern,
/// writing `win_<id>` and `pat_<id>`.
fn rule_sql(id: &str, source: &str) -> String {
    format!(
        "CREATE STREAM src_{id} (k STRING, ts BIGINT, v BIGINT) WITH ({source}, timestamp = 'ts', watermark = '500 ms');
         INSERT INTO win_{id}
         SELECT k, window_start, count(*) AS n, sum(v) AS total
         FROM src_{id} GROUP BY k, TUMBLE(ts, INTERVAL '1' SECOND);
         INSERT INTO pat_{id}
         SELECT k, first_v, bottom, last_v, drops, start_ts, end_ts
         FROM src_{id}
         MATCH_RECOGNIZE (
           PARTITION BY k ORDER BY ts
           MEASURES FIRST(S.v) AS first_v, LAST(D.v) AS bottom, LAST(U.v) AS last_v,
                    COUNT(D.*) AS drops, S.ts AS start_ts, LAST(U.ts) AS end_ts
           ONE ROW PER MATCH AFTER MATCH SKIP PAST LAST ROW
           PATTERN (S D+ U+) WITHIN INTERVAL '2' SECOND
           DEFINE D AS D.v < PREV(D.v), U AS U.v > PREV(U.v)
         );"
    )
}

/// A small deterministic generator: the test's random moments, repeatable from the seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Publishes into the broker a test runs against, in order, each message stored by the broker
/// before `publish` returns.
enum Publisher {
    Amqp {
        _conn: lapin::Connection,
        channel: lapin::Channel,
        exchange: String,
    },
    Mqtt {
        client: AsyncClient,
        topic: String,
        sent: usize,
        acked: Arc<AtomicUsize>,
    },
    JetStream {
        js: async_nats::jetstream::Context,
        subject: String,
    },
}

impl Publisher {
    async fn publish(&mut self, payload: String) {
        match self {
            Publisher::Amqp {
                channel, exchange, ..
            } => {
                channel
                    .basic_publish(
                        exchange.as_str().into(),
                        "".into(),
                        BasicPublishOptions::default(),
                        payload.as_bytes(),
                        Default::default(),
                    )
                    .await
                    .unwrap()
                    .await
                    .unwrap();
            }
            Publisher::Mqtt {
                client,
                topic,
                sent,
                acked,
            } => {
                client
                    .publish(topic.as_str(), QoS::AtLeastOnce, false, payload)
                    .await
                    .unwrap();
                *sent += 1;
                let deadline = Instant::now() + Duration::from_secs(10);
                while acked.load(Ordering::Relaxed) < *sent {
                    assert!(Instant::now() < deadline, "the broker acknowledges");
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            Publisher::JetStream { js, subject } => {
                js.publish(subject.clone(), payload.into())
                    .await
                    .unwrap()
                    .await
                    .unwrap();
            }
        }
    }
}

/// One broker's side of a test: how rules read it, and a publisher into it.
struct Broker {
    source: String,
    guarantees: &'static [&'static str],
    publisher: Publisher,
}

async fn rabbitmq() -> Broker {
    let exchange = unique("moves");
    let conn = lapin::Connection::connect(
        "amqp://guest:guest@127.0.0.1:5672/%2f",
        lapin::ConnectionProperties::default(),
    )
    .await
    .expect("RabbitMQ on 127.0.0.1:5672");
    let channel = conn.create_channel().await.unwrap();
    channel
        .exchange_declare(
            exchange.as_str().into(),
            lapin::ExchangeKind::Fanout,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    Broker {
        // Each rule consumes a queue of its own, bound to the exchange.
        source: format!(
            "connector = 'amqp', exchange = '{exchange}', exchange_type = 'fanout', durable = 'false'"
        ),
        guarantees: &["at_most_once", "at_least_once"],
        publisher: Publisher::Amqp {
            _conn: conn,
            channel,
            exchange,
        },
    }
}

async fn mosquitto() -> Broker {
    let topic = unique("moves/in");
    let (client, mut events) =
        AsyncClient::new(MqttOptions::new(unique("pub"), "127.0.0.1", 1883), 64);
    let acked = Arc::new(AtomicUsize::new(0));
    let counter = acked.clone();
    tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    Broker {
        // The client id is added per rule: the broker keeps each rule's session while it moves.
        source: format!(
            "connector = 'mqtt', url = 'mqtt://127.0.0.1:1883', topic = '{topic}', qos = '1', session = 'persistent'"
        ),
        guarantees: &["at_most_once", "at_least_once"],
        publisher: Publisher::Mqtt {
            client,
            topic,
            sent: 0,
            acked,
        },
    }
}

async fn jetstream() -> Broker {
    let (subject, stream) = (unique("moves.in"), unique("MOVES"));
    let client = async_nats::connect("nats://127.0.0.1:4222")
        .await
        .expect("NATS on 127.0.0.1:4222");
    let js = async_nats::jetstream::new(client);
    js.get_or_create_stream(async_nats::jetstream::stream::Config {
        name: stream.clone(),
        subjects: vec![subject.clone()],
        ..Default::default()
    })
    .await
    .unwrap();
    Broker {
        source: format!(
            "connector = 'nats', url = 'nats://127.0.0.1:4222', subject = '{subject}', stream = '{stream}'"
        ),
        guarantees: &["at_most_once", "at_least_once", "exactly_once"],
        publisher: Publisher::JetStream { js, subject },
    }
}

/// Messages the sources of rule `id` on `node` have received.
async fn received(node: &TestNode, id: &str) -> u64 {
    let (_, s) = node.get(&format!("/v1/rules/{id}/status")).await;
    s["operators"]
        .as_array()
        .map(|ops| {
            ops.iter()
                .filter(|o| o["name"].as_str().is_some_and(|n| n.starts_with("source")))
                .filter_map(|o| o["health"]["messages"].as_u64())
                .sum()
        })
        .unwrap_or(0)
}

/// The rows a stream's subscribers got from one or more nodes, as JSON text without the
/// readiness probes.
struct Rows {
    from: Vec<tokio::sync::mpsc::Receiver<bytes::Bytes>>,
    got: Vec<String>,
}

impl Rows {
    async fn subscribe(nodes: &[&TestNode], topic: &str) -> Rows {
        let mut from = Vec::new();
        for n in nodes {
            from.push(mqtt_subscribe(n.mqtt_port(), topic).await);
        }
        Rows {
            from,
            got: Vec::new(),
        }
    }

    /// Everything received so far, sorted.
    fn now(&mut self) -> Vec<String> {
        for rx in &mut self.from {
            while let Ok(b) = rx.try_recv() {
                let row: Value = serde_json::from_slice(&b).expect("JSON rows");
                if row["k"] != "probe" {
                    self.got.push(row.to_string());
                }
            }
        }
        self.got.sort();
        self.got.clone()
    }
}

async fn move_to(pair: &Pair, ids: &[String], to: &str) {
    let moves = ids.iter().map(|id| async move {
        let path = format!("/v1/rules/{id}/move");
        pair.plane.post(&path, json!({"node": to})).await
    });
    for (id, (s, report)) in ids.iter().zip(futures::future::join_all(moves).await) {
        assert_eq!(s, 200, "move of {id} to {to}: {report}");
    }
}

/// Runs the comparison on one broker: a fixed and a roaming rule per guarantee.
async fn moved_rules_match_fixed_ones(name: &str, mut broker: Broker) {
    let seed = std::env::var("WEIR_MOVES_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("{name}: WEIR_MOVES_SEED={seed}");
    let mut rng = Rng(seed);
    // Node `a` serves the control plane, node `b` joined it.
    let pair = Pair::start(name, ("a", "core"), ("b", "edge")).await;
    let mut fixed = Vec::new();
    let mut roams = Vec::new();
    for g in broker.guarantees {
        for (id, node) in [(format!("fixed_{g}"), "a"), (format!("roams_{g}"), "b")] {
            let mut source = broker.source.clone();
            if source.contains("'mqtt'") {
                source.push_str(&format!(", client_id = '{}'", unique(&id)));
            }
            let body = json!({
                "id": id,
                "sql": rule_sql(&id, &source),
                "node": node,
                "options": {"delivery": g, "checkpoint_interval": "300ms"},
            });
            let (s, v) = pair.plane.post("/v1/rules", body).await;
            assert_eq!(s, 201, "{id}: {v}");
            if node == "a" {
                fixed.push(id);
            } else {
                roams.push(id);
            }
        }
    }
    let mut outputs = Vec::new();
    for g in broker.guarantees {
        for out in ["win", "pat"] {
            let fixed = Rows::subscribe(&[&pair.plane], &format!("{out}_fixed_{g}")).await;
            let roams =
                Rows::subscribe(&[&pair.plane, &pair.joined], &format!("{out}_roams_{g}")).await;
            outputs.push((*g, out, fixed, roams));
        }
    }
    // Every source reads the broker before the measured events go out.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        broker
            .publisher
            .publish(json!({"k": "probe", "ts": BASE - 86_400_000, "v": 0}).to_string())
            .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut ready = true;
        for id in &fixed {
            ready &= received(&pair.plane, id).await > 0;
        }
        for id in &roams {
            ready &= received(&pair.joined, id).await > 0;
        }
        if ready {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: the rules never read the broker"
        );
    }

    // Odd rounds end right before the event that closes a window (its watermark passes the
    // window's end: ts = end + 500 ms, every 50th event from the 25th); even rounds end
    // anywhere, and the move happens while their events are being published.
    let mut at = "b";
    let mut next = 0;
    for round in 0..MOVES {
        let end = if round % 2 == 1 {
            (next + CHUNK / 2).next_multiple_of(50) + 25
        } else {
            next + CHUNK / 2 + rng.below(CHUNK as u64) as usize
        };
        at = if at == "a" { "b" } else { "a" };
        if round % 2 == 1 {
            for i in next..end {
                broker.publisher.publish(event(i).to_string()).await;
            }
            // The rule has taken the window's last events, not yet the one that closes it.
            tokio::time::sleep(Duration::from_millis(100)).await;
            move_to(&pair, &roams, at).await;
        } else {
            let moment = next + rng.below((end - next) as u64) as usize;
            for i in next..moment {
                broker.publisher.publish(event(i).to_string()).await;
            }
            let moving = move_to(&pair, &roams, at);
            let publishing = async {
                for i in moment..end {
                    broker.publisher.publish(event(i).to_string()).await;
                }
            };
            tokio::join!(moving, publishing);
        }
        next = end;
    }
    // The rest, then far later events for every key: every window closes, every match ends.
    let last = next + CHUNK;
    for i in next..last {
        broker.publisher.publish(event(i).to_string()).await;
    }
    for (n, k) in ["a", "b", "c"].iter().enumerate() {
        let ts = BASE + last as i64 * STEP + 10_000 + n as i64;
        broker
            .publisher
            .publish(json!({"k": k, "ts": ts, "v": 0}).to_string())
            .await;
    }

    let windows = (last as i64 * STEP / 1000) as usize * 3;
    for (g, out, fixed, roams) in &mut outputs {
        {
            let deadline = Instant::now() + Duration::from_secs(30);
            let (expected, got) = loop {
                let (expected, got) = (fixed.now(), roams.now());
                let complete = *out == "pat" || expected.len() >= windows;
                if (complete && expected == got) || Instant::now() > deadline {
                    break (expected, got);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            assert!(
                expected.len() >= if *out == "win" { windows } else { 20 },
                "{name} {g}: the rule that stayed emitted {} rows on {out}",
                expected.len()
            );
            // Rows as a multiset: each row's count without moves minus its count with them.
            let mut diff = std::collections::BTreeMap::<&str, i64>::new();
            for e in &expected {
                *diff.entry(e).or_default() += 1;
            }
            for r in &got {
                *diff.entry(r).or_default() -= 1;
            }
            let missing: Vec<_> = diff.iter().filter(|d| *d.1 > 0).collect();
            let doubled: Vec<_> = diff.iter().filter(|d| *d.1 < 0).collect();
            assert!(
                missing.is_empty() && doubled.is_empty(),
                "{name} {g} {out} (seed {seed}): {} rows after {MOVES} moves, {} without; missing (times) {missing:?}; extra (times) {doubled:?}",
                got.len(),
                expected.len()
            );
            eprintln!(
                "{name} {g} {out}: {} rows, the same after {MOVES} moves",
                got.len()
            );
        }
    }
    pair.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_moved_over_rabbitmq_emit_what_unmoved_ones_emit() {
    moved_rules_match_fixed_ones("rabbitmq", rabbitmq().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_moved_over_mqtt_emit_what_unmoved_ones_emit() {
    moved_rules_match_fixed_ones("mqtt", mosquitto().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_moved_over_jetstream_emit_what_unmoved_ones_emit() {
    moved_rules_match_fixed_ones("jetstream", jetstream().await).await;
}
