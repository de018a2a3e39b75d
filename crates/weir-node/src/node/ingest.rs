//! HTTP ingest: the events of a request stored on their stream's hub topic in one atomic write,
//! then handed to the rules. A client that got no answer sends the same request again with the
//! same `Idempotency-Key` header; events may also carry their own id (the stream's `event_id`
//! option). A retry, or an event whose id was seen, is recognised for [`DEDUP_WINDOW_MS`] and
//! not stored again, across node restarts too: the keys are written in the same atomic write as
//! the events, so a crash keeps both or neither.

use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, Ordering};

use bytes::Bytes;
use serde_json::Value;
use weir_core::{Clock, SystemClock};

use super::{Node, NodeError};

/// How long a key or an event id is remembered.
pub const DEDUP_WINDOW_MS: i64 = 24 * 3600 * 1000;

/// The longest key or event id taken.
const MAX_KEY: usize = 200;

/// How often remembered keys past the window are dropped.
const SWEEP_EVERY_MS: i64 = 10 * 60 * 1000;

/// Serialises idempotent requests per stream (striped), so that two retries racing each other
/// cannot both be stored.
pub struct Dedup {
    locks: Vec<tokio::sync::Mutex<()>>,
    last_sweep: AtomicI64,
}

impl Default for Dedup {
    fn default() -> Self {
        Dedup {
            locks: (0..64).map(|_| tokio::sync::Mutex::new(())).collect(),
            last_sweep: AtomicI64::new(0),
        }
    }
}

/// What became of a request's events.
#[derive(Debug, serde::Serialize)]
pub struct Ingested {
    /// Events stored (for a recognised retry: those its first sending stored).
    pub accepted: usize,
    /// Events dropped because their id was seen within the window.
    #[serde(skip_serializing_if = "is_zero")]
    pub duplicates: usize,
    /// The request is a retry of one already stored: nothing was stored now.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub replayed: bool,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn key_marker(stream: &str, key: &str) -> String {
    format!("idem/{stream}/key/{key}")
}

fn id_marker(stream: &str, id: &str) -> String {
    format!("idem/{stream}/id/{id}")
}

/// The time a marker was written (its first 8 bytes).
fn written_at(v: &[u8]) -> Option<i64> {
    Some(i64::from_be_bytes(v.get(..8)?.try_into().ok()?))
}

fn check_key(what: &str, key: &str) -> Result<(), NodeError> {
    if key.is_empty() || key.len() > MAX_KEY || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(NodeError::invalid(format!(
            "{what} must be 1 to {MAX_KEY} printable ASCII characters without spaces"
        )));
    }
    Ok(())
}

impl Node {
    /// Stores `events` (JSON objects) on stream `stream`. `key` is the request's
    /// `Idempotency-Key`, `body` what the request carried (a retry must carry the same).
    pub async fn ingest(
        &self,
        stream: &str,
        events: Vec<Value>,
        key: Option<&str>,
        body: &[u8],
    ) -> Result<Ingested, NodeError> {
        let (topic, id_field) = self.ingest_target(stream).await?;
        if let Some(k) = key {
            check_key("the Idempotency-Key", k)?;
        }
        let payloads = |evs: &[Value]| -> Vec<Bytes> {
            evs.iter().map(|e| Bytes::from(e.to_string())).collect()
        };
        if key.is_none() && id_field.is_none() {
            self.hub
                .publish_all(&topic, &payloads(&events))
                .await
                .map_err(NodeError::Store)?;
            return Ok(Ingested {
                accepted: events.len(),
                duplicates: 0,
                replayed: false,
            });
        }
        let stripe = weir_core::hash::key_hash(&[weir_core::Value::str(stream)]) as usize
            % self.dedup.locks.len();
        let _serialised = self.dedup.locks[stripe].lock().await;
        let now = SystemClock.now_ms();
        self.sweep(now);
        let store = self.hub.store();
        let fresh = |marker: &str| -> Result<Option<Vec<u8>>, NodeError> {
            Ok(store
                .meta(marker)?
                .filter(|v| written_at(v).is_some_and(|t| now - t < DEDUP_WINDOW_MS)))
        };
        let body_hash = {
            let mut h = weir_core::hash::KeyHasher::default();
            h.write(body);
            h.finish()
        };
        let mut markers: Vec<(String, Vec<u8>)> = Vec::new();
        if let Some(k) = key {
            let marker = key_marker(stream, k);
            if let Some(v) = fresh(&marker)? {
                let stored = |i: usize| v.get(i..i + 8).and_then(|b| b.try_into().ok());
                if stored(16).map(u64::from_be_bytes) != Some(body_hash) {
                    return Err(NodeError::Conflict(format!(
                        "Idempotency-Key '{k}' was used within the last 24 h for a different request; use a new key for new events"
                    )));
                }
                return Ok(Ingested {
                    accepted: stored(8).map_or(0, u64::from_be_bytes) as usize,
                    duplicates: 0,
                    replayed: true,
                });
            }
        }
        let mut kept = Vec::with_capacity(events.len());
        let mut seen = HashSet::new();
        let mut duplicates = 0;
        for e in events {
            let id = match id_field.as_deref().map(|f| &e[f]) {
                None => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Number(n)) => Some(n.to_string()),
                Some(_) => {
                    return Err(NodeError::invalid(format!(
                        "every event of stream {stream} carries its id in field '{}' (a string or a number)",
                        id_field.as_deref().unwrap_or_default()
                    )))
                }
            };
            if let Some(id) = id {
                check_key(&format!("event id '{id}'"), &id)?;
                let marker = id_marker(stream, &id);
                if !seen.insert(id) || fresh(&marker)?.is_some() {
                    duplicates += 1;
                    continue;
                }
                markers.push((marker, now.to_be_bytes().to_vec()));
            }
            kept.push(e);
        }
        if let Some(k) = key {
            let mut v = now.to_be_bytes().to_vec();
            v.extend_from_slice(&(kept.len() as u64).to_be_bytes());
            v.extend_from_slice(&body_hash.to_be_bytes());
            markers.push((key_marker(stream, k), v));
        }
        let refs: Vec<(&str, &[u8])> = markers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect();
        self.hub
            .publish_marked(&topic, &payloads(&kept), &refs)
            .await
            .map_err(NodeError::Store)?;
        Ok(Ingested {
            accepted: kept.len(),
            duplicates,
            replayed: false,
        })
    }

    /// Drops remembered keys and ids past the window, at most every ten minutes, off the
    /// request's path.
    fn sweep(&self, now: i64) {
        let last = self.dedup.last_sweep.load(Ordering::Relaxed);
        if now - last < SWEEP_EVERY_MS
            || self
                .dedup
                .last_sweep
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let store = self.hub.store().clone();
        tokio::task::spawn_blocking(move || {
            let Ok(all) = store.metas("idem/") else {
                return;
            };
            let old: Vec<&str> = all
                .iter()
                .filter(|(_, v)| written_at(v).is_none_or(|t| now - t >= DEDUP_WINDOW_MS))
                .map(|(k, _)| k.as_str())
                .collect();
            for chunk in old.chunks(1000) {
                if let Err(e) = store.remove_metas(chunk) {
                    tracing::warn!(error = %e, "old idempotency keys not removed");
                    return;
                }
            }
        });
    }
}
