//! The checkpoint coordinator of one running rule.
//!
//! Every interval it asks each feed for a barrier of the next epoch. A feed puts the barrier
//! into its stream after what it has read and reports its read position; the barrier flows
//! through the engine (aligned where a rule has several inputs), each operator chain reports
//! its state, and exactly-once outputs report what they produced in the epoch. With every
//! report in, the coordinator writes the checkpoint file, then publishes the staged outputs
//! with a per-stream marker of the epoch in the same atomic write, then trims the input logs.
//! A crash between the two writes is repaired at the next start: staged outputs of the newest
//! checkpoint whose marker is older are published then.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use std::hash::{Hash, Hasher};

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::watch;
use weir_connectors::nats::changelog::Changelog;
use weir_engine::OperatorSnapshot;
use weir_state::{Checkpoint, CheckpointStore, StreamLog};

use crate::delivery::Delivery;
use crate::hub::Hub;
use crate::outbox::Outbox;

/// What a completed checkpoint puts in the changelog: its epoch, the state of each of its
/// partitions (operator chains), and the source positions that go with them.
#[derive(Clone)]
pub struct PartitionStates {
    /// The checkpoint's epoch.
    pub epoch: u64,
    /// The state of each partition.
    pub operators: Vec<weir_engine::Snapshot>,
    /// Where the inputs were.
    pub inputs: ChangelogInputs,
}

/// Where the inputs were when the state in the changelog was taken: broker positions and the
/// watermark of each input stream.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct ChangelogInputs {
    /// Broker positions by input (`broker:` names).
    pub positions: BTreeMap<String, u64>,
    /// The watermark of each input stream.
    pub watermarks: BTreeMap<String, i64>,
}

/// What a feed task is asked to do, shared with the coordinator.
pub struct FeedCtl {
    /// The newest epoch a barrier is wanted for.
    pub requested: AtomicU64,
    /// The epoch of the rule's last checkpoint (0: none asked yet): before its barrier the feed
    /// takes in everything its sources had taken, and after it, reads nothing more.
    pub last: AtomicU64,
    /// Stop reading and leave the engine without ending the stream (state stays as checkpointed).
    pub abandon: AtomicBool,
    /// Wakes the feed if it waits for input, so a barrier goes in at once.
    pub wake: Box<dyn Fn() + Send + Sync>,
    /// Payloads the feed has taken in: a rule whose state only input changes skips the
    /// checkpoint rounds of a spell without any.
    pub taken: AtomicU64,
}

impl FeedCtl {
    /// A feed control with no barrier asked for yet.
    pub fn new(wake: Box<dyn Fn() + Send + Sync>) -> FeedCtl {
        FeedCtl {
            requested: AtomicU64::new(0),
            last: AtomicU64::new(0),
            abandon: AtomicBool::new(false),
            wake,
            taken: AtomicU64::new(0),
        }
    }
}

/// What the coordinator hears from a rule's tasks.
pub enum Report {
    /// A feed put the barrier of `epoch` into its stream at `offset` of its log (live feeds
    /// have no log), when the stream had reached `watermark` (event-time streams: a
    /// processing-time stream's watermark is the clock's, nothing to keep).
    Position {
        /// The epoch of the barrier.
        epoch: u64,
        /// The feed's durable log, if it has one.
        log: Option<String>,
        /// The barrier's offset in that log.
        offset: u64,
        /// The input stream.
        stream: String,
        /// The stream's watermark at the barrier.
        watermark: Option<i64>,
    },
    /// An exactly-once output's results of an epoch.
    Staged {
        /// The epoch.
        epoch: u64,
        /// The output stream.
        stream: String,
        /// The encoded results.
        payloads: Vec<Bytes>,
    },
    /// An operator chain's state at a barrier.
    Operator(OperatorSnapshot),
}

/// A rule's checkpointing, for status documents.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckpointStatus {
    /// at_most_once, at_least_once or exactly_once.
    pub delivery: &'static str,
    /// How often checkpoints are taken.
    pub interval_ms: u64,
    /// The newest complete checkpoint.
    pub epoch: u64,
    /// Rounds of barriers through the rule, whether they found new state to write or not
    /// (an idle rule whose state only input changes takes none).
    pub rounds: u64,
    /// Checkpoints written.
    pub completed: u64,
    /// Checkpoints that failed.
    pub failed: u64,
    /// When the newest was written (epoch ms).
    pub last_at_ms: Option<i64>,
    /// How long it took.
    pub last_duration_ms: Option<u64>,
    /// Size of the newest checkpoint: the rule's whole state.
    pub state_bytes: u64,
    /// The limit on the rule's state, if any.
    pub max_state_bytes: Option<u64>,
    /// Why the last failed checkpoint failed.
    pub last_failure: Option<String>,
    /// The epoch the rule started from, if it restored one.
    pub restored_from: Option<u64>,
    /// Why newer checkpoints were passed over at the last start.
    pub restore_notes: Vec<String>,
    /// Where the newest checkpoint's inputs were read to (log offsets; broker offsets of a
    /// group task's partition).
    pub positions: BTreeMap<String, u64>,
    /// The newest epoch whose state is in the rule's changelog, if it has one.
    pub changelog_epoch: Option<u64>,
    /// Where the inputs of that state were read to: what a group may commit, even while the
    /// changelog trails the newest checkpoint under load.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub changelog_positions: BTreeMap<String, u64>,
    /// Why the changelog was not written last time, if it was not.
    pub changelog_error: Option<String>,
}

/// Where an output stream's committed results go: its hub topic, and for a JetStream sink
/// its outbox.
pub struct OutputTarget {
    /// The output stream.
    pub stream: String,
    /// Its hub topic.
    pub topic: String,
    /// Its outbox, for a JetStream sink.
    pub outbox: Option<Arc<Outbox>>,
}

/// What the rule asks of its coordinator.
pub enum Command {
    /// Take a last checkpoint, then tell the feeds to leave.
    Stop,
    /// Tell the feeds to leave at once: the state belongs to someone else now (a group
    /// partition another node took), so no checkpoint of it may be written.
    Abandon,
}

/// Takes a rule's checkpoints: sends barriers through its feeds, gathers positions, staged
/// results and operator states per epoch, and writes each complete checkpoint.
pub struct Coordinator {
    /// The rule.
    pub id: String,
    /// Its delivery guarantee.
    pub delivery: Delivery,
    /// Time between checkpoints.
    pub interval: Duration,
    /// The next epoch.
    pub epoch: u64,
    /// Partitions of keyed stages.
    pub workers: usize,
    /// Operator chains, each with a state partition.
    pub chains: usize,
    /// The rule's feeds, which put barriers into their streams.
    pub feeds: Vec<Arc<FeedCtl>>,
    /// Output streams whose results commit with checkpoints (exactly-once), with their topics.
    pub staged_outputs: Vec<OutputTarget>,
    /// Logs the rule alone reads, trimmed to its checkpointed position.
    pub private_logs: Vec<StreamLog>,
    /// Shared topic logs the rule reads or writes, kept to `retention` entries.
    pub topic_logs: Vec<StreamLog>,
    /// Entries kept per shared topic log.
    pub retention: u64,
    /// The limit on the rule's state, if any.
    pub max_state_bytes: Option<u64>,
    /// What the rule's tasks report.
    pub reports: UnboundedReceiver<Report>,
    /// What the rule asks.
    pub commands: UnboundedReceiver<Command>,
    /// Where checkpoints are written.
    pub store: Arc<dyn CheckpointStore>,
    /// The node's hub, where committed results are published.
    pub hub: Arc<Hub>,
    /// What status shows of the checkpoints.
    pub status: Arc<Mutex<CheckpointStatus>>,
    /// Set when the rule must stop (state over its limit); status shows it.
    pub failure: Arc<Mutex<Option<String>>>,
    /// A checkpoint recovered at start whose staged outputs may not be published yet.
    pub recovered: Option<Checkpoint>,
    /// Where completed checkpoints' states go for the changelog, if the rule has one.
    pub changelog: Option<watch::Sender<Option<PartitionStates>>>,
    /// Exactly-once results not yet in a written checkpoint, per stream in order: a checkpoint
    /// that fails leaves its epoch's results here for the next one, which covers their inputs.
    pub pending: BTreeMap<String, Vec<Bytes>>,
    /// The newest checkpoint written (or recovered): a round that finds the same state, positions
    /// and watermarks writes nothing, so idle rules cost no disk writes.
    pub last: Option<Checkpoint>,
    /// Whether only input changes the rule's state (no operator acts on time alone).
    pub input_only: bool,
    /// What the feeds had taken before the last round's barriers.
    pub taken_at: Option<u64>,
}

/// Whether two checkpoints hold the same state, read positions and watermarks (and nothing
/// staged), so the newer one would restore exactly what the older one does.
fn same_state(old: &Checkpoint, new: &Checkpoint) -> bool {
    new.staged.is_empty()
        && old.positions == new.positions
        && old.watermarks == new.watermarks
        && old.operators.len() == new.operators.len()
        && old
            .operators
            .iter()
            .zip(&new.operators)
            .all(|(a, b)| a.get() == b.get())
}

/// How a checkpoint round ended.
enum Round {
    Written(Checkpoint),
    /// Nothing changed since the last checkpoint written.
    Unchanged,
}

/// Mirrors each completed checkpoint's state partitions to the rule's changelog, writing only
/// the partitions whose state changed since they were last written.
pub async fn mirror(
    log: Changelog,
    mut states: watch::Receiver<Option<PartitionStates>>,
    status: Arc<Mutex<CheckpointStatus>>,
) {
    let mut written: Vec<Option<u64>> = Vec::new();
    while states.changed().await.is_ok() {
        let Some(PartitionStates {
            epoch,
            operators: parts,
            inputs,
        }) = states.borrow_and_update().clone()
        else {
            continue;
        };
        written.resize(parts.len(), None);
        let mut failure = None;
        for (i, part) in parts.iter().enumerate() {
            let bytes = serde_json::to_vec(part).unwrap_or_default();
            let mut h = std::collections::hash_map::DefaultHasher::new();
            bytes.hash(&mut h);
            let digest = Some(h.finish());
            if written[i] == digest {
                continue;
            }
            match log.put(i, epoch, &bytes).await {
                Ok(()) => written[i] = digest,
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        // Positions last: a reader that finds them older than a state met a round cut short.
        if failure.is_none() {
            let bytes = serde_json::to_vec(&inputs).unwrap_or_default();
            failure = log.put_positions(epoch, &bytes).await.err();
        }
        let mut s = status.lock().unwrap_or_else(|e| e.into_inner());
        match failure {
            None => {
                s.changelog_epoch = Some(epoch);
                s.changelog_positions = inputs.positions;
                s.changelog_error = None;
            }
            Some(e) => {
                tracing::warn!(error = %e, "changelog not written");
                s.changelog_error = Some(e);
            }
        }
    }
}

/// The marker of the newest epoch whose results are published on a stream.
pub fn committed_key(rule: &str, stream: &str) -> String {
    format!("committed/{rule}/{stream}")
}

impl Coordinator {
    /// Takes checkpoints until stopped or abandoned.
    pub async fn run(mut self) {
        if let Some(c) = self.recovered.take() {
            self.publish(&c).await;
            self.last = Some(c);
        }
        loop {
            let stop = match tokio::time::timeout(self.interval, self.commands.recv()).await {
                Ok(Some(Command::Stop)) => true,
                Ok(Some(Command::Abandon)) => return self.release_feeds(),
                Err(_) => false,
                Ok(None) => return,
            };
            let taken: u64 = self
                .feeds
                .iter()
                .map(|f| f.taken.load(Ordering::Relaxed))
                .sum();
            if !stop && self.idle_since_last_round(taken) {
                continue;
            }
            self.epoch += 1;
            if stop {
                for f in &self.feeds {
                    f.last.store(self.epoch, Ordering::Relaxed);
                }
            }
            let started = Instant::now();
            let round = self.checkpoint(self.epoch).await;
            self.status.lock().unwrap_or_else(|e| e.into_inner()).rounds += 1;
            match round {
                Ok(Round::Written(c)) => {
                    self.completed(&c, started).await;
                    self.last = Some(c);
                    self.taken_at = Some(taken);
                }
                Ok(Round::Unchanged) => self.taken_at = Some(taken),
                Err(e) => {
                    tracing::warn!(rule = %self.id, epoch = self.epoch, error = %e, "checkpoint failed; the previous one stays");
                    let mut s = self.status.lock().unwrap_or_else(|e| e.into_inner());
                    s.failed += 1;
                    s.last_failure = Some(e);
                }
            }
            let over = self.over_limit();
            if stop || over {
                return self.release_feeds();
            }
        }
    }

    /// Whether a round would find what the last one found, without asking the tasks: nothing
    /// was taken in since its barriers, only input changes the state, and nothing is owed.
    /// Thousands of idle rules then cost no barriers.
    fn idle_since_last_round(&self, taken: u64) -> bool {
        self.input_only
            && self.taken_at == Some(taken)
            && self.last.is_some()
            && self.pending.is_empty()
    }

    /// Tells every feed to leave the engine without ending its stream.
    fn release_feeds(&self) {
        for f in &self.feeds {
            f.abandon.store(true, Ordering::Relaxed);
            (f.wake)();
        }
    }

    /// Takes one checkpoint: barriers in, reports collected, the file written.
    async fn checkpoint(&mut self, epoch: u64) -> Result<Round, String> {
        for f in &self.feeds {
            f.requested.store(epoch, Ordering::Relaxed);
            (f.wake)();
        }
        let mut operators: BTreeMap<usize, weir_engine::Snapshot> = BTreeMap::new();
        let mut positions = BTreeMap::new();
        let mut watermarks = BTreeMap::new();
        let mut feeds = 0;
        let mut staged = 0;
        let budget = (self.interval * 10).max(Duration::from_secs(10));
        let deadline = Instant::now() + budget;
        while operators.len() < self.chains
            || feeds < self.feeds.len()
            || staged < self.staged_outputs.len()
        {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.reports.recv()).await {
                Ok(Some(Report::Position {
                    epoch: e,
                    log,
                    offset,
                    stream,
                    watermark,
                })) if e == epoch => {
                    feeds += 1;
                    if let Some(log) = log {
                        positions.insert(log, offset);
                    }
                    if let Some(w) = watermark {
                        watermarks.insert(stream, w);
                    }
                }
                Ok(Some(Report::Staged {
                    epoch: e,
                    stream,
                    mut payloads,
                })) => {
                    // Earlier epochs' results arrive late after a failed checkpoint.
                    staged += usize::from(e == epoch);
                    self.pending.entry(stream).or_default().append(&mut payloads);
                }
                Ok(Some(Report::Operator(s))) if s.epoch == epoch => {
                    let state = s.state.map_err(|e| format!("checkpoint {epoch}: {e}"))?;
                    operators.insert(s.index, state);
                }
                Ok(Some(_)) => {}
                Err(_) => {
                    return Err(format!(
                        "checkpoint {epoch} did not complete within {} s ({} of {} operators, {feeds} of {} inputs reported)",
                        budget.as_secs(),
                        operators.len(),
                        self.chains,
                        self.feeds.len()
                    ))
                }
                Ok(None) => return Err("the rule has stopped".into()),
            }
        }
        let c = Checkpoint {
            rule: self.id.clone(),
            epoch,
            created_ms: weir_core::Clock::now_ms(&weir_core::SystemClock),
            workers: self.workers,
            operators: operators.into_values().collect(),
            positions,
            watermarks,
            staged: self
                .pending
                .iter()
                .map(|(k, v)| {
                    let text = v.iter().map(|p| String::from_utf8_lossy(p).into_owned());
                    (k.clone(), text.collect())
                })
                .collect(),
        };
        if self.last.as_ref().is_some_and(|last| same_state(last, &c)) {
            return Ok(Round::Unchanged);
        }
        // The write (with its fsync) runs beside the runtime's threads, not on them.
        // A few at a time, so rules writing at once do not each take a thread.
        static WRITERS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);
        let _turn = WRITERS.acquire().await.map_err(|e| e.to_string())?;
        let store = self.store.clone();
        let (saved, c) = tokio::task::spawn_blocking(move || (store.save(&c), c))
            .await
            .map_err(|e| format!("checkpoint {epoch}: {e}"))?;
        let saved = saved.map_err(|e| e.to_string())?;
        self.pending.clear();
        let mut s = self.status.lock().unwrap_or_else(|e| e.into_inner());
        s.state_bytes = saved.bytes;
        Ok(Round::Written(c))
    }

    async fn completed(&mut self, c: &Checkpoint, started: Instant) {
        self.publish(c).await;
        if let Some(changelog) = &self.changelog {
            changelog.send_replace(Some(PartitionStates {
                epoch: c.epoch,
                operators: c.operators.clone(),
                inputs: ChangelogInputs {
                    positions: c.positions.clone(),
                    watermarks: c.watermarks.clone(),
                },
            }));
        }
        for log in &self.private_logs {
            if let Some(p) = c.positions.get(log.name()) {
                if let Err(e) = log.truncate_before(*p) {
                    tracing::warn!(log = log.name(), error = %e, "input log not trimmed");
                }
            }
        }
        for log in &self.topic_logs {
            let keep_from = log.end().saturating_sub(self.retention);
            let needed = c.positions.get(log.name()).copied().unwrap_or(u64::MAX);
            if let Err(e) = log.truncate_before(keep_from.min(needed)) {
                tracing::warn!(log = log.name(), error = %e, "topic log not trimmed");
            }
        }
        let mut s = self.status.lock().unwrap_or_else(|e| e.into_inner());
        s.epoch = c.epoch;
        s.positions = c.positions.clone();
        s.completed += 1;
        s.last_at_ms = Some(c.created_ms);
        s.last_duration_ms = Some(started.elapsed().as_millis() as u64);
    }

    /// Publishes a checkpoint's staged outputs on streams whose marker is older than it.
    async fn publish(&self, c: &Checkpoint) {
        let marker = c.epoch.to_be_bytes();
        for t in &self.staged_outputs {
            let key = committed_key(&self.id, &t.stream);
            let done = self.hub.store().meta_u64(&key).ok().flatten();
            if done >= Some(c.epoch) {
                continue;
            }
            let payloads: Vec<Bytes> = c
                .staged
                .get(&t.stream)
                .into_iter()
                .flatten()
                .map(|p| Bytes::from(p.clone()))
                .collect();
            // Retried until it lands: the results are in the checkpoint, so nothing is lost
            // while the disk is full, and the rule waits rather than running ahead.
            let mut wait = Duration::from_millis(100);
            let markers = [(key.as_str(), &marker[..])];
            let commit = || async {
                match &t.outbox {
                    Some(outbox) => outbox.commit(&payloads, markers[0]),
                    None => self.hub.publish_marked(&t.topic, &payloads, &markers).await,
                }
            };
            while let Err(e) = commit().await {
                tracing::error!(rule = %self.id, stream = %t.stream, error = %e, "results not published; retrying");
                self.status
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .last_failure = Some(format!("results not published: {e}"));
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            if t.outbox.is_some() {
                // Tails see what was committed (a view, not a delivery).
                let _ = self.hub.publish_all(&t.topic, &payloads).await;
            }
        }
    }

    /// Whether the state has outgrown its limit; if so the rule stops with the reason.
    fn over_limit(&self) -> bool {
        let bytes = self
            .status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .state_bytes;
        match self.max_state_bytes {
            Some(max) if bytes > max => {
                let why = format!(
                    "the rule's state is {bytes} bytes, over its max_state_bytes of {max}; it was stopped at checkpoint {}. Bound it with a window, a shorter WITHIN, fewer keys, or raise max_state_bytes",
                    self.epoch
                );
                tracing::error!(rule = %self.id, "{why}");
                *self.failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
                true
            }
            _ => false,
        }
    }
}
