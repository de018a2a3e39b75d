//! The node's durable catalogue: streams, rules with their last requested state, and the job
//! records of seed paper 001's API. It lives in the data directory's `registry/`: the streams
//! in `streams.json`, each rule in `rules/<id>.json`, so that a change to one rule writes that
//! rule's file alone and installing the ten-thousandth rule costs what the first did. Each file
//! is replaced atomically (temporary file, fsync, rename). A `registry.json` of an older node,
//! the whole catalogue in one file, is taken over on open.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::delivery::Delivery;
use crate::outbox::WhenFull;

/// A rule's lifecycle state, as the paper names them (plus FAILED with a reason in status).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RuleState {
    /// Installed, not started.
    Installed,
    /// Started.
    Running,
    /// Stopped by a request.
    Stopped,
    /// Deleted (paper jobs keep the record).
    Uninstalled,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
/// A stream as the catalogue keeps it.
pub struct StreamRecord {
    /// Its name.
    pub name: String,
    /// Its `CREATE STREAM` text.
    pub sql: String,
}

/// Options of a rule; unknown options are refused.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct RuleOptions {
    /// Partitions of the rule's keyed stages (default: the node's setting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<usize>,
    /// Install without starting.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stopped: bool,
    /// The delivery guarantee (default at_most_once).
    #[serde(default, skip_serializing_if = "is_default")]
    pub delivery: Delivery,
    /// Time between checkpoints, as "500ms", "1s", "1m" (default 1 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_interval: Option<String>,
    /// Largest checkpoint (the rule's whole state) allowed; a rule that grows past it stops
    /// with an error instead of taking the node's memory and disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_state_bytes: Option<u64>,
    /// Per-key state (change functions, pattern partitions) unused for this long in event
    /// time is dropped, as "1h" or "7d": state that grows with the keys stays bounded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_ttl: Option<String>,
    /// Mirror the rule's state to a changelog on this NATS JetStream server
    /// ("nats://host:port"), from which a node without a checkpoint rebuilds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changelog: Option<String>,
    /// Run as one member of the input's consumer group (a Kafka topic or a partitioned
    /// JetStream stream) on each node the rule is installed on: one task per partition the
    /// node reads, state in the changelog.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub group: bool,
    /// The control plane may move the rule between its edge node and the core by load (see
    /// the node settings offload_above and return_below).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub adaptive: bool,
    /// When the rule's node is lost, the control plane starts it on the least loaded node of
    /// this runtime ("core" or "edge"), from its changelog.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<String>,
    /// What a durable rule's full sink outbox does: block (default) or drop_oldest.
    #[serde(default, skip_serializing_if = "is_default")]
    pub outbox_full: WhenFull,
}

fn is_default<T: Default + PartialEq>(t: &T) -> bool {
    *t == T::default()
}

impl RuleOptions {
    /// The checkpoint interval in milliseconds, checked.
    pub fn interval_ms(&self) -> Result<u64, String> {
        let Some(text) = &self.checkpoint_interval else {
            return Ok(1000);
        };
        match weir_core::parse_duration(text) {
            Ok(ms) if (100..=3_600_000).contains(&ms) => Ok(ms as u64),
            Ok(_) => Err(format!(
                "checkpoint_interval '{text}' must be from 100ms to 1h"
            )),
            Err(e) => Err(format!("checkpoint_interval '{text}': {e}")),
        }
    }

    /// The state TTL in milliseconds, checked.
    pub fn ttl_ms(&self) -> Result<Option<i64>, String> {
        let Some(text) = &self.state_ttl else {
            return Ok(None);
        };
        match weir_core::parse_duration(text) {
            Ok(ms) if ms >= 1000 => Ok(Some(ms)),
            Ok(_) => Err(format!("state_ttl '{text}' must be at least 1s")),
            Err(e) => Err(format!("state_ttl '{text}': {e}")),
        }
    }

    /// Every problem with the options at once.
    pub fn validate(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        if let Err(e) = self.interval_ms() {
            problems.push(e);
        }
        if let Err(e) = self.ttl_ms() {
            problems.push(e);
        }
        if self.changelog.is_some() && !cfg!(feature = "nats") {
            problems.push(weir_connectors::nats::NO_CHANGELOG.to_owned());
        } else if let Some(url) = self
            .changelog
            .as_ref()
            .filter(|u| !u.starts_with("nats://"))
        {
            problems.push(format!(
                "changelog '{url}' must be a NATS URL, nats://host:port (the changelog lives in JetStream)"
            ));
        }
        if let Some(rt) = self
            .failover
            .as_ref()
            .filter(|r| !["core", "edge"].contains(&r.as_str()))
        {
            problems.push(format!("failover must be core or edge, not {rt}"));
        }
        if self.failover.is_some() && self.delivery.durable() {
            problems.push(format!("failover restarts the rule from its changelog, which holds its state but not the positions in its node's input logs that {} needs; use at_most_once with a JetStream durable consumer, or a group rule", self.delivery.name()));
        }
        if self.failover.is_some() && self.changelog.is_none() {
            problems.push("failover needs a changelog (\"changelog\": \"nats://host:4222\"): the node the rule restarts on takes its state from there".to_owned());
        }
        if self.group && self.changelog.is_none() {
            problems.push("a group rule needs a changelog (\"changelog\": \"nats://host:4222\"): a partition's state goes there when the partition moves to another node".to_owned());
        }
        if self.group && self.delivery == Delivery::ExactlyOnce {
            problems.push("a group rule gives at_least_once at most: a partition's next owner emits again what the last one emitted after its last checkpoint".to_owned());
        }
        if self.max_state_bytes == Some(0) {
            problems.push("max_state_bytes must be at least 1".to_owned());
        }
        if let Some(w) = self.workers.filter(|w| *w == 0 || *w > 256) {
            problems.push(format!("workers must be 1..=256, not {w}"));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

/// What seed paper 001's jobinfo object adds to a rule.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRecord {
    /// The runtime the job was installed for.
    pub runtime: String,
    /// The paper's jobType.
    pub job_type: String,
    /// The paper's configFileName.
    pub config_file_name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
/// A rule as the catalogue keeps it.
pub struct RuleRecord {
    /// Its id.
    pub id: String,
    /// Its text.
    pub sql: String,
    #[serde(default)]
    /// Its options.
    pub options: RuleOptions,
    /// Its lifecycle state.
    pub state: RuleState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Its paper job record, if installed as a job.
    pub job: Option<JobRecord>,
    /// Where the rule has been: its moves between nodes, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub moves: Vec<MoveRecord>,
}

/// One move of a rule between nodes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MoveRecord {
    /// The node it left.
    pub from: String,
    /// The node it went to.
    pub to: String,
    /// When (epoch ms).
    pub at_ms: i64,
    /// The checkpoint the rule resumed from.
    pub epoch: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
/// The node's streams and rules, kept in its data directory.
pub struct Catalog {
    /// Streams by name.
    pub streams: BTreeMap<String, StreamRecord>,
    /// Rules by id.
    pub rules: BTreeMap<String, RuleRecord>,
}

/// The catalogue and the directory it is kept in.
pub struct Registry {
    /// The data directory.
    dir: PathBuf,
    /// What it holds.
    pub catalog: Catalog,
}

impl Registry {
    /// Opens (or creates) the registry in `dir`.
    pub fn open(dir: &Path) -> std::io::Result<Registry> {
        let rules_dir = dir.join("registry").join("rules");
        std::fs::create_dir_all(&rules_dir)?;
        let mut registry = Registry {
            dir: dir.to_owned(),
            catalog: Catalog::default(),
        };
        let whole = dir.join("registry.json");
        if whole.exists() {
            registry.catalog = read_json(&whole)?;
            for id in registry.catalog.rules.keys() {
                registry.save_rule(id)?;
            }
            registry.save_streams()?;
            std::fs::remove_file(&whole)?;
            return Ok(registry);
        }
        if let Some(streams) = read_json_if_there(&registry.streams_file())? {
            registry.catalog.streams = streams;
        }
        for entry in std::fs::read_dir(&rules_dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "json") {
                let rule: RuleRecord = read_json(&path)?;
                registry.catalog.rules.insert(rule.id.clone(), rule);
            }
        }
        Ok(registry)
    }

    fn streams_file(&self) -> PathBuf {
        self.dir.join("registry").join("streams.json")
    }

    /// The file of rule `id`, whose id [`valid_id`] has let through.
    fn rule_file(&self, id: &str) -> PathBuf {
        debug_assert!(valid_id(id), "rule ids are checked before they name files");
        self.dir
            .join("registry")
            .join("rules")
            .join(format!("{id}.json"))
    }

    /// Writes the streams' file after a stream was declared or dropped.
    pub fn save_streams(&self) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(&self.catalog.streams)?;
        write_atomic(&self.streams_file(), &bytes)
    }

    /// Writes rule `id`'s file as the catalogue has it, or removes it when the rule is gone.
    pub fn save_rule(&self, id: &str) -> std::io::Result<()> {
        let path = self.rule_file(id);
        match self.catalog.rules.get(id) {
            Some(rule) => write_atomic(&path, &serde_json::to_vec_pretty(rule)?),
            None => match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            },
        }
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of a file kept for a rule, refused unless its name is plain
    /// ([`valid_file_name`]): it stays in the data directory whatever the name came from.
    pub fn job_file(&self, name: &str) -> std::io::Result<PathBuf> {
        if !valid_file_name(name) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("'{name}' is not a plain file name"),
            ));
        }
        Ok(self.dir().join(name))
    }
}

/// Whether `id` may name a rule: 1 to 64 of `A-Z a-z 0-9 _ - .`, starting with a letter, digit
/// or `_` — never `.`, `..`, a path separator or a control character, because ids name
/// directories and files in the data directory.
pub fn valid_id(id: &str) -> bool {
    plain_name(id, 64)
}

/// Whether `name` may name a file the node keeps for a rule (a paper job's `configFileName`):
/// as an id, up to 80 characters.
pub fn valid_file_name(name: &str) -> bool {
    plain_name(name, 80)
}

fn plain_name(s: &str, max: usize) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && s.len() <= max
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// The JSON file at `path`, read whole; a file that does not parse names itself.
fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> std::io::Result<T> {
    read_json_if_there(path)?.ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
}

fn read_json_if_there<T: serde::de::DeserializeOwned>(path: &Path) -> std::io::Result<Option<T>> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    })
}

/// Replaces `path` with `bytes` so that a crash leaves either the old or the new file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_options_are_checked_together() {
        let bad = RuleOptions {
            failover: Some("cloud".into()),
            delivery: Delivery::AtLeastOnce,
            group: true,
            ..RuleOptions::default()
        };
        let e = bad.validate().unwrap_err();
        for part in [
            "failover must be core or edge",
            "not the positions",
            "needs a changelog",
            "a group rule needs a changelog",
        ] {
            assert!(e.contains(part), "{part} missing from {e}");
        }
        let good = RuleOptions {
            failover: Some("core".into()),
            adaptive: true,
            changelog: Some("nats://127.0.0.1:4222".into()),
            ..RuleOptions::default()
        };
        assert_eq!(good.validate(), Ok(()));
    }

    fn rule(id: &str, state: RuleState) -> RuleRecord {
        RuleRecord {
            id: id.into(),
            sql: "INSERT INTO o SELECT * FROM i".into(),
            options: RuleOptions::default(),
            state,
            job: None,
            moves: Vec::new(),
        }
    }

    #[test]
    fn each_rule_is_saved_and_removed_in_a_file_of_its_own() {
        let dir = std::env::temp_dir().join(format!("weir-registry-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut r = Registry::open(&dir).unwrap();
        for id in ["a", "b"] {
            r.catalog
                .rules
                .insert(id.into(), rule(id, RuleState::Running));
            r.save_rule(id).unwrap();
        }
        r.catalog.streams.insert(
            "i".into(),
            StreamRecord {
                name: "i".into(),
                sql: "CREATE STREAM i".into(),
            },
        );
        r.save_streams().unwrap();
        r.catalog.rules.remove("a");
        r.save_rule("a").unwrap();
        let again = Registry::open(&dir).unwrap();
        assert_eq!(again.catalog.rules.keys().collect::<Vec<_>>(), ["b"]);
        assert_eq!(again.catalog.rules["b"].state, RuleState::Running);
        assert!(again.catalog.streams.contains_key("i"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_whole_catalogue_file_of_an_older_node_is_taken_over() {
        let dir = std::env::temp_dir().join(format!("weir-registry-old-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut old = Catalog::default();
        old.rules.insert("r".into(), rule("r", RuleState::Stopped));
        std::fs::write(dir.join("registry.json"), serde_json::to_vec(&old).unwrap()).unwrap();
        let r = Registry::open(&dir).unwrap();
        assert_eq!(r.catalog.rules["r"].state, RuleState::Stopped);
        assert!(!dir.join("registry.json").exists());
        let again = Registry::open(&dir).unwrap();
        assert_eq!(again.catalog.rules["r"].state, RuleState::Stopped);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
