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
    /// The streams, declared or implied by a rule.
    pub streams: Vec<StreamDef>,
    /// The rules, in file order.
    pub rules: Vec<Rule>,
}

impl Program {
    /// The stream called `name` (in any case).
    pub fn stream(&self, name: &str) -> Option<&StreamDef> {
        self.streams
            .iter()
            .find(|s| s.name.eq_ignore_ascii_case(name))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// Where a stream's event time comes from.
pub enum TimeMode {
    /// Time is read from the event's timestamp field.
    Event,
    /// Time is the clock's time when the event is read.
    Processing,
}

/// A declared (or implied) stream.
#[derive(Debug, Clone)]
pub struct StreamDef {
    /// The stream's name.
    pub name: String,
    /// `None` for schemaless streams.
    pub columns: Option<Vec<Column>>,
    /// The field that holds the event time, when time is event time.
    pub timestamp: Option<Arc<str>>,
    /// Event or processing time.
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
    /// Where it is declared.
    pub pos: Pos,
}

impl StreamDef {
    /// A stream a rule writes without declaring it: schemaless, with no options.
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

    /// The declared column `name` (in any case).
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns
            .as_ref()?
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(name))
    }
}

#[derive(Debug, Clone)]
/// A declared column.
pub struct Column {
    /// Its name.
    pub name: Arc<str>,
    /// Its type; values that do not fit are dead letters.
    pub ty: DataType,
    /// `NOT NULL`: a record without a value for it is a dead letter.
    pub not_null: bool,
}

/// One `INSERT INTO sink SELECT ...`.
#[derive(Debug, Clone)]
pub struct Rule {
    /// A readable name: `rule N (line L) -> sink`.
    pub name: String,
    /// The stream the results go to.
    pub sink: String,
    /// What it reads.
    pub input: Input,
    /// `WHERE`, applied to each input row (after change functions are computed).
    pub filter: Option<Expr>,
    /// What it computes.
    pub body: Body,
    /// Where it is written.
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
/// What a rule reads.
pub enum Input {
    /// One stream.
    Stream(String),
    /// An interval join of two streams.
    Join(Box<JoinSpec>),
    /// A `MATCH_RECOGNIZE` over one stream.
    Pattern(Box<PatternSpec>),
}

/// An interval join: rows of `left` and `right` with equal keys (none: every pair) and
/// `lower_ms <= right.ts - left.ts <= upper_ms`. Joined rows name fields `alias.field`; a semi
/// join emits each left row once, as it is, when some right row matches it.
#[derive(Debug, Clone)]
pub struct JoinSpec {
    /// The left stream.
    pub left: String,
    /// The right stream.
    pub right: String,
    /// The left side's name in the joined row.
    pub left_alias: Arc<str>,
    /// The right side's name in the joined row.
    pub right_alias: Arc<str>,
    /// The left side's key expressions.
    pub left_keys: Vec<Expr>,
    /// The right side's key expressions, pairwise equal to the left's.
    pub right_keys: Vec<Expr>,
    /// The least `right.ts - left.ts` that joins (ms).
    pub lower_ms: i64,
    /// The most `right.ts - left.ts` that joins (ms).
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
    /// The later of the two rows' times.
    Latest,
    /// The left row's time.
    Left,
    /// The right row's time.
    Right,
}

/// A `MATCH_RECOGNIZE` clause. Its output rows hold the partition columns and the measures.
#[derive(Debug, Clone)]
pub struct PatternSpec {
    /// The stream matched.
    pub stream: String,
    /// `PARTITION BY` expressions.
    pub partition: Vec<Expr>,
    /// Their names in the output rows.
    pub partition_names: Vec<Arc<str>>,
    /// The symbols of `PATTERN`, in order of first use.
    pub symbols: Vec<Arc<str>>,
    /// `DEFINE` per symbol; `None` matches any row.
    pub defines: Vec<Option<Expr>>,
    /// The pattern, over symbol indices.
    pub pattern: Pattern,
    /// `MEASURES`: output name and expression.
    pub measures: Vec<(Arc<str>, Expr)>,
    /// `AFTER MATCH SKIP`.
    pub skip: Skip,
    /// `WITHIN`: the longest a match may last (ms).
    pub within_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
/// A row pattern.
pub enum Pattern {
    /// One row of the symbol with this index.
    Symbol(usize),
    /// One pattern after another.
    Concat(Vec<Pattern>),
    /// One of several patterns (`|`).
    Alt(Vec<Pattern>),
    /// `inner{min,max}`: greedy takes as many repetitions as it can, reluctant (`+?`, `*?`,
    /// `??`, `{n,m}?`) as few.
    Repeat {
        /// The pattern repeated.
        inner: Box<Pattern>,
        /// The fewest repetitions.
        min: u32,
        /// The most, `None` for no limit.
        max: Option<u32>,
        /// Whether it takes as many as it can.
        greedy: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// Where matching resumes after a match.
pub enum Skip {
    /// After the match's last row.
    PastLastRow,
    /// At the row after the match's first.
    ToNextRow,
    /// At the first row of this symbol in the match.
    ToFirst(usize),
    /// At the last row of this symbol in the match.
    ToLast(usize),
}

#[derive(Debug, Clone)]
/// What a rule computes from its input rows.
pub enum Body {
    /// A row per input row.
    Project(Projection),
    /// A row per group and window.
    Aggregate(Aggregate),
}

/// A per-row projection, possibly with per-key change functions.
#[derive(Debug, Clone)]
pub struct Projection {
    /// The select list.
    pub items: Vec<SelectItem>,
    /// Change functions, computed per partition into slots `0..changes.len()`.
    pub changes: Vec<ChangeCall>,
    /// `PARTITION BY` of the change functions (the stream's key when none).
    pub partition: Vec<Expr>,
}

#[derive(Debug, Clone)]
/// One item of a select list.
pub enum SelectItem {
    /// `*`: every field of the input row.
    Star,
    /// An output field and its expression.
    Expr(Arc<str>, Expr),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// Which change function.
pub enum ChangeKind {
    /// `changed(x)`: true when x differs from its previous value for the key (true the first time).
    Changed,
    /// `lag(x, n)`: the value n rows earlier for the key.
    Lag(usize),
    /// `delta(x)`: x minus its previous value for the key.
    Delta,
}

#[derive(Debug, Clone)]
/// One change function of a projection.
pub struct ChangeCall {
    /// Which function.
    pub kind: ChangeKind,
    /// Its argument.
    pub arg: Expr,
    /// Its value when there is no previous row for the key.
    pub default: Option<Expr>,
}

/// A grouped, windowed aggregation. Select items and `HAVING` read slots laid out as
/// `[window_start, window_end, keys..., aggregates...]`.
#[derive(Debug, Clone)]
pub struct Aggregate {
    /// `GROUP BY` keys besides the window.
    pub keys: Vec<Expr>,
    /// The window.
    pub window: Window,
    /// The aggregates computed per group.
    pub aggs: Vec<AggCall>,
    /// The select list, over the slots.
    pub items: Vec<(Arc<str>, Expr)>,
    /// `HAVING`, over the slots.
    pub having: Option<Expr>,
}

impl Aggregate {
    /// The slot of the window's start.
    pub const WINDOW_START: usize = 0;
    /// The slot of the window's end.
    pub const WINDOW_END: usize = 1;
    /// The slot of grouping key `i`.
    pub fn key_slot(i: usize) -> usize {
        2 + i
    }
    /// The slot of aggregate `i`.
    pub fn agg_slot(&self, i: usize) -> usize {
        2 + self.keys.len() + i
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// A window of an aggregation.
pub enum Window {
    /// `TUMBLE(ts, size)`.
    /// Fixed, non-overlapping windows of `size` ms.
    Tumble {
        /// ms
        size: i64,
    },
    /// `HOP(ts, slide, size)`.
    /// Windows of `size` ms starting every `slide` ms.
    Hop {
        /// ms between window starts
        slide: i64,
        /// ms
        size: i64,
    },
    /// `SESSION(ts, gap)`.
    /// Windows of activity, closed by `gap` ms without events.
    Session {
        /// ms without events that closes a session
        gap: i64,
    },
    /// `SLIDING(ts, size)`: one output per event, over the events of the last `size` ms.
    /// One window per event, over the `size` ms before it.
    Sliding {
        /// ms
        size: i64,
    },
    /// `COUNT_WINDOW(n [, slide])`: every `slide` events, over the last `n` events.
    /// Windows over the last `size` events, every `slide` events.
    Count {
        /// events per window
        size: u64,
        /// events between windows
        slide: u64,
    },
    /// No window: a running aggregate, one updated row per event.
    Unbounded,
}

#[derive(Debug, Clone, Copy, PartialEq)]
/// An aggregate function.
pub enum AggFunc {
    /// `count(x)`: non-null values.
    Count,
    /// `count(*)`: rows.
    CountStar,
    /// `sum`
    Sum,
    /// `avg`
    Avg,
    /// `min`
    Min,
    /// `max`
    Max,
    /// `stddev_samp`
    StddevSamp,
    /// `stddev_pop`
    StddevPop,
    /// `var_samp`
    VarSamp,
    /// `var_pop`
    VarPop,
    /// Continuous percentile, fraction in [0, 1].
    Percentile(f64),
    /// `first_value`: the earliest by event time.
    FirstValue,
    /// `last_value`: the latest by event time.
    LastValue,
    /// `regr_slope(y, x)`
    RegrSlope,
    /// `regr_intercept(y, x)`
    RegrIntercept,
    /// `collect`: every value, as an array.
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
/// One aggregate of an aggregation.
pub struct AggCall {
    /// Which function.
    pub func: AggFunc,
    /// Its arguments.
    pub args: Vec<Expr>,
    /// `DISTINCT`: each value once.
    pub distinct: bool,
    /// `FILTER (WHERE ...)`.
    pub filter: Option<Expr>,
}
