//! The state seam. Operators keep per-key state in [`KeyedState`] and event-time timers in
//! [`Timers`]; both snapshot to and restore from JSON, which the durable-state work will put on
//! disk and ship between nodes.

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use weir_core::Value;

/// A grouping or partition key: the values of the key expressions.
pub type Key = Vec<Value>;

/// Errors saving or restoring state.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The state was saved by a build that wrote it in another form.
    #[error("{0}")]
    Incompatible(String),
    /// The rule's stateful part was changed since the state was saved.
    #[error("{0}")]
    Changed(String),
    /// The state could not be written (an error, never an empty state).
    #[error("the state could not be saved: {0}")]
    Unsaved(String),
}

impl weir_core::Classify for StateError {
    fn blame(&self) -> weir_core::Blame {
        match self {
            StateError::Changed(_) => weir_core::Blame::User,
            _ => weir_core::Blame::Internal,
        }
    }
}

/// State per key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(bound(
    serialize = "K: Serialize + Eq + Hash, V: Serialize",
    deserialize = "K: DeserializeOwned + Eq + Hash, V: DeserializeOwned"
))]
pub struct KeyedState<K: Eq + Hash = Key, V = ()> {
    #[serde(with = "pairs")]
    map: HashMap<K, V>,
    /// Event time each key was last used, kept only when keys expire (a state TTL).
    #[serde(default, with = "pairs", skip_serializing_if = "HashMap::is_empty")]
    touched: HashMap<K, i64>,
    /// Watermark of the last sweep for expired keys.
    #[serde(default)]
    swept: i64,
}

impl<K: Eq + Hash, V> Default for KeyedState<K, V> {
    fn default() -> Self {
        KeyedState {
            map: HashMap::new(),
            touched: HashMap::new(),
            swept: i64::MIN,
        }
    }
}

impl<K: Eq + Hash + Clone, V> KeyedState<K, V> {
    /// The state of `key`.
    pub fn get(&self, key: &K) -> Option<&V> {
        self.map.get(key)
    }

    /// The state of a key, created with `init` on first use.
    pub fn entry(&mut self, key: &K, init: impl FnOnce() -> V) -> &mut V {
        if !self.map.contains_key(key) {
            self.map.insert(key.clone(), init());
        }
        self.map.get_mut(key).expect("inserted above")
    }

    /// The state of `key`, to change.
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.map.get_mut(key)
    }

    /// Drops the state of `key`.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        self.map.remove(key)
    }

    /// How many keys have state.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no key has state.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The keys with state.
    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.map.keys()
    }

    /// Every key's state, to change.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&K, &mut V)> {
        self.map.iter_mut()
    }

    /// Keeps only the keys `f` says yes to.
    pub fn retain(&mut self, f: impl FnMut(&K, &mut V) -> bool) {
        self.map.retain(f)
    }

    /// Records that `key` is used by an event at time `ts` judged at watermark `wm` (only
    /// needed when keys expire). A key whose last use lies more than `ttl` before that is
    /// forgotten first, as a sweep would have forgotten it: whether state expired depends on
    /// the events alone, not on when sweeps happened to run.
    pub fn touch(&mut self, key: &K, ts: i64, wm: i64, ttl: i64) {
        let now = ts.max(wm);
        match self.touched.get_mut(key) {
            Some(t) if *t < now.saturating_sub(ttl) => {
                *t = ts;
                self.map.remove(key);
            }
            Some(t) => *t = (*t).max(ts),
            None => {
                self.touched.insert(key.clone(), ts);
            }
        }
    }

    /// Drops keys not used within `ttl` of the watermark `wm`; returns how many. Only a
    /// collection of garbage ([`KeyedState::touch`] decides expiry), so it runs at most every
    /// quarter of the TTL and costs in proportion to the keys, not the events.
    pub fn expire(&mut self, wm: i64, ttl: i64) -> usize {
        if wm == i64::MAX || wm.saturating_sub(self.swept) < ttl / 4 {
            return 0;
        }
        self.swept = wm;
        let before = self.map.len();
        let horizon = wm.saturating_sub(ttl);
        let touched = &mut self.touched;
        self.map
            .retain(|k, _| touched.get(k).is_some_and(|t| *t >= horizon));
        touched.retain(|_, t| *t >= horizon);
        before - self.map.len()
    }
}

/// Event-time timers: which keys need attention at which time.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Timers<K: Ord = Key> {
    due: BTreeSet<(i64, K)>,
}

impl<K: Ord + Clone> Timers<K> {
    /// Asks for `key` to be called at event time `at`.
    pub fn register(&mut self, at: i64, key: K) {
        self.due.insert((at, key));
    }

    /// Removes and returns every timer due at or before `now`, earliest first.
    pub fn pop_due(&mut self, now: i64) -> Vec<(i64, K)> {
        let mut out = Vec::new();
        while let Some(first) = self.due.first() {
            if first.0 > now {
                break;
            }
            out.push(self.due.pop_first().expect("checked non-empty"));
        }
        out
    }

    /// How many timers are waiting.
    pub fn len(&self) -> usize {
        self.due.len()
    }

    /// Whether no timer is waiting.
    pub fn is_empty(&self) -> bool {
        self.due.is_empty()
    }
}

/// An operator's state in its saved form: JSON text, kept as text from the operator to the
/// checkpoint file and back. Without a tree of values in between, a million keys are saved and
/// restored several times faster (checkpoints, recoveries and moves).
pub type Snapshot = Box<serde_json::value::RawValue>;

/// The snapshot of an operator without state.
pub fn empty_snapshot() -> Snapshot {
    serde_json::value::RawValue::from_string("null".to_owned()).expect("null is JSON")
}

/// Snapshot helpers shared by all operators. A state that cannot be written is an error, never
/// an empty state.
pub fn to_snapshot<T: Serialize>(t: &T) -> Result<Snapshot, StateError> {
    serde_json::value::to_raw_value(t).map_err(|e| StateError::Unsaved(e.to_string()))
}

/// Reads a state written by [`to_snapshot`]; a state in another form is an error.
pub fn from_snapshot<'a, T: serde::Deserialize<'a>>(
    s: &'a serde_json::value::RawValue,
) -> Result<T, StateError> {
    serde_json::from_str(s.get()).map_err(|e| StateError::Incompatible(e.to_string()))
}

/// The `snapshot` and `restore` hooks of an operator whose whole state is one serialisable field.
macro_rules! state_hooks {
    ($field:ident) => {
        fn snapshot(&self) -> Result<$crate::state::Snapshot, $crate::state::StateError> {
            $crate::state::to_snapshot(&self.$field)
        }

        fn restore(
            &mut self,
            s: &serde_json::value::RawValue,
        ) -> Result<(), $crate::state::StateError> {
            self.$field = $crate::state::from_snapshot(s)?;
            Ok(())
        }
    };
}
pub(crate) use state_hooks;

/// Serialises a map as a list of pairs, since JSON object keys must be strings.
pub mod pairs {
    use serde::de::DeserializeOwned;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// Writes the map as `[[key, value], ...]`.
    pub fn serialize<'a, M, K, V, S>(m: &'a M, s: S) -> Result<S::Ok, S::Error>
    where
        &'a M: IntoIterator<Item = (&'a K, &'a V)>,
        K: Serialize + 'a,
        V: Serialize + 'a,
        S: Serializer,
    {
        s.collect_seq(m)
    }

    /// Reads `[[key, value], ...]` back into a map.
    pub fn deserialize<'de, M, K, V, D>(d: D) -> Result<M, D::Error>
    where
        M: FromIterator<(K, V)>,
        K: DeserializeOwned,
        V: DeserializeOwned,
        D: Deserializer<'de>,
    {
        Ok(Vec::<(K, V)>::deserialize(d)?.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_state_round_trips_through_a_snapshot() {
        let mut s: KeyedState<Key, i64> = KeyedState::default();
        *s.entry(&vec![Value::Int(1)], || 0) += 5;
        *s.entry(&vec![Value::str("a")], || 0) += 2;
        let snap = to_snapshot(&s).unwrap();
        let back: KeyedState<Key, i64> = from_snapshot(&snap).unwrap();
        assert_eq!(back.get(&vec![Value::Int(1)]), Some(&5));
        assert_eq!(back.len(), 2);
    }

    #[test]
    fn keys_not_used_within_the_ttl_expire() {
        let mut s: KeyedState<i64, i64> = KeyedState::default();
        for (k, ts) in [(1, 100), (2, 900), (3, 1000)] {
            s.touch(&k, ts, ts - 1, 500);
            *s.entry(&k, || 0) += 1;
        }
        assert_eq!(s.expire(1000, 500), 1);
        assert!(s.get(&1).is_none() && s.get(&2).is_some());
        // The next sweep waits for a quarter of the TTL.
        assert_eq!(s.expire(1100, 500), 0);
        let back: KeyedState<i64, i64> = from_snapshot(&to_snapshot(&s).unwrap()).unwrap();
        assert_eq!(back.len(), 2);
    }

    #[test]
    fn a_key_idle_for_longer_than_the_ttl_starts_afresh_without_a_sweep() {
        let mut s: KeyedState<i64, i64> = KeyedState::default();
        s.touch(&1, 100, 99, 500);
        *s.entry(&1, || 0) += 1;
        // No sweep ran, but the next use is 600 ms later: the key's state is gone.
        s.touch(&1, 700, 699, 500);
        assert!(s.get(&1).is_none());
        *s.entry(&1, || 0) += 1;
        // Within the TTL it stays.
        s.touch(&1, 1100, 1099, 500);
        assert_eq!(s.get(&1), Some(&1));
    }

    #[test]
    fn timers_fire_in_order() {
        let mut t: Timers<i64> = Timers::default();
        t.register(30, 1);
        t.register(10, 2);
        t.register(20, 3);
        assert_eq!(t.pop_due(20), vec![(10, 2), (20, 3)]);
        assert_eq!(t.len(), 1);
    }
}
