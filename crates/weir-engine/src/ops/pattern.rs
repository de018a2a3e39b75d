//! `MATCH_RECOGNIZE`: per partition, rows in event-time order are matched against the pattern
//! by a backtracking matcher with greedy and reluctant quantifiers. A match is final only when
//! no preferred alternative could still grow with rows yet to come; otherwise the partition
//! waits, and is looked at again when it gets rows or when its `WITHIN` bound expires.

use std::cell::Cell;
use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use weir_core::{Event, Row, Value};
use weir_lang::expr::{walk_path, Expr, Nav, PatternAgg, PatternRef, Scope};
use weir_lang::plan::{Pattern, PatternSpec, Skip};

use crate::operator::{Operator, Output};
use crate::ops::aggregate::Acc;
use crate::ops::order::EventOrder;
use crate::state::{state_hooks, Key, KeyedState, Timers};

/// `MATCH_RECOGNIZE`: per key, the partial matches of a pattern over events in time order.
pub struct PatternOp {
    def: Definition,
    state: PatternState,
    ttl: Option<i64>,
}

/// What a pattern operator matches, and how.
struct Definition {
    spec: PatternSpec,
    /// Match rows as they arrive instead of in event-time order.
    arrival: bool,
    /// How many rows before a match's start `PREV` may reach back to.
    history: usize,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct PatternState {
    order: EventOrder,
    partitions: KeyedState<Key, Partition>,
    /// The newest watermark seen (what `WITHIN` expires against in arrival order).
    watermark: Option<i64>,
    /// Partitions waiting for their `WITHIN` bound to expire, at the watermark that expires it.
    expiry: Timers<Key>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Partition {
    key_values: Vec<Value>,
    rows: Vec<Event>,
    /// Index in `rows` where the next match attempt starts.
    start: usize,
}

/// Outcome of one attempt.
enum Step {
    Match(usize),
    Fail,
    /// The attempt needs rows that have not arrived yet.
    NeedMore,
}

/// (row index, symbol) for each row of a (partial) match.
type Path = Vec<(usize, usize)>;

struct Matcher<'a> {
    spec: &'a PatternSpec,
    rows: &'a [Event],
    start: usize,
    /// Rows up to the watermark have all arrived; with `final_`, no more rows will.
    watermark: i64,
    final_: bool,
    /// The last row the attempt looked at, and whether `WITHIN` expiring decided it: together
    /// they say when the attempt became decidable.
    looked_at: Cell<usize>,
    expired: Cell<bool>,
}

impl Matcher<'_> {
    fn symbol_at(&self, i: usize, sym: usize, path: &mut Path) -> bool {
        match &self.spec.defines[sym] {
            None => true,
            Some(def) => {
                let scope = MatchScope {
                    m: self,
                    path,
                    current: i,
                    defining: Some(sym),
                };
                def.eval(&scope).is_true()
            }
        }
    }

    fn end_reached(&self) -> Step {
        if self.final_ {
            return Step::Fail;
        }
        let expired = self
            .spec
            .within_ms
            .is_some_and(|w| self.watermark >= expires_at(self.rows[self.start].ts, w));
        if expired {
            self.expired.set(true);
            Step::Fail
        } else {
            Step::NeedMore
        }
    }

    /// The watermark at which this attempt's outcome became certain: once the rows it looked
    /// at were all in (event-time order), or once its `WITHIN` bound expired.
    fn decided_at(&self, arrival: bool) -> i64 {
        let rows = match arrival {
            true => i64::MIN,
            false => self.rows[self.looked_at.get()].ts,
        };
        let expiry = match (self.expired.get(), self.spec.within_ms) {
            (true, Some(w)) => expires_at(self.rows[self.start].ts, w),
            _ => i64::MIN,
        };
        rows.max(expiry)
    }

    fn seq(
        &self,
        ps: &[Pattern],
        i: usize,
        path: &mut Path,
        k: &mut dyn FnMut(usize, &mut Path) -> Step,
    ) -> Step {
        match ps.split_first() {
            None => k(i, path),
            Some((first, rest)) => self.one(first, i, path, &mut |j, path: &mut Path| {
                self.seq(rest, j, path, k)
            }),
        }
    }

    fn one(
        &self,
        p: &Pattern,
        i: usize,
        path: &mut Path,
        k: &mut dyn FnMut(usize, &mut Path) -> Step,
    ) -> Step {
        match p {
            Pattern::Symbol(s) => {
                if i >= self.rows.len() {
                    return self.end_reached();
                }
                self.looked_at.set(self.looked_at.get().max(i));
                if let Some(w) = self.spec.within_ms {
                    // As Flink: the last row comes less than the bound after the first.
                    if self.rows[i].ts - self.rows[self.start].ts >= w {
                        return Step::Fail;
                    }
                }
                if !self.symbol_at(i, *s, path) {
                    return Step::Fail;
                }
                path.push((i, *s));
                let r = k(i + 1, path);
                if matches!(r, Step::Fail) {
                    path.pop();
                }
                r
            }
            Pattern::Concat(ps) => self.seq(ps, i, path, k),
            Pattern::Alt(ps) => {
                for alt in ps {
                    match self.one(alt, i, path, k) {
                        Step::Fail => continue,
                        other => return other,
                    }
                }
                Step::Fail
            }
            Pattern::Repeat {
                inner,
                min,
                max,
                greedy,
            } => self.repeat(inner, (*min, *max, *greedy), 0, i, path, k),
        }
    }

    /// `n` repetitions of `inner` matched so far, up to row `i`. Greedy tries one more before
    /// going on with the rest of the pattern; reluctant goes on first.
    fn repeat(
        &self,
        inner: &Pattern,
        (min, max, greedy): (u32, Option<u32>, bool),
        n: u32,
        i: usize,
        path: &mut Path,
        k: &mut dyn FnMut(usize, &mut Path) -> Step,
    ) -> Step {
        let more = |path: &mut Path, k: &mut dyn FnMut(usize, &mut Path) -> Step| {
            if max.is_some_and(|m| n >= m) {
                return Step::Fail;
            }
            self.one(inner, i, path, &mut |j, path: &mut Path| {
                if j == i {
                    Step::Fail
                } else {
                    self.repeat(inner, (min, max, greedy), n + 1, j, path, k)
                }
            })
        };
        let enough = n >= min;
        if greedy {
            match more(path, k) {
                Step::Fail if enough => k(i, path),
                other => other,
            }
        } else {
            match enough {
                true => match k(i, path) {
                    Step::Fail => more(path, k),
                    other => other,
                },
                false => more(path, k),
            }
        }
    }
}

/// The watermark at which an attempt that started at `start` can take no more rows: a row must
/// come less than `within` after the first, and rows yet to come are later than the watermark.
fn expires_at(start: i64, within: i64) -> i64 {
    start.saturating_add(within).saturating_sub(1)
}

/// What `DEFINE` and `MEASURES` expressions see.
struct MatchScope<'a, 'b> {
    m: &'a Matcher<'b>,
    path: &'a Path,
    current: usize,
    defining: Option<usize>,
}

impl MatchScope<'_, '_> {
    /// Rows mapped to `symbol` (all rows for `None`), including the row being classified.
    fn rows_of(&self, symbol: Option<usize>) -> Vec<usize> {
        let mut v: Vec<usize> = self
            .path
            .iter()
            .filter(|(_, s)| symbol.is_none_or(|x| x == *s))
            .map(|(i, _)| *i)
            .collect();
        if let Some(d) = self.defining {
            if symbol.is_none_or(|x| x == d) && v.last() != Some(&self.current) {
                v.push(self.current);
            }
        }
        v
    }
}

impl Scope for MatchScope<'_, '_> {
    fn field(&self, name: &str) -> Option<&Value> {
        self.m.rows[self.current].row.get(name)
    }

    fn pattern_ref(&self, r: &PatternRef) -> Value {
        let idx = match r.nav {
            Nav::Current => Some(self.current),
            Nav::Prev(n) => self.current.checked_sub(n),
            Nav::Last(n) => {
                let rows = self.rows_of(r.symbol);
                rows.len().checked_sub(n + 1).map(|i| rows[i])
            }
            Nav::First(n) => self.rows_of(r.symbol).get(n).copied(),
        };
        match idx.and_then(|i| self.m.rows.get(i)) {
            Some(e) => walk_path(e.row.get(&r.field).unwrap_or(&Value::Null), &r.path),
            None => Value::Null,
        }
    }

    fn pattern_agg(&self, a: &PatternAgg) -> Value {
        let mut acc = Acc::new(a.func);
        for i in self.rows_of(a.symbol) {
            let row_scope = MatchScope {
                m: self.m,
                path: self.path,
                current: i,
                defining: None,
            };
            let args: Vec<Value> = a.arg.iter().map(|e| e.eval(&row_scope)).collect();
            acc.add(&args, self.m.rows[i].ts);
        }
        acc.result(a.func)
    }
}

impl PatternOp {
    /// A pattern operator with no partial matches; `arrival` matches in arrival order rather than
    /// event-time order.
    pub fn new(spec: PatternSpec, arrival: bool) -> PatternOp {
        let mut history = 0;
        let mut exprs: Vec<Expr> = spec.defines.iter().flatten().cloned().collect();
        exprs.extend(spec.measures.iter().map(|(_, e)| e.clone()));
        for mut e in exprs {
            e.walk_mut(&mut |x| {
                if let Expr::Pattern(PatternRef {
                    nav: Nav::Prev(n), ..
                }) = x
                {
                    history = history.max(*n);
                }
            });
        }
        PatternOp {
            def: Definition {
                spec,
                arrival,
                history,
            },
            state: PatternState::default(),
            ttl: None,
        }
    }
}

impl Definition {
    /// Matches what a partition's rows allow; returns the watermark at which its pending attempt
    /// would expire, if it waits for one.
    fn run(
        &self,
        part: &mut Partition,
        watermark: i64,
        final_: bool,
        out: &mut Output,
    ) -> Option<i64> {
        let spec = &self.spec;
        let mut decided = i64::MIN;
        while part.start < part.rows.len() {
            let m = Matcher {
                spec,
                rows: &part.rows,
                start: part.start,
                watermark,
                final_,
                looked_at: Cell::new(part.start),
                expired: Cell::new(false),
            };
            let mut path = Path::new();
            let step = m.one(&spec.pattern, part.start, &mut path, &mut |j, _| {
                if j > part.start {
                    Step::Match(j)
                } else {
                    Step::Fail
                }
            });
            if !matches!(step, Step::NeedMore) {
                decided = decided.max(m.decided_at(self.arrival));
            }
            match step {
                Step::NeedMore => break,
                Step::Fail => part.start += 1,
                Step::Match(end) => {
                    let last = end - 1;
                    let scope = MatchScope {
                        m: &m,
                        path: &path,
                        current: last,
                        defining: None,
                    };
                    let mut row =
                        Row::with_capacity(spec.partition_names.len() + spec.measures.len());
                    for (n, v) in spec.partition_names.iter().zip(&part.key_values) {
                        row.push(n.clone(), v.clone());
                    }
                    for (n, e) in &spec.measures {
                        row.set_shared(n, e.eval(&scope));
                    }
                    let mut ev = Event::new(part.rows[last].ts, row);
                    // It comes after the watermark that made it certain (the chain keeps this
                    // between the watermarks it moved from and to).
                    ev.wm = decided.saturating_sub(1);
                    out.emit(ev);
                    let first_of = |s: usize| path.iter().find(|(_, x)| *x == s).map(|(i, _)| *i);
                    let last_of =
                        |s: usize| path.iter().rev().find(|(_, x)| *x == s).map(|(i, _)| *i);
                    let next = match spec.skip {
                        Skip::PastLastRow => end,
                        Skip::ToNextRow => part.start + 1,
                        Skip::ToFirst(s) => first_of(s).unwrap_or(end),
                        Skip::ToLast(s) => last_of(s).unwrap_or(end),
                    };
                    part.start = next.max(part.start + 1);
                }
            }
        }
        let drop = part.start.saturating_sub(self.history);
        if drop > 0 {
            part.rows.drain(..drop);
            part.start -= drop;
        }
        let waiting = part.rows.get(part.start)?;
        spec.within_ms.map(|w| expires_at(waiting.ts, w))
    }
}

impl PatternOp {
    /// Appends a row to its partition; returns the partition's key.
    fn add_row(&mut self, ev: Event) -> Key {
        let key: Key = self
            .def
            .spec
            .partition
            .iter()
            .map(|e| e.eval(&ev.row))
            .collect();
        if let Some(ttl) = self.ttl {
            self.state.partitions.touch(&key, ev.ts, ev.wm, ttl);
        }
        let part = self.state.partitions.entry(&key, || Partition {
            key_values: key.clone(),
            ..Default::default()
        });
        part.rows.push(ev);
        key
    }

    /// Runs the partitions of `keys` (each once) at watermark `wm`.
    fn run_keys(&mut self, keys: BTreeSet<Key>, wm: i64, final_: bool, out: &mut Output) {
        for key in keys {
            let Some(part) = self.state.partitions.get_mut(&key) else {
                continue;
            };
            if let Some(at) = self.def.run(part, wm, final_, out) {
                self.state.expiry.register(at, key);
            }
        }
    }

    fn feed(&mut self, wm: i64, final_: bool, out: &mut Output) {
        self.state.watermark = Some(self.state.watermark.map_or(wm, |w| w.max(wm)));
        // Matching starts once every released row is in place: a row that is missing now can
        // only be one later than the watermark. Only partitions that got rows, or whose
        // `WITHIN` bound expired, can have changed.
        let mut keys: BTreeSet<Key> = match final_ {
            true => self.state.partitions.keys().cloned().collect(),
            false => BTreeSet::new(),
        };
        for ev in self.state.order.release(wm) {
            keys.insert(self.add_row(ev));
        }
        keys.extend(self.state.expiry.pop_due(wm).into_iter().map(|(_, k)| k));
        self.run_keys(keys, wm, final_, out);
        if let Some(ttl) = self.ttl {
            self.state.partitions.expire(wm, ttl);
        }
    }
}

impl Operator for PatternOp {
    fn on_event(&mut self, _input: usize, ev: Event, out: &mut Output) {
        if !self.def.arrival {
            self.state.order.push(ev, out, "MATCH_RECOGNIZE");
            return;
        }
        let wm = ev.wm.max(self.state.watermark.unwrap_or(i64::MIN));
        let key = self.add_row(ev);
        self.run_keys(BTreeSet::from([key]), wm, false, out);
    }

    fn on_watermark(&mut self, wm: i64, out: &mut Output) {
        self.feed(wm, false, out);
    }

    fn on_end(&mut self, out: &mut Output) {
        self.feed(i64::MAX, true, out);
    }

    fn set_state_ttl(&mut self, ttl_ms: i64) {
        self.ttl = Some(ttl_ms);
    }

    fn kind(&self) -> &'static str {
        "pattern"
    }

    state_hooks!(state);
}
