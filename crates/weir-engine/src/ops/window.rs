//! Grouped aggregation over windows: tumbling and hopping (panes by window), session (merging
//! per key), sliding (one result per event), count, and unbounded running aggregates.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::{Deserialize, Serialize};
use weir_core::{Event, Row, Value};
use weir_lang::expr::{Expr, SlotScope};
use weir_lang::plan::{Aggregate, Window};

use crate::operator::{judged_by, Operator, Output};
use crate::ops::aggregate::Accumulator;
use crate::ops::order::EventOrder;
use crate::state::{pairs, state_hooks, Key, KeyedState, Timers};

/// What every window kind shares: the rule's filter, keys, aggregates and output.
pub struct AggCore {
    filter: Option<Expr>,
    spec: Aggregate,
}

/// The aggregate arguments of one event, evaluated once.
type Args = Vec<Vec<Value>>;

impl AggCore {
    /// The aggregation of `spec`, taking only rows that pass the window's `filter`.
    pub fn new(filter: Option<Expr>, spec: Aggregate) -> AggCore {
        AggCore { filter, spec }
    }

    /// The group key of a row, or `None` if the filter drops it.
    fn admit(&self, row: &Row) -> Option<Key> {
        let mut key = Key::new();
        self.admit_into(row, &mut key).then_some(key)
    }

    /// Like `admit`, into a buffer the caller reuses: the hot path allocates no key.
    fn admit_into(&self, row: &Row, key: &mut Key) -> bool {
        if let Some(f) = &self.filter {
            if !f.eval(row).is_true() {
                return false;
            }
        }
        key.clear();
        key.extend(self.spec.keys.iter().map(|k| k.eval(row)));
        true
    }

    fn new_accs(&self) -> Vec<Accumulator> {
        self.spec.aggs.iter().map(Accumulator::new).collect()
    }

    fn args(&self, row: &Row) -> Args {
        let mut args = Args::new();
        self.args_into(row, &mut args);
        args
    }

    /// The aggregate arguments of a row, into a buffer the caller reuses.
    fn args_into(&self, row: &Row, args: &mut Args) {
        args.resize_with(self.spec.aggs.len(), Vec::new);
        for (a, buf) in self.spec.aggs.iter().zip(args.iter_mut()) {
            buf.clear();
            if a.filter.as_ref().is_none_or(|f| f.eval(row).is_true()) {
                buf.extend(a.args.iter().map(|e| e.eval(row)));
            } else {
                buf.resize(a.args.len().max(1), Value::Null);
            }
        }
    }

    /// Fresh accumulators over a run of remembered events.
    fn over<'a>(&self, events: impl IntoIterator<Item = &'a (i64, Args)>) -> Vec<Accumulator> {
        let mut accs = self.new_accs();
        for (t, a) in events {
            self.add(&mut accs, a, *t);
        }
        accs
    }

    fn add(&self, accs: &mut [Accumulator], args: &Args, ts: i64) {
        for (acc, a) in accs.iter_mut().zip(args) {
            acc.add(a, ts);
        }
    }

    /// Renders one group's result, if `HAVING` keeps it.
    fn emit(
        &self,
        key: &Key,
        accs: &[Accumulator],
        start: Value,
        end: Value,
        ts: i64,
        out: &mut Output,
    ) {
        let mut slots = Vec::with_capacity(2 + key.len() + accs.len());
        slots.push(start);
        slots.push(end);
        slots.extend(key.iter().cloned());
        slots.extend(
            accs.iter()
                .zip(&self.spec.aggs)
                .map(|(a, c)| a.result(c.func)),
        );
        let empty = Row::new();
        let scope = SlotScope {
            row: &empty,
            slots: &slots,
        };
        if let Some(h) = &self.spec.having {
            if !h.eval(&scope).is_true() {
                return;
            }
        }
        let mut row = Row::with_capacity(self.spec.items.len());
        for (name, e) in &self.spec.items {
            row.push(name.clone(), e.eval(&scope));
        }
        out.emit(Event::new(ts, row));
    }
}

/// Builds the operator for an aggregate's window kind.
/// `arrival`: a sliding window takes events as they arrive instead of in event-time order.
pub fn window_operator(
    filter: Option<Expr>,
    spec: Aggregate,
    lateness: i64,
    arrival: bool,
) -> Box<dyn Operator> {
    let window = spec.window;
    let core = AggCore::new(filter, spec);
    match window {
        Window::Tumble { size } => Box::new(PaneWindows::new(core, size, size, lateness)),
        Window::Hop { slide, size } => Box::new(PaneWindows::new(core, slide, size, lateness)),
        Window::Session { gap } => Box::new(SessionWindows {
            core,
            gap,
            lateness,
            state: Default::default(),
        }),
        Window::Sliding { size } => Box::new(SlidingWindows {
            core,
            size,
            arrival,
            state: Default::default(),
        }),
        Window::Count { size, slide } => Box::new(CountWindows {
            core,
            size,
            slide,
            state: KeyedState::default(),
        }),
        Window::Unbounded => Box::new(RunningAggregate {
            core,
            state: KeyedState::default(),
        }),
    }
}

fn sorted_keys<V>(m: &HashMap<Key, V>) -> Vec<&Key> {
    let mut keys: Vec<&Key> = m.keys().collect();
    keys.sort();
    keys
}

/// Tumbling and hopping windows: one pane per window, holding accumulators per key.
pub struct PaneWindows {
    core: AggCore,
    slide: i64,
    size: i64,
    lateness: i64,
    state: PaneState,
    /// No pane fires or is dropped before the watermark reaches this (recomputed as panes
    /// come and go), so the watermark passes most events without a look at the panes.
    next_due: i64,
    /// Scratch buffers reused for every event.
    key: Key,
    args: Args,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct PaneState {
    watermark: Option<i64>,
    /// Keyed by (end, start) so windows close in order.
    #[serde(with = "pairs")]
    panes: BTreeMap<(i64, i64), Pane>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Pane {
    fired: bool,
    #[serde(with = "pairs")]
    groups: HashMap<Key, Vec<Accumulator>>,
}

impl PaneWindows {
    fn new(core: AggCore, slide: i64, size: i64, lateness: i64) -> Self {
        PaneWindows {
            core,
            slide,
            size,
            lateness,
            state: PaneState::default(),
            next_due: i64::MIN,
            key: Key::new(),
            args: Args::new(),
        }
    }

    /// Adds an event to its open windows; false when every one of them had closed by the
    /// watermark its stream had reached before it (late), or the filter keeps the event out
    /// (not late: nothing to report).
    fn add(&mut self, ev: &Event, out: &mut Output) -> bool {
        if !self.core.admit_into(&ev.row, &mut self.key) {
            return true;
        }
        self.core.args_into(&ev.row, &mut self.args);
        let key = &self.key;
        let args = &self.args;
        let wm = judged_by(ev, self.state.watermark);
        let last_start = ev.ts - ev.ts.rem_euclid(self.slide);
        let mut start = last_start;
        let mut accepted = false;
        while start > ev.ts - self.size {
            let end = start + self.size;
            if end - 1 + self.lateness > wm {
                accepted = true;
                self.next_due = self.next_due.min(end - 1);
                let pane = self.state.panes.entry((end, start)).or_default();
                let accs = match pane.groups.get_mut(key.as_slice()) {
                    Some(a) => a,
                    None => pane
                        .groups
                        .entry(key.clone())
                        .or_insert_with(|| self.core.new_accs()),
                };
                self.core.add(accs, args, ev.ts);
                if pane.fired {
                    // A late event within the allowed lateness: emit the updated result.
                    self.core
                        .emit(key, accs, Value::Int(start), Value::Int(end), end - 1, out);
                }
            }
            start -= self.slide;
        }
        accepted
    }

    fn late(&self, ev: Event, out: &mut Output) {
        let wm = judged_by(&ev, self.state.watermark);
        out.late(
            ev,
            format!(
                "its windows closed: watermark {wm}, allowed lateness {} ms",
                self.lateness
            ),
        );
    }
}

impl Operator for PaneWindows {
    fn on_event(&mut self, _input: usize, ev: Event, out: &mut Output) {
        if !self.add(&ev, out) {
            self.late(ev, out);
        }
    }

    /// Only a late event is copied (to the late output).
    fn on_event_ref(&mut self, _input: usize, ev: &Event, out: &mut Output) {
        if !self.add(ev, out) {
            self.late(ev.clone(), out);
        }
    }

    fn on_watermark(&mut self, wm: i64, out: &mut Output) {
        self.state.watermark = Some(self.state.watermark.map_or(wm, |w| w.max(wm)));
        if wm < self.next_due {
            return;
        }
        let lateness = self.lateness;
        let mut next = i64::MAX;
        let mut done = Vec::new();
        for (&(end, start), pane) in self.state.panes.iter_mut() {
            if end - 1 > wm {
                next = next.min(end - 1);
                break;
            }
            if !pane.fired {
                pane.fired = true;
                for key in sorted_keys(&pane.groups) {
                    self.core.emit(
                        key,
                        &pane.groups[key],
                        Value::Int(start),
                        Value::Int(end),
                        end - 1,
                        out,
                    );
                }
            }
            match end - 1 + lateness <= wm {
                true => done.push((end, start)),
                false => next = next.min(end - 1 + lateness),
            }
        }
        for k in done {
            self.state.panes.remove(&k);
        }
        self.next_due = next;
    }

    fn kind(&self) -> &'static str {
        match self.slide == self.size {
            true => "tumbling window",
            false => "hopping window",
        }
    }

    state_hooks!(state);
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Session {
    start: i64,
    /// Exclusive: the last event's time plus the gap.
    end: i64,
    fired: bool,
    accs: Vec<Accumulator>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct SessionState {
    watermark: Option<i64>,
    sessions: KeyedState<Key, Vec<Session>>,
    timers: Timers<Key>,
}

/// Session windows: per key, events at most the gap apart share a session, and sessions that
/// an event bridges merge (Flink's merging windows: `[t, t + gap)` per event, windows that
/// touch merge).
pub struct SessionWindows {
    core: AggCore,
    gap: i64,
    lateness: i64,
    state: SessionState,
}

impl Operator for SessionWindows {
    fn on_event(&mut self, _input: usize, ev: Event, out: &mut Output) {
        let Some(key) = self.core.admit(&ev.row) else {
            return;
        };
        let wm = judged_by(&ev, self.state.watermark);
        let mut merged = Session {
            start: ev.ts,
            end: ev.ts + self.gap,
            fired: false,
            accs: self.core.new_accs(),
        };
        // The event's window and every session it touches become one; only if that whole
        // session had closed is the event late (as Flink decides after merging).
        let sessions = self.state.sessions.get(&key);
        let touching = |s: &Session| s.start <= merged.end && merged.start <= s.end;
        let (start, end) = sessions
            .into_iter()
            .flatten()
            .filter(|s| touching(s))
            .fold((merged.start, merged.end), |(a, b), s| {
                (a.min(s.start), b.max(s.end))
            });
        if end - 1 + self.lateness <= wm {
            out.late(
                ev,
                format!(
                    "its session [{start}, {end}) closed: watermark {wm}, gap {} ms",
                    self.gap
                ),
            );
            return;
        }
        let args = self.core.args(&ev.row);
        self.core.add(&mut merged.accs, &args, ev.ts);
        let sessions = self.state.sessions.entry(&key, Vec::new);
        let mut rest = Vec::with_capacity(sessions.len());
        for s in sessions.drain(..) {
            if s.start <= merged.end && merged.start <= s.end {
                merged.start = merged.start.min(s.start);
                merged.end = merged.end.max(s.end);
                merged.fired |= s.fired;
                for (a, b) in merged.accs.iter_mut().zip(&s.accs) {
                    a.merge(b);
                }
            } else {
                rest.push(s);
            }
        }
        if merged.fired && merged.end - 1 <= wm {
            self.core.emit(
                &key,
                &merged.accs,
                Value::Int(merged.start),
                Value::Int(merged.end),
                merged.end - 1,
                out,
            );
        } else {
            merged.fired = false;
        }
        self.state.timers.register(merged.end - 1, key.clone());
        rest.push(merged);
        *sessions = rest;
    }

    fn on_watermark(&mut self, wm: i64, out: &mut Output) {
        self.state.watermark = Some(self.state.watermark.map_or(wm, |w| w.max(wm)));
        for (_, key) in self.state.timers.pop_due(wm) {
            let Some(sessions) = self.state.sessions.get_mut(&key) else {
                continue;
            };
            sessions.sort_by_key(|s| s.start);
            for s in sessions.iter_mut().filter(|s| s.end - 1 <= wm && !s.fired) {
                s.fired = true;
                self.core.emit(
                    &key,
                    &s.accs,
                    Value::Int(s.start),
                    Value::Int(s.end),
                    s.end - 1,
                    out,
                );
            }
            let lateness = self.lateness;
            sessions.retain(|s| s.end - 1 + lateness > wm);
            if let Some(next) = sessions
                .iter()
                .map(|s| {
                    if s.fired {
                        s.end - 1 + lateness
                    } else {
                        s.end - 1
                    }
                })
                .min()
            {
                self.state.timers.register(next, key.clone());
            } else {
                self.state.sessions.remove(&key);
            }
        }
    }

    fn kind(&self) -> &'static str {
        "session window"
    }

    state_hooks!(state);
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct SlidingState {
    order: EventOrder,
    recent: KeyedState<Key, VecDeque<(i64, Args)>>,
}

/// Sliding windows: for each event at time t, the aggregate over the key's events in (t - size, t].
pub struct SlidingWindows {
    core: AggCore,
    size: i64,
    arrival: bool,
    state: SlidingState,
}

impl SlidingWindows {
    /// Adds one event (the next in event-time or arrival order) and emits its window.
    fn slide(&mut self, ev: Event, out: &mut Output) {
        let key = self.core.admit(&ev.row).unwrap_or_default();
        let args = self.core.args(&ev.row);
        let recent = self.state.recent.entry(&key, VecDeque::new);
        recent.push_back((ev.ts, args));
        while recent.front().is_some_and(|(t, _)| *t <= ev.ts - self.size) {
            recent.pop_front();
        }
        let accs = self.core.over(recent.iter());
        self.core.emit(
            &key,
            &accs,
            Value::Int(ev.ts - self.size),
            Value::Int(ev.ts),
            ev.ts,
            out,
        );
    }
}

impl Operator for SlidingWindows {
    fn on_event(&mut self, _input: usize, ev: Event, out: &mut Output) {
        if self.core.admit(&ev.row).is_none() {
            return;
        }
        if self.arrival {
            self.slide(ev, out);
        } else {
            self.state.order.push(ev, out, "sliding window");
        }
    }

    fn on_watermark(&mut self, wm: i64, out: &mut Output) {
        for ev in self.state.order.release(wm) {
            self.slide(ev, out);
        }
    }

    fn kind(&self) -> &'static str {
        "sliding window"
    }

    state_hooks!(state);
}

/// Count windows: every `slide` events of a key, the aggregate over its last `size` events, once
/// it has seen `size` of them (eKuiper's `COUNTWINDOW`: an incomplete window is not emitted).
pub struct CountWindows {
    core: AggCore,
    size: u64,
    slide: u64,
    state: KeyedState<Key, (u64, VecDeque<(i64, Args)>)>,
}

impl Operator for CountWindows {
    fn on_event(&mut self, _input: usize, ev: Event, out: &mut Output) {
        let Some(key) = self.core.admit(&ev.row) else {
            return;
        };
        let args = self.core.args(&ev.row);
        let (seen, recent) = self.state.entry(&key, Default::default);
        recent.push_back((ev.ts, args));
        if recent.len() as u64 > self.size {
            recent.pop_front();
        }
        *seen += 1;
        if *seen >= self.size && *seen % self.slide == 0 {
            let accs = self.core.over(recent.iter());
            let first = recent.front().map_or(ev.ts, |(t, _)| *t);
            let last = recent.iter().map(|(t, _)| *t).max().unwrap_or(ev.ts);
            self.core.emit(
                &key,
                &accs,
                Value::Int(first),
                Value::Int(last + 1),
                last,
                out,
            );
        }
    }

    fn kind(&self) -> &'static str {
        "count window"
    }

    state_hooks!(state);
}

/// A running aggregate without a window: every event emits its key's updated result.
pub struct RunningAggregate {
    core: AggCore,
    state: KeyedState<Key, Vec<Accumulator>>,
}

impl Operator for RunningAggregate {
    fn on_event(&mut self, _input: usize, ev: Event, out: &mut Output) {
        let Some(key) = self.core.admit(&ev.row) else {
            return;
        };
        let args = self.core.args(&ev.row);
        let core = &self.core;
        let accs = self.state.entry(&key, || core.new_accs());
        core.add(accs, &args, ev.ts);
        core.emit(&key, accs, Value::Null, Value::Null, ev.ts, out);
    }

    fn kind(&self) -> &'static str {
        "running aggregate"
    }

    state_hooks!(state);
}
