//! The runtime: turns a program into tasks on the shared worker [`Pool`], joined by bounded
//! channels.
//!
//! Every stream has producers (an [`Ingest`] for outside input, or the workers of the rules that
//! write it) and consumers (rules and [`OutputStream`]s). A consumer tracks the watermark of
//! each producer of each input and advances to their minimum, so event time stays correct with
//! any number of parallel producers. A keyed rule runs one operator chain per partition; its
//! router task hashes each event's key to pick the partition, so a key's state lives in one
//! place. Channels are bounded: a slow stage holds its producers back instead of growing memory.
//!
//! Checkpoints use barriers (Chandy-Lamport, as Flink aligns them): [`Ingest::barrier`] puts a
//! numbered barrier into a stream; a consumer with several producers holds back what arrives
//! behind the barrier on one slot until it has the barrier from every slot, snapshots its
//! operator, and passes the barrier on. When the barrier reaches an [`OutputStream`], everything
//! before it has been emitted and every operator has reported its state for that epoch.

mod batch;
mod channel;
mod ingest;
mod output;
mod routing;
mod run;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use weir_core::{Clock, Event, SystemClock};
use weir_lang::plan::{Program, StreamDef, TimeMode};

pub use batch::{run_batch, BatchResult};
pub use channel::{Msg, Receiver};
pub use ingest::{Ingest, Stamp, Stamped};
pub use output::{Delivered, OutputStream};
pub use routing::chain_count;
pub use run::rule_chain;

use crate::operator::Chain;
use crate::pool::{block_on, Pool};
use channel::{Envelope, Inbox, Publisher, Tracker};
use routing::{routing, Routing};
use run::{run_router, run_single, run_worker, Runner, WorkerMsg};

/// Engine settings, validated by [`EngineConfig::validate`] before anything starts.
#[derive(Clone)]
pub struct EngineConfig {
    /// Partitions of a keyed rule: operator chains that split its keys (on the pool's threads).
    pub workers: usize,
    /// Batches a channel holds before its producer waits.
    pub channel_capacity: usize,
    /// Events per batch at ingest.
    pub batch_size: usize,
    /// The time source of processing time and `received_at` (injected, so tests set it).
    pub clock: Arc<dyn Clock>,
    /// Per-key state unused for this long (event time, ms) is dropped.
    pub state_ttl_ms: Option<i64>,
    /// Where the operator chains run.
    pub pool: Pool,
}

/// The system clock, one for the whole process: rules stamping with the same clock can share
/// what they stamp (see [`Stamp::sharing_key`]).
fn system_clock() -> Arc<dyn Clock> {
    static CLOCK: std::sync::OnceLock<Arc<dyn Clock>> = std::sync::OnceLock::new();
    CLOCK.get_or_init(|| Arc::new(SystemClock)).clone()
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            channel_capacity: 16,
            batch_size: 1024,
            clock: system_clock(),
            state_ttl_ms: None,
            pool: Pool::shared(),
        }
    }
}

/// Errors building a dataflow.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A setting out of its range.
    #[error("invalid engine setting: {0}")]
    Config(String),
    /// An input or output that the program does not declare.
    #[error("unknown stream '{0}'")]
    UnknownStream(String),
    /// A checkpoint that the rule's operators cannot take back.
    #[error("the saved state does not fit {rule}: {error}")]
    Restore {
        /// The rule whose state it is.
        rule: String,
        /// Why the state does not fit.
        error: crate::state::StateError,
    },
}

impl weir_core::Classify for BuildError {
    fn blame(&self) -> weir_core::Blame {
        match self {
            BuildError::Restore { error, .. } => error.blame(),
            _ => weir_core::Blame::User,
        }
    }
}

/// Every rule's operator chains (one per worker of a keyed rule), restored from a
/// checkpoint's snapshots (in [`OperatorSnapshot::index`] order) if there are any.
fn restored_chains(
    program: &Program,
    config: &EngineConfig,
    restore: Option<Vec<crate::state::Snapshot>>,
) -> Result<Vec<Vec<Chain>>, BuildError> {
    let counts: Vec<usize> = program
        .rules
        .iter()
        .map(|r| routing(r).chains(config.workers))
        .collect();
    let total: usize = counts.iter().sum();
    let mut restore = match restore {
        None => None,
        Some(states) if states.len() == total => Some(states.into_iter()),
        Some(states) => {
            return Err(BuildError::Restore {
                rule: "the rule file".to_owned(),
                error: crate::state::StateError::Changed(format!(
                    "it holds the state of {} operator chains and the rules need {total} (rules were added or removed, or the worker count changed)",
                    states.len()
                )),
            })
        }
    };
    let mut all = Vec::with_capacity(counts.len());
    for (rule, n) in program.rules.iter().zip(counts) {
        let mut chains = Vec::with_capacity(n);
        for _ in 0..n {
            let mut chain = rule_chain(program, rule);
            if let Some(ttl) = config.state_ttl_ms {
                chain.set_state_ttl(ttl);
            }
            if let Some(state) = restore.as_mut().and_then(|s| s.next()) {
                chain.restore(&state).map_err(|error| BuildError::Restore {
                    rule: rule.name.clone(),
                    error,
                })?;
            }
            chains.push(chain);
        }
        all.push(chains);
    }
    Ok(all)
}

/// Whether a checkpoint's snapshots fit `program` run with `workers` per keyed rule: the
/// error says which operator's state does not, and why. Starts nothing.
pub fn check_restore(
    program: &Program,
    workers: usize,
    snapshots: &[crate::state::Snapshot],
) -> Result<(), BuildError> {
    let config = EngineConfig {
        workers,
        ..EngineConfig::default()
    };
    restored_chains(program, &config, Some(snapshots.to_vec())).map(|_| ())
}

/// Whether the state of `old`'s operators fits `new` (its windows, keys, aggregates, joins and
/// patterns are the same, whatever changed around them): the error says which operator's does
/// not. Starts nothing.
pub fn check_update(old: &Program, new: &Program, workers: usize) -> Result<(), BuildError> {
    let config = EngineConfig {
        workers,
        ..EngineConfig::default()
    };
    let mut snapshots = Vec::new();
    for chain in restored_chains(old, &config, None)?.iter().flatten() {
        snapshots.push(chain.snapshot().map_err(|error| BuildError::Restore {
            rule: "the rule's current version".to_owned(),
            error,
        })?);
    }
    check_restore(new, workers, &snapshots)
}

impl EngineConfig {
    /// Every setting out of its range, at once.
    pub fn validate(&self) -> Result<(), BuildError> {
        let mut problems = Vec::new();
        if self.workers == 0 || self.workers > 256 {
            problems.push(format!("workers must be 1..=256, not {}", self.workers));
        }
        if self.channel_capacity == 0 {
            problems.push("channel_capacity must be at least 1".to_owned());
        }
        if !(1..=1 << 20).contains(&self.batch_size) {
            problems.push(format!(
                "batch_size must be 1..={}, not {}",
                1 << 20,
                self.batch_size
            ));
        }
        if self.state_ttl_ms.is_some_and(|t| t <= 0) {
            problems.push("state_ttl must be positive".to_owned());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(BuildError::Config(problems.join("; ")))
        }
    }
}

/// An event that arrived after its time had passed, with the rule and the reason.
#[derive(Debug, Clone)]
pub struct LateEvent {
    /// The rule that refused it.
    pub rule: String,
    /// Why: which window or bound it missed.
    pub reason: String,
    /// The event as it arrived.
    pub event: Event,
}

/// One operator chain's state at a checkpoint barrier.
#[derive(Debug)]
pub struct OperatorSnapshot {
    /// The checkpoint epoch it belongs to.
    pub epoch: u64,
    /// Which chain: rules in program order, then workers in order (see [`Dataflow::chains`]).
    pub index: usize,
    /// The chain's state, or why it could not be saved.
    pub state: Result<crate::state::Snapshot, String>,
}

/// Live counters of one rule.
#[derive(Debug, Default)]
pub struct RuleStats {
    /// The rule's name.
    pub name: String,
    /// Events the rule took in.
    pub events_in: AtomicU64,
    /// Results it gave.
    pub events_out: AtomicU64,
    /// Events it refused as late.
    pub late: AtomicU64,
}

/// A running program.
pub struct Dataflow {
    ingests: Vec<Ingest>,
    outputs: Vec<(String, OutputStream)>,
    late: Option<Receiver<LateEvent>>,
    snapshots: Option<Receiver<OperatorSnapshot>>,
    chains: usize,
    tasks: Vec<JoinHandle<()>>,
    stats: Vec<Arc<RuleStats>>,
    uses_time: bool,
}
impl Dataflow {
    /// Wires and starts a program. `inputs` are the streams fed from outside through
    /// [`Dataflow::take_ingest`]; `outputs` the streams read through [`Dataflow::take_output`].
    pub fn build(
        program: &Program,
        inputs: &[String],
        outputs: &[String],
        config: EngineConfig,
    ) -> Result<Dataflow, BuildError> {
        Dataflow::build_restored(program, inputs, outputs, config, None)
    }

    /// Like [`Dataflow::build`], with every operator chain restored from a checkpoint's
    /// snapshots (in [`OperatorSnapshot::index`] order).
    pub fn build_restored(
        program: &Program,
        inputs: &[String],
        outputs: &[String],
        config: EngineConfig,
        restore: Option<Vec<crate::state::Snapshot>>,
    ) -> Result<Dataflow, BuildError> {
        config.validate()?;
        let find = |name: &str| {
            program
                .stream(name)
                .cloned()
                .ok_or_else(|| BuildError::UnknownStream(name.to_owned()))
        };
        let input_defs: Vec<StreamDef> =
            inputs.iter().map(|n| find(n)).collect::<Result<_, _>>()?;
        let output_defs: Vec<StreamDef> =
            outputs.iter().map(|n| find(n)).collect::<Result<_, _>>()?;
        let key = |s: &str| s.to_ascii_lowercase();

        // Producers of each stream: ingest, and each worker of each rule writing it.
        let plans: Vec<(Routing, usize)> = program
            .rules
            .iter()
            .map(|r| {
                let rt = routing(r);
                let workers = rt.chains(config.workers);
                (rt, workers)
            })
            .collect();
        #[derive(Clone, Copy)]
        enum Producer {
            Ingest(usize),
            Worker(usize, usize),
        }
        let mut producers: std::collections::HashMap<String, Vec<Producer>> = Default::default();
        for (i, d) in input_defs.iter().enumerate() {
            producers
                .entry(key(&d.name))
                .or_default()
                .push(Producer::Ingest(i));
        }
        for (r, rule) in program.rules.iter().enumerate() {
            for w in 0..plans[r].1 {
                producers
                    .entry(key(&rule.sink))
                    .or_default()
                    .push(Producer::Worker(r, w));
            }
        }
        let mut ingest_pubs: Vec<Publisher> = vec![Publisher::default(); input_defs.len()];
        let mut worker_pubs: Vec<Vec<Publisher>> = plans
            .iter()
            .map(|(_, w)| vec![Publisher::default(); *w])
            .collect();
        for (r, rule) in program.rules.iter().enumerate() {
            let sink = program.stream(&rule.sink);
            for p in worker_pubs[r].iter_mut() {
                if let Some(s) = sink.filter(|s| s.declared) {
                    p.retime = s.timestamp.clone().filter(|_| s.time == TimeMode::Event);
                    p.delay = s.watermark_ms;
                }
            }
        }
        // Subscribes a consumer to a stream; returns the slots it will see, each tagged with the input.
        let mut subscribe =
            |tx: &mpsc::Sender<Envelope>, stream: &str, input: usize, slots: &mut Vec<usize>| {
                for p in producers.get(&key(stream)).into_iter().flatten() {
                    let slot = slots.len();
                    slots.push(input);
                    let publisher = match *p {
                        Producer::Ingest(i) => &mut ingest_pubs[i],
                        Producer::Worker(r, w) => &mut worker_pubs[r][w],
                    };
                    publisher.subs.push((tx.clone(), slot));
                }
            };

        let (late_tx, late_rx) = mpsc::channel::<LateEvent>(config.channel_capacity * 64);
        let mut rule_rx = Vec::new();
        let mut stats = Vec::new();
        for rule in &program.rules {
            let (tx, rx) = mpsc::channel::<Envelope>(config.channel_capacity);
            let mut slots = Vec::new();
            for (i, s) in rule.inputs().iter().enumerate() {
                subscribe(&tx, s, i, &mut slots);
            }
            rule_rx.push((rx, slots));
            stats.push(Arc::new(RuleStats {
                name: rule.name.clone(),
                ..Default::default()
            }));
        }
        let mut outs = Vec::new();
        for d in &output_defs {
            let (tx, rx) = mpsc::channel::<Envelope>(config.channel_capacity);
            let mut slots = Vec::new();
            subscribe(&tx, &d.name, 0, &mut slots);
            outs.push((
                d.name.clone(),
                OutputStream {
                    inbox: Inbox::new(rx, slots.len()),
                    tracker: Tracker::new(slots.len()),
                },
            ));
        }

        let chains: usize = plans.iter().map(|(_, w)| w).sum();
        let mut built = restored_chains(program, &config, restore)?.into_iter();
        let (snap_tx, snap_rx) = mpsc::unbounded_channel::<OperatorSnapshot>();
        let mut index = 0;

        let pool = &config.pool;
        let mut tasks = Vec::new();
        let mut uses_time = false;
        for (r, ((rx, slots), (rt, _))) in rule_rx.into_iter().zip(plans).enumerate() {
            let pubs = std::mem::take(&mut worker_pubs[r]);
            let mut runners: Vec<Runner> = Vec::with_capacity(pubs.len());
            let rule_chains = built.next().expect("a chain list per rule");
            for (out, chain) in pubs.into_iter().zip(rule_chains) {
                uses_time |= chain.uses_time();
                runners.push(Runner {
                    chain,
                    index,
                    out,
                    late: late_tx.clone(),
                    snapshots: snap_tx.clone(),
                    stats: stats[r].clone(),
                    sent: i64::MIN,
                });
                index += 1;
            }
            match rt {
                Routing::Single => {
                    let runner = runners.pop().expect("one runner");
                    tasks.push(pool.spawn(run_single(rx, slots, runner)));
                }
                Routing::Keyed(keys) => {
                    let mut worker_tx = Vec::new();
                    for runner in runners {
                        let (tx, wrx) = mpsc::channel::<WorkerMsg>(config.channel_capacity);
                        worker_tx.push(tx);
                        tasks.push(pool.spawn(run_worker(wrx, runner)));
                    }
                    tasks.push(pool.spawn(run_router(rx, slots, keys, worker_tx)));
                }
            }
        }
        let ingests = input_defs
            .into_iter()
            .zip(ingest_pubs)
            .map(|(def, publisher)| Ingest {
                stamp: Stamp::new(program, def, config.clock.clone()),
                publisher,
                batch: Vec::new(),
                batch_size: config.batch_size,
                ready: Vec::new(),
                wm: i64::MIN,
                sent: i64::MIN,
                told: i64::MIN,
            })
            .collect();
        Ok(Dataflow {
            ingests,
            outputs: outs,
            late: Some(Receiver::bounded(late_rx)),
            snapshots: Some(Receiver::unbounded(snap_rx)),
            chains,
            tasks,
            stats,
            uses_time,
        })
    }

    /// Operator snapshots, one per chain per checkpoint barrier.
    pub fn take_snapshots(&mut self) -> Option<Receiver<OperatorSnapshot>> {
        self.snapshots.take()
    }

    /// How many operator chains run (and report a snapshot at each barrier).
    pub fn chains(&self) -> usize {
        self.chains
    }

    /// Whether an operator acts on time as well as on events: without one, the flow's state
    /// changes only with input, and time passing without input changes nothing.
    pub fn uses_time(&self) -> bool {
        self.uses_time
    }

    /// The ingest handle of an input stream named at build time.
    pub fn take_ingest(&mut self, stream: &str) -> Option<Ingest> {
        let i = self
            .ingests
            .iter()
            .position(|g| g.stream().name.eq_ignore_ascii_case(stream))?;
        Some(self.ingests.swap_remove(i))
    }

    /// The results of output `stream`, once: `None` if it was taken or is not an output.
    pub fn take_output(&mut self, stream: &str) -> Option<OutputStream> {
        let i = self
            .outputs
            .iter()
            .position(|(n, _)| n.eq_ignore_ascii_case(stream))?;
        Some(self.outputs.swap_remove(i).1)
    }

    /// Late events of every rule; read it, or late events will eventually block their rules.
    pub fn take_late(&mut self) -> Option<Receiver<LateEvent>> {
        self.late.take()
    }

    /// Counters of each rule, in program order.
    pub fn stats(&self) -> &[Arc<RuleStats>] {
        &self.stats
    }

    /// Waits for every rule to finish (after all inputs ended).
    pub async fn ended(mut self) {
        // Unused ingests and late receivers must not keep the flow alive.
        for g in std::mem::take(&mut self.ingests) {
            g.end().await;
        }
        drop(self.late.take());
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
    }

    /// [`Dataflow::ended`] for a thread outside the pool.
    pub fn join(self) {
        block_on(self.ended())
    }
}
