//! Interval join of two streams: rows with equal keys whose times satisfy
//! `lower <= right.ts - left.ts <= upper`. Each side is buffered per key until the watermark
//! guarantees no partner can arrive. A semi join emits a left row once, at its own time, when
//! its first partner is seen, and forgets it; its output watermark is held back by `upper` so
//! that a left row released by a later right row is not late downstream.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use weir_core::{Event, Row};
use weir_lang::plan::JoinSpec;

use crate::operator::{Operator, Output};
use crate::state::{state_hooks, Key, KeyedState};

pub struct JoinOp {
    spec: JoinSpec,
    state: JoinState,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct JoinState {
    watermark: Option<i64>,
    sides: [KeyedState<Key, Vec<Event>>; 2],
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
                self.state.sides[LEFT].entry(&key, Vec::new).push(ev);
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
        self.state.sides[RIGHT].entry(&key, Vec::new).push(ev);
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
        if let Some(wm) = self.state.watermark {
            if ev.ts <= wm {
                out.late(
                    ev,
                    format!("join: event time is not after the watermark {wm}"),
                );
                return;
            }
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
        self.state.sides[input].entry(&key, Vec::new).push(ev);
    }

    fn on_watermark(&mut self, wm: i64, _out: &mut Output) {
        self.state.watermark = Some(self.state.watermark.map_or(wm, |w| w.max(wm)));
        let (lower, upper) = (self.spec.lower_ms, self.spec.upper_ms);
        // A later right event has ts > wm, so a left event can still match while ts + upper > wm;
        // a later left event has ts > wm, so a right event can while ts - lower > wm.
        self.state.sides[LEFT].retain(|_, evs| {
            evs.retain(|e| e.ts.saturating_add(upper) > wm);
            !evs.is_empty()
        });
        self.state.sides[RIGHT].retain(|_, evs| {
            evs.retain(|e| e.ts.saturating_sub(lower) > wm);
            !evs.is_empty()
        });
    }

    fn watermark_delay(&self) -> i64 {
        if self.spec.semi {
            self.spec.upper_ms.max(0)
        } else {
            0
        }
    }

    state_hooks!(state);
}
