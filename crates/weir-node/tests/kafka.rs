//! Kafka through a node, against a Kafka-protocol broker of the test's own (tansu, in memory):
//! a partitioned source read exactly once across a restart, and a keyed sink.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::Message;
use serde_json::{json, Value};

const BASE: i64 = 1_700_000_000_000;

fn event(i: i64) -> Value {
    json!({"sensor": i % 5, "ts": BASE + i * 10, "v": (i * 7) % 11})
}

/// Reads `topic` from the start until `n` different messages came (an at-least-once sink may
/// repeat some) or 30 s passed: (key, payload), repeats included.
async fn consume(brokers: &str, topic: &str, n: usize) -> Vec<(String, Value)> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("reader"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut out = Vec::new();
    let mut different = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while different.len() < n && Instant::now() < deadline {
        if let Ok(Ok(m)) = tokio::time::timeout(Duration::from_secs(1), consumer.recv()).await {
            let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
            different.insert(m.payload().unwrap().to_vec());
            out.push((key, serde_json::from_slice(m.payload().unwrap()).unwrap()));
        }
    }
    out
}

/// Whether `group` has committed every partition of `topic` up to its end.
async fn stored_all(brokers: &str, topic: &str, group: &str) -> bool {
    let (brokers, topic, group) = (brokers.to_owned(), topic.to_owned(), group.to_owned());
    tokio::task::spawn_blocking(move || {
        let c: rdkafka::consumer::BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", &group)
            .create()
            .unwrap();
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in 0..3 {
            tpl.add_partition(&topic, p);
        }
        let Ok(committed) = c.committed_offsets(tpl, Duration::from_secs(5)) else {
            return false;
        };
        (0..3).all(|p| {
            let high = c
                .fetch_watermarks(&topic, p, Duration::from_secs(5))
                .map_or(i64::MAX, |w| w.1);
            let done = committed
                .find_partition(&topic, p)
                .and_then(|e| match e.offset() {
                    rdkafka::Offset::Offset(o) => Some(o),
                    _ => None,
                })
                .unwrap_or(0);
            done >= high
        })
    })
    .await
    .unwrap()
}

async fn logged(node: &TestNode, stream: &str) -> Vec<Value> {
    let (_, page) = node
        .get(&format!("/v1/streams/{stream}/log?limit=10000"))
        .await;
    page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_kafka_source_is_read_exactly_once_across_a_restart_and_a_keyed_sink_writes_kafka(
) {
    let kafka = Tansu::start().await;
    let b = &kafka.brokers;
    let dir = data_dir("kafka");
    let (t_in, t_out) = (unique("k_in"), unique("k_out"));
    let src = format!(
        "CREATE STREAM src (sensor BIGINT, ts BIGINT, v BIGINT) WITH (connector = 'kafka', url = 'kafka://{b}', topic = '{t_in}', partitions = '3', timestamp = 'ts', watermark = '1 hour');"
    );
    let counts = format!(
        "{src} INSERT INTO counts SELECT sensor, window_start, count(*) AS n, sum(v) AS total FROM src GROUP BY sensor, TUMBLE(ts, INTERVAL '1' SECOND);"
    );
    let forward = format!(
        "{src} CREATE STREAM high WITH (connector = 'kafka', url = 'kafka://{b}', topic = '{t_out}', partitions = '2', key = 'sensor');
         INSERT INTO high SELECT sensor, ts, v FROM src WHERE v > 8;"
    );
    let node = TestNode::start(&dir).await;
    for (id, sql, delivery) in [
        ("counts", &counts, "exactly_once"),
        ("forward", &forward, "at_least_once"),
    ] {
        let options = json!({"delivery": delivery, "checkpoint_interval": "200ms"});
        let (s, v) = node
            .post(
                "/v1/rules",
                json!({"id": id, "sql": sql, "options": options}),
            )
            .await;
        assert_eq!(s, 201, "{v}");
    }
    produce(
        b,
        &t_in,
        "sensor",
        &(0..1500).map(event).collect::<Vec<_>>(),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    node.stop().await;
    let node = TestNode::start(&dir).await;
    produce(
        b,
        &t_in,
        "sensor",
        &(1500..3000).map(event).collect::<Vec<_>>(),
    )
    .await;
    // Every record in the rule's log before the ones that close the windows: the rule commits
    // to its consumer group what it has stored.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !stored_all(b, &t_in, "weir-counts-src").await {
        assert!(
            Instant::now() < deadline,
            "the rule did not store every record"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let closing: Vec<Value> = (0..5)
        .map(|s| json!({"sensor": s, "ts": BASE + 10_000_000, "v": 0}))
        .collect();
    produce(b, &t_in, "sensor", &closing).await;

    let expected = windows(&(0..3000).map(event).collect::<Vec<_>>());
    let deadline = Instant::now() + Duration::from_secs(30);
    let got = loop {
        let rows = logged(&node, "counts").await;
        if rows.len() >= expected.len() || Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let got: BTreeMap<(i64, i64), (i64, i64)> = got
        .iter()
        .map(|r| {
            let n = |k: &str| r[k].as_i64().unwrap();
            ((n("sensor"), n("window_start")), (n("n"), n("total")))
        })
        .collect();
    assert_eq!(got.len(), expected.len(), "one row per window, none twice");
    assert_eq!(
        got, expected,
        "every record counted once across the restart"
    );

    let high: Vec<i64> = (0..3000).filter(|i| (i * 7) % 11 > 8).collect();
    let out = consume(b, &t_out, high.len()).await;
    let mut seen: Vec<i64> = out
        .iter()
        .map(|(key, v)| {
            assert_eq!(key, &v["sensor"].to_string(), "keyed by sensor");
            (v["ts"].as_i64().unwrap() - BASE) / 10
        })
        .collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen, high, "every result reached Kafka");
    node.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}
