//! The operator engine. A [`plan::Program`](weir_lang::plan::Program) becomes a [`Dataflow`]:
//! per rule a chain of [`Operator`]s (keyed rules partitioned), each a task on the shared worker
//! [`Pool`], all joined by bounded channels that carry small batches of events and watermarks.

pub mod dataflow;
pub mod operator;
pub mod ops;
pub mod pool;
pub mod state;

pub use dataflow::{
    chain_count, check_restore, check_update, rule_chain, run_batch, BatchResult, BuildError,
    Dataflow, Delivered, EngineConfig, Ingest, LateEvent, OperatorSnapshot, OutputStream, Receiver,
    RuleStats, Stamp, Stamped,
};
pub use operator::{Chain, Operator, Output};
pub use pool::Pool;
pub use state::Snapshot;
