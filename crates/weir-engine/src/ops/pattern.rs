//! `MATCH_RECOGNIZE`: per partition, rows in event-time order are matched against the pattern
//! by a backtracking matcher with greedy quantifiers. A match is final only when no preferred
//! alternative could still grow with rows yet to come; otherwise the partition waits.

use serde::{Deserialize, Serialize};
use weir_core::{Event, Row, Value};
use weir_lang::expr::{walk_path, Nav, PatternAgg, PatternRef, Scope};
use weir_lang::plan::{Pattern, PatternSpec, Skip};

use crate::operator::{Operator, Output};
use crate::ops::aggregate::Acc;
use crate::ops::order::EventOrder;
use crate::state::{state_hooks, Key, KeyedState};

/// How many rows before a match's start stay available to `PREV`.
const HISTORY: usize = 16;

pub struct PatternOp {
    spec: PatternSpec,
    state: PatternState,
    ttl: Option<i64>,
    /// Match rows as they arrive instead of in event-time order.
    arrival: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct PatternState {
    order: EventOrder,
    partitions: KeyedState<Key, Partition>,
    /// The newest watermark seen (what `WITHIN` expires against in arrival order).
    #[serde(default)]
    watermark: Option<i64>,
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
        let expired = self
            .spec
            .within_ms
            .is_some_and(|w| self.watermark.saturating_sub(self.rows[self.start].ts) > w);
        if self.final_ || expired {
            Step::Fail
        } else {
            Step::NeedMore
        }
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
                if let Some(w) = self.spec.within_ms {
                    if self.rows[i].ts - self.rows[self.start].ts > w {
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
            Pattern::Repeat(inner, min, max) => self.repeat(inner, *min, *max, 0, i, path, k),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn repeat(
        &self,
        inner: &Pattern,
        min: u32,
        max: Option<u32>,
        n: u32,
        i: usize,
        path: &mut Path,
        k: &mut dyn FnMut(usize, &mut Path) -> Step,
    ) -> Step {
        if max.is_none_or(|m| n < m) {
            let r = self.one(inner, i, path, &mut |j, path: &mut Path| {
                if j == i {
                    Step::Fail
                } else {
                    self.repeat(inner, min, max, n + 1, j, path, k)
                }
            });
            if !matches!(r, Step::Fail) {
                return r;
            }
        }
        if n >= min {
            k(i, path)
        } else {
            Step::Fail
        }
    }
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
    pub fn new(spec: PatternSpec, arrival: bool) -> PatternOp {
        PatternOp {
            spec,
            state: PatternState::default(),
            ttl: None,
            arrival,
        }
    }

    fn run(
        spec: &PatternSpec,
        part: &mut Partition,
        watermark: i64,
        final_: bool,
        out: &mut Output,
    ) {
        while part.start < part.rows.len() {
            let m = Matcher {
                spec,
                rows: &part.rows,
                start: part.start,
                watermark,
                final_,
            };
            let mut path = Path::new();
            let step = m.one(&spec.pattern, part.start, &mut path, &mut |j, _| {
                if j > part.start {
                    Step::Match(j)
                } else {
                    Step::Fail
                }
            });
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
                        row.set(n, e.eval(&scope));
                    }
                    out.emit(Event::new(part.rows[last].ts, row));
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
        let drop = part.start.saturating_sub(HISTORY);
        if drop > 0 {
            part.rows.drain(..drop);
            part.start -= drop;
        }
    }

    /// Appends a row to its partition; returns the partition's key.
    fn add_row(&mut self, ev: Event) -> Key {
        let key: Key = self
            .spec
            .partition
            .iter()
            .map(|e| e.eval(&ev.row))
            .collect();
        if self.ttl.is_some() {
            self.state.partitions.touch(&key, ev.ts);
        }
        let part = self.state.partitions.entry(&key, || Partition {
            key_values: key.clone(),
            ..Default::default()
        });
        part.rows.push(ev);
        key
    }

    fn feed(&mut self, wm: i64, final_: bool, out: &mut Output) {
        self.state.watermark = Some(self.state.watermark.map_or(wm, |w| w.max(wm)));
        for ev in self.state.order.release(wm) {
            self.add_row(ev);
        }
        // Matching starts once every released row is in place: a row that is missing now
        // can only be one later than the watermark.
        let spec = &self.spec;
        for (_, part) in self.state.partitions.iter_mut() {
            Self::run(spec, part, wm, final_, out);
        }
        if let Some(ttl) = self.ttl {
            self.state.partitions.expire(wm, ttl);
        }
    }
}

impl Operator for PatternOp {
    fn on_event(&mut self, _input: usize, ev: Event, out: &mut Output) {
        if !self.arrival {
            self.state.order.push(ev, out, "MATCH_RECOGNIZE");
            return;
        }
        let key = self.add_row(ev);
        let wm = self.state.watermark.unwrap_or(i64::MIN);
        if let Some(part) = self.state.partitions.get_mut(&key) {
            Self::run(&self.spec, part, wm, false, out);
        }
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

    state_hooks!(state);
}
