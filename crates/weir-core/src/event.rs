//! Rows and events: what flows between operators.

use std::fmt;
use std::sync::Arc;

use crate::value::Value;

/// An ordered record of named fields. Field order is kept so that output looks like input;
/// lookups are linear, which beats hashing for the handful of fields sensor events carry.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Row {
    fields: Vec<(Arc<str>, Value)>,
}

impl Row {
    /// An empty row.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty row with room for `n` fields.
    pub fn with_capacity(n: usize) -> Self {
        Row {
            fields: Vec::with_capacity(n),
        }
    }

    /// The field called `name`.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.fields
            .iter()
            .find(|(k, _)| &**k == name)
            .map(|(_, v)| v)
    }

    /// The field called `name`, to change in place.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut Value> {
        self.fields
            .iter_mut()
            .find(|(k, _)| &**k == name)
            .map(|(_, v)| v)
    }

    /// Sets a field, replacing an existing one of the same name.
    pub fn set(&mut self, name: &str, value: Value) {
        self.put(name, value, || Arc::from(name));
    }

    /// [`Row::set`] for a name the caller holds shared: a new field shares it instead of
    /// copying it (projections set their output names on every row).
    pub fn set_shared(&mut self, name: &Arc<str>, value: Value) {
        self.put(name, value, || name.clone());
    }

    fn put(&mut self, name: &str, value: Value, owned: impl FnOnce() -> Arc<str>) {
        match self.fields.iter_mut().find(|(k, _)| &**k == name) {
            Some(slot) => slot.1 = value,
            None => self.fields.push((owned(), value)),
        }
    }

    /// Appends a field whose name is known not to be present yet (cheap: shares the name).
    pub fn push(&mut self, name: Arc<str>, value: Value) {
        self.fields.push((name, value));
    }

    /// Keeps only the fields `keep` says yes to; it may change their values on the way. Names
    /// come shared, so a caller may compare them by pointer.
    pub fn retain_mut(&mut self, mut keep: impl FnMut(&Arc<str>, &mut Value) -> bool) {
        self.fields.retain_mut(|(k, v)| keep(k, v));
    }

    /// The fields in order, with their names.
    pub fn iter(&self) -> impl Iterator<Item = &(Arc<str>, Value)> {
        self.fields.iter()
    }

    /// How many fields the row has.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether the row has no fields.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The row as a JSON object.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

impl FromIterator<(Arc<str>, Value)> for Row {
    fn from_iter<I: IntoIterator<Item = (Arc<str>, Value)>>(iter: I) -> Self {
        Row {
            fields: iter.into_iter().collect(),
        }
    }
}

impl fmt::Display for Row {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_json())
    }
}

/// One event: a row, its event time in epoch milliseconds, and the watermark of its stream just
/// before it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Event {
    /// Event time, epoch milliseconds (processing time for streams without a timestamp).
    pub ts: i64,
    /// The watermark its stream had reached before this event: state that this watermark has
    /// closed cannot take the event (it is late). Judging each event by the watermark of the
    /// events before it, rather than by whatever watermark a batch boundary happened to bring,
    /// makes lateness a function of the input alone. `i64::MIN` until ingest stamps it.
    #[serde(default = "no_watermark", skip_serializing_if = "is_no_watermark")]
    pub wm: i64,
    /// The event's fields.
    pub row: Row,
}

fn no_watermark() -> i64 {
    i64::MIN
}

fn is_no_watermark(wm: &i64) -> bool {
    *wm == i64::MIN
}

impl Event {
    /// An event at `ts` whose watermark ingest is still to stamp.
    pub fn new(ts: i64, row: Row) -> Self {
        Event {
            ts,
            wm: i64::MIN,
            row,
        }
    }
}
