//! A running rule: its compiled program on the engine, wired to connectors and the hub.
//!
//! ```text
//! connector source ─┐                                          ┌─> connector sink
//! hub (ingest, MQTT)┴─> feed task: decode, stamp ─> engine ─> sink task: encode ─┴─> hub
//!                         └─> dead letters (hub topic weir/dead_letters/<rule>)
//! ```
//!
//! The feed and sink tasks run on the engine's worker pool beside the operator chains, so a
//! batch crosses no thread of another runtime on its way through a rule.
//!
//! Rules with at-least-once or exactly-once delivery read their inputs from durable logs
//! instead (see [`crate::delivery`]), and every rule is checkpointed by its
//! [`Coordinator`]: it starts from its newest checkpoint.
//! Stopping takes a last checkpoint, then the feeds leave the engine without ending their
//! streams, so open windows stay in the checkpoint for the next start instead of being flushed.

mod feed;
mod metrics;
mod recovery;
mod sink;

pub use metrics::{OperatorStatus, RuleMetrics, Stage};
pub use recovery::BROKER_POSITION;

use feed::{Feed, FeedSource};
use recovery::{recover, Recovery};
use sink::{Sink, SinkTarget};

use crate::start_error::StartError;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use weir_core::Classify;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use weir_connectors::codec::MessageDecoder;
use weir_connectors::live::{DurableInput, Outgoing, PayloadTx};
use weir_connectors::Endpoint;
use weir_engine::{BuildError, Dataflow, EngineConfig};
use weir_lang::plan::{StreamDef, TimeMode};
use weir_lang::Program;
use weir_state::CheckpointStore;

use crate::checkpoint::{CheckpointStatus, Command, Coordinator, FeedCtl, OutputTarget, Report};
use crate::delivery::Delivery;
use crate::hub::{Hub, Published, Subscription};
use crate::outbox::{Outbox, WhenFull};

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

/// The hub topic a rule's dead letters are published on.
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
    /// The stream.
    pub stream: String,
    /// The hub filter whose messages go into the log.
    pub filter: String,
    /// The log's name.
    pub log: String,
    /// Whether the rule reads it (an input) rather than writes it.
    pub input: bool,
    /// Whether the rule alone reads it (trimmed to its checkpoint).
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

/// Settings a rule starts with.
pub struct Launch {
    /// The rule's id.
    pub id: String,
    /// Its compiled program.
    pub program: Program,
    /// Engine settings (workers, batch size, clock).
    pub engine: EngineConfig,
    /// The node's hub.
    pub hub: Arc<Hub>,
    /// The largest payload taken.
    pub max_payload: usize,
    /// Its delivery guarantee.
    pub delivery: Delivery,
    /// Time between checkpoints.
    pub interval: Duration,
    /// The limit on its state, if any.
    pub max_state_bytes: Option<u64>,
    /// Where checkpoints are kept.
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
    /// The stream it feeds.
    pub stream: String,
    /// The checkpoint name of the position.
    pub position: String,
    /// The payloads, each with its offset.
    pub rx: mpsc::Receiver<(Bytes, Option<u64>)>,
    /// For ticks and barrier wake-ups; weak, so the feeder's leaving ends the input.
    pub tx: mpsc::WeakSender<(Bytes, Option<u64>)>,
}

/// A started rule. Dropping it without [`RunningRule::stop`] leaves its tasks running.
pub struct RunningRule {
    /// Its live figures.
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
    /// Starts `launch.program`: its state recovered, then its tasks wired and spawned.
    pub async fn start(launch: Launch) -> Result<RunningRule, StartError> {
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
        let chains = weir_engine::chain_count(&program, engine.workers);
        let Recovery {
            changelog,
            recovered,
        } = recover(
            &id,
            changelog.as_deref(),
            &checkpoints,
            fresh,
            chains,
            engine.workers,
        )
        .await?;
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
        let pool = engine.pool.clone();
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
                    let hub = Some(rule.live_inputs(&hub, &def, &endpoint, &tx, flow.uses_time()));
                    rule.keep_open.push(tx.clone());
                    let wake = waker(tx.downgrade(), Bytes::new());
                    (
                        PayloadTx::Channel(tx),
                        FeedSource::Channel { rx, hub },
                        wake,
                    )
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
            rule.pipeline.push(pool.spawn(sink.run(out, staging)));
        }
        let mut ctls = Vec::new();
        for (def, ingest, source, stage, wake) in feeds {
            let ctl = Arc::new(FeedCtl::new(wake));
            ctls.push(ctl.clone());
            let decoder = MessageDecoder::new(&def.options).map_err(StartError::user)?;
            let shared_decoding = decoder
                .sharing_key()
                .map(|k| format!("decoded {k} max {max_payload}"));
            let feed = Feed {
                shared_stamping: shared_decoding
                    .as_ref()
                    .map(|k| format!("stamped {} from {k}", ingest.sharing_key())),
                shared_decoding,
                ingest,
                source,
                decoder,
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
            rule.pipeline.push(pool.spawn(feed.run()));
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
            input_only: !flow.uses_time(),
            taken_at: None,
        };
        rule.coordinator = Some((cmd_tx, tokio::spawn(coordinator.run())));
        rule.flow = Some(flow);
        Ok(rule)
    }

    /// Wires an at-most-once input: outside events arrive on the hub (HTTP ingest, the embedded
    /// MQTT endpoint) as shared batches besides the connector's payloads, and an empty payload
    /// every 100 ms is a tick that lets processing time advance without events, when the
    /// stream is on processing time and an operator acts on time (`ticks`).
    fn live_inputs(
        &mut self,
        hub: &Arc<Hub>,
        def: &StreamDef,
        endpoint: &Endpoint,
        tx: &mpsc::Sender<Bytes>,
        ticks: bool,
    ) -> mpsc::Receiver<Arc<Published>> {
        let (hub_tx, hub_rx) = mpsc::channel(64);
        self.subs
            .push(hub.read(&ingest_topic(def, endpoint), hub_tx));
        if ticks && def.time == TimeMode::Processing {
            self.tasks.push(spawn_ticks(tx.downgrade(), Bytes::new()));
        }
        hub_rx
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
