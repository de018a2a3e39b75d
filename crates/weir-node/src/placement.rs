//! The control plane's placement policies, run every heartbeat on the node that serves it.
//!
//! - Self-healing: when a node is lost, each rule it reported with `"failover": RUNTIME` is
//!   installed on the least loaded up node of that runtime, where it starts from its changelog.
//!   Should the lost node come back, its own copy is deleted, since the rule runs elsewhere.
//! - Adaptive placement (with the node setting `offload_above`): an edge node over that load
//!   for three heartbeats moves its busiest `"adaptive": true` rule to the least loaded core
//!   node (a move with state, see [`crate::relocation`]); the rule goes back once its edge node
//!   stays under `return_below` for three heartbeats, counting the rule's own events/s when
//!   load is events/s.
//!
//! Every decision is kept with its reason and outcome, newest last, at `GET /v1/placements`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::cluster::{Hosted, Member};
use crate::node::Node;
use crate::relocation::{least_loaded, move_rule, MoveRequest};

/// Decisions kept for the API.
const KEPT: usize = 1000;
/// Heartbeats a load must stay over (or under) its threshold before a rule moves.
const SUSTAINED: u32 = 3;

/// One decision of a placement policy.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    /// When (epoch ms).
    pub at_ms: i64,
    /// The rule.
    pub rule: String,
    /// The node it left.
    pub from: String,
    /// The node it went to.
    pub to: String,
    /// `failover`, `offload`, `return` or `retire` (a returning node's stale copy deleted).
    pub action: &'static str,
    /// Why.
    pub reason: String,
    /// `done`, or what went wrong.
    pub outcome: String,
}

#[derive(Default)]
/// The newest decisions, at most 1,000.
pub struct Decisions(Mutex<VecDeque<Decision>>);

impl Decisions {
    fn record(&self, d: Decision) {
        tracing::info!(rule = %d.rule, from = %d.from, to = %d.to, action = d.action, reason = %d.reason, outcome = %d.outcome, "placement");
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if all.len() == KEPT {
            all.pop_front();
        }
        all.push_back(d);
    }

    /// The decisions kept, oldest first.
    pub fn list(&self) -> Vec<Decision> {
        let all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        all.iter().cloned().collect()
    }
}

/// What the policies remember between heartbeats.
#[derive(Default)]
struct Memory {
    /// Lost nodes whose rules were failed over: the rules and where they went.
    failed_over: BTreeMap<String, Vec<(String, String)>>,
    /// Consecutive heartbeats each edge node's load was over `offload_above`.
    hot: BTreeMap<String, u32>,
    /// Offloaded rules: their home edge node and how long it has been cool.
    away: BTreeMap<String, (String, u32)>,
}

/// Runs the policies every heartbeat, until the task is dropped.
pub fn spawn(node: Arc<Node>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(node.config.heartbeat_ms));
        let mut memory = Memory::default();
        loop {
            tick.tick().await;
            let members = node.members.list();
            heal(&node, &members, &mut memory).await;
            if node.config.offload_above.is_some() {
                adapt(&node, &members, &mut memory).await;
            }
        }
    })
}

fn now_ms() -> i64 {
    weir_core::Clock::now_ms(&weir_core::SystemClock)
}

fn install_body(h: &Hosted) -> serde_json::Value {
    serde_json::json!({"id": h.id, "sql": h.sql, "options": h.options})
}

async fn heal(node: &Node, members: &[Member], memory: &mut Memory) {
    for m in members {
        let name = &m.report.name;
        match (m.state.as_str(), memory.failed_over.contains_key(name)) {
            ("lost", false) => {
                let mut moved = Vec::new();
                for h in m.report.hosted.iter().filter(|h| h.running) {
                    let Some(runtime) = &h.options.failover else {
                        continue;
                    };
                    let reason =
                        format!("node {name} lost: no report for {} ms", m.last_seen_ms_ago);
                    let (to, outcome) = match least_loaded(node, runtime, Some(name)).await {
                        Ok(target) => {
                            let sent = crate::relocation::send(
                                node,
                                &target,
                                "/v1/rules",
                                &install_body(h),
                            )
                            .await;
                            let outcome = match sent {
                                Ok(r) if r.status().is_success() => {
                                    moved.push((h.id.clone(), target.report.name.clone()));
                                    "done".to_owned()
                                }
                                Ok(r) => format!("refused: {}", r.text().await.unwrap_or_default()),
                                Err(e) => e.to_string(),
                            };
                            (target.report.name, outcome)
                        }
                        Err(e) => (String::new(), e.to_string()),
                    };
                    node.placements.record(Decision {
                        at_ms: now_ms(),
                        rule: h.id.clone(),
                        from: name.clone(),
                        to,
                        action: "failover",
                        reason,
                        outcome,
                    });
                }
                memory.failed_over.insert(name.clone(), moved);
            }
            ("up", true) => {
                // Back: its copies of rules that now run elsewhere must not run twice.
                for (rule, to) in memory.failed_over.remove(name).unwrap_or_default() {
                    let url = format!("{}/v1/rules/{rule}", m.report.address);
                    // Only that node's copy: the request is not to be handed on.
                    let delete = crate::relocation::http(node)
                        .delete(&url)
                        .header(crate::relocation::RELAYED, "1");
                    let outcome = match delete.send().await {
                        Ok(r) if r.status().is_success() || r.status().as_u16() == 404 => {
                            "done".to_owned()
                        }
                        Ok(r) => format!("refused: {}", r.status()),
                        Err(e) => e.to_string(),
                    };
                    node.placements.record(Decision {
                        at_ms: now_ms(),
                        rule,
                        from: name.clone(),
                        to,
                        action: "retire",
                        reason: format!(
                            "node {name} is back; the rule runs where it failed over to"
                        ),
                        outcome,
                    });
                }
            }
            _ => {}
        }
    }
}

fn load(node: &Node, m: &Member) -> f64 {
    match node.config.load_metric.as_str() {
        "events_per_s" => m.report.load.events_per_s,
        _ => m.report.load.cpu_percent,
    }
}

async fn adapt(node: &Node, members: &[Member], memory: &mut Memory) {
    let above = node.config.offload_above.unwrap_or(f64::MAX);
    let below = node.config.return_below.unwrap_or(above / 2.0);
    let unit = node.config.load_metric.as_str();
    let up = |name: &str| {
        members
            .iter()
            .find(|m| m.state == "up" && m.report.name == name)
    };
    for m in members
        .iter()
        .filter(|m| m.state == "up" && m.report.role == "edge")
    {
        let name = &m.report.name;
        let l = load(node, m);
        let hot = memory.hot.entry(name.clone()).or_default();
        *hot = if l > above { *hot + 1 } else { 0 };
        if *hot < SUSTAINED {
            continue;
        }
        let busiest = m
            .report
            .hosted
            .iter()
            .filter(|h| h.running && h.options.adaptive && !memory.away.contains_key(&h.id))
            .max_by(|a, b| a.events_per_s.total_cmp(&b.events_per_s));
        let Some(rule) = busiest else { continue };
        *hot = 0;
        let reason = format!("{name}'s {unit} {l:.0} over {above} for {SUSTAINED} heartbeats");
        let (to, outcome) = relocate(node, &rule.id, "core", name).await;
        if outcome == "done" {
            memory.away.insert(rule.id.clone(), (name.clone(), 0));
        }
        node.placements.record(Decision {
            at_ms: now_ms(),
            rule: rule.id.clone(),
            from: name.clone(),
            to,
            action: "offload",
            reason,
            outcome,
        });
    }
    let away: Vec<(String, String)> = memory
        .away
        .iter()
        .map(|(rule, (home, _))| (rule.clone(), home.clone()))
        .collect();
    for (rule, home) in away {
        let Some(h) = up(&home) else { continue };
        // The rule's own events come back with it.
        let own = match unit {
            "events_per_s" => members
                .iter()
                .flat_map(|m| m.report.hosted.iter())
                .find(|x| x.id == rule)
                .map_or(0.0, |x| x.events_per_s),
            _ => 0.0,
        };
        let expected = load(node, h) + own;
        let cool = &mut memory.away.get_mut(&rule).expect("listed above").1;
        *cool = if expected < below { *cool + 1 } else { 0 };
        if *cool < SUSTAINED {
            continue;
        }
        let reason = format!(
            "{home}'s {unit} with the rule back would be {expected:.0}, under {below} for {SUSTAINED} heartbeats"
        );
        let (to, outcome) = relocate(node, &rule, "", &home).await;
        let from = members
            .iter()
            .find(|m| m.report.hosted.iter().any(|x| x.id == rule))
            .map_or_else(String::new, |m| m.report.name.clone());
        if outcome == "done" {
            memory.away.remove(&rule);
        }
        node.placements.record(Decision {
            at_ms: now_ms(),
            rule,
            from,
            to,
            action: "return",
            reason,
            outcome,
        });
    }
}

/// Moves `rule` to the least loaded node of `runtime` other than `from`, or (runtime `""`) to
/// the node `from` names; where it went, and `done` or what went wrong.
async fn relocate(node: &Node, rule: &str, runtime: &str, from: &str) -> (String, String) {
    let target = match runtime {
        "" => crate::relocation::resolve(node, from).await,
        rt => least_loaded(node, rt, Some(from)).await,
    };
    let target = match target {
        Ok(t) => t,
        Err(e) => return (String::new(), e.to_string()),
    };
    let req = MoveRequest {
        node: target.report.name.clone(),
    };
    let outcome = match move_rule(node, rule, req).await {
        Ok(r) => {
            tracing::info!(rule, paused_ms = r.paused_ms, "placement move done");
            "done".to_owned()
        }
        Err(e) => e.to_string(),
    };
    (target.report.name, outcome)
}
