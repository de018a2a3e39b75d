//! The node's embedded topics: an in-process publish/subscribe bus with MQTT topic filters.
//! Streams without a connector live here; the embedded MQTT endpoint, HTTP ingest, live tails
//! and rules publish and subscribe on it.
//!
//! Subscribers are *reliable* (a rule: the publisher waits while its channel is full), *lossy*
//! (a network client or a tail: a message it cannot take now is dropped and counted, so one slow
//! reader never stalls the rules) or *journals* (a durable log of the topic, which at-least-once
//! and exactly-once rules read: a publish returns once the message is stored).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use tokio::sync::mpsc;
use weir_state::{Store, StoreError, StreamLog};

/// A message on an embedded topic.
#[derive(Debug, Clone)]
pub struct Message {
    pub topic: Arc<str>,
    pub payload: Bytes,
}

enum Target {
    Channel {
        tx: mpsc::Sender<Message>,
        lossy: bool,
    },
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

pub struct Hub {
    store: Arc<Store>,
    subs: RwLock<Subs>,
    next: AtomicU64,
    pub published: AtomicU64,
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

/// Messages for the reliable subscribers, which the publisher waits on in its own way.
type Pending = Vec<(mpsc::Sender<Message>, Message)>;

impl Hub {
    pub fn new(store: Arc<Store>) -> Arc<Hub> {
        Arc::new(Hub {
            store,
            subs: RwLock::default(),
            next: AtomicU64::new(0),
            published: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        })
    }

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

    /// Delivers messages whose topic matches `filter` to `tx`.
    pub fn subscribe(
        self: &Arc<Self>,
        filter: &str,
        tx: mpsc::Sender<Message>,
        lossy: bool,
    ) -> Subscription {
        self.add(filter, Target::Channel { tx, lossy })
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
        for p in payloads {
            let msg = Message {
                topic: topic.clone(),
                payload: p.clone(),
            };
            for s in &matching {
                match &s.target {
                    Target::Channel { tx, lossy: false } => pending.push((tx.clone(), msg.clone())),
                    Target::Channel { tx, lossy: true } => {
                        if tx.try_send(msg.clone()).is_err() {
                            self.dropped.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Target::Journal(_) => {}
                }
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
        for (tx, msg) in self.dispatch(topic, payloads, markers)? {
            let _ = tx.send(msg).await;
        }
        Ok(())
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
        let sub = hub.subscribe("t/#", tx, true);
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
        let e = hub.subscribe("a/b", exact_tx, false);
        let w = hub.subscribe("a/+", wild_tx, false);
        let o = hub.subscribe("a/c", other_tx, false);
        hub.publish("a/b", Bytes::from_static(b"1")).await.unwrap();
        assert_eq!(exact.recv().await.unwrap().payload, "1");
        assert_eq!(wild.recv().await.unwrap().payload, "1");
        assert!(other.try_recv().is_err());
        drop((e, w, o));
        let subs = hub.subs.read().unwrap();
        assert!(subs.exact.is_empty() && subs.wild.is_empty());
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
