//! Prometheus text for `/metrics`, read at scrape time from the same counters rule status shows,
//! so the two never disagree.

use std::sync::atomic::Ordering;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::node::Node;
use crate::rule::RuleMetrics;

type Labels = Vec<(&'static str, String)>;

/// Encodes one metric family: a descriptor, then one sample per label set.
fn family<M: EncodeMetric>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: Vec<(Labels, M)>,
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in samples {
        value.encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

#[derive(Debug)]
struct Rules(Vec<(String, std::sync::Arc<RuleMetrics>)>, u64, u64);

impl Collector for Rules {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut ins = Vec::new();
        let mut outs = Vec::new();
        let mut errors = Vec::new();
        let mut up = Vec::new();
        let mut dead = Vec::new();
        let mut late = Vec::new();
        let (mut state, mut checkpoints, mut failures, mut took) = (vec![], vec![], vec![], vec![]);
        let (mut depth, mut dropped, mut backlog) = (Vec::new(), Vec::new(), Vec::new());
        for (id, m) in &self.0 {
            let rule: Labels = vec![("rule", id.clone())];
            let c = m
                .checkpoint
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            state.push((rule.clone(), ConstGauge::new(c.state_bytes as i64)));
            checkpoints.push((rule.clone(), ConstCounter::new(c.completed)));
            failures.push((rule.clone(), ConstCounter::new(c.failed)));
            let secs = c.last_duration_ms.unwrap_or(0) as f64 / 1000.0;
            took.push((rule, ConstGauge::new(secs)));
            for op in m.operators() {
                let l: Labels = vec![("rule", id.clone()), ("operator", op.name.clone())];
                ins.push((l.clone(), ConstCounter::new(op.events_in)));
                outs.push((l.clone(), ConstCounter::new(op.events_out)));
                errors.push((l.clone(), ConstCounter::new(op.errors)));
                if let Some(b) = op.backlog {
                    backlog.push((l.clone(), ConstGauge::new(b as i64)));
                }
                if let Some(o) = &op.outbox {
                    depth.push((l.clone(), ConstGauge::new(o.depth as i64)));
                    dropped.push((l.clone(), ConstCounter::new(o.dropped)));
                }
                if let (Some(c), Some(h)) = (op.connector, &op.health) {
                    let mut l = l;
                    l.push(("connector", c.to_owned()));
                    up.push((l, ConstGauge::new(i64::from(h.state == "up"))));
                }
            }
            dead.push((
                vec![("rule", id.clone())],
                ConstCounter::new(m.dead_letters.load(Ordering::Relaxed)),
            ));
            late.push((
                vec![("rule", id.clone())],
                ConstCounter::new(m.late.load(Ordering::Relaxed)),
            ));
        }
        family(
            &mut enc,
            "weir_operator_events_in",
            "Events an operator took in",
            MetricType::Counter,
            ins,
        )?;
        family(
            &mut enc,
            "weir_operator_events_out",
            "Events an operator passed on",
            MetricType::Counter,
            outs,
        )?;
        family(
            &mut enc,
            "weir_operator_errors",
            "Errors of an operator (bad records, late events, failed sends)",
            MetricType::Counter,
            errors,
        )?;
        family(
            &mut enc,
            "weir_source_backlog",
            "Input waiting for a rule's source: durable log entries beyond its position, or queued payloads",
            MetricType::Gauge,
            backlog,
        )?;
        family(
            &mut enc,
            "weir_connector_up",
            "1 while a connector is connected",
            MetricType::Gauge,
            up,
        )?;
        family(
            &mut enc,
            "weir_rule_dead_letters",
            "Records that could not become events",
            MetricType::Counter,
            dead,
        )?;
        family(
            &mut enc,
            "weir_rule_late_events",
            "Events that arrived after their window closed",
            MetricType::Counter,
            late,
        )?;
        family(
            &mut enc,
            "weir_rule_state_bytes",
            "Size of the rule's newest checkpoint: its whole state",
            MetricType::Gauge,
            state,
        )?;
        family(
            &mut enc,
            "weir_rule_checkpoints",
            "Checkpoints completed",
            MetricType::Counter,
            checkpoints,
        )?;
        family(
            &mut enc,
            "weir_rule_checkpoint_failures",
            "Checkpoints that did not complete (the previous one stays)",
            MetricType::Counter,
            failures,
        )?;
        family(
            &mut enc,
            "weir_rule_checkpoint_duration_seconds",
            "Time from the newest checkpoint's barriers to its file being safe",
            MetricType::Gauge,
            took,
        )?;
        family(
            &mut enc,
            "weir_sink_outbox_depth",
            "Results stored for a sink and not yet confirmed by its broker",
            MetricType::Gauge,
            depth,
        )?;
        family(
            &mut enc,
            "weir_sink_outbox_dropped",
            "Results dropped from a full outbox (drop_oldest)",
            MetricType::Counter,
            dropped,
        )?;
        let mut m = enc.encode_descriptor(
            "weir_rule_output_lag_seconds",
            "Time from an event's time to its result leaving weir (processing latency for processing-time streams)",
            None,
            MetricType::Histogram,
        )?;
        for (id, r) in &self.0 {
            r.lag
                .encode(m.encode_family(&vec![("rule", id.clone())])?)?;
        }
        family(
            &mut enc,
            "weir_hub_published",
            "Messages published on embedded topics",
            MetricType::Counter,
            vec![(Vec::new(), ConstCounter::new(self.1))],
        )?;
        family(
            &mut enc,
            "weir_hub_dropped",
            "Messages dropped for lossy subscribers that fell behind",
            MetricType::Counter,
            vec![(Vec::new(), ConstCounter::new(self.2))],
        )?;
        Ok(())
    }
}

/// The node's figures in Prometheus' text format.
pub fn render(node: &Node) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Rules(
        node.rule_metrics(),
        node.hub.published.load(Ordering::Relaxed),
        node.hub.dropped.load(Ordering::Relaxed),
    )));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}
