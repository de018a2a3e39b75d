//! The runtime: turns a program into threads joined by bounded channels.
//!
//! Every stream has producers (an [`Ingest`] for outside input, or the workers of the rules that
//! write it) and consumers (rules and [`OutputStream`]s). A consumer tracks the watermark of
//! each producer of each input and advances to their minimum, so event time stays correct with
//! any number of parallel producers. A keyed rule runs one operator chain per worker thread;
//! its router thread hashes each event's key to pick the worker, so a key's state lives in one
//! place. Channels are bounded: a slow stage blocks its producers instead of growing memory.
//!
//! Checkpoints use barriers (Chandy-Lamport, as Flink aligns them): [`Ingest::barrier`] puts a
//! numbered barrier into a stream; a consumer with several producers holds back what arrives
//! behind the barrier on one slot until it has the barrier from every slot, snapshots its
//! operator, and passes the barrier on. When the barrier reaches an [`OutputStream`], everything
//! before it has been emitted and every operator has reported its state for that epoch.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use weir_core::{Clock, Event, Row, SystemClock, Value};
use weir_lang::expr::Expr;
use weir_lang::functions::parse_timestamp;
use weir_lang::plan::{Body, Column, Input, Program, Rule, StreamDef, TimeMode};

use crate::operator::{held_back, Chain, Operator, Output};
use crate::ops::join::JoinOp;
use crate::ops::pattern::PatternOp;
use crate::ops::project::ProjectOp;
use crate::ops::window::window_operator;

/// What flows on a channel. A batch is shared by the consumers of its stream: each takes its
/// own copy on its own thread (the last one takes the batch itself), so a stream read by many
/// rules does not make its producer copy for all of them.
#[derive(Debug, Clone)]
pub enum Msg {
    Data(Arc<Vec<Event>>),
    Watermark(i64),
    /// Checkpoint barrier of an epoch.
    Barrier(u64),
    End,
}

/// A shared batch as this consumer's own events.
fn own(batch: Arc<Vec<Event>>) -> Vec<Event> {
    Arc::try_unwrap(batch).unwrap_or_else(|shared| (*shared).clone())
}

/// A message and the consumer-side slot (input × producer) it arrived on.
struct Envelope {
    slot: usize,
    msg: Msg,
}

/// Engine settings, validated by [`EngineConfig::validate`] before anything starts.
#[derive(Clone)]
pub struct EngineConfig {
    /// Worker threads per keyed rule.
    pub workers: usize,
    /// Batches a channel holds before its producer waits.
    pub channel_capacity: usize,
    /// Events per batch at ingest.
    pub batch_size: usize,
    pub clock: Arc<dyn Clock>,
    /// Per-key state unused for this long (event time, ms) is dropped.
    pub state_ttl_ms: Option<i64>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            channel_capacity: 16,
            batch_size: 1024,
            clock: Arc::new(SystemClock),
            state_ttl_ms: None,
        }
    }
}

/// Errors building a dataflow.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("invalid engine setting: {0}")]
    Config(String),
    #[error("unknown stream '{0}'")]
    UnknownStream(String),
    #[error("could not start a thread: {0}")]
    Thread(#[from] std::io::Error),
    #[error("the checkpoint does not fit this rule: {0}")]
    Restore(String),
}

impl weir_core::Classify for BuildError {
    fn blame(&self) -> weir_core::Blame {
        match self {
            BuildError::Thread(_) => weir_core::Blame::External,
            BuildError::Restore(_) => weir_core::Blame::Internal,
            _ => weir_core::Blame::User,
        }
    }
}

impl EngineConfig {
    pub fn validate(&self) -> Result<(), BuildError> {
        let mut problems = Vec::new();
        if self.workers == 0 || self.workers > 256 {
            problems.push(format!("workers must be 1..=256, not {}", self.workers));
        }
        if self.channel_capacity == 0 {
            problems.push("channel_capacity must be at least 1".to_owned());
        }
        if self.batch_size == 0 {
            problems.push("batch_size must be at least 1".to_owned());
        }
        if self.state_ttl_ms.is_some_and(|t| t <= 0) {
            problems.push("state_ttl must be positive".to_owned());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(BuildError::Config(problems.join("; ")))
        }
    }
}

/// An event that arrived after its time had passed, with the rule and the reason.
#[derive(Debug, Clone)]
pub struct LateEvent {
    pub rule: String,
    pub reason: String,
    pub event: Event,
}

/// One operator chain's state at a checkpoint barrier.
#[derive(Debug)]
pub struct OperatorSnapshot {
    pub epoch: u64,
    /// Which chain: rules in program order, then workers in order (see [`Dataflow::chains`]).
    pub index: usize,
    pub state: crate::state::Snapshot,
}

/// Live counters of one rule.
#[derive(Debug, Default)]
pub struct RuleStats {
    pub name: String,
    pub events_in: AtomicU64,
    pub events_out: AtomicU64,
    pub late: AtomicU64,
}

/// Sends one producer's messages to every consumer of a stream.
#[derive(Clone, Default)]
struct Publisher {
    subs: Vec<(SyncSender<Envelope>, usize)>,
    /// The stream's timestamp column, when events take their time from a field on the way in.
    retime: Option<Arc<str>>,
    /// Extra watermark delay declared on the stream.
    delay: i64,
}

impl Publisher {
    fn send(&self, msg: Msg) {
        let msg = match msg {
            Msg::Data(mut evs) if self.retime.is_some() => {
                let col = self.retime.as_deref().unwrap_or_default();
                for e in Arc::make_mut(&mut evs).iter_mut() {
                    if let Some(ts) = e.row.get(col).and_then(timestamp_of) {
                        e.ts = ts;
                    }
                }
                Msg::Data(evs)
            }
            Msg::Watermark(w) => Msg::Watermark(held_back(w, self.delay)),
            other => other,
        };
        if let Msg::Data(d) = &msg {
            if d.is_empty() {
                return;
            }
        }
        let mut msg = Some(msg);
        let n = self.subs.len();
        for (i, (tx, slot)) in self.subs.iter().enumerate() {
            // The last subscriber takes the message itself; only fan-out pays for copies.
            let m = if i + 1 == n { msg.take() } else { msg.clone() };
            if let Some(m) = m {
                // A consumer that has gone away (output closed) is not an error for the producer.
                let _ = tx.send(Envelope {
                    slot: *slot,
                    msg: m,
                });
            }
        }
    }
}

/// Combines the watermarks of several slots: the minimum of those not yet ended.
struct Tracker {
    wms: Vec<i64>,
    ended: Vec<bool>,
    current: i64,
}

impl Tracker {
    fn new(slots: usize) -> Tracker {
        Tracker {
            wms: vec![i64::MIN; slots],
            ended: vec![false; slots],
            current: i64::MIN,
        }
    }

    /// Records a slot's watermark; returns the combined one if it advanced.
    fn watermark(&mut self, slot: usize, wm: i64) -> Option<i64> {
        self.wms[slot] = self.wms[slot].max(wm);
        self.advance()
    }

    fn end(&mut self, slot: usize) -> Option<i64> {
        self.ended[slot] = true;
        self.advance()
    }

    fn all_ended(&self) -> bool {
        self.ended.iter().all(|e| *e)
    }

    fn advance(&mut self) -> Option<i64> {
        let min = self
            .wms
            .iter()
            .zip(&self.ended)
            .filter(|(_, e)| !**e)
            .map(|(w, _)| *w)
            .min()
            .unwrap_or(i64::MAX);
        if min > self.current && !self.all_ended() {
            self.current = min;
            Some(min)
        } else {
            None
        }
    }
}

/// What a consumer takes from its channel: a message from one slot, or a barrier every slot has
/// delivered.
enum Next {
    Msg(Envelope),
    Barrier(u64),
}

/// A consumer's channel with barrier alignment: once a slot has delivered the barrier of the
/// current epoch, its later messages are held until every slot still running has delivered it.
struct Inbox {
    rx: Receiver<Envelope>,
    at_barrier: Vec<bool>,
    ended: Vec<bool>,
    held: Vec<VecDeque<Msg>>,
    ready: VecDeque<Envelope>,
    epoch: Option<u64>,
}

impl Inbox {
    fn new(rx: Receiver<Envelope>, slots: usize) -> Inbox {
        Inbox {
            rx,
            at_barrier: vec![false; slots],
            ended: vec![false; slots],
            held: (0..slots).map(|_| VecDeque::new()).collect(),
            ready: VecDeque::new(),
            epoch: None,
        }
    }

    fn next(&mut self) -> Option<Next> {
        loop {
            let env = match self.ready.pop_front() {
                Some(e) => e,
                None => self.rx.recv().ok()?,
            };
            let slot = env.slot;
            if self.at_barrier[slot] {
                self.held[slot].push_back(env.msg);
                continue;
            }
            match env.msg {
                Msg::Barrier(e) => {
                    self.at_barrier[slot] = true;
                    self.epoch = Some(e);
                }
                Msg::End => {
                    self.ended[slot] = true;
                    if self.epoch.is_none() || !self.aligned() {
                        return Some(Next::Msg(env));
                    }
                    // This end completes the barrier: the barrier goes first.
                    self.ready.push_front(env);
                }
                _ => return Some(Next::Msg(env)),
            }
            if self.epoch.is_some() && self.aligned() {
                for (slot, held) in self.held.iter_mut().enumerate() {
                    self.ready
                        .extend(held.drain(..).map(|msg| Envelope { slot, msg }));
                }
                self.at_barrier.iter_mut().for_each(|b| *b = false);
                return self.epoch.take().map(Next::Barrier);
            }
        }
    }

    fn aligned(&self) -> bool {
        self.at_barrier
            .iter()
            .zip(&self.ended)
            .all(|(b, e)| *b || *e)
    }
}

/// Reads a timestamp from a field: epoch milliseconds, or ISO-8601 text.
fn timestamp_of(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::Float(f) if f.is_finite() => Some(*f as i64),
        Value::Str(s) => parse_timestamp(s),
        _ => None,
    }
}

/// Turns a row of an outside stream into an event: converts declared columns to their types and
/// reads the event time. Cheap to clone, so decoders can stamp rows in parallel.
#[derive(Clone)]
pub struct Stamp {
    def: Arc<StreamDef>,
    clock: Arc<dyn Clock>,
    /// The fields some rule reads, when no rule reads them all: the rest are dropped here
    /// rather than copied to every rule.
    pruning: Option<Arc<Pruning>>,
    /// The stream's `received_at` field, when some rule reads it.
    received_at: Option<Arc<str>>,
}

/// What ingest does with each field name when some fields go unread: keep it or not, and
/// which declared column checks it. A bit filter in front turns most other names away
/// without string comparisons.
struct Pruning {
    fields: BTreeMap<Arc<str>, (bool, Option<usize>)>,
    filter: [u64; 16],
}

impl Pruning {
    fn new(keep: BTreeSet<Arc<str>>, columns: &[Column]) -> Pruning {
        let mut fields: BTreeMap<Arc<str>, (bool, Option<usize>)> =
            keep.into_iter().map(|k| (k, (true, None))).collect();
        for (i, c) in columns.iter().enumerate() {
            fields.entry(c.name.clone()).or_insert((false, None)).1 = Some(i);
        }
        let mut filter = [0u64; 16];
        for n in fields.keys() {
            let h = Self::bit(n);
            filter[h / 64] |= 1 << (h % 64);
        }
        Pruning { fields, filter }
    }

    /// A bit from the length and the first and last two bytes of a name.
    fn bit(name: &str) -> usize {
        let b = name.as_bytes();
        let at = |i: usize| b.get(i).copied().unwrap_or(0) as usize;
        let n = b.len();
        (n.wrapping_mul(131)
            ^ at(0).wrapping_mul(31)
            ^ at(n.wrapping_sub(1)).wrapping_mul(7)
            ^ at(n.wrapping_sub(2)).wrapping_mul(193))
            % 1024
    }

    /// (kept, declared column) for a field name.
    fn get(&self, name: &str) -> (bool, Option<usize>) {
        let h = Self::bit(name);
        if self.filter[h / 64] & (1 << (h % 64)) == 0 {
            return (false, None);
        }
        self.fields.get(name).copied().unwrap_or((false, None))
    }
}

impl Stamp {
    /// The stamp of input stream `def` of `program`: it drops the fields no rule reads.
    fn new(program: &Program, def: StreamDef, clock: Arc<dyn Clock>) -> Stamp {
        let pruning = fields_read(program, &def.name).map(|mut f| {
            f.extend(def.timestamp.clone());
            Arc::new(Pruning::new(f, def.columns.as_deref().unwrap_or_default()))
        });
        let received_at = def
            .received_at
            .clone()
            .filter(|f| pruning.as_ref().is_none_or(|p| p.get(f).0));
        Stamp {
            def: Arc::new(def),
            clock,
            pruning,
            received_at,
        }
    }

    /// `Err` says why the row cannot be an event (it should go to the dead letters).
    pub fn event(&self, mut row: Row) -> Result<Event, String> {
        let cast = |c: &Column, v: &mut Value| -> Result<(), String> {
            if !c.ty.holds(v) {
                *v = c.ty.cast(v).map_err(|e| format!("field {}: {e}", c.name))?;
            }
            Ok(())
        };
        let cols = self.def.columns.as_deref().unwrap_or_default();
        match &self.pruning {
            // One pass: every declared column is still checked, then unread fields go.
            Some(p) => {
                let mut bad = Ok(());
                row.retain_mut(|k, v| {
                    let (kept, column) = p.get(k);
                    if let (Some(c), true) = (column, bad.is_ok()) {
                        bad = cast(&cols[c], v);
                    }
                    kept
                });
                bad?;
            }
            None => {
                for c in cols {
                    if let Some(v) = row.get_mut(&c.name) {
                        cast(c, v)?;
                    }
                }
            }
        }
        if let Some(field) = &self.received_at {
            row.set(field, Value::Int(self.clock.now_ns()));
        }
        let ts = match (self.def.time, &self.def.timestamp) {
            (TimeMode::Event, Some(col)) => match row.get(col) {
                None | Some(Value::Null) => return Err(format!("missing timestamp field '{col}'")),
                Some(v) => timestamp_of(v).ok_or_else(|| format!("timestamp field '{col}' holds {v}, not epoch milliseconds or ISO-8601 text"))?,
            },
            _ => self.clock.now_ms(),
        };
        Ok(Event::new(ts, row))
    }
}

/// Feeds outside events into one stream: stamps them, batches them and generates watermarks
/// (bounded out-of-orderness).
pub struct Ingest {
    stamp: Stamp,
    publisher: Publisher,
    batch: Vec<Event>,
    batch_size: usize,
    max_ts: i64,
    last_wm: i64,
}

impl Ingest {
    /// Accepts one row; `Err` says why the row cannot be an event (it should go to the dead
    /// letters).
    pub fn push(&mut self, row: Row) -> Result<(), String> {
        let ev = self.stamp.event(row)?;
        self.push_event(ev);
        Ok(())
    }

    /// Accepts an event already stamped by this stream's [`Stamp`].
    pub fn push_event(&mut self, ev: Event) {
        self.max_ts = self.max_ts.max(ev.ts);
        self.batch.push(ev);
        if self.batch.len() >= self.batch_size {
            self.flush();
        }
    }

    pub fn stamp(&self) -> Stamp {
        self.stamp.clone()
    }

    /// Sends the pending batch and the watermark it allows.
    pub fn flush(&mut self) {
        if !self.batch.is_empty() {
            let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(self.batch_size));
            self.publisher.send(Msg::Data(Arc::new(batch)));
        }
        let wm = match self.stamp.def.time {
            TimeMode::Processing => self.stamp.clock.now_ms() - 1,
            TimeMode::Event if self.max_ts == i64::MIN => return,
            TimeMode::Event => self.max_ts - self.stamp.def.watermark_ms - 1,
        };
        if wm > self.last_wm {
            self.last_wm = wm;
            self.publisher.send(Msg::Watermark(wm));
        }
    }

    /// Puts the barrier of checkpoint `epoch` into the stream, after everything pushed so far.
    pub fn barrier(&mut self, epoch: u64) {
        self.flush();
        self.publisher.send(Msg::Barrier(epoch));
    }

    /// Ends the stream: everything is flushed and consumers learn no more events will come.
    pub fn finish(mut self) {
        self.flush();
        self.publisher.send(Msg::End);
    }

    pub fn stream(&self) -> &StreamDef {
        &self.stamp.def
    }
}

/// The events of one stream, for the program that runs the dataflow (files, stdout, tests).
pub struct OutputStream {
    inbox: Inbox,
    tracker: Tracker,
}

/// What an output stream delivers: events, or the news that a checkpoint barrier has passed
/// (every event before it has been delivered).
#[derive(Debug)]
pub enum Delivered {
    Events(Vec<Event>),
    Barrier(u64),
}

impl OutputStream {
    /// The next batch or barrier; `None` once every producer has ended.
    pub fn next_delivered(&mut self) -> Option<Delivered> {
        if self.tracker.all_ended() {
            return None;
        }
        while let Some(next) = self.inbox.next() {
            let env = match next {
                Next::Barrier(e) => return Some(Delivered::Barrier(e)),
                Next::Msg(env) => env,
            };
            match env.msg {
                Msg::Data(d) => return Some(Delivered::Events(own(d))),
                Msg::Watermark(w) => {
                    self.tracker.watermark(env.slot, w);
                }
                Msg::Barrier(_) => {}
                Msg::End => {
                    self.tracker.end(env.slot);
                    if self.tracker.all_ended() {
                        return None;
                    }
                }
            }
        }
        None
    }
}

impl Iterator for OutputStream {
    type Item = Vec<Event>;

    /// The next batch (barriers skipped); `None` once every producer has ended.
    fn next(&mut self) -> Option<Vec<Event>> {
        loop {
            match self.next_delivered()? {
                Delivered::Events(e) => return Some(e),
                Delivered::Barrier(_) => {}
            }
        }
    }
}

/// A running program.
pub struct Dataflow {
    ingests: Vec<Ingest>,
    outputs: Vec<(String, OutputStream)>,
    late: Option<Receiver<LateEvent>>,
    snapshots: Option<Receiver<OperatorSnapshot>>,
    chains: usize,
    threads: Vec<JoinHandle<()>>,
    stats: Vec<Arc<RuleStats>>,
}

/// How a rule's events are spread over workers.
enum Routing {
    /// One operator chain, run by the router thread itself.
    Single,
    /// Key expressions per input; equal keys go to the same worker.
    Keyed(Vec<Vec<Expr>>),
}

impl Routing {
    /// Operator chains (worker threads) a rule runs with `workers` per keyed rule.
    fn chains(&self, workers: usize) -> usize {
        match self {
            Routing::Single => 1,
            Routing::Keyed(_) => workers,
        }
    }
}

fn routing(rule: &Rule) -> Routing {
    let stateless_body = matches!(&rule.body, Body::Project(p) if p.changes.is_empty());
    match (&rule.input, &rule.body) {
        (Input::Stream(_), Body::Aggregate(a)) if !a.keys.is_empty() => {
            Routing::Keyed(vec![a.keys.clone()])
        }
        (Input::Stream(_), Body::Project(p))
            if !p.changes.is_empty() && !p.partition.is_empty() =>
        {
            Routing::Keyed(vec![p.partition.clone()])
        }
        (Input::Join(j), _) if stateless_body && !j.left_keys.is_empty() => {
            Routing::Keyed(vec![j.left_keys.clone(), j.right_keys.clone()])
        }
        (Input::Pattern(p), _) if stateless_body && !p.partition.is_empty() => {
            Routing::Keyed(vec![p.partition.clone()])
        }
        _ => Routing::Single,
    }
}

/// How many operator chains (state partitions) a program runs with `workers` workers per keyed
/// rule: what a checkpoint holds one snapshot for each of.
pub fn chain_count(program: &Program, workers: usize) -> usize {
    program
        .rules
        .iter()
        .map(|r| routing(r).chains(workers))
        .sum()
}

/// The fields of `stream` the program's rules read; `None` if one of them may read them all.
fn fields_read(program: &Program, stream: &str) -> Option<BTreeSet<Arc<str>>> {
    let mut all = BTreeSet::new();
    for r in &program.rules {
        if r.inputs().iter().any(|i| i.eq_ignore_ascii_case(stream)) {
            all.extend(r.fields_read()?);
        }
    }
    Some(all)
}

/// The operator chain of one rule (one per worker).
pub fn rule_operator(program: &Program, rule: &Rule) -> Box<dyn Operator> {
    let first_input = program.stream(rule.inputs()[0]);
    let lateness = first_input.map_or(0, |s| s.allowed_lateness_ms);
    // A join's output is in no particular order, so only a rule reading one stream can take it
    // in arrival order.
    let arrival =
        !matches!(rule.input, Input::Join(_)) && first_input.is_some_and(|s| s.arrival_order);
    let body: Box<dyn Operator> = match &rule.body {
        Body::Project(p) => Box::new(ProjectOp::new(
            rule.filter.clone(),
            p.items.clone(),
            p.changes.clone(),
            p.partition.clone(),
            arrival,
        )),
        Body::Aggregate(a) => window_operator(rule.filter.clone(), a.clone(), lateness, arrival),
    };
    match &rule.input {
        Input::Stream(_) => body,
        Input::Join(j) => Box::new(Chain::new(vec![Box::new(JoinOp::new((**j).clone())), body])),
        Input::Pattern(p) => Box::new(Chain::new(vec![
            Box::new(PatternOp::new((**p).clone(), arrival)),
            body,
        ])),
    }
}

fn route(keys: &[Expr], row: &Row, workers: usize) -> usize {
    let mut h = DefaultHasher::new();
    for k in keys {
        k.eval(row).hash(&mut h);
    }
    (h.finish() % workers as u64) as usize
}

/// Runs an operator over one message and publishes what it produced.
struct Runner {
    op: Box<dyn Operator>,
    index: usize,
    out: Publisher,
    late: SyncSender<LateEvent>,
    snapshots: Sender<OperatorSnapshot>,
    stats: Arc<RuleStats>,
}

impl Runner {
    /// A batch other consumers hold too: the operator reads it without taking it.
    fn data_shared(&mut self, input: usize, batch: &[Event]) {
        self.stats
            .events_in
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let mut out = Output::default();
        for e in batch {
            self.op.on_event_ref(input, e, &mut out);
        }
        self.publish(out);
    }

    fn data(&mut self, input: usize, batch: Vec<Event>) {
        self.stats
            .events_in
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let mut out = Output::default();
        for e in batch {
            self.op.on_event(input, e, &mut out);
        }
        self.publish(out);
    }

    fn watermark(&mut self, wm: i64) {
        let mut out = Output::default();
        self.op.on_watermark(wm, &mut out);
        self.publish(out);
        self.out
            .send(Msg::Watermark(held_back(wm, self.op.watermark_delay())));
    }

    /// Reports the operator's state for `epoch` and passes the barrier on.
    fn barrier(&mut self, epoch: u64) {
        let _ = self.snapshots.send(OperatorSnapshot {
            epoch,
            index: self.index,
            state: self.op.snapshot(),
        });
        self.out.send(Msg::Barrier(epoch));
    }

    fn end(&mut self) {
        let mut out = Output::default();
        self.op.on_end(&mut out);
        self.publish(out);
        self.out.send(Msg::End);
    }

    fn publish(&mut self, out: Output) {
        self.stats
            .events_out
            .fetch_add(out.events.len() as u64, Ordering::Relaxed);
        self.stats
            .late
            .fetch_add(out.late.len() as u64, Ordering::Relaxed);
        for (event, reason) in out.late {
            let _ = self.late.send(LateEvent {
                rule: self.stats.name.clone(),
                reason,
                event,
            });
        }
        self.out.send(Msg::Data(Arc::new(out.events)));
    }
}

enum WorkerMsg {
    Data(usize, Vec<Event>),
    Watermark(i64),
    Barrier(u64),
    End,
}

impl Dataflow {
    /// Wires and starts a program. `inputs` are the streams fed from outside through
    /// [`Dataflow::take_ingest`]; `outputs` the streams read through [`Dataflow::take_output`].
    pub fn build(
        program: &Program,
        inputs: &[String],
        outputs: &[String],
        config: EngineConfig,
    ) -> Result<Dataflow, BuildError> {
        Dataflow::build_restored(program, inputs, outputs, config, None)
    }

    /// Like [`Dataflow::build`], with every operator chain restored from a checkpoint's
    /// snapshots (in [`OperatorSnapshot::index`] order).
    pub fn build_restored(
        program: &Program,
        inputs: &[String],
        outputs: &[String],
        config: EngineConfig,
        restore: Option<Vec<crate::state::Snapshot>>,
    ) -> Result<Dataflow, BuildError> {
        config.validate()?;
        let find = |name: &str| {
            program
                .stream(name)
                .cloned()
                .ok_or_else(|| BuildError::UnknownStream(name.to_owned()))
        };
        let input_defs: Vec<StreamDef> =
            inputs.iter().map(|n| find(n)).collect::<Result<_, _>>()?;
        let output_defs: Vec<StreamDef> =
            outputs.iter().map(|n| find(n)).collect::<Result<_, _>>()?;
        let key = |s: &str| s.to_ascii_lowercase();

        // Producers of each stream: ingest, and each worker of each rule writing it.
        let plans: Vec<(Routing, usize)> = program
            .rules
            .iter()
            .map(|r| {
                let rt = routing(r);
                let workers = rt.chains(config.workers);
                (rt, workers)
            })
            .collect();
        #[derive(Clone, Copy)]
        enum Producer {
            Ingest(usize),
            Worker(usize, usize),
        }
        let mut producers: std::collections::HashMap<String, Vec<Producer>> = Default::default();
        for (i, d) in input_defs.iter().enumerate() {
            producers
                .entry(key(&d.name))
                .or_default()
                .push(Producer::Ingest(i));
        }
        for (r, rule) in program.rules.iter().enumerate() {
            for w in 0..plans[r].1 {
                producers
                    .entry(key(&rule.sink))
                    .or_default()
                    .push(Producer::Worker(r, w));
            }
        }
        let mut ingest_pubs: Vec<Publisher> = vec![Publisher::default(); input_defs.len()];
        let mut worker_pubs: Vec<Vec<Publisher>> = plans
            .iter()
            .map(|(_, w)| vec![Publisher::default(); *w])
            .collect();
        for (r, rule) in program.rules.iter().enumerate() {
            let sink = program.stream(&rule.sink);
            for p in worker_pubs[r].iter_mut() {
                if let Some(s) = sink.filter(|s| s.declared) {
                    p.retime = s.timestamp.clone().filter(|_| s.time == TimeMode::Event);
                    p.delay = s.watermark_ms;
                }
            }
        }
        // Subscribes a consumer to a stream; returns the slots it will see, each tagged with the input.
        let mut subscribe =
            |tx: &SyncSender<Envelope>, stream: &str, input: usize, slots: &mut Vec<usize>| {
                for p in producers.get(&key(stream)).into_iter().flatten() {
                    let slot = slots.len();
                    slots.push(input);
                    let publisher = match *p {
                        Producer::Ingest(i) => &mut ingest_pubs[i],
                        Producer::Worker(r, w) => &mut worker_pubs[r][w],
                    };
                    publisher.subs.push((tx.clone(), slot));
                }
            };

        let (late_tx, late_rx) = sync_channel::<LateEvent>(config.channel_capacity * 64);
        let mut rule_rx = Vec::new();
        let mut stats = Vec::new();
        for rule in &program.rules {
            let (tx, rx) = sync_channel::<Envelope>(config.channel_capacity);
            let mut slots = Vec::new();
            for (i, s) in rule.inputs().iter().enumerate() {
                subscribe(&tx, s, i, &mut slots);
            }
            rule_rx.push((rx, slots));
            stats.push(Arc::new(RuleStats {
                name: rule.name.clone(),
                ..Default::default()
            }));
        }
        let mut outs = Vec::new();
        for d in &output_defs {
            let (tx, rx) = sync_channel::<Envelope>(config.channel_capacity);
            let mut slots = Vec::new();
            subscribe(&tx, &d.name, 0, &mut slots);
            outs.push((
                d.name.clone(),
                OutputStream {
                    inbox: Inbox::new(rx, slots.len()),
                    tracker: Tracker::new(slots.len()),
                },
            ));
        }

        let chains: usize = plans.iter().map(|(_, w)| w).sum();
        let mut restore = match restore {
            None => None,
            Some(states) if states.len() == chains => Some(states.into_iter()),
            Some(states) => {
                return Err(BuildError::Restore(format!(
                    "{} operator snapshots for {chains} operator chains (was the worker count changed?)",
                    states.len()
                )))
            }
        };
        let (snap_tx, snap_rx) = channel::<OperatorSnapshot>();
        let mut index = 0;

        let mut threads = Vec::new();
        for (r, ((rx, slots), (rt, _))) in rule_rx.into_iter().zip(plans).enumerate() {
            let rule = &program.rules[r];
            let pubs = std::mem::take(&mut worker_pubs[r]);
            let mut runners: Vec<Runner> = Vec::with_capacity(pubs.len());
            for out in pubs {
                let mut op = rule_operator(program, rule);
                if let Some(ttl) = config.state_ttl_ms {
                    op.set_state_ttl(ttl);
                }
                if let Some(state) = restore.as_mut().and_then(|s| s.next()) {
                    op.restore(&state)
                        .map_err(|e| BuildError::Restore(format!("rule {}: {e}", rule.name)))?;
                }
                runners.push(Runner {
                    op,
                    index,
                    out,
                    late: late_tx.clone(),
                    snapshots: snap_tx.clone(),
                    stats: stats[r].clone(),
                });
                index += 1;
            }
            let name = format!("rule-{r}");
            match rt {
                Routing::Single => {
                    let runner = runners.pop().expect("one runner");
                    threads.push(
                        std::thread::Builder::new()
                            .name(name)
                            .spawn(move || run_single(rx, slots, runner))?,
                    );
                }
                Routing::Keyed(keys) => {
                    let mut worker_tx = Vec::new();
                    for (w, runner) in runners.into_iter().enumerate() {
                        let (tx, wrx) = sync_channel::<WorkerMsg>(config.channel_capacity);
                        worker_tx.push(tx);
                        threads.push(
                            std::thread::Builder::new()
                                .name(format!("{name}-w{w}"))
                                .spawn(move || run_worker(wrx, runner))?,
                        );
                    }
                    threads.push(
                        std::thread::Builder::new()
                            .name(name)
                            .spawn(move || run_router(rx, slots, keys, worker_tx))?,
                    );
                }
            }
        }
        let ingests = input_defs
            .into_iter()
            .zip(ingest_pubs)
            .map(|(def, publisher)| Ingest {
                stamp: Stamp::new(program, def, config.clock.clone()),
                publisher,
                batch: Vec::with_capacity(config.batch_size),
                batch_size: config.batch_size,
                max_ts: i64::MIN,
                last_wm: i64::MIN,
            })
            .collect();
        Ok(Dataflow {
            ingests,
            outputs: outs,
            late: Some(late_rx),
            snapshots: Some(snap_rx),
            chains,
            threads,
            stats,
        })
    }

    /// Operator snapshots, one per chain per checkpoint barrier.
    pub fn take_snapshots(&mut self) -> Option<Receiver<OperatorSnapshot>> {
        self.snapshots.take()
    }

    /// How many operator chains run (and report a snapshot at each barrier).
    pub fn chains(&self) -> usize {
        self.chains
    }

    /// The ingest handle of an input stream named at build time.
    pub fn take_ingest(&mut self, stream: &str) -> Option<Ingest> {
        let i = self
            .ingests
            .iter()
            .position(|g| g.stream().name.eq_ignore_ascii_case(stream))?;
        Some(self.ingests.swap_remove(i))
    }

    pub fn take_output(&mut self, stream: &str) -> Option<OutputStream> {
        let i = self
            .outputs
            .iter()
            .position(|(n, _)| n.eq_ignore_ascii_case(stream))?;
        Some(self.outputs.swap_remove(i).1)
    }

    /// Late events of every rule; read it, or late events will eventually block their rules.
    pub fn take_late(&mut self) -> Option<Receiver<LateEvent>> {
        self.late.take()
    }

    pub fn stats(&self) -> &[Arc<RuleStats>] {
        &self.stats
    }

    /// Waits for every rule to finish (after all inputs ended).
    pub fn join(mut self) {
        // Unused ingests and late receivers must not keep the flow alive.
        for g in std::mem::take(&mut self.ingests) {
            g.finish();
        }
        drop(self.late.take());
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn run_single(rx: Receiver<Envelope>, slots: Vec<usize>, mut runner: Runner) {
    let mut tracker = Tracker::new(slots.len());
    if slots.is_empty() {
        runner.end();
        return;
    }
    let mut inbox = Inbox::new(rx, slots.len());
    while let Some(next) = inbox.next() {
        let env = match next {
            Next::Barrier(e) => {
                runner.barrier(e);
                continue;
            }
            Next::Msg(env) => env,
        };
        match env.msg {
            Msg::Data(d) => match Arc::try_unwrap(d) {
                Ok(batch) => runner.data(slots[env.slot], batch),
                Err(shared) => runner.data_shared(slots[env.slot], &shared),
            },
            Msg::Watermark(w) => {
                if let Some(wm) = tracker.watermark(env.slot, w) {
                    runner.watermark(wm);
                }
            }
            Msg::End => {
                if let Some(wm) = tracker.end(env.slot) {
                    runner.watermark(wm);
                }
                if tracker.all_ended() {
                    runner.end();
                    return;
                }
            }
            Msg::Barrier(_) => {}
        }
    }
}

fn run_router(
    rx: Receiver<Envelope>,
    slots: Vec<usize>,
    keys: Vec<Vec<Expr>>,
    workers: Vec<SyncSender<WorkerMsg>>,
) {
    let mut tracker = Tracker::new(slots.len());
    let n = workers.len();
    let broadcast = |m: &dyn Fn() -> WorkerMsg| {
        for w in &workers {
            let _ = w.send(m());
        }
    };
    if slots.is_empty() {
        broadcast(&|| WorkerMsg::End);
        return;
    }
    let mut inbox = Inbox::new(rx, slots.len());
    while let Some(next) = inbox.next() {
        let env = match next {
            Next::Barrier(e) => {
                broadcast(&|| WorkerMsg::Barrier(e));
                continue;
            }
            Next::Msg(env) => env,
        };
        match env.msg {
            Msg::Data(d) => {
                let input = slots[env.slot];
                let mut parts: Vec<Vec<Event>> = (0..n).map(|_| Vec::new()).collect();
                for e in own(d) {
                    parts[route(&keys[input], &e.row, n)].push(e);
                }
                for (w, part) in parts.into_iter().enumerate() {
                    if !part.is_empty() {
                        let _ = workers[w].send(WorkerMsg::Data(input, part));
                    }
                }
            }
            Msg::Watermark(w) => {
                if let Some(wm) = tracker.watermark(env.slot, w) {
                    broadcast(&|| WorkerMsg::Watermark(wm));
                }
            }
            Msg::End => {
                if let Some(wm) = tracker.end(env.slot) {
                    broadcast(&|| WorkerMsg::Watermark(wm));
                }
                if tracker.all_ended() {
                    broadcast(&|| WorkerMsg::End);
                    return;
                }
            }
            Msg::Barrier(_) => {}
        }
    }
}

fn run_worker(rx: Receiver<WorkerMsg>, mut runner: Runner) {
    while let Ok(m) = rx.recv() {
        match m {
            WorkerMsg::Data(input, d) => runner.data(input, d),
            WorkerMsg::Watermark(wm) => runner.watermark(wm),
            WorkerMsg::Barrier(e) => runner.barrier(e),
            WorkerMsg::End => {
                runner.end();
                return;
            }
        }
    }
}

/// Everything one run over in-memory inputs produced.
#[derive(Debug, Default)]
pub struct BatchResult {
    /// Events per requested output stream, in arrival order.
    pub outputs: std::collections::BTreeMap<String, Vec<Event>>,
    pub late: Vec<LateEvent>,
    /// Rows the ingest refused, with the reason.
    pub rejected: Vec<(String, Row, String)>,
}

/// Runs a program to completion over in-memory inputs: every input is read, every window
/// flushed. For tests, examples and tools that hold their input already.
pub fn run_batch(
    program: &Program,
    inputs: Vec<(String, Vec<Row>)>,
    outputs: &[String],
    config: EngineConfig,
) -> Result<BatchResult, BuildError> {
    let names: Vec<String> = inputs.iter().map(|(n, _)| n.clone()).collect();
    let mut flow = Dataflow::build(program, &names, outputs, config)?;
    let late = flow.take_late().expect("fresh dataflow");
    let mut result = BatchResult::default();
    std::thread::scope(|s| {
        let feeders: Vec<_> = inputs
            .into_iter()
            .map(|(name, rows)| {
                let mut ingest = flow.take_ingest(&name).expect("declared at build");
                s.spawn(move || {
                    let mut rejected = Vec::new();
                    for row in rows {
                        if let Err(reason) = ingest.push(row.clone()) {
                            rejected.push((name.clone(), row, reason));
                        }
                    }
                    ingest.finish();
                    rejected
                })
            })
            .collect();
        let readers: Vec<_> = outputs
            .iter()
            .map(|name| {
                let out = flow.take_output(name).expect("declared at build");
                let name = name.clone();
                s.spawn(move || (name, out.flatten().collect::<Vec<Event>>()))
            })
            .collect();
        let late_reader = s.spawn(move || late.iter().collect::<Vec<_>>());
        for f in feeders {
            result.rejected.extend(f.join().unwrap_or_default());
        }
        for r in readers {
            if let Ok((name, evs)) = r.join() {
                result.outputs.insert(name, evs);
            }
        }
        flow.join();
        result.late = late_reader.join().unwrap_or_default();
    });
    Ok(result)
}
