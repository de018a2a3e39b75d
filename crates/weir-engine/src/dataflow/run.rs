//! The threads of a rule: a runner drives its operator chain over the messages of its inputs;
//! a keyed rule has a router thread that hashes events to worker threads, each with its chain.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, Sender, SyncSender};
use std::sync::Arc;

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

/// Runs an operator over one message and publishes what it produced.
pub(super) struct Runner {
    pub(super) op: Box<dyn Operator>,
    pub(super) index: usize,
    pub(super) out: Publisher,
    pub(super) late: SyncSender<LateEvent>,
    pub(super) snapshots: Sender<OperatorSnapshot>,
    pub(super) stats: Arc<RuleStats>,
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

pub(super) enum WorkerMsg {
    Data(usize, Vec<Event>),
    Watermark(i64),
    Barrier(u64),
    End,
}

pub(super) fn run_single(rx: Receiver<Envelope>, slots: Vec<usize>, mut runner: Runner) {
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

pub(super) fn run_router(
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

pub(super) fn run_worker(rx: Receiver<WorkerMsg>, mut runner: Runner) {
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
