//! Store-and-forward for the external sinks of durable rules.
//!
//! Results go into an outbox log on disk first. A forwarder hands them to the connector in
//! order, with at most [`WINDOW`] unsettled at a time, and moves the outbox's start as the
//! connector settles them (confirmed by the broker, or refused for good). While the broker is
//! unreachable the outbox grows, up to its capacity; when it is full the rule waits (`block`,
//! nothing lost) or the oldest results are dropped and counted (`drop_oldest`). A restarted node
//! sends the outbox again from the first unsettled result, so a result the broker confirmed just
//! before a crash may go twice: at least once.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use weir_connectors::live::{Health, Outgoing};
use weir_state::{Store, StoreError, StreamLog};

/// Results in flight to a connector at once.
pub const WINDOW: usize = 256;

/// What a full outbox does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// The rule waits for the broker: nothing is lost, inputs back up in their logs.
    #[default]
    Block,
    /// The oldest results are dropped and counted, so the newest get through first.
    DropOldest,
}

/// An outbox, for status documents.
#[derive(Debug, Clone, Serialize)]
pub struct OutboxStatus {
    /// Results waiting.
    pub depth: u64,
    /// The most it holds.
    pub capacity: u64,
    /// What a full outbox does.
    pub when_full: WhenFull,
    /// Results dropped because it was full.
    pub dropped: u64,
}

/// A durable rule's store-and-forward queue in front of an external sink: results are kept
/// until the far side confirms them.
pub struct Outbox {
    log: StreamLog,
    store: Arc<Store>,
    /// Store key of the first unsettled offset.
    key: String,
    capacity: u64,
    when_full: WhenFull,
    dropped: AtomicU64,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("log", &self.log.name())
            .field("status", &self.status())
            .finish()
    }
}

impl Outbox {
    /// Opens (or creates) the outbox of `stream` of rule `rule`.
    pub fn open(
        store: &Arc<Store>,
        rule: &str,
        stream: &str,
        capacity: u64,
        when_full: WhenFull,
    ) -> Result<Arc<Outbox>, StoreError> {
        let name = format!("out/{rule}/{stream}");
        Ok(Arc::new(Outbox {
            log: store.log(&name)?,
            store: store.clone(),
            key: format!("settled/{name}"),
            capacity,
            when_full,
            dropped: AtomicU64::new(0),
        }))
    }

    /// Stores a result for sending; with `block`, waits while the outbox is full (once the rule
    /// is `closed`, stores it anyway). Called from the rule's sink task.
    pub async fn put(&self, payload: Bytes, closed: &AtomicBool) -> Result<(), StoreError> {
        loop {
            let (first, end) = (self.log.first(), self.log.end());
            if end - first < self.capacity {
                self.log.append(&[payload])?;
                return Ok(());
            }
            match self.when_full {
                // Stopping: the result is kept beyond the capacity rather than lost.
                WhenFull::Block if closed.load(Ordering::Relaxed) => {
                    self.log.append(&[payload])?;
                    return Ok(());
                }
                WhenFull::Block => tokio::time::sleep(Duration::from_millis(20)).await,
                WhenFull::DropOldest => {
                    self.log.truncate_before(first + 1)?;
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Stores an exactly-once epoch's results and its marker in one write (see
    /// [`crate::checkpoint`]); the capacity does not hold these back, as the checkpoint that
    /// covers them is already written.
    pub fn commit(&self, payloads: &[Bytes], marker: (&str, &[u8])) -> Result<(), StoreError> {
        self.store
            .commit(&[(&self.log, payloads)], &[marker])
            .map(|_| ())
    }

    /// Its figures.
    pub fn status(&self) -> OutboxStatus {
        OutboxStatus {
            depth: self.log.end() - self.log.first(),
            capacity: self.capacity,
            when_full: self.when_full,
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }

    /// The results not yet settled, from the offset of the first: what a moving rule carries.
    pub fn unsettled(&self) -> Result<(u64, Vec<Bytes>), StoreError> {
        let from = self.settled_from();
        let entries = self.log.read(from, usize::MAX)?;
        Ok((from, entries.into_iter().map(|e| e.1).collect()))
    }

    /// Takes a moved rule's unsettled results under their offsets, which name them to the
    /// broker: a result the other node had sent already is dropped as a duplicate there.
    pub fn adopt(&self, from: u64, results: &[Bytes]) -> Result<(), StoreError> {
        self.log.truncate_before(self.log.end())?;
        self.log.adopt(from, results, &Default::default())?;
        self.store.set_meta(&self.key, &from.to_be_bytes())
    }

    /// Drops every result and the settled position (the rule is deleted or moved away).
    pub fn clear(&self) -> Result<(), StoreError> {
        self.log.truncate_before(self.log.end())?;
        self.store.remove_meta(&self.key)
    }

    fn settled_from(&self) -> u64 {
        let stored = self.store.meta_u64(&self.key).ok().flatten().unwrap_or(0);
        stored.max(self.log.first())
    }

    /// Hands stored results to the connector behind `tx` in order, and records what
    /// `health` says it has settled. Runs until the rule stops (the task is aborted).
    pub async fn forward(self: Arc<Self>, tx: mpsc::Sender<Outgoing>, health: Arc<Health>) {
        let mut next = self.settled_from();
        let mut recorded = next;
        let mut in_flight: VecDeque<u64> = VecDeque::new();
        let mut seen = health.settled.load(Ordering::Relaxed);
        loop {
            let settled = health.settled.load(Ordering::Relaxed);
            for _ in seen..settled {
                in_flight.pop_front();
            }
            seen = settled;
            let first_unsettled = in_flight.front().copied().unwrap_or(next);
            if first_unsettled > recorded {
                let done = self
                    .store
                    .set_meta(&self.key, &first_unsettled.to_be_bytes())
                    .and_then(|_| self.log.truncate_before(first_unsettled));
                match done {
                    Ok(()) => recorded = first_unsettled,
                    Err(e) => {
                        tracing::warn!(outbox = %self.key, error = %e, "outbox position not recorded")
                    }
                }
            }
            next = next.max(self.log.first());
            let room = WINDOW - in_flight.len().min(WINDOW);
            let batch = match room {
                0 => Vec::new(),
                n => self.log.read(next, n).unwrap_or_default(),
            };
            if batch.is_empty() {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
            for (offset, payload) in batch {
                // The offset names the result for good: sent again, it has the same id.
                let id = Some(format!("{}/{offset}", self.log.name()));
                if tx.send(Outgoing { payload, id }).await.is_err() {
                    return;
                }
                in_flight.push_back(offset);
                next = offset + 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_outbox_drops_the_oldest_or_keeps_results_when_stopping() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), false, 0).unwrap();
        let running = AtomicBool::new(false);
        let drop = Outbox::open(&store, "r", "a", 3, WhenFull::DropOldest).unwrap();
        for i in 0..5u8 {
            drop.put(Bytes::from(vec![i]), &running).await.unwrap();
        }
        let s = drop.status();
        assert_eq!((s.depth, s.dropped), (3, 2));
        let kept: Vec<u8> = drop
            .log
            .read(0, 10)
            .unwrap()
            .iter()
            .map(|e| e.1[0])
            .collect();
        assert_eq!(kept, vec![2, 3, 4]);

        let block = Outbox::open(&store, "r", "b", 1, WhenFull::Block).unwrap();
        block.put(Bytes::from_static(b"1"), &running).await.unwrap();
        let stopping = AtomicBool::new(true);
        block
            .put(Bytes::from_static(b"2"), &stopping)
            .await
            .unwrap();
        assert_eq!(block.status().depth, 2);
    }

    #[tokio::test]
    async fn results_go_out_in_order_and_settled_ones_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), false, 0).unwrap();
        let outbox = Outbox::open(&store, "r", "s", 100, WhenFull::Block).unwrap();
        let running = AtomicBool::new(false);
        for i in 0..10u8 {
            outbox.put(Bytes::from(vec![i]), &running).await.unwrap();
        }
        let health = Arc::new(Health::default());
        let (tx, mut rx) = mpsc::channel(4);
        let task = tokio::spawn(outbox.clone().forward(tx, health.clone()));
        for i in 0..10u8 {
            let out = rx.recv().await.unwrap();
            assert_eq!(out.payload[0], i);
            assert_eq!(out.id.as_deref(), Some(format!("out/r/s/{i}").as_str()));
            if i < 6 {
                health.count();
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        task.abort();
        // Six settled: the rest is sent again by the next forwarder, with the same ids.
        assert_eq!(outbox.status().depth, 4);
        let (tx, mut rx) = mpsc::channel(4);
        let again = tokio::spawn(outbox.clone().forward(tx, health));
        assert_eq!(rx.recv().await.unwrap().id.as_deref(), Some("out/r/s/6"));
        again.abort();
    }
}
