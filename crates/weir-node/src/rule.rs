//! A running rule: its compiled program on the engine, wired to connectors and the hub.
//!
//! ```text
//! connector source ─┐                                          ┌─> connector sink
//! hub (ingest, MQTT)┴─> feed thread: decode, stamp ─> engine ─> output thread: encode ─┴─> hub
//!                         └─> dead letters (hub topic weir/dead_letters/<rule>)
//! ```
//!
//! Stopping aborts the sources; the feeds see their channels close and end their streams, the
//! engine drains, and the sinks end when the last output is sent.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use prometheus_client::metrics::histogram::Histogram;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use weir_connectors::codec::MessageDecoder;
use weir_connectors::live::{Health, HealthReport};
use weir_connectors::Endpoint;
use weir_core::{Clock, Row};
use weir_engine::{Dataflow, EngineConfig, Ingest, OutputStream, RuleStats};
use weir_lang::plan::StreamDef;
use weir_lang::Program;

use crate::hub::{Hub, Message, Subscription};

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
}

impl Stage {
    fn new(kind: &str, stream: &str, endpoint: &Endpoint) -> Arc<Stage> {
        Arc::new(Stage {
            name: format!("{kind}:{stream}"),
            connector: endpoint.kind(),
            health: Arc::default(),
            received: AtomicU64::new(0),
            events: AtomicU64::new(0),
            errors: AtomicU64::new(0),
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
}

impl RuleMetrics {
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
        };
        let mut out: Vec<OperatorStatus> = self.sources.iter().map(stage).collect();
        out.extend(self.engine.iter().map(|r| OperatorStatus {
            name: format!("rule:{}", r.name),
            events_in: r.events_in.load(Ordering::Relaxed),
            events_out: r.events_out.load(Ordering::Relaxed),
            errors: r.late.load(Ordering::Relaxed),
            connector: None,
            health: None,
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
}

/// A started rule. Dropping it without [`RunningRule::stop`] leaves its threads running.
pub struct RunningRule {
    pub metrics: Arc<RuleMetrics>,
    tasks: Vec<JoinHandle<()>>,
    sinks: Vec<JoinHandle<()>>,
    subs: Vec<Subscription>,
    threads: Vec<std::thread::JoinHandle<()>>,
    flow: Option<Dataflow>,
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
    pub fn start(launch: Launch) -> Result<RunningRule, String> {
        let Launch {
            id,
            program,
            engine,
            hub,
            max_payload,
        } = launch;
        let eps = endpoints(&program).map_err(|bad| {
            bad.into_iter()
                .map(|(_, e)| e)
                .collect::<Vec<_>>()
                .join("; ")
        })?;
        let (inputs, outputs) = boundary(&program);
        let clock = engine.clock.clone();
        let mut flow =
            Dataflow::build(&program, &inputs, &outputs, engine).map_err(|e| e.to_string())?;
        let endpoint_of = |name: &str| {
            eps.iter()
                .find(|(d, _)| d.name.eq_ignore_ascii_case(name))
                .cloned()
                .ok_or_else(|| format!("stream {name} has no endpoint"))
        };
        let mut rule = RunningRule {
            metrics: Arc::new(RuleMetrics {
                sources: Vec::new(),
                engine: Vec::new(),
                sinks: Vec::new(),
                dead_letters: AtomicU64::new(0),
                late: AtomicU64::new(0),
                last_dead_letter: Mutex::new(None),
                lag: Histogram::new([
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0,
                ]),
            }),
            tasks: Vec::new(),
            sinks: Vec::new(),
            subs: Vec::new(),
            threads: Vec::new(),
            flow: None,
        };
        let mut feeds = Vec::new();
        for name in &inputs {
            let (def, endpoint) = endpoint_of(name)?;
            let stage = Stage::new("source", &def.name, &endpoint);
            let ingest = flow.take_ingest(name).ok_or("input not built")?;
            let (tx, rx) = mpsc::channel::<Bytes>(1024);
            if let Some(task) = endpoint.spawn_source(tx.clone(), stage.health.clone()) {
                rule.tasks.push(task);
            } else {
                stage.health.up();
            }
            // Outside events also arrive on the hub (HTTP ingest, the embedded MQTT endpoint).
            let (hub_tx, mut hub_rx) = mpsc::channel::<Message>(1024);
            rule.subs
                .push(hub.subscribe(&ingest_topic(&def, &endpoint), hub_tx, false));
            let fwd = tx.clone();
            rule.tasks.push(tokio::spawn(async move {
                while let Some(m) = hub_rx.recv().await {
                    if fwd.send(m.payload).await.is_err() {
                        break;
                    }
                }
            }));
            // An empty payload is a tick: it lets processing time advance without events.
            let tick = tx;
            rule.tasks.push(tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_millis(100));
                loop {
                    every.tick().await;
                    if tick.is_closed() {
                        break;
                    }
                    let _ = tick.try_send(Bytes::new());
                }
            }));
            feeds.push((def, ingest, rx, stage));
        }
        let mut drains = Vec::new();
        for name in &outputs {
            let (def, endpoint) = endpoint_of(name)?;
            let stage = Stage::new("sink", &def.name, &endpoint);
            let out = flow.take_output(name).ok_or("output not built")?;
            let (tx, rx) = mpsc::channel::<Bytes>(1024);
            match endpoint.spawn_sink(rx, stage.health.clone()) {
                Some(task) => rule.sinks.push(task),
                None => stage.health.up(),
            }
            let external = !matches!(endpoint, Endpoint::Embedded { .. });
            drains.push((
                def.name.clone(),
                out,
                external.then_some(tx),
                tap_topic(&def, &endpoint),
                stage,
            ));
        }
        rule.metrics = Arc::new(RuleMetrics {
            sources: feeds.iter().map(|f| f.3.clone()).collect(),
            engine: flow.stats().to_vec(),
            sinks: drains.iter().map(|d| d.4.clone()).collect(),
            ..Arc::into_inner(rule.metrics).ok_or("metrics shared too early")?
        });
        for (name, out, sender, topic, stage) in drains {
            let (hub, metrics, clock) = (hub.clone(), rule.metrics.clone(), clock.clone());
            rule.threads
                .push(spawn_thread(&format!("{id}-out-{name}"), move || {
                    output_loop(out, sender, &hub, &topic, &stage, &metrics, clock.as_ref())
                })?);
        }
        for (def, ingest, rx, stage) in feeds {
            let (hub, metrics) = (hub.clone(), rule.metrics.clone());
            let topic = dead_letter_topic(&id);
            let decoder = MessageDecoder::new(&def.options)?;
            rule.threads
                .push(spawn_thread(&format!("{id}-in-{}", def.name), move || {
                    feed_loop(
                        ingest,
                        rx,
                        decoder,
                        max_payload,
                        &stage,
                        &metrics,
                        &hub,
                        &topic,
                    )
                })?);
        }
        if let Some(late) = flow.take_late() {
            let (hub, metrics) = (hub.clone(), rule.metrics.clone());
            let topic = format!("weir/late/{id}");
            rule.threads.push(spawn_thread(&format!("{id}-late"), move || {
                for l in late {
                    metrics.late.fetch_add(1, Ordering::Relaxed);
                    let doc = serde_json::json!({"rule": l.rule, "reason": l.reason, "ts": l.event.ts, "event": l.event.row});
                    hub.publish_blocking(&topic, Bytes::from(doc.to_string()));
                }
            })?);
        }
        rule.flow = Some(flow);
        Ok(rule)
    }

    /// Stops the rule: sources first, then everything drains in order. Blocks until done.
    pub async fn stop(mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
            let _ = t.await;
        }
        self.subs.clear();
        let threads = std::mem::take(&mut self.threads);
        let flow = self.flow.take();
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
            if let Some(f) = flow {
                f.join();
            }
        })
        .await;
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

fn spawn_thread(
    name: &str,
    f: impl FnOnce() + Send + 'static,
) -> Result<std::thread::JoinHandle<()>, String> {
    std::thread::Builder::new()
        .name(name.chars().take(15).collect())
        .spawn(f)
        .map_err(|e| format!("could not start a thread: {e}"))
}

/// Decodes payloads into events; bad records become dead letters and the rule goes on.
#[allow(clippy::too_many_arguments)]
fn feed_loop(
    mut ingest: Ingest,
    mut rx: mpsc::Receiver<Bytes>,
    mut decoder: MessageDecoder,
    max_payload: usize,
    stage: &Stage,
    metrics: &RuleMetrics,
    hub: &Hub,
    dead_topic: &str,
) {
    let stream = ingest.stream().name.clone();
    let mut rows: Vec<Result<Row, String>> = Vec::new();
    let dead = |reason: String, raw: &[u8]| {
        metrics.dead_letters.fetch_add(1, Ordering::Relaxed);
        stage.errors.fetch_add(1, Ordering::Relaxed);
        let shown = String::from_utf8_lossy(&raw[..raw.len().min(4096)]).into_owned();
        let doc = serde_json::json!({"stream": stream, "reason": reason, "raw": shown});
        *metrics
            .last_dead_letter
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(reason);
        hub.publish_blocking(dead_topic, Bytes::from(doc.to_string()));
    };
    while let Some(first) = rx.blocking_recv() {
        let mut next = Some(first);
        // Take whatever is waiting, then flush once: batches under load, one event when idle.
        while let Some(payload) = next.take() {
            if payload.len() > max_payload {
                dead(
                    format!(
                        "payload of {} bytes is over the limit of {max_payload}",
                        payload.len()
                    ),
                    &payload,
                );
            } else if !payload.is_empty() {
                stage.received.fetch_add(1, Ordering::Relaxed);
                decoder.decode(&payload, &mut rows);
                for r in rows.drain(..) {
                    match r.and_then(|row| ingest.push(row)) {
                        Ok(()) => {
                            stage.events.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(reason) => dead(reason, &payload),
                    }
                }
            }
            next = rx.try_recv().ok();
        }
        ingest.flush();
    }
    ingest.finish();
}

/// Encodes results and sends them to the sink connector (if any) and the hub.
fn output_loop(
    out: OutputStream,
    sink: Option<mpsc::Sender<Bytes>>,
    hub: &Hub,
    topic: &str,
    stage: &Stage,
    metrics: &RuleMetrics,
    clock: &dyn Clock,
) {
    for batch in out {
        let now = clock.now_ms();
        for ev in batch {
            let payload = match serde_json::to_vec(&ev.row) {
                Ok(p) => Bytes::from(p),
                Err(e) => {
                    stage.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "result not encoded");
                    continue;
                }
            };
            metrics.lag.observe((now - ev.ts).max(0) as f64 / 1000.0);
            stage.received.fetch_add(1, Ordering::Relaxed);
            match &sink {
                Some(tx) => {
                    if tx.blocking_send(payload.clone()).is_err() {
                        stage.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                None => {
                    stage.events.fetch_add(1, Ordering::Relaxed);
                }
            }
            hub.publish_blocking(topic, payload);
        }
    }
}
