//! `weir bench rules`: what a rule costs on a node. Installs --rules rules that all read one
//! stream (each writing a topic of its own) on a node in this process, then reports the install
//! time, the resident memory and OS threads of the idle process before and after (per rule
//! above the node's base), and how long --events events posted to the stream take to reach
//! every rule: filter rules' outputs, or every keyed window rule's operators (`--query window`).

/// The rules installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Query {
    /// `SELECT sensor, temp FROM readings WHERE temp > 30`, each event a result.
    Filter,
    /// The average temperature per sensor over one-second tumbling windows of event time.
    Window,
}

impl Query {
    fn sql(self, i: usize) -> String {
        match self {
            Query::Filter => format!(
                "CREATE STREAM readings (sensor STRING, temp DOUBLE);
                 INSERT INTO hot_{i} SELECT sensor, temp FROM readings WHERE temp > 30;"
            ),
            Query::Window => format!(
                "CREATE STREAM readings (sensor STRING, temp DOUBLE, ts BIGINT)
                   WITH (timestamp = 'ts', watermark = '1 second');
                 INSERT INTO avg_{i} SELECT sensor, avg(temp) AS temp, count(*) AS n
                 FROM readings GROUP BY sensor, TUMBLE(ts, INTERVAL '1' SECOND);"
            ),
        }
    }

    /// How many of the run's events have reached a rule: its results (filters), or the events
    /// its operators took in (windows, whose results are one per sensor and second).
    fn reached(self, m: &weir_node::rule::RuleMetrics) -> u64 {
        match self {
            Query::Filter => m
                .sinks
                .iter()
                .map(|s| s.events.load(Ordering::Relaxed))
                .sum(),
            Query::Window => m
                .engine
                .iter()
                .map(|r| r.events_in.load(Ordering::Relaxed))
                .sum(),
        }
    }
}

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use weir_node::registry::RuleOptions;

use super::bench_node::{config, median};

/// Resident memory (bytes) and OS threads of this process, from /proc/self/status.
fn rss_and_threads() -> Result<(u64, u64), String> {
    let status = std::fs::read_to_string("/proc/self/status").map_err(|e| e.to_string())?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| format!("/proc/self/status has no {name}"))
    };
    Ok((field("VmRSS:")? * 1024, field("Threads:")?))
}

/// The figures of one run.
struct Figures {
    install_s: f64,
    base_rss: u64,
    base_threads: u64,
    rss: u64,
    threads: u64,
    reach_s: f64,
}

/// Each run in a process of its own (`child`), so one run's memory does not count in the next.
pub fn run(
    query: Query,
    rules: usize,
    events: usize,
    runs: usize,
    child: bool,
) -> Result<(), String> {
    if child {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let f = rt.block_on(one_run(query, rules, events))?;
        println!(
            "{}",
            serde_json::json!([
                f.install_s,
                f.base_rss,
                f.base_threads,
                f.rss,
                f.threads,
                f.reach_s
            ])
        );
        return Ok(());
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut all = Vec::new();
    for run in 0..runs {
        let out = std::process::Command::new(&exe)
            .args(["bench", "rules", "--child", "--rules", &rules.to_string()])
            .args(["--events", &events.to_string()])
            .args(["--query", &format!("{query:?}").to_lowercase()])
            .stderr(std::process::Stdio::inherit())
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!("run {} failed ({})", run + 1, out.status));
        }
        let line = String::from_utf8_lossy(&out.stdout);
        let v: Vec<f64> =
            serde_json::from_str(line.trim()).map_err(|e| format!("run {}: {e}", run + 1))?;
        let [install_s, base_rss, base_threads, rss, threads, reach_s] = v[..] else {
            return Err(format!("run {}: {line}", run + 1));
        };
        let f = Figures {
            install_s,
            base_rss: base_rss as u64,
            base_threads: base_threads as u64,
            rss: rss as u64,
            threads: threads as u64,
            reach_s,
        };
        println!(
            "run {}: install {:.1} s, idle RSS {:.1} MB → {:.1} MB ({:.1} KB per rule), threads {} → {}, {events} events reached every rule in {:.3} s",
            run + 1,
            f.install_s,
            f.base_rss as f64 / 1e6,
            f.rss as f64 / 1e6,
            per_rule_kb(&f, rules),
            f.base_threads,
            f.threads,
            f.reach_s
        );
        all.push(f);
    }
    let med = |g: fn(&Figures) -> f64| median(all.iter().map(g).collect());
    println!(
        "median of {runs}: {rules} rules installed in {:.1} s ({:.2} ms each); idle RSS base {:.1} MB, {:.1} KB per rule; threads {:.0} with no rules, {:.0} with {rules}; {events} events reached every rule in {:.3} s ({:.0} events/s through all rules)",
        med(|f| f.install_s),
        med(|f| f.install_s) * 1000.0 / rules.max(1) as f64,
        med(|f| f.base_rss as f64) / 1e6,
        median(all.iter().map(|f| per_rule_kb(f, rules)).collect()),
        med(|f| f.base_threads as f64),
        med(|f| f.threads as f64),
        med(|f| f.reach_s),
        (rules * events) as f64 / med(|f| f.reach_s),
    );
    Ok(())
}

fn per_rule_kb(f: &Figures, rules: usize) -> f64 {
    f.rss.saturating_sub(f.base_rss) as f64 / 1024.0 / rules.max(1) as f64
}

async fn one_run(query: Query, rules: usize, events: usize) -> Result<Figures, String> {
    let dir = std::env::temp_dir().join(format!("weir-bench-rules-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = weir_node::NodeConfig {
        max_rules: rules.max(1),
        ..config(&dir, "rules")
    };
    let running = weir_node::start(config).await.map_err(|e| e.to_string())?;
    let node = running.node.clone();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (base_rss, base_threads) = rss_and_threads()?;
    let bar = ProgressBar::new(rules as u64).with_style(
        ProgressStyle::with_template("installing {bar:40} {pos}/{len} ({per_sec})")
            .map_err(|e| e.to_string())?,
    );
    let began = Instant::now();
    for i in 0..rules {
        node.install_rule(
            &format!("f{i}"),
            &query.sql(i),
            RuleOptions::default(),
            None,
        )
        .await
        .map_err(|e| format!("rule f{i}: {e}"))?;
        bar.inc(1);
    }
    let install_s = began.elapsed().as_secs_f64();
    bar.finish_and_clear();
    // Idle: let start-up allocations settle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss, threads) = rss_and_threads()?;

    let batch: Vec<serde_json::Value> = (0..events)
        .map(|i| serde_json::json!({"sensor": format!("s{}", i % 100), "temp": 31.0 + (i % 10) as f64, "ts": 1_700_000_000_000_i64 + i as i64 * 10}))
        .collect();
    let url = format!("http://{}/v1/streams/readings/events", running.http);
    let metrics = node.rule_metrics();
    let began = Instant::now();
    reqwest::Client::new()
        .post(&url)
        .json(&batch)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| format!("ingest: {e}"))?;
    while metrics
        .iter()
        .any(|(_, m)| query.reached(m) < events as u64)
    {
        if began.elapsed() > Duration::from_secs(600) {
            return Err("the events did not reach every rule within 10 minutes".into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let reach_s = began.elapsed().as_secs_f64();
    running.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Figures {
        install_s,
        base_rss,
        base_threads,
        rss,
        threads,
        reach_s,
    })
}
