//! What the node benchmarks share: nodes in the benchmark's own process, feeding them through
//! HTTP ingest, free ports and medians.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use weir_node::NodeConfig;

/// The median of `v` (the upper one of an even count); 0 when empty.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// A TCP port free on loopback right now.
pub fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

/// A node on a free port with its data under `dir/name`; `workers` per keyed rule, or the
/// node default.
pub async fn start(
    dir: &std::path::Path,
    name: &str,
    workers: Option<usize>,
) -> Result<weir_node::Running, String> {
    let mut config = config(dir, name);
    if let Some(w) = workers {
        config.workers = w;
    }
    weir_node::start(config).await.map_err(|e| e.to_string())
}

/// A node like [`start`]'s with an MQTT endpoint on a free port, its settings changed by
/// `adjust`.
pub async fn start_with(
    dir: &std::path::Path,
    name: &str,
    adjust: impl FnOnce(NodeConfig) -> NodeConfig,
) -> Result<weir_node::Running, String> {
    let config = adjust(NodeConfig {
        mqtt_listen: Some(([127, 0, 0, 1], 0).into()),
        ..config(dir, name)
    });
    weir_node::start(config).await.map_err(|e| e.to_string())
}

/// A node like [`start`]'s that joins the control plane at `join`.
pub async fn start_joined(
    dir: &std::path::Path,
    name: &str,
    join: &str,
) -> Result<weir_node::Running, String> {
    let config = NodeConfig {
        join: Some(join.to_owned()),
        heartbeat_ms: 100,
        ..config(dir, name)
    };
    weir_node::start(config).await.map_err(|e| e.to_string())
}

/// The settings of a bench node named `name` with its data under `dir`.
pub fn config(dir: &std::path::Path, name: &str) -> NodeConfig {
    NodeConfig {
        name: Some(name.to_owned()),
        listen: ([127, 0, 0, 1], 0).into(),
        mqtt_listen: None,
        data_dir: dir.join(name),
        ..NodeConfig::default()
    }
}

/// Waits until the control plane `plane` lists `n` nodes up.
pub async fn wait_joined(plane: &weir_node::Running, n: usize) -> Result<(), String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while plane
        .node
        .members
        .list()
        .iter()
        .filter(|m| m.state == "up")
        .count()
        < n
    {
        if std::time::Instant::now() > deadline {
            return Err(format!("{n} nodes did not join within 10 s"));
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Posts `count` events made by `event` to `stream` on `node` in batches of 5000, with a
/// progress bar; after each batch, waits while `behind(sent so far)` says the node is behind.
pub async fn ingest(
    node: &weir_node::Running,
    stream: &str,
    count: usize,
    message: &'static str,
    event: impl Fn(usize) -> serde_json::Value,
    behind: impl Fn(usize) -> bool,
) -> Result<(), String> {
    let bar = ProgressBar::new(count as u64).with_style(
        ProgressStyle::with_template("{msg} {bar:40} {pos}/{len} ({per_sec})")
            .map_err(|e| e.to_string())?,
    );
    bar.set_message(message);
    let url = format!("http://{}/v1/streams/{stream}/events", node.http);
    let http = reqwest::Client::new();
    for from in (0..count).step_by(5000) {
        let to = (from + 5000).min(count);
        let batch: Vec<serde_json::Value> = (from..to).map(&event).collect();
        http.post(&url)
            .json(&batch)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| format!("ingest: {e}"))?;
        while behind(to) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        bar.set_position(to as u64);
    }
    bar.finish_and_clear();
    Ok(())
}
