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

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use weir_core::{Event, Row};
use weir_lang::plan::JoinSpec;

use crate::operator::{judged_by, Operator, Output};
use crate::state::{state_hooks, Key, KeyedState, Timers};

pub struct JoinOp {
    spec: JoinSpec,
    state: JoinState,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct JoinState {
    watermark: Option<i64>,
    sides: [KeyedState<Key, Vec<Event>>; 2],
    /// When a key of each side may next have rows to drop (a row goes when the watermark
    /// passes its last chance of a partner); stale entries are skipped.
    expiry: [Timers<Key>; 2],
}

pub const LEFT: usize = 0;
pub const RIGHT: usize = 1;

impl JoinOp {
    pub fn new(spec: JoinSpec) -> JoinOp {
        JoinOp {
            spec,
            state: JoinState::default(),
        }
    }

    /// Whether a pair lies within the time bounds and passes the residual conditions.
    fn pairs(spec: &JoinSpec, l: &Event, r: &Event) -> bool {
        let d = r.ts - l.ts;
        if d < spec.lower_ms || d > spec.upper_ms {
            return false;
        }
        spec.residual
            .as_ref()
            .is_none_or(|c| c.eval(&Self::joined(spec, l, r).row).is_true())
    }

    /// Keeps a row of `side` until its last chance of a partner has passed. A key has a timer
    /// at its earliest row's last chance; a row that is not the earliest needs none, as the key
    /// is looked at before it expires anyway.
    fn store(&mut self, side: usize, key: Key, ev: Event) {
        let until = last_chance(&self.spec, side, &ev);
        let rows = self.state.sides[side].entry(&key, Vec::new);
        let due = rows.iter().map(|r| last_chance(&self.spec, side, r)).min();
        rows.push(ev);
        if due.is_none_or(|d| until < d) {
            self.state.expiry[side].register(until, key);
        }
    }

    /// Semi join: a left row goes out at once if a stored right row matches, else waits; a
    /// right row releases every waiting left row it matches.
    fn semi(&mut self, input: usize, key: Key, ev: Event, out: &mut Output) {
        if input == LEFT {
            let matched = self.state.sides[RIGHT]
                .get(&key)
                .is_some_and(|rs| rs.iter().any(|r| Self::pairs(&self.spec, &ev, r)));
            if matched {
                out.emit(ev);
            } else {
                self.store(LEFT, key, ev);
            }
            return;
        }
        if let Some(waiting) = self.state.sides[LEFT].get_mut(&key) {
            let (hit, keep): (Vec<Event>, Vec<Event>) = std::mem::take(waiting)
                .into_iter()
                .partition(|l| Self::pairs(&self.spec, l, &ev));
            *waiting = keep;
            hit.into_iter().for_each(|l| out.emit(l));
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
        Event::new(l.ts.max(r.ts), row)
    }
}

/// The watermark past which a row of `side` can meet no partner: a later right row has
/// `ts > wm`, so a left row can still match while `ts + upper > wm`; a later left row has
/// `ts > wm`, so a right row can while `ts - lower > wm`.
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
        if let Some(partners) = self.state.sides[other].get(&key) {
            for p in partners {
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
                let spec = &self.spec;
                let chance = |e: &Event| last_chance(spec, side, e);
                let Some(rows) = self.state.sides[side].get_mut(&key) else {
                    continue;
                };
                rows.retain(|e| chance(e) > wm);
                match rows.iter().map(chance).min() {
                    Some(next) => self.state.expiry[side].register(next, key),
                    None => {
                        self.state.sides[side].remove(&key);
                    }
                }
            }
        }
    }

    fn watermark_delay(&self) -> i64 {
        if self.spec.semi {
            self.spec.upper_ms.max(0)
        } else {
            0
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
