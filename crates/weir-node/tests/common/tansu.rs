//! A Kafka-protocol broker for tests and a producer for it (also used by the `weir` crate's
//! process tests).

use std::time::Duration;

/// A Kafka-protocol broker of the test's own: `tansu` on a free port, keeping everything in
/// memory, killed when dropped. `.ci/services.sh` installs tansu when it is missing.
pub struct Tansu {
    child: std::process::Child,
    pub brokers: String,
}

impl Tansu {
    pub async fn start() -> Tansu {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("tcp://127.0.0.1:{port}");
        let bin = std::env::var("WEIR_TANSU").unwrap_or_else(|_| "tansu".to_owned());
        let child = std::process::Command::new(&bin)
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/", "--silent"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{bin} (the Kafka-protocol broker of the tests) did not start: {e}; run .ci/services.sh, which installs it")
            });
        let tansu = Tansu {
            child,
            brokers: format!("127.0.0.1:{port}"),
        };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(&tansu.brokers).await.is_ok() {
                return tansu;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("tansu did not listen on {} within 10 s", tansu.brokers);
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends JSON events keyed by their `key` field, all in flight at once (awaited one by one,
/// each would wait out librdkafka's linger). One record per batch: tansu 0.6 answers a fetch
/// from an offset inside a stored batch with the batches after it, skipping the rest of that
/// batch, so a reader resuming mid-batch (a restarted rule, a partition's next owner) would
/// miss records that Kafka itself would serve.
pub async fn produce(brokers: &str, topic: &str, key: &str, events: &[serde_json::Value]) {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("batch.num.messages", "1")
        .create()
        .unwrap();
    let sends: Vec<_> = events
        .iter()
        .map(|e| {
            let (k, payload) = (e[key].to_string(), e.to_string());
            let record = FutureRecord::to(topic).key(&k).payload(&payload);
            producer.send_result(record).map_err(|(e, _)| e).unwrap()
        })
        .collect();
    for delivery in sends {
        delivery.await.unwrap().unwrap();
    }
}

/// What the Kafka tests' rule computes, computed plainly: per sensor and 1 s tumbling window
/// (`window_start`), the count and the sum of `v`.
pub fn windows(events: &[serde_json::Value]) -> std::collections::BTreeMap<(i64, i64), (i64, i64)> {
    let mut out = std::collections::BTreeMap::new();
    for e in events {
        let at = e["ts"].as_i64().unwrap() / 1000 * 1000;
        let w: &mut (i64, i64) = out.entry((e["sensor"].as_i64().unwrap(), at)).or_default();
        w.0 += 1;
        w.1 += e["v"].as_i64().unwrap();
    }
    out
}
