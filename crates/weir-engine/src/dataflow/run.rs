//! The tasks of a rule on the worker pool: a runner drives its operator chain over the messages
//! of its inputs; a keyed rule has a router task that hashes events to partition tasks, each
//! with its chain.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::mpsc;

use weir_core::hash::KeyHasher;
use weir_core::Event;
use weir_lang::expr::Expr;
use weir_lang::plan::{Body, Input, Program, Rule};

use super::channel::{own, Envelope, Inbox, Msg, Next, Publisher, Tracker};
use super::routing::route;
use super::{LateEvent, OperatorSnapshot, RuleStats};
use crate::operator::{held_back, Chain, Operator, Output};
use crate::ops::join::JoinOp;
use crate::ops::pattern::PatternOp;
use crate::ops::project::ProjectOp;
use crate::ops::window::window_operator;

/// The operator chain of one rule (one per worker), each operator with the fingerprint of the
/// part of the rule its state depends on: a checkpoint restores into an updated rule only where
/// that part is unchanged (a new `WHERE`, projection or sink keeps the state).
pub fn rule_chain(program: &Program, rule: &Rule) -> Chain {
    let first_input = program.stream(rule.inputs()[0]);
    let lateness = first_input.map_or(0, |s| s.allowed_lateness_ms);
    // A join's output is in no particular order, so only a rule reading one stream can take it
    // in arrival order.
    let arrival =
        !matches!(rule.input, Input::Join(_)) && first_input.is_some_and(|s| s.arrival_order);
    let body: (Box<dyn Operator>, u64) = match &rule.body {
        Body::Project(p) => (
            Box::new(ProjectOp::new(
                rule.filter.clone(),
                p.items.clone(),
                p.changes.clone(),
                p.partition.clone(),
                arrival,
            )),
            fingerprint(&(&p.changes, &p.partition, arrival)),
        ),
        Body::Aggregate(a) => (
            window_operator(rule.filter.clone(), a.clone(), lateness, arrival),
            fingerprint(&(&a.window, &a.keys, &a.aggs, arrival)),
        ),
    };
    let mut ops = Vec::with_capacity(2);
    match &rule.input {
        Input::Stream(_) => {}
        Input::Join(j) => ops.push((
            Box::new(JoinOp::new((**j).clone())) as Box<dyn Operator>,
            fingerprint(&(
                &j.left,
                &j.right,
                &j.left_keys,
                &j.right_keys,
                j.lower_ms,
                j.upper_ms,
                j.semi,
                j.time,
            )),
        )),
        Input::Pattern(p) => ops.push((
            Box::new(PatternOp::new((**p).clone(), arrival)),
            fingerprint(&(
                &p.partition,
                &p.symbols,
                &p.defines,
                &p.pattern,
                &p.skip,
                p.within_ms,
                arrival,
            )),
        )),
    }
    ops.push(body);
    Chain::new(ops)
}

/// A fingerprint of a definition, from its debug form.
fn fingerprint(definition: &impl std::fmt::Debug) -> u64 {
    let mut h = KeyHasher::default();
    h.write(format!("{definition:?}").as_bytes());
    h.finish()
}

/// Runs a rule's operator chain over its input and publishes what it produced.
pub(super) struct Runner {
    pub(super) chain: Chain,
    pub(super) index: usize,
    pub(super) out: Publisher,
    pub(super) late: mpsc::Sender<LateEvent>,
    pub(super) snapshots: mpsc::UnboundedSender<OperatorSnapshot>,
    pub(super) stats: Arc<RuleStats>,
    /// The newest watermark sent downstream.
    pub(super) sent: i64,
}

impl Runner {
    /// A batch of input `input`; `wm_of` says what watermark all inputs together had reached
    /// before each event.
    async fn data(
        &mut self,
        input: usize,
        batch: Vec<Event>,
        mut wm_of: impl FnMut(&Event) -> i64,
    ) {
        self.stats
            .events_in
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let mut out = Output::default();
        let evs = batch.into_iter().map(|e| {
            let wm = wm_of(&e);
            (e, wm)
        });
        self.chain.on_events(input, evs, &mut out);
        self.publish(out).await;
    }

    /// A batch other consumers hold too: the operators read it without taking it.
    async fn data_shared(
        &mut self,
        input: usize,
        batch: &[Event],
        mut wm_of: impl FnMut(&Event) -> i64,
    ) {
        self.stats
            .events_in
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let mut out = Output::default();
        let evs = batch.iter().map(|e| (e, wm_of(e)));
        self.chain.on_events_ref(input, evs, &mut out);
        self.publish(out).await;
    }

    /// Event time of every input has reached `wm`: what is due fires, and the watermark goes on
    /// downstream (held back by the chain's delay).
    async fn watermark(&mut self, wm: i64) {
        let mut out = Output::default();
        self.chain.on_watermark(wm, &mut out);
        self.publish(out).await;
        let down = held_back(self.chain.watermark(), self.chain.watermark_delay());
        if down > self.sent {
            self.sent = down;
            self.out.send(Msg::Watermark(down)).await;
        }
    }

    /// Reports the operators' state for `epoch` and passes the barrier on.
    async fn barrier(&mut self, epoch: u64) {
        let _ = self.snapshots.send(OperatorSnapshot {
            epoch,
            index: self.index,
            state: self.chain.snapshot().map_err(|e| e.to_string()),
        });
        self.out.send(Msg::Barrier(epoch)).await;
    }

    async fn end(&mut self) {
        let mut out = Output::default();
        self.chain.on_end(&mut out);
        self.publish(out).await;
        self.out.send(Msg::End).await;
    }

    async fn publish(&mut self, out: Output) {
        self.stats
            .events_out
            .fetch_add(out.events.len() as u64, Ordering::Relaxed);
        self.stats
            .late
            .fetch_add(out.late.len() as u64, Ordering::Relaxed);
        for (event, reason) in out.late {
            let late = LateEvent {
                rule: self.stats.name.clone(),
                reason,
                event,
            };
            let _ = self.late.send(late).await;
        }
        self.out.send(Msg::Data(Arc::new(out.events))).await;
    }
}

/// What a router hands a worker: its share of a batch with the watermark every input had
/// reached before each event (the router sees them all; a worker only its own keys).
pub(super) enum WorkerMsg {
    Data(usize, Vec<Event>, Vec<i64>),
    Watermark(i64),
    Barrier(u64),
    End,
}

/// The task of a rule with one operator chain.
pub(super) async fn run_single(
    rx: mpsc::Receiver<Envelope>,
    slots: Vec<usize>,
    mut runner: Runner,
) {
    let mut tracker = Tracker::new(slots.len());
    if slots.is_empty() {
        runner.end().await;
        return;
    }
    let mut inbox = Inbox::new(rx, slots.len());
    while let Some(next) = inbox.next().await {
        let env = match next {
            Next::Barrier(e) => {
                runner.barrier(e).await;
                continue;
            }
            Next::Msg(env) => env,
        };
        let slot = env.slot;
        let mut wm_of = |e: &Event| {
            tracker.watermark(slot, e.wm);
            tracker.current()
        };
        match env.msg {
            Msg::Data(d) => match Arc::try_unwrap(d) {
                Ok(batch) => runner.data(slots[slot], batch, &mut wm_of).await,
                Err(shared) => runner.data_shared(slots[slot], &shared, &mut wm_of).await,
            },
            Msg::Watermark(w) => {
                tracker.watermark(slot, w);
                runner.watermark(tracker.current()).await;
            }
            Msg::End => {
                tracker.end(slot);
                if tracker.all_ended() {
                    runner.end().await;
                    return;
                }
                runner.watermark(tracker.current()).await;
            }
            Msg::Barrier(_) => {}
        }
    }
}

/// Sends a message to every partition of a keyed rule.
async fn broadcast(workers: &[mpsc::Sender<WorkerMsg>], m: impl Fn() -> WorkerMsg) {
    for w in workers {
        let _ = w.send(m()).await;
    }
}

/// The router task of a keyed rule: hashes each event's key to the partition that holds its
/// state.
pub(super) async fn run_router(
    rx: mpsc::Receiver<Envelope>,
    slots: Vec<usize>,
    keys: Vec<Vec<Expr>>,
    workers: Vec<mpsc::Sender<WorkerMsg>>,
) {
    let mut tracker = Tracker::new(slots.len());
    let n = workers.len();
    if slots.is_empty() {
        broadcast(&workers, || WorkerMsg::End).await;
        return;
    }
    let mut sent = i64::MIN;
    let mut inbox = Inbox::new(rx, slots.len());
    while let Some(next) = inbox.next().await {
        let env = match next {
            Next::Barrier(e) => {
                broadcast(&workers, || WorkerMsg::Barrier(e)).await;
                continue;
            }
            Next::Msg(env) => env,
        };
        match env.msg {
            Msg::Data(d) => {
                let input = slots[env.slot];
                let mut parts: Vec<(Vec<Event>, Vec<i64>)> =
                    (0..n).map(|_| Default::default()).collect();
                for e in own(d) {
                    tracker.watermark(env.slot, e.wm);
                    let part = &mut parts[route(&keys[input], &e.row, n)];
                    part.1.push(tracker.current());
                    part.0.push(e);
                }
                for (w, (evs, wms)) in parts.into_iter().enumerate() {
                    if !evs.is_empty() {
                        let _ = workers[w].send(WorkerMsg::Data(input, evs, wms)).await;
                    }
                }
                continue;
            }
            Msg::Watermark(w) => {
                tracker.watermark(env.slot, w);
            }
            Msg::End => {
                tracker.end(env.slot);
                if tracker.all_ended() {
                    broadcast(&workers, || WorkerMsg::End).await;
                    return;
                }
            }
            Msg::Barrier(_) => continue,
        }
        let wm = tracker.current();
        if wm > sent {
            sent = wm;
            broadcast(&workers, || WorkerMsg::Watermark(wm)).await;
        }
    }
}

/// A partition task of a keyed rule.
pub(super) async fn run_worker(mut rx: mpsc::Receiver<WorkerMsg>, mut runner: Runner) {
    while let Some(m) = rx.recv().await {
        match m {
            WorkerMsg::Data(input, d, wms) => {
                let mut wms = wms.into_iter();
                runner
                    .data(input, d, |_| wms.next().unwrap_or(i64::MIN))
                    .await;
            }
            WorkerMsg::Watermark(wm) => runner.watermark(wm).await,
            WorkerMsg::Barrier(e) => runner.barrier(e).await,
            WorkerMsg::End => {
                runner.end().await;
                return;
            }
        }
    }
}
