//! What flows between stages: messages, the publisher that fans a producer's messages out to
//! its consumers, and the consumer side that combines watermarks and aligns barriers.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::mpsc;

use weir_core::Event;

use super::ingest::timestamp_of;
use crate::operator::held_back;

/// What flows on a channel. A batch is shared by the consumers of its stream: each takes its
/// own copy in its own task (the last one takes the batch itself), so a stream read by many
/// rules does not make its producer copy for all of them.
#[derive(Debug, Clone)]
pub enum Msg {
    /// A batch of events, shared by every consumer of the channel.
    Data(Arc<Vec<Event>>),
    /// Event time (ms) below which no more events come.
    Watermark(i64),
    /// Checkpoint barrier of an epoch.
    Barrier(u64),
    /// The input is over: operators flush what they hold.
    End,
}

/// A shared batch as this consumer's own events.
pub(super) fn own(batch: Arc<Vec<Event>>) -> Vec<Event> {
    Arc::try_unwrap(batch).unwrap_or_else(|shared| (*shared).clone())
}

/// A message and the consumer-side slot (input × producer) it arrived on.
pub(super) struct Envelope {
    pub(super) slot: usize,
    pub(super) msg: Msg,
}

/// Sends one producer's messages to every consumer of a stream.
#[derive(Clone, Default)]
pub(super) struct Publisher {
    pub(super) subs: Vec<(mpsc::Sender<Envelope>, usize)>,
    /// The stream's timestamp column, when events take their time from a field on the way in.
    pub(super) retime: Option<Arc<str>>,
    /// Extra watermark delay declared on the stream.
    pub(super) delay: i64,
}

impl Publisher {
    /// Sends to every consumer, waiting while a consumer's channel is full (backpressure).
    pub(super) async fn send(&self, msg: Msg) {
        let msg = match msg {
            Msg::Data(mut evs) if self.retime.is_some() || self.delay != 0 => {
                let col = self.retime.as_deref();
                for e in Arc::make_mut(&mut evs).iter_mut() {
                    if let Some(ts) = col.and_then(|c| e.row.get(c)).and_then(timestamp_of) {
                        e.ts = ts;
                    }
                    e.wm = held_back(e.wm, self.delay);
                }
                Msg::Data(evs)
            }
            Msg::Watermark(w) => Msg::Watermark(held_back(w, self.delay)),
            other => other,
        };
        if let Msg::Data(d) = &msg {
            if d.is_empty() {
                return;
            }
        }
        let mut msg = Some(msg);
        let n = self.subs.len();
        for (i, (tx, slot)) in self.subs.iter().enumerate() {
            // The last subscriber takes the message itself; only fan-out pays for copies.
            let m = if i + 1 == n { msg.take() } else { msg.clone() };
            if let Some(m) = m {
                // A consumer that has gone away (output closed) is not an error for the producer.
                let _ = tx
                    .send(Envelope {
                        slot: *slot,
                        msg: m,
                    })
                    .await;
            }
        }
    }
}

/// Combines the watermarks of several slots: the minimum of those not yet ended. A slot's
/// watermark rises with its watermark messages and with the watermark each of its events
/// carries.
pub(super) struct Tracker {
    wms: Vec<i64>,
    ended: Vec<bool>,
    current: i64,
}

impl Tracker {
    pub(super) fn new(slots: usize) -> Tracker {
        Tracker {
            wms: vec![i64::MIN; slots],
            ended: vec![false; slots],
            current: i64::MIN,
        }
    }

    /// Records a slot's watermark; returns the combined one if it advanced.
    pub(super) fn watermark(&mut self, slot: usize, wm: i64) -> Option<i64> {
        if wm <= self.wms[slot] {
            return None;
        }
        self.wms[slot] = wm;
        if self.wms.len() == 1 {
            // One producer, the common case: its watermark is the combined one.
            self.current = wm;
            return Some(wm);
        }
        self.advance()
    }

    pub(super) fn end(&mut self, slot: usize) -> Option<i64> {
        self.ended[slot] = true;
        self.advance()
    }

    pub(super) fn all_ended(&self) -> bool {
        self.ended.iter().all(|e| *e)
    }

    /// The combined watermark.
    pub(super) fn current(&self) -> i64 {
        self.current
    }

    fn advance(&mut self) -> Option<i64> {
        let min = self
            .wms
            .iter()
            .zip(&self.ended)
            .filter(|(_, e)| !**e)
            .map(|(w, _)| *w)
            .min()
            .unwrap_or(i64::MAX);
        if min > self.current && !self.all_ended() {
            self.current = min;
            Some(min)
        } else {
            None
        }
    }
}

/// What a consumer takes from its channel: a message from one slot, or a barrier every slot has
/// delivered.
pub(super) enum Next {
    Msg(Envelope),
    Barrier(u64),
}

/// A consumer's channel with barrier alignment: once a slot has delivered the barrier of the
/// current epoch, its later messages are held until every slot still running has delivered it.
pub(super) struct Inbox {
    pub(super) rx: mpsc::Receiver<Envelope>,
    pub(super) at_barrier: Vec<bool>,
    pub(super) ended: Vec<bool>,
    pub(super) held: Vec<VecDeque<Msg>>,
    pub(super) ready: VecDeque<Envelope>,
    pub(super) epoch: Option<u64>,
}

impl Inbox {
    pub(super) fn new(rx: mpsc::Receiver<Envelope>, slots: usize) -> Inbox {
        Inbox {
            rx,
            at_barrier: vec![false; slots],
            ended: vec![false; slots],
            held: (0..slots).map(|_| VecDeque::new()).collect(),
            ready: VecDeque::new(),
            epoch: None,
        }
    }

    pub(super) async fn next(&mut self) -> Option<Next> {
        loop {
            let env = match self.ready.pop_front() {
                Some(e) => e,
                None => self.rx.recv().await?,
            };
            let slot = env.slot;
            if self.at_barrier[slot] {
                self.held[slot].push_back(env.msg);
                continue;
            }
            match env.msg {
                Msg::Barrier(e) => {
                    self.at_barrier[slot] = true;
                    self.epoch = Some(e);
                }
                Msg::End => {
                    self.ended[slot] = true;
                    if self.epoch.is_none() || !self.aligned() {
                        return Some(Next::Msg(env));
                    }
                    // This end completes the barrier: the barrier goes first.
                    self.ready.push_front(env);
                }
                _ => return Some(Next::Msg(env)),
            }
            if self.epoch.is_some() && self.aligned() {
                for (slot, held) in self.held.iter_mut().enumerate() {
                    self.ready
                        .extend(held.drain(..).map(|msg| Envelope { slot, msg }));
                }
                self.at_barrier.iter_mut().for_each(|b| *b = false);
                return self.epoch.take().map(Next::Barrier);
            }
        }
    }

    pub(super) fn aligned(&self) -> bool {
        self.at_barrier
            .iter()
            .zip(&self.ended)
            .all(|(b, e)| *b || *e)
    }
}

/// The receiving end of a dataflow's side channel (late events, operator snapshots): `recv`
/// for tasks, an iterator for threads.
pub struct Receiver<T>(Inner<T>);

enum Inner<T> {
    Bounded(mpsc::Receiver<T>),
    Unbounded(mpsc::UnboundedReceiver<T>),
}

impl<T> Receiver<T> {
    pub(super) fn bounded(rx: mpsc::Receiver<T>) -> Receiver<T> {
        Receiver(Inner::Bounded(rx))
    }

    pub(super) fn unbounded(rx: mpsc::UnboundedReceiver<T>) -> Receiver<T> {
        Receiver(Inner::Unbounded(rx))
    }

    /// The next item if one is waiting.
    pub fn try_recv(&mut self) -> Option<T> {
        match &mut self.0 {
            Inner::Bounded(rx) => rx.try_recv().ok(),
            Inner::Unbounded(rx) => rx.try_recv().ok(),
        }
    }

    /// The next item; `None` once every sender has gone.
    pub async fn recv(&mut self) -> Option<T> {
        match &mut self.0 {
            Inner::Bounded(rx) => rx.recv().await,
            Inner::Unbounded(rx) => rx.recv().await,
        }
    }
}

impl<T> Iterator for Receiver<T> {
    type Item = T;

    /// Waits for the next item on this thread (not for use in a task).
    fn next(&mut self) -> Option<T> {
        crate::pool::block_on(self.recv())
    }
}
