//! What a running rule counts: per source and sink, per operator, dead letters, late events
//! and the lag of its results. Status documents and /metrics read these without any lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::metrics::histogram::Histogram;
use serde::Serialize;
use weir_connectors::live::{Health, HealthReport};
use weir_connectors::Endpoint;
use weir_engine::RuleStats;

use crate::checkpoint::CheckpointStatus;
use crate::outbox::{Outbox, OutboxStatus};

/// Counters of one stage (a source or a sink) of a rule.
#[derive(Debug)]
pub struct Stage {
    /// `source:<stream>` or `sink:<stream>`.
    pub name: String,
    /// Its connector.
    pub connector: &'static str,
    /// Its connection state.
    pub health: Arc<Health>,
    /// Payloads taken (sources) or events handed to the connector (sinks).
    pub received: AtomicU64,
    /// Events produced (sources) or published on an embedded topic (sinks).
    pub events: AtomicU64,
    /// Failures.
    pub errors: AtomicU64,
    /// Input waiting to be read (sources): entries of its durable log beyond the rule's
    /// position, or payloads queued for it. The node's load sums it as input lag.
    pub backlog: AtomicU64,
    /// The store-and-forward outbox of an external sink of a durable rule.
    pub outbox: Option<Arc<Outbox>>,
}

impl Stage {
    pub(crate) fn new(kind: &str, stream: &str, endpoint: &Endpoint) -> Arc<Stage> {
        Arc::new(Stage {
            name: format!("{kind}:{stream}"),
            connector: endpoint.kind(),
            health: Arc::default(),
            received: AtomicU64::new(0),
            events: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            backlog: AtomicU64::new(0),
            outbox: None,
        })
    }
}

/// Live figures of a running rule, read by status and /metrics.
#[derive(Debug)]
pub struct RuleMetrics {
    /// The rule's sources.
    pub sources: Vec<Arc<Stage>>,
    /// Its operator chains' counters.
    pub engine: Vec<Arc<RuleStats>>,
    /// Its sinks.
    pub sinks: Vec<Arc<Stage>>,
    /// Records that could not be events.
    pub dead_letters: AtomicU64,
    /// Events refused as late.
    pub late: AtomicU64,
    /// The reason of the newest dead letter.
    pub last_dead_letter: Mutex<Option<String>>,
    /// Seconds from an event's time to its result leaving weir (for processing-time streams,
    /// the processing latency).
    pub lag: Histogram,
    /// What status shows of the checkpoints.
    pub checkpoint: Arc<Mutex<CheckpointStatus>>,
    /// Why the rule stopped by itself (its state outgrew its limit).
    pub failure: Arc<Mutex<Option<String>>>,
}

/// One operator's figures in a status document.
#[derive(Debug, Serialize)]
pub struct OperatorStatus {
    /// `source:<stream>`, a chain's name, or `sink:<stream>`.
    pub name: String,
    /// Events in.
    pub events_in: u64,
    /// Events out.
    pub events_out: u64,
    /// Failures.
    pub errors: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// Its connector (sources and sinks).
    pub connector: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// Its connection state (sources and sinks).
    pub health: Option<HealthReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// Its outbox, if it has one.
    pub outbox: Option<OutboxStatus>,
    /// Input waiting to be read (sources).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backlog: Option<u64>,
}

impl RuleMetrics {
    /// Figures of a rule with these sources, before any event.
    pub fn new(
        sources: Vec<Arc<Stage>>,
        checkpoint: Arc<Mutex<CheckpointStatus>>,
        failure: Arc<Mutex<Option<String>>>,
    ) -> RuleMetrics {
        RuleMetrics {
            sources,
            engine: Vec::new(),
            sinks: Vec::new(),
            dead_letters: AtomicU64::new(0),
            late: AtomicU64::new(0),
            last_dead_letter: Mutex::new(None),
            lag: Histogram::new([
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
            checkpoint,
            failure,
        }
    }

    /// Each source, chain and sink with its figures.
    pub fn operators(&self) -> Vec<OperatorStatus> {
        // An external sink's output is what its connector has sent.
        let stage = |s: &Arc<Stage>| OperatorStatus {
            name: s.name.clone(),
            events_in: s.received.load(Ordering::Relaxed),
            events_out: match s.name.starts_with("sink:") && s.connector != "embedded" {
                true => s.health.messages.load(Ordering::Relaxed),
                false => s.events.load(Ordering::Relaxed),
            },
            errors: s.errors.load(Ordering::Relaxed),
            connector: Some(s.connector),
            health: (s.connector != "embedded").then(|| s.health.report()),
            outbox: s.outbox.as_ref().map(|o| o.status()),
            backlog: s
                .name
                .starts_with("source:")
                .then(|| s.backlog.load(Ordering::Relaxed)),
        };
        let mut out: Vec<OperatorStatus> = self.sources.iter().map(stage).collect();
        out.extend(self.engine.iter().map(|r| OperatorStatus {
            name: format!("rule:{}", r.name),
            events_in: r.events_in.load(Ordering::Relaxed),
            events_out: r.events_out.load(Ordering::Relaxed),
            errors: r.late.load(Ordering::Relaxed),
            connector: None,
            health: None,
            outbox: None,
            backlog: None,
        }));
        out.extend(self.sinks.iter().map(stage));
        out
    }

    /// The first connector problem, for a rule's status.
    pub fn connector_error(&self) -> Option<String> {
        self.sources
            .iter()
            .chain(&self.sinks)
            .filter(|s| !s.health.is_up() && s.connector != "embedded")
            .find_map(|s| {
                s.health
                    .report()
                    .last_error
                    .map(|e| format!("{}: {e}", s.name))
            })
    }
}
