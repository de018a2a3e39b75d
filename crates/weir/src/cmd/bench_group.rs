//! `weir bench group`: a core group on Kafka or on JetStream. A loader node writes generated
//! readings through weir's own sink (keyed by sensor) into a partitioned topic or stream; then
//! one, then two member nodes (in this process) run a group rule over it — a per-sensor 1 s
//! window — and the read rate between 10 % and 90 % of the input is measured. With two members,
//! one then leaves and the time until the other owns every partition, restored from the
//! changelog and checkpointed again, is the handover time. On JetStream, a member is then also
//! killed: a `weir serve` process shares the group with a node here, gets SIGKILL, and the time
//! until the node here owns every partition again is the time to resume after a death.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use weir_node::registry::RuleOptions;

use super::bench_node::{free_port, ingest, median, start};

/// The log a run's group reads.
#[derive(Clone, Copy, PartialEq, clap::ValueEnum)]
pub enum LogKind {
    Kafka,
    Jetstream,
}

/// A broker for the run: the one given, or one of its own (tansu in memory; the NATS server
/// `.ci/services.sh` installs, on a free port).
struct Broker {
    kind: LogKind,
    /// Kafka bootstrap servers, or the NATS URL.
    address: String,
    child: Option<std::process::Child>,
}

impl Broker {
    /// The `WITH (...)` options of a stream on `topic`, keyed by sensor.
    fn stream(&self, topic: &str, partitions: u32) -> String {
        match self.kind {
            LogKind::Kafka => format!(
                "connector = 'kafka', url = 'kafka://{}', topic = '{topic}', partitions = '{partitions}', key = 'sensor'",
                self.address
            ),
            LogKind::Jetstream => format!(
                "connector = 'nats', url = '{}', topic = '{topic}', stream = '{}', partitions = '{partitions}', key = 'sensor'",
                self.address,
                topic.to_uppercase()
            ),
        }
    }

    /// Where group rules keep their changelog: a JetStream run's own server.
    fn changelog(&self) -> &str {
        match self.kind {
            LogKind::Kafka => "nats://127.0.0.1:4222",
            LogKind::Jetstream => &self.address,
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

async fn broker(
    kind: LogKind,
    given: Option<String>,
    dir: &std::path::Path,
) -> Result<Broker, String> {
    if let Some(address) = given {
        return Ok(Broker {
            kind,
            address,
            child: None,
        });
    }
    let port = free_port()?;
    let (mut command, address, hint) = match kind {
        LogKind::Kafka => {
            let url = format!("tcp://127.0.0.1:{port}");
            let mut c = std::process::Command::new("tansu");
            c.args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/", "--silent"]);
            (
                c,
                format!("127.0.0.1:{port}"),
                "cargo install tansu --features dynostore",
            )
        }
        LogKind::Jetstream => {
            let home = std::env::var("HOME").unwrap_or_default();
            let mut c = std::process::Command::new(format!(
                "{home}/.local/share/weir/nats-server/bin/nats-server"
            ));
            c.args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
                .arg(dir.join("nats"));
            (
                c,
                format!("nats://127.0.0.1:{port}"),
                "bash .ci/services.sh installs NATS 2.15",
            )
        }
    };
    let child = command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("no broker given and none started ({e}): {hint}"))?;
    let b = Broker {
        kind,
        address,
        child: Some(child),
    };
    let at = b.address.trim_start_matches("nats://").to_owned();
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(&at).await.is_ok() {
            return Ok(b);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("the broker did not listen on {at} within 10 s"))
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

/// Writes `events` readings of 1000 sensors to `topic` through a node's sink.
async fn load(
    dir: &std::path::Path,
    broker: &Broker,
    topic: &str,
    partitions: u32,
    events: usize,
) -> Result<(), String> {
    let loader = start(dir, "loader", None).await?;
    let sql = format!(
        "CREATE STREAM readings (sensor BIGINT, ts BIGINT, v BIGINT);
         CREATE STREAM out WITH ({});
         INSERT INTO out SELECT * FROM readings;",
        broker.stream(topic, partitions)
    );
    loader
        .node
        .install_rule("load", &sql, RuleOptions::default(), None)
        .await
        .map_err(|e| e.to_string())?;
    let reading = |i: usize| serde_json::json!({"sensor": i % 1000, "ts": 1_700_000_000_000i64 + (i / 1000) as i64 * 10, "v": i % 13});
    // The sink confirms what the broker took; stay within a few batches of it.
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

/// Results the loader's sink has had confirmed.
fn sent(loader: &weir_node::Running) -> u64 {
    loader
        .node
        .rule_metrics()
        .iter()
        .flat_map(|(_, m)| m.sinks.iter())
        .map(|s| s.health.messages.load(Ordering::Relaxed))
        .sum()
}

/// The group rule over `topic` and its options.
fn group_rule(broker: &Broker, topic: &str, partitions: u32) -> (String, serde_json::Value) {
    let sql = format!(
        "CREATE STREAM src (sensor BIGINT, ts BIGINT, v BIGINT) WITH ({}, timestamp = 'ts');
         INSERT INTO per_second SELECT sensor, window_start, count(*) AS n, sum(v) AS total FROM src GROUP BY sensor, TUMBLE(ts, INTERVAL '1' SECOND);",
        broker.stream(topic, partitions)
    );
    let options = serde_json::json!({
        "group": true, "changelog": broker.changelog(), "checkpoint_interval": "500ms"
    });
    (sql, options)
}

/// Partitions a node's copy of group rule `id` checkpoints.
async fn owned(node: &weir_node::Running, id: &str) -> Result<usize, String> {
    let status = node.node.status(id).await.map_err(|e| e.to_string())?;
    Ok(status.checkpoint.positions.len())
}

/// Waits up to 2 minutes until `node` owns every partition of group rule `id`; the time.
async fn owns_all(node: &weir_node::Running, id: &str, partitions: u32) -> Result<f64, String> {
    let started = Instant::now();
    while owned(node, id).await? < partitions as usize {
        if started.elapsed() > Duration::from_secs(120) {
            return Err("the remaining member did not take every partition in 2 minutes".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// One measurement: `members` nodes read the topic; the read rate, and with two members the
/// handover time after one leaves.
async fn measure(
    dir: &std::path::Path,
    broker: &Broker,
    topic: &str,
    (partitions, events): (u32, usize),
    members: usize,
) -> Result<(f64, Option<f64>), String> {
    // Its own rule id, so its own consumer group and changelog: it reads the topic from the start.
    let id = format!("bench-{topic}-{members}");
    let (sql, options) = group_rule(broker, topic, partitions);
    let options: RuleOptions = serde_json::from_value(options).map_err(|e| e.to_string())?;
    let mut nodes = Vec::new();
    for m in 0..members {
        nodes.push(start(dir, &format!("member-{m}"), Some(1)).await?);
    }
    // Installed on the started nodes at once, so that they join the group together.
    for n in &nodes {
        n.node
            .install_rule(&id, &sql, options.clone(), None)
            .await
            .map_err(|e| e.to_string())?;
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
        owns_all(&nodes[0], &id, partitions).await?;
        handover = Some(started.elapsed().as_secs_f64());
    }
    for n in nodes {
        n.stop().await;
    }
    Ok((rate, handover))
}

/// A JetStream member dies: a node here and a `weir serve` process join the group rule over
/// the loaded stream together; once the process holds partitions it gets SIGKILL. The time
/// until the node here owns every partition again, restored and checkpointed.
async fn failover(
    dir: &std::path::Path,
    broker: &Broker,
    topic: &str,
    partitions: u32,
) -> Result<f64, String> {
    let id = format!("bench-{topic}-failover");
    let (sql, options) = group_rule(broker, topic, partitions);
    let stay = start(dir, "member-0", Some(1)).await?;
    let port = free_port()?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut victim = std::process::Command::new(exe)
        .args([
            "serve", "--mqtt", "off", "--role", "core", "--name", "member-1",
        ])
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(dir.join("member-1"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let base = format!("http://127.0.0.1:{port}/v1/rules");
    let http = reqwest::Client::new();
    let body = serde_json::json!({"id": id, "sql": sql, "options": options});
    let deadline = Instant::now() + Duration::from_secs(60);
    // Until the process answers, then until it holds partitions of its own.
    loop {
        let installed = http.post(&base).json(&body).send().await;
        if installed.is_ok_and(|r| r.status().is_success()) {
            let options = serde_json::from_value(options).map_err(|e| e.to_string())?;
            stay.node
                .install_rule(&id, &sql, options, None)
                .await
                .map_err(|e| e.to_string())?;
            break;
        }
        if Instant::now() > deadline {
            let _ = victim.kill();
            return Err("the second member did not take the rule in a minute".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    loop {
        let status: serde_json::Value = match http.get(format!("{base}/{id}/status")).send().await {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(_) => serde_json::Value::Null,
        };
        if status["checkpoint"]["positions"]
            .as_object()
            .is_some_and(|p| !p.is_empty())
        {
            break;
        }
        if Instant::now() > deadline {
            let _ = victim.kill();
            return Err("the second member got no partition in a minute".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    victim.kill().map_err(|e| e.to_string())?;
    let _ = victim.wait();
    let resumed = owns_all(&stay, &id, partitions).await?;
    stay.stop().await;
    Ok(resumed)
}

/// Runs the group benchmark `runs` times; prints medians.
pub fn run(
    log: LogKind,
    address: Option<String>,
    partitions: u32,
    events: usize,
    runs: usize,
) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    // The nodes' logs, when RUST_LOG asks for them.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    rt.block_on(async move {
        let dir = std::env::temp_dir().join(format!("weir-bench-group-{}", std::process::id()));
        let broker = broker(log, address, &dir).await?;
        let (mut one, mut two, mut handovers, mut deaths) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for r in 0..runs {
            let topic = format!("bench_group_{}_{r}", std::process::id());
            for node in ["loader", "member-0", "member-1"] {
                let _ = std::fs::remove_dir_all(dir.join(node));
            }
            load(&dir, &broker, &topic, partitions, events).await?;
            for members in [1, 2] {
                eprint!("\rrun {}/{runs}: {members} member(s) reading", r + 1);
                let _ = std::fs::remove_dir_all(dir.join("member-0"));
                let _ = std::fs::remove_dir_all(dir.join("member-1"));
                let (rate, handover) =
                    measure(&dir, &broker, &topic, (partitions, events), members).await?;
                match members {
                    1 => one.push(rate),
                    _ => two.push(rate),
                }
                handovers.extend(handover);
            }
            if log == LogKind::Jetstream {
                eprint!("\rrun {}/{runs}: a member killed       ", r + 1);
                let _ = std::fs::remove_dir_all(dir.join("member-0"));
                let _ = std::fs::remove_dir_all(dir.join("member-1"));
                deaths.push(failover(&dir, &broker, &topic, partitions).await?);
            }
        }
        eprint!("\r\x1b[K");
        let (a, b) = (median(one), median(two));
        let name = match log {
            LogKind::Kafka => "Kafka",
            LogKind::Jetstream => "JetStream",
        };
        println!(
            "group on {name}: {events} events on {partitions} partitions, median of {runs}: 1 member {a:.0} events/s, 2 members {b:.0} events/s (ratio {:.2}); a member leaving: the other owns every partition again, restored and checkpointed, after {:.2} s",
            b / a,
            median(handovers)
        );
        if !deaths.is_empty() {
            println!(
                "a member killed (SIGKILL): the other owns every partition again after {:.2} s (median of {runs})",
                median(deaths)
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    })
}
