//! Filter and projection, with the per-key change functions `changed`, `lag` and `delta`.
//! Without change functions this is the cheap stateless path: no buffering, no state.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use weir_core::{Event, Row, Value};
use weir_lang::expr::{binary, BinOp, Expr, SlotScope};
use weir_lang::plan::{ChangeCall, ChangeKind, SelectItem};

use crate::operator::{Operator, Output};
use crate::ops::order::EventOrder;
use crate::state::{state_hooks, Key, KeyedState};

/// Filter and projection (`WHERE`, `SELECT` expressions), with the per-key state of the
/// functions that remember (changes, lag, ...).
pub struct ProjectOp {
    filter: Option<Expr>,
    items: Vec<SelectItem>,
    changes: Vec<ChangeCall>,
    partition: Vec<Expr>,
    state: ChangeState,
    ttl: Option<i64>,
    /// Compute change functions as events arrive instead of in event-time order.
    arrival: bool,
}

/// What the change functions remember: the last values of each call, per partition key.
#[derive(Debug, Default, Serialize, Deserialize)]
struct ChangeState {
    history: KeyedState<Key, Vec<VecDeque<Value>>>,
    order: EventOrder,
}

impl ProjectOp {
    /// A projection with no remembered values yet.
    pub fn new(
        filter: Option<Expr>,
        items: Vec<SelectItem>,
        changes: Vec<ChangeCall>,
        partition: Vec<Expr>,
        arrival: bool,
    ) -> Self {
        ProjectOp {
            filter,
            items,
            changes,
            partition,
            state: ChangeState::default(),
            ttl: None,
            arrival,
        }
    }

    /// Whether the output is the input unchanged when the filter passes (`SELECT *`).
    fn passes_through(&self) -> bool {
        matches!(self.items[..], [SelectItem::Star])
    }

    fn project(&self, ev: Event, slots: &[Value], out: &mut Output) {
        if self.passes_through() {
            if self.admits(&ev, slots) {
                out.emit(ev);
            }
            return;
        }
        self.project_ref(&ev, slots, out);
    }

    fn admits(&self, ev: &Event, slots: &[Value]) -> bool {
        let scope = SlotScope {
            row: &ev.row,
            slots,
        };
        self.filter
            .as_ref()
            .is_none_or(|f| f.eval(&scope).is_true())
    }

    /// Projects an event it only reads (copied only by `SELECT *`).
    fn project_ref(&self, ev: &Event, slots: &[Value], out: &mut Output) {
        if !self.admits(ev, slots) {
            return;
        }
        if self.passes_through() {
            out.emit(ev.clone());
            return;
        }
        let scope = SlotScope {
            row: &ev.row,
            slots,
        };
        let mut row = Row::with_capacity(self.items.len() + ev.row.len());
        for it in &self.items {
            match it {
                SelectItem::Star => {
                    for (k, v) in ev.row.iter() {
                        row.push(k.clone(), v.clone());
                    }
                }
                SelectItem::Expr(name, e) => row.set_shared(name, e.eval(&scope)),
            }
        }
        out.emit(Event::new(ev.ts, row));
    }

    /// Computes the change functions for one event (the next in event-time or arrival order),
    /// updating their state.
    fn changes_for(&mut self, ev: &Event) -> Vec<Value> {
        let key: Key = self.partition.iter().map(|e| e.eval(&ev.row)).collect();
        let n = self.changes.len();
        if let Some(ttl) = self.ttl {
            self.state.history.touch(&key, ev.ts, ev.wm, ttl);
        }
        let hist = self.state.history.entry(&key, || vec![VecDeque::new(); n]);
        let mut slots = Vec::with_capacity(n);
        for (call, h) in self.changes.iter().zip(hist.iter_mut()) {
            let v = call.arg.eval(&ev.row);
            let default = || {
                call.default
                    .as_ref()
                    .map(|d| d.eval(&ev.row))
                    .unwrap_or_default()
            };
            let (depth, result) = match call.kind {
                ChangeKind::Changed => (
                    1,
                    if v.is_null() {
                        Value::Null
                    } else {
                        Value::Bool(h.back() != Some(&v))
                    },
                ),
                ChangeKind::Delta => (
                    1,
                    h.back()
                        .map(|p| binary(BinOp::Sub, &v, p))
                        .unwrap_or_default(),
                ),
                ChangeKind::Lag(k) => (
                    k,
                    if h.len() >= k {
                        h[h.len() - k].clone()
                    } else {
                        default()
                    },
                ),
            };
            slots.push(result);
            if !v.is_null() || matches!(call.kind, ChangeKind::Lag(_)) {
                h.push_back(v);
                while h.len() > depth {
                    h.pop_front();
                }
            }
        }
        slots
    }
}

impl Operator for ProjectOp {
    fn on_event(&mut self, _input: usize, ev: Event, out: &mut Output) {
        if self.changes.is_empty() {
            self.project(ev, &[], out);
        } else if self.arrival {
            let slots = self.changes_for(&ev);
            self.project(ev, &slots, out);
        } else {
            self.state.order.push(ev, out, "change functions");
        }
    }

    fn on_event_ref(&mut self, input: usize, ev: &Event, out: &mut Output) {
        if self.changes.is_empty() {
            self.project_ref(ev, &[], out);
        } else if self.arrival {
            let slots = self.changes_for(ev);
            self.project_ref(ev, &slots, out);
        } else {
            self.on_event(input, ev.clone(), out);
        }
    }

    fn on_watermark(&mut self, wm: i64, out: &mut Output) {
        if self.changes.is_empty() {
            return;
        }
        for ev in self.state.order.release(wm) {
            let slots = self.changes_for(&ev);
            self.project(ev, &slots, out);
        }
        if let Some(ttl) = self.ttl {
            self.state.history.expire(wm, ttl);
        }
    }

    fn set_state_ttl(&mut self, ttl_ms: i64) {
        self.ttl = Some(ttl_ms);
    }

    fn uses_time(&self) -> bool {
        !self.changes.is_empty()
    }

    fn kind(&self) -> &'static str {
        match self.changes.is_empty() {
            true => "projection",
            false => "change functions",
        }
    }

    state_hooks!(state);
}
