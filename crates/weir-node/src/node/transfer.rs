//! A rule leaving one node and arriving on another with everything it is.
//!
//! The node running the rule stops it at a checkpoint ([`Node::detach`]) and packs: the rule's
//! record (text, options, job, move history), the catalogue streams it uses, the checkpoint,
//! for each durable input the entries of its input log the checkpoint does not cover yet with
//! the broker's number of the last one taken (a JetStream stream sequence), and for each
//! external sink the results the broker has not confirmed, under the offsets that name them to
//! it. The target unpacks that into an installed rule and starts it ([`Node::attach`]): it
//! resumes from the checkpoint, reads the carried entries, then the broker from just after the
//! carried number — nothing read twice, nothing skipped. Until the source deletes its copy
//! ([`Node::delete_rule`]), a refused move is undone by starting it again where it stopped
//! ([`Node::resume_after_move`]).

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use weir_connectors::spec::Moves;
use weir_connectors::Endpoint;
use weir_state::Checkpoint;

use super::{Node, NodeError, RuleView, State};
use crate::outbox::Outbox;
use crate::registry::{RuleRecord, RuleState, StreamRecord};
use crate::rule;

const MAGIC: &[u8; 8] = b"WEIRMOVE";

/// A rule in transit: a JSON header, then the carried payloads as length-prefixed frames, input
/// logs first, in header order.
pub struct Package {
    /// What the package holds: the rule, its checkpoint and what is carried.
    pub header: Header,
    /// One list per carried input log, then one per carried outbox.
    pub payloads: Vec<Vec<Bytes>>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Header {
    pub record: RuleRecord,
    /// The catalogue streams the rule reads or writes.
    pub streams: Vec<StreamRecord>,
    /// The materialised job file of a rule installed through `/api/install`.
    pub job_file: Option<String>,
    pub checkpoint: Option<Checkpoint>,
    pub inputs: Vec<CarriedLog>,
    pub outboxes: Vec<CarriedOutbox>,
}

/// A durable input's log entries not covered by the checkpoint.
#[derive(Debug, Serialize, Deserialize)]
pub struct CarriedLog {
    pub log: String,
    pub entries: usize,
    /// The broker's number of the last message the log took, per part (a JetStream stream
    /// sequence, Kafka offsets per partition).
    pub numbers: std::collections::BTreeMap<String, u64>,
}

/// An external sink's results not yet confirmed by its broker, from offset `first`.
#[derive(Debug, Serialize, Deserialize)]
pub struct CarriedOutbox {
    pub stream: String,
    pub first: u64,
    pub entries: usize,
}

impl Package {
    /// The package as bytes.
    pub fn encode(&self) -> Result<Vec<u8>, NodeError> {
        let header =
            serde_json::to_vec(&self.header).map_err(|e| NodeError::invalid(e.to_string()))?;
        let mut out = Vec::with_capacity(header.len() + 16);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(header.len() as u64).to_le_bytes());
        out.extend_from_slice(&header);
        for p in self.payloads.iter().flatten() {
            out.extend_from_slice(&(p.len() as u32).to_le_bytes());
            out.extend_from_slice(p);
        }
        Ok(out)
    }

    /// Reads a package, or says what is wrong with it.
    pub fn decode(bytes: &[u8]) -> Result<Package, NodeError> {
        let bad = |why: &str| NodeError::invalid(format!("not a weir rule package: {why}"));
        let mut rest = bytes.strip_prefix(MAGIC).ok_or_else(|| bad("bad header"))?;
        let mut take = |n: usize| -> Result<&[u8], NodeError> {
            if rest.len() < n {
                return Err(bad("truncated"));
            }
            let (head, tail) = rest.split_at(n);
            rest = tail;
            Ok(head)
        };
        let len = u64::from_le_bytes(take(8)?.try_into().unwrap_or_default()) as usize;
        let header: Header =
            serde_json::from_slice(take(len)?).map_err(|e| bad(&format!("header: {e}")))?;
        let counts: Vec<usize> = (header.inputs.iter().map(|i| i.entries))
            .chain(header.outboxes.iter().map(|o| o.entries))
            .collect();
        let mut payloads = Vec::with_capacity(counts.len());
        for n in counts {
            let mut list = Vec::with_capacity(n.min(1 << 20));
            for _ in 0..n {
                let len = u32::from_le_bytes(take(4)?.try_into().unwrap_or_default()) as usize;
                list.push(Bytes::copy_from_slice(take(len)?));
            }
            payloads.push(list);
        }
        if !rest.is_empty() {
            return Err(bad("bytes after the last entry"));
        }
        Ok(Package { header, payloads })
    }
}

/// What a package carries besides the rule's record and streams.
struct Carried {
    checkpoint: Option<Checkpoint>,
    inputs: Vec<CarriedLog>,
    outboxes: Vec<CarriedOutbox>,
    payloads: Vec<Vec<Bytes>>,
    job_file: Option<String>,
}

impl Node {
    /// Stops a rule at a checkpoint and packs it for another node. The rule stays installed
    /// here, stopped, until the move is finished or undone.
    pub async fn detach(&self, id: &str) -> Result<Package, NodeError> {
        let _turn = self.rule_turn(id).await;
        let mut st = self.state.lock().await;
        let record = Self::record(&st, id)?.clone();
        let program = self.compile_rule(&st, id, &record.sql)?;
        let (inputs, outputs) = rule::boundary(&program);
        let eps = rule::endpoints(&program).unwrap_or_default();
        let endpoint = |name: &str| {
            eps.iter()
                .find(|(d, _)| d.name.eq_ignore_ascii_case(name))
                .map(|(_, e)| e)
        };
        for name in &inputs {
            if let Some(Moves::No(why)) = endpoint(name).map(|e| e.spec().moves) {
                return Err(NodeError::Unsupported(format!(
                    "rule {id} reads stream {name}, which cannot move with it: {why}; declare {name} on a broker (connector = 'nats', 'kafka', 'mqtt' or 'amqp') to move the rule"
                )));
            }
        }
        // From here on nothing is read for the rule: HTTP ingest stops filling its logs.
        self.journals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        let running = self.take_running(&mut st, id);
        drop(st);
        if let Some(rule) = running {
            rule.stop().await;
        }
        let checkpoint = self.checkpoints.latest(id)?.map(|r| r.checkpoint);
        let store = self.hub.store();
        let durable = record.options.delivery.durable();
        let mut payloads = Vec::new();
        let mut carried = Vec::new();
        for spec in rule::journals(id, &program)
            .into_iter()
            .filter(|j| durable && j.input && j.private)
        {
            let log = store.log(&spec.log)?;
            let from = checkpoint
                .as_ref()
                .and_then(|c| c.positions.get(&spec.log).copied())
                .or(store.meta_u64(&rule::start_key(id, &spec.log))?)
                .unwrap_or_else(|| log.end());
            let entries: Vec<Bytes> = log
                .read(from, usize::MAX)?
                .into_iter()
                .map(|e| e.1)
                .collect();
            carried.push(CarriedLog {
                log: spec.log,
                entries: entries.len(),
                numbers: log.numbers()?,
            });
            payloads.push(entries);
        }
        let mut outboxes = Vec::new();
        for name in outputs
            .iter()
            .filter(|o| durable && !matches!(endpoint(o), Some(Endpoint::Embedded { .. }) | None))
        {
            let (first, results) = self.outbox(id, name, &record)?.unsettled()?;
            outboxes.push(CarriedOutbox {
                stream: name.clone(),
                first,
                entries: results.len(),
            });
            payloads.push(results);
        }
        let st = self.state.lock().await;
        let streams = inputs
            .iter()
            .chain(&outputs)
            .filter_map(|n| Self::find_stream(&st, n).cloned())
            .collect();
        let job_file = match &record.job {
            Some(job) => st
                .registry
                .job_file(&job.config_file_name)
                .and_then(std::fs::read_to_string)
                .ok(),
            None => None,
        };
        Ok(Package {
            header: Header {
                record,
                streams,
                job_file,
                checkpoint,
                inputs: carried,
                outboxes,
            },
            payloads,
        })
    }

    pub(super) fn outbox(
        &self,
        id: &str,
        stream: &str,
        record: &RuleRecord,
    ) -> Result<std::sync::Arc<Outbox>, NodeError> {
        Ok(Outbox::open(
            self.hub.store(),
            id,
            stream,
            self.config.outbox_capacity,
            record.options.outbox_full,
        )?)
    }

    /// Installs a rule that arrives from another node and starts it (if it ran there) from the
    /// carried checkpoint and positions. Refused whole, leaving nothing behind, if the rule
    /// exists here, a carried stream differs from this node's, or the rule cannot start.
    pub async fn attach(&self, package: Package, from: &str) -> Result<RuleView, NodeError> {
        let Package { header, payloads } = package;
        let mut record = header.record;
        let id = record.id.clone();
        // Names from another node become paths here: only plain ones are taken.
        if !crate::registry::valid_id(&id) {
            return Err(super::invalid_id(&id));
        }
        if let Some(job) = &record.job {
            if !crate::registry::valid_file_name(&job.config_file_name) {
                return Err(NodeError::invalid(format!(
                    "the package's job file name '{}' is not a plain file name",
                    job.config_file_name.chars().take(80).collect::<String>()
                )));
            }
        }
        let _turn = self.rule_turn(&id).await;
        let mut st = self.state.lock().await;
        if st.registry.catalog.rules.contains_key(&id) {
            return Err(NodeError::Conflict(format!(
                "rule '{id}' is already installed on this node"
            )));
        }
        self.ensure_room(&st)?;
        let mut added = Vec::new();
        for s in header.streams {
            match Self::find_stream(&st, &s.name) {
                Some(mine) if mine.sql.trim() != s.sql.trim() => {
                    return Err(NodeError::Conflict(format!(
                        "stream {} is declared differently on this node ({}) than where the rule runs ({}); make them the same or delete this node's",
                        s.name, mine.sql, s.sql
                    )));
                }
                Some(_) => {}
                None => added.push(s),
            }
        }
        for s in &added {
            st.registry
                .catalog
                .streams
                .insert(s.name.clone(), s.clone());
        }
        // A rule that ran runs on; one never started stays INSTALLED, a stopped one STOPPED.
        let was = record.state;
        let run = was == RuleState::Running;
        record.state = RuleState::Installed;
        if let Some(job) = &mut record.job {
            job.runtime = self.config.runtime.clone();
        }
        record.moves.push(crate::registry::MoveRecord {
            from: from.to_owned(),
            to: self.name.get().cloned().unwrap_or_default(),
            at_ms: weir_core::Clock::now_ms(&weir_core::SystemClock),
            epoch: header.checkpoint.as_ref().map_or(0, |c| c.epoch),
        });
        st.registry.catalog.rules.insert(id.clone(), record);
        let carried = Carried {
            checkpoint: header.checkpoint,
            inputs: header.inputs,
            outboxes: header.outboxes,
            payloads,
            job_file: header.job_file,
        };
        let placed = self.place(&st, &id, carried);
        let started = match placed {
            Ok(()) if run => {
                drop(st);
                let started = self.launch(&id, false).await.map(Some);
                st = self.state.lock().await;
                started
            }
            Ok(()) => Ok(None),
            Err(e) => Err(e),
        };
        let saved = match started {
            Ok(rule) => {
                if let Some(rule) = rule {
                    self.set_running(&mut st, &id, rule);
                    self.persist_state(&mut st, &id, RuleState::Running)
                } else {
                    self.persist_state(&mut st, &id, was)
                }
            }
            Err(e) => Err(e),
        };
        let saved = match saved {
            Ok(()) if !added.is_empty() => st.registry.save_streams().map_err(NodeError::from),
            other => other,
        };
        if let Err(e) = saved {
            let running = self.take_running(&mut st, &id);
            self.forget_state(&st, &id);
            st.registry.catalog.rules.remove(&id);
            for s in &added {
                st.registry.catalog.streams.remove(&s.name);
            }
            // Undone on disk too, as far as the disk lets.
            let _ = st.registry.save_rule(&id);
            let _ = st.registry.save_streams();
            drop(st);
            if let Some(rule) = running {
                rule.stop().await;
            }
            return Err(e);
        }
        Ok(self.view(&st, &id))
    }

    /// Puts a carried rule's state where its next start finds it: logs continued, the
    /// checkpoint's positions pointed at them, outboxes filled, results already published
    /// marked so.
    fn place(&self, st: &State, id: &str, carried: Carried) -> Result<(), NodeError> {
        let Carried {
            checkpoint,
            inputs,
            outboxes,
            payloads,
            job_file,
        } = carried;
        let record = &st.registry.catalog.rules[id];
        let (_, outputs) = rule::boundary(&*self.compile_rule(st, id, &record.sql)?);
        // Whatever an earlier visit of the rule left here goes first.
        self.forget_state(st, id);
        let store = self.hub.store();
        let mut payloads = payloads.into_iter();
        let mut checkpoint = checkpoint;
        for input in inputs {
            let entries = payloads.next().unwrap_or_default();
            let log = store.log(&input.log)?;
            let at = log.end();
            log.adopt(at, &entries, &input.numbers)?;
            match &mut checkpoint {
                Some(c) => {
                    c.positions.insert(input.log, at);
                }
                // No checkpoint yet: the first start reads the carried entries too.
                None => store.set_meta(&rule::start_key(id, &input.log), &at.to_be_bytes())?,
            }
        }
        for o in outboxes {
            let entries = payloads.next().unwrap_or_default();
            self.outbox(id, &o.stream, record)?
                .adopt(o.first, &entries)?;
        }
        if let Some(mut c) = checkpoint {
            c.rule = id.to_owned();
            // Results staged in it were published where it was taken.
            let marker = c.epoch.to_be_bytes();
            for stream in &outputs {
                store.set_meta(&crate::checkpoint::committed_key(id, stream), &marker)?;
            }
            self.checkpoints.save(&c)?;
        }
        if let (Some(job), Some(body)) = (&record.job, job_file) {
            crate::registry::write_atomic(
                &st.registry.job_file(&job.config_file_name)?,
                body.as_bytes(),
            )?;
        }
        self.hold_journals(st, id);
        Ok(())
    }

    /// Starts a rule again where it stopped for a move that did not happen.
    pub async fn resume_after_move(&self, id: &str) -> Result<RuleView, NodeError> {
        let _turn = self.rule_turn(id).await;
        let mut st = self.state.lock().await;
        self.ensure_rule(&st, id)?;
        self.hold_journals(&st, id);
        let run = st.registry.catalog.rules[id].state == RuleState::Running;
        if run && !st.running.contains_key(id) {
            drop(st);
            let rule = self.launch(id, false).await?;
            st = self.state.lock().await;
            self.set_running(&mut st, id, rule);
        }
        Ok(self.view(&st, id))
    }
}
