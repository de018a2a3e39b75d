//! The operator engine. A [`plan::Program`](weir_lang::plan::Program) becomes a [`Dataflow`]:
//! per rule a chain of [`Operator`]s, keyed rules partitioned across worker threads, all joined
//! by bounded channels that carry small batches of events and watermarks.

pub mod dataflow;
pub mod operator;
pub mod ops;
pub mod state;

pub use dataflow::{
    chain_count, check_restore, check_update, rule_chain, run_batch, BatchResult, BuildError,
    Dataflow, Delivered, EngineConfig, Ingest, LateEvent, OperatorSnapshot, OutputStream,
    RuleStats, Stamp,
};
pub use operator::{Chain, Operator, Output};
pub use state::Snapshot;
