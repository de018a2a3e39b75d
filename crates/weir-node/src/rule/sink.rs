//! A rule's output: results are encoded and handed to the sink connector (directly, or through
//! the outbox of a durable rule) and shown on the node's topic of the stream.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;
use weir_connectors::live::Outgoing;
use weir_core::{Clock, Value};
use weir_engine::{Delivered, OutputStream};

use super::metrics::{RuleMetrics, Stage};
use crate::checkpoint::Report;
use crate::hub::Hub;
use crate::outbox::Outbox;

/// Where an external sink's results go.
pub(super) enum SinkTarget {
    /// Straight to the connector (at-most-once).
    Direct(mpsc::Sender<Outgoing>),
    /// Into the store-and-forward outbox; the flag is set when the rule stops.
    Outbox(Arc<Outbox>, Arc<AtomicBool>),
}

/// Encodes results and sends them to the sink connector (if any) and the hub.
pub(super) struct Sink {
    pub(super) sender: Option<SinkTarget>,
    pub(super) hub: Arc<Hub>,
    pub(super) topic: String,
    pub(super) stage: Arc<Stage>,
    pub(super) metrics: Arc<RuleMetrics>,
    pub(super) clock: Arc<dyn Clock>,
    /// The stream's `sent_at` field, stamped with the time each result is encoded.
    pub(super) sent_at: Option<Arc<str>>,
}

impl Sink {
    /// With `staging` (exactly-once), results are held per epoch and handed to the coordinator
    /// at each barrier instead of being published.
    pub(super) async fn run(
        self,
        mut out: OutputStream,
        staging: Option<(String, mpsc::UnboundedSender<Report>)>,
    ) {
        let mut held = Vec::new();
        while let Some(delivered) = out.recv().await {
            let batch = match delivered {
                Delivered::Events(batch) => batch,
                Delivered::Barrier(epoch) => {
                    if let Some((stream, reports)) = &staging {
                        let _ = reports.send(Report::Staged {
                            epoch,
                            stream: stream.clone(),
                            payloads: std::mem::take(&mut held),
                        });
                    }
                    continue;
                }
            };
            let now = self.clock.now_ms();
            if self.sender.is_none() && staging.is_none() && !self.hub.has_subscribers(&self.topic)
            {
                // Results of an embedded stream that nothing reads yet: counted, not encoded.
                for ev in &batch {
                    self.metrics
                        .lag
                        .observe((now - ev.ts).max(0) as f64 / 1000.0);
                }
                let n = batch.len() as u64;
                self.stage.received.fetch_add(n, Ordering::Relaxed);
                self.stage.events.fetch_add(n, Ordering::Relaxed);
                continue;
            }
            let mut shown = Vec::with_capacity(batch.len());
            for mut ev in batch {
                if let Some(field) = &self.sent_at {
                    ev.row.set_shared(field, Value::Int(self.clock.now_ns()));
                }
                let payload = match serde_json::to_vec(&ev.row) {
                    Ok(p) => Bytes::from(p),
                    Err(e) => {
                        self.stage.errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(error = %e, "result not encoded");
                        continue;
                    }
                };
                self.metrics
                    .lag
                    .observe((now - ev.ts).max(0) as f64 / 1000.0);
                self.stage.received.fetch_add(1, Ordering::Relaxed);
                if staging.is_some() {
                    self.stage.events.fetch_add(1, Ordering::Relaxed);
                    held.push(payload);
                    continue;
                }
                let handed = match &self.sender {
                    Some(SinkTarget::Direct(tx)) => tx
                        .send(Outgoing {
                            payload: payload.clone(),
                            id: None,
                        })
                        .await
                        .map_err(|_| "the sink has stopped".to_owned()),
                    Some(SinkTarget::Outbox(outbox, closed)) => outbox
                        .put(payload.clone(), closed)
                        .await
                        .map_err(|e| e.to_string()),
                    None => {
                        self.stage.events.fetch_add(1, Ordering::Relaxed);
                        Ok(())
                    }
                };
                if let Err(e) = handed {
                    self.stage.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(error = %e, "result not handed to its sink");
                }
                shown.push(payload);
            }
            // One publish per batch: the hub looks its subscribers up once.
            if shown.is_empty() {
                continue;
            }
            if let Err(e) = self.hub.publish_all(&self.topic, &shown).await {
                self.stage
                    .errors
                    .fetch_add(shown.len() as u64, Ordering::Relaxed);
                tracing::error!(error = %e, "results not stored");
            }
        }
    }
}
