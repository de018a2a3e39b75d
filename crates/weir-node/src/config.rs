//! Node settings: defaults, then a TOML file, then flags and environment (the binary merges
//! those), validated before anything listens.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// Everything a node needs to start. Every field has a default, so an empty file is a valid
/// configuration: the embedded default (REST on 127.0.0.1:7070, MQTT on 127.0.0.1:1884).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Address of the REST API, HTTP ingest and /metrics.
    pub listen: SocketAddr,
    /// Address of the embedded MQTT endpoint; `None` turns it off.
    pub mqtt_listen: Option<SocketAddr>,
    /// Where the registry and materialised job configurations are kept.
    pub data_dir: PathBuf,
    /// Partitions per keyed rule (operator chains splitting its keys, on the shared pool).
    pub workers: usize,
    /// Largest accepted event payload, in bytes.
    pub max_payload: usize,
    /// Most rules this node holds.
    pub max_rules: usize,
    /// The runtime this node is, in seed paper 001's terms.
    pub runtime: String,
    /// Entries kept in each embedded topic's durable log.
    pub log_retention: u64,
    /// Results a durable rule's sink holds on disk while its broker is unreachable.
    pub outbox_capacity: u64,
    /// Bytes the durable store leaves free on its disk: writes (logs, checkpoints) that would
    /// go below are refused with a "disk is full" error instead of filling the disk.
    pub min_free_bytes: u64,
    /// fdatasync every durable write (survives power loss, not only a crashed process).
    pub sync_writes: bool,
    /// This node's name among the nodes of its control plane [default: the role and the port].
    pub name: Option<String>,
    /// The control plane to report to, `http://host:port`; none: this node is its own.
    pub join: Option<String>,
    /// The address other nodes reach this one at [default: http:// and `listen`].
    pub advertise: Option<String>,
    /// How often the node reports itself to its control plane, in milliseconds.
    pub heartbeat_ms: u64,
    /// After how long without a report the control plane marks a node lost, in milliseconds.
    pub lost_after_ms: u64,
    /// Adaptive placement, on the control plane: an edge node whose load stays over this for
    /// three heartbeats hands its busiest rule with `"adaptive": true` to the least loaded
    /// core node [default: off].
    pub offload_above: Option<f64>,
    /// The rule goes back to its edge node once that node's load, with the rule's own
    /// events/s when the load is events/s, stays under this for three heartbeats [default:
    /// half of offload_above].
    pub return_below: Option<f64>,
    /// What load means for placement: cpu_percent (of one core) or events_per_s.
    pub load_metric: String,
    /// Bearer tokens and their roles, one `TOKEN ROLE [NAME]` per line (see [`crate::auth`]);
    /// read again when it changes.
    pub auth_token_file: Option<PathBuf>,
    /// Topic rules of the embedded MQTT endpoint per token name (see [`crate::mqtt_acl`]).
    pub mqtt_acl_file: Option<PathBuf>,
    /// The secret every node of the cluster holds in a file of its own: nodes take requests
    /// only from nodes that send it.
    pub cluster_secret_file: Option<PathBuf>,
    /// Serve addresses beyond loopback without tokens (a network you trust otherwise).
    pub insecure: bool,
    /// PEM certificate chain for TLS on the REST API and the MQTT endpoint (with the key).
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of the certificate.
    pub tls_key_file: Option<PathBuf>,
    /// PEM certificates this node trusts when it calls the other nodes of its cluster over
    /// https (their CA, or their own self-signed certificates).
    pub tls_ca_file: Option<PathBuf>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            mqtt_listen: Some(SocketAddr::from(([127, 0, 0, 1], 1884))),
            data_dir: PathBuf::from("weir-data"),
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            max_payload: 1 << 20,
            max_rules: 1000,
            runtime: "edge".to_owned(),
            log_retention: 1_000_000,
            outbox_capacity: 1_000_000,
            min_free_bytes: 64 << 20,
            sync_writes: false,
            name: None,
            join: None,
            advertise: None,
            heartbeat_ms: 1000,
            lost_after_ms: 5000,
            offload_above: None,
            return_below: None,
            load_metric: "cpu_percent".to_owned(),
            auth_token_file: None,
            mqtt_acl_file: None,
            cluster_secret_file: None,
            insecure: false,
            tls_cert_file: None,
            tls_key_file: None,
            tls_ca_file: None,
        }
    }
}

impl NodeConfig {
    /// Reads a TOML file; unknown keys are errors.
    pub fn from_toml(text: &str) -> Result<NodeConfig, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Every problem at once.
    pub fn validate(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        if self.workers == 0 || self.workers > 256 {
            problems.push(format!("workers must be 1..=256, not {}", self.workers));
        }
        if self.max_payload < 1024 || self.max_payload > 64 << 20 {
            problems.push(format!(
                "max_payload must be 1 KiB..=64 MiB, not {}",
                self.max_payload
            ));
        }
        if self.max_rules == 0 {
            problems.push("max_rules must be at least 1".to_owned());
        }
        if self.mqtt_listen == Some(self.listen) && self.listen.port() != 0 {
            problems.push("listen and mqtt_listen must differ".to_owned());
        }
        if !["edge", "core"].contains(&self.runtime.as_str()) {
            problems.push(format!(
                "runtime must be edge or core, not {}",
                self.runtime
            ));
        }
        let exposed: Vec<String> = std::iter::once(("listen", Some(self.listen)))
            .chain(std::iter::once(("mqtt_listen", self.mqtt_listen)))
            .filter_map(|(k, a)| {
                a.filter(|a| !a.ip().is_loopback())
                    .map(|a| format!("{k} {a}"))
            })
            .collect();
        if !exposed.is_empty() && self.auth_token_file.is_none() && !self.insecure {
            problems.push(format!(
                "{} reaches beyond this machine, and no auth_token_file says who may ask what: give one (--auth-token-file FILE, one TOKEN ROLE per line, roles viewer, operator, admin), or pass --insecure on a network you trust",
                exposed.join(" and ")
            ));
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            problems.push("tls_cert_file and tls_key_file go together".to_owned());
        }
        if self.outbox_capacity == 0 {
            problems.push("outbox_capacity must be at least 1".to_owned());
        }
        if self.log_retention == 0 {
            problems.push("log_retention must be at least 1".to_owned());
        }
        if !(100..=60_000).contains(&self.heartbeat_ms) {
            problems.push(format!(
                "heartbeat_ms must be 100..=60000, not {}",
                self.heartbeat_ms
            ));
        }
        if self.lost_after_ms <= self.heartbeat_ms {
            problems.push(format!(
                "lost_after_ms ({}) must be longer than heartbeat_ms ({})",
                self.lost_after_ms, self.heartbeat_ms
            ));
        }
        if !["cpu_percent", "events_per_s"].contains(&self.load_metric.as_str()) {
            problems.push(format!(
                "load_metric must be cpu_percent or events_per_s, not {}",
                self.load_metric
            ));
        }
        if let (Some(up), Some(down)) = (self.offload_above, self.return_below) {
            if down >= up {
                problems.push(format!(
                    "return_below ({down}) must be under offload_above ({up}), or rules would move back and forth"
                ));
            }
        }
        for (key, url) in [("join", &self.join), ("advertise", &self.advertise)] {
            if url
                .as_ref()
                .is_some_and(|u| !u.starts_with("http://") && !u.starts_with("https://"))
            {
                problems.push(format!(
                    "{key} must be an http://host:port or https://host:port address"
                ));
            }
        }
        if let Some(n) = &self.name {
            let ok = !n.is_empty()
                && n.len() <= 64
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
            if !ok {
                problems.push(format!(
                    "name '{n}' must be 1 to 64 letters, digits, '-', '_' or '.'"
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_and_validation() {
        let c = NodeConfig::from_toml("listen = \"127.0.0.1:8080\"\nworkers = 3\n").unwrap();
        assert_eq!((c.listen.port(), c.workers), (8080, 3));
        assert_eq!(c.mqtt_listen, NodeConfig::default().mqtt_listen);
        assert!(NodeConfig::from_toml("colour = 1")
            .unwrap_err()
            .contains("colour"));
        let bad = NodeConfig {
            workers: 0,
            max_rules: 0,
            ..NodeConfig::default()
        };
        let e = bad.validate().unwrap_err();
        assert!(e.contains("workers") && e.contains("max_rules"), "{e}");
    }
}
