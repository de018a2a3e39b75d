//! The node's embedded topics: an in-process publish/subscribe bus with MQTT topic filters.
//! Streams without a connector live here; the embedded MQTT endpoint, HTTP ingest, live tails
//! and rules publish and subscribe on it.
//!
//! Subscribers are *reliable* (a rule: the publisher waits while its channel is full) or *lossy*
//! (a network client or a tail: a message it cannot take now is dropped and counted, so one slow
//! reader never stalls the rules).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use tokio::sync::mpsc;

/// A message on an embedded topic.
#[derive(Debug, Clone)]
pub struct Message {
    pub topic: Arc<str>,
    pub payload: Bytes,
}

struct Sub {
    id: u64,
    filter: String,
    tx: mpsc::Sender<Message>,
    lossy: bool,
}

#[derive(Default)]
pub struct Hub {
    subs: RwLock<Vec<Sub>>,
    next: AtomicU64,
    pub published: AtomicU64,
    pub dropped: AtomicU64,
}

/// A live subscription; dropping it unsubscribes.
pub struct Subscription {
    hub: Arc<Hub>,
    id: u64,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub
            .subs
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|s| s.id != self.id);
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

impl Hub {
    pub fn new() -> Arc<Hub> {
        Arc::new(Hub::default())
    }

    /// Delivers messages whose topic matches `filter` to `tx`.
    pub fn subscribe(
        self: &Arc<Self>,
        filter: &str,
        tx: mpsc::Sender<Message>,
        lossy: bool,
    ) -> Subscription {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.subs
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(Sub {
                id,
                filter: filter.to_owned(),
                tx,
                lossy,
            });
        Subscription {
            hub: self.clone(),
            id,
        }
    }

    /// Counts a message, hands it to the lossy subscribers of its topic and returns it with
    /// the reliable ones, which the caller waits on in its own way.
    fn dispatch(&self, topic: &str, payload: Bytes) -> (Message, Vec<mpsc::Sender<Message>>) {
        let msg = Message {
            topic: Arc::from(topic),
            payload,
        };
        self.published.fetch_add(1, Ordering::Relaxed);
        let subs = self.subs.read().unwrap_or_else(|e| e.into_inner());
        let mut reliable = Vec::new();
        for s in subs.iter().filter(|s| matches(topic, &s.filter)) {
            if !s.lossy {
                reliable.push(s.tx.clone());
            } else if s.tx.try_send(msg.clone()).is_err() {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        (msg, reliable)
    }

    /// Publishes from async code; waits while a reliable subscriber is full.
    pub async fn publish(&self, topic: &str, payload: Bytes) {
        let (msg, reliable) = self.dispatch(topic, payload);
        for tx in reliable {
            let _ = tx.send(msg.clone()).await;
        }
    }

    /// Publishes from a plain thread (never from inside the async runtime).
    pub fn publish_blocking(&self, topic: &str, payload: Bytes) {
        let (msg, reliable) = self.dispatch(topic, payload);
        for tx in reliable {
            let _ = tx.blocking_send(msg.clone());
        }
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

    #[tokio::test]
    async fn lossy_subscribers_drop_and_unsubscribe_on_drop() {
        let hub = Hub::new();
        let (tx, mut rx) = mpsc::channel(1);
        let sub = hub.subscribe("t/#", tx, true);
        hub.publish("t/1", Bytes::from_static(b"1")).await;
        hub.publish("t/2", Bytes::from_static(b"2")).await;
        assert_eq!(rx.recv().await.unwrap().payload, "1");
        assert_eq!(hub.dropped.load(Ordering::Relaxed), 1);
        drop(sub);
        hub.publish("t/3", Bytes::from_static(b"3")).await;
        assert!(rx.recv().await.is_none());
    }
}
