//! A rule's input: payloads from a connector, the node's topics or a durable log are decoded
//! into events and stamped into the dataflow; bad records become dead letters, and checkpoint
//! barriers go in when the coordinator asks.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use weir_connectors::codec::MessageDecoder;
use weir_core::Row;
use weir_engine::Ingest;
use weir_lang::plan::TimeMode;
use weir_state::StreamLog;

use super::metrics::{RuleMetrics, Stage};
use crate::checkpoint::{FeedCtl, Report};
use crate::hub::{Hub, Published};

/// Where a feed reads.
pub(super) enum FeedSource {
    /// At-most-once: payloads handed over directly (an empty one is a tick), and batches
    /// published on the node's topic of the stream (until the rule stops taking input).
    Channel {
        rx: mpsc::Receiver<Bytes>,
        hub: Option<mpsc::Receiver<Arc<Published>>>,
    },
    /// At-least-once and exactly-once: a durable log, from `pos` on.
    Log { log: StreamLog, pos: u64 },
    /// Fed by the node with broker offsets; `next` is the offset after the last one taken.
    Numbered {
        rx: mpsc::Receiver<(Bytes, Option<u64>)>,
        position: String,
        next: Option<u64>,
    },
}

/// One input of a rule: decodes payloads into events (bad records become dead letters and the
/// rule goes on) and puts checkpoint barriers into the stream when asked.
pub(super) struct Feed {
    pub(super) ingest: Ingest,
    pub(super) source: FeedSource,
    pub(super) decoder: MessageDecoder,
    /// Names how `decoder` reads payloads when it can share what it decoded with other rules
    /// (see [`Published::shared`]); `None` for a decoder that learns from what it reads.
    pub(super) shared_decoding: Option<String>,
    /// Names how this feed decodes and stamps payloads, when it can share the events it stamps
    /// with other rules (see [`weir_engine::Ingest::send_stamped`]).
    pub(super) shared_stamping: Option<String>,
    pub(super) max_payload: usize,
    pub(super) stage: Arc<Stage>,
    pub(super) metrics: Arc<RuleMetrics>,
    pub(super) hub: Arc<Hub>,
    pub(super) dead_topic: String,
    pub(super) ctl: Arc<FeedCtl>,
    pub(super) reports: mpsc::UnboundedSender<Report>,
    /// The newest epoch whose barrier this feed has sent.
    pub(super) injected: u64,
    pub(super) rows: Vec<Result<Row, String>>,
}

/// Waits for one item, then takes whatever else is waiting (up to 1024), so the feed flushes
/// once per batch: batches under load, one event when idle. `None` once the channel closed.
async fn take_batch<T>(rx: &mut mpsc::Receiver<T>) -> Option<Vec<T>> {
    let mut batch = vec![rx.recv().await?];
    while let Ok(p) = rx.try_recv() {
        batch.push(p);
        if batch.len() >= 1024 {
            break;
        }
    }
    Some(batch)
}

impl Feed {
    pub(super) async fn run(mut self) {
        loop {
            match &mut self.source {
                FeedSource::Channel { rx, hub } => {
                    let published = async {
                        match hub {
                            Some(h) => h.recv().await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        batch = take_batch(rx) => {
                            let Some(batch) = batch else {
                                break;
                            };
                            self.stage.backlog.store(rx.len() as u64, Ordering::Relaxed);
                            for p in batch {
                                self.accept(&p).await;
                            }
                        }
                        p = published => match p {
                            Some(p) => self.accept_published(&p).await,
                            None => *hub = None,
                        },
                    }
                }
                FeedSource::Numbered { rx, next, .. } => {
                    let Some(batch) = take_batch(rx).await else {
                        break;
                    };
                    self.stage.backlog.store(rx.len() as u64, Ordering::Relaxed);
                    if let Some(o) = batch.iter().filter_map(|b| b.1).next_back() {
                        *next = Some(o + 1);
                    }
                    for (p, _) in batch {
                        self.accept(&p).await;
                    }
                }
                FeedSource::Log { log, pos } => {
                    if *pos < log.first() {
                        tracing::warn!(
                            log = log.name(),
                            lost = log.first() - *pos,
                            "entries were dropped by retention before this rule read them"
                        );
                        *pos = log.first();
                    }
                    if *pos > log.end() {
                        // The checkpoint is newer than the log (the log was removed, or the
                        // checkpoint came from another node): read what arrives from now on.
                        tracing::warn!(
                            log = log.name(),
                            position = *pos,
                            end = log.end(),
                            "checkpoint position is past the end of its log"
                        );
                        *pos = log.end();
                    }
                    match log.read(*pos, 1024) {
                        Ok(entries) if entries.is_empty() => {
                            log.grown_beyond(*pos, Duration::from_millis(100)).await;
                        }
                        Ok(entries) => {
                            let next = entries.last().map_or(*pos, |(o, _)| o + 1);
                            *pos = next;
                            let behind = log.end().saturating_sub(next);
                            self.stage.backlog.store(behind, Ordering::Relaxed);
                            for (_, p) in entries {
                                self.accept(&p).await;
                            }
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "input log not readable");
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                    }
                }
            }
            self.ingest.flush_async().await;
            if self.ctl.abandon.load(Ordering::Relaxed) {
                return;
            }
            let wanted = self.ctl.requested.load(Ordering::Relaxed);
            if wanted > self.injected {
                // The last checkpoint: everything the sources took goes in before its barrier,
                // nothing after it.
                let last = self.ctl.last.load(Ordering::Relaxed) == wanted;
                if last {
                    self.take_in_what_is_left().await;
                }
                self.injected = wanted;
                self.ingest.barrier_async(wanted).await;
                let (log, offset) = match &self.source {
                    FeedSource::Log { log, pos } => (Some(log.name().to_owned()), *pos),
                    FeedSource::Numbered {
                        position,
                        next: Some(n),
                        ..
                    } => (Some(position.clone()), *n),
                    FeedSource::Channel { .. } | FeedSource::Numbered { .. } => (None, 0),
                };
                let _ = self.reports.send(Report::Position {
                    epoch: wanted,
                    log,
                    offset,
                    stream: self.ingest.stream().name.clone(),
                    watermark: (self.ingest.stream().time == TimeMode::Event)
                        .then(|| self.ingest.watermark()),
                });
                if last {
                    return;
                }
            }
        }
        if !self.ctl.abandon.load(Ordering::Relaxed) {
            self.ingest.end().await;
        }
    }

    /// Before the last barrier: the payloads the (stopped) sources handed over and the feed has
    /// not taken yet. A durable log is not read further: what is beyond the position stays in
    /// the log (or travels with a moved rule).
    async fn take_in_what_is_left(&mut self) {
        let mut left = Vec::new();
        match &mut self.source {
            FeedSource::Channel { rx, hub } => {
                while let Ok(p) = rx.try_recv() {
                    left.push(p);
                }
                while let Some(Ok(p)) = hub.as_mut().map(|h| h.try_recv()) {
                    left.extend(p.payloads.iter().cloned());
                }
            }
            FeedSource::Numbered { rx, next, .. } => {
                while let Ok((p, offset)) = rx.try_recv() {
                    if let Some(o) = offset {
                        *next = Some(o + 1);
                    }
                    left.push(p);
                }
            }
            FeedSource::Log { .. } => {}
        }
        for p in left {
            self.accept(&p).await;
        }
    }

    /// Decodes one payload into the stream; full batches go on at once, so a feed holds at
    /// most one batch beyond what its payload decoded to.
    async fn accept(&mut self, payload: &Bytes) {
        if !self.admit(payload).await {
            return;
        }
        let mut rows = std::mem::take(&mut self.rows);
        self.decoder.decode(payload, &mut rows);
        self.stage_rows(rows.drain(..), payload).await;
        self.rows = rows;
    }

    /// Takes a batch published on the node's topic, decoded once for every rule that decodes it
    /// the same way and stamped once for every rule that also reads the stream the same way (a
    /// decoder that learns from what it reads decodes for this rule alone).
    async fn accept_published(&mut self, published: &Published) {
        let (Some(decoding), Some(stamping)) = (&self.shared_decoding, &self.shared_stamping)
        else {
            for p in &published.payloads {
                self.accept(p).await;
            }
            return;
        };
        let max = self.max_payload;
        let decoder = &mut self.decoder;
        let rows = published.shared(decoding, || {
            let mut out = Vec::new();
            let mut rows = Vec::new();
            for (i, p) in published.payloads.iter().enumerate() {
                if p.len() <= max {
                    decoder.decode(p, &mut rows);
                    out.extend(rows.drain(..).map(|r| (i, r)));
                }
            }
            out
        });
        let ingest = &self.ingest;
        let stamped = published.shared(stamping, || {
            ingest.stamp_all(rows.iter().map(|(i, r)| (*i, r)))
        });
        let mut admitted = Vec::with_capacity(published.payloads.len());
        for payload in &published.payloads {
            admitted.push(self.admit(payload).await);
        }
        if self.ingest.send_stamped(&stamped).await {
            self.stage
                .events
                .fetch_add(stamped.events as u64, Ordering::Relaxed);
            for (i, reason) in &stamped.rejected {
                self.dead(reason.clone(), &published.payloads[*i]).await;
            }
            return;
        }
        let mut rows = rows.iter().peekable();
        for (i, payload) in published.payloads.iter().enumerate() {
            let of_payload =
                std::iter::from_fn(|| rows.next_if(|(at, _)| *at == i).map(|(_, r)| r.clone()));
            if admitted[i] {
                self.stage_rows(of_payload, payload).await;
            } else {
                of_payload.for_each(drop);
            }
        }
    }

    /// Counts a payload in and says whether to decode it: not a tick (empty), and not over the
    /// size limit (a dead letter).
    async fn admit(&mut self, payload: &Bytes) -> bool {
        if payload.is_empty() {
            return false;
        }
        self.ctl.taken.fetch_add(1, Ordering::Relaxed);
        if payload.len() > self.max_payload {
            let why = format!(
                "payload of {} bytes is over the limit of {}",
                payload.len(),
                self.max_payload
            );
            self.dead(why, payload).await;
            return false;
        }
        self.stage.received.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Stages the rows of one payload (what is not a row is a dead letter with the reason),
    /// then sends the batches they filled.
    async fn stage_rows(
        &mut self,
        rows: impl Iterator<Item = Result<Row, String>>,
        payload: &[u8],
    ) {
        for r in rows {
            match r.and_then(|row| self.ingest.stage(row)) {
                Ok(()) => {
                    self.stage.events.fetch_add(1, Ordering::Relaxed);
                }
                Err(reason) => self.dead(reason, payload).await,
            }
        }
        self.ingest.send_full().await;
    }

    async fn dead(&self, reason: String, raw: &[u8]) {
        self.metrics.dead_letters.fetch_add(1, Ordering::Relaxed);
        self.stage.errors.fetch_add(1, Ordering::Relaxed);
        let shown = String::from_utf8_lossy(&raw[..raw.len().min(4096)]).into_owned();
        let doc = serde_json::json!({"stream": self.ingest.stream().name, "reason": reason, "raw": shown});
        *self
            .metrics
            .last_dead_letter
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(reason);
        let _ = self
            .hub
            .publish(&self.dead_topic, Bytes::from(doc.to_string()))
            .await;
    }
}
