//! How a rule's events are spread over workers: keyed rules hash their key to pick the worker
//! that holds the key's state.

use weir_core::hash::KeyHasher;
use weir_core::Row;
use weir_lang::expr::Expr;
use weir_lang::plan::{Body, Input, Program, Rule};

/// How a rule's events are spread over workers.
pub(super) enum Routing {
    /// One operator chain, run by the rule's own task (no router).
    Single,
    /// Key expressions per input; equal keys go to the same worker.
    Keyed(Vec<Vec<Expr>>),
}

impl Routing {
    /// Operator chains (partitions) a rule runs with `workers` per keyed rule.
    pub(super) fn chains(&self, workers: usize) -> usize {
        match self {
            Routing::Single => 1,
            Routing::Keyed(_) => workers,
        }
    }
}

pub(super) fn routing(rule: &Rule) -> Routing {
    let stateless_body = matches!(&rule.body, Body::Project(p) if p.changes.is_empty());
    match (&rule.input, &rule.body) {
        (Input::Stream(_), Body::Aggregate(a)) if !a.keys.is_empty() => {
            Routing::Keyed(vec![a.keys.clone()])
        }
        (Input::Stream(_), Body::Project(p))
            if !p.changes.is_empty() && !p.partition.is_empty() =>
        {
            Routing::Keyed(vec![p.partition.clone()])
        }
        (Input::Join(j), _) if stateless_body && !j.left_keys.is_empty() => {
            Routing::Keyed(vec![j.left_keys.clone(), j.right_keys.clone()])
        }
        (Input::Pattern(p), _) if stateless_body && !p.partition.is_empty() => {
            Routing::Keyed(vec![p.partition.clone()])
        }
        _ => Routing::Single,
    }
}

/// How many operator chains (state partitions) a program runs with `workers` workers per keyed
/// rule: what a checkpoint holds one snapshot for each of.
pub fn chain_count(program: &Program, workers: usize) -> usize {
    program
        .rules
        .iter()
        .map(|r| routing(r).chains(workers))
        .sum()
}

/// The worker that holds the state of `row`'s key: weir's own hash, so a checkpoint restores
/// each key's state on the worker that will see the key, whatever build restores it.
pub(super) fn route(keys: &[Expr], row: &Row, workers: usize) -> usize {
    let mut h = KeyHasher::default();
    for k in keys {
        h.value(&k.eval(row));
    }
    (h.finish() % workers as u64) as usize
}
