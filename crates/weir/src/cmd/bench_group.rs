//! `weir bench group`: a core group on Kafka. A loader node writes generated readings through
//! weir's own Kafka sink (keyed by sensor) into a partitioned topic; then one, then two member
//! nodes (in this process) run a group rule over it — a per-sensor 1 s window — and the read
//! rate between 10 % and 90 % of the topic is measured. With two members, one then leaves and
//! the time until the other owns every partition, restored from the changelog and checkpointed
//! again, is the handover time.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use weir_node::registry::RuleOptions;

use super::bench_node::{ingest, start};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// A broker for the run: the one given, or a `tansu` of its own (in memory).
struct Broker {
    brokers: String,
    child: Option<std::process::Child>,
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

async fn broker(given: Option<String>) -> Result<Broker, String> {
    if let Some(brokers) = given {
        return Ok(Broker {
            brokers,
            child: None,
        });
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let url = format!("tcp://127.0.0.1:{port}");
    let child = std::process::Command::new("tansu")
        .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
        .args(["--storage-engine", "memory://tansu/", "--silent"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| {
            format!("no --brokers given and tansu did not start ({e}): cargo install tansu --features dynostore")
        })?;
    let b = Broker {
        brokers: format!("127.0.0.1:{port}"),
        child: Some(child),
    };
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(&b.brokers).await.is_ok() {
            return Ok(b);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err("tansu did not listen within 10 s".into())
}

/// Events the rule `id` read on `node` so far (a group rule counts what its tasks took).
fn read(node: &weir_node::Running, id: &str) -> u64 {
    node.node
        .rule_metrics()
        .iter()
        .filter(|(r, _)| r == id)
        .flat_map(|(_, m)| m.sources.iter())
        .map(|s| s.events.load(Ordering::Relaxed))
        .sum()
}

/// Writes `events` readings of 1000 sensors to `topic` through a node's Kafka sink.
async fn load(
    dir: &std::path::Path,
    brokers: &str,
    topic: &str,
    partitions: u32,
    events: usize,
) -> Result<(), String> {
    let loader = start(dir, "loader", None).await?;
    let sql = format!(
        "CREATE STREAM readings (sensor BIGINT, ts BIGINT, v BIGINT);
         CREATE STREAM out WITH (connector = 'kafka', url = 'kafka://{brokers}', topic = '{topic}', partitions = '{partitions}', key = 'sensor');
         INSERT INTO out SELECT * FROM readings;"
    );
    loader
        .node
        .install_rule("load", &sql, RuleOptions::default(), None)
        .await
        .map_err(|e| e.to_string())?;
    let reading = |i: usize| serde_json::json!({"sensor": i % 1000, "ts": 1_700_000_000_000i64 + (i / 1000) as i64 * 10, "v": i % 13});
    // The sink confirms what Kafka took; stay within a few batches of it.
    let behind = |posted: usize| (posted as u64).saturating_sub(sent(&loader)) > 20_000;
    ingest(
        &loader,
        "readings",
        events,
        "writing the topic",
        reading,
        behind,
    )
    .await?;
    while sent(&loader) < events as u64 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    loader.stop().await;
    Ok(())
}

/// Results the loader's Kafka sink has had confirmed.
fn sent(loader: &weir_node::Running) -> u64 {
    loader
        .node
        .rule_metrics()
        .iter()
        .flat_map(|(_, m)| m.sinks.iter())
        .map(|s| s.health.messages.load(Ordering::Relaxed))
        .sum()
}

/// One measurement: `members` nodes read the topic; the read rate, and with two members the
/// handover time after one leaves.
async fn measure(
    dir: &std::path::Path,
    brokers: &str,
    topic: &str,
    (partitions, events): (u32, usize),
    members: usize,
) -> Result<(f64, Option<f64>), String> {
    // Its own rule id, so its own consumer group and changelog: it reads the topic from the start.
    let id = format!("bench-{topic}-{members}");
    let sql = format!(
        "CREATE STREAM src (sensor BIGINT, ts BIGINT, v BIGINT) WITH (connector = 'kafka', url = 'kafka://{brokers}', topic = '{topic}', timestamp = 'ts');
         INSERT INTO per_second SELECT sensor, window_start, count(*) AS n, sum(v) AS total FROM src GROUP BY sensor, TUMBLE(ts, INTERVAL '1' SECOND);"
    );
    let options: RuleOptions = serde_json::from_value(serde_json::json!({
        "group": true, "changelog": "nats://127.0.0.1:4222", "checkpoint_interval": "500ms"
    }))
    .map_err(|e| e.to_string())?;
    let mut nodes = Vec::new();
    for m in 0..members {
        let n = start(dir, &format!("member-{m}"), Some(1)).await?;
        n.node
            .install_rule(&id, &sql, options.clone(), None)
            .await
            .map_err(|e| e.to_string())?;
        nodes.push(n);
    }
    let total = |nodes: &[weir_node::Running]| nodes.iter().map(|n| read(n, &id)).sum::<u64>();
    let (mut at10, mut at90) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(600);
    while at90.is_none() {
        let n = total(&nodes) as f64 / events as f64;
        if n >= 0.1 && at10.is_none() {
            at10 = Some(Instant::now());
        }
        if n >= 0.9 {
            at90 = Some(Instant::now());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{members} member(s) read {:.0} % in 10 minutes",
                n * 100.0
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = at90
        .zip(at10)
        .map_or(0.0, |(b, a)| b.duration_since(a).as_secs_f64());
    let rate = 0.8 * events as f64 / secs.max(1e-9);
    let mut handover = None;
    if members == 2 {
        let leaving = nodes.pop().ok_or("two members")?;
        let started = Instant::now();
        leaving.stop().await;
        let stay = &nodes[0];
        loop {
            let status = stay.node.status(&id).await.map_err(|e| e.to_string())?;
            if status.checkpoint.positions.len() == partitions as usize {
                break;
            }
            if started.elapsed() > Duration::from_secs(120) {
                return Err(
                    "the remaining member did not take every partition in 2 minutes".into(),
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        handover = Some(started.elapsed().as_secs_f64());
    }
    for n in nodes {
        n.stop().await;
    }
    Ok((rate, handover))
}

/// Runs the group benchmark `runs` times; prints medians.
pub fn run(
    brokers: Option<String>,
    partitions: u32,
    events: usize,
    runs: usize,
) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let broker = broker(brokers).await?;
        let dir = std::env::temp_dir().join(format!("weir-bench-group-{}", std::process::id()));
        let (mut one, mut two, mut handovers) = (Vec::new(), Vec::new(), Vec::new());
        for r in 0..runs {
            let topic = format!("bench_group_{}_{r}", std::process::id());
            let _ = std::fs::remove_dir_all(&dir);
            load(&dir, &broker.brokers, &topic, partitions, events).await?;
            for members in [1, 2] {
                eprint!("\rrun {}/{runs}: {members} member(s) reading", r + 1);
                let _ = std::fs::remove_dir_all(dir.join("member-0"));
                let _ = std::fs::remove_dir_all(dir.join("member-1"));
                let (rate, handover) =
                    measure(&dir, &broker.brokers, &topic, (partitions, events), members).await?;
                match members {
                    1 => one.push(rate),
                    _ => two.push(rate),
                }
                handovers.extend(handover);
            }
        }
        eprint!("\r\x1b[K");
        let (a, b) = (median(one), median(two));
        println!(
            "group: {events} events on {partitions} partitions, median of {runs}: 1 member {a:.0} events/s, 2 members {b:.0} events/s (ratio {:.2}); a member leaving: the other owns every partition again, restored and checkpointed, after {:.2} s",
            b / a,
            median(handovers)
        );
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    })
}
