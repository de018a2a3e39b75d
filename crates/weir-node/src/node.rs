//! The node: the catalogue of streams and rules, the rules running on the engine, and the
//! operations the REST API offers on them. Every change is validated in full before anything
//! is touched, then persisted, so a failed request leaves nothing half-done.
//!
//! This file holds the node's state, opening and restoring it and shutting it down; the rest
//! is by job: `catalog` (streams, and rule text compiled against them, cached in `compiled`),
//! `host` (starting rules outside the lock, tracking what runs), `rules` (the rules' control
//! plane), `transfer` (moving a rule with its state) and `ingest` (HTTP ingest).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use serde::Serialize;
use tokio::sync::Mutex;
use weir_connectors::check::{stream_problems, Target};
use weir_connectors::Endpoint;
use weir_engine::EngineConfig;
use weir_lang::plan::StreamDef;
use weir_lang::{compile_checked, Diagnostics, Program};
use weir_state::{Checkpoint, CheckpointStore, FileCheckpoints, Saved};

use crate::checkpoint::CheckpointStatus;
use crate::config::NodeConfig;
use crate::group::GroupRule;
use crate::hub::{Hub, Subscription};
use crate::registry::{
    JobRecord, MoveRecord, Registry, RuleOptions, RuleRecord, RuleState, StreamRecord,
};
use crate::rule::{self, Launch, OperatorStatus, RuleMetrics, RunningRule};

mod catalog;
mod compiled;
mod host;
mod ingest;
mod rules;
mod transfer;
use catalog::{compile_against, has_rules, streams_of};
pub use ingest::{Ingested, DEDUP_WINDOW_MS};
pub use transfer::Package;

/// A problem with rule or stream text, at a position.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// Line, from 1.
    pub line: u32,
    /// Column, from 1.
    pub column: u32,
    /// What is wrong.
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// How to fix it.
    pub hint: Option<String>,
}

/// Why a node operation failed; the API turns each kind into a status code.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("{kind} '{name}' does not exist")]
    /// No such rule or stream (404).
    NotFound {
        /// `rule` or `stream`.
        kind: &'static str,
        /// What was asked for.
        name: String,
    },
    #[error("{0}")]
    /// It exists already, or the request does not fit its state (409).
    Conflict(String),
    #[error("{message}")]
    /// The request is wrong (400), with each problem at its position.
    Invalid {
        /// What is wrong, in short.
        message: String,
        /// Each problem, at its position.
        problems: Vec<Problem>,
    },
    #[error("{0}")]
    /// A limit was reached (rules per node, payload size): 422.
    Limit(String),
    #[error("{0}")]
    /// Not something this node does (501).
    Unsupported(String),
    #[error("rule could not start: {0}")]
    /// The rule did not start; its blame says whose fault that is.
    Start(crate::start_error::StartError),
    /// Another node, or the control plane, cannot be reached or is lost.
    #[error("{0}")]
    Unavailable(String),
    /// Another node refused a request it was handed, with its status.
    #[error("{message}")]
    Remote {
        /// The other node's status code, passed on.
        status: u16,
        /// Its message.
        message: String,
    },
    #[error("data directory: {0}")]
    /// The data directory could not be read or written (500).
    Io(#[from] std::io::Error),
    #[error("durable store: {0}")]
    /// The durable store failed.
    Store(#[from] weir_state::StoreError),
}

impl NodeError {
    pub(crate) fn invalid(message: impl Into<String>) -> NodeError {
        NodeError::Invalid {
            message: message.into(),
            problems: Vec::new(),
        }
    }

    fn from_diagnostics(what: &str, source: &str, d: Diagnostics) -> NodeError {
        let problems: Vec<Problem> =
            d.0.iter()
                .map(|d| Problem {
                    line: d.pos.line,
                    column: d.pos.col,
                    message: d.message.clone(),
                    hint: d.hint.clone(),
                })
                .collect();
        NodeError::Invalid {
            message: format!("{what} is invalid:\n{}", d.render(what, source)),
            problems,
        }
    }
}

/// A stream as the API shows it.
#[derive(Debug, Serialize)]
pub struct StreamView {
    /// The stream's name.
    pub name: String,
    /// Its `CREATE STREAM` text.
    pub sql: String,
    /// Its connector.
    pub connector: &'static str,
    /// Where the node publishes and takes this stream's events on its hub.
    pub topic: String,
}

/// A rule as the API shows it.
#[derive(Debug, Serialize)]
pub struct RuleView {
    /// The rule's id.
    pub id: String,
    /// The node that holds the rule (any node of a control plane answers for it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Its text.
    pub sql: String,
    /// Its options.
    pub options: RuleOptions,
    /// INSTALLED, STARTING, RUNNING, STOPPED or FAILED.
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// Why it failed, if it did.
    pub last_error: Option<String>,
    /// The nodes the rule moved between, oldest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub moves: Vec<MoveRecord>,
    /// What the seed paper's jobinfo adds, for a rule installed as a paper job.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<JobRecord>,
}

/// What an update did with the rule's saved state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SavedState {
    /// The rule had none.
    None,
    /// The stateful operators are unchanged: the rule goes on from its state.
    Kept,
    /// Dropped, as asked: the rule starts with empty state.
    Reset,
}

/// A rule's live status.
#[derive(Debug, Serialize)]
pub struct RuleStatus {
    /// The rule's id.
    pub id: String,
    /// The node that holds the rule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// INSTALLED, STARTING, RUNNING, STOPPED or FAILED.
    pub state: &'static str,
    /// Why it failed, if it did.
    pub last_error: Option<String>,
    /// How long it has run.
    pub uptime_ms: u64,
    /// The streams it reads.
    pub inputs: Vec<String>,
    /// The streams it writes.
    pub outputs: Vec<String>,
    /// Records that could not be events.
    pub dead_letters: u64,
    /// The reason of the newest one.
    pub last_dead_letter: Option<String>,
    /// Events refused as late.
    pub late_events: u64,
    /// Where its dead letters are published.
    pub dead_letter_topic: String,
    /// Each source, operator chain and sink with its figures.
    pub operators: Vec<OperatorStatus>,
    /// Delivery guarantee, checkpoints and state size.
    pub checkpoint: CheckpointStatus,
}

/// A rule running on this node: alone, or as one member of its input's consumer group.
enum Runner {
    One(Box<RunningRule>),
    Group(GroupRule),
}

impl Runner {
    fn metrics(&self) -> &Arc<RuleMetrics> {
        match self {
            Runner::One(r) => &r.metrics,
            Runner::Group(g) => &g.metrics,
        }
    }

    async fn stop(self) {
        match self {
            Runner::One(r) => r.stop().await,
            Runner::Group(g) => g.stop().await,
        }
    }
}

/// An operation's turn on one rule (see [`Node::rule_turn`]). The rule's entry leaves the map
/// with the last operation waiting on it, so the map holds only rules with operations under way.
struct Turn<'a> {
    turns: &'a std::sync::Mutex<HashMap<String, Arc<Mutex<()>>>>,
    id: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut turns = self.turns.lock().unwrap_or_else(|e| e.into_inner());
        // Held by the map and this turn alone: nobody waits.
        if turns
            .get(&self.id)
            .is_some_and(|t| Arc::strong_count(t) == 2)
        {
            turns.remove(&self.id);
        }
        // Let go with the map locked: no operation takes a fresh turn before this one ends.
        self.guard.take();
    }
}

struct Live {
    rule: Runner,
    since: Instant,
}

struct State {
    registry: Registry,
    running: HashMap<String, Live>,
    /// Rules being started: their state is recovered and their tasks wired outside this lock.
    starting: HashSet<String>,
    /// Rules that should run but could not, with the reason.
    failed: HashMap<String, String>,
}

/// A node: its catalogue of streams and rules, the rules it runs, its hub and its settings.
pub struct Node {
    /// Its settings.
    pub config: NodeConfig,
    /// Its topics.
    pub hub: Arc<Hub>,
    /// When it started.
    pub started: Instant,
    state: Mutex<State>,
    /// Operations on one rule take turns here (see [`Node::rule_turn`]).
    rule_turns: std::sync::Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// Figures of running rules, readable without waiting for an operation to finish.
    metrics: RwLock<BTreeMap<String, Arc<RuleMetrics>>>,
    /// Where rules' checkpoints are kept.
    pub checkpoints: Arc<dyn CheckpointStore>,
    /// Journal subscriptions of installed durable rules: their logs keep filling while they
    /// are stopped, so they resume where they stopped.
    journals: std::sync::Mutex<HashMap<String, Vec<Subscription>>>,
    /// The catalogue's streams and rules' programs, compiled once per change.
    compiled: compiled::Compiled,
    /// The registry of nodes, when this node serves as their control plane.
    pub members: crate::cluster::Members,
    /// This node's name among its control plane's nodes.
    pub name: std::sync::OnceLock<String>,
    /// The address other nodes and clients reach this node at.
    pub address: std::sync::OnceLock<String>,
    /// The placement policies' decisions, when this node serves as the control plane.
    pub placements: crate::placement::Decisions,
    /// What makes HTTP ingest idempotent.
    dedup: ingest::Dedup,
    /// Who may ask what.
    pub guard: crate::auth::Guard,
    /// Topic rules of the MQTT endpoint's clients, when the node has an ACL file.
    pub mqtt_acl: Option<crate::mqtt_acl::MqttAcl>,
    /// The certificates this node trusts when calling the others over https.
    pub peer_roots: Vec<reqwest::Certificate>,
}

fn state_name(s: RuleState) -> &'static str {
    match s {
        RuleState::Installed => "INSTALLED",
        RuleState::Running => "RUNNING",
        RuleState::Stopped => "STOPPED",
        RuleState::Uninstalled => "UNINSTALLED",
    }
}

/// The longest rule or stream text taken, in bytes.
pub const MAX_TEXT: usize = 1 << 20;

/// The refusal of a rule id that is not plain ([`crate::registry::valid_id`]).
pub(crate) fn invalid_id(id: &str) -> NodeError {
    let shown: String = id.chars().take(80).collect();
    NodeError::invalid(format!(
        "rule id '{shown}' must be 1 to 64 letters, digits, '_', '-' or '.', starting with a letter, digit or '_'"
    ))
}

impl Node {
    /// Opens the registry in the data directory. Call [`Node::restore`] to start its rules.
    pub fn open(config: NodeConfig, hub: Arc<Hub>) -> Result<Arc<Node>, NodeError> {
        config.validate().map_err(NodeError::invalid)?;
        let registry = Registry::open(&config.data_dir)?;
        let checkpoints = Arc::new(FileCheckpoints::new(
            config.data_dir.join("checkpoints"),
            config.min_free_bytes,
        ));
        let lost_after = std::time::Duration::from_millis(config.lost_after_ms);
        let guard = crate::auth::Guard::open(
            config.auth_token_file.as_deref(),
            config.cluster_secret_file.as_deref(),
        )
        .map_err(NodeError::invalid)?;
        let mqtt_acl = match &config.mqtt_acl_file {
            Some(_) if config.auth_token_file.is_none() => {
                return Err(NodeError::invalid(
                    "mqtt_acl_file names clients by their tokens: give an auth_token_file too",
                ))
            }
            Some(p) => Some(crate::mqtt_acl::MqttAcl::open(p).map_err(NodeError::invalid)?),
            None => None,
        };
        let peer_roots = match &config.tls_ca_file {
            None => Vec::new(),
            Some(p) => weir_connectors::tls::certificates(p, "tls_ca_file")
                .and_then(|certs| {
                    (certs.iter())
                        .map(|c| reqwest::Certificate::from_der(c).map_err(|e| e.to_string()))
                        .collect()
                })
                .map_err(NodeError::invalid)?,
        };
        Ok(Arc::new(Node {
            config,
            guard,
            mqtt_acl,
            peer_roots,
            hub,
            checkpoints,
            journals: std::sync::Mutex::new(HashMap::new()),
            compiled: Default::default(),
            started: Instant::now(),
            rule_turns: Default::default(),
            state: Mutex::new(State {
                registry,
                running: HashMap::new(),
                starting: HashSet::new(),
                failed: HashMap::new(),
            }),
            metrics: RwLock::new(BTreeMap::new()),
            members: crate::cluster::Members::new(lost_after),
            name: std::sync::OnceLock::new(),
            address: std::sync::OnceLock::new(),
            placements: Default::default(),
            dedup: Default::default(),
        }))
    }

    /// Starts every rule that was running when the node last stopped.
    pub async fn restore(&self) {
        let ids: Vec<String> = {
            let st = self.state.lock().await;
            let installed: Vec<String> = st.registry.catalog.rules.keys().cloned().collect();
            for id in installed {
                self.hold_journals(&st, &id);
            }
            st.registry
                .catalog
                .rules
                .values()
                .filter(|r| r.state == RuleState::Running)
                .map(|r| r.id.clone())
                .collect()
        };
        for id in ids {
            let _turn = self.rule_turn(&id).await;
            let started = self.launch(&id, false).await;
            let mut st = self.state.lock().await;
            match started {
                Ok(rule) => self.set_running(&mut st, &id, rule),
                // Deleted meanwhile.
                Err(_) if !st.registry.catalog.rules.contains_key(&id) => {}
                Err(e) => {
                    tracing::error!(rule = %id, error = %e, "rule not restored");
                    st.failed.insert(id, e.to_string());
                }
            }
        }
    }

    /// Stops every rule (node shutdown); their registry state stays as it was.
    pub async fn shutdown(&self) {
        let running: Vec<Runner> = {
            let mut st = self.state.lock().await;
            let ids: Vec<String> = st.running.keys().cloned().collect();
            ids.iter()
                .filter_map(|id| self.take_running(&mut st, id))
                .collect()
        };
        for rule in running {
            rule.stop().await;
        }
    }
}
