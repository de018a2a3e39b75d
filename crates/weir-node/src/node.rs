//! The node: the catalogue of streams and rules, the rules running on the engine, and the
//! operations the REST API offers on them. Every change is validated in full before anything
//! is touched, then persisted, so a failed request leaves nothing half-done.

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

mod compiled;
mod ingest;
mod transfer;
pub use ingest::{Ingested, DEDUP_WINDOW_MS};
pub use transfer::Package;

/// A problem with rule or stream text, at a position.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    pub line: u32,
    pub column: u32,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// Why a node operation failed; the API turns each kind into a status code.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("{kind} '{name}' does not exist")]
    NotFound { kind: &'static str, name: String },
    #[error("{0}")]
    Conflict(String),
    #[error("{message}")]
    Invalid {
        message: String,
        problems: Vec<Problem>,
    },
    #[error("{0}")]
    Limit(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("rule could not start: {0}")]
    Start(crate::start_error::StartError),
    /// Another node, or the control plane, cannot be reached or is lost.
    #[error("{0}")]
    Unavailable(String),
    /// Another node refused a request it was handed, with its status.
    #[error("{message}")]
    Remote { status: u16, message: String },
    #[error("data directory: {0}")]
    Io(#[from] std::io::Error),
    #[error("durable store: {0}")]
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
    pub name: String,
    pub sql: String,
    pub connector: &'static str,
    /// Where the node publishes and takes this stream's events on its hub.
    pub topic: String,
}

/// A rule as the API shows it.
#[derive(Debug, Serialize)]
pub struct RuleView {
    pub id: String,
    /// The node that holds the rule (any node of a control plane answers for it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub sql: String,
    pub options: RuleOptions,
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
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
    pub id: String,
    /// The node that holds the rule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub state: &'static str,
    pub last_error: Option<String>,
    pub uptime_ms: u64,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub dead_letters: u64,
    pub last_dead_letter: Option<String>,
    pub late_events: u64,
    pub dead_letter_topic: String,
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

pub struct Node {
    pub config: NodeConfig,
    pub hub: Arc<Hub>,
    pub started: Instant,
    state: Mutex<State>,
    /// Operations on one rule take turns here (see [`Node::rule_turn`]).
    rule_turns: std::sync::Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// Figures of running rules, readable without waiting for an operation to finish.
    metrics: RwLock<BTreeMap<String, Arc<RuleMetrics>>>,
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

/// The streams the catalogue's declarations define.
fn streams_of(texts: &[String]) -> Vec<StreamDef> {
    texts
        .iter()
        .filter_map(|t| weir_lang::compile(t).ok())
        .flat_map(|p| p.streams)
        .collect()
}

/// Compiles text against `catalog`, with the connector settings of the streams it declares
/// checked as `weir check` checks them.
fn compile_against(catalog: &[StreamDef], what: &str, sql: &str) -> Result<Program, NodeError> {
    if sql.len() > MAX_TEXT {
        return Err(NodeError::Limit(format!(
            "{what}: the text has {} bytes; rule and stream texts are at most {MAX_TEXT}",
            sql.len()
        )));
    }
    compile_checked(sql, catalog, |p, from| {
        stream_problems(p, from, Target::Node)
    })
    .map_err(|d| NodeError::from_diagnostics(what, sql, d))
}

/// A rule's program must hold at least one `INSERT INTO ... SELECT`.
fn has_rules(program: Program, id: &str) -> Result<Program, NodeError> {
    if program.rules.is_empty() {
        return Err(NodeError::invalid(format!(
            "rule {id} has no INSERT INTO ... SELECT statement"
        )));
    }
    Ok(program)
}

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

    /// Waits for the operation under way on rule `id`, if any. Operations on one rule take
    /// turns here, and hold the node's lock only for short reads and writes of the catalogue:
    /// a rule slow to start or stop (its changelog server away, its sink slow) holds up the
    /// calls about itself alone.
    async fn rule_turn(&self, id: &str) -> Turn<'_> {
        let turn = self
            .rule_turns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(id.to_owned())
            .or_default()
            .clone();
        Turn {
            turns: &self.rule_turns,
            id: id.to_owned(),
            guard: Some(turn.lock_owned().await),
        }
    }

    fn catalog_streams(&self, st: &State) -> Arc<Vec<StreamDef>> {
        self.compiled.streams(&Self::catalog_texts(st))
    }

    /// The catalogue's stream declarations, as text (cheap to copy out of the lock).
    fn catalog_texts(st: &State) -> Vec<String> {
        st.registry
            .catalog
            .streams
            .values()
            .map(|s| s.sql.clone())
            .collect()
    }

    /// Compiles request text against the catalogue without holding the node's lock while it
    /// parses, and returns the program with the lock taken, the catalogue unchanged since. A
    /// catalogue that keeps changing meanwhile is a conflict to retry.
    async fn compile_unlocked(
        &self,
        what: &str,
        sql: &str,
    ) -> Result<(Program, tokio::sync::MutexGuard<'_, State>), NodeError> {
        for _ in 0..5 {
            let texts = Self::catalog_texts(&*self.state.lock().await);
            let program = compile_against(&self.compiled.streams(&texts), what, sql)?;
            let st = self.state.lock().await;
            if Self::catalog_texts(&st) == texts {
                return Ok((program, st));
            }
        }
        Err(NodeError::Conflict(
            "the node's streams kept changing while the text was checked; send it again".into(),
        ))
    }

    /// Refuses one more rule on a node holding `max_rules` already.
    fn ensure_room(&self, st: &State) -> Result<(), NodeError> {
        if st.registry.catalog.rules.len() >= self.config.max_rules {
            return Err(NodeError::Limit(format!(
                "this node holds at most {} rules (max_rules); delete one first",
                self.config.max_rules
            )));
        }
        Ok(())
    }

    /// Rule `id`'s program from `sql` against the catalogue, compiled once per change.
    fn compile_rule(&self, st: &State, id: &str, sql: &str) -> Result<Arc<Program>, NodeError> {
        self.compiled.rule(&Self::catalog_texts(st), id, sql)
    }

    /// [`Node::compile_rule`] for request text: parsed outside the lock ([`Node::compile_unlocked`]).
    async fn compile_new_rule(
        &self,
        id: &str,
        sql: &str,
    ) -> Result<(Program, tokio::sync::MutexGuard<'_, State>), NodeError> {
        let (program, st) = self.compile_unlocked(&format!("rule {id}"), sql).await?;
        Ok((has_rules(program, id)?, st))
    }

    /// Refuses a rule whose connectors cannot give the delivery it asks for, installed
    /// stopped or not.
    fn check_delivery(program: &Program, options: &RuleOptions) -> Result<(), NodeError> {
        let refusals = rule::delivery_refusals(program, options.delivery);
        if refusals.is_empty() {
            return Ok(());
        }
        Err(NodeError::Invalid {
            message: refusals.join("; "),
            problems: Vec::new(),
        })
    }

    /// Keeps the logs of a durable rule filling (see [`rule::journals`]); releases them for
    /// an at-most-once rule.
    fn hold_journals(&self, st: &State, id: &str) {
        let mut held = self.journals.lock().unwrap_or_else(|e| e.into_inner());
        held.remove(id);
        let Some(rec) = st.registry.catalog.rules.get(id) else {
            return;
        };
        if !rec.options.delivery.durable() {
            return;
        }
        let Ok(program) = self.compile_rule(st, id, &rec.sql) else {
            return;
        };
        let mut subs = Vec::new();
        let store = self.hub.store();
        for spec in rule::journals(id, &program) {
            let log = match store.log(&spec.log) {
                Ok(log) => log,
                Err(e) => {
                    tracing::error!(rule = %id, log = %spec.log, error = %e, "log not opened");
                    continue;
                }
            };
            // Until its first checkpoint, the rule reads from where the log was when it
            // began to be kept for it.
            let key = rule::start_key(id, &spec.log);
            if spec.input && store.meta(&key).ok().flatten().is_none() {
                if let Err(e) = store.set_meta(&key, &log.end().to_be_bytes()) {
                    tracing::error!(rule = %id, error = %e, "start position not stored");
                }
            }
            subs.push(self.hub.journal(&spec.filter, log));
        }
        held.insert(id.to_owned(), subs);
    }

    /// Forgets a rule's durable traces: journals, its private logs, its unsent results and its
    /// checkpoints.
    fn forget_state(&self, st: &State, id: &str) {
        self.journals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        if let Some(rec) = st.registry.catalog.rules.get(id) {
            if let Ok(program) = self.compile_rule(st, id, &rec.sql) {
                for spec in rule::journals(id, &program) {
                    let _ = self
                        .hub
                        .store()
                        .remove_meta(&rule::start_key(id, &spec.log));
                    if let Some(log) = self
                        .hub
                        .store()
                        .log(&spec.log)
                        .ok()
                        .filter(|_| spec.private)
                    {
                        let _ = log.truncate_before(log.end());
                    }
                }
                for out in rule::boundary(&program).1 {
                    if let Err(e) = self.outbox(id, &out, rec).and_then(|o| Ok(o.clear()?)) {
                        tracing::warn!(rule = %id, error = %e, "outbox not cleared");
                    }
                }
            }
        }
        if let Err(e) = self.checkpoints.remove(id) {
            tracing::warn!(rule = %id, error = %e, "checkpoints not removed");
        }
    }

    /// Starts rule `id` (`fresh`: with empty state, its checkpoints dropped first). Its
    /// settings are read under the node's lock; its state is recovered and its tasks wired
    /// without it, the rule shown as STARTING meanwhile.
    async fn launch(&self, id: &str, fresh: bool) -> Result<Runner, NodeError> {
        let (launch, group) = {
            let mut st = self.state.lock().await;
            let planned = self.plan(&st, id, fresh)?;
            st.starting.insert(id.to_owned());
            planned
        };
        let started = match group {
            true => GroupRule::start(launch).map(Runner::Group),
            false => RunningRule::start(launch)
                .await
                .map(|r| Runner::One(Box::new(r))),
        };
        self.state.lock().await.starting.remove(id);
        started.map_err(NodeError::Start)
    }

    /// What rule `id` starts with, and whether it runs as a group.
    fn plan(&self, st: &State, id: &str, fresh: bool) -> Result<(Launch, bool), NodeError> {
        let rec = Self::record(st, id)?;
        if fresh && rec.options.group {
            return Err(NodeError::Unsupported(format!(
                "rule '{id}' runs as a core group: its state is in its changelog, which reset_state does not clear; delete and install it again"
            )));
        }
        if fresh {
            self.checkpoints.remove(id)?;
        }
        let program = self.compile_rule(st, id, &rec.sql)?;
        let engine = EngineConfig {
            workers: rec.options.workers.unwrap_or(self.config.workers),
            state_ttl_ms: rec.options.ttl_ms().map_err(NodeError::invalid)?,
            ..EngineConfig::default()
        };
        let interval = rec.options.interval_ms().map_err(NodeError::invalid)?;
        let launch = Launch {
            id: id.to_owned(),
            program: Arc::unwrap_or_clone(program),
            engine,
            hub: self.hub.clone(),
            max_payload: self.config.max_payload,
            delivery: rec.options.delivery,
            interval: std::time::Duration::from_millis(interval),
            max_state_bytes: rec.options.max_state_bytes,
            checkpoints: self.checkpoints.clone(),
            retention: self.config.log_retention,
            outbox: (self.config.outbox_capacity, rec.options.outbox_full),
            changelog: rec.options.changelog.clone(),
            fed: None,
            fresh,
        };
        Ok((launch, rec.options.group))
    }

    fn set_running(&self, st: &mut State, id: &str, rule: Runner) {
        self.metrics
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_owned(), rule.metrics().clone());
        st.failed.remove(id);
        st.running.insert(
            id.to_owned(),
            Live {
                rule,
                since: Instant::now(),
            },
        );
    }

    /// Takes rule `id` out of the running rules; it is stopped once the node's lock is let go.
    fn take_running(&self, st: &mut State, id: &str) -> Option<Runner> {
        self.metrics
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        st.running.remove(id).map(|live| live.rule)
    }

    /// Stops rule `id` if it runs; its last checkpoint is taken without the node's lock.
    async fn halt(&self, id: &str) {
        let rule = self.take_running(&mut *self.state.lock().await, id);
        if let Some(rule) = rule {
            rule.stop().await;
        }
    }

    /// Figures of every running rule.
    pub fn rule_metrics(&self) -> Vec<(String, Arc<RuleMetrics>)> {
        self.metrics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    // ---- streams ----

    pub async fn create_stream(&self, sql: &str) -> Result<StreamView, NodeError> {
        let (program, mut st) = self.compile_unlocked("stream", sql).await?;
        let known = st.registry.catalog.streams.len();
        let new: Vec<&StreamDef> = program.streams.iter().skip(known).collect();
        if new.len() != 1 || !program.rules.is_empty() {
            return Err(NodeError::invalid(
                "a stream is created by exactly one CREATE STREAM statement",
            ));
        }
        let def = new[0];
        // Checked with the rest of the text above.
        let endpoint = Endpoint::from_options(&def.name, &def.options)
            .map_err(|e| NodeError::invalid(e.to_string()))?;
        st.registry.catalog.streams.insert(
            def.name.clone(),
            StreamRecord {
                name: def.name.clone(),
                sql: sql.trim().to_owned(),
            },
        );
        st.registry.save_streams()?;
        Ok(view(def, sql, &endpoint))
    }

    pub async fn streams(&self) -> Vec<StreamView> {
        let st = self.state.lock().await;
        st.registry
            .catalog
            .streams
            .values()
            .filter_map(|r| stream_view(&r.sql))
            .collect()
    }

    pub async fn stream(&self, name: &str) -> Result<StreamView, NodeError> {
        let st = self.state.lock().await;
        Self::find_stream(&st, name)
            .and_then(|r| stream_view(&r.sql))
            .ok_or_else(|| NodeError::NotFound {
                kind: "stream",
                name: name.to_owned(),
            })
    }

    fn find_stream<'a>(st: &'a State, name: &str) -> Option<&'a StreamRecord> {
        st.registry
            .catalog
            .streams
            .values()
            .find(|s| s.name.eq_ignore_ascii_case(name))
    }

    pub async fn delete_stream(&self, name: &str) -> Result<(), NodeError> {
        let mut st = self.state.lock().await;
        let key = Self::find_stream(&st, name)
            .map(|s| s.name.clone())
            .ok_or_else(|| NodeError::NotFound {
                kind: "stream",
                name: name.to_owned(),
            })?;
        let users: Vec<String> = st
            .registry
            .catalog
            .rules
            .values()
            .filter(|r| {
                self.compile_rule(&st, &r.id, &r.sql).is_ok_and(|p| {
                    let (i, o) = rule::boundary(&p);
                    i.iter().chain(&o).any(|s| s.eq_ignore_ascii_case(&key))
                })
            })
            .map(|r| r.id.clone())
            .collect();
        if !users.is_empty() {
            return Err(NodeError::Conflict(format!(
                "stream {key} is used by rule(s) {}; delete them first",
                users.join(", ")
            )));
        }
        st.registry.catalog.streams.remove(&key);
        st.registry.save_streams()?;
        Ok(())
    }

    /// Where HTTP ingest puts a stream's events, and the field its events carry their id in
    /// (the stream's `event_id` option).
    pub async fn ingest_target(&self, name: &str) -> Result<(String, Option<String>), NodeError> {
        let (def, ep) = self.stream_endpoint(name).await?;
        Ok((
            rule::ingest_topic(&def, &ep),
            def.options.get("event_id").cloned(),
        ))
    }

    /// The hub topics where a stream's events are ingested and shown.
    pub async fn stream_topics(&self, name: &str) -> Result<(String, String), NodeError> {
        let (def, ep) = self.stream_endpoint(name).await?;
        Ok((rule::ingest_topic(&def, &ep), rule::tap_topic(&def, &ep)))
    }

    /// A stream and its connector. Besides catalogue streams, this finds streams that only
    /// rules declare or write.
    async fn stream_endpoint(&self, name: &str) -> Result<(StreamDef, Endpoint), NodeError> {
        let st = self.state.lock().await;
        let in_rules = || {
            st.registry.catalog.rules.values().find_map(|r| {
                let p = self.compile_rule(&st, &r.id, &r.sql).ok()?;
                p.stream(name).cloned()
            })
        };
        let def = (self.catalog_streams(&st).iter())
            .find(|s| s.name.eq_ignore_ascii_case(name))
            .cloned()
            .or_else(in_rules)
            .ok_or_else(|| NodeError::NotFound {
                kind: "stream",
                name: name.to_owned(),
            })?;
        let ep = Endpoint::from_options(&def.name, &def.options)
            .map_err(|e| NodeError::invalid(e.to_string()))?;
        Ok((def, ep))
    }

    // ---- rules ----

    /// Checks rule text without installing it.
    pub async fn validate_rule(&self, sql: &str) -> Result<(Vec<String>, Vec<String>), NodeError> {
        let texts = Self::catalog_texts(&*self.state.lock().await);
        let p = has_rules(
            compile_against(&self.compiled.streams(&texts), "rule (validate)", sql)?,
            "(validate)",
        )?;
        Ok(rule::boundary(&p))
    }

    pub async fn install_rule(
        &self,
        id: &str,
        sql: &str,
        options: RuleOptions,
        job: Option<JobRecord>,
    ) -> Result<RuleView, NodeError> {
        if !crate::registry::valid_id(id) {
            return Err(invalid_id(id));
        }
        options.validate().map_err(NodeError::invalid)?;
        let _turn = self.rule_turn(id).await;
        let (program, mut st) = self.compile_new_rule(id, sql).await?;
        if st.registry.catalog.rules.contains_key(id) {
            return Err(NodeError::Conflict(format!(
                "rule '{id}' exists; update it with PUT /v1/rules/{id}"
            )));
        }
        self.ensure_room(&st)?;
        Self::check_delivery(&program, &options)?;
        // A rule installed under a deleted one's id starts from nothing.
        self.forget_state(&st, id);
        let start = !options.stopped;
        st.registry.catalog.rules.insert(
            id.to_owned(),
            RuleRecord {
                id: id.to_owned(),
                sql: sql.to_owned(),
                options,
                state: RuleState::Installed,
                job,
                moves: Vec::new(),
            },
        );
        self.hold_journals(&st, id);
        if start {
            drop(st);
            let started = self.launch(id, false).await;
            st = self.state.lock().await;
            match started {
                Ok(rule) => {
                    self.set_running(&mut st, id, rule);
                    if let Some(rec) = st.registry.catalog.rules.get_mut(id) {
                        rec.state = RuleState::Running;
                    }
                }
                Err(e) => {
                    self.forget_state(&st, id);
                    st.registry.catalog.rules.remove(id);
                    return Err(e);
                }
            }
        }
        if let Err(e) = st.registry.save_rule(id) {
            let rule = self.take_running(&mut st, id);
            self.forget_state(&st, id);
            st.registry.catalog.rules.remove(id);
            drop(st);
            if let Some(rule) = rule {
                rule.stop().await;
            }
            return Err(e.into());
        }
        Ok(self.view(&st, id))
    }

    /// Replaces a rule's text and options. The new version is compiled and checked first; if
    /// it is invalid or cannot start, the running version keeps running. The rule keeps its
    /// state when its stateful operators are unchanged (a new `WHERE`, projection or sink);
    /// when they changed, the update is refused with the reason unless `reset` asks to start
    /// with empty state.
    pub async fn update_rule(
        &self,
        id: &str,
        sql: &str,
        options: RuleOptions,
        reset: bool,
    ) -> Result<(RuleView, SavedState), NodeError> {
        options.validate().map_err(NodeError::invalid)?;
        let _turn = self.rule_turn(id).await;
        let (program, mut st) = self.compile_new_rule(id, sql).await?;
        let old = Self::record(&st, id)?.clone();
        Self::check_delivery(&program, &options)?;
        let was_running = st.running.contains_key(id);
        let newest = self.checkpoints.latest(id)?;
        let saved = match (&newest, was_running) {
            (None, false) => SavedState::None,
            _ if reset => SavedState::Reset,
            _ => {
                // The running version's state, or the newest checkpoint's: sized by the
                // worker count it was saved with.
                let workers = newest
                    .as_ref()
                    .map_or(old.options.workers.unwrap_or(self.config.workers), |r| {
                        r.checkpoint.workers
                    });
                let current = self.compile_rule(&st, id, &old.sql)?;
                weir_engine::check_update(&current, &program, workers).map_err(|e| {
                    NodeError::Conflict(format!(
                        "the update changes what rule '{id}' keeps state for, so its state does not fit the new version: {e}. Keep the windows, keys, aggregates, joins and patterns as they are, or send \"state\": \"reset\" to start it with empty state"
                    ))
                })?;
                SavedState::Kept
            }
        };
        let rec = st
            .registry
            .catalog
            .rules
            .get_mut(id)
            .expect("checked above");
        rec.sql = sql.to_owned();
        rec.options = options;
        let running = self.take_running(&mut st, id);
        drop(st);
        if let Some(rule) = running {
            rule.stop().await;
        }
        // The state as it is now: the old version resumes from it should the new one not
        // start (a stop takes a last checkpoint).
        let kept = self.checkpoints.latest(id)?;
        self.hold_journals(&*self.state.lock().await, id);
        if saved == SavedState::Reset && !was_running {
            self.checkpoints.remove(id)?;
        }
        if was_running {
            let started = self.launch(id, saved == SavedState::Reset).await;
            let mut st = self.state.lock().await;
            match started {
                Ok(rule) => self.set_running(&mut st, id, rule),
                Err(e) => {
                    st.registry.catalog.rules.insert(id.to_owned(), old);
                    if let Some(kept) = kept {
                        let _ = self.checkpoints.remove(id);
                        let _ = self.checkpoints.save(&kept.checkpoint);
                    }
                    self.hold_journals(&st, id);
                    drop(st);
                    if let Ok(rule) = self.launch(id, false).await {
                        self.set_running(&mut *self.state.lock().await, id, rule);
                    }
                    return Err(e);
                }
            }
        }
        let st = self.state.lock().await;
        st.registry.save_rule(id)?;
        Ok((self.view(&st, id), saved))
    }

    pub async fn delete_rule(&self, id: &str) -> Result<RuleView, NodeError> {
        let _turn = self.rule_turn(id).await;
        let running = {
            let mut st = self.state.lock().await;
            self.ensure_rule(&st, id)?;
            self.take_running(&mut st, id)
        };
        if let Some(rule) = running {
            rule.stop().await;
        }
        let mut st = self.state.lock().await;
        let mut view = self.view(&st, id);
        self.forget_state(&st, id);
        let rec = st.registry.catalog.rules.remove(id).expect("checked above");
        self.compiled.forget(id);
        st.failed.remove(id);
        st.registry.save_rule(id)?;
        if let Some(path) = rec
            .job
            .and_then(|j| st.registry.job_file(&j.config_file_name).ok())
        {
            let _ = std::fs::remove_file(path);
        }
        view.state = "UNINSTALLED";
        Ok(view)
    }

    /// Starts a stopped rule; `reset` drops its saved state first (a rule whose state no
    /// longer fits it does not start otherwise).
    pub async fn start_rule(&self, id: &str, reset: bool) -> Result<RuleView, NodeError> {
        let _turn = self.rule_turn(id).await;
        let running = {
            let st = self.state.lock().await;
            self.ensure_rule(&st, id)?;
            st.running.contains_key(id)
        };
        if reset && running {
            return Err(NodeError::Conflict(format!(
                "rule '{id}' is running; restart it to reset its state"
            )));
        }
        if !running {
            let rule = self.launch(id, reset).await?;
            self.set_running(&mut *self.state.lock().await, id, rule);
        }
        let mut st = self.state.lock().await;
        self.persist_state(&mut st, id, RuleState::Running)?;
        Ok(self.view(&st, id))
    }

    pub async fn stop_rule(&self, id: &str) -> Result<RuleView, NodeError> {
        let _turn = self.rule_turn(id).await;
        self.ensure_rule(&*self.state.lock().await, id)?;
        self.halt(id).await;
        let mut st = self.state.lock().await;
        st.failed.remove(id);
        self.persist_state(&mut st, id, RuleState::Stopped)?;
        Ok(self.view(&st, id))
    }

    pub async fn restart_rule(&self, id: &str, reset: bool) -> Result<RuleView, NodeError> {
        let _turn = self.rule_turn(id).await;
        self.ensure_rule(&*self.state.lock().await, id)?;
        self.halt(id).await;
        let rule = self.launch(id, reset).await?;
        let mut st = self.state.lock().await;
        self.set_running(&mut st, id, rule);
        self.persist_state(&mut st, id, RuleState::Running)?;
        Ok(self.view(&st, id))
    }

    fn record<'a>(st: &'a State, id: &str) -> Result<&'a RuleRecord, NodeError> {
        st.registry
            .catalog
            .rules
            .get(id)
            .ok_or_else(|| NodeError::NotFound {
                kind: "rule",
                name: id.to_owned(),
            })
    }

    fn ensure_rule(&self, st: &State, id: &str) -> Result<(), NodeError> {
        Self::record(st, id).map(|_| ())
    }

    fn persist_state(&self, st: &mut State, id: &str, state: RuleState) -> Result<(), NodeError> {
        if let Some(r) = st.registry.catalog.rules.get_mut(id) {
            r.state = state;
        }
        st.registry.save_rule(id)?;
        Ok(())
    }

    fn view(&self, st: &State, id: &str) -> RuleView {
        let rec = &st.registry.catalog.rules[id];
        let failed = st.failed.get(id).cloned();
        RuleView {
            id: id.to_owned(),
            node: self.name.get().cloned(),
            sql: weir_core::redact::secrets(&rec.sql).into_owned(),
            options: rec.options.clone(),
            state: match (&failed, st.running.contains_key(id)) {
                _ if st.starting.contains(id) => "STARTING",
                (Some(_), false) => "FAILED",
                _ => state_name(rec.state),
            },
            last_error: failed.map(|e| weir_core::redact::secrets(&e).into_owned()),
            moves: rec.moves.clone(),
            job: rec.job.clone(),
        }
    }

    pub async fn rules(&self) -> Vec<RuleView> {
        let st = self.state.lock().await;
        st.registry
            .catalog
            .rules
            .keys()
            .map(|id| self.view(&st, id))
            .collect()
    }

    /// [`Node::rules`] with each rule's text as written, secrets and all: what a heartbeat
    /// carries to the control plane (only with the cluster secret), which reinstalls the rules
    /// of a lost node elsewhere from it. Never for listings.
    pub async fn rules_as_written(&self) -> Vec<RuleView> {
        let st = self.state.lock().await;
        (st.registry.catalog.rules.iter())
            .map(|(id, rec)| RuleView {
                sql: rec.sql.clone(),
                ..self.view(&st, id)
            })
            .collect()
    }

    pub async fn rule(&self, id: &str) -> Result<(RuleView, Option<JobRecord>), NodeError> {
        let st = self.state.lock().await;
        self.ensure_rule(&st, id)?;
        Ok((
            self.view(&st, id),
            st.registry.catalog.rules[id].job.clone(),
        ))
    }

    pub async fn status(&self, id: &str) -> Result<RuleStatus, NodeError> {
        // What the node holds is copied out under its lock; compiling and reading the disk
        // happen after it is let go.
        let (view, rec, texts, live) = {
            let st = self.state.lock().await;
            let rec = Self::record(&st, id)?.clone();
            let live = st
                .running
                .get(id)
                .map(|l| (l.rule.metrics().clone(), l.since));
            (self.view(&st, id), rec, Self::catalog_texts(&st), live)
        };
        let (inputs, outputs) = (self.compiled.rule(&texts, id, &rec.sql))
            .map(|p| rule::boundary(&p))
            .unwrap_or_default();
        let m = live.as_ref().map(|l| &l.0);
        let failure = m.and_then(|m| m.failure.lock().unwrap_or_else(|e| e.into_inner()).clone());
        let checkpoint = match m {
            Some(m) => m
                .checkpoint
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            None => {
                let newest = self.checkpoints.latest(id).ok().flatten();
                CheckpointStatus {
                    delivery: rec.options.delivery.name(),
                    interval_ms: rec.options.interval_ms().unwrap_or(1000),
                    epoch: newest.as_ref().map_or(0, |r| r.checkpoint.epoch),
                    state_bytes: newest.as_ref().map_or(0, |r| r.bytes),
                    max_state_bytes: rec.options.max_state_bytes,
                    ..CheckpointStatus::default()
                }
            }
        };
        let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        Ok(RuleStatus {
            id: id.to_owned(),
            node: self.name.get().cloned(),
            state: if failure.is_some() {
                "FAILED"
            } else {
                view.state
            },
            last_error: failure
                .or(view.last_error)
                .or_else(|| m.and_then(|m| m.connector_error()))
                .map(|e| weir_core::redact::secrets(&e).into_owned()),
            uptime_ms: live
                .as_ref()
                .map_or(0, |l| l.1.elapsed().as_millis() as u64),
            inputs,
            outputs,
            dead_letters: m.map_or(0, |m| load(&m.dead_letters)),
            last_dead_letter: m.and_then(|m| {
                m.last_dead_letter
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone()
            }),
            late_events: m.map_or(0, |m| load(&m.late)),
            dead_letter_topic: rule::dead_letter_topic(id),
            operators: m.map(|m| m.operators()).unwrap_or_default(),
            checkpoint,
        })
    }

    /// The rule's newest intact checkpoint in its file form: state, positions and staged
    /// results, for backups and for moving the rule.
    pub async fn export_checkpoint(&self, id: &str) -> Result<Vec<u8>, NodeError> {
        let st = self.state.lock().await;
        self.ensure_rule(&st, id)?;
        let newest = self
            .checkpoints
            .latest(id)?
            .ok_or_else(|| NodeError::NotFound {
                kind: "checkpoint of rule",
                name: id.to_owned(),
            })?;
        Ok(newest.checkpoint.encode()?)
    }

    /// Makes an exported checkpoint the rule's newest, so its next start resumes from it. The
    /// rule must be stopped.
    pub async fn import_checkpoint(&self, id: &str, bytes: &[u8]) -> Result<Saved, NodeError> {
        let st = self.state.lock().await;
        self.ensure_rule(&st, id)?;
        if st.running.contains_key(id) {
            return Err(NodeError::Conflict(format!(
                "rule '{id}' is running; stop it before importing a checkpoint"
            )));
        }
        let mut c = Checkpoint::decode(bytes).map_err(|e| NodeError::invalid(e.to_string()))?;
        let newest = self
            .checkpoints
            .latest(id)?
            .map_or(0, |r| r.checkpoint.epoch);
        c.rule = id.to_owned();
        c.epoch = c.epoch.max(newest + 1);
        Ok(self.checkpoints.save(&c)?)
    }

    /// The data directory, where job configuration files are materialised.
    pub async fn write_job_file(&self, name: &str, body: &[u8]) -> Result<(), NodeError> {
        let st = self.state.lock().await;
        crate::registry::write_atomic(&st.registry.job_file(name)?, body)?;
        Ok(())
    }

    /// The hub topics the rules write their results to (embedded outputs and taps): no MQTT
    /// client may publish there. `cache` keeps each rule's topics by the hash of its text and
    /// the catalogue, so a call compiles only what changed, outside the lock.
    pub async fn output_topics(
        &self,
        cache: &mut HashMap<String, (u64, Vec<String>)>,
    ) -> std::collections::HashSet<String> {
        let (texts, rules): (Vec<String>, Vec<(String, String)>) = {
            let st = self.state.lock().await;
            let rules = st
                .registry
                .catalog
                .rules
                .values()
                .map(|r| (r.id.clone(), r.sql.clone()))
                .collect();
            (Self::catalog_texts(&st), rules)
        };
        let catalog = self.compiled.streams(&texts);
        cache.retain(|id, _| rules.iter().any(|(r, _)| r == id));
        for (id, sql) in rules {
            let mut h = weir_core::hash::KeyHasher::default();
            h.write(sql.as_bytes());
            for t in &texts {
                h.write(t.as_bytes());
            }
            let hash = h.finish();
            if cache.get(&id).is_some_and(|(k, _)| *k == hash) {
                continue;
            }
            let topics = compile_against(&catalog, "rule", &sql)
                .ok()
                .and_then(|p| {
                    let (_, outputs) = rule::boundary(&p);
                    let eps = rule::endpoints(&p).ok()?;
                    Some(
                        eps.iter()
                            .filter(|(d, _)| {
                                outputs.iter().any(|o| o.eq_ignore_ascii_case(&d.name))
                            })
                            .map(|(d, e)| rule::tap_topic(d, e))
                            .collect(),
                    )
                })
                .unwrap_or_default();
            cache.insert(id, (hash, topics));
        }
        cache
            .values()
            .flat_map(|(_, t)| t.iter().cloned())
            .collect()
    }

    /// Removes a job file [`Node::write_job_file`] wrote (an installation that failed).
    pub async fn remove_job_file(&self, name: &str) {
        let st = self.state.lock().await;
        if let Ok(path) = st.registry.job_file(name) {
            let _ = std::fs::remove_file(path);
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

fn view(def: &StreamDef, sql: &str, endpoint: &Endpoint) -> StreamView {
    StreamView {
        name: def.name.clone(),
        sql: weir_core::redact::secrets(sql.trim()).into_owned(),
        connector: endpoint.kind(),
        topic: rule::ingest_topic(def, endpoint),
    }
}

fn stream_view(sql: &str) -> Option<StreamView> {
    let def = weir_lang::compile(sql).ok()?.streams.into_iter().next()?;
    let ep = Endpoint::from_options(&def.name, &def.options).ok()?;
    Some(view(&def, sql, &ep))
}
