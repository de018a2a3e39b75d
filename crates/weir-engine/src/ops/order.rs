//! Holds events until the watermark passes them, then releases them in event-time order.
//! Stateful per-row operators (change functions, patterns, sliding windows) see their input in
//! order even when it arrives out of order.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use weir_core::Event;

use crate::operator::{judged_by, Output};
use crate::state::pairs;

/// Events of one key held until the watermark passes them, then given out in event-time
/// order.
#[derive(Debug, Serialize, Deserialize)]
pub struct EventOrder {
    #[serde(with = "pairs")]
    pending: BTreeMap<(i64, u64), Event>,
    seq: u64,
    watermark: i64,
}

impl Default for EventOrder {
    fn default() -> Self {
        EventOrder {
            pending: BTreeMap::new(),
            seq: 0,
            watermark: i64::MIN,
        }
    }
}

impl EventOrder {
    /// Buffers an event, or sends it to the late output if its stream's watermark had already
    /// passed it.
    pub fn push(&mut self, e: Event, out: &mut Output, what: &str) {
        let wm = judged_by(&e, Some(self.watermark));
        if e.ts <= wm {
            let reason = format!(
                "{what}: event time {} is not after the watermark {wm}",
                e.ts
            );
            out.late(e, reason);
            return;
        }
        self.seq += 1;
        self.pending.insert((e.ts, self.seq), e);
    }

    /// Releases, in order, every event at or before `wm`.
    pub fn release(&mut self, wm: i64) -> Vec<Event> {
        self.watermark = self.watermark.max(wm);
        if self
            .pending
            .first_key_value()
            .is_none_or(|((t, _), _)| *t > wm)
        {
            return Vec::new();
        }
        let rest = match wm.checked_add(1) {
            Some(next) => self.pending.split_off(&(next, 0)),
            None => BTreeMap::new(),
        };
        std::mem::replace(&mut self.pending, rest)
            .into_values()
            .collect()
    }
}
