//! `weir bench move`: how long a rule processes nothing while it moves between two nodes, for
//! a given amount of keyed state. Two nodes run in this process, each with its own data
//! directory and REST API; a rule keeping one entry per key (`changed(v) OVER (PARTITION BY
//! k)`) is fed that many keys through HTTP ingest, then moved back and forth through the same
//! path `POST /v1/rules/{id}/move` takes: stop at a checkpoint, pack, send, unpack, start.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use weir_node::registry::RuleOptions;
use weir_node::relocation::{move_rule, MoveReport, MoveRequest};

use super::bench_node::{ingest, median, start, start_joined, wait_joined};

const RULE: &str = "CREATE STREAM keyed (k BIGINT, v BIGINT) WITH (connector = 'nats', url = 'nats://127.0.0.1:4222', subject = 'weir.bench.move');
INSERT INTO key_changes SELECT k, v FROM keyed WHERE changed(v) OVER (PARTITION BY k);";

/// Feeds `keys` keys to the rule on `node` through HTTP ingest and waits until it read them.
async fn load(node: &weir_node::Running, keys: usize) -> Result<(), String> {
    let key = |k: usize| serde_json::json!({"k": k, "v": 1});
    ingest(node, "keyed", keys, "loading state", key, |_| false).await?;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let read: u64 = node
            .node
            .rule_metrics()
            .iter()
            .flat_map(|(_, m)| m.sources.iter())
            .map(|s| s.events.load(Ordering::Relaxed))
            .sum();
        if read >= keys as u64 {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("the rule read {read} of {keys} keys in 10 minutes"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Moves the rule between two fresh nodes `runs` times for each state size; prints medians.
pub fn run(keys: &[usize], runs: usize) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        for &n in keys {
            let dir = std::env::temp_dir().join(format!("weir-bench-move-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            // b joins a's control plane: a move goes to a node the control plane lists.
            let a = start(&dir, "bench-a", None).await?;
            let b = start_joined(&dir, "bench-b", &format!("http://{}", a.http)).await?;
            let nodes = [a, b];
            wait_joined(&nodes[0], 2).await?;
            nodes[0]
                .node
                .install_rule("keyed", RULE, RuleOptions::default(), None)
                .await
                .map_err(|e| e.to_string())?;
            load(&nodes[0], n).await?;
            let mut reports: Vec<MoveReport> = Vec::new();
            for r in 0..runs * 2 {
                let (from, to) = (&nodes[r % 2], &nodes[(r + 1) % 2]);
                eprint!("\r{n} keys: move {}/{}", r + 1, runs * 2);
                let req = MoveRequest {
                    node: to.node.name.get().cloned().unwrap_or_default(),
                };
                let report = move_rule(&from.node, "keyed", req)
                    .await
                    .map_err(|e| e.to_string())?;
                let status = to.node.status("keyed").await.map_err(|e| e.to_string())?;
                if status.checkpoint.restored_from.is_none() {
                    return Err(format!("the moved rule did not restore: {status:?}"));
                }
                reports.push(report);
            }
            eprint!("\r\x1b[K");
            let of = |f: fn(&MoveReport) -> f64| median(reports.iter().map(f).collect());
            println!(
                "move: {n} keys, median of {} moves: paused {:.0} ms (last checkpoint and packing {:.0} ms, send, unpack and start {:.0} ms), package {:.1} MB",
                reports.len(),
                of(|r| r.paused_ms),
                of(|r| r.stop_ms),
                of(|r| r.paused_ms - r.stop_ms),
                of(|r| r.package_bytes as f64) / 1e6,
            );
            for node in nodes {
                node.stop().await;
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
        Ok(())
    })
}
