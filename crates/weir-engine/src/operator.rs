//! The one operator trait. Every stage of a rule implements it; only `on_event` is required, the
//! lifecycle hooks default to doing nothing so stateless stages stay short.

use weir_core::Event;

use crate::state::StateError;

/// Where an operator puts what it produces.
#[derive(Debug, Default)]
pub struct Output {
    pub events: Vec<Event>,
    /// Events that arrived after the watermark had passed them, with the reason.
    pub late: Vec<(Event, String)>,
}

impl Output {
    pub fn emit(&mut self, e: Event) {
        self.events.push(e);
    }

    pub fn late(&mut self, e: Event, reason: String) {
        self.late.push((e, reason));
    }
}

pub trait Operator: Send {
    /// One input event. `input` tells which input it came from (joins have two).
    fn on_event(&mut self, input: usize, event: Event, out: &mut Output);

    /// Event time has reached `wm`: no more events with `ts <= wm` are expected.
    /// An event of a batch that other rules share: operators that only read their input
    /// override this to spare the copy.
    fn on_event_ref(&mut self, input: usize, event: &Event, out: &mut Output) {
        self.on_event(input, event.clone(), out);
    }

    fn on_watermark(&mut self, _wm: i64, _out: &mut Output) {}

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

    /// The operator's state, for checkpoints and moves.
    fn snapshot(&self) -> crate::state::Snapshot {
        crate::state::empty_snapshot()
    }

    fn restore(&mut self, _snapshot: &serde_json::value::RawValue) -> Result<(), StateError> {
        Ok(())
    }
}

/// Operators run one after the other: the output of each is the input of the next.
/// A watermark held back by `delay`; the end of input (`i64::MAX`) stays the end.
pub fn held_back(wm: i64, delay: i64) -> i64 {
    if wm == i64::MAX {
        wm
    } else {
        wm.saturating_sub(delay)
    }
}

pub struct Chain {
    ops: Vec<Box<dyn Operator>>,
}

impl Chain {
    pub fn new(ops: Vec<Box<dyn Operator>>) -> Chain {
        Chain { ops }
    }

    /// Pushes what stage `from` produced through the remaining stages; each stage sees the
    /// watermark held back by the delays of the stages before it.
    fn forward(&mut self, from: usize, out: &mut Output, wm: Option<i64>, end: bool) {
        let mut batch = std::mem::take(&mut out.events);
        let mut wm = wm.map(|w| held_back(w, self.ops[from].watermark_delay()));
        for op in self.ops[from + 1..].iter_mut() {
            let mut next = Output::default();
            for e in batch {
                op.on_event(0, e, &mut next);
            }
            if end {
                op.on_end(&mut next);
            } else if let Some(w) = wm {
                op.on_watermark(w, &mut next);
                wm = Some(held_back(w, op.watermark_delay()));
            }
            out.late.append(&mut next.late);
            batch = next.events;
        }
        out.events = batch;
    }
}

impl Chain {
    /// Passes what the first stage made of an event through the rest.
    fn after_first(&mut self, mut first: Output, out: &mut Output) {
        if !first.events.is_empty() {
            self.forward(0, &mut first, None, false);
        }
        out.events.append(&mut first.events);
        out.late.append(&mut first.late);
    }
}

impl Operator for Chain {
    fn on_event(&mut self, input: usize, event: Event, out: &mut Output) {
        let mut first = Output::default();
        self.ops[0].on_event(input, event, &mut first);
        self.after_first(first, out);
    }

    fn on_event_ref(&mut self, input: usize, event: &Event, out: &mut Output) {
        let mut first = Output::default();
        self.ops[0].on_event_ref(input, event, &mut first);
        self.after_first(first, out);
    }

    fn on_watermark(&mut self, wm: i64, out: &mut Output) {
        let mut first = Output::default();
        self.ops[0].on_watermark(wm, &mut first);
        self.forward(0, &mut first, Some(wm), false);
        out.events.append(&mut first.events);
        out.late.append(&mut first.late);
    }

    fn on_end(&mut self, out: &mut Output) {
        let mut first = Output::default();
        self.ops[0].on_end(&mut first);
        self.forward(0, &mut first, None, true);
        out.events.append(&mut first.events);
        out.late.append(&mut first.late);
    }

    fn set_state_ttl(&mut self, ttl_ms: i64) {
        for op in &mut self.ops {
            op.set_state_ttl(ttl_ms);
        }
    }

    fn watermark_delay(&self) -> i64 {
        self.ops.iter().map(|o| o.watermark_delay()).sum()
    }

    fn snapshot(&self) -> crate::state::Snapshot {
        let parts: Vec<crate::state::Snapshot> = self.ops.iter().map(|o| o.snapshot()).collect();
        crate::state::to_snapshot(&parts)
    }

    fn restore(&mut self, snapshot: &serde_json::value::RawValue) -> Result<(), StateError> {
        let parts: Vec<&serde_json::value::RawValue> = crate::state::from_snapshot(snapshot)
            .map_err(|_| StateError::Incompatible("a chain snapshot is a list".into()))?;
        if parts.len() != self.ops.len() {
            return Err(StateError::Incompatible(format!(
                "{} stages in the snapshot, {} in the rule",
                parts.len(),
                self.ops.len()
            )));
        }
        for (op, s) in self.ops.iter_mut().zip(parts) {
            op.restore(s)?;
        }
        Ok(())
    }
}
