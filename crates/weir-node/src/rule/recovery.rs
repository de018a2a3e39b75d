//! Where a starting rule's state comes from: its newest intact checkpoint on this node, or its
//! changelog when that is newer (the rule ran elsewhere since). It is read before the rule is
//! wired and without any node-wide lock, so a changelog server that is slow to answer delays
//! this rule's start alone.

use std::collections::BTreeMap;
use std::sync::Arc;

use weir_connectors::nats::changelog::Changelog;
use weir_state::{Checkpoint, CheckpointStore, Recovered};

use crate::checkpoint::ChangelogInputs;
use crate::start_error::StartError;

/// What a rule starts from.
pub(super) struct Recovery {
    /// The rule's changelog, open, when it has one.
    pub changelog: Option<Changelog>,
    pub recovered: Option<Recovered>,
}

/// Opens the rule's changelog (if any) and finds the newest state to start from; `fresh`
/// reads none. `chains` and `workers` size state rebuilt from the changelog.
pub(super) async fn recover(
    id: &str,
    changelog: Option<&str>,
    checkpoints: &Arc<dyn CheckpointStore>,
    fresh: bool,
    chains: usize,
    workers: usize,
) -> Result<Recovery, StartError> {
    let changelog = match changelog {
        // Connecting is quick; the rule cannot start without its changelog anyway.
        Some(url) => Some(
            Changelog::open(url, id)
                .await
                .map_err(StartError::external)?,
        ),
        None => None,
    };
    let mut recovered = match fresh {
        true => None,
        false => {
            let (store, id) = (checkpoints.clone(), id.to_owned());
            tokio::task::spawn_blocking(move || store.latest(&id))
                .await
                .map_err(|e| StartError::internal(e.to_string()))?
                .map_err(|e| StartError::external(e.to_string()))?
        }
    };
    if let Some(log) = changelog.as_ref().filter(|_| !fresh) {
        // The changelog is newer than this node's checkpoint when the rule ran elsewhere
        // since (a group task's partition that came back).
        let remote = rebuild(log, id, chains, workers).await;
        // An unreadable changelog only stops a rule that has nothing else to start from.
        let remote = match remote {
            Ok(r) => r,
            Err(e) if recovered.is_some() => {
                tracing::warn!(rule = %id, error = %e, "changelog not read; starting from this node's checkpoint");
                None
            }
            Err(e) => return Err(StartError::external(e)),
        };
        let epoch = |r: &Option<Recovered>| r.as_ref().map(|r| r.checkpoint.epoch);
        if epoch(&remote) > epoch(&recovered) {
            recovered = remote;
        }
    }
    Ok(Recovery {
        changelog,
        recovered,
    })
}

/// How a checkpoint names a position in a broker rather than in a node's log: it means the same
/// on every node, so it comes back from a changelog.
pub const BROKER_POSITION: &str = "broker:";

/// A rule's state read back from its changelog, with the broker positions written with it
/// (log offsets are node-local and stay behind): `None` if the changelog holds no state for it.
async fn rebuild(
    log: &Changelog,
    id: &str,
    chains: usize,
    workers: usize,
) -> Result<Option<Recovered>, String> {
    let mut operators = Vec::with_capacity(chains);
    let (mut epoch, mut bytes) = (0, 0);
    for chain in 0..chains {
        let Some((e, state)) = log.get(chain).await? else {
            return Ok(None);
        };
        epoch = epoch.max(e);
        bytes += state.len() as u64;
        operators.push(
            serde_json::from_slice(&state)
                .map_err(|e| format!("changelog partition {chain} is not readable: {e}"))?,
        );
    }
    let inputs = match log.get_positions().await? {
        Some((e, p)) if e >= epoch => {
            let mut all: ChangelogInputs = serde_json::from_slice(&p)
                .map_err(|e| format!("changelog positions are not readable: {e}"))?;
            all.positions.retain(|k, _| k.starts_with(BROKER_POSITION));
            all
        }
        Some((e, _)) => {
            return Err(format!(
                "the changelog's positions (epoch {e}) are older than its state (epoch {epoch}): a write was cut short"
            ))
        }
        None => ChangelogInputs::default(),
    };
    Ok(Some(Recovered {
        checkpoint: Checkpoint {
            rule: id.to_owned(),
            epoch,
            created_ms: 0,
            workers,
            operators,
            positions: inputs.positions,
            watermarks: inputs.watermarks,
            staged: BTreeMap::new(),
        },
        bytes,
        skipped: vec![format!(
            "no checkpoint on this node: state rebuilt from the changelog (epoch {epoch})"
        )],
    }))
}
