//! The logical plan: what a rule file means once parsed and checked. The engine builds its
//! dataflow from these types only; it never sees SQL.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::diag::Pos;
use crate::expr::Expr;
use crate::types::DataType;

/// A whole rule file: its streams and its rules.
#[derive(Debug, Clone, Default)]
pub struct Program {
    pub streams: Vec<StreamDef>,
    pub rules: Vec<Rule>,
}

impl Program {
    pub fn stream(&self, name: &str) -> Option<&StreamDef> {
        self.streams
            .iter()
            .find(|s| s.name.eq_ignore_ascii_case(name))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeMode {
    /// Time is read from the event's timestamp field.
    Event,
    /// Time is the clock's time when the event is read.
    Processing,
}

/// A declared (or implied) stream.
#[derive(Debug, Clone)]
pub struct StreamDef {
    pub name: String,
    /// `None` for schemaless streams.
    pub columns: Option<Vec<Column>>,
    pub timestamp: Option<Arc<str>>,
    pub time: TimeMode,
    /// Bounded out-of-orderness: how far behind the newest event time the watermark stays.
    pub watermark_ms: i64,
    /// How long after a window closes late events still update it.
    pub allowed_lateness_ms: i64,
    /// Partition key for per-key state (`changed`, `lag`, `delta`) when a rule gives none.
    pub key: Option<Arc<str>>,
    /// `order = 'arrival'`: change functions, patterns and sliding windows take this stream's
    /// events as they arrive instead of holding them until the watermark (no added latency;
    /// an event out of order is processed out of order, as Kafka Streams and eKuiper do).
    pub arrival_order: bool,
    /// `received_at`: the field that gets the time (epoch ns) the node read each event.
    pub received_at: Option<Arc<str>>,
    /// `sent_at`: the field that gets the time (epoch ns) a rule's result is handed to its sinks.
    pub sent_at: Option<Arc<str>>,
    /// Computed columns (`rt AS TO_TIMESTAMP_LTZ(ts, 3)`), set on each event as it comes in,
    /// in order, after the declared columns are converted.
    pub computed: Vec<(Arc<str>, Expr)>,
    /// Connector and format options, kept as written for the connectors.
    pub options: BTreeMap<String, String>,
    /// Where each option is written, for messages about it.
    pub option_pos: BTreeMap<String, Pos>,
    /// False for streams that exist only because a rule writes to them.
    pub declared: bool,
    pub pos: Pos,
}

impl StreamDef {
    pub fn implied(name: &str) -> StreamDef {
        StreamDef {
            name: name.to_owned(),
            columns: None,
            timestamp: None,
            time: TimeMode::Event,
            watermark_ms: 0,
            allowed_lateness_ms: 0,
            key: None,
            arrival_order: false,
            received_at: None,
            sent_at: None,
            computed: Vec::new(),
            options: BTreeMap::new(),
            option_pos: BTreeMap::new(),
            declared: false,
            pos: Pos::default(),
        }
    }

    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns
            .as_ref()?
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(name))
    }
}

#[derive(Debug, Clone)]
pub struct Column {
    pub name: Arc<str>,
    pub ty: DataType,
    /// `NOT NULL`: a record without a value for it is a dead letter.
    pub not_null: bool,
}

/// One `INSERT INTO sink SELECT ...`.
#[derive(Debug, Clone)]
pub struct Rule {
    /// A readable name: `rule N (line L) -> sink`.
    pub name: String,
    pub sink: String,
    pub input: Input,
    /// `WHERE`, applied to each input row (after change functions are computed).
    pub filter: Option<Expr>,
    pub body: Body,
    pub pos: Pos,
}

impl Rule {
    /// Every stream this rule reads.
    pub fn inputs(&self) -> Vec<&str> {
        match &self.input {
            Input::Stream(s) => vec![s.as_str()],
            Input::Join(j) => vec![j.left.as_str(), j.right.as_str()],
            Input::Pattern(p) => vec![p.stream.as_str()],
        }
    }

    /// The fields of its input rows this rule can read; `None` when it may read them all
    /// (`SELECT *`). Lets the engine drop the others as events come in (projection pushdown);
    /// joined names (`alias.field`) count for both forms, so the set may hold too much, never
    /// too little.
    pub fn fields_read(&self) -> Option<BTreeSet<Arc<str>>> {
        let mut exprs: Vec<&Expr> = self.filter.iter().collect();
        match &self.input {
            Input::Stream(_) | Input::Join(_) => match &self.body {
                Body::Project(p) => {
                    for it in &p.items {
                        match it {
                            SelectItem::Star => return None,
                            SelectItem::Expr(_, e) => exprs.push(e),
                        }
                    }
                    exprs.extend(&p.partition);
                    for c in &p.changes {
                        exprs.push(&c.arg);
                        exprs.extend(&c.default);
                    }
                }
                Body::Aggregate(a) => {
                    exprs.extend(&a.keys);
                    exprs.extend(a.items.iter().map(|(_, e)| e));
                    exprs.extend(&a.having);
                    for c in &a.aggs {
                        exprs.extend(&c.args);
                        exprs.extend(&c.filter);
                    }
                }
            },
            // The body reads the measures, not the input.
            Input::Pattern(p) => {
                exprs.extend(&p.partition);
                exprs.extend(p.defines.iter().flatten());
                exprs.extend(p.measures.iter().map(|(_, e)| e));
            }
        }
        if let Input::Join(j) = &self.input {
            exprs.extend(&j.left_keys);
            exprs.extend(&j.right_keys);
            exprs.extend(&j.residual);
        }
        let mut names = BTreeSet::new();
        for e in exprs {
            e.clone().walk_mut(&mut |x| {
                let name = match x {
                    Expr::Field(n) => n,
                    Expr::Pattern(r) => &r.field,
                    _ => return,
                };
                if let Some((_, field)) = name.split_once('.') {
                    names.insert(Arc::from(field));
                }
                names.insert(name.clone());
            });
        }
        Some(names)
    }
}

#[derive(Debug, Clone)]
pub enum Input {
    Stream(String),
    Join(Box<JoinSpec>),
    Pattern(Box<PatternSpec>),
}

/// An interval join: rows of `left` and `right` with equal keys (none: every pair) and
/// `lower_ms <= right.ts - left.ts <= upper_ms`. Joined rows name fields `alias.field`; a semi
/// join emits each left row once, as it is, when some right row matches it.
#[derive(Debug, Clone)]
pub struct JoinSpec {
    pub left: String,
    pub right: String,
    pub left_alias: Arc<str>,
    pub right_alias: Arc<str>,
    pub left_keys: Vec<Expr>,
    pub right_keys: Vec<Expr>,
    pub lower_ms: i64,
    pub upper_ms: i64,
    /// Further `ON` conditions, over the joined row.
    pub residual: Option<Expr>,
    /// `LEFT SEMI JOIN`.
    pub semi: bool,
    /// Which time a joined row has: the later of the pair's, or the side a window over the
    /// join names (`TUMBLE(o.ts, ...)`).
    pub time: JoinTime,
}

/// The event time of a joined row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JoinTime {
    #[default]
    Latest,
    Left,
    Right,
}

/// A `MATCH_RECOGNIZE` clause. Its output rows hold the partition columns and the measures.
#[derive(Debug, Clone)]
pub struct PatternSpec {
    pub stream: String,
    pub partition: Vec<Expr>,
    pub partition_names: Vec<Arc<str>>,
    pub symbols: Vec<Arc<str>>,
    /// `DEFINE` per symbol; `None` matches any row.
    pub defines: Vec<Option<Expr>>,
    pub pattern: Pattern,
    pub measures: Vec<(Arc<str>, Expr)>,
    pub skip: Skip,
    pub within_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Pattern {
    Symbol(usize),
    Concat(Vec<Pattern>),
    Alt(Vec<Pattern>),
    /// `inner{min,max}`: greedy takes as many repetitions as it can, reluctant (`+?`, `*?`,
    /// `??`, `{n,m}?`) as few.
    Repeat {
        inner: Box<Pattern>,
        min: u32,
        max: Option<u32>,
        greedy: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    PastLastRow,
    ToNextRow,
    ToFirst(usize),
    ToLast(usize),
}

#[derive(Debug, Clone)]
pub enum Body {
    Project(Projection),
    Aggregate(Aggregate),
}

/// A per-row projection, possibly with per-key change functions.
#[derive(Debug, Clone)]
pub struct Projection {
    pub items: Vec<SelectItem>,
    /// Change functions, computed per partition into slots `0..changes.len()`.
    pub changes: Vec<ChangeCall>,
    pub partition: Vec<Expr>,
}

#[derive(Debug, Clone)]
pub enum SelectItem {
    /// `*`: every field of the input row.
    Star,
    Expr(Arc<str>, Expr),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// `changed(x)`: true when x differs from its previous value for the key (true the first time).
    Changed,
    /// `lag(x, n)`: the value n rows earlier for the key.
    Lag(usize),
    /// `delta(x)`: x minus its previous value for the key.
    Delta,
}

#[derive(Debug, Clone)]
pub struct ChangeCall {
    pub kind: ChangeKind,
    pub arg: Expr,
    pub default: Option<Expr>,
}

/// A grouped, windowed aggregation. Select items and `HAVING` read slots laid out as
/// `[window_start, window_end, keys..., aggregates...]`.
#[derive(Debug, Clone)]
pub struct Aggregate {
    pub keys: Vec<Expr>,
    pub window: Window,
    pub aggs: Vec<AggCall>,
    pub items: Vec<(Arc<str>, Expr)>,
    pub having: Option<Expr>,
}

impl Aggregate {
    pub const WINDOW_START: usize = 0;
    pub const WINDOW_END: usize = 1;
    pub fn key_slot(i: usize) -> usize {
        2 + i
    }
    pub fn agg_slot(&self, i: usize) -> usize {
        2 + self.keys.len() + i
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// `TUMBLE(ts, size)`.
    Tumble { size: i64 },
    /// `HOP(ts, slide, size)`.
    Hop { slide: i64, size: i64 },
    /// `SESSION(ts, gap)`.
    Session { gap: i64 },
    /// `SLIDING(ts, size)`: one output per event, over the events of the last `size` ms.
    Sliding { size: i64 },
    /// `COUNT_WINDOW(n [, slide])`: every `slide` events, over the last `n` events.
    Count { size: u64, slide: u64 },
    /// No window: a running aggregate, one updated row per event.
    Unbounded,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AggFunc {
    Count,
    CountStar,
    Sum,
    Avg,
    Min,
    Max,
    StddevSamp,
    StddevPop,
    VarSamp,
    VarPop,
    /// Continuous percentile, fraction in [0, 1].
    Percentile(f64),
    FirstValue,
    LastValue,
    RegrSlope,
    RegrIntercept,
    Collect,
}

impl AggFunc {
    /// Looks up an aggregate by name; percentile functions take their fraction separately.
    pub fn lookup(name: &str) -> Option<AggFunc> {
        Some(match name.to_ascii_lowercase().as_str() {
            "count" => AggFunc::Count,
            "sum" => AggFunc::Sum,
            "avg" | "mean" => AggFunc::Avg,
            "min" => AggFunc::Min,
            "max" => AggFunc::Max,
            "stddev" | "stddev_samp" | "std" | "stddevs" => AggFunc::StddevSamp,
            "stddev_pop" => AggFunc::StddevPop,
            "variance" | "var_samp" | "var" | "vars" => AggFunc::VarSamp,
            "var_pop" => AggFunc::VarPop,
            "median" => AggFunc::Percentile(0.5),
            "percentile" | "percentile_cont" | "approx_percentile" => AggFunc::Percentile(0.5),
            "first_value" | "first" => AggFunc::FirstValue,
            "last_value" | "last" => AggFunc::LastValue,
            "regr_slope" => AggFunc::RegrSlope,
            "regr_intercept" => AggFunc::RegrIntercept,
            "collect" | "array_agg" => AggFunc::Collect,
            _ => return None,
        })
    }

    /// How many value arguments the aggregate reads.
    pub fn arity(&self) -> usize {
        match self {
            AggFunc::CountStar => 0,
            AggFunc::RegrSlope | AggFunc::RegrIntercept => 2,
            _ => 1,
        }
    }
}

#[derive(Debug, Clone)]
pub struct AggCall {
    pub func: AggFunc,
    pub args: Vec<Expr>,
    pub distinct: bool,
    /// `FILTER (WHERE ...)`.
    pub filter: Option<Expr>,
}
