//! The binder: checks names, types, windows, joins and patterns of parsed statements and builds
//! the logical plan. It never stops at the first problem: every error is collected, and a bad
//! expression binds to null so the rest of the rule is still checked.
//!
//! One `Binder` walks a file; its methods live by what they bind: `streams` (`CREATE
//! STREAM`), `rules` (`INSERT INTO ... SELECT`), `exprs`, `windows` (and aggregates),
//! `joins` and `patterns` (`MATCH_RECOGNIZE`); `clauses` names the clauses refused. This
//! file holds the entry points, the binder's state and the helpers they share.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use sqlparser::ast::{
    self, BinaryOperator, CastKind, CreateTable, CreateTableOptions, DateTimeField, FunctionArg,
    FunctionArgExpr, FunctionArguments, GroupByExpr, Insert, JoinConstraint, JoinOperator,
    MatchRecognizePattern, MatchRecognizeSymbol, RepetitionQuantifier, SetExpr, SqlOption,
    Statement, TableFactor, TableObject, UnaryOperator,
};
use sqlparser::tokenizer::Span;
use weir_core::Value;

mod clauses;
mod exprs;
mod joins;
mod patterns;
mod rules;
mod streams;
mod windows;

use crate::diag::{closest, Diagnostic, Diagnostics, Pos};
use crate::expr::{BinOp, Expr, Nav, PathSeg, PatternAgg, PatternRef};
use crate::functions::{Func, FUNCTIONS};
use crate::parse::{parse, ParsedStatement, WindowTvf};
use crate::plan::*;
use crate::types::DataType;

/// Stream options every connector takes — time, keys and the payload's format — with what each
/// does. A connector's own options are declared in its spec (weir-connectors), which checks
/// that every option of a stream is one of these or one of its connector's.
pub const STREAM_OPTIONS: &[(&str, &str)] = &[
    (
        "connector",
        "where the stream's events come from and go to (default: `embedded`)",
    ),
    (
        "format",
        "the payload's format: `json` (objects or arrays of objects), `csv` or `debs2012`",
    ),
    (
        "delimiter",
        "CSV: the field separator, one character or `\\t` (default `,`)",
    ),
    (
        "header",
        "CSV: the column names, separated by the delimiter (default: the first record's)",
    ),
    (
        "timestamp",
        "the column of event time; the stream then uses event time",
    ),
    (
        "watermark",
        "how late events may arrive out of order, e.g. `2 seconds` (default 0)",
    ),
    (
        "allowed_lateness",
        "how long after the watermark a window still takes late events",
    ),
    (
        "time",
        "`event` or `processing` (default: `event` when a timestamp is named)",
    ),
    (
        "order",
        "`event` (hold events until the watermark, the default) or `arrival`",
    ),
    (
        "key",
        "the column that keys events: it partitions work and picks a sink's partition",
    ),
    (
        "received_at",
        "a column filled with the time the node received the event",
    ),
    (
        "sent_at",
        "a column of the time the sender sent the event, for end-to-end latency",
    ),
    (
        "event_id",
        "a column of unique event ids: an event whose id was seen is dropped",
    ),
];

const WINDOW_FUNCS: &[&str] = &["tumble", "hop", "session", "sliding", "count_window"];

/// Parses and binds a rule file; every problem is reported at once.
pub fn compile(source: &str) -> Result<Program, Diagnostics> {
    compile_with(source, &[])
}

/// Like [`compile`], with streams already declared elsewhere (a node's catalog) in scope.
pub fn compile_with(source: &str, known: &[StreamDef]) -> Result<Program, Diagnostics> {
    compile_checked(source, known, |_, _| Vec::new())
}

/// Like [`compile_with`], with the streams the text declares also checked by `streams` (given
/// the program and the index of the first stream the text declares): the connector settings,
/// which the language does not know. Its problems come with the language's, all at once.
pub fn compile_checked(
    source: &str,
    known: &[StreamDef],
    streams: impl Fn(&Program, usize) -> Vec<Diagnostic>,
) -> Result<Program, Diagnostics> {
    let (statements, mut diags) = parse(source);
    let mut b = Binder {
        program: Program {
            streams: known.to_vec(),
            rules: Vec::new(),
        },
        known: known.len(),
        diags: Vec::new(),
    };
    for s in &statements {
        if let Statement::CreateTable(ct) = &s.statement {
            b.create_stream(ct, s.pos);
        }
    }
    for s in &statements {
        if let Statement::Insert(ins) = &s.statement {
            b.implied_sink(ins);
        } else if !matches!(s.statement, Statement::CreateTable(_)) {
            b.diags.push(
                Diagnostic::new(s.pos, "only CREATE STREAM, CREATE TABLE and INSERT INTO ... SELECT belong in a rule file")
                    .hint("write the query as INSERT INTO <output stream> SELECT ..."),
            );
        }
    }
    let inserts = statements.iter().filter_map(|s| match &s.statement {
        Statement::Insert(ins) => Some((ins, s)),
        _ => None,
    });
    for (n, (ins, s)) in inserts.enumerate() {
        b.rule(ins, s, n + 1);
    }
    b.check_cycles();
    diags.append(&mut b.diags);
    diags.extend(streams(&b.program, known.len()));
    diags.sort_by_key(|d| d.pos);
    if diags.is_empty() {
        Ok(b.program)
    } else {
        Err(Diagnostics(diags))
    }
}

struct Binder {
    program: Program,
    /// How many streams at the front of `program.streams` came from outside the source text.
    known: usize,
    diags: Vec<Diagnostic>,
}

/// What the rows a rule's expressions see look like.
#[derive(Clone)]
enum Shape {
    Single {
        stream: StreamDef,
        alias: Option<String>,
    },
    Joined {
        left: (StreamDef, String),
        right: (StreamDef, String),
    },
    Pattern {
        stream: StreamDef,
        alias: Option<String>,
        symbols: Vec<Arc<str>>,
        /// The symbol whose `DEFINE` is being bound.
        defining: Option<usize>,
    },
    /// Rows with known field names (the output of `MATCH_RECOGNIZE`).
    Rows(Vec<Arc<str>>),
}

/// Per-expression binding state: what may appear and where collected calls go.
struct Ctx {
    shape: Shape,
    /// Display texts of `GROUP BY` keys, for grouped queries.
    group_keys: Option<Vec<String>>,
    aggs: Vec<AggCall>,
    allow_aggs: bool,
    in_agg: bool,
    changes: Option<Vec<ChangeCall>>,
    change_partition: Option<(Vec<ast::Expr>, Pos)>,
    /// The side of a join whose time a window over the join names.
    window_time: Option<JoinTime>,
    /// `FILTER (WHERE ...)` on the window of `GROUP BY` (eKuiper's filter of what enters it).
    window_filter: Option<Expr>,
    /// The `WINDOW name AS (...)` definitions of the rule.
    named_windows: Vec<ast::NamedWindowDefinition>,
}

impl Ctx {
    fn new(shape: Shape) -> Ctx {
        Ctx {
            shape,
            group_keys: None,
            aggs: Vec::new(),
            allow_aggs: false,
            in_agg: false,
            changes: None,
            change_partition: None,
            window_time: None,
            window_filter: None,
            named_windows: Vec::new(),
        }
    }
}

fn span_of(e: &ast::Expr) -> Pos {
    use sqlparser::ast::Spanned;
    Pos::from(e.span())
}

fn lit_null() -> Expr {
    Expr::Lit(Value::Null)
}

impl Binder {
    fn err(&mut self, pos: impl Into<Pos>, msg: impl Into<String>, hint: impl Into<String>) {
        self.diags.push(Diagnostic::new(pos, msg).hint(hint));
    }

    /// Reports clauses weir does not implement, each by name.
    fn refuse(&mut self, refused: Vec<clauses::Refused>) {
        for r in refused {
            self.err(
                r.pos,
                format!("{} is not supported in rules", r.clause),
                r.hint,
            );
        }
    }

    fn lookup_stream(&self, name: &str) -> Option<StreamDef> {
        self.program.stream(name).cloned()
    }

    /// A rule may not, through other rules, read its own output.
    fn check_cycles(&mut self) {
        let mut edges: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for r in &self.program.rules {
            for i in r.inputs() {
                edges
                    .entry(i.to_ascii_lowercase())
                    .or_default()
                    .push(r.sink.to_ascii_lowercase());
            }
        }
        for r in &self.program.rules {
            let start = r.sink.to_ascii_lowercase();
            let mut stack = vec![start.clone()];
            let mut seen = std::collections::BTreeSet::new();
            while let Some(s) = stack.pop() {
                if !seen.insert(s.clone()) {
                    continue;
                }
                for next in edges.get(&s).into_iter().flatten() {
                    if r.inputs().iter().any(|i| i.eq_ignore_ascii_case(next)) {
                        let (pos, sink) = (r.pos, r.sink.clone());
                        self.err(
                            pos,
                            format!("rules form a loop: {sink} feeds back into this rule"),
                            "break the loop; a rule cannot read its own output",
                        );
                        return;
                    }
                    stack.push(next.clone());
                }
            }
        }
    }
}

/// Flink's `window_time`: the time of a window's result, its end less 1 ms.
fn window_time() -> Expr {
    Expr::Binary(
        BinOp::Sub,
        Box::new(Expr::Slot(Aggregate::WINDOW_END)),
        Box::new(Expr::Lit(Value::Int(1))),
    )
}

/// The most windows a hopping window puts one event in: each costs an accumulator per key.
const MAX_PANES: i64 = 1000;

/// The most events a count window keeps per key.
const MAX_COUNT_WINDOW: u64 = 100_000;

/// The longest window (100 years): window bounds then stay far from the ends of `i64`.
const MAX_WINDOW_MS: i64 = 3_155_760_000_000;

/// How far back `PREV` may reach: every partition keeps that many rows before its match.
const MAX_PREV: usize = 1000;

/// Aggregate slots are numbered from this mark while binding and shifted past the keys after.
const AGG_MARK: usize = 1 << 20;

fn shift_agg_slots(e: &mut Expr, shift: usize) {
    e.walk_mut(&mut |x| {
        if let Expr::Slot(i) = x {
            if *i >= AGG_MARK {
                *i = *i - AGG_MARK + shift;
            }
        }
    });
}

fn visit_idents(e: &ast::Expr, f: &mut dyn FnMut(&[ast::Ident])) {
    match e {
        ast::Expr::Identifier(i) => f(std::slice::from_ref(i)),
        ast::Expr::CompoundIdentifier(ids) => f(ids),
        ast::Expr::Nested(x)
        | ast::Expr::UnaryOp { expr: x, .. }
        | ast::Expr::Cast { expr: x, .. } => visit_idents(x, f),
        ast::Expr::BinaryOp { left, right, .. } => {
            visit_idents(left, f);
            visit_idents(right, f);
        }
        ast::Expr::Function(func) => {
            if let FunctionArguments::List(l) = &func.args {
                for a in &l.args {
                    if let FunctionArg::Unnamed(FunctionArgExpr::Expr(x)) = a {
                        visit_idents(x, f);
                    }
                }
            }
        }
        _ => {}
    }
}

fn split_and<'a>(e: &'a ast::Expr, out: &mut Vec<&'a ast::Expr>) {
    match e {
        ast::Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            split_and(left, out);
            split_and(right, out);
        }
        ast::Expr::Nested(x)
            if matches!(
                x.as_ref(),
                ast::Expr::BinaryOp {
                    op: BinaryOperator::And,
                    ..
                }
            ) =>
        {
            split_and(x, out)
        }
        other => out.push(other),
    }
}

fn strip_qualifier<'a, 'b>(names: &'a [&'b str], quals: &[Option<&str>]) -> &'a [&'b str] {
    if names.len() > 1
        && quals
            .iter()
            .flatten()
            .any(|q| q.eq_ignore_ascii_case(names[0]))
    {
        &names[1..]
    } else {
        names
    }
}

fn push_path(base: Expr, mut path: Vec<PathSeg>) -> Expr {
    if path.is_empty() {
        return base;
    }
    match base {
        Expr::Path(b, mut p) => {
            p.append(&mut path);
            Expr::Path(b, p)
        }
        Expr::Pattern(mut r) => {
            r.path.append(&mut path);
            Expr::Pattern(r)
        }
        other => Expr::Path(Box::new(other), path),
    }
}

fn function_args(f: &ast::Function) -> Vec<&ast::Expr> {
    match &f.args {
        FunctionArguments::List(l) => l
            .args
            .iter()
            .filter_map(|a| match a {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(e))
                | FunctionArg::Named {
                    arg: FunctionArgExpr::Expr(e),
                    ..
                } => Some(e),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn function_has_star(f: &ast::Function) -> bool {
    matches!(&f.args, FunctionArguments::List(l) if l.args.iter().any(|a| matches!(a, FunctionArg::Unnamed(FunctionArgExpr::Wildcard | FunctionArgExpr::QualifiedWildcard(_)))))
}

/// The symbol of `COUNT(A.*)`.
fn star_symbol(f: &ast::Function, shape: &Shape) -> Option<usize> {
    let Shape::Pattern { symbols, .. } = shape else {
        return None;
    };
    let FunctionArguments::List(l) = &f.args else {
        return None;
    };
    l.args.iter().find_map(|a| match a {
        FunctionArg::Unnamed(FunctionArgExpr::QualifiedWildcard(n)) => symbols
            .iter()
            .position(|s| s.eq_ignore_ascii_case(&n.to_string())),
        _ => None,
    })
}

/// The symbol an aggregate argument such as `A.price` ranges over.
fn pattern_symbol(e: &ast::Expr, shape: &Shape) -> Option<usize> {
    let Shape::Pattern { symbols, .. } = shape else {
        return None;
    };
    let mut found = None;
    visit_idents(e, &mut |ids| {
        if ids.len() > 1 {
            if let Some(i) = symbols
                .iter()
                .position(|s| s.eq_ignore_ascii_case(&ids[0].value))
            {
                found = Some(i);
            }
        }
    });
    found
}

fn aggregate_usage(f: AggFunc) -> String {
    match f {
        AggFunc::RegrSlope | AggFunc::RegrIntercept => {
            "write regr_slope(y, x): the least-squares slope of y over x".to_owned()
        }
        AggFunc::Percentile(_) => "write percentile(value, 0.95)".to_owned(),
        AggFunc::CountStar => "write count(*)".to_owned(),
        _ => "aggregates take one value: avg(x)".to_owned(),
    }
}

fn select_item_pos(i: &ast::SelectItem) -> Pos {
    use sqlparser::ast::Spanned;
    Pos::from(i.span())
}

fn contains_aggregate(e: &ast::Expr) -> bool {
    match e {
        ast::Expr::Function(f) => {
            let n = f.name.to_string();
            (AggFunc::lookup(&n).is_some() && f.over.is_none())
                || function_args(f).into_iter().any(contains_aggregate)
        }
        ast::Expr::BinaryOp { left, right, .. } => {
            contains_aggregate(left) || contains_aggregate(right)
        }
        ast::Expr::Nested(x)
        | ast::Expr::UnaryOp { expr: x, .. }
        | ast::Expr::Cast { expr: x, .. } => contains_aggregate(x),
        ast::Expr::Case {
            operand,
            conditions,
            else_result,
            ..
        } => {
            operand.as_deref().is_some_and(contains_aggregate)
                || conditions
                    .iter()
                    .any(|c| contains_aggregate(&c.condition) || contains_aggregate(&c.result))
                || else_result.as_deref().is_some_and(contains_aggregate)
        }
        _ => false,
    }
}

/// The output name of an unaliased select item.
fn default_name(e: &ast::Expr) -> String {
    match e {
        ast::Expr::Identifier(i) => i.value.clone(),
        ast::Expr::CompoundIdentifier(ids) => {
            ids.last().map(|i| i.value.clone()).unwrap_or_default()
        }
        ast::Expr::Function(f) => f.name.to_string().to_ascii_lowercase(),
        other => other.to_string(),
    }
}

fn value_of(v: &ast::Value) -> Option<Value> {
    Some(match v {
        ast::Value::Number(n, _) => match n.parse::<i64>() {
            Ok(i) => Value::Int(i),
            Err(_) => Value::Float(n.parse().ok()?),
        },
        ast::Value::SingleQuotedString(s) | ast::Value::DoubleQuotedString(s) => {
            Value::from(s.as_str())
        }
        ast::Value::Boolean(b) => Value::Bool(*b),
        ast::Value::Null => Value::Null,
        _ => return None,
    })
}

fn literal(e: &ast::Expr) -> Option<Value> {
    match e {
        ast::Expr::Value(v) => value_of(&v.value),
        ast::Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => match literal(expr)? {
            Value::Int(i) => Some(Value::Int(-i)),
            Value::Float(f) => Some(Value::Float(-f)),
            _ => None,
        },
        ast::Expr::Nested(x) => literal(x),
        _ => None,
    }
}

/// A constant duration in ms: `INTERVAL '5' SECOND`, `INTERVAL '5 seconds'`, `'5s'` or a number of ms.
fn const_ms(e: &ast::Expr) -> Option<i64> {
    match e {
        ast::Expr::Interval(i) => {
            let text = literal(&i.value)?.to_text();
            let unit = i.leading_field.as_ref().map(|f| match f {
                DateTimeField::Millisecond | DateTimeField::Milliseconds => "ms".to_owned(),
                other => other.to_string(),
            });
            weir_core::parse_duration(&format!("{text} {}", unit.unwrap_or_default())).ok()
        }
        ast::Expr::Nested(x) => const_ms(x),
        other => match literal(other)? {
            Value::Int(i) => Some(i),
            Value::Str(s) => weir_core::parse_duration(&s).ok(),
            _ => None,
        },
    }
}

/// A stream name as written, without the quotes of quoted identifiers (`"my stream"` is
/// `my stream`); parts of a qualified name are joined by dots.
fn object_name(n: &ast::ObjectName) -> String {
    n.0.iter()
        .map(|p| match p.as_ident() {
            Some(i) => i.value.clone(),
            None => p.to_string(),
        })
        .collect::<Vec<_>>()
        .join(".")
}

fn option_text(e: &ast::Expr) -> Option<String> {
    match e {
        ast::Expr::Identifier(i) => Some(i.value.clone()),
        ast::Expr::Interval(_) => const_ms(e).map(|ms| format!("{ms}ms")),
        other => literal(other).map(|v| v.to_text()),
    }
}

trait RelationSpan {
    fn relation_span(&self) -> Span;
}

impl RelationSpan for ast::Join {
    fn relation_span(&self) -> Span {
        use sqlparser::ast::Spanned;
        self.relation.span()
    }
}
