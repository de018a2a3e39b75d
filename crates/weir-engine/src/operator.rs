//! The one operator trait, and the chain that runs a rule's operators one after the other.
//!
//! Event time is decided per event: every event carries the watermark its stream had reached
//! before it ([`Event::wm`]), and a [`Chain`] advances each operator to that watermark before
//! handing it the event, exactly as if every event had arrived in a batch of its own. So
//! whether an event is late, when a window fires and which events an allowed-lateness update
//! includes depend on the input alone, never on how it was batched; data still moves, and
//! watermarks still travel between tasks, once per batch.

use weir_core::Event;

use crate::state::{Snapshot, StateError};

/// Where an operator puts what it produces.
#[derive(Debug, Default)]
pub struct Output {
    /// Results, in order.
    pub events: Vec<Event>,
    /// Events that arrived after the watermark had passed them, with the reason.
    pub late: Vec<(Event, String)>,
}

impl Output {
    /// Adds a result.
    pub fn emit(&mut self, e: Event) {
        self.events.push(e);
    }

    /// Refuses an event as late, saying why.
    pub fn late(&mut self, e: Event, reason: String) {
        self.late.push((e, reason));
    }
}

/// One step of a rule's chain: it takes events and watermarks and emits results. Every hook
/// but `on_event` has a default, so a stateless operator writes one function.
pub trait Operator: Send {
    /// One input event. `input` tells which input it came from (joins have two). Lateness is
    /// judged by [`judged_by`]: the watermark of the event's own stream before it.
    fn on_event(&mut self, input: usize, event: Event, out: &mut Output);

    /// An event of a batch that other rules share: operators that only read their input
    /// override this to spare the copy.
    fn on_event_ref(&mut self, input: usize, event: &Event, out: &mut Output) {
        self.on_event(input, event.clone(), out);
    }

    /// Event time has reached `wm`: no more events with `ts <= wm` are expected. The chain calls
    /// it before each event that brings a later watermark (on ordered input, before nearly every
    /// event), so an operator keeps it cheap when nothing is due.
    fn on_watermark(&mut self, _wm: i64, _out: &mut Output) {}

    /// Whether the operator does anything with event time; a stage skips the watermark of
    /// every event for one that does not (a stateless filter or projection).
    fn uses_time(&self) -> bool {
        true
    }

    /// The input has ended: emit everything still held (open windows, pending matches).
    fn on_end(&mut self, out: &mut Output) {
        self.on_watermark(i64::MAX, out);
    }

    /// Keys of per-key state not used for `ttl_ms` of event time may be dropped (a rule's
    /// `state_ttl`), so state that grows with the number of keys stays bounded. Operators whose
    /// state the watermark bounds already (windows, joins) ignore it.
    fn set_state_ttl(&mut self, _ttl_ms: i64) {}

    /// How far behind its input's watermark this operator's output may lag: the output
    /// watermark is held back by it so that what the operator emits late is not late downstream.
    fn watermark_delay(&self) -> i64 {
        0
    }

    /// What the operator is, for snapshots and the messages about them.
    fn kind(&self) -> &'static str;

    /// The format of [`Operator::snapshot`]: raised whenever the saved state changes shape, so
    /// a checkpoint written by another build is refused instead of misread.
    fn state_version(&self) -> u32 {
        1
    }

    /// The operator's state, for checkpoints and moves.
    fn snapshot(&self) -> Result<Snapshot, StateError> {
        Ok(crate::state::empty_snapshot())
    }

    /// Takes back the state of [`Operator::snapshot`]; stateless operators have none.
    fn restore(&mut self, _snapshot: &serde_json::value::RawValue) -> Result<(), StateError> {
        Ok(())
    }
}

/// The watermark an event is judged by: the one its stream had reached before it, or the
/// operator's if that is later (events built outside ingest carry none).
pub fn judged_by(ev: &Event, operator_wm: Option<i64>) -> i64 {
    operator_wm.map_or(ev.wm, |w| w.max(ev.wm))
}

/// A watermark held back by `delay`; the end of input (`i64::MAX`) stays the end.
pub fn held_back(wm: i64, delay: i64) -> i64 {
    if wm == i64::MAX {
        wm
    } else {
        wm.saturating_sub(delay)
    }
}

/// An operator with the watermark it has been given, which stamps what it emits with the
/// watermark of its output stream before each result.
struct Stage {
    op: Box<dyn Operator>,
    wm: i64,
    delay: i64,
    uses_time: bool,
    /// Identifies the operator's definition in snapshots: state saved under another one does
    /// not fit.
    fingerprint: u64,
}

impl Stage {
    fn new(op: Box<dyn Operator>, fingerprint: u64) -> Stage {
        Stage {
            delay: op.watermark_delay(),
            uses_time: op.uses_time(),
            op,
            wm: i64::MIN,
            fingerprint,
        }
    }

    /// Moves event time on to `wm`. What fires is stamped with a watermark between the one
    /// before and the one after (the operator may say which, see [`stamp_fired`]).
    fn advance(&mut self, wm: i64, out: &mut Output) {
        if wm <= self.wm {
            return;
        }
        if self.uses_time {
            let from = out.events.len();
            self.op.on_watermark(wm, out);
            if out.events.len() > from {
                stamp_fired(
                    &mut out.events[from..],
                    held_back(self.wm, self.delay),
                    held_back(wm, self.delay),
                );
            }
        }
        self.wm = wm;
    }

    /// One event whose stream (all inputs together) had reached `wm` before it. The operator
    /// sees the event carry at least that watermark: events stamped once for many rules carry
    /// only the watermark of the shared batch before them (see `Ingest::send_stamped`).
    fn event(&mut self, input: usize, mut ev: Event, wm: i64, out: &mut Output) {
        self.advance(wm, out);
        ev.wm = ev.wm.max(wm);
        let from = out.events.len();
        self.op.on_event(input, ev, out);
        self.stamp_now(&mut out.events[from..]);
    }

    fn event_ref(&mut self, input: usize, ev: &Event, wm: i64, out: &mut Output) {
        if ev.wm < wm {
            // Rare: the first events of a shared batch.
            return self.event(input, ev.clone(), wm, out);
        }
        self.advance(wm, out);
        let from = out.events.len();
        self.op.on_event_ref(input, ev, out);
        self.stamp_now(&mut out.events[from..]);
    }

    fn end(&mut self, out: &mut Output) {
        let from = out.events.len();
        self.op.on_end(out);
        self.stamp_now(&mut out.events[from..]);
        self.wm = i64::MAX;
    }

    /// Results of an event come after the watermark the operator stands at.
    fn stamp_now(&self, evs: &mut [Event]) {
        let wm = held_back(self.wm, self.delay);
        evs.iter_mut().for_each(|e| e.wm = wm);
    }
}

/// Results that a watermark moving from `before` to `after` released: each is stamped with the
/// watermark it came after, between the two. An operator may put the time that released a
/// result, less one, into its `wm` (a pattern's deciding row); otherwise it gets `before`. Kept
/// in watermark order, as the output stream's watermark only rises.
fn stamp_fired(evs: &mut [Event], before: i64, after: i64) {
    let last = after.saturating_sub(1).max(before);
    for e in evs.iter_mut() {
        e.wm = e.wm.clamp(before, last);
    }
    if !evs.is_sorted_by_key(|e| e.wm) {
        evs.sort_by_key(|e| e.wm);
    }
}

/// A rule's operators run one after the other: what each emits is the input of the next, and
/// each stage sees the watermark held back by the delays of the stages before it.
pub struct Chain {
    stages: Vec<Stage>,
    /// What a stage emitted, on its way to the next (kept to reuse the allocation).
    between: Vec<Output>,
}

/// What follows a stage's input down the chain: a watermark (held back by each stage's delay
/// on its way) or the end.
enum Then {
    Nothing,
    Watermark(i64),
    End,
}

impl Chain {
    /// Operators with the fingerprints of their definitions.
    pub fn new(ops: Vec<(Box<dyn Operator>, u64)>) -> Chain {
        let stages: Vec<Stage> = ops.into_iter().map(|(op, f)| Stage::new(op, f)).collect();
        let between = (1..stages.len()).map(|_| Output::default()).collect();
        Chain { stages, between }
    }

    /// Whether an operator of the chain acts on time as well as on events (a window, a join's
    /// bounds, a pattern's `WITHIN`): without one, only input changes the chain's state.
    pub fn uses_time(&self) -> bool {
        self.stages.iter().any(|s| s.uses_time)
    }

    /// Events of input `input`, each with the watermark every input together had reached
    /// before it (the event's own `wm` is its stream's, by which its lateness is judged).
    pub fn on_events(
        &mut self,
        input: usize,
        evs: impl IntoIterator<Item = (Event, i64)>,
        out: &mut Output,
    ) {
        self.run(
            out,
            |s, o| {
                evs.into_iter()
                    .for_each(|(ev, wm)| s.event(input, ev, wm, o))
            },
            Then::Nothing,
        );
    }

    /// As [`Chain::on_events`], for a batch other consumers hold too.
    pub fn on_events_ref<'e>(
        &mut self,
        input: usize,
        evs: impl IntoIterator<Item = (&'e Event, i64)>,
        out: &mut Output,
    ) {
        self.run(
            out,
            |s, o| {
                evs.into_iter()
                    .for_each(|(ev, wm)| s.event_ref(input, ev, wm, o))
            },
            Then::Nothing,
        );
    }

    /// One event (see [`Chain::on_events`]).
    pub fn on_event(&mut self, input: usize, ev: Event, wm: i64, out: &mut Output) {
        self.on_events(input, [(ev, wm)], out);
    }

    /// Advances every stage to watermark `wm` (each holds it back by its own delay).
    pub fn on_watermark(&mut self, wm: i64, out: &mut Output) {
        let down = held_back(wm, self.stages[0].delay);
        self.run(out, |s, o| s.advance(wm, o), Then::Watermark(down));
    }

    /// The input is over: every stage flushes what it holds, in order.
    pub fn on_end(&mut self, out: &mut Output) {
        self.run(out, Stage::end, Then::End);
    }

    /// The watermark the chain has reached (that of its first stage).
    pub fn watermark(&self) -> i64 {
        self.stages[0].wm
    }

    /// The first stage does `first`; each later stage takes, in order, what the stage before
    /// emitted — each event with the watermark it was stamped with, so a stage sees the same
    /// sequence whether its input came one event or a batch at a time — then does `then`.
    fn run(
        &mut self,
        out: &mut Output,
        first: impl FnOnce(&mut Stage, &mut Output),
        mut then: Then,
    ) {
        let n = self.stages.len();
        let into = |between: &mut Vec<Output>, k: usize| match k + 1 == n {
            true => None,
            false => Some(std::mem::take(&mut between[k])),
        };
        let mut buf = into(&mut self.between, 0);
        first(&mut self.stages[0], buf.as_mut().unwrap_or(out));
        if let Some(b) = buf {
            self.between[0] = b;
        }
        for k in 1..n {
            let mut input = std::mem::take(&mut self.between[k - 1]);
            out.late.append(&mut input.late);
            let mut buf = into(&mut self.between, k);
            let target = buf.as_mut().unwrap_or(out);
            let stage = &mut self.stages[k];
            for ev in input.events.drain(..) {
                let wm = ev.wm;
                stage.event(0, ev, wm, target);
            }
            match then {
                Then::Nothing => {}
                Then::Watermark(wm) => {
                    stage.advance(wm, target);
                    then = Then::Watermark(held_back(wm, stage.delay));
                }
                Then::End => stage.end(target),
            }
            self.between[k - 1] = input;
            if let Some(b) = buf {
                self.between[k] = b;
            }
        }
    }

    /// Drops per-key state unused for `ttl_ms` of event time, in every stage.
    pub fn set_state_ttl(&mut self, ttl_ms: i64) {
        for s in &mut self.stages {
            s.op.set_state_ttl(ttl_ms);
        }
    }

    /// How far the chain's output watermark lags its input's.
    pub fn watermark_delay(&self) -> i64 {
        self.stages.iter().map(|s| s.delay).sum()
    }

    /// Every stage's state with its kind, format version, definition and watermark.
    pub fn snapshot(&self) -> Result<Snapshot, StateError> {
        let mut parts = Vec::with_capacity(self.stages.len());
        for (i, s) in self.stages.iter().enumerate() {
            let state = s.op.snapshot().map_err(|e| {
                StateError::Unsaved(format!("stage {} ({}): {e}", i + 1, s.op.kind()))
            })?;
            parts.push(SavedStage {
                kind: s.op.kind().to_owned(),
                version: s.op.state_version(),
                definition: format!("{:016x}", s.fingerprint),
                // A stage that ignores event time takes the watermark of the next event it
                // sees; saving it would make every processing-time tick a change of state.
                watermark: if s.uses_time { s.wm } else { i64::MIN },
                state,
            });
        }
        let saved = SavedChain {
            format: CHAIN_FORMAT,
            stages: parts,
        };
        serde_json::value::to_raw_value(&saved).map_err(|e| StateError::Unsaved(e.to_string()))
    }

    /// Restores what [`Chain::snapshot`] saved; state that does not fit (another operator,
    /// format or definition) is refused with the reason, never half taken.
    pub fn restore(&mut self, snapshot: &serde_json::value::RawValue) -> Result<(), StateError> {
        let saved: SavedChain = serde_json::from_str(snapshot.get()).map_err(|e| {
            StateError::Incompatible(format!(
                "the state was saved by an older build of weir, in a form this one does not read ({e})"
            ))
        })?;
        if saved.format != CHAIN_FORMAT {
            return Err(StateError::Incompatible(format!(
                "the state was saved in format {}, this build reads format {CHAIN_FORMAT}",
                saved.format
            )));
        }
        if saved.stages.len() != self.stages.len() {
            return Err(StateError::Incompatible(format!(
                "the rule had {} stateful stages when its state was saved and has {} now",
                saved.stages.len(),
                self.stages.len()
            )));
        }
        for (i, (s, saved)) in self.stages.iter().zip(&saved.stages).enumerate() {
            let what = format!("stage {} ({})", i + 1, s.op.kind());
            if saved.kind != s.op.kind() {
                return Err(StateError::Incompatible(format!(
                    "{what} was a {} when its state was saved",
                    saved.kind
                )));
            }
            if saved.version != s.op.state_version() {
                return Err(StateError::Incompatible(format!(
                    "{what}: its state was saved in version {} of its format, this build reads version {}",
                    saved.version,
                    s.op.state_version()
                )));
            }
            if saved.definition != format!("{:016x}", s.fingerprint) {
                return Err(StateError::Changed(format!(
                    "{what} is defined differently from when its state was saved"
                )));
            }
        }
        for (s, saved) in self.stages.iter_mut().zip(saved.stages) {
            s.op.restore(&saved.state)?;
            s.wm = saved.watermark;
        }
        Ok(())
    }
}

/// The form of a chain's snapshot; raised when [`SavedChain`] or [`SavedStage`] change.
const CHAIN_FORMAT: u32 = 2;

#[derive(serde::Serialize, serde::Deserialize)]
struct SavedChain {
    format: u32,
    stages: Vec<SavedStage>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct SavedStage {
    kind: String,
    version: u32,
    /// The fingerprint of the operator's definition (hex).
    definition: String,
    watermark: i64,
    state: Snapshot,
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_core::Row;

    /// Emits the watermark each event carries as it sees it.
    struct Carried;

    impl Operator for Carried {
        fn on_event(&mut self, _input: usize, ev: Event, out: &mut Output) {
            out.emit(Event::new(ev.wm, Row::new()));
        }

        fn on_event_ref(&mut self, input: usize, ev: &Event, out: &mut Output) {
            self.on_event(input, ev.clone(), out)
        }

        fn kind(&self) -> &'static str {
            "carried"
        }
    }

    #[test]
    fn an_operator_sees_events_carry_at_least_the_watermark_they_are_judged_by() {
        let mut chain = Chain::new(vec![(Box::new(Carried), 0)]);
        let mut ev = Event::new(10, Row::new());
        ev.wm = i64::MIN;
        let mut out = Output::default();
        chain.on_events_ref(0, [(&ev, 7)], &mut out);
        chain.on_events(0, [(ev.clone(), 8)], &mut out);
        ev.wm = 9;
        chain.on_events_ref(0, [(&ev, 8)], &mut out);
        let seen: Vec<i64> = out.events.iter().map(|e| e.ts).collect();
        assert_eq!(seen, [7, 8, 9]);
    }
}
