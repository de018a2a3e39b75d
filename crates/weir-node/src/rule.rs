//! A running rule: its compiled program on the engine, wired to connectors and the hub.
//!
//! ```text
//! connector source ─┐                                          ┌─> connector sink
//! hub (ingest, MQTT)┴─> feed task: decode, stamp ─> engine ─> sink task: encode ─┴─> hub
//!                         └─> dead letters (hub topic weir/dead_letters/<rule>)
//! ```
//!
//! Rules with at-least-once or exactly-once delivery read their inputs from durable logs
//! instead (see [`crate::delivery`]), and every rule is checkpointed by its
//! [`Coordinator`](crate::checkpoint::Coordinator): it starts from its newest checkpoint.
//! Stopping takes a last checkpoint, then the feeds leave the engine without ending their
//! streams, so open windows stay in the checkpoint for the next start instead of being flushed.

use crate::start_error::StartError;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use weir_core::Classify;

use bytes::Bytes;
use prometheus_client::metrics::histogram::Histogram;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use weir_connectors::codec::MessageDecoder;
use weir_connectors::live::{DurableInput, Health, HealthReport, Outgoing, PayloadTx};
use weir_connectors::nats::changelog::Changelog;
use weir_connectors::Endpoint;
use weir_core::{Clock, Row, Value};
use weir_engine::{BuildError, Dataflow, Delivered, EngineConfig, Ingest, OutputStream, RuleStats};
use weir_lang::plan::{StreamDef, TimeMode};
use weir_lang::Program;
use weir_state::{Checkpoint, CheckpointStore, Recovered, StreamLog};

use crate::checkpoint::{
    ChangelogInputs, CheckpointStatus, Command, Coordinator, FeedCtl, OutputTarget, Report,
};
use crate::delivery::Delivery;
use crate::hub::{Hub, Message, Subscription};
use crate::outbox::{Outbox, OutboxStatus, WhenFull};

/// The hub topic outside events of a stream arrive on (embedded topic, or ingest for streams
/// with a connector).
pub fn ingest_topic(def: &StreamDef, endpoint: &Endpoint) -> String {
    match endpoint {
        Endpoint::Embedded { topic } => topic.clone(),
        _ => format!("$weir/ingest/{}", def.name),
    }
}

/// The hub topic a stream's rule output is shown on (its embedded topic, or a tap that tails
/// read for streams with a connector).
pub fn tap_topic(def: &StreamDef, endpoint: &Endpoint) -> String {
    match endpoint {
        Endpoint::Embedded { topic } => topic.clone(),
        _ => format!("$weir/tap/{}", def.name),
    }
}

pub fn dead_letter_topic(rule: &str) -> String {
    format!("weir/dead_letters/{rule}")
}

/// The durable log of an embedded topic.
pub fn topic_log(topic: &str) -> String {
    format!("topic/{topic}")
}

/// A log a durable rule keeps: what the hub stores in it, and whether the rule alone reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct JournalSpec {
    pub stream: String,
    /// The hub filter whose messages go into the log.
    pub filter: String,
    pub log: String,
    pub input: bool,
    pub private: bool,
}

/// The store key holding where a durable rule starts reading `log` before its first checkpoint:
/// the end of the log when the rule was installed.
pub fn start_key(id: &str, log: &str) -> String {
    format!("start/{id}/{log}")
}

/// The logs of a rule with durable delivery: each input (its embedded topic, or a log of its own
/// for a stream with a connector, which the connector and HTTP ingest write) and each embedded
/// output topic. The node keeps them journaled for as long as the rule is installed.
pub fn journals(id: &str, program: &Program) -> Vec<JournalSpec> {
    let Ok(eps) = endpoints(program) else {
        return Vec::new();
    };
    let (inputs, _) = boundary(program);
    eps.iter()
        .filter_map(|(def, ep)| {
            let input = inputs.iter().any(|i| i.eq_ignore_ascii_case(&def.name));
            let (log, private) = match (ep, input) {
                (Endpoint::Embedded { topic }, _) => (topic_log(topic), false),
                (_, true) => (format!("in/{id}/{}", def.name), true),
                (_, false) => return None,
            };
            Some(JournalSpec {
                stream: def.name.clone(),
                filter: ingest_topic(def, ep),
                log,
                input,
                private,
            })
        })
        .collect()
}

/// Counters of one stage (a source or a sink) of a rule.
#[derive(Debug)]
pub struct Stage {
    pub name: String,
    pub connector: &'static str,
    pub health: Arc<Health>,
    /// Payloads taken (sources) or events handed to the connector (sinks).
    pub received: AtomicU64,
    /// Events produced (sources) or published on an embedded topic (sinks).
    pub events: AtomicU64,
    pub errors: AtomicU64,
    /// Input waiting to be read (sources): entries of its durable log beyond the rule's
    /// position, or payloads queued for it. The node's load sums it as input lag.
    pub backlog: AtomicU64,
    /// The store-and-forward outbox of an external sink of a durable rule.
    pub outbox: Option<Arc<Outbox>>,
}

impl Stage {
    pub(crate) fn new(kind: &str, stream: &str, endpoint: &Endpoint) -> Arc<Stage> {
        Arc::new(Stage {
            name: format!("{kind}:{stream}"),
            connector: endpoint.kind(),
            health: Arc::default(),
            received: AtomicU64::new(0),
            events: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            backlog: AtomicU64::new(0),
            outbox: None,
        })
    }
}

/// Live figures of a running rule, read by status and /metrics.
#[derive(Debug)]
pub struct RuleMetrics {
    pub sources: Vec<Arc<Stage>>,
    pub engine: Vec<Arc<RuleStats>>,
    pub sinks: Vec<Arc<Stage>>,
    pub dead_letters: AtomicU64,
    pub late: AtomicU64,
    pub last_dead_letter: Mutex<Option<String>>,
    /// Seconds from an event's time to its result leaving weir (for processing-time streams,
    /// the processing latency).
    pub lag: Histogram,
    pub checkpoint: Arc<Mutex<CheckpointStatus>>,
    /// Why the rule stopped by itself (its state outgrew its limit).
    pub failure: Arc<Mutex<Option<String>>>,
}

/// One operator's figures in a status document.
#[derive(Debug, Serialize)]
pub struct OperatorStatus {
    pub name: String,
    pub events_in: u64,
    pub events_out: u64,
    pub errors: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connector: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outbox: Option<OutboxStatus>,
    /// Input waiting to be read (sources).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backlog: Option<u64>,
}

impl RuleMetrics {
    pub fn new(
        sources: Vec<Arc<Stage>>,
        checkpoint: Arc<Mutex<CheckpointStatus>>,
        failure: Arc<Mutex<Option<String>>>,
    ) -> RuleMetrics {
        RuleMetrics {
            sources,
            engine: Vec::new(),
            sinks: Vec::new(),
            dead_letters: AtomicU64::new(0),
            late: AtomicU64::new(0),
            last_dead_letter: Mutex::new(None),
            lag: Histogram::new([
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
            checkpoint,
            failure,
        }
    }

    pub fn operators(&self) -> Vec<OperatorStatus> {
        // An external sink's output is what its connector has sent.
        let stage = |s: &Arc<Stage>| OperatorStatus {
            name: s.name.clone(),
            events_in: s.received.load(Ordering::Relaxed),
            events_out: match s.name.starts_with("sink:") && s.connector != "embedded" {
                true => s.health.messages.load(Ordering::Relaxed),
                false => s.events.load(Ordering::Relaxed),
            },
            errors: s.errors.load(Ordering::Relaxed),
            connector: Some(s.connector),
            health: (s.connector != "embedded").then(|| s.health.report()),
            outbox: s.outbox.as_ref().map(|o| o.status()),
            backlog: s
                .name
                .starts_with("source:")
                .then(|| s.backlog.load(Ordering::Relaxed)),
        };
        let mut out: Vec<OperatorStatus> = self.sources.iter().map(stage).collect();
        out.extend(self.engine.iter().map(|r| OperatorStatus {
            name: format!("rule:{}", r.name),
            events_in: r.events_in.load(Ordering::Relaxed),
            events_out: r.events_out.load(Ordering::Relaxed),
            errors: r.late.load(Ordering::Relaxed),
            connector: None,
            health: None,
            outbox: None,
            backlog: None,
        }));
        out.extend(self.sinks.iter().map(stage));
        out
    }

    /// The first connector problem, for a rule's status.
    pub fn connector_error(&self) -> Option<String> {
        self.sources
            .iter()
            .chain(&self.sinks)
            .filter(|s| !s.health.is_up() && s.connector != "embedded")
            .find_map(|s| {
                s.health
                    .report()
                    .last_error
                    .map(|e| format!("{}: {e}", s.name))
            })
    }
}

/// Settings a rule starts with.
pub struct Launch {
    pub id: String,
    pub program: Program,
    pub engine: EngineConfig,
    pub hub: Arc<Hub>,
    pub max_payload: usize,
    pub delivery: Delivery,
    pub interval: Duration,
    pub max_state_bytes: Option<u64>,
    pub checkpoints: Arc<dyn CheckpointStore>,
    /// Entries kept per embedded topic log.
    pub retention: u64,
    /// Capacity of each external sink's outbox (durable rules), and what a full one does.
    pub outbox: (u64, WhenFull),
    /// NATS URL of the rule's state changelog.
    pub changelog: Option<String>,
    /// An input fed by the node instead of its connector (a group task's partition).
    pub fed: Option<Fed>,
    /// Start with empty state: no checkpoint and no changelog is read (the user asked to
    /// reset the rule's state).
    pub fresh: bool,
}

/// An input a node feeds to a rule itself, each payload with its broker offset (`None` is a
/// tick). The checkpoint keeps the next offset under `position`, a [`BROKER_POSITION`] name.
pub struct Fed {
    pub stream: String,
    pub position: String,
    pub rx: mpsc::Receiver<(Bytes, Option<u64>)>,
    /// For ticks and barrier wake-ups; weak, so the feeder's leaving ends the input.
    pub tx: mpsc::WeakSender<(Bytes, Option<u64>)>,
}

/// A started rule. Dropping it without [`RunningRule::stop`] leaves its tasks running.
pub struct RunningRule {
    pub metrics: Arc<RuleMetrics>,
    /// What takes input in: connector sources and the forwarders of the node's own topics.
    sources: Vec<JoinHandle<()>>,
    /// Asks the connector sources to stop taking input.
    stop_sources: tokio::sync::watch::Sender<bool>,
    /// A sender of each input channel, so that a stopping rule's feeds find their channels
    /// open (not ended) while they take in what is left.
    keep_open: Vec<mpsc::Sender<Bytes>>,
    tasks: Vec<JoinHandle<()>>,
    sinks: Vec<JoinHandle<()>>,
    subs: Vec<Subscription>,
    /// The feeds, sinks and forwarders of late events and snapshots: they end with the flow.
    pipeline: Vec<JoinHandle<()>>,
    flow: Option<Dataflow>,
    coordinator: Option<(mpsc::UnboundedSender<Command>, JoinHandle<()>)>,
    /// Set at stop: durable sources stop storing messages.
    closed: Arc<AtomicBool>,
    /// Whether state is mirrored to a changelog (stop waits for the last state to be in it).
    mirrored: bool,
    /// The positions of the checkpoint the rule started from.
    pub restored: BTreeMap<String, u64>,
}

/// The streams a program reads from outside and the streams its rules write.
pub fn boundary(program: &Program) -> (Vec<String>, Vec<String>) {
    let outputs: Vec<String> =
        program
            .rules
            .iter()
            .map(|r| r.sink.clone())
            .fold(Vec::new(), |mut v, s| {
                if !v.iter().any(|x: &String| x.eq_ignore_ascii_case(&s)) {
                    v.push(s);
                }
                v
            });
    let mut inputs: Vec<String> = Vec::new();
    for r in &program.rules {
        for i in r.inputs() {
            let written = outputs.iter().any(|o| o.eq_ignore_ascii_case(i));
            if !written && !inputs.iter().any(|x| x.eq_ignore_ascii_case(i)) {
                inputs.push(i.to_owned());
            }
        }
    }
    (inputs, outputs)
}

/// Why the connectors of `program`'s inputs and outputs cannot give `delivery` (none if they can).
pub fn delivery_refusals(program: &Program, delivery: Delivery) -> Vec<String> {
    let Ok(eps) = endpoints(program) else {
        return Vec::new();
    };
    let (inputs, outputs) = boundary(program);
    let mut refusals = Vec::new();
    for (names, input) in [(&inputs, true), (&outputs, false)] {
        for name in names {
            if let Some((def, ep)) = eps.iter().find(|(d, _)| d.name.eq_ignore_ascii_case(name)) {
                refusals.extend(delivery.refusal(&def.name, ep, input));
            }
        }
    }
    refusals
}

/// Streams paired with their connector, or with what is wrong with their options.
pub type Bound<T> = Vec<(StreamDef, T)>;

/// The connector endpoint of every stream a program touches, with every problem at once.
pub fn endpoints(program: &Program) -> Result<Bound<Endpoint>, Bound<String>> {
    let (inputs, outputs) = boundary(program);
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    for name in inputs.iter().chain(&outputs) {
        let Some(def) = program.stream(name) else {
            continue;
        };
        match Endpoint::from_options(&def.name, &def.options) {
            Ok(e) => ok.push((def.clone(), e)),
            Err(e) => bad.push((def.clone(), e.to_string())),
        }
        if let Err(e) = MessageDecoder::new(&def.options) {
            bad.push((def.clone(), format!("stream {}: {e}", def.name)));
        }
    }
    if bad.is_empty() {
        Ok(ok)
    } else {
        Err(bad)
    }
}

impl RunningRule {
    /// Starts `launch.program`; must be called from inside the async runtime.
    pub fn start(launch: Launch) -> Result<RunningRule, StartError> {
        let Launch {
            id,
            program,
            mut engine,
            hub,
            max_payload,
            delivery,
            interval,
            max_state_bytes,
            checkpoints,
            retention,
            outbox: (outbox_capacity, when_full),
            changelog,
            mut fed,
            fresh,
        } = launch;
        let eps = endpoints(&program).map_err(|bad| {
            StartError::user(
                bad.into_iter()
                    .map(|(_, e)| e)
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })?;
        let (inputs, outputs) = boundary(&program);
        let endpoint_of = |name: &str| {
            eps.iter()
                .find(|(d, _)| d.name.eq_ignore_ascii_case(name))
                .map(|(d, e)| (d.clone(), e.clone().for_rule(&id, &d.name)))
                .ok_or_else(|| StartError::internal(format!("stream {name} has no endpoint")))
        };
        let refusals = delivery_refusals(&program, delivery);
        if !refusals.is_empty() {
            return Err(StartError::user(refusals.join("; ")));
        }

        // Recovery: the newest intact checkpoint, if any.
        let mut status = CheckpointStatus {
            delivery: delivery.name(),
            interval_ms: interval.as_millis() as u64,
            max_state_bytes,
            ..CheckpointStatus::default()
        };
        let changelog = match &changelog {
            // Connecting is quick; the rule cannot start without its changelog anyway.
            Some(url) => Some(
                tokio::task::block_in_place(|| {
                    tokio::runtime::Handle::current().block_on(Changelog::open(url, &id))
                })
                .map_err(StartError::external)?,
            ),
            None => None,
        };
        let mut recovered = match fresh {
            true => None,
            false => checkpoints
                .latest(&id)
                .map_err(|e| StartError::external(e.to_string()))?,
        };
        if let Some(log) = changelog.as_ref().filter(|_| !fresh) {
            // The changelog is newer than this node's checkpoint when the rule ran elsewhere
            // since (a group task's partition that came back).
            let chains = weir_engine::chain_count(&program, engine.workers);
            let remote = tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(rebuild(
                    log,
                    &id,
                    chains,
                    engine.workers,
                ))
            });
            // An unreadable changelog only stops a rule that has nothing else to start from.
            let remote = match remote {
                Ok(r) => r,
                Err(e) if recovered.is_some() => {
                    tracing::warn!(rule = %id, error = %e, "changelog not read; starting from this node's checkpoint");
                    None
                }
                Err(e) => return Err(StartError::external(e)),
            };
            let epoch = |r: &Option<Recovered>| r.as_ref().map(|r| r.checkpoint.epoch);
            if epoch(&remote) > epoch(&recovered) {
                recovered = remote;
            }
        }
        let mut restore = None;
        if let Some(r) = &recovered {
            for why in &r.skipped {
                tracing::warn!(rule = %id, reason = %why, "checkpoint passed over");
            }
            status.restore_notes = r.skipped.clone();
            status.epoch = r.checkpoint.epoch;
            status.state_bytes = r.bytes;
            if r.checkpoint.workers != engine.workers {
                tracing::warn!(rule = %id, checkpoint = r.checkpoint.workers, asked = engine.workers, "running with the checkpoint's worker count, which its state is partitioned by");
                engine.workers = r.checkpoint.workers;
            }
            restore = Some(r.checkpoint.operators.clone());
        }
        let clock = engine.clock.clone();
        let workers = engine.workers;
        // State that does not fit is never dropped silently: the rule does not start, and the
        // user decides (start it with reset_state to begin afresh).
        let mut flow = Dataflow::build_restored(&program, &inputs, &outputs, engine, restore)
            .map_err(|e| match e {
                // Only the user can decide to drop state.
                BuildError::Restore { .. } => StartError::user(format!(
                    "{e} (checkpoint {}); to start it with empty state instead: POST /v1/rules/{id}/start?reset_state=true (weir rule start {id} --reset-state)",
                    status.epoch
                )),
                other => StartError {
                    blame: other.blame(),
                    message: other.to_string(),
                },
            })?;
        status.restored_from = recovered.as_ref().map(|r| r.checkpoint.epoch);
        let recovered = recovered.map(|r| r.checkpoint);
        let positions: BTreeMap<String, u64> = recovered
            .as_ref()
            .map(|c| c.positions.clone())
            .unwrap_or_default();
        let first_epoch = status.epoch;
        let checkpoint_status = Arc::new(Mutex::new(status));
        let failure = Arc::new(Mutex::new(None));
        let (stop_sources, stop) = weir_connectors::live::Stop::channel();
        let mut rule = RunningRule {
            metrics: Arc::new(RuleMetrics::new(
                Vec::new(),
                checkpoint_status.clone(),
                failure.clone(),
            )),
            sources: Vec::new(),
            stop_sources,
            keep_open: Vec::new(),
            tasks: Vec::new(),
            sinks: Vec::new(),
            subs: Vec::new(),
            pipeline: Vec::new(),
            flow: None,
            coordinator: None,
            closed: Arc::new(AtomicBool::new(false)),
            mirrored: changelog.is_some(),
            restored: positions.clone(),
        };
        let (report_tx, report_rx) = mpsc::unbounded_channel::<Report>();
        let specs = journals(&id, &program);
        let (mut private_logs, mut topic_logs) = (Vec::new(), Vec::new());
        let mut feeds = Vec::new();
        for name in &inputs {
            let (def, endpoint) = endpoint_of(name)?;
            let stage = Stage::new("source", &def.name, &endpoint);
            let mut ingest = flow
                .take_ingest(name)
                .ok_or(StartError::internal("input not built"))?;
            if let Some(wm) = recovered.as_ref().and_then(|c| c.watermarks.get(&def.name)) {
                ingest.resume_at(*wm);
            }
            let spec = specs
                .iter()
                .find(|j| j.input && j.stream.eq_ignore_ascii_case(name));
            if let Some(f) = fed.take_if(|f| f.stream.eq_ignore_ascii_case(name)) {
                stage.health.up();
                let tick = (Bytes::new(), None);
                rule.tasks.push(spawn_ticks(f.tx.clone(), tick.clone()));
                let wake = waker(f.tx, tick);
                let next = positions.get(&f.position).copied();
                let source = FeedSource::Numbered {
                    rx: f.rx,
                    position: f.position,
                    next,
                };
                feeds.push((def, ingest, source, stage, wake));
                continue;
            }
            let (tx, source, wake) = match spec.filter(|_| delivery.durable()) {
                Some(spec) => {
                    let log = hub
                        .store()
                        .log(&spec.log)
                        .map_err(|e| StartError::external(e.to_string()))?;
                    let start = hub
                        .store()
                        .meta_u64(&start_key(&id, &spec.log))
                        .ok()
                        .flatten();
                    let pos = positions
                        .get(&spec.log)
                        .copied()
                        .or(start)
                        .unwrap_or_else(|| log.end());
                    match spec.private {
                        true => private_logs.push(log.clone()),
                        false => topic_logs.push(log.clone()),
                    }
                    let tx = PayloadTx::Log(DurableInput {
                        log: log.clone(),
                        closed: rule.closed.clone(),
                        health: stage.health.clone(),
                    });
                    let nudged = log.clone();
                    let wake: Box<dyn Fn() + Send + Sync> = Box::new(move || nudged.nudge());
                    (tx, FeedSource::Log { log, pos }, wake)
                }
                None => {
                    let (tx, rx) = mpsc::channel::<Bytes>(1024);
                    rule.live_inputs(&hub, &def, &endpoint, &tx);
                    rule.keep_open.push(tx.clone());
                    let wake = waker(tx.downgrade(), Bytes::new());
                    (PayloadTx::Channel(tx), FeedSource::Channel(rx), wake)
                }
            };
            if let Some(task) = endpoint.spawn_source(tx, stage.health.clone(), stop.clone()) {
                rule.sources.push(task);
            } else {
                stage.health.up();
            }
            feeds.push((def, ingest, source, stage, wake));
        }
        for spec in specs.iter().filter(|j| !j.input && delivery.durable()) {
            topic_logs.push(
                hub.store()
                    .log(&spec.log)
                    .map_err(|e| StartError::external(e.to_string()))?,
            );
        }
        let mut drains = Vec::new();
        let mut staged_outputs = Vec::new();
        for name in &outputs {
            let (def, endpoint) = endpoint_of(name)?;
            let mut stage = Stage::new("sink", &def.name, &endpoint);
            let out = flow
                .take_output(name)
                .ok_or(StartError::internal("output not built"))?;
            let (tx, rx) = mpsc::channel::<Outgoing>(1024);
            match endpoint.spawn_sink(rx, stage.health.clone()) {
                Some(task) => rule.sinks.push(task),
                None => stage.health.up(),
            }
            let external = !matches!(endpoint, Endpoint::Embedded { .. });
            // A durable rule's external results are stored before they are sent.
            let target = match (external, delivery.durable()) {
                (true, true) => {
                    let outbox =
                        Outbox::open(hub.store(), &id, &def.name, outbox_capacity, when_full)
                            .map_err(|e| StartError::external(e.to_string()))?;
                    rule.tasks.push(tokio::spawn(
                        outbox.clone().forward(tx, stage.health.clone()),
                    ));
                    Arc::get_mut(&mut stage)
                        .ok_or(StartError::internal("stage shared too early"))?
                        .outbox = Some(outbox.clone());
                    Some(SinkTarget::Outbox(outbox, rule.closed.clone()))
                }
                (true, false) => Some(SinkTarget::Direct(tx)),
                (false, _) => None,
            };
            let topic = tap_topic(&def, &endpoint);
            let staging = (delivery == Delivery::ExactlyOnce).then(|| {
                staged_outputs.push(OutputTarget {
                    stream: def.name.clone(),
                    topic: topic.clone(),
                    outbox: stage.outbox.clone(),
                });
                (def.name.clone(), report_tx.clone())
            });
            drains.push((
                def.name.clone(),
                out,
                target,
                topic,
                stage,
                staging,
                def.sent_at.clone(),
            ));
        }
        rule.metrics = Arc::new(RuleMetrics {
            sources: feeds.iter().map(|f| f.3.clone()).collect(),
            engine: flow.stats().to_vec(),
            sinks: drains.iter().map(|d| d.4.clone()).collect(),
            ..Arc::into_inner(rule.metrics)
                .ok_or(StartError::internal("metrics shared too early"))?
        });
        for (_, out, sender, topic, stage, staging, sent_at) in drains {
            let sink = Sink {
                sender,
                hub: hub.clone(),
                topic,
                stage,
                metrics: rule.metrics.clone(),
                clock: clock.clone(),
                sent_at,
            };
            rule.pipeline.push(tokio::spawn(sink.run(out, staging)));
        }
        let mut ctls = Vec::new();
        for (def, ingest, source, stage, wake) in feeds {
            let ctl = Arc::new(FeedCtl::new(wake));
            ctls.push(ctl.clone());
            let feed = Feed {
                ingest,
                source,
                decoder: MessageDecoder::new(&def.options).map_err(StartError::user)?,
                max_payload,
                stage,
                metrics: rule.metrics.clone(),
                hub: hub.clone(),
                dead_topic: dead_letter_topic(&id),
                ctl,
                reports: report_tx.clone(),
                injected: first_epoch,
                rows: Vec::new(),
            };
            rule.pipeline.push(tokio::spawn(feed.run()));
        }
        if let Some(mut late) = flow.take_late() {
            let (hub, metrics) = (hub.clone(), rule.metrics.clone());
            let topic = format!("weir/late/{id}");
            rule.pipeline.push(tokio::spawn(async move {
                while let Some(l) = late.recv().await {
                    metrics.late.fetch_add(1, Ordering::Relaxed);
                    let doc = serde_json::json!({"rule": l.rule, "reason": l.reason, "ts": l.event.ts, "event": l.event.row});
                    let _ = hub.publish(&topic, Bytes::from(doc.to_string())).await;
                }
            }));
        }
        if let Some(mut snaps) = flow.take_snapshots() {
            let tx = report_tx.clone();
            rule.pipeline.push(tokio::spawn(async move {
                while let Some(s) = snaps.recv().await {
                    if tx.send(Report::Operator(s)).is_err() {
                        break;
                    }
                }
            }));
        }
        let changelog = changelog.map(|log| {
            let (tx, rx) = tokio::sync::watch::channel(None);
            rule.tasks.push(tokio::spawn(crate::checkpoint::mirror(
                log,
                rx,
                checkpoint_status.clone(),
            )));
            tx
        });
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let coordinator = Coordinator {
            id: id.clone(),
            delivery,
            interval,
            epoch: first_epoch,
            workers,
            chains: flow.chains(),
            feeds: ctls,
            staged_outputs,
            private_logs,
            topic_logs,
            retention,
            max_state_bytes,
            reports: report_rx,
            commands: cmd_rx,
            store: checkpoints,
            hub: hub.clone(),
            status: checkpoint_status,
            failure,
            recovered,
            changelog,
            pending: BTreeMap::new(),
            last: None,
        };
        rule.coordinator = Some((cmd_tx, tokio::spawn(coordinator.run())));
        rule.flow = Some(flow);
        Ok(rule)
    }

    /// Wires an at-most-once input: outside events arrive on the hub (HTTP ingest, the embedded
    /// MQTT endpoint) besides the connector, and an empty payload every 100 ms is a tick that
    /// lets processing time advance (and checkpoint barriers pass) without events.
    fn live_inputs(
        &mut self,
        hub: &Arc<Hub>,
        def: &StreamDef,
        endpoint: &Endpoint,
        tx: &mpsc::Sender<Bytes>,
    ) {
        let (hub_tx, mut hub_rx) = mpsc::channel::<Message>(1024);
        self.subs
            .push(hub.subscribe(&ingest_topic(def, endpoint), hub_tx, false));
        let fwd = tx.clone();
        self.sources.push(tokio::spawn(async move {
            while let Some(m) = hub_rx.recv().await {
                if fwd.send(m.payload).await.is_err() {
                    break;
                }
            }
        }));
        self.tasks.push(spawn_ticks(tx.downgrade(), Bytes::new()));
    }

    /// A stop's first step: the sources stop taking input, each after handing over (and
    /// acknowledging) the message it holds, and the node's topics stop feeding the rule. The
    /// last checkpoint then takes in everything they had taken, so nothing taken is lost and
    /// nothing is processed after it (a move hands exactly that state over).
    async fn stop_taking_input(&mut self) {
        let _ = self.stop_sources.send(true);
        // Forwarders from the node's topics end once they forwarded what they hold.
        self.subs.clear();
        for mut t in std::mem::take(&mut self.sources) {
            if tokio::time::timeout(Duration::from_secs(10), &mut t)
                .await
                .is_err()
            {
                tracing::warn!("a source did not stop within 10 s; it is cut off");
                t.abort();
            }
        }
    }

    /// Stops the rule: a last checkpoint, then sources, then every task.
    pub async fn stop(self) {
        self.halt(Command::Stop).await
    }

    /// Stops the rule without a last checkpoint, and without writing its changelog further:
    /// its state belongs to another node now.
    pub async fn abandon(self) {
        self.halt(Command::Abandon).await
    }

    async fn halt(mut self, how: Command) {
        let checkpoint = matches!(how, Command::Stop);
        if checkpoint {
            self.stop_taking_input().await;
        }
        if let Some((commands, coordinator)) = self.coordinator.take() {
            let _ = commands.send(how);
            let _ = coordinator.await;
        }
        // The last checkpoint's state goes to the changelog before its writer stops.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while checkpoint && self.mirrored && tokio::time::Instant::now() < deadline {
            let s = self
                .metrics
                .checkpoint
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            if s.changelog_epoch >= Some(s.epoch) || s.changelog_error.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.closed.store(true, Ordering::Relaxed);
        for t in self.sources.drain(..).chain(self.tasks.drain(..)) {
            t.abort();
            let _ = t.await;
        }
        self.subs.clear();
        self.keep_open.clear();
        for t in std::mem::take(&mut self.pipeline) {
            let _ = t.await;
        }
        if let Some(f) = self.flow.take() {
            f.ended().await;
        }
        for s in self.sinks.drain(..) {
            if tokio::time::timeout(Duration::from_secs(10), s)
                .await
                .is_err()
            {
                tracing::warn!("a sink did not finish within 10 s");
            }
        }
    }
}

/// Puts `tick` (an empty payload) into a feed's channel every 100 ms while the channel has
/// senders, so processing time advances and checkpoint barriers pass without events.
fn spawn_ticks<T: Clone + Send + 'static>(tx: mpsc::WeakSender<T>, tick: T) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_millis(100));
        loop {
            every.tick().await;
            let Some(tx) = tx.upgrade() else { break };
            if tx.try_send(tick.clone()).is_err() && tx.is_closed() {
                break;
            }
        }
    })
}

/// Wakes a feed waiting on its channel with one `tick`, if there is room (weak: the channel
/// still closes when its senders go).
fn waker<T: Clone + Send + Sync + 'static>(
    tx: mpsc::WeakSender<T>,
    tick: T,
) -> Box<dyn Fn() + Send + Sync> {
    Box::new(move || {
        if let Some(tx) = tx.upgrade() {
            let _ = tx.try_send(tick.clone());
        }
    })
}

/// How a checkpoint names a position in a broker rather than in a node's log: it means the same
/// on every node, so it comes back from a changelog.
pub const BROKER_POSITION: &str = "broker:";

/// A rule's state read back from its changelog, with the broker positions written with it
/// (log offsets are node-local and stay behind): `None` if the changelog holds no state for it.
async fn rebuild(
    log: &Changelog,
    id: &str,
    chains: usize,
    workers: usize,
) -> Result<Option<Recovered>, String> {
    let mut operators = Vec::with_capacity(chains);
    let (mut epoch, mut bytes) = (0, 0);
    for chain in 0..chains {
        let Some((e, state)) = log.get(chain).await? else {
            return Ok(None);
        };
        epoch = epoch.max(e);
        bytes += state.len() as u64;
        operators.push(
            serde_json::from_slice(&state)
                .map_err(|e| format!("changelog partition {chain} is not readable: {e}"))?,
        );
    }
    let inputs = match log.get_positions().await? {
        Some((e, p)) if e >= epoch => {
            let mut all: ChangelogInputs = serde_json::from_slice(&p)
                .map_err(|e| format!("changelog positions are not readable: {e}"))?;
            all.positions.retain(|k, _| k.starts_with(BROKER_POSITION));
            all
        }
        Some((e, _)) => {
            return Err(format!(
                "the changelog's positions (epoch {e}) are older than its state (epoch {epoch}): a write was cut short"
            ))
        }
        None => ChangelogInputs::default(),
    };
    Ok(Some(Recovered {
        checkpoint: Checkpoint {
            rule: id.to_owned(),
            epoch,
            created_ms: 0,
            workers,
            operators,
            positions: inputs.positions,
            watermarks: inputs.watermarks,
            staged: BTreeMap::new(),
        },
        bytes,
        skipped: vec![format!(
            "no checkpoint on this node: state rebuilt from the changelog (epoch {epoch})"
        )],
    }))
}

/// Where a feed reads.
enum FeedSource {
    /// At-most-once: payloads handed over directly (an empty one is a tick).
    Channel(mpsc::Receiver<Bytes>),
    /// At-least-once and exactly-once: a durable log, from `pos` on.
    Log { log: StreamLog, pos: u64 },
    /// Fed by the node with broker offsets; `next` is the offset after the last one taken.
    Numbered {
        rx: mpsc::Receiver<(Bytes, Option<u64>)>,
        position: String,
        next: Option<u64>,
    },
}

/// One input of a rule: decodes payloads into events (bad records become dead letters and the
/// rule goes on) and puts checkpoint barriers into the stream when asked.
struct Feed {
    ingest: Ingest,
    source: FeedSource,
    decoder: MessageDecoder,
    max_payload: usize,
    stage: Arc<Stage>,
    metrics: Arc<RuleMetrics>,
    hub: Arc<Hub>,
    dead_topic: String,
    ctl: Arc<FeedCtl>,
    reports: mpsc::UnboundedSender<Report>,
    /// The newest epoch whose barrier this feed has sent.
    injected: u64,
    rows: Vec<Result<Row, String>>,
}

/// Waits for one item, then takes whatever else is waiting (up to 1024), so the feed flushes
/// once per batch: batches under load, one event when idle. `None` once the channel closed.
async fn take_batch<T>(rx: &mut mpsc::Receiver<T>) -> Option<Vec<T>> {
    let mut batch = vec![rx.recv().await?];
    while let Ok(p) = rx.try_recv() {
        batch.push(p);
        if batch.len() >= 1024 {
            break;
        }
    }
    Some(batch)
}

impl Feed {
    async fn run(mut self) {
        loop {
            match &mut self.source {
                FeedSource::Channel(rx) => {
                    let Some(batch) = take_batch(rx).await else {
                        break;
                    };
                    self.stage.backlog.store(rx.len() as u64, Ordering::Relaxed);
                    for p in batch {
                        self.accept(&p).await;
                    }
                }
                FeedSource::Numbered { rx, next, .. } => {
                    let Some(batch) = take_batch(rx).await else {
                        break;
                    };
                    self.stage.backlog.store(rx.len() as u64, Ordering::Relaxed);
                    if let Some(o) = batch.iter().filter_map(|b| b.1).next_back() {
                        *next = Some(o + 1);
                    }
                    for (p, _) in batch {
                        self.accept(&p).await;
                    }
                }
                FeedSource::Log { log, pos } => {
                    if *pos < log.first() {
                        tracing::warn!(
                            log = log.name(),
                            lost = log.first() - *pos,
                            "entries were dropped by retention before this rule read them"
                        );
                        *pos = log.first();
                    }
                    if *pos > log.end() {
                        // The checkpoint is newer than the log (the log was removed, or the
                        // checkpoint came from another node): read what arrives from now on.
                        tracing::warn!(
                            log = log.name(),
                            position = *pos,
                            end = log.end(),
                            "checkpoint position is past the end of its log"
                        );
                        *pos = log.end();
                    }
                    match log.read(*pos, 1024) {
                        Ok(entries) if entries.is_empty() => {
                            log.grown_beyond(*pos, Duration::from_millis(100)).await;
                        }
                        Ok(entries) => {
                            let next = entries.last().map_or(*pos, |(o, _)| o + 1);
                            *pos = next;
                            let behind = log.end().saturating_sub(next);
                            self.stage.backlog.store(behind, Ordering::Relaxed);
                            for (_, p) in entries {
                                self.accept(&p).await;
                            }
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "input log not readable");
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                    }
                }
            }
            self.ingest.flush_async().await;
            if self.ctl.abandon.load(Ordering::Relaxed) {
                return;
            }
            let wanted = self.ctl.requested.load(Ordering::Relaxed);
            if wanted > self.injected {
                // The last checkpoint: everything the sources took goes in before its barrier,
                // nothing after it.
                let last = self.ctl.last.load(Ordering::Relaxed) == wanted;
                if last {
                    self.take_in_what_is_left().await;
                }
                self.injected = wanted;
                self.ingest.barrier_async(wanted).await;
                let (log, offset) = match &self.source {
                    FeedSource::Log { log, pos } => (Some(log.name().to_owned()), *pos),
                    FeedSource::Numbered {
                        position,
                        next: Some(n),
                        ..
                    } => (Some(position.clone()), *n),
                    FeedSource::Channel(_) | FeedSource::Numbered { .. } => (None, 0),
                };
                let _ = self.reports.send(Report::Position {
                    epoch: wanted,
                    log,
                    offset,
                    stream: self.ingest.stream().name.clone(),
                    watermark: (self.ingest.stream().time == TimeMode::Event)
                        .then(|| self.ingest.watermark()),
                });
                if last {
                    return;
                }
            }
        }
        if !self.ctl.abandon.load(Ordering::Relaxed) {
            self.ingest.end().await;
        }
    }

    /// Before the last barrier: the payloads the (stopped) sources handed over and the feed has
    /// not taken yet. A durable log is not read further: what is beyond the position stays in
    /// the log (or travels with a moved rule).
    async fn take_in_what_is_left(&mut self) {
        let mut left = Vec::new();
        match &mut self.source {
            FeedSource::Channel(rx) => {
                while let Ok(p) = rx.try_recv() {
                    left.push(p);
                }
            }
            FeedSource::Numbered { rx, next, .. } => {
                while let Ok((p, offset)) = rx.try_recv() {
                    if let Some(o) = offset {
                        *next = Some(o + 1);
                    }
                    left.push(p);
                }
            }
            FeedSource::Log { .. } => {}
        }
        for p in left {
            self.accept(&p).await;
        }
    }

    /// Decodes one payload into the stream; full batches go on at once, so a feed holds at
    /// most one batch beyond what its payload decoded to.
    async fn accept(&mut self, payload: &Bytes) {
        if payload.len() > self.max_payload {
            let why = format!(
                "payload of {} bytes is over the limit of {}",
                payload.len(),
                self.max_payload
            );
            return self.dead(why, payload).await;
        }
        if payload.is_empty() {
            return;
        }
        self.stage.received.fetch_add(1, Ordering::Relaxed);
        let mut rows = std::mem::take(&mut self.rows);
        self.decoder.decode(payload, &mut rows);
        for r in rows.drain(..) {
            match r.and_then(|row| self.ingest.stage(row)) {
                Ok(()) => {
                    self.stage.events.fetch_add(1, Ordering::Relaxed);
                }
                Err(reason) => self.dead(reason, payload).await,
            }
        }
        self.rows = rows;
        self.ingest.send_full().await;
    }

    async fn dead(&self, reason: String, raw: &[u8]) {
        self.metrics.dead_letters.fetch_add(1, Ordering::Relaxed);
        self.stage.errors.fetch_add(1, Ordering::Relaxed);
        let shown = String::from_utf8_lossy(&raw[..raw.len().min(4096)]).into_owned();
        let doc = serde_json::json!({"stream": self.ingest.stream().name, "reason": reason, "raw": shown});
        *self
            .metrics
            .last_dead_letter
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(reason);
        let _ = self
            .hub
            .publish(&self.dead_topic, Bytes::from(doc.to_string()))
            .await;
    }
}

/// Where an external sink's results go.
enum SinkTarget {
    /// Straight to the connector (at-most-once).
    Direct(mpsc::Sender<Outgoing>),
    /// Into the store-and-forward outbox; the flag is set when the rule stops.
    Outbox(Arc<Outbox>, Arc<AtomicBool>),
}

/// Encodes results and sends them to the sink connector (if any) and the hub.
struct Sink {
    sender: Option<SinkTarget>,
    hub: Arc<Hub>,
    topic: String,
    stage: Arc<Stage>,
    metrics: Arc<RuleMetrics>,
    clock: Arc<dyn Clock>,
    /// The stream's `sent_at` field, stamped with the time each result is encoded.
    sent_at: Option<Arc<str>>,
}

impl Sink {
    /// With `staging` (exactly-once), results are held per epoch and handed to the coordinator
    /// at each barrier instead of being published.
    async fn run(
        self,
        mut out: OutputStream,
        staging: Option<(String, mpsc::UnboundedSender<Report>)>,
    ) {
        let mut held = Vec::new();
        while let Some(delivered) = out.recv().await {
            let batch = match delivered {
                Delivered::Events(batch) => batch,
                Delivered::Barrier(epoch) => {
                    if let Some((stream, reports)) = &staging {
                        let _ = reports.send(Report::Staged {
                            epoch,
                            stream: stream.clone(),
                            payloads: std::mem::take(&mut held),
                        });
                    }
                    continue;
                }
            };
            let now = self.clock.now_ms();
            let mut shown = Vec::with_capacity(batch.len());
            for mut ev in batch {
                if let Some(field) = &self.sent_at {
                    ev.row.set(field, Value::Int(self.clock.now_ns()));
                }
                let payload = match serde_json::to_vec(&ev.row) {
                    Ok(p) => Bytes::from(p),
                    Err(e) => {
                        self.stage.errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(error = %e, "result not encoded");
                        continue;
                    }
                };
                self.metrics
                    .lag
                    .observe((now - ev.ts).max(0) as f64 / 1000.0);
                self.stage.received.fetch_add(1, Ordering::Relaxed);
                if staging.is_some() {
                    self.stage.events.fetch_add(1, Ordering::Relaxed);
                    held.push(payload);
                    continue;
                }
                let handed = match &self.sender {
                    Some(SinkTarget::Direct(tx)) => tx
                        .send(Outgoing {
                            payload: payload.clone(),
                            id: None,
                        })
                        .await
                        .map_err(|_| "the sink has stopped".to_owned()),
                    Some(SinkTarget::Outbox(outbox, closed)) => outbox
                        .put(payload.clone(), closed)
                        .await
                        .map_err(|e| e.to_string()),
                    None => {
                        self.stage.events.fetch_add(1, Ordering::Relaxed);
                        Ok(())
                    }
                };
                if let Err(e) = handed {
                    self.stage.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(error = %e, "result not handed to its sink");
                }
                shown.push(payload);
            }
            // One publish per batch: the hub looks its subscribers up once.
            if shown.is_empty() {
                continue;
            }
            if let Err(e) = self.hub.publish_all(&self.topic, &shown).await {
                self.stage
                    .errors
                    .fetch_add(shown.len() as u64, Ordering::Relaxed);
                tracing::error!(error = %e, "results not stored");
            }
        }
    }
}
