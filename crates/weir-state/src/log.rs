//! Append-only logs in one embedded fjall database per node.
//!
//! A log is a named sequence of payloads numbered from 0. Appends are written through to the OS
//! before they return ([`PersistMode::Buffer`]), so a killed process loses nothing it
//! acknowledged; `sync = true` adds an fdatasync per write for power-loss safety. Readers keep
//! their own position (in their rule's checkpoint) and wait for new entries with
//! [`StreamLog::wait_beyond`].

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use bytes::Bytes;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use crate::{DiskGuard, StoreError};

/// The node's durable store: logs and a small table of markers.
pub struct Store {
    db: Database,
    logs: Keyspace,
    meta: Keyspace,
    mode: PersistMode,
    open: Mutex<HashMap<String, Arc<Shared>>>,
    guard: DiskGuard,
    /// The first write that failed. fjall takes no writes after one (it is "poisoned") until
    /// reopened, so later errors are reported with this cause.
    failed: Mutex<Option<StoreError>>,
}

/// What every handle of one log shares: the next offset, and a signal for waiting readers.
struct Shared {
    /// Next offset to write, and the first still kept.
    range: Mutex<(u64, u64)>,
    grown: Condvar,
}

/// A handle on one log. Cheap to clone.
#[derive(Clone)]
pub struct StreamLog {
    store: Arc<Store>,
    name: Arc<str>,
    shared: Arc<Shared>,
}

fn key(name: &str, offset: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(name.len() + 9);
    k.extend_from_slice(name.as_bytes());
    k.push(0);
    k.extend_from_slice(&offset.to_be_bytes());
    k
}

fn prefix(name: &str) -> Vec<u8> {
    let mut k = name.as_bytes().to_vec();
    k.push(0);
    k
}

fn offset_of(k: &[u8]) -> u64 {
    let tail: [u8; 8] = k[k.len().saturating_sub(8)..]
        .try_into()
        .unwrap_or_default();
    u64::from_be_bytes(tail)
}

impl Store {
    /// Opens (or creates) the store in `dir`; writes stop while less than `min_free` bytes
    /// would be left on its disk.
    pub fn open(dir: &Path, sync: bool, min_free: u64) -> Result<Arc<Store>, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::io(e, "creating the log store"))?;
        // fjall asserts on some damaged journals instead of returning an error.
        let db = std::panic::catch_unwind(|| Database::builder(dir).open()).map_err(|_| {
            StoreError::Corrupt(format!(
                "the log store in {} cannot be recovered; move it aside to start without its logs",
                dir.display()
            ))
        })??;
        let logs = db.keyspace("logs", KeyspaceCreateOptions::default)?;
        let meta = db.keyspace("meta", KeyspaceCreateOptions::default)?;
        Ok(Arc::new(Store {
            db,
            logs,
            meta,
            mode: if sync {
                PersistMode::SyncData
            } else {
                PersistMode::Buffer
            },
            open: Mutex::new(HashMap::new()),
            guard: DiskGuard::new(dir, min_free),
            failed: Mutex::new(None),
        }))
    }

    /// The log called `name` (created empty on first use). Every handle of a name shares one
    /// writer position, so appends from several places stay in one order.
    pub fn log(self: &Arc<Self>, name: &str) -> Result<StreamLog, StoreError> {
        if name.contains('\0') || name.is_empty() {
            return Err(StoreError::Invalid(format!("'{name}' is not a log name")));
        }
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let shared = match open.get(name) {
            Some(s) => s.clone(),
            None => {
                let p = prefix(name);
                let end = match self.logs.prefix(&p).next_back() {
                    Some(g) => offset_of(&g.into_inner()?.0) + 1,
                    None => self.meta_u64(&format!("end:{name}"))?.unwrap_or(0),
                };
                let first = match self.logs.prefix(&p).next() {
                    Some(g) => offset_of(&g.into_inner()?.0),
                    None => end,
                };
                let s = Arc::new(Shared {
                    range: Mutex::new((end, first)),
                    grown: Condvar::new(),
                });
                open.insert(name.to_owned(), s.clone());
                s
            }
        };
        Ok(StreamLog {
            store: self.clone(),
            name: Arc::from(name),
            shared,
        })
    }

    pub fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.meta.get(key)?.map(|v| v.to_vec()))
    }

    /// A marker holding a number (positions, epochs, sequences).
    pub fn meta_u64(&self, key: &str) -> Result<Option<u64>, StoreError> {
        Ok(self
            .meta(key)?
            .and_then(|v| v.try_into().ok())
            .map(u64::from_be_bytes))
    }

    pub fn set_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let mut b = self.db.batch().durability(Some(self.mode));
        b.insert(&self.meta, key, value);
        self.write(b, 64)
    }

    pub fn remove_meta(&self, key: &str) -> Result<(), StoreError> {
        let mut b = self.db.batch().durability(Some(self.mode));
        b.remove(&self.meta, key);
        self.write(b, 64)
    }

    /// Appends to several logs and sets one marker, all or nothing: how a checkpoint's outputs
    /// are committed exactly once. Returns the first offset written in each log.
    pub fn commit(
        &self,
        appends: &[(&StreamLog, &[Bytes])],
        marker: Option<(&str, &[u8])>,
    ) -> Result<Vec<u64>, StoreError> {
        // Lock every log in name order, so two commits never wait on each other in a circle.
        let mut order: Vec<usize> = (0..appends.len()).collect();
        order.sort_by(|a, b| appends[*a].0.name.cmp(&appends[*b].0.name));
        if order
            .windows(2)
            .any(|w| appends[w[0]].0.name == appends[w[1]].0.name)
        {
            return Err(StoreError::Invalid("a commit names a log twice".into()));
        }
        let mut guards: Vec<Option<std::sync::MutexGuard<'_, (u64, u64)>>> =
            (0..appends.len()).map(|_| None).collect();
        for i in order {
            guards[i] = Some(
                appends[i]
                    .0
                    .shared
                    .range
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()),
            );
        }
        let mut batch = self.db.batch().durability(Some(self.mode));
        let mut firsts = Vec::with_capacity(appends.len());
        let mut ends = Vec::with_capacity(appends.len());
        for ((log, payloads), g) in appends.iter().zip(&guards) {
            let first = g.as_ref().map_or(0, |g| g.0);
            for (i, p) in payloads.iter().enumerate() {
                batch.insert(&self.logs, key(&log.name, first + i as u64), p.as_ref());
            }
            let end = first + payloads.len() as u64;
            batch.insert(
                &self.meta,
                format!("end:{}", log.name),
                end.to_be_bytes().as_slice(),
            );
            firsts.push(first);
            ends.push(end);
        }
        if let Some((k, v)) = marker {
            batch.insert(&self.meta, k, v);
        }
        let bytes: usize = appends
            .iter()
            .flat_map(|(_, p)| p.iter().map(|p| p.len() + 32))
            .sum();
        self.write(batch, bytes as u64 + 64)?;
        for (g, end) in guards.iter_mut().zip(ends) {
            if let Some(g) = g {
                g.0 = end;
            }
        }
        drop(guards);
        for (log, _) in appends {
            log.shared.grown.notify_all();
        }
        Ok(firsts)
    }

    /// Commits a batch; after a failed write, says what failed first.
    fn write(&self, batch: fjall::OwnedWriteBatch, bytes: u64) -> Result<(), StoreError> {
        let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(first) = &*failed {
            return Err(first.after());
        }
        self.guard.check(bytes)?;
        batch.commit().map_err(|e| {
            let e = StoreError::from(e);
            *failed = Some(e.clone());
            e
        })
    }

    /// Bytes the store takes on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.db.disk_space().unwrap_or(0)
    }
}

impl StreamLog {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Appends payloads in order; returns the offset of the first.
    pub fn append(&self, payloads: &[Bytes]) -> Result<u64, StoreError> {
        Ok(self.store.commit(&[(self, payloads)], None)?[0])
    }

    /// The number of the last numbered message appended (see [`StreamLog::append_numbered`]).
    pub fn last_number(&self) -> Result<Option<u64>, StoreError> {
        self.store.meta_u64(&format!("seq:{}", self.name))
    }

    /// Appends a message its source numbers in increasing order, unless a message with that
    /// number or a later one is in already: the number is kept with the entry in one write.
    pub fn append_numbered(&self, payload: Bytes, seq: u64) -> Result<(), StoreError> {
        if self.last_number()? >= Some(seq) {
            return Ok(());
        }
        let key = format!("seq:{}", self.name);
        let marker = seq.to_be_bytes();
        self.store
            .commit(&[(self, &[payload])], Some((key.as_str(), &marker)))?;
        Ok(())
    }

    /// Up to `max` entries from `from` on.
    pub fn read(&self, from: u64, max: usize) -> Result<Vec<(u64, Bytes)>, StoreError> {
        let end = key(&self.name, u64::MAX);
        let mut out = Vec::new();
        for g in self.store.logs.range(key(&self.name, from)..end).take(max) {
            let (k, v) = g.into_inner()?;
            out.push((offset_of(&k), Bytes::copy_from_slice(&v)));
        }
        Ok(out)
    }

    /// The offset the next append gets.
    pub fn end(&self) -> u64 {
        self.shared
            .range
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
    }

    /// The first offset still kept.
    pub fn first(&self) -> u64 {
        self.shared
            .range
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .1
    }

    /// Waits until the log holds an entry at `offset` or `timeout` passes; true if it does.
    pub fn wait_beyond(&self, offset: u64, timeout: Duration) -> bool {
        let g = self.shared.range.lock().unwrap_or_else(|e| e.into_inner());
        let (g, _) = self
            .shared
            .grown
            .wait_timeout_while(g, timeout, |r| r.0 <= offset)
            .unwrap_or_else(|e| e.into_inner());
        g.0 > offset
    }

    /// Drops every entry before `offset` (what no reader will need again).
    pub fn truncate_before(&self, offset: u64) -> Result<(), StoreError> {
        let first = self.first();
        if offset <= first {
            return Ok(());
        }
        let mut batch = self.store.db.batch().durability(Some(self.store.mode));
        for g in self
            .store
            .logs
            .range(key(&self.name, first)..key(&self.name, offset))
        {
            batch.remove(&self.store.logs, g.into_inner()?.0);
        }
        self.store.write(batch, 0)?;
        let mut r = self.shared.range.lock().unwrap_or_else(|e| e.into_inner());
        r.1 = r.1.max(offset.min(r.0));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn appends_read_back_in_order_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), false, 0).unwrap();
            let log = store.log("t").unwrap();
            assert_eq!(log.append(&[b("a"), b("b")]).unwrap(), 0);
            assert_eq!(log.append(&[b("c")]).unwrap(), 2);
            let other = store.log("t2").unwrap();
            other.append(&[b("x")]).unwrap();
            let got: Vec<_> = log.read(1, 10).unwrap();
            assert_eq!(got, vec![(1, b("b")), (2, b("c"))]);
            log.truncate_before(2).unwrap();
            assert_eq!(log.first(), 2);
        }
        let store = Store::open(dir.path(), false, 0).unwrap();
        let log = store.log("t").unwrap();
        assert_eq!((log.first(), log.end()), (2, 3));
        assert_eq!(log.read(0, 10).unwrap(), vec![(2, b("c"))]);
        assert!(log.wait_beyond(2, Duration::ZERO));
        assert!(!log.wait_beyond(3, Duration::from_millis(10)));
    }

    #[test]
    fn a_commit_is_all_or_nothing_and_sets_its_marker() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), false, 0).unwrap();
        let (a, c) = (store.log("a").unwrap(), store.log("c").unwrap());
        a.append(&[b("0")]).unwrap();
        let firsts = store
            .commit(
                &[(&a, &[b("1"), b("2")]), (&c, &[b("z")])],
                Some(("epoch:r", &7u64.to_be_bytes())),
            )
            .unwrap();
        assert_eq!(firsts, vec![1, 0]);
        assert_eq!((a.end(), c.end()), (3, 1));
        assert_eq!(
            store.meta("epoch:r").unwrap(),
            Some(7u64.to_be_bytes().to_vec())
        );
    }

    #[test]
    fn numbered_messages_are_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), false, 0).unwrap();
        let log = store.log("in").unwrap();
        for seq in [1, 2, 2, 1, 3] {
            log.append_numbered(b(&seq.to_string()), seq).unwrap();
        }
        let got: Vec<Bytes> = log.read(0, 10).unwrap().into_iter().map(|e| e.1).collect();
        assert_eq!(got, vec![b("1"), b("2"), b("3")]);
    }

    #[test]
    fn an_emptied_log_keeps_its_end() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), false, 0).unwrap();
            let log = store.log("t").unwrap();
            log.append(&[b("a"), b("b")]).unwrap();
            log.truncate_before(2).unwrap();
        }
        let store = Store::open(dir.path(), false, 0).unwrap();
        let log = store.log("t").unwrap();
        assert_eq!((log.first(), log.end()), (2, 2));
    }
}
