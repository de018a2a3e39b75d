//! Checkpoints: one file per checkpoint, `<dir>/<rule>/<epoch>.ckpt`.
//!
//! A file is `WEIRCKP1`, the CRC-32 and length of the body, then the body (JSON). It is written
//! to a temporary name, synced and renamed, so a crash leaves either the whole file or none; a
//! file that is damaged later fails its checksum, and recovery falls back to the one before,
//! saying why. The last [`FileCheckpoints::KEEP`] are kept.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{DiskGuard, StoreError};

const MAGIC: &[u8; 8] = b"WEIRCKP1";
const HEADER: usize = 8 + 4 + 8;

/// A consistent cut of one rule: what every operator held and where every source was when the
/// barrier of `epoch` passed, plus the outputs of that epoch that commit with it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The rule the checkpoint belongs to.
    pub rule: String,
    /// The checkpoint's number: the barrier it was taken at.
    pub epoch: u64,
    /// Wall-clock time the checkpoint was taken, epoch milliseconds.
    pub created_ms: i64,
    /// Partitions (operator chains) per keyed stage; state is partitioned by it.
    pub workers: usize,
    /// Operator snapshots, in the engine's runner order, as the operators wrote them.
    pub operators: Vec<Box<serde_json::value::RawValue>>,
    /// Next offset to read, per input log.
    pub positions: BTreeMap<String, u64>,
    /// The watermark each input stream had reached: a restored rule judges the events after
    /// the checkpoint late or not exactly as the uninterrupted rule would have.
    #[serde(default)]
    pub watermarks: BTreeMap<String, i64>,
    /// Outputs of this epoch per output stream, not yet visible when the checkpoint was taken
    /// (exactly-once rules publish them when the checkpoint is safe).
    #[serde(default)]
    pub staged: BTreeMap<String, Vec<String>>,
}

impl Checkpoint {
    /// The file form: header with checksum, then the body.
    pub fn encode(&self) -> Result<Vec<u8>, StoreError> {
        let body = serde_json::to_vec(self).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let mut out = Vec::with_capacity(HEADER + body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        out.extend_from_slice(&(body.len() as u64).to_le_bytes());
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Reads the file form; `Err` says what is wrong with it.
    pub fn decode(bytes: &[u8]) -> Result<Checkpoint, StoreError> {
        let bad = |m: String| Err(StoreError::Corrupt(m));
        if bytes.len() < HEADER || &bytes[..8] != MAGIC {
            return bad("not a weir checkpoint (bad header)".into());
        }
        let crc = u32::from_le_bytes(bytes[8..12].try_into().unwrap_or_default());
        let len = u64::from_le_bytes(bytes[12..20].try_into().unwrap_or_default()) as usize;
        let body = &bytes[HEADER..];
        if body.len() != len {
            return bad(format!(
                "truncated: {} of {len} body bytes present",
                body.len()
            ));
        }
        if crc32fast::hash(body) != crc {
            return bad("checksum mismatch".into());
        }
        serde_json::from_slice(body).map_err(|e| StoreError::Corrupt(format!("unreadable: {e}")))
    }
}

/// Where a checkpoint went and what it cost.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Saved {
    /// The epoch saved.
    pub epoch: u64,
    /// The checkpoint file's size.
    pub bytes: u64,
}

/// The newest usable checkpoint of a rule, and why newer ones were passed over.
#[derive(Debug)]
pub struct Recovered {
    /// The checkpoint.
    pub checkpoint: Checkpoint,
    /// Its file's size.
    pub bytes: u64,
    /// The newer checkpoints passed over, each with the reason.
    pub skipped: Vec<String>,
}

/// Where checkpoints are kept. Files on the node's disk today; the seam for object stores.
pub trait CheckpointStore: Send + Sync {
    /// Saves `c`; what it cost.
    fn save(&self, c: &Checkpoint) -> Result<Saved, StoreError>;
    /// The newest checkpoint that reads back intact, if any.
    fn latest(&self, rule: &str) -> Result<Option<Recovered>, StoreError>;
    /// Forgets every checkpoint of a rule.
    fn remove(&self, rule: &str) -> Result<(), StoreError>;
}

/// Checkpoints as files under one directory.
pub struct FileCheckpoints {
    dir: PathBuf,
    guard: DiskGuard,
}

impl FileCheckpoints {
    /// Checkpoints kept per rule: the newest, and fallbacks should it be damaged.
    pub const KEEP: usize = 3;

    /// Checkpoints in `dir`; one that would leave less than `min_free` bytes on the disk is
    /// refused (the previous one stays).
    pub fn new(dir: impl Into<PathBuf>, min_free: u64) -> FileCheckpoints {
        let dir = dir.into();
        FileCheckpoints {
            guard: DiskGuard::new(nearest_existing(&dir), min_free),
            dir,
        }
    }

    /// A rule's directory: its name must be one plain path component, so no name reaches
    /// outside the checkpoint directory (the node checks ids too; this is the last guard).
    fn rule_dir(&self, rule: &str) -> Result<PathBuf, StoreError> {
        let mut parts = std::path::Path::new(rule).components();
        match (parts.next(), parts.next()) {
            (Some(std::path::Component::Normal(_)), None) if !rule.contains('\\') => {
                Ok(self.dir.join(rule))
            }
            _ => Err(StoreError::Invalid(format!(
                "'{rule}' is not a plain name for a checkpoint directory"
            ))),
        }
    }

    /// Checkpoint files of a rule, newest first.
    fn files(&self, rule: &str) -> Result<Vec<(u64, PathBuf)>, StoreError> {
        let dir = self.rule_dir(rule)?;
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(StoreError::io(e, "listing checkpoints")),
        };
        let mut files: Vec<(u64, PathBuf)> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let epoch = name.strip_suffix(".ckpt")?.parse().ok()?;
                Some((epoch, e.path()))
            })
            .collect();
        files.sort_by_key(|f| std::cmp::Reverse(f.0));
        Ok(files)
    }
}

/// The directory itself or its nearest existing parent: where its disk can be asked about
/// before it exists.
fn nearest_existing(dir: &Path) -> PathBuf {
    dir.ancestors()
        .find(|d| d.exists())
        .unwrap_or(Path::new("/"))
        .to_path_buf()
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    let written = f.write_all(bytes).and_then(|_| f.sync_data());
    if let Err(e) = written {
        drop(f);
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

impl CheckpointStore for FileCheckpoints {
    fn save(&self, c: &Checkpoint) -> Result<Saved, StoreError> {
        let bytes = c.encode()?;
        self.guard.check(bytes.len() as u64)?;
        let dir = self.rule_dir(&c.rule)?;
        std::fs::create_dir_all(&dir).map_err(|e| StoreError::io(e, "checkpoint directory"))?;
        let path = dir.join(format!("{:020}.ckpt", c.epoch));
        write_atomically(&path, &bytes).map_err(|e| StoreError::io(e, "writing a checkpoint"))?;
        for (_, old) in self.files(&c.rule)?.into_iter().skip(Self::KEEP) {
            let _ = std::fs::remove_file(old);
        }
        Ok(Saved {
            epoch: c.epoch,
            bytes: bytes.len() as u64,
        })
    }

    fn latest(&self, rule: &str) -> Result<Option<Recovered>, StoreError> {
        let mut skipped = Vec::new();
        for (epoch, path) in self.files(rule)? {
            let read = std::fs::read(&path)
                .map_err(|e| StoreError::io(e, "reading a checkpoint"))
                .and_then(|b| Checkpoint::decode(&b).map(|c| (c, b.len() as u64)));
            match read {
                Ok((checkpoint, bytes)) if checkpoint.epoch == epoch => {
                    return Ok(Some(Recovered {
                        checkpoint,
                        bytes,
                        skipped,
                    }))
                }
                Ok(_) => skipped.push(format!("{}: epoch does not match its name", path.display())),
                Err(e) => skipped.push(format!("{}: {e}", path.display())),
            }
        }
        Ok(None)
    }

    fn remove(&self, rule: &str) -> Result<(), StoreError> {
        match std::fs::remove_dir_all(self.rule_dir(rule)?) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(StoreError::io(e, "removing checkpoints"))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cp(epoch: u64) -> Checkpoint {
        Checkpoint {
            rule: "r".into(),
            epoch,
            created_ms: 0,
            workers: 2,
            operators: vec![
                serde_json::value::to_raw_value(&serde_json::json!({"n": epoch})).unwrap(),
            ],
            positions: [("in".to_owned(), epoch * 10)].into(),
            watermarks: [("s".to_owned(), epoch as i64 * 100)].into(),
            staged: BTreeMap::new(),
        }
    }

    #[test]
    fn a_rule_name_never_reaches_outside_the_checkpoint_directory() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileCheckpoints::new(dir.path().join("checkpoints"), 0);
        std::fs::write(dir.path().join("precious"), b"x").unwrap();
        for bad in ["..", ".", "", "/tmp", "a/b", "../precious", "a\\b"] {
            assert!(store.remove(bad).is_err(), "{bad:?}");
            assert!(store.latest(bad).is_err(), "{bad:?}");
            let mut c = cp(1);
            c.rule = bad.into();
            assert!(store.save(&c).is_err(), "{bad:?}");
        }
        assert!(dir.path().join("precious").exists());
    }

    #[test]
    fn the_newest_intact_checkpoint_wins_and_old_ones_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileCheckpoints::new(dir.path(), 0);
        for e in 1..=5 {
            store.save(&cp(e)).unwrap();
        }
        assert_eq!(store.files("r").unwrap().len(), FileCheckpoints::KEEP);
        let r = store.latest("r").unwrap().unwrap();
        let text = |c: &Checkpoint| serde_json::to_string(c).unwrap();
        assert_eq!((text(&r.checkpoint), r.skipped.len()), (text(&cp(5)), 0));

        // Damage the newest: one flipped byte, then a torn write.
        let newest = store.files("r").unwrap()[0].1.clone();
        let mut bytes = std::fs::read(&newest).unwrap();
        let last = bytes.len() - 2;
        bytes[last] ^= 0xff;
        std::fs::write(&newest, &bytes).unwrap();
        let r = store.latest("r").unwrap().unwrap();
        assert_eq!(r.checkpoint.epoch, 4);
        assert!(r.skipped[0].contains("checksum"), "{:?}", r.skipped);
        std::fs::write(&newest, &bytes[..30]).unwrap();
        let r = store.latest("r").unwrap().unwrap();
        assert!(r.skipped[0].contains("truncated"), "{:?}", r.skipped);

        store.remove("r").unwrap();
        assert!(store.latest("r").unwrap().is_none());
    }
}
