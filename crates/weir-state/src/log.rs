//! Append-only logs in one embedded fjall database per node.
//!
//! A log is a named sequence of payloads numbered from 0. Appends are written through to the OS
//! before they return ([`PersistMode::Buffer`]), so a killed process loses nothing it
//! acknowledged; `sync = true` adds an fdatasync per write for power-loss safety. Readers keep
//! their own position (in their rule's checkpoint) and wait for new entries with
//! [`StreamLog::grown_beyond`].

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
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
    /// Wakes readers waiting in [`StreamLog::grown_beyond`].
    grown: tokio::sync::Notify,
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

/// Longest log name, in bytes (the storage engine's keys end at 64 KiB).
pub const MAX_NAME: usize = 1024;
/// Longest marker key, in bytes.
pub const MAX_KEY: usize = 4096;

fn check_key(key: &str) -> Result<(), StoreError> {
    if key.len() > MAX_KEY {
        return Err(StoreError::Invalid(format!(
            "a marker key of {} bytes (at most {MAX_KEY})",
            key.len()
        )));
    }
    Ok(())
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
        if name.contains('\0') || name.is_empty() || name.len() > MAX_NAME {
            let shown: String = name.chars().take(80).collect();
            return Err(StoreError::Invalid(format!(
                "'{shown}' is not a log name (1 to {MAX_NAME} bytes, no NUL)"
            )));
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
                    grown: tokio::sync::Notify::new(),
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

    /// The value kept under `key`, if any.
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

    /// Keeps `value` under `key`.
    pub fn set_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        check_key(key)?;
        let mut b = self.db.batch().durability(Some(self.mode));
        b.insert(&self.meta, key, value);
        self.write(b, 64)
    }

    /// Forgets `key`.
    pub fn remove_meta(&self, key: &str) -> Result<(), StoreError> {
        self.remove_metas(&[key])
    }

    /// Removes several markers in one write.
    pub fn remove_metas(&self, keys: &[&str]) -> Result<(), StoreError> {
        let mut b = self.db.batch().durability(Some(self.mode));
        for k in keys {
            b.remove(&self.meta, *k);
        }
        self.write(b, 64)
    }

    /// The markers whose keys start with `prefix`, with their values.
    pub fn metas(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        for kv in self.meta.prefix(prefix) {
            let (k, v) = kv.into_inner()?;
            out.push((String::from_utf8_lossy(&k).into_owned(), v.to_vec()));
        }
        Ok(out)
    }

    /// Appends to several logs and sets markers, all or nothing: how a checkpoint's outputs
    /// are committed exactly once. Returns the first offset written in each log.
    pub fn commit(
        &self,
        appends: &[(&StreamLog, &[Bytes])],
        markers: &[(&str, &[u8])],
    ) -> Result<Vec<u64>, StoreError> {
        for (k, _) in markers {
            check_key(k)?;
        }
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
        for (k, v) in markers {
            batch.insert(&self.meta, *k, *v);
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
            log.shared.grown.notify_waiters();
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
    /// The log's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Appends payloads in order; returns the offset of the first.
    pub fn append(&self, payloads: &[Bytes]) -> Result<u64, StoreError> {
        Ok(self.store.commit(&[(self, payloads)], &[])?[0])
    }

    /// Where the numbers of `part` are kept: the whole stream's (`""`, a JetStream stream
    /// sequence) or one partition's (a Kafka partition's offsets).
    fn number_key(&self, part: &str) -> String {
        match part {
            "" => format!("seq:{}", self.name),
            p => format!("seq:{}/{p}", self.name),
        }
    }

    /// The number of the last message of `part` appended (see [`StreamLog::append_numbered`]).
    pub fn last_number(&self, part: &str) -> Result<Option<u64>, StoreError> {
        self.store.meta_u64(&self.number_key(part))
    }

    /// The last number of every part that has one.
    pub fn numbers(&self) -> Result<std::collections::BTreeMap<String, u64>, StoreError> {
        let mut out = std::collections::BTreeMap::new();
        if let Some(n) = self.last_number("")? {
            out.insert(String::new(), n);
        }
        let prefix = format!("seq:{}/", self.name);
        for g in self.store.meta.prefix(&prefix) {
            let (k, v) = g.into_inner()?;
            let part = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            if let Ok(bytes) = <[u8; 8]>::try_from(v.as_ref()) {
                out.insert(part, u64::from_be_bytes(bytes));
            }
        }
        Ok(out)
    }

    /// Appends a message its source numbers in increasing order within `part`, unless a
    /// message with that number or a later one is in already: the number is kept with the
    /// entry in one write.
    pub fn append_numbered(&self, payload: Bytes, part: &str, seq: u64) -> Result<(), StoreError> {
        if self.last_number(part)? >= Some(seq) {
            return Ok(());
        }
        let key = self.number_key(part);
        let marker = seq.to_be_bytes();
        self.store
            .commit(&[(self, &[payload])], &[(key.as_str(), &marker)])?;
        Ok(())
    }

    /// Makes an empty log continue from `offset` holding `payloads`, with `numbers` as the last
    /// numbered message of each part: how a log arrives from another node when its rule moves
    /// (offsets name results for good, so they continue where the other node left off).
    pub fn adopt(
        &self,
        offset: u64,
        payloads: &[Bytes],
        numbers: &std::collections::BTreeMap<String, u64>,
    ) -> Result<(), StoreError> {
        let mut r = self.shared.range.lock().unwrap_or_else(|e| e.into_inner());
        if r.0 != r.1 {
            return Err(StoreError::Invalid(format!(
                "log {} holds entries {}..{}; only an empty log takes another's",
                self.name, r.1, r.0
            )));
        }
        let mut batch = self.store.db.batch().durability(Some(self.store.mode));
        for (i, p) in payloads.iter().enumerate() {
            batch.insert(
                &self.store.logs,
                key(&self.name, offset + i as u64),
                p.as_ref(),
            );
        }
        let end = offset + payloads.len() as u64;
        let meta = &self.store.meta;
        batch.insert(
            meta,
            format!("end:{}", self.name),
            end.to_be_bytes().as_slice(),
        );
        for (part, _) in self.numbers()? {
            batch.remove(meta, self.number_key(&part));
        }
        for (part, n) in numbers {
            batch.insert(meta, self.number_key(part), n.to_be_bytes().as_slice());
        }
        let bytes: usize = payloads.iter().map(|p| p.len() + 32).sum();
        self.store.write(batch, bytes as u64 + 64)?;
        *r = (end, offset);
        drop(r);
        self.shared.grown.notify_waiters();
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

    /// Waits until the log holds an entry at `offset`, `timeout` passes or the log is nudged;
    /// true if it holds the entry. A task waits here without holding a thread.
    pub async fn grown_beyond(&self, offset: u64, timeout: Duration) -> bool {
        let notified = self.shared.grown.notified();
        let mut notified = std::pin::pin!(notified);
        // Registered before the check, so an append between the check and the wait wakes it.
        notified.as_mut().enable();
        if self.end() > offset {
            return true;
        }
        let _ = tokio::time::timeout(timeout, notified).await;
        self.end() > offset
    }

    /// Ends every [`StreamLog::grown_beyond`] now, entry or not (a reader has something to do).
    pub fn nudge(&self) {
        self.shared.grown.notify_waiters();
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

    #[tokio::test]
    async fn appends_read_back_in_order_and_survive_reopening() {
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
        assert!(log.grown_beyond(2, Duration::ZERO).await);
        assert!(!log.grown_beyond(3, Duration::from_millis(10)).await);
    }

    #[test]
    fn names_and_keys_too_long_for_the_storage_engine_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), false, 0).unwrap();
        let long = "x".repeat(70_000);
        assert!(matches!(store.log(&long), Err(StoreError::Invalid(_))));
        assert!(matches!(
            store.set_meta(&long, b"v"),
            Err(StoreError::Invalid(_))
        ));
        let log = store.log("ok").unwrap();
        let batch = [Bytes::from_static(b"e")];
        assert!(store.commit(&[(&log, &batch)], &[(&long, b"v")]).is_err());
        assert_eq!(log.end(), 0, "nothing of a refused commit is written");
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
                &[("epoch:r", &7u64.to_be_bytes())],
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
            log.append_numbered(b(&seq.to_string()), "", seq).unwrap();
        }
        let got: Vec<Bytes> = log.read(0, 10).unwrap().into_iter().map(|e| e.1).collect();
        assert_eq!(got, vec![b("1"), b("2"), b("3")]);
    }

    #[test]
    fn an_empty_log_adopts_another_nodes_entries_offsets_and_number() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), false, 0).unwrap();
        let log = store.log("in").unwrap();
        log.append_numbered(b("old"), "", 3).unwrap();
        log.append_numbered(b("p0"), "0", 5).unwrap();
        let carried = [("".to_owned(), 41), ("1".to_owned(), 9)].into();
        assert!(log.adopt(10, &[b("x")], &carried).is_err());
        log.truncate_before(log.end()).unwrap();
        log.adopt(7, &[b("a"), b("b")], &carried).unwrap();
        assert_eq!((log.first(), log.end()), (7, 9));
        assert_eq!(log.read(0, 10).unwrap(), vec![(7, b("a")), (8, b("b"))]);
        assert_eq!(log.numbers().unwrap(), carried, "partition 0's number went");
        log.append_numbered(b("41"), "", 41).unwrap();
        log.append_numbered(b("42"), "", 42).unwrap();
        assert_eq!(log.end(), 10);
        drop(log);
        let store2 = store.clone();
        drop(store);
        let again = store2.log("in").unwrap();
        assert_eq!((again.first(), again.end()), (7, 10));
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
