//! Nodes and the control plane (seed paper 002's registry of worker nodes). Every node reports
//! itself — name, role, address, load, health — to the control plane it joined, once per
//! heartbeat; a node that joined none is its own control plane. The control plane lists the
//! nodes at `/v1/nodes`, marks one lost when its reports stop, and forwards rule installations
//! to the node they name.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::node::Node;

/// What a node says about itself in a heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeReport {
    /// The node's name, unique in its control plane.
    pub name: String,
    /// `edge` or `core`.
    pub role: String,
    /// Where its REST API answers, as `http://host:port`.
    pub address: String,
    /// How busy it is.
    pub load: Load,
    /// `ok`, or what is wrong (a rule that failed, a connector that is down).
    pub health: String,
    /// The rules installed on the node, so the control plane can place them elsewhere when
    /// the node is lost or overloaded.
    #[serde(default)]
    pub hosted: Vec<Hosted>,
}

/// A rule as its node reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hosted {
    /// The rule's id.
    pub id: String,
    /// Its text.
    pub sql: String,
    /// Its options.
    pub options: crate::registry::RuleOptions,
    /// Whether it runs.
    pub running: bool,
    /// Events the rule read per second since the previous report.
    pub events_per_s: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
/// A node's load in a heartbeat.
pub struct Load {
    /// Share of one core the process used since the previous report.
    pub cpu_percent: f64,
    /// The process's resident memory.
    pub memory_bytes: u64,
    /// Rules installed.
    pub rules: usize,
    /// Events the node's rules read per second since the previous report.
    pub events_per_s: f64,
    /// Input waiting for the node's rules: durable log entries beyond their positions and
    /// payloads queued for them.
    #[serde(default)]
    pub input_lag: u64,
}

/// A node as the control plane sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Member {
    #[serde(flatten)]
    /// What the node last said.
    pub report: NodeReport,
    /// `up`, or `lost` once no report came for `lost_after`.
    pub state: String,
    /// How long ago it said it.
    pub last_seen_ms_ago: u64,
}

/// The control plane's registry of nodes.
pub struct Members {
    nodes: Mutex<BTreeMap<String, (NodeReport, Instant)>>,
    lost_after: Duration,
}

impl Members {
    /// A registry that calls a node lost after `lost_after` without a report.
    pub fn new(lost_after: Duration) -> Members {
        Members {
            nodes: Mutex::new(BTreeMap::new()),
            lost_after,
        }
    }

    /// Takes a node's report.
    pub fn heartbeat(&self, report: NodeReport) {
        let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        if !nodes.contains_key(&report.name) {
            tracing::info!(node = %report.name, role = %report.role, address = %report.address, "node joined");
        }
        nodes.insert(report.name.clone(), (report, Instant::now()));
    }

    /// Every node, up or lost.
    pub fn list(&self) -> Vec<Member> {
        let nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        nodes
            .values()
            .map(|(report, seen)| {
                let ago = seen.elapsed();
                Member {
                    report: report.clone(),
                    state: if ago > self.lost_after { "lost" } else { "up" }.to_owned(),
                    last_seen_ms_ago: ago.as_millis() as u64,
                }
            })
            .collect()
    }

    /// The node called `name`.
    pub fn get(&self, name: &str) -> Option<Member> {
        self.list().into_iter().find(|m| m.report.name == name)
    }
}

/// CPU ticks of this process (user + system), from /proc (Linux; 0 elsewhere).
fn cpu_ticks() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0;
    };
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    n(11) + n(12)
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?.to_owned();
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kb| kb * 1024)
}

/// Measures this node's load between two reports.
struct Sampler {
    at: Instant,
    ticks: u64,
    /// Events read so far, per running rule.
    events: BTreeMap<String, u64>,
}

impl Sampler {
    fn new(node: &Node) -> Sampler {
        Sampler {
            at: Instant::now(),
            ticks: cpu_ticks(),
            events: events_read(node),
        }
    }

    async fn report(&mut self, node: &Node, name: &str, address: &str) -> NodeReport {
        let (ticks, events) = (cpu_ticks(), events_read(node));
        let secs = self.at.elapsed().as_secs_f64().max(1e-3);
        // Linux counts CPU time in ticks of 1/100 s.
        let cpu_percent = (ticks.saturating_sub(self.ticks)) as f64 / secs;
        let rate = |id: &str| {
            let before = self.events.get(id).copied().unwrap_or(0);
            events
                .get(id)
                .map_or(0.0, |n| n.saturating_sub(before) as f64 / secs)
        };
        let rules = node.rules_as_written().await;
        let failed: Vec<&str> = rules
            .iter()
            .filter(|r| r.last_error.is_some())
            .map(|r| r.id.as_str())
            .collect();
        let health = match failed.is_empty() {
            true => "ok".to_owned(),
            false => format!("rules failed: {}", failed.join(", ")),
        };
        let count = rules.len();
        let hosted: Vec<Hosted> = rules
            .into_iter()
            .map(|r| Hosted {
                events_per_s: rate(&r.id),
                running: r.state == "RUNNING",
                id: r.id,
                sql: r.sql,
                options: r.options,
            })
            .collect();
        let events_per_s = hosted.iter().map(|h| h.events_per_s).sum();
        let input_lag = node
            .rule_metrics()
            .iter()
            .flat_map(|(_, m)| m.sources.iter())
            .map(|s| s.backlog.load(std::sync::atomic::Ordering::Relaxed))
            .sum();
        *self = Sampler {
            at: Instant::now(),
            ticks,
            events,
        };
        NodeReport {
            name: name.to_owned(),
            role: node.config.runtime.clone(),
            address: address.to_owned(),
            load: Load {
                cpu_percent,
                memory_bytes: rss_bytes(),
                rules: count,
                events_per_s,
                input_lag,
            },
            health,
            hosted,
        }
    }
}

/// Events read by each running rule's sources so far.
fn events_read(node: &Node) -> BTreeMap<String, u64> {
    use std::sync::atomic::Ordering::Relaxed;
    node.rule_metrics()
        .into_iter()
        .map(|(id, m)| (id, m.sources.iter().map(|s| s.events.load(Relaxed)).sum()))
        .collect()
}

/// Reports this node to its control plane every heartbeat, until the task is dropped.
pub fn heartbeats(node: Arc<Node>, name: String, address: String) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let every = Duration::from_millis(node.config.heartbeat_ms);
        let http = crate::relocation::http(&node);
        let timeout = every.max(Duration::from_secs(1));
        let mut sampler = Sampler::new(&node);
        let mut tick = tokio::time::interval(every);
        let mut failing = false;
        loop {
            tick.tick().await;
            let report = sampler.report(&node, &name, &address).await;
            let Some(join) = &node.config.join else {
                node.members.heartbeat(report);
                continue;
            };
            let url = format!("{}/v1/nodes/heartbeat", join.trim_end_matches('/'));
            let sent = http.post(&url).timeout(timeout).json(&report).send().await;
            match sent.map(|r| r.error_for_status()) {
                Ok(Ok(_)) if failing => {
                    failing = false;
                    tracing::info!(control_plane = %join, "reporting to the control plane again");
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) | Err(e) => {
                    if !failing {
                        tracing::warn!(control_plane = %join, error = %e, "heartbeat not delivered");
                    }
                    failing = true;
                }
            }
        }
    })
}
