//! Durable state for weir nodes.
//!
//! Two kinds of data survive a crash here:
//! - [`checkpoint`]: consistent snapshots of a rule (every operator's state, every source's
//!   position, the outputs waiting for the checkpoint to commit), one file per checkpoint with a
//!   checksum, so a torn or damaged file is detected and the previous one used;
//! - [`log`]: append-only logs in an embedded LSM store (fjall). Embedded topics that durable
//!   rules read or write are kept in them, and so is what a durable rule's broker sources
//!   receive, so a rule can always re-read its input from the position of its last checkpoint.

pub mod checkpoint;
pub mod log;

use std::path::PathBuf;

pub use checkpoint::{Checkpoint, CheckpointStore, FileCheckpoints, Recovered, Saved};
pub use log::{Store, StreamLog};

/// Errors of the durable store.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The disk has no room left.
    #[error("the disk is full: {0}")]
    Full(String),
    /// Reading or writing failed.
    #[error("storage error: {0}")]
    Io(String),
    /// Stored bytes fail their checksum or do not decode.
    #[error("damaged data: {0}")]
    Corrupt(String),
    /// A request the store refuses (a bad key, say).
    #[error("{0}")]
    Invalid(String),
}

impl StoreError {
    fn io(e: std::io::Error, what: &str) -> StoreError {
        if e.kind() == std::io::ErrorKind::StorageFull || e.raw_os_error() == Some(27) {
            // ENOSPC, or EFBIG when a file-size limit stands in for a full disk.
            StoreError::Full(format!("{what}: {e}"))
        } else {
            StoreError::Io(format!("{what}: {e}"))
        }
    }
}

impl StoreError {
    /// The error every later write gets once this one has stopped the store.
    fn after(&self) -> StoreError {
        let why = "the store takes no more writes until the node restarts";
        match self {
            StoreError::Full(m) => StoreError::Full(format!("{m}; {why} with room on its disk")),
            other => StoreError::Io(format!("{other}; {why}")),
        }
    }
}

impl From<fjall::Error> for StoreError {
    fn from(e: fjall::Error) -> Self {
        match e {
            fjall::Error::Io(io) => StoreError::io(io, "log store"),
            other => StoreError::Io(other.to_string()),
        }
    }
}

/// Keeps the store's writes off a nearly full disk. A write that would leave less than the
/// reserve free is refused with [`StoreError::Full`] before it starts, so the disk never
/// actually fills under the store: a write that fails half-way can leave a log the embedded
/// store cannot recover. Writes resume by themselves once there is room.
#[derive(Debug, Clone)]
pub struct DiskGuard {
    path: PathBuf,
    reserve: u64,
}

impl DiskGuard {
    /// Guards the file system holding `path`; a reserve of 0 turns the guard off.
    pub fn new(path: impl Into<PathBuf>, reserve: u64) -> DiskGuard {
        DiskGuard {
            path: path.into(),
            reserve,
        }
    }

    /// Whether `bytes` more can be written.
    pub fn check(&self, bytes: u64) -> Result<(), StoreError> {
        if self.reserve == 0 {
            return Ok(());
        }
        let s = rustix::fs::statvfs(&self.path)
            .map_err(|e| StoreError::Io(format!("{}: {e}", self.path.display())))?;
        let free = s.f_bavail.saturating_mul(s.f_frsize);
        if free < bytes.saturating_add(self.reserve) {
            return Err(StoreError::Full(format!(
                "{free} bytes free on the disk of {}, and {} more would go below the {} bytes kept free (min_free_bytes)",
                self.path.display(),
                bytes,
                self.reserve
            )));
        }
        Ok(())
    }
}
