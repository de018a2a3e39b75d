//! The node's embedded topics: an in-process publish/subscribe bus with MQTT topic filters.
//! Streams without a connector live here; the embedded MQTT endpoint, HTTP ingest, live tails
//! and rules publish and subscribe on it.
//!
//! Subscribers are *readers* (a rule: the publisher waits while its channel is full, and every
//! reader of a topic gets the same [`Published`] batch, decoded and stamped once for all of
//! them), *lossy* (a network client or a tail: a message it cannot take now is dropped and counted, so one slow
//! reader never stalls the rules) or *journals* (a durable log of the topic, which at-least-once
//! and exactly-once rules read: a publish returns once the message is stored).

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use bytes::Bytes;
use tokio::sync::mpsc;
use weir_core::Row;
use weir_state::{Store, StoreError, StreamLog};

/// A message on an embedded topic.
#[derive(Debug, Clone)]
pub struct Message {
    /// The topic.
    pub topic: Arc<str>,
    /// The payload.
    pub payload: Bytes,
}

/// One publish as its readers get it: the payloads, and what each way of reading them made of
/// them. Thousands of rules reading one stream decode and stamp each batch once, not once each.
pub struct Published {
    /// The topic published to.
    pub topic: Arc<str>,
    /// The payloads, in order.
    pub payloads: Vec<Bytes>,
    /// Each an `Arc<OnceLock<T>>`, by the key that names how it was made from the payloads.
    made: Mutex<Vec<(String, Arc<dyn Any + Send + Sync>)>>,
}

/// Decoded payloads: each row (or the reason it is not one) with the index of its payload, in
/// payload order.
pub type Decoded = Vec<(usize, Result<Row, String>)>;

impl Published {
    /// A publish nothing has read yet.
    pub fn new(topic: Arc<str>, payloads: Vec<Bytes>) -> Published {
        Published {
            topic,
            payloads,
            made: Mutex::default(),
        }
    }

    /// What `make` makes of this publish, made once for every reader that asks with the same
    /// `key` (which names the way of making it: the format and its options, say): the first
    /// reader does the work while the others wait for it.
    pub fn shared<T: Send + Sync + 'static>(&self, key: &str, make: impl FnOnce() -> T) -> Made<T> {
        let cell = {
            let mut all = self.made.lock().unwrap_or_else(|e| e.into_inner());
            let found = all.iter().find(|(k, _)| k == key).map(|(_, c)| c.clone());
            match found.map(Arc::downcast::<OnceLock<T>>) {
                Some(Ok(cell)) => cell,
                // The same key for another kind of thing: made for this reader alone.
                Some(Err(_)) => Arc::new(OnceLock::new()),
                None => {
                    let cell = Arc::new(OnceLock::new());
                    all.push((key.to_owned(), cell.clone()));
                    cell
                }
            }
        };
        cell.get_or_init(make);
        Made(cell)
    }
}

/// What a way of reading a publish made of it (see [`Published::shared`]).
pub struct Made<T>(Arc<OnceLock<T>>);

impl<T> std::ops::Deref for Made<T> {
    type Target = T;

    fn deref(&self) -> &T {
        // Set before a `Made` is returned.
        self.0.get().expect("made before it is handed out")
    }
}

enum Target {
    /// Drops what the subscriber cannot take now.
    Lossy(mpsc::Sender<Message>),
    /// The publisher waits for room.
    Reader(mpsc::Sender<Arc<Published>>),
    Journal(StreamLog),
}

struct Sub {
    id: u64,
    filter: String,
    target: Target,
}

/// The subscriptions: filters without wildcards by topic, so a publish looks at the ones of its
/// topic and the wildcard ones only (thousands of rules each have a topic of their own).
#[derive(Default)]
struct Subs {
    exact: HashMap<String, Vec<Sub>>,
    wild: Vec<Sub>,
}

fn is_exact(filter: &str) -> bool {
    !filter.contains(['+', '#'])
}

/// The node's topics: rules, the MQTT endpoint and HTTP ingest publish to it, and their
/// readers subscribe by topic filter; topics with a durable log keep what is published.
pub struct Hub {
    store: Arc<Store>,
    subs: RwLock<Subs>,
    next: AtomicU64,
    /// Publishes so far.
    pub published: AtomicU64,
    /// Messages a slow reader missed (non-durable subscriptions).
    pub dropped: AtomicU64,
}

/// A live subscription; dropping it unsubscribes.
pub struct Subscription {
    hub: Arc<Hub>,
    id: u64,
    filter: String,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut subs = self.hub.subs.write().unwrap_or_else(|e| e.into_inner());
        if is_exact(&self.filter) {
            if let Some(list) = subs.exact.get_mut(&self.filter) {
                list.retain(|s| s.id != self.id);
                if list.is_empty() {
                    subs.exact.remove(&self.filter);
                }
            }
        } else {
            subs.wild.retain(|s| s.id != self.id);
        }
    }
}

/// Whether `topic` matches the MQTT filter `filter` (`+` one level, `#` the rest). Topics that
/// start with `$` are matched only by filters that name them, as MQTT requires.
pub fn matches(topic: &str, filter: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut t = topic.split('/');
    let mut f = filter.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Batches for the readers, which the publisher waits on in its own way.
type Pending = Vec<(mpsc::Sender<Arc<Published>>, Arc<Published>)>;

impl Hub {
    /// A hub whose durable logs are in `store`.
    pub fn new(store: Arc<Store>) -> Arc<Hub> {
        Arc::new(Hub {
            store,
            subs: RwLock::default(),
            next: AtomicU64::new(0),
            published: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        })
    }

    /// The store of the topics' logs.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    fn add(self: &Arc<Self>, filter: &str, target: Target) -> Subscription {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let sub = Sub {
            id,
            filter: filter.to_owned(),
            target,
        };
        let mut subs = self.subs.write().unwrap_or_else(|e| e.into_inner());
        match is_exact(filter) {
            true => subs.exact.entry(filter.to_owned()).or_default().push(sub),
            false => subs.wild.push(sub),
        }
        Subscription {
            hub: self.clone(),
            id,
            filter: filter.to_owned(),
        }
    }

    /// Delivers messages whose topic matches `filter` to `tx` while it has room; the others
    /// are dropped and counted.
    pub fn subscribe(self: &Arc<Self>, filter: &str, tx: mpsc::Sender<Message>) -> Subscription {
        self.add(filter, Target::Lossy(tx))
    }

    /// Delivers each publish on a topic matching `filter` to `tx` as one batch, waiting for
    /// room: a reader is never skipped.
    pub fn read(self: &Arc<Self>, filter: &str, tx: mpsc::Sender<Arc<Published>>) -> Subscription {
        self.add(filter, Target::Reader(tx))
    }

    /// Stores messages whose topic matches `filter` in `log` before their publish returns.
    pub fn journal(self: &Arc<Self>, filter: &str, log: StreamLog) -> Subscription {
        self.add(filter, Target::Journal(log))
    }

    /// Stores a batch in the journals of its topic (with `marker`, all in one atomic write),
    /// hands it to the lossy subscribers, and returns what the reliable ones are owed.
    fn dispatch(
        &self,
        topic: &str,
        payloads: &[Bytes],
        markers: &[(&str, &[u8])],
    ) -> Result<Pending, StoreError> {
        let subs = self.subs.read().unwrap_or_else(|e| e.into_inner());
        let exact = subs.exact.get(topic).into_iter().flatten();
        let wild = subs.wild.iter().filter(|s| matches(topic, &s.filter));
        let matching: Vec<&Sub> = exact.chain(wild).collect();
        let mut journals: Vec<&StreamLog> = Vec::new();
        for s in &matching {
            if let Target::Journal(log) = &s.target {
                if !journals.iter().any(|j| j.name() == log.name()) {
                    journals.push(log);
                }
            }
        }
        if !journals.is_empty() || !markers.is_empty() {
            let appends: Vec<(&StreamLog, &[Bytes])> =
                journals.iter().map(|j| (*j, payloads)).collect();
            self.store.commit(&appends, markers)?;
        }
        self.published
            .fetch_add(payloads.len() as u64, Ordering::Relaxed);
        let topic: Arc<str> = Arc::from(topic);
        let mut pending = Vec::new();
        let mut batch = None;
        for s in &matching {
            match &s.target {
                Target::Reader(tx) => {
                    let batch = batch.get_or_insert_with(|| {
                        Arc::new(Published::new(topic.clone(), payloads.to_vec()))
                    });
                    pending.push((tx.clone(), batch.clone()));
                }
                Target::Lossy(tx) => {
                    for p in payloads {
                        let msg = Message {
                            topic: topic.clone(),
                            payload: p.clone(),
                        };
                        if tx.try_send(msg).is_err() {
                            self.dropped.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Target::Journal(_) => {}
            }
        }
        Ok(pending)
    }

    /// Publishes from async code; returns once journals hold the message, waiting while a
    /// reliable subscriber is full.
    pub async fn publish(&self, topic: &str, payload: Bytes) -> Result<(), StoreError> {
        self.publish_all(topic, &[payload]).await
    }

    /// Publishes several messages in order, stored in the journals in one atomic write.
    pub async fn publish_all(&self, topic: &str, payloads: &[Bytes]) -> Result<(), StoreError> {
        self.publish_marked(topic, payloads, &[]).await
    }

    /// Like [`Hub::publish_all`], with `markers` set in the same atomic write.
    pub async fn publish_marked(
        &self,
        topic: &str,
        payloads: &[Bytes],
        markers: &[(&str, &[u8])],
    ) -> Result<(), StoreError> {
        for (tx, batch) in self.dispatch(topic, payloads, markers)? {
            let _ = tx.send(batch).await;
        }
        Ok(())
    }

    /// Whether anything would take a message on `topic`: results nobody reads need no encoding.
    pub fn has_subscribers(&self, topic: &str) -> bool {
        let subs = self.subs.read().unwrap_or_else(|e| e.into_inner());
        subs.exact.contains_key(topic) || subs.wild.iter().any(|s| matches(topic, &s.filter))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters() {
        assert!(matches("a/b/c", "a/+/c"));
        assert!(matches("a/b/c", "a/#"));
        assert!(matches("a", "a/#"));
        assert!(!matches("a/b", "a/+/c"));
        assert!(!matches("a/b/c", "a/b"));
        assert!(!matches("$weir/x", "#"));
        assert!(matches("$weir/x", "$weir/+"));
    }

    fn hub() -> (Arc<Hub>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        (Hub::new(Store::open(dir.path(), false, 0).unwrap()), dir)
    }

    #[tokio::test]
    async fn lossy_subscribers_drop_and_unsubscribe_on_drop() {
        let (hub, _dir) = hub();
        let (tx, mut rx) = mpsc::channel(1);
        let sub = hub.subscribe("t/#", tx);
        hub.publish("t/1", Bytes::from_static(b"1")).await.unwrap();
        hub.publish("t/2", Bytes::from_static(b"2")).await.unwrap();
        assert_eq!(rx.recv().await.unwrap().payload, "1");
        assert_eq!(hub.dropped.load(Ordering::Relaxed), 1);
        drop(sub);
        hub.publish("t/3", Bytes::from_static(b"3")).await.unwrap();
        assert!(rx.recv().await.is_none());
    }

    #[tokio::test]
    async fn exact_and_wildcard_subscribers_get_their_topics_and_leave_when_dropped() {
        let (hub, _dir) = hub();
        let (exact_tx, mut exact) = mpsc::channel(8);
        let (wild_tx, mut wild) = mpsc::channel(8);
        let (other_tx, mut other) = mpsc::channel(8);
        let e = hub.read("a/b", exact_tx);
        let w = hub.read("a/+", wild_tx);
        let o = hub.read("a/c", other_tx);
        assert!(hub.has_subscribers("a/b") && !hub.has_subscribers("b"));
        hub.publish("a/b", Bytes::from_static(b"1")).await.unwrap();
        let (one, two) = (exact.recv().await.unwrap(), wild.recv().await.unwrap());
        assert_eq!(one.payloads, [Bytes::from_static(b"1")]);
        assert!(Arc::ptr_eq(&one, &two), "readers share one batch");
        assert!(other.try_recv().is_err());
        drop((e, w, o));
        assert!(!hub.has_subscribers("a/b"));
        let subs = hub.subs.read().unwrap();
        assert!(subs.exact.is_empty() && subs.wild.is_empty());
    }

    #[test]
    fn each_way_of_reading_a_batch_runs_once() {
        let batch = Published::new(
            Arc::from("t"),
            vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")],
        );
        let runs = AtomicU64::new(0);
        let decode = || -> Decoded {
            runs.fetch_add(1, Ordering::Relaxed);
            batch
                .payloads
                .iter()
                .enumerate()
                .map(|(i, _)| (i, Err("not a row".to_owned())))
                .collect()
        };
        let first = batch.shared("json", decode);
        let again = batch.shared("json", decode);
        assert!(Arc::ptr_eq(&first.0, &again.0));
        assert_eq!(first.len(), 2);
        batch.shared("csv", decode);
        assert_eq!(runs.load(Ordering::Relaxed), 2);
        // The same key for another kind of thing is made apart, not mistaken for the rows.
        assert_eq!(*batch.shared("json", || 7_u32), 7);
        assert_eq!(runs.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn journals_store_before_publish_returns() {
        let (hub, _dir) = hub();
        let log = hub.store().log("topic/t").unwrap();
        let sub = hub.journal("t/+", log.clone());
        let batch = [Bytes::from_static(b"1"), Bytes::from_static(b"2")];
        hub.publish_all("t/a", &batch).await.unwrap();
        hub.publish("u", Bytes::from_static(b"x")).await.unwrap();
        assert_eq!(log.read(0, 10).unwrap().len(), 2);
        drop(sub);
        hub.publish("t/a", Bytes::from_static(b"3")).await.unwrap();
        assert_eq!(log.end(), 2);
    }
}
