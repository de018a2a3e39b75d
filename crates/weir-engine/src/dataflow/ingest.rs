//! Outside input: turning rows into events (declared types, event time, dropped fields) and
//! feeding them into a stream with watermarks.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use weir_core::{Clock, Event, Row, Value, EVENT_TIME_RANGE};
use weir_lang::expr::Expr;
use weir_lang::functions::parse_timestamp;
use weir_lang::plan::{Column, Program, StreamDef, TimeMode};
use weir_lang::types::DataType;

use super::channel::{Msg, Publisher};
use crate::pool::block_on;

/// Reads a timestamp from a field: epoch milliseconds, or ISO-8601 text.
pub(super) fn timestamp_of(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::Float(f) if f.is_finite() && f.abs() < 9.2e18 => Some(*f as i64),
        Value::Str(s) => parse_timestamp(s),
        _ => None,
    }
    .filter(|t| EVENT_TIME_RANGE.contains(t))
}

/// Turns a row of an outside stream into an event: converts declared columns to their types and
/// reads the event time. Cheap to clone, so decoders can stamp rows in parallel.
#[derive(Clone)]
pub struct Stamp {
    pub(super) def: Arc<StreamDef>,
    pub(super) clock: Arc<dyn Clock>,
    /// The fields some rule reads, when no rule reads them all: the rest are dropped here
    /// rather than copied to every rule.
    pub(super) pruning: Option<Arc<Pruning>>,
    /// The stream's `received_at` field, when some rule reads it.
    pub(super) received_at: Option<Arc<str>>,
    /// The columns declared NOT NULL.
    pub(super) not_null: Vec<Arc<str>>,
}

/// Whether ingest keeps a field, and which declared column (by index) checks it.
type Decision = (bool, Option<usize>);

/// What ingest does with each field name when some fields go unread: keep it or not, and
/// which declared column checks it. A bit filter in front turns most other names away
/// without string comparisons.
pub(super) struct Pruning {
    pub(super) fields: BTreeMap<Arc<str>, Decision>,
    pub(super) filter: [u64; 16],
    /// The decisions for the field names of the first row, position by position: rows of one
    /// decoder share their name `Arc`s in the same order, so a pointer comparison decides a
    /// field without looking its name up. The names are held, so an address seen here always
    /// means the same name; a row laid out otherwise is looked up name by name.
    layout: std::sync::OnceLock<Vec<(Arc<str>, Decision)>>,
}

impl Pruning {
    fn new(keep: BTreeSet<Arc<str>>, columns: &[Column]) -> Pruning {
        let mut fields: BTreeMap<Arc<str>, Decision> =
            keep.into_iter().map(|k| (k, (true, None))).collect();
        for (i, c) in columns.iter().enumerate() {
            fields.entry(c.name.clone()).or_insert((false, None)).1 = Some(i);
        }
        let mut filter = [0u64; 16];
        for n in fields.keys() {
            let h = Self::bit(n);
            filter[h / 64] |= 1 << (h % 64);
        }
        Pruning {
            fields,
            filter,
            layout: std::sync::OnceLock::new(),
        }
    }

    /// Decides each field of `row` (kept, declared column) and keeps what `keep` says.
    fn retain(&self, row: &mut Row, mut keep: impl FnMut(Decision, &mut Value) -> bool) {
        let layout = self
            .layout
            .get_or_init(|| row.iter().map(|(k, _)| (k.clone(), self.get(k))).collect());
        let mut at = 0;
        row.retain_mut(|k, v| {
            let decided = match layout.get(at) {
                Some((name, d)) if Arc::ptr_eq(name, k) => *d,
                _ => self.get(k),
            };
            at += 1;
            keep(decided, v)
        });
    }

    /// A bit from the length and the first and last two bytes of a name.
    fn bit(name: &str) -> usize {
        let b = name.as_bytes();
        let at = |i: usize| b.get(i).copied().unwrap_or(0) as usize;
        let n = b.len();
        (n.wrapping_mul(131)
            ^ at(0).wrapping_mul(31)
            ^ at(n.wrapping_sub(1)).wrapping_mul(7)
            ^ at(n.wrapping_sub(2)).wrapping_mul(193))
            % 1024
    }

    /// (kept, declared column) for a field name.
    fn get(&self, name: &str) -> Decision {
        let h = Self::bit(name);
        if self.filter[h / 64] & (1 << (h % 64)) == 0 {
            return (false, None);
        }
        self.fields.get(name).copied().unwrap_or((false, None))
    }
}

impl Stamp {
    /// The stamp of input stream `def` of `program`: it drops the fields no rule reads.
    pub(super) fn new(program: &Program, def: StreamDef, clock: Arc<dyn Clock>) -> Stamp {
        let pruning = fields_read(program, &def.name).map(|mut f| {
            f.extend(def.timestamp.clone());
            // What computed columns read comes in too (they are computed after the pruning).
            for (_, e) in &def.computed {
                e.clone().walk_mut(&mut |x| {
                    if let Expr::Field(n) = x {
                        f.insert(n.clone());
                    }
                });
            }
            Arc::new(Pruning::new(f, def.columns.as_deref().unwrap_or_default()))
        });
        let received_at = def
            .received_at
            .clone()
            .filter(|f| pruning.as_ref().is_none_or(|p| p.get(f).0));
        let not_null = def
            .columns
            .iter()
            .flatten()
            .filter(|c| c.not_null)
            .map(|c| c.name.clone())
            .collect();
        Stamp {
            def: Arc::new(def),
            clock,
            pruning,
            received_at,
            not_null,
        }
    }

    /// Names what this stamp makes of a row: rules whose stamps have equal keys (the same
    /// stream definition, fields read and clock) can share one stamping of a batch.
    pub fn sharing_key(&self) -> String {
        let kept = self.pruning.as_ref().map(|p| {
            p.fields
                .iter()
                .filter(|(_, (kept, _))| *kept)
                .map(|(n, _)| n.clone())
                .collect::<Vec<_>>()
        });
        let clock = Arc::as_ptr(&self.clock) as *const () as usize;
        format!("{:?} reads {kept:?} clock {clock:x}", self.def)
    }

    /// Stamps `rows` (each with the index of its payload) into batches of at most `batch_size`
    /// events, once for all the rules that share this stamp (see [`Ingest::send_stamped`]).
    pub fn stamp_all<'a>(
        &self,
        rows: impl Iterator<Item = (usize, &'a Result<Row, String>)>,
        batch_size: usize,
    ) -> Stamped {
        let mut s = Stamped {
            batches: Vec::new(),
            rejected: Vec::new(),
            events: 0,
            earliest: i64::MAX,
            wm: i64::MIN,
        };
        let mut batch = Vec::new();
        for (i, row) in rows {
            match row.clone().and_then(|r| self.event(r)) {
                Ok(mut ev) => {
                    ev.wm = s.wm;
                    s.wm = self.advance(s.wm, ev.ts);
                    s.earliest = s.earliest.min(ev.ts);
                    batch.push(ev);
                    if batch.len() >= batch_size {
                        s.batches.push(Arc::new(std::mem::take(&mut batch)));
                    }
                }
                Err(reason) => s.rejected.push((i, reason)),
            }
        }
        if !batch.is_empty() {
            s.batches.push(Arc::new(batch));
        }
        s.events = s.batches.iter().map(|b| b.len()).sum();
        s
    }

    /// The stream's watermark after an event of time `ts`, from `wm` before it (bounded
    /// out-of-orderness).
    fn advance(&self, wm: i64, ts: i64) -> i64 {
        let delay = match self.def.time {
            TimeMode::Event => self.def.watermark_ms,
            TimeMode::Processing => 0,
        };
        wm.max(ts.saturating_sub(delay).saturating_sub(1))
    }

    /// `Err` says why the row cannot be an event (it should go to the dead letters).
    pub fn event(&self, mut row: Row) -> Result<Event, String> {
        let cast = |c: &Column, v: &mut Value| -> Result<(), String> {
            if !c.ty.holds(v) || c.ty == DataType::Timestamp {
                *v =
                    c.ty.accept(v)
                        .map_err(|e| format!("field {}: {e}", c.name))?;
            }
            Ok(())
        };
        let cols = self.def.columns.as_deref().unwrap_or_default();
        for name in &self.not_null {
            if row.get(name).is_none_or(Value::is_null) {
                return Err(format!(
                    "field {name} is NOT NULL, and the record has no value for it"
                ));
            }
        }
        match &self.pruning {
            // One pass: every declared column is still checked, then unread fields go.
            Some(p) => {
                let mut bad = Ok(());
                p.retain(&mut row, |(kept, column), v| {
                    if let (Some(c), true) = (column, bad.is_ok()) {
                        bad = cast(&cols[c], v);
                    }
                    kept
                });
                bad?;
            }
            None => {
                for c in cols {
                    if let Some(v) = row.get_mut(&c.name) {
                        cast(c, v)?;
                    }
                }
            }
        }
        for (name, e) in &self.def.computed {
            let v = e.eval(&row);
            row.set_shared(name, v);
        }
        if let Some(field) = &self.received_at {
            row.set_shared(field, Value::Int(self.clock.now_ns()));
        }
        let ts = match (self.def.time, &self.def.timestamp) {
            (TimeMode::Event, Some(col)) => match row.get(col) {
                None | Some(Value::Null) => return Err(format!("missing timestamp field '{col}'")),
                Some(v) => timestamp_of(v).ok_or_else(|| format!("timestamp field '{col}' holds {v}, not epoch milliseconds or ISO-8601 text of the years 1 to 9999"))?,
            },
            _ => self.clock.now_ms(),
        };
        Ok(Event::new(ts, row))
    }
}

/// Events stamped once for every rule that reads a stream the same way (see
/// [`Stamp::sharing_key`]): the batches every such rule sends on without copying them, each
/// event carrying the watermark of the events before it *in these batches* (a rule's own
/// watermark before them is sent ahead of them, and its consumers take the larger).
pub struct Stamped {
    batches: Vec<Arc<Vec<Event>>>,
    /// The rows that are not events, by the index of their payload, with the reason.
    pub rejected: Vec<(usize, String)>,
    /// How many events the batches hold.
    pub events: usize,
    /// The earliest time of an event in the batches.
    earliest: i64,
    /// The watermark after the last event.
    wm: i64,
}

/// Feeds outside events into one stream: stamps them, batches them and generates watermarks
/// (bounded out-of-orderness). A thread feeds it with [`Ingest::push`] (which waits while the
/// consumers are full); a task with [`Ingest::stage`] and then [`Ingest::flush_async`].
pub struct Ingest {
    pub(super) stamp: Stamp,
    pub(super) publisher: Publisher,
    pub(super) batch: Vec<Event>,
    pub(super) batch_size: usize,
    /// Full batches not sent yet.
    pub(super) ready: Vec<Vec<Event>>,
    /// The stream's watermark after the events pushed so far.
    pub(super) wm: i64,
    /// The newest watermark sent to the consumers.
    pub(super) sent: i64,
    /// The newest watermark the consumers were sent in a message of its own (a resumed
    /// stream takes its watermark without telling them; its events carry it).
    pub(super) told: i64,
}

impl Ingest {
    /// Accepts one row, sending each full batch; `Err` says why the row cannot be an event (it
    /// should go to the dead letters). For threads; a task uses [`Ingest::stage`].
    pub fn push(&mut self, row: Row) -> Result<(), String> {
        let ev = self.stamp.event(row)?;
        self.push_event(ev);
        Ok(())
    }

    /// Accepts one row without sending anything: [`Ingest::flush_async`] sends it.
    pub fn stage(&mut self, row: Row) -> Result<(), String> {
        let ev = self.stamp.event(row)?;
        self.stage_event(ev);
        Ok(())
    }

    /// Accepts an event already stamped by this stream's [`Stamp`]: it carries the watermark of
    /// the events before it, by which every rule judges whether it is late.
    pub fn push_event(&mut self, ev: Event) {
        self.stage_event(ev);
        if !self.ready.is_empty() {
            block_on(self.flush_async());
        }
    }

    fn stage_event(&mut self, mut ev: Event) {
        ev.wm = self.wm;
        self.wm = self.stamp.advance(self.wm, ev.ts);
        self.batch.push(ev);
        if self.batch.len() >= self.batch_size {
            self.seal();
        }
    }

    /// Moves the open batch to the ones ready to send. The next one is sized like it: full
    /// under load, small for an idle stream (a thousand idle rules would otherwise each hold
    /// room for a thousand events).
    fn seal(&mut self) {
        let next = Vec::with_capacity(self.batch.len());
        self.ready.push(std::mem::replace(&mut self.batch, next));
    }

    /// Names how this stream stamps rows, for [`Stamp::stamp_all`] shared between rules.
    pub fn sharing_key(&self) -> String {
        format!("{} batch {}", self.stamp.sharing_key(), self.batch_size)
    }

    /// Stamps rows for every rule that shares this stream's [`Ingest::sharing_key`].
    pub fn stamp_all<'a>(
        &self,
        rows: impl Iterator<Item = (usize, &'a Result<Row, String>)>,
    ) -> Stamped {
        self.stamp.stamp_all(rows, self.batch_size)
    }

    /// Sends events stamped once for several rules after what this stream staged before, as
    /// if it had staged them itself: the consumers learn this stream's watermark first, and
    /// judge each shared event by the larger of it and the watermark the event carries. Sends
    /// nothing and says `false` when the stream cannot take them as they are: a
    /// processing-time stream whose watermark has passed their time (another rule stamped them
    /// before this one's clock moved on) stamps its rows itself.
    pub async fn send_stamped(&mut self, stamped: &Stamped) -> bool {
        self.send_staged().await;
        if stamped.events == 0 {
            return true;
        }
        if self.stamp.def.time == TimeMode::Processing && self.wm >= stamped.earliest {
            return false;
        }
        if self.wm > self.told {
            self.told = self.wm;
            self.sent = self.sent.max(self.wm);
            self.publisher.send(Msg::Watermark(self.wm)).await;
        }
        for b in &stamped.batches {
            self.publisher.send(Msg::Data(b.clone())).await;
        }
        self.wm = self.wm.max(stamped.wm);
        true
    }

    /// Sends every event staged so far, without a watermark.
    async fn send_staged(&mut self) {
        if !self.batch.is_empty() {
            self.seal();
        }
        for batch in std::mem::take(&mut self.ready) {
            self.publisher.send(Msg::Data(Arc::new(batch))).await;
        }
    }

    /// Sends the full batches staged so far, if there are any, with the watermark they allow
    /// (a task calls it after staging a payload's rows).
    pub async fn send_full(&mut self) {
        if !self.ready.is_empty() {
            self.flush_async().await;
        }
    }

    /// A copy of the stamping, for decoders that stamp rows on threads of their own.
    pub fn stamp(&self) -> Stamp {
        self.stamp.clone()
    }

    /// The stream's watermark: what a checkpoint keeps so that a restored rule judges the
    /// events after it as the uninterrupted rule would have.
    pub fn watermark(&self) -> i64 {
        self.wm
    }

    /// Continues from a watermark a checkpoint kept.
    pub fn resume_at(&mut self, wm: i64) {
        self.wm = self.wm.max(wm);
        self.sent = self.sent.max(wm);
    }

    /// Sends the pending batches and the watermark they allow (a processing-time stream's
    /// moves on with the clock).
    pub async fn flush_async(&mut self) {
        self.send_staged().await;
        if self.stamp.def.time == TimeMode::Processing {
            self.wm = self.wm.max(self.stamp.clock.now_ms() - 1);
        }
        if self.wm > self.sent {
            self.sent = self.wm;
            self.told = self.wm;
            self.publisher.send(Msg::Watermark(self.wm)).await;
        }
    }

    /// [`Ingest::flush_async`] for a thread.
    pub fn flush(&mut self) {
        block_on(self.flush_async())
    }

    /// Puts the barrier of checkpoint `epoch` into the stream, after everything pushed so far.
    pub async fn barrier_async(&mut self, epoch: u64) {
        self.flush_async().await;
        self.publisher.send(Msg::Barrier(epoch)).await;
    }

    /// [`Ingest::barrier_async`] for a thread.
    pub fn barrier(&mut self, epoch: u64) {
        block_on(self.barrier_async(epoch))
    }

    /// Ends the stream: everything is flushed and consumers learn no more events will come.
    pub async fn end(mut self) {
        self.flush_async().await;
        self.publisher.send(Msg::End).await;
    }

    /// [`Ingest::end`] for a thread.
    pub fn finish(self) {
        block_on(self.end())
    }

    /// The definition of the stream this ingest feeds.
    pub fn stream(&self) -> &StreamDef {
        &self.stamp.def
    }
}

/// The fields of `stream` the program's rules read; `None` if one of them may read them all.
pub(super) fn fields_read(program: &Program, stream: &str) -> Option<BTreeSet<Arc<str>>> {
    let mut all = BTreeSet::new();
    for r in &program.rules {
        if r.inputs().iter().any(|i| i.eq_ignore_ascii_case(stream)) {
            all.extend(r.fields_read()?);
        }
    }
    Some(all)
}
