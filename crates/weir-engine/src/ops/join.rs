//! Interval join of two streams: rows with equal keys whose times satisfy
//! `lower <= right.ts - left.ts <= upper`. Each side is buffered per key until the watermark
//! guarantees no partner can arrive. A semi join emits a left row once, at its own time, when
//! its first partner is seen, and forgets it; its output watermark is held back by `upper` so
//! that a left row released by a later right row is not late downstream.
//!
//! Each side is judged late by its own stream's watermark (the one its event carries), not by
//! the join's, which is the slower side's: so whether a row is late does not depend on how the
//! two streams' events happened to interleave. With orders ahead of payments, an order at
//! 10:00:05 arriving after the orders stream had passed 10:00:05 is late even if payments are
//! still at 09:59; a payment at 10:00:01 is not, since its own stream had not passed it.

use std::collections::VecDeque;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use weir_core::{Event, Row};
use weir_lang::plan::{JoinSpec, JoinTime};

use crate::operator::{judged_by, Operator, Output};
use crate::state::{state_hooks, Key, KeyedState, Timers};

/// An interval join of two inputs on a key, judged per input by event time (see the module
/// doc); its state is each side's rows still within the bound.
pub struct JoinOp {
    spec: JoinSpec,
    state: JoinState,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct JoinState {
    watermark: Option<i64>,
    /// Each side's rows per key, in event-time order: a partner's rows within the bound are a
    /// range found by binary search, and rows expire from the front.
    sides: [KeyedState<Key, VecDeque<Event>>; 2],
    /// When a key of each side has its earliest row expire (a row goes when the watermark
    /// passes its last chance of a partner).
    expiry: [Timers<Key>; 2],
}

/// The input number of the join's left side.
pub const LEFT: usize = 0;
/// The input number of the join's right side.
pub const RIGHT: usize = 1;

impl JoinOp {
    /// A join with no rows waiting.
    pub fn new(spec: JoinSpec) -> JoinOp {
        JoinOp {
            spec,
            state: JoinState::default(),
        }
    }

    /// Whether a pair passes the residual conditions (the time bounds hold already).
    fn pairs(spec: &JoinSpec, l: &Event, r: &Event) -> bool {
        spec.residual
            .as_ref()
            .is_none_or(|c| c.eval(&Self::joined(spec, l, r).row).is_true())
    }

    /// The rows of the other side within the time bounds of `ev` (of side `input`): the index
    /// range of `rows`.
    fn partners(&self, input: usize, ev: &Event, rows: &VecDeque<Event>) -> (usize, usize) {
        let (lo, hi) = match input {
            LEFT => (
                ev.ts.saturating_add(self.spec.lower_ms),
                ev.ts.saturating_add(self.spec.upper_ms),
            ),
            _ => (
                ev.ts.saturating_sub(self.spec.upper_ms),
                ev.ts.saturating_sub(self.spec.lower_ms),
            ),
        };
        (
            rows.partition_point(|r| r.ts < lo),
            rows.partition_point(|r| r.ts <= hi),
        )
    }

    /// Keeps a row of `side`, in time order, until its last chance of a partner has passed. A
    /// key has a timer at its earliest row's last chance.
    fn store(&mut self, side: usize, key: Key, ev: Event) {
        let until = last_chance(&self.spec, side, &ev);
        let rows = self.state.sides[side].entry(&key, VecDeque::new);
        let at = rows.partition_point(|r| r.ts <= ev.ts);
        rows.insert(at, ev);
        if at == 0 {
            self.state.expiry[side].register(until, key);
        }
    }

    /// Semi join: a left row goes out at once if a stored right row matches, else waits; a
    /// right row releases every waiting left row it matches.
    fn semi(&mut self, input: usize, key: Key, ev: Event, out: &mut Output) {
        if input == LEFT {
            let matched = self.state.sides[RIGHT].get(&key).is_some_and(|rs| {
                let (a, b) = self.partners(LEFT, &ev, rs);
                rs.range(a..b).any(|r| Self::pairs(&self.spec, &ev, r))
            });
            if matched {
                out.emit(ev);
            } else {
                self.store(LEFT, key, ev);
            }
            return;
        }
        if let Some(waiting) = self.state.sides[LEFT].get(&key) {
            let (a, b) = self.partners(RIGHT, &ev, waiting);
            if a < b {
                let waiting = self.state.sides[LEFT].get_mut(&key).expect("found above");
                let (hit, keep): (Vec<Event>, Vec<Event>) = waiting
                    .drain(a..b)
                    .partition(|l| Self::pairs(&self.spec, l, &ev));
                for (i, l) in keep.into_iter().enumerate() {
                    waiting.insert(a + i, l);
                }
                hit.into_iter().for_each(|l| out.emit(l));
            }
        }
        self.store(RIGHT, key, ev);
    }

    fn joined(spec: &JoinSpec, l: &Event, r: &Event) -> Event {
        let mut row = Row::with_capacity(l.row.len() + r.row.len());
        for (alias, ev) in [(&spec.left_alias, l), (&spec.right_alias, r)] {
            for (k, v) in ev.row.iter() {
                row.push(Arc::from(format!("{alias}.{k}")), v.clone());
            }
        }
        let ts = match spec.time {
            JoinTime::Latest => l.ts.max(r.ts),
            JoinTime::Left => l.ts,
            JoinTime::Right => r.ts,
        };
        Event::new(ts, row)
    }
}

/// The watermark past which a row of `side` can meet no partner: a later right row has
/// `ts > wm`, so a left row can still match while `ts + upper > wm`; a later left row has
/// `ts > wm`, so a right row can while `ts - lower > wm`. It grows with the row's time, so a
/// side's rows expire in time order.
fn last_chance(spec: &JoinSpec, side: usize, ev: &Event) -> i64 {
    match side {
        LEFT => ev.ts.saturating_add(spec.upper_ms),
        _ => ev.ts.saturating_sub(spec.lower_ms),
    }
}

/// The join key of a row on one side; `None` when part of it is null (null joins nothing).
pub fn join_key(spec: &JoinSpec, side: usize, row: &Row) -> Option<Key> {
    let exprs = if side == LEFT {
        &spec.left_keys
    } else {
        &spec.right_keys
    };
    let key: Key = exprs.iter().map(|e| e.eval(row)).collect();
    (!key.iter().any(|v| v.is_null())).then_some(key)
}

impl Operator for JoinOp {
    fn on_event(&mut self, input: usize, ev: Event, out: &mut Output) {
        let wm = judged_by(&ev, self.state.watermark);
        if ev.ts <= wm {
            out.late(
                ev,
                format!("join: event time is not after its stream's watermark {wm}"),
            );
            return;
        }
        let Some(key) = join_key(&self.spec, input, &ev.row) else {
            return;
        };
        if self.spec.semi {
            return self.semi(input, key, ev, out);
        }
        let other = 1 - input;
        if let Some(rows) = self.state.sides[other].get(&key) {
            let (a, b) = self.partners(input, &ev, rows);
            for p in rows.range(a..b) {
                let (l, r) = if input == LEFT { (&ev, p) } else { (p, &ev) };
                if Self::pairs(&self.spec, l, r) {
                    out.emit(Self::joined(&self.spec, l, r));
                }
            }
        }
        self.store(input, key, ev);
    }

    fn on_watermark(&mut self, wm: i64, _out: &mut Output) {
        self.state.watermark = Some(self.state.watermark.map_or(wm, |w| w.max(wm)));
        for side in [LEFT, RIGHT] {
            for (_, key) in self.state.expiry[side].pop_due(wm) {
                let Some(rows) = self.state.sides[side].get_mut(&key) else {
                    continue;
                };
                while rows
                    .front()
                    .is_some_and(|r| last_chance(&self.spec, side, r) <= wm)
                {
                    rows.pop_front();
                }
                match rows.front() {
                    Some(first) => {
                        let next = last_chance(&self.spec, side, first);
                        self.state.expiry[side].register(next, key);
                    }
                    None => {
                        self.state.sides[side].remove(&key);
                    }
                }
            }
        }
    }

    /// A row released late (a semi join's left row when its partner comes), or joined with
    /// the earlier side's time, can lie behind the join's watermark by up to one bound: the
    /// output watermark is held back by that bound, so such rows are not late downstream.
    fn watermark_delay(&self) -> i64 {
        match (self.spec.semi, self.spec.time) {
            (true, _) | (false, JoinTime::Left) => self.spec.upper_ms.max(0),
            (false, JoinTime::Right) => (-self.spec.lower_ms).max(0),
            (false, JoinTime::Latest) => 0,
        }
    }

    fn kind(&self) -> &'static str {
        match self.spec.semi {
            true => "semi join",
            false => "interval join",
        }
    }

    state_hooks!(state);
}
