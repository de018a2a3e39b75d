//! The binder: checks names, types, windows, joins and patterns of parsed statements and builds
//! the logical plan. It never stops at the first problem: every error is collected, and a bad
//! expression binds to null so the rest of the rule is still checked.

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

    fn create_stream(&mut self, ct: &CreateTable, pos: Pos) {
        let name = object_name(&ct.name);
        if let Some(i) = self
            .program
            .streams
            .iter()
            .position(|s| s.name.eq_ignore_ascii_case(&name))
        {
            let hint = if i < self.known {
                format!("the node already has a stream '{name}': use it without declaring it, or pick another name")
            } else {
                format!(
                    "it is first declared on line {}",
                    self.program.streams[i].pos.line
                )
            };
            self.err(pos, format!("stream '{name}' is declared twice"), hint);
            return;
        }
        let mut def = StreamDef::implied(&name);
        def.declared = true;
        def.pos = pos;
        if !ct.columns.is_empty() {
            let mut cols = Vec::new();
            let mut computed = Vec::new();
            for c in &ct.columns {
                let mut not_null = false;
                for o in &c.options {
                    match &o.option {
                        ast::ColumnOption::NotNull => not_null = true,
                        ast::ColumnOption::Null => {}
                        ast::ColumnOption::Generated {
                            generation_expr: Some(e),
                            ..
                        } => computed.push((c.name.clone(), e.clone())),
                        other => self.err(
                            c.name.span,
                            format!("column option {other} is not supported on streams"),
                            "columns take a type and NOT NULL; computed columns are written name AS expression",
                        ),
                    }
                }
                if computed.last().is_some_and(|(n, _)| *n == c.name) {
                    continue;
                }
                let ty_text = c.data_type.to_string();
                match DataType::from_sql(&ty_text) {
                    Some(ty) => cols.push(Column {
                        name: Arc::from(c.name.value.as_str()),
                        ty,
                        not_null,
                    }),
                    None => self.err(
                        c.name.span,
                        format!("unknown type {ty_text} for column {}", c.name.value),
                        "use BOOLEAN, BIGINT, DOUBLE, STRING, TIMESTAMP or JSON",
                    ),
                }
            }
            // Computed columns see the declared ones (and those computed before them).
            for (n, e) in computed {
                def.columns = Some(cols.clone());
                let mut ctx = Ctx::new(Shape::Single {
                    stream: def.clone(),
                    alias: None,
                });
                let bound = self.bind_expr(&e, &mut ctx);
                let name: Arc<str> = Arc::from(n.value.as_str());
                cols.push(Column {
                    name: name.clone(),
                    ty: DataType::Any,
                    not_null: false,
                });
                def.computed.push((name, bound));
            }
            def.columns = Some(cols);
        }
        let options = match &ct.table_options {
            CreateTableOptions::With(o) | CreateTableOptions::Options(o) => o.clone(),
            _ => Vec::new(),
        };
        let mut time_set = None;
        let mut given = std::collections::BTreeSet::new();
        for opt in &options {
            let SqlOption::KeyValue { key, value } = opt else {
                continue;
            };
            let k = key.value.to_ascii_lowercase();
            if !given.insert(k.clone()) {
                self.err(
                    key.span,
                    format!("option {k} is given twice"),
                    "give each option once (WATERMARK FOR sets timestamp and watermark)",
                );
                continue;
            }
            let Some(v) = option_text(value) else {
                self.err(
                    key.span,
                    format!("option {k} needs a literal value"),
                    "write e.g. watermark = '2 seconds'",
                );
                continue;
            };
            let duration = |b: &mut Binder| match weir_core::parse_duration(&v) {
                Ok(ms) if ms >= 0 => Some(ms),
                Ok(_) => None,
                Err(e) => {
                    b.err(
                        key.span,
                        format!("option {k}: {e}"),
                        "write a duration such as '2 seconds'",
                    );
                    None
                }
            };
            match k.as_str() {
                "timestamp" => {
                    if def.columns.is_some() && def.column(&v).is_none() {
                        let cols: Vec<String> = def
                            .columns
                            .iter()
                            .flatten()
                            .map(|c| c.name.to_string())
                            .collect();
                        let hint = closest(&v, cols.iter().map(String::as_str))
                            .map(|c| format!("did you mean '{c}'?"))
                            .unwrap_or_else(|| format!("the columns are: {}", cols.join(", ")));
                        self.err(
                            key.span,
                            format!("timestamp column '{v}' is not a column of {name}"),
                            hint,
                        );
                    }
                    let col = def
                        .column(&v)
                        .map(|c| c.name.clone())
                        .unwrap_or_else(|| Arc::from(v.as_str()));
                    def.timestamp = Some(col);
                }
                "watermark" => def.watermark_ms = duration(self).unwrap_or(0),
                "allowed_lateness" => def.allowed_lateness_ms = duration(self).unwrap_or(0),
                "time" => match v.to_ascii_lowercase().as_str() {
                    "event" => time_set = Some(TimeMode::Event),
                    "processing" => time_set = Some(TimeMode::Processing),
                    _ => self.err(
                        key.span,
                        format!("time = '{v}' is not a time mode"),
                        "use time = 'event' or time = 'processing'",
                    ),
                },
                "key" => def.key = Some(Arc::from(v.as_str())),
                "order" => match v.to_ascii_lowercase().as_str() {
                    "event" | "event_time" => def.arrival_order = false,
                    "arrival" => def.arrival_order = true,
                    _ => self.err(
                        key.span,
                        format!("order = '{v}' is not an order"),
                        "use order = 'event' (hold events until the watermark, the default) or order = 'arrival'",
                    ),
                },
                "received_at" => def.received_at = Some(Arc::from(v.as_str())),
                "sent_at" => def.sent_at = Some(Arc::from(v.as_str())),
                _ => {}
            }
            def.option_pos.insert(k.clone(), Pos::from(key.span));
            def.options.insert(k, v);
        }
        def.time = match (time_set, &def.timestamp) {
            (Some(TimeMode::Event), None) => {
                self.err(
                    pos,
                    format!("stream {name} uses event time but names no timestamp column"),
                    "add timestamp = '<column>' to WITH (...)",
                );
                TimeMode::Event
            }
            (Some(t), _) => t,
            (None, Some(_)) => TimeMode::Event,
            (None, None) => TimeMode::Processing,
        };
        self.program.streams.push(def);
    }

    fn implied_sink(&mut self, ins: &Insert) {
        let TableObject::TableName(name) = &ins.table else {
            return;
        };
        let name = object_name(name);
        if self.program.stream(&name).is_none() {
            self.program.streams.push(StreamDef::implied(&name));
        }
    }

    fn rule(&mut self, ins: &Insert, st: &ParsedStatement, n: usize) {
        let TableObject::TableName(sink) = &ins.table else {
            self.err(
                st.pos,
                "INSERT INTO needs a stream name",
                "write INSERT INTO <stream> SELECT ...",
            );
            return;
        };
        let sink = self
            .lookup_stream(&object_name(sink))
            .map(|s| s.name)
            .unwrap_or_default();
        let Some(query) = &ins.source else {
            self.err(
                st.pos,
                "INSERT needs a SELECT",
                "write INSERT INTO <stream> SELECT ... FROM ...",
            );
            return;
        };
        if !ins.columns.is_empty() {
            self.err(
                st.pos,
                "INSERT INTO with a column list is not supported",
                "name the output fields with AS in the SELECT list",
            );
        }
        self.refuse(clauses::insert(ins, st.pos));
        self.refuse(clauses::query(query, st.pos));
        let SetExpr::Select(select) = query.body.as_ref() else {
            self.err(
                st.pos,
                "only a plain SELECT can feed a stream",
                "UNION and VALUES are not supported in rules",
            );
            return;
        };
        if select.distinct.is_some() {
            self.err(
                st.pos,
                "SELECT DISTINCT is not supported on streams",
                "group by the columns with a window instead",
            );
        }
        self.refuse(clauses::select(select, st.pos));
        for from in &select.from {
            self.refuse(clauses::table(&from.relation));
            if let TableFactor::MatchRecognize { table, .. } = &from.relation {
                self.refuse(clauses::table(table));
            }
            for j in &from.joins {
                self.refuse(clauses::table(&j.relation));
            }
        }
        if select.from.is_empty() {
            self.err(
                st.pos,
                "the SELECT reads from no stream",
                "add FROM <stream>; if FROM is there, the expression just before it is incomplete",
            );
            return;
        }
        if select.from.len() != 1 {
            self.err(
                st.pos,
                "a rule reads FROM exactly one stream, join or MATCH_RECOGNIZE",
                "write FROM <stream> [JOIN <stream> ON ...]",
            );
            return;
        }
        let from = &select.from[0];
        let mut within = st.within.iter().copied();
        let (input, shape) = match self.bind_from(from, &mut within) {
            Some(x) => x,
            None => return,
        };
        for (_, pos) in within {
            self.err(
                pos,
                "WITHIN belongs after the PATTERN of a MATCH_RECOGNIZE",
                "move it to PATTERN (...) WITHIN INTERVAL '10' SECOND",
            );
        }
        let mut ctx = Ctx::new(shape);
        ctx.named_windows = select.named_window.clone();
        let group_by = match &select.group_by {
            GroupByExpr::Expressions(e, _) => e.clone(),
            GroupByExpr::All(_) => {
                self.err(
                    st.pos,
                    "GROUP BY ALL is not supported",
                    "list the keys and the window",
                );
                Vec::new()
            }
        };
        let grouped = !group_by.is_empty()
            || select.projection.iter().any(|i| match i {
                ast::SelectItem::UnnamedExpr(e)
                | ast::SelectItem::ExprWithAlias { expr: e, .. } => contains_aggregate(e),
                _ => false,
            });
        if let (Some(t), false) = (&st.window_tvf, grouped) {
            self.err(
                t.pos,
                "a window table function needs GROUP BY window_start, window_end",
                "weir aggregates per window: add GROUP BY window_start, window_end (and the keys)",
            );
        }
        let body = if grouped {
            self.bind_aggregate(select, &group_by, st.window_tvf.as_ref(), &mut ctx)
        } else {
            if select.having.is_some() {
                self.err(
                    st.pos,
                    "HAVING needs GROUP BY or an aggregate",
                    "use WHERE to filter single rows",
                );
            }
            ctx.changes = Some(Vec::new());
            let items = self.bind_items(&select.projection, &mut ctx, true);
            Body::Project(Projection {
                items,
                changes: Vec::new(),
                partition: Vec::new(),
            })
        };
        // WHERE is bound after the SELECT list so it may use the same change functions.
        if grouped {
            ctx.group_keys = None;
            ctx.allow_aggs = false;
        }
        let filter = select.selection.as_ref().map(|w| {
            if grouped && contains_aggregate(w) {
                self.err(
                    span_of(w),
                    "aggregates are not allowed in WHERE",
                    "filter on aggregates with HAVING",
                );
                return lit_null();
            }
            self.bind_expr(w, &mut ctx)
        });
        let body = match body {
            Body::Project(mut p) => {
                p.partition = self.change_partition(&mut ctx);
                p.changes = ctx.changes.take().unwrap_or_default();
                Body::Project(p)
            }
            agg => agg,
        };
        let mut input = input;
        if let (Input::Join(j), Some(time)) = (&mut input, ctx.window_time) {
            j.time = time;
        }
        // A window's FILTER keeps events out of it, as WHERE does.
        let filter = match (filter, ctx.window_filter.take()) {
            (Some(a), Some(b)) => Some(Expr::Binary(BinOp::And, Box::new(a), Box::new(b))),
            (a, b) => a.or(b),
        };
        self.infer_sink_time(&sink, &input, &body);
        self.program.rules.push(Rule {
            name: format!("rule{n} -> {sink}"),
            sink,
            input,
            filter,
            body,
            pos: st.pos,
        });
    }

    /// A stream only rules write has no declared time attribute; when a rule passes its input's
    /// timestamp column through unchanged, that column names the event time of its output too,
    /// so later rules in the file can bound joins and order patterns by it.
    fn infer_sink_time(&mut self, sink: &str, input: &Input, body: &Body) {
        let Input::Stream(name) = input else {
            return;
        };
        let Some(ts) = self.program.stream(name).and_then(|s| s.timestamp.clone()) else {
            return;
        };
        let Body::Project(p) = body else {
            return;
        };
        let passes = p.items.iter().any(|i| match i {
            SelectItem::Star => true,
            SelectItem::Expr(n, Expr::Field(f)) => **n == *ts && **f == *ts,
            _ => false,
        });
        if let Some(def) = self
            .program
            .streams
            .iter_mut()
            .find(|s| s.name.eq_ignore_ascii_case(sink))
        {
            if passes && !def.declared && def.timestamp.is_none() {
                def.timestamp = Some(ts);
            }
        }
    }

    /// The partition of change functions: their `OVER (PARTITION BY ...)`, else the stream key.
    fn change_partition(&mut self, ctx: &mut Ctx) -> Vec<Expr> {
        if ctx.changes.as_ref().is_none_or(|c| c.is_empty()) && ctx.change_partition.is_none() {
            return Vec::new();
        }
        match ctx.change_partition.take() {
            Some((exprs, _)) => exprs.iter().map(|e| self.bind_expr(e, ctx)).collect(),
            None => match &ctx.shape {
                Shape::Single { stream, .. } | Shape::Pattern { stream, .. } => {
                    stream.key.iter().map(|k| Expr::Field(k.clone())).collect()
                }
                _ => Vec::new(),
            },
        }
    }

    fn bind_from(
        &mut self,
        from: &ast::TableWithJoins,
        within: &mut impl Iterator<Item = (i64, Pos)>,
    ) -> Option<(Input, Shape)> {
        match &from.relation {
            TableFactor::Table { name, alias, .. } if from.joins.is_empty() => {
                let stream = self.input_stream(name)?;
                let alias = alias.as_ref().map(|a| a.name.value.clone());
                Some((
                    Input::Stream(stream.name.clone()),
                    Shape::Single { stream, alias },
                ))
            }
            TableFactor::Table { name, alias, .. } => {
                if from.joins.len() > 1 {
                    self.err(
                        from.joins[1].relation_span(),
                        "a rule joins two streams at most",
                        "chain joins through an intermediate stream",
                    );
                }
                let left = self.input_stream(name)?;
                let left_alias = alias
                    .as_ref()
                    .map(|a| a.name.value.clone())
                    .unwrap_or(left.name.clone());
                self.bind_join(left, left_alias, &from.joins[0])
            }
            TableFactor::MatchRecognize { .. } => self.bind_pattern(&from.relation, within),
            other => {
                use sqlparser::ast::Spanned;
                self.err(
                    other.span(),
                    "FROM takes a stream name",
                    "subqueries and table functions are not supported in rules",
                );
                None
            }
        }
    }

    fn input_stream(&mut self, name: &ast::ObjectName) -> Option<StreamDef> {
        let text = object_name(name);
        match self.lookup_stream(&text) {
            Some(s) => Some(s),
            None => {
                use sqlparser::ast::Spanned;
                let names: Vec<String> = self
                    .program
                    .streams
                    .iter()
                    .map(|s| s.name.clone())
                    .collect();
                let hint = closest(&text, names.iter().map(String::as_str))
                    .map(|c| format!("did you mean '{c}'?"))
                    .unwrap_or_else(|| {
                        format!("declare it with CREATE STREAM {text} (...) WITH (...)")
                    });
                self.err(name.span(), format!("unknown stream '{text}'"), hint);
                None
            }
        }
    }

    fn bind_join(
        &mut self,
        left: StreamDef,
        left_alias: String,
        join: &ast::Join,
    ) -> Option<(Input, Shape)> {
        let TableFactor::Table { name, alias, .. } = &join.relation else {
            self.err(
                join.relation_span(),
                "JOIN takes a stream name",
                "write JOIN <stream> [AS alias] ON ...",
            );
            return None;
        };
        let right = self.input_stream(name)?;
        let right_alias = alias
            .as_ref()
            .map(|a| a.name.value.clone())
            .unwrap_or(right.name.clone());
        if left_alias.eq_ignore_ascii_case(&right_alias) {
            self.err(
                join.relation_span(),
                "both sides of the join have the same name",
                "give them aliases: FROM s AS a JOIN s AS b ON ...",
            );
            return None;
        }
        let (on, semi) = match &join.join_operator {
            JoinOperator::Join(JoinConstraint::On(e))
            | JoinOperator::Inner(JoinConstraint::On(e)) => (e, false),
            JoinOperator::LeftSemi(JoinConstraint::On(e))
            | JoinOperator::Semi(JoinConstraint::On(e)) => (e, true),
            _ => {
                self.err(join.relation_span(), "only inner and left semi joins with ON are supported between streams", "write JOIN <stream> ON a.key = b.key AND b.ts BETWEEN a.ts - INTERVAL '5' SECOND AND a.ts + INTERVAL '5' SECOND, or LEFT SEMI JOIN to keep each left row once");
                return None;
            }
        };
        let sides = JoinSides {
            left: (&left, &left_alias),
            right: (&right, &right_alias),
        };
        let mut conjuncts = Vec::new();
        split_and(on, &mut conjuncts);
        let (mut lower, mut upper) = (None::<i64>, None::<i64>);
        let mut keys = Vec::new();
        let mut residual = Vec::new();
        for c in conjuncts {
            if let Some(bounds) = sides.time_bounds(c) {
                for (lo, hi) in bounds {
                    if let Some(lo) = lo {
                        lower = Some(lower.map_or(lo, |l| l.max(lo)));
                    }
                    if let Some(hi) = hi {
                        upper = Some(upper.map_or(hi, |u| u.min(hi)));
                    }
                }
                continue;
            }
            if let ast::Expr::BinaryOp {
                left: l,
                op: BinaryOperator::Eq,
                right: r,
            } = c
            {
                match (sides.side_of(l), sides.side_of(r)) {
                    (Some(Side::Left), Some(Side::Right)) => {
                        keys.push((l.as_ref().clone(), r.as_ref().clone()));
                        continue;
                    }
                    (Some(Side::Right), Some(Side::Left)) => {
                        keys.push((r.as_ref().clone(), l.as_ref().clone()));
                        continue;
                    }
                    _ => {}
                }
            }
            residual.push(c.clone());
        }
        let pos = span_of(on);
        let (Some(lower_ms), Some(upper_ms)) = (lower, upper) else {
            self.err(pos, "a stream-stream join needs a time bound on both sides, or its state grows forever", format!("add AND {right_alias}.ts BETWEEN {left_alias}.ts - INTERVAL '5' SECOND AND {left_alias}.ts + INTERVAL '5' SECOND (using the streams' timestamp columns)"));
            return None;
        };
        if lower_ms > upper_ms {
            self.err(
                pos,
                "the join's time bounds admit no pair of events",
                "the lower bound must not exceed the upper bound",
            );
        }
        let mut lctx = Ctx::new(Shape::Single {
            stream: left.clone(),
            alias: Some(left_alias.clone()),
        });
        let mut rctx = Ctx::new(Shape::Single {
            stream: right.clone(),
            alias: Some(right_alias.clone()),
        });
        let (left_keys, right_keys) = keys
            .iter()
            .map(|(l, r)| (self.bind_expr(l, &mut lctx), self.bind_expr(r, &mut rctx)))
            .unzip();
        let joined = Shape::Joined {
            left: (left.clone(), left_alias.clone()),
            right: (right.clone(), right_alias.clone()),
        };
        let mut jctx = Ctx::new(joined.clone());
        let residual = residual
            .iter()
            .map(|e| self.bind_expr(e, &mut jctx))
            .reduce(|a, b| Expr::Binary(BinOp::And, Box::new(a), Box::new(b)));
        // A semi join's rows are the left rows themselves.
        let shape = match semi {
            true => Shape::Single {
                stream: left.clone(),
                alias: Some(left_alias.clone()),
            },
            false => joined,
        };
        let spec = JoinSpec {
            left: left.name,
            right: right.name,
            left_alias: Arc::from(left_alias),
            right_alias: Arc::from(right_alias),
            left_keys,
            right_keys,
            lower_ms,
            upper_ms,
            residual,
            semi,
            time: JoinTime::Latest,
        };
        Some((Input::Join(Box::new(spec)), shape))
    }

    fn bind_pattern(
        &mut self,
        factor: &TableFactor,
        within: &mut impl Iterator<Item = (i64, Pos)>,
    ) -> Option<(Input, Shape)> {
        let TableFactor::MatchRecognize {
            table,
            partition_by,
            order_by,
            measures,
            rows_per_match,
            after_match_skip,
            pattern,
            symbols: defines,
            ..
        } = factor
        else {
            return None;
        };
        use sqlparser::ast::Spanned;
        let pos = Pos::from(factor.span());
        let TableFactor::Table { name, alias, .. } = table.as_ref() else {
            self.err(
                pos,
                "MATCH_RECOGNIZE reads a stream",
                "write FROM <stream> MATCH_RECOGNIZE (...)",
            );
            return None;
        };
        let stream = self.input_stream(name)?;
        let alias = alias.as_ref().map(|a| a.name.value.clone());
        if let Some(ast::RowsPerMatch::AllRows(_)) = rows_per_match {
            self.err(
                pos,
                "ALL ROWS PER MATCH is not supported yet",
                "use ONE ROW PER MATCH with MEASURES",
            );
        }
        match order_by.as_slice() {
            [] => {}
            [o] => {
                let ok = match (&o.expr, &stream.timestamp) {
                    (ast::Expr::Identifier(i), Some(ts)) => i.value.eq_ignore_ascii_case(ts),
                    (ast::Expr::CompoundIdentifier(ids), Some(ts)) => {
                        ids.last().is_some_and(|i| i.value.eq_ignore_ascii_case(ts))
                    }
                    _ => false,
                };
                if !ok {
                    self.err(
                        span_of(&o.expr),
                        "MATCH_RECOGNIZE orders rows by event time only",
                        format!(
                            "write ORDER BY {}",
                            stream.timestamp.as_deref().unwrap_or("<timestamp column>")
                        ),
                    );
                }
            }
            _ => self.err(
                pos,
                "MATCH_RECOGNIZE orders rows by event time only",
                "ORDER BY the stream's timestamp column",
            ),
        }
        let mut symbols: Vec<Arc<str>> = Vec::new();
        let pattern = self.bind_pattern_expr(pattern, &mut symbols, pos);
        let mut single = Ctx::new(Shape::Single {
            stream: stream.clone(),
            alias: alias.clone(),
        });
        let partition: Vec<Expr> = partition_by
            .iter()
            .map(|e| self.bind_expr(e, &mut single))
            .collect();
        let partition_names: Vec<Arc<str>> = partition_by
            .iter()
            .map(|e| Arc::from(default_name(e)))
            .collect();
        let mut defs: Vec<Option<Expr>> = vec![None; symbols.len()];
        for d in defines {
            let Some(idx) = symbols
                .iter()
                .position(|s| s.eq_ignore_ascii_case(&d.symbol.value))
            else {
                self.err(
                    d.symbol.span,
                    format!(
                        "DEFINE names '{}', which the PATTERN does not use",
                        d.symbol.value
                    ),
                    format!("the pattern's symbols are: {}", symbols.join(", ")),
                );
                continue;
            };
            let mut ctx = Ctx::new(Shape::Pattern {
                stream: stream.clone(),
                alias: alias.clone(),
                symbols: symbols.clone(),
                defining: Some(idx),
            });
            defs[idx] = Some(self.bind_expr(&d.definition, &mut ctx));
        }
        let mut mctx = Ctx::new(Shape::Pattern {
            stream: stream.clone(),
            alias: alias.clone(),
            symbols: symbols.clone(),
            defining: None,
        });
        let measures: Vec<(Arc<str>, Expr)> = measures
            .iter()
            .map(|m| {
                (
                    Arc::from(m.alias.value.as_str()),
                    self.bind_expr(&m.expr, &mut mctx),
                )
            })
            .collect();
        let skip = match after_match_skip {
            None | Some(ast::AfterMatchSkip::PastLastRow) => Skip::PastLastRow,
            Some(ast::AfterMatchSkip::ToNextRow) => Skip::ToNextRow,
            Some(ast::AfterMatchSkip::ToFirst(s)) | Some(ast::AfterMatchSkip::ToLast(s)) => {
                match symbols
                    .iter()
                    .position(|x| x.eq_ignore_ascii_case(&s.value))
                {
                    Some(i)
                        if matches!(after_match_skip, Some(ast::AfterMatchSkip::ToFirst(_))) =>
                    {
                        Skip::ToFirst(i)
                    }
                    Some(i) => Skip::ToLast(i),
                    None => {
                        self.err(
                            s.span,
                            format!("AFTER MATCH SKIP names unknown symbol '{}'", s.value),
                            "name a symbol of the PATTERN",
                        );
                        Skip::PastLastRow
                    }
                }
            }
        };
        let mut names = partition_names.clone();
        names.extend(measures.iter().map(|(n, _)| n.clone()));
        let spec = PatternSpec {
            stream: stream.name.clone(),
            partition,
            partition_names,
            symbols,
            defines: defs,
            pattern,
            measures,
            skip,
            within_ms: within.next().map(|(ms, _)| ms),
        };
        Some((Input::Pattern(Box::new(spec)), Shape::Rows(names)))
    }

    fn bind_pattern_expr(
        &mut self,
        p: &MatchRecognizePattern,
        symbols: &mut Vec<Arc<str>>,
        pos: Pos,
    ) -> Pattern {
        let mut symbol = |b: &mut Binder, s: &MatchRecognizeSymbol| match s {
            MatchRecognizeSymbol::Named(id)
                if id.quote_style.is_none() && id.value.eq_ignore_ascii_case("not") =>
            {
                b.err(
                    id.span,
                    "absent events (PATTERN (A NOT B)) are not supported yet",
                    "match what does happen; to find a missing event, window the stream and look for count(*) = 0 with HAVING",
                );
                Pattern::Concat(Vec::new())
            }
            MatchRecognizeSymbol::Named(id) => {
                let idx = symbols
                    .iter()
                    .position(|x| x.eq_ignore_ascii_case(&id.value))
                    .unwrap_or_else(|| {
                        symbols.push(Arc::from(id.value.as_str()));
                        symbols.len() - 1
                    });
                Pattern::Symbol(idx)
            }
            _ => {
                b.err(
                    pos,
                    "^ and $ anchors do not apply to endless streams",
                    "remove the anchor",
                );
                Pattern::Concat(Vec::new())
            }
        };
        match p {
            MatchRecognizePattern::Symbol(s) => symbol(self, s),
            MatchRecognizePattern::Concat(v) => Pattern::Concat(
                v.iter()
                    .map(|x| self.bind_pattern_expr(x, symbols, pos))
                    .collect(),
            ),
            MatchRecognizePattern::Alternation(v) => Pattern::Alt(
                v.iter()
                    .map(|x| self.bind_pattern_expr(x, symbols, pos))
                    .collect(),
            ),
            MatchRecognizePattern::Group(g) => self.bind_pattern_expr(g, symbols, pos),
            // `A+?` parses as `(A+)?` without the parentheses: a reluctant `A+`.
            MatchRecognizePattern::Repetition(inner, RepetitionQuantifier::AtMostOne)
                if matches!(**inner, MatchRecognizePattern::Repetition(..)) =>
            {
                match self.bind_pattern_expr(inner, symbols, pos) {
                    Pattern::Repeat {
                        inner, min, max, ..
                    } => Pattern::Repeat {
                        inner,
                        min,
                        max,
                        greedy: false,
                    },
                    other => other,
                }
            }
            MatchRecognizePattern::Repetition(inner, q) => {
                let inner = Box::new(self.bind_pattern_expr(inner, symbols, pos));
                let (min, max) = match q {
                    RepetitionQuantifier::ZeroOrMore => (0, None),
                    RepetitionQuantifier::OneOrMore => (1, None),
                    RepetitionQuantifier::AtMostOne => (0, Some(1)),
                    RepetitionQuantifier::Exactly(n) => (*n, Some(*n)),
                    RepetitionQuantifier::AtLeast(n) => (*n, None),
                    RepetitionQuantifier::AtMost(n) => (0, Some(*n)),
                    RepetitionQuantifier::Range(a, b) => (*a, Some(*b)),
                };
                if max.is_some_and(|m| m < min) {
                    self.err(
                        pos,
                        format!(
                            "quantifier {{{min},{}}} has its bounds reversed",
                            max.unwrap_or(0)
                        ),
                        "write {n,m} with n <= m",
                    );
                }
                Pattern::Repeat {
                    inner,
                    min,
                    max,
                    greedy: true,
                }
            }
            MatchRecognizePattern::Exclude(_) | MatchRecognizePattern::Permute(_) => {
                self.err(
                    pos,
                    "exclusion {- -} and PERMUTE are not supported",
                    "spell the alternatives out with |",
                );
                Pattern::Concat(Vec::new())
            }
        }
    }

    fn bind_aggregate(
        &mut self,
        select: &ast::Select,
        group_by: &[ast::Expr],
        tvf: Option<&WindowTvf>,
        ctx: &mut Ctx,
    ) -> Body {
        let mut window = None;
        let mut group_by = group_by.to_vec();
        if let Some(t) = tvf {
            window = self.window_tvf(t, &mut group_by, ctx);
        }
        let mut keys = Vec::new();
        let mut key_texts = Vec::new();
        for g in &group_by {
            if let ast::Expr::Function(f) = g {
                let fname = f.name.to_string().to_ascii_lowercase();
                if WINDOW_FUNCS.contains(&fname.as_str()) {
                    if window.is_some() {
                        self.err(
                            span_of(g),
                            "a rule has one window",
                            "remove the second window function from GROUP BY",
                        );
                    }
                    window = self.bind_window(&fname, function_args(f), span_of(g), ctx);
                    if let Some(w) = &f.filter {
                        ctx.window_filter = Some(self.bind_expr(w, ctx));
                    }
                    continue;
                }
            }
            keys.push(self.bind_expr(g, ctx));
            key_texts.push(g.to_string());
        }
        ctx.group_keys = Some(key_texts);
        ctx.allow_aggs = true;
        let mut items = Vec::new();
        for it in self.bind_items(&select.projection, ctx, false) {
            if let SelectItem::Expr(n, e) = it {
                items.push((n, e));
            }
        }
        let having = select.having.as_ref().map(|h| self.bind_expr(h, ctx));
        // Slots hold [window_start, window_end, keys..., aggregates...]; aggregates were numbered
        // from 0 while binding, so shift them past the keys.
        let shift = 2 + keys.len();
        let fix = |e: &mut Expr| shift_agg_slots(e, shift);
        for (_, e) in items.iter_mut() {
            fix(e);
        }
        let mut having = having;
        if let Some(h) = having.as_mut() {
            fix(h);
        }
        Body::Aggregate(Aggregate {
            keys,
            window: window.unwrap_or(Window::Unbounded),
            aggs: std::mem::take(&mut ctx.aggs),
            items,
            having,
        })
    }

    /// The window of Flink's window table function: `GROUP BY window_start, window_end, keys`
    /// groups by it (both must be there), the keys by themselves.
    fn window_tvf(
        &mut self,
        t: &WindowTvf,
        group_by: &mut Vec<ast::Expr>,
        ctx: &mut Ctx,
    ) -> Option<Window> {
        let is = |e: &ast::Expr, name: &str| matches!(e, ast::Expr::Identifier(i) if i.value.eq_ignore_ascii_case(name));
        let has = |g: &[ast::Expr], name: &str| g.iter().any(|e| is(e, name));
        if !(has(group_by, "window_start") && has(group_by, "window_end")) {
            self.err(
                t.pos,
                "a window table function needs GROUP BY window_start, window_end",
                "weir aggregates per window: add GROUP BY window_start, window_end (and the keys)",
            );
        }
        group_by.retain(|e| !is(e, "window_start") && !is(e, "window_end"));
        for k in &t.partition {
            if !group_by.iter().any(|g| g.to_string() == k.to_string()) {
                self.err(
                    span_of(k),
                    format!("the session is partitioned by {k}, which GROUP BY does not name"),
                    "group by the partition keys too",
                );
            }
        }
        let name = match t.kind.as_str() {
            "cumulate" => {
                self.err(
                    t.pos,
                    "CUMULATE windows are not supported yet",
                    "HOP gives overlapping windows; a running aggregate (no window) accumulates",
                );
                return None;
            }
            other => other,
        };
        let mut args = vec![&t.time];
        args.extend(t.args.iter());
        self.bind_window(name, args, t.pos, ctx)
    }

    fn bind_window(
        &mut self,
        name: &str,
        args: Vec<&ast::Expr>,
        pos: Pos,
        ctx: &mut Ctx,
    ) -> Option<Window> {
        let want = match name {
            "tumble" | "session" | "sliding" => 2,
            "hop" => 3,
            _ => 1,
        };
        let usage = match name {
            "tumble" => "TUMBLE(ts, INTERVAL '1' SECOND)",
            "hop" => "HOP(ts, INTERVAL '1' SECOND, INTERVAL '10' SECOND) (slide, then size)",
            "session" => "SESSION(ts, INTERVAL '30' SECOND) (the gap)",
            "sliding" => "SLIDING(ts, INTERVAL '10' SECOND)",
            _ => "COUNT_WINDOW(100) or COUNT_WINDOW(100, 10)",
        };
        let ok_arity = if name == "count_window" {
            (1..=2).contains(&args.len())
        } else {
            args.len() == want
        };
        if !ok_arity {
            self.err(
                pos,
                format!(
                    "{} takes {} arguments",
                    name.to_uppercase(),
                    if name == "count_window" {
                        "1 or 2".to_owned()
                    } else {
                        want.to_string()
                    }
                ),
                format!("write {usage}"),
            );
            return None;
        }
        if name != "count_window" {
            ctx.window_time = self.check_time_arg(args[0], ctx, usage);
        }
        let dur = |b: &mut Binder, e: &ast::Expr| match const_ms(e) {
            Some(ms) if ms > MAX_WINDOW_MS => {
                b.err(
                    span_of(e),
                    format!("a window length of {ms} ms is over the limit of 100 years"),
                    format!("write {usage}"),
                );
                None
            }
            Some(ms) if ms > 0 => Some(ms),
            _ => {
                b.err(
                    span_of(e),
                    "a window length must be a positive interval",
                    format!("write {usage}"),
                );
                None
            }
        };
        Some(match name {
            "tumble" => Window::Tumble {
                size: dur(self, args[1])?,
            },
            "session" => Window::Session {
                gap: dur(self, args[1])?,
            },
            "sliding" => Window::Sliding {
                size: dur(self, args[1])?,
            },
            "hop" => {
                let (slide, size) = (dur(self, args[1])?, dur(self, args[2])?);
                if slide > size {
                    self.err(pos, "a hopping window's slide is longer than its size, so events would fall between windows", "HOP takes the slide first, then the size");
                } else if size / slide > MAX_PANES {
                    self.err(
                        pos,
                        format!(
                            "HOP puts each event in {} windows (size {size} ms / slide {slide} ms); at most {MAX_PANES} are allowed",
                            size / slide
                        ),
                        "use a longer slide, or SLIDING(ts, size) for one result per event over the last size",
                    );
                }
                Window::Hop { slide, size }
            }
            _ => {
                let n = |b: &mut Binder, e: &ast::Expr| match literal(e).and_then(|v| v.as_i64()) {
                    Some(n) if n > 0 => Some(n as u64),
                    _ => {
                        b.err(
                            span_of(e),
                            "a count window needs a positive whole number",
                            format!("write {usage}"),
                        );
                        None
                    }
                };
                let size = n(self, args[0])?;
                let slide = match args.get(1) {
                    Some(e) => n(self, e)?,
                    None => size,
                };
                if size > MAX_COUNT_WINDOW {
                    self.err(
                        pos,
                        format!("COUNT_WINDOW({size}) keeps {size} events per key; at most {MAX_COUNT_WINDOW} are allowed"),
                        "aggregate over time instead: TUMBLE, HOP or SLIDING",
                    );
                }
                if slide > size {
                    self.err(
                        pos,
                        format!("COUNT_WINDOW({size}, {slide}) emits every {slide} events but holds only {size}, so events would fall between windows"),
                        "the slide is at most the size",
                    );
                }
                Window::Count { size, slide }
            }
        })
    }

    /// The first argument of a time window must be the stream's time attribute; over a join,
    /// either side's (the one it names is the joined rows' time).
    fn check_time_arg(&mut self, e: &ast::Expr, ctx: &Ctx, usage: &str) -> Option<JoinTime> {
        let (qualifier, name) = match e {
            ast::Expr::Identifier(i) => (None, i.value.clone()),
            ast::Expr::CompoundIdentifier(ids) => (
                ids.iter().rev().nth(1).map(|q| q.value.clone()),
                ids.last().map(|i| i.value.clone()).unwrap_or_default(),
            ),
            ast::Expr::Function(f) if f.name.to_string().eq_ignore_ascii_case("proctime") => {
                return None
            }
            _ => (None, String::new()),
        };
        if name.eq_ignore_ascii_case("rowtime") {
            return None;
        }
        let is_ts = |s: &StreamDef| {
            s.timestamp
                .as_deref()
                .is_some_and(|t| t.eq_ignore_ascii_case(&name))
        };
        let (ok, time, shown) = match &ctx.shape {
            Shape::Single { stream, .. } => (
                stream.timestamp.is_none() || is_ts(stream),
                None,
                stream.timestamp.as_deref().unwrap_or("rowtime").to_owned(),
            ),
            Shape::Joined { left, right } => {
                let named = |side: &(StreamDef, String)| {
                    qualifier
                        .as_deref()
                        .is_none_or(|q| q.eq_ignore_ascii_case(&side.1))
                        && is_ts(&side.0)
                };
                let shown = format!(
                    "{}.{} or {}.{}",
                    left.1,
                    left.0.timestamp.as_deref().unwrap_or("ts"),
                    right.1,
                    right.0.timestamp.as_deref().unwrap_or("ts")
                );
                match (named(left), named(right)) {
                    (true, false) => (true, Some(JoinTime::Left), shown),
                    (false, true) => (true, Some(JoinTime::Right), shown),
                    (true, true) => {
                        self.err(
                            span_of(e),
                            format!("'{e}' names the time of both sides of the join"),
                            format!("qualify it: {shown}"),
                        );
                        return None;
                    }
                    (false, false) => (false, None, shown),
                }
            }
            _ => (true, None, String::new()),
        };
        if !ok || name.is_empty() {
            self.err(
                span_of(e),
                format!("windows are over the stream's time attribute, '{shown}', not '{e}'"),
                format!("write {}", usage.replace("ts", &shown)),
            );
        }
        time
    }

    fn bind_items(
        &mut self,
        items: &[ast::SelectItem],
        ctx: &mut Ctx,
        allow_star: bool,
    ) -> Vec<SelectItem> {
        let mut out = Vec::new();
        for it in items {
            match it {
                ast::SelectItem::UnnamedExpr(e) => {
                    let bound = self.bind_expr(e, ctx);
                    out.push(SelectItem::Expr(Arc::from(default_name(e)), bound));
                }
                ast::SelectItem::ExprWithAlias { expr, alias } => {
                    let bound = self.bind_expr(expr, ctx);
                    out.push(SelectItem::Expr(Arc::from(alias.value.as_str()), bound));
                }
                ast::SelectItem::Wildcard(_) if allow_star => out.push(SelectItem::Star),
                ast::SelectItem::Wildcard(w) => {
                    self.err(
                        w.wildcard_token.0.span,
                        "SELECT * cannot be used with GROUP BY",
                        "list the keys and aggregates to output",
                    );
                }
                _ => {
                    use sqlparser::ast::Spanned;
                    self.err(
                        it.span(),
                        "this select item is not supported",
                        "use expr [AS name] or *",
                    );
                }
            }
        }
        let mut seen = HashMap::new();
        for it in &out {
            if let SelectItem::Expr(n, _) = it {
                if seen.insert(n.to_string(), ()).is_some() {
                    self.err(
                        items.first().map(select_item_pos).unwrap_or_default(),
                        format!("two output fields are named '{n}'"),
                        "give one of them another name with AS",
                    );
                }
            }
        }
        out
    }

    fn bind_expr(&mut self, e: &ast::Expr, ctx: &mut Ctx) -> Expr {
        // A grouping key outside an aggregate is the group's key; inside one (`count(k)`,
        // `max(k) FILTER (WHERE k = 'a')`) it is each row's value, as in any SQL.
        if let (Some(keys), false) = (&ctx.group_keys, ctx.in_agg) {
            let text = e.to_string();
            if let Some(i) = keys.iter().position(|k| *k == text) {
                return Expr::Slot(Aggregate::key_slot(i));
            }
        }
        let pos = span_of(e);
        match e {
            ast::Expr::Identifier(id) => self.column(std::slice::from_ref(id), ctx, pos),
            ast::Expr::CompoundIdentifier(ids) => self.column(ids, ctx, pos),
            ast::Expr::CompoundFieldAccess { root, access_chain } => {
                let base = self.bind_expr(root, ctx);
                let mut path = Vec::new();
                for a in access_chain {
                    match a {
                        ast::AccessExpr::Dot(ast::Expr::Identifier(i)) => {
                            path.push(PathSeg::Key(Arc::from(i.value.as_str())))
                        }
                        ast::AccessExpr::Subscript(ast::Subscript::Index { index }) => {
                            match literal(index) {
                                Some(Value::Int(i)) => path.push(PathSeg::Index(i)),
                                Some(Value::Str(s)) => path.push(PathSeg::Key(s)),
                                _ => self.err(
                                    span_of(index),
                                    "a subscript must be a literal index or key",
                                    "write a[0] or a['key']",
                                ),
                            }
                        }
                        _ => self.err(
                            pos,
                            "this field access is not supported",
                            "write a.b, a[0] or a['key']",
                        ),
                    }
                }
                push_path(base, path)
            }
            ast::Expr::Value(v) => match value_of(&v.value) {
                Some(v) => Expr::Lit(v),
                None => {
                    self.err(
                        pos,
                        format!("literal {v} is not supported"),
                        "use numbers, 'strings', TRUE, FALSE or NULL",
                    );
                    lit_null()
                }
            },
            ast::Expr::Interval(_) => match const_ms(e) {
                Some(ms) => Expr::Lit(Value::Int(ms)),
                None => {
                    self.err(
                        pos,
                        "this interval is not understood",
                        "write INTERVAL '5' SECOND or INTERVAL '2 minutes'",
                    );
                    lit_null()
                }
            },
            ast::Expr::TypedString(ts) => {
                let text = match &ts.value.value {
                    ast::Value::SingleQuotedString(s) => s.clone(),
                    other => other.to_string(),
                };
                let ty = DataType::from_sql(&ts.data_type.to_string()).unwrap_or(DataType::String);
                match ty.cast(&Value::from(text)) {
                    Ok(v) => Expr::Lit(v),
                    Err(m) => {
                        self.err(pos, m, "write TIMESTAMP '2024-01-31T12:00:00Z'");
                        lit_null()
                    }
                }
            }
            ast::Expr::Nested(inner) => self.bind_expr(inner, ctx),
            ast::Expr::UnaryOp { op, expr } => {
                let inner = self.bind_expr(expr, ctx);
                match op {
                    UnaryOperator::Minus => match inner {
                        Expr::Lit(Value::Int(i)) => Expr::Lit(Value::Int(-i)),
                        Expr::Lit(Value::Float(f)) => Expr::Lit(Value::Float(-f)),
                        other => Expr::Neg(Box::new(other)),
                    },
                    UnaryOperator::Plus => inner,
                    UnaryOperator::Not => Expr::Not(Box::new(inner)),
                    _ => {
                        self.err(
                            pos,
                            format!("operator {op} is not supported"),
                            "use -, + or NOT",
                        );
                        lit_null()
                    }
                }
            }
            ast::Expr::BinaryOp { left, op, right } => {
                let l = self.bind_expr(left, ctx);
                if matches!(op, BinaryOperator::Arrow | BinaryOperator::LongArrow) {
                    let seg = match literal(right) {
                        Some(Value::Int(i)) => PathSeg::Index(i),
                        Some(Value::Str(s)) => PathSeg::Key(s),
                        _ => {
                            self.err(
                                span_of(right),
                                "-> takes a literal key or index",
                                "write payload -> 'field'",
                            );
                            return lit_null();
                        }
                    };
                    let p = push_path(l, vec![seg]);
                    return if *op == BinaryOperator::LongArrow {
                        Expr::Cast(Box::new(p), DataType::String, false)
                    } else {
                        p
                    };
                }
                let r = self.bind_expr(right, ctx);
                let bop = match op {
                    BinaryOperator::Plus => BinOp::Add,
                    BinaryOperator::Minus => BinOp::Sub,
                    BinaryOperator::Multiply => BinOp::Mul,
                    BinaryOperator::Divide => BinOp::Div,
                    BinaryOperator::Modulo => BinOp::Mod,
                    BinaryOperator::Eq => BinOp::Eq,
                    BinaryOperator::NotEq => BinOp::NotEq,
                    BinaryOperator::Lt => BinOp::Lt,
                    BinaryOperator::LtEq => BinOp::LtEq,
                    BinaryOperator::Gt => BinOp::Gt,
                    BinaryOperator::GtEq => BinOp::GtEq,
                    BinaryOperator::And => BinOp::And,
                    BinaryOperator::Or => BinOp::Or,
                    BinaryOperator::StringConcat => BinOp::Concat,
                    _ => {
                        self.err(
                            pos,
                            format!("operator {op} is not supported"),
                            "use + - * / % = <> < <= > >= AND OR ||",
                        );
                        return lit_null();
                    }
                };
                Expr::Binary(bop, Box::new(l), Box::new(r))
            }
            ast::Expr::IsNull(x) => Expr::IsNull(Box::new(self.bind_expr(x, ctx)), false),
            ast::Expr::IsNotNull(x) => Expr::IsNull(Box::new(self.bind_expr(x, ctx)), true),
            ast::Expr::IsTrue(x)
            | ast::Expr::IsNotTrue(x)
            | ast::Expr::IsFalse(x)
            | ast::Expr::IsNotFalse(x) => {
                let want = matches!(e, ast::Expr::IsTrue(_) | ast::Expr::IsNotFalse(_));
                let inner = self.bind_expr(x, ctx);
                let is = Expr::Binary(
                    BinOp::Eq,
                    Box::new(Expr::Call(
                        Func::Coalesce,
                        vec![inner, Expr::Lit(Value::Bool(!want))],
                    )),
                    Box::new(Expr::Lit(Value::Bool(true))),
                );
                if matches!(e, ast::Expr::IsTrue(_) | ast::Expr::IsFalse(_)) {
                    is
                } else {
                    Expr::Not(Box::new(is))
                }
            }
            ast::Expr::InList {
                expr,
                list,
                negated,
            } => {
                let x = self.bind_expr(expr, ctx);
                let l = list.iter().map(|i| self.bind_expr(i, ctx)).collect();
                Expr::InList(Box::new(x), l, *negated)
            }
            ast::Expr::Between {
                expr,
                negated,
                low,
                high,
            } => Expr::Between(
                Box::new(self.bind_expr(expr, ctx)),
                Box::new(self.bind_expr(low, ctx)),
                Box::new(self.bind_expr(high, ctx)),
                *negated,
            ),
            ast::Expr::Like {
                negated,
                expr,
                pattern,
                any: false,
                ..
            }
            | ast::Expr::ILike {
                negated,
                expr,
                pattern,
                any: false,
                ..
            } => Expr::Like {
                expr: Box::new(self.bind_expr(expr, ctx)),
                pattern: Box::new(self.bind_expr(pattern, ctx)),
                negated: *negated,
                case_insensitive: matches!(e, ast::Expr::ILike { .. }),
            },
            ast::Expr::Case {
                operand,
                conditions,
                else_result,
                ..
            } => Expr::Case {
                operand: operand.as_ref().map(|o| Box::new(self.bind_expr(o, ctx))),
                whens: conditions
                    .iter()
                    .map(|c| {
                        (
                            self.bind_expr(&c.condition, ctx),
                            self.bind_expr(&c.result, ctx),
                        )
                    })
                    .collect(),
                otherwise: else_result
                    .as_ref()
                    .map(|o| Box::new(self.bind_expr(o, ctx))),
            },
            ast::Expr::Cast {
                kind,
                expr,
                data_type,
                ..
            } => {
                let inner = self.bind_expr(expr, ctx);
                match DataType::from_sql(&data_type.to_string()) {
                    Some(ty) => Expr::Cast(
                        Box::new(inner),
                        ty,
                        !matches!(kind, CastKind::Cast | CastKind::DoubleColon),
                    ),
                    None => {
                        self.err(
                            pos,
                            format!("cannot cast to {data_type}"),
                            "cast to BOOLEAN, BIGINT, DOUBLE, STRING, TIMESTAMP or JSON",
                        );
                        lit_null()
                    }
                }
            }
            ast::Expr::Ceil { expr, .. } => Expr::Call(Func::Ceil, vec![self.bind_expr(expr, ctx)]),
            ast::Expr::Floor { expr, .. } => {
                Expr::Call(Func::Floor, vec![self.bind_expr(expr, ctx)])
            }
            ast::Expr::Position { expr, r#in } => Expr::Call(
                Func::Position,
                vec![self.bind_expr(expr, ctx), self.bind_expr(r#in, ctx)],
            ),
            ast::Expr::Substring {
                expr,
                substring_from,
                substring_for,
                ..
            } => {
                let mut args = vec![self.bind_expr(expr, ctx)];
                args.push(
                    substring_from
                        .as_ref()
                        .map(|f| self.bind_expr(f, ctx))
                        .unwrap_or(Expr::Lit(Value::Int(1))),
                );
                if let Some(n) = substring_for {
                    args.push(self.bind_expr(n, ctx));
                }
                Expr::Call(Func::Substring, args)
            }
            ast::Expr::Trim {
                expr,
                trim_where,
                trim_what: None,
                trim_characters: None,
            } => {
                let f = match trim_where {
                    Some(ast::TrimWhereField::Leading) => Func::Ltrim,
                    Some(ast::TrimWhereField::Trailing) => Func::Rtrim,
                    _ => Func::Trim,
                };
                Expr::Call(f, vec![self.bind_expr(expr, ctx)])
            }
            ast::Expr::Extract { field, expr, .. } => {
                let f = match field {
                    DateTimeField::Year => Func::Year,
                    DateTimeField::Month => Func::Month,
                    DateTimeField::Day => Func::Day,
                    DateTimeField::Hour => Func::Hour,
                    DateTimeField::Minute => Func::Minute,
                    DateTimeField::Second => Func::Second,
                    DateTimeField::Millisecond | DateTimeField::Milliseconds => Func::Millisecond,
                    DateTimeField::Dow => Func::DayOfWeek,
                    DateTimeField::Doy => Func::DayOfYear,
                    _ => {
                        self.err(pos, format!("EXTRACT({field}) is not supported"), "extract YEAR, MONTH, DAY, HOUR, MINUTE, SECOND, MILLISECOND, DOW or DOY");
                        return lit_null();
                    }
                };
                Expr::Call(f, vec![self.bind_expr(expr, ctx)])
            }
            ast::Expr::Function(f) => self.bind_function(f, e, ctx),
            _ => {
                self.err(
                    pos,
                    format!("'{e}' is not supported in rules"),
                    "see docs/language.md for the expressions weir supports",
                );
                lit_null()
            }
        }
    }

    fn column(&mut self, ids: &[ast::Ident], ctx: &mut Ctx, pos: Pos) -> Expr {
        let names: Vec<&str> = ids.iter().map(|i| i.value.as_str()).collect();
        if ctx.group_keys.is_some() && !ctx.in_agg {
            if let [one] = names[..] {
                if one.eq_ignore_ascii_case("window_start") {
                    return Expr::Slot(Aggregate::WINDOW_START);
                }
                if one.eq_ignore_ascii_case("window_end") {
                    return Expr::Slot(Aggregate::WINDOW_END);
                }
                if one.eq_ignore_ascii_case("window_time") {
                    return window_time();
                }
            }
            self.err(
                pos,
                format!(
                    "column '{}' must appear in GROUP BY or inside an aggregate",
                    names.join(".")
                ),
                format!(
                    "use last_value({0}) or add {0} to GROUP BY",
                    names.join(".")
                ),
            );
            return lit_null();
        }
        let shape = ctx.shape.clone();
        match &shape {
            Shape::Single { stream, alias } => {
                let rest = strip_qualifier(&names, &[alias.as_deref(), Some(stream.name.as_str())]);
                self.field_of(stream, rest, pos, None)
            }
            Shape::Joined { left, right } => {
                let side = if names.len() > 1 && names[0].eq_ignore_ascii_case(&left.1) {
                    Some(left)
                } else if names.len() > 1 && names[0].eq_ignore_ascii_case(&right.1) {
                    Some(right)
                } else {
                    None
                };
                match side {
                    Some((stream, alias)) => self.field_of(stream, &names[1..], pos, Some(alias)),
                    None => {
                        let in_l = left.0.columns.is_none() || left.0.column(names[0]).is_some();
                        let in_r = right.0.columns.is_none() || right.0.column(names[0]).is_some();
                        match (
                            in_l,
                            in_r,
                            left.0.columns.is_some() && right.0.columns.is_some(),
                        ) {
                            (true, true, true) => {
                                self.err(
                                    pos,
                                    format!(
                                        "column '{}' is ambiguous: both sides of the join have it",
                                        names[0]
                                    ),
                                    format!(
                                        "write {}.{} or {}.{}",
                                        left.1, names[0], right.1, names[0]
                                    ),
                                );
                                lit_null()
                            }
                            (true, false, _) => self.field_of(&left.0, &names, pos, Some(&left.1)),
                            (false, true, _) => {
                                self.field_of(&right.0, &names, pos, Some(&right.1))
                            }
                            (true, true, false) => {
                                let l = self.field_of(&left.0, &names, pos, Some(&left.1));
                                let r = self.field_of(&right.0, &names, pos, Some(&right.1));
                                Expr::Call(Func::Coalesce, vec![l, r])
                            }
                            (false, false, _) => {
                                self.err(
                                    pos,
                                    format!("neither side of the join has a column '{}'", names[0]),
                                    "check the spelling, or qualify it with the stream alias",
                                );
                                lit_null()
                            }
                        }
                    }
                }
            }
            Shape::Pattern {
                stream,
                alias,
                symbols,
                defining,
            } => {
                let rest = strip_qualifier(&names, &[alias.as_deref(), Some(stream.name.as_str())]);
                let (symbol, rest) = match symbols
                    .iter()
                    .position(|s| rest.len() > 1 && s.eq_ignore_ascii_case(rest[0]))
                {
                    Some(i) => (Some(i), &rest[1..]),
                    None => (None, rest),
                };
                let Expr::Field(field) = self.field_of(stream, &rest[..1], pos, None) else {
                    return lit_null();
                };
                let nav = match (symbol, defining) {
                    (None, _) => Nav::Current,
                    (Some(s), Some(d)) if s == *d => Nav::Current,
                    (Some(_), _) => Nav::Last(0),
                };
                let path = rest[1..]
                    .iter()
                    .map(|k| PathSeg::Key(Arc::from(*k)))
                    .collect();
                Expr::Pattern(PatternRef {
                    symbol,
                    nav,
                    field,
                    path,
                })
            }
            Shape::Rows(known) => {
                if !known.iter().any(|k| k.eq_ignore_ascii_case(names[0])) {
                    let hint = closest(names[0], known.iter().map(|k| &**k))
                        .map(|c| format!("did you mean '{c}'?"))
                        .unwrap_or_else(|| {
                            format!("MATCH_RECOGNIZE outputs: {}", known.join(", "))
                        });
                    self.err(pos, format!("unknown column '{}'", names[0]), hint);
                    return lit_null();
                }
                let path = names[1..]
                    .iter()
                    .map(|k| PathSeg::Key(Arc::from(*k)))
                    .collect();
                push_path(Expr::field(names[0]), path)
            }
        }
    }

    /// A field of one stream: checked against the schema of typed streams, nested parts as a path.
    fn field_of(
        &mut self,
        stream: &StreamDef,
        names: &[&str],
        pos: Pos,
        prefix: Option<&str>,
    ) -> Expr {
        let Some(first) = names.first() else {
            return lit_null();
        };
        let name: Arc<str> = match (&stream.columns, stream.column(first)) {
            (Some(_), Some(c)) => c.name.clone(),
            (None, _) => Arc::from(*first),
            (Some(cols), None) => {
                let hint = closest(first, cols.iter().map(|c| &*c.name))
                    .map(|c| format!("did you mean '{c}'?"))
                    .unwrap_or_else(|| {
                        format!(
                            "the columns of {} are: {}",
                            stream.name,
                            cols.iter()
                                .map(|c| c.name.to_string())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    });
                self.err(
                    pos,
                    format!("stream {} has no column '{first}'", stream.name),
                    hint,
                );
                return lit_null();
            }
        };
        let full: Arc<str> = match prefix {
            Some(p) => Arc::from(format!("{p}.{name}")),
            None => name,
        };
        let path = names[1..]
            .iter()
            .map(|k| PathSeg::Key(Arc::from(*k)))
            .collect();
        push_path(Expr::Field(full), path)
    }

    fn bind_function(&mut self, f: &ast::Function, e: &ast::Expr, ctx: &mut Ctx) -> Expr {
        let pos = span_of(e);
        let name = f.name.to_string().to_ascii_lowercase();
        let args = function_args(f);
        let star = function_has_star(f);
        let distinct = matches!(&f.args, FunctionArguments::List(l) if l.duplicate_treatment == Some(ast::DuplicateTreatment::Distinct));
        let pattern_shape = matches!(ctx.shape, Shape::Pattern { .. });
        self.refuse(clauses::function(f));
        let aggregate = AggFunc::lookup(&name).is_some();
        if !f.within_group.is_empty() && !name.starts_with("percentile") {
            self.err(
                pos,
                format!("WITHIN GROUP does not apply to {name}()"),
                "WITHIN GROUP (ORDER BY x) belongs to percentile_cont(p)",
            );
        }
        if f.filter.is_some() && !aggregate {
            self.err(
                pos,
                format!("FILTER (WHERE ...) applies to aggregates, not to {name}()"),
                "filter rows with WHERE, or use CASE WHEN ... THEN ... END",
            );
        }
        if f.over.is_some() && aggregate && !pattern_shape {
            self.err(
                pos,
                format!("{name}() OVER (...) is not supported: aggregates run over a window of GROUP BY"),
                "write GROUP BY key, SLIDING(ts, INTERVAL '10' SECOND) for an aggregate over each row's last 10 s, or COUNT_WINDOW(n, 1) over its last n rows",
            );
            return lit_null();
        }

        if pattern_shape {
            if let Some(nav_expr) = self.bind_navigation(&name, &args, ctx, pos) {
                return nav_expr;
            }
        }
        if ctx.group_keys.is_some()
            && (name == "window_start" || name == "window_end")
            && args.is_empty()
        {
            return Expr::Slot(if name == "window_start" {
                Aggregate::WINDOW_START
            } else {
                Aggregate::WINDOW_END
            });
        }
        // Flink's group window auxiliary functions: TUMBLE_START(ts, size) and the like.
        if let Some((window, part)) = name
            .split_once('_')
            .filter(|(w, _)| matches!(*w, "tumble" | "hop" | "session"))
        {
            if matches!(part, "start" | "end" | "rowtime" | "proctime") {
                if ctx.group_keys.is_none() {
                    self.err(
                        pos,
                        format!(
                            "{name}() belongs to a rule grouped by {}(...)",
                            window.to_uppercase()
                        ),
                        "GROUP BY the window, or read window_start and window_end",
                    );
                    return lit_null();
                }
                return match part {
                    "start" => Expr::Slot(Aggregate::WINDOW_START),
                    "end" => Expr::Slot(Aggregate::WINDOW_END),
                    "rowtime" => window_time(),
                    _ => {
                        self.err(
                            pos,
                            format!("{name}() is not supported: windows are in event time"),
                            "read window_start or window_end",
                        );
                        lit_null()
                    }
                };
            }
        }
        if matches!(name.as_str(), "changed" | "lag" | "delta") {
            return self.bind_change(&name, f, &args, ctx, pos);
        }
        if let Some(mut func) = AggFunc::lookup(&name) {
            if star && func == AggFunc::Count {
                func = AggFunc::CountStar;
            }
            let mut value_args: Vec<&ast::Expr> = args.clone();
            if let AggFunc::Percentile(_) = func {
                if name != "median" {
                    let frac = if !f.within_group.is_empty() {
                        let p = args
                            .first()
                            .and_then(|a| literal(a))
                            .and_then(|v| v.as_f64());
                        value_args = f.within_group.iter().map(|o| &o.expr).collect();
                        p
                    } else if args.len() == 2 {
                        let p = literal(args[1]).and_then(|v| v.as_f64());
                        value_args.truncate(1);
                        p
                    } else {
                        None
                    };
                    match frac {
                        Some(p) if (0.0..=1.0).contains(&p) => func = AggFunc::Percentile(p),
                        _ => {
                            self.err(
                                pos,
                                format!("{name} needs a fraction between 0 and 1"),
                                format!("write {name}(value, 0.95)"),
                            );
                            return lit_null();
                        }
                    }
                }
            }
            if value_args.len() != func.arity() {
                self.err(
                    pos,
                    format!(
                        "{name} takes {} argument(s), got {}",
                        func.arity(),
                        value_args.len()
                    ),
                    aggregate_usage(func),
                );
                return lit_null();
            }
            return self.bind_aggregate_call(func, &value_args, distinct, f, ctx, pos);
        }
        let Some(info) = Func::lookup(&name) else {
            let mut candidates: Vec<&str> = FUNCTIONS.iter().map(|f| f.name).collect();
            candidates.extend([
                "count",
                "sum",
                "avg",
                "min",
                "max",
                "stddev",
                "variance",
                "percentile",
                "median",
                "first_value",
                "last_value",
                "regr_slope",
                "regr_intercept",
                "changed",
                "lag",
                "delta",
            ]);
            let hint = closest(&name, candidates)
                .map(|c| format!("did you mean {c}()?"))
                .unwrap_or_else(|| "`weir functions` lists the built-in functions".to_owned());
            self.err(pos, format!("unknown function {name}()"), hint);
            return lit_null();
        };
        if f.over.is_some() {
            self.err(
                pos,
                format!("{name}() is not a window function"),
                "OVER applies to changed(), lag() and delta()",
            );
        }
        if args.len() < info.min_args || args.len() > info.max_args {
            let arity = if info.max_args == usize::MAX {
                format!("at least {}", info.min_args)
            } else if info.min_args == info.max_args {
                info.min_args.to_string()
            } else {
                format!("{} to {}", info.min_args, info.max_args)
            };
            self.err(
                pos,
                format!("{name}() takes {arity} argument(s), got {}", args.len()),
                format!("{name}: {}", info.doc),
            );
            return lit_null();
        }
        let bound = args.iter().map(|a| self.bind_expr(a, ctx)).collect();
        Expr::Call(info.func, bound)
    }

    fn bind_aggregate_call(
        &mut self,
        func: AggFunc,
        args: &[&ast::Expr],
        distinct: bool,
        f: &ast::Function,
        ctx: &mut Ctx,
        pos: Pos,
    ) -> Expr {
        if let Shape::Pattern { .. } = ctx.shape {
            // An aggregate over the rows of one symbol: AVG(A.price), COUNT(A.*).
            let symbol = args
                .first()
                .and_then(|a| pattern_symbol(a, &ctx.shape))
                .or_else(|| star_symbol(f, &ctx.shape));
            let arg = args.first().map(|a| {
                let saved = ctx.shape.clone();
                if let Shape::Pattern { defining, .. } = &mut ctx.shape {
                    *defining = symbol;
                }
                let b = self.bind_expr(a, ctx);
                ctx.shape = saved;
                Box::new(b)
            });
            return Expr::PatternAgg(PatternAgg { func, symbol, arg });
        }
        if !ctx.allow_aggs || ctx.in_agg {
            let why = if ctx.in_agg {
                "aggregates cannot be nested"
            } else {
                "aggregates need GROUP BY (with a window) or a SELECT of aggregates only"
            };
            self.err(
                pos,
                why,
                "write SELECT key, avg(x) FROM s GROUP BY key, TUMBLE(ts, INTERVAL '1' SECOND)",
            );
            return lit_null();
        }
        ctx.in_agg = true;
        let bound: Vec<Expr> = args.iter().map(|a| self.bind_expr(a, ctx)).collect();
        let filter = f.filter.as_ref().map(|w| self.bind_expr(w, ctx));
        ctx.in_agg = false;
        ctx.aggs.push(AggCall {
            func,
            args: bound,
            distinct,
            filter,
        });
        Expr::Slot(AGG_MARK + ctx.aggs.len() - 1)
    }

    /// `PREV`, `FIRST`, `LAST` inside `MATCH_RECOGNIZE`.
    fn bind_navigation(
        &mut self,
        name: &str,
        args: &[&ast::Expr],
        ctx: &mut Ctx,
        pos: Pos,
    ) -> Option<Expr> {
        if !matches!(name, "prev" | "first" | "last") {
            return None;
        }
        let offset = match args.get(1) {
            None => 0,
            Some(a) => match literal(a).and_then(|v| v.as_i64()) {
                Some(n) if n >= 0 => n as usize,
                _ => {
                    self.err(
                        pos,
                        format!("{} takes a non-negative whole offset", name.to_uppercase()),
                        format!("write {}(A.x, 1)", name.to_uppercase()),
                    );
                    0
                }
            },
        };
        let Some(arg) = args.first() else {
            self.err(
                pos,
                format!("{} needs a column", name.to_uppercase()),
                format!("write {}(x)", name.to_uppercase()),
            );
            return Some(lit_null());
        };
        if name == "prev" && offset > MAX_PREV {
            self.err(
                pos,
                format!("PREV reaches back at most {MAX_PREV} rows, not {offset}"),
                "each partition keeps that many rows before a match for PREV; compare with an aggregate such as avg(A.x) for longer histories",
            );
        }
        match self.bind_expr(arg, ctx) {
            Expr::Pattern(mut r) => {
                r.nav = match name {
                    "prev" => Nav::Prev(offset.max(1)),
                    "first" => Nav::First(offset),
                    _ => Nav::Last(offset),
                };
                Some(Expr::Pattern(r))
            }
            _ => {
                self.err(
                    pos,
                    format!("{} takes a column reference", name.to_uppercase()),
                    format!("write {}(A.price)", name.to_uppercase()),
                );
                Some(lit_null())
            }
        }
    }

    /// The `OVER` of a change function, with a named window (`OVER w ... WINDOW w AS (...)`)
    /// resolved; an unknown name is an error.
    fn window_spec(
        &mut self,
        over: Option<&ast::WindowType>,
        ctx: &Ctx,
        pos: Pos,
    ) -> Option<ast::WindowSpec> {
        let mut spec = match over? {
            ast::WindowType::WindowSpec(s) => s.clone(),
            ast::WindowType::NamedWindow(name) => ast::WindowSpec {
                window_name: Some(name.clone()),
                partition_by: Vec::new(),
                order_by: Vec::new(),
                window_frame: None,
            },
        };
        // A named window may build on another: its PARTITION BY comes from there.
        for _ in 0..ctx.named_windows.len() + 1 {
            let Some(name) = spec.window_name.take() else {
                return Some(spec);
            };
            let Some(def) = ctx
                .named_windows
                .iter()
                .find(|d| d.0.value.eq_ignore_ascii_case(&name.value))
            else {
                let names: Vec<&str> = ctx
                    .named_windows
                    .iter()
                    .map(|d| d.0.value.as_str())
                    .collect();
                self.err(
                    name.span,
                    format!("window '{}' is not defined", name.value),
                    match names.is_empty() {
                        true => {
                            "define it after the query: WINDOW w AS (PARTITION BY key)".to_owned()
                        }
                        false => format!("the rule defines: {}", names.join(", ")),
                    },
                );
                return None;
            };
            let base = match &def.1 {
                ast::NamedWindowExpr::NamedWindow(other) => ast::WindowSpec {
                    window_name: Some(other.clone()),
                    partition_by: Vec::new(),
                    order_by: Vec::new(),
                    window_frame: None,
                },
                ast::NamedWindowExpr::WindowSpec(s) => s.clone(),
            };
            if spec.partition_by.is_empty() {
                spec.partition_by = base.partition_by;
            }
            if spec.order_by.is_empty() {
                spec.order_by = base.order_by;
            }
            spec.window_frame = spec.window_frame.or(base.window_frame);
            spec.window_name = base.window_name;
        }
        self.err(
            pos,
            "named windows refer to each other in a loop",
            "define each window once, from PARTITION BY",
        );
        None
    }

    fn bind_change(
        &mut self,
        name: &str,
        f: &ast::Function,
        args: &[&ast::Expr],
        ctx: &mut Ctx,
        pos: Pos,
    ) -> Expr {
        let (min, max) = if name == "lag" { (1, 3) } else { (1, 1) };
        if args.len() < min || args.len() > max {
            let usage = if name == "lag" {
                "lag(x [, n [, default]])"
            } else if name == "changed" {
                "changed(x)"
            } else {
                "delta(x)"
            };
            self.err(
                pos,
                format!(
                    "{name}() takes {}",
                    if name == "lag" {
                        "1 to 3 arguments"
                    } else {
                        "1 argument"
                    }
                ),
                format!("write {usage}"),
            );
            return lit_null();
        }
        if ctx.changes.is_none() {
            self.err(
                pos,
                format!("{name}() keeps state per row and cannot be used in a grouped query"),
                "compute it in a rule of its own and aggregate its output stream",
            );
            return lit_null();
        }
        if let Some(spec) = self.window_spec(f.over.as_ref(), ctx, pos) {
            self.refuse(clauses::window_spec(&spec, pos));
            match &ctx.change_partition {
                Some((prev, _)) if *prev != spec.partition_by => {
                    self.err(
                        pos,
                        "change functions of one rule must share one PARTITION BY",
                        "use the same OVER (PARTITION BY ...) everywhere in the rule",
                    );
                }
                _ => ctx.change_partition = Some((spec.partition_by.clone(), pos)),
            }
        }
        let arg = self.bind_expr(args[0], ctx);
        let kind = match name {
            "changed" => ChangeKind::Changed,
            "delta" => ChangeKind::Delta,
            _ => match args.get(1).map(|a| literal(a).and_then(|v| v.as_i64())) {
                None => ChangeKind::Lag(1),
                Some(Some(n)) if n >= 1 => ChangeKind::Lag(n as usize),
                Some(_) => {
                    self.err(
                        pos,
                        "lag's offset must be a whole number of at least 1",
                        "write lag(x, 2)",
                    );
                    ChangeKind::Lag(1)
                }
            },
        };
        let default = args.get(2).map(|d| self.bind_expr(d, ctx));
        let changes = ctx.changes.get_or_insert_with(Vec::new);
        changes.push(ChangeCall { kind, arg, default });
        Expr::Slot(changes.len() - 1)
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

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Side {
    Left,
    Right,
}

struct JoinSides<'a> {
    left: (&'a StreamDef, &'a str),
    right: (&'a StreamDef, &'a str),
}

impl JoinSides<'_> {
    fn side_named(&self, q: &str) -> Option<Side> {
        if q.eq_ignore_ascii_case(self.left.1) {
            Some(Side::Left)
        } else if q.eq_ignore_ascii_case(self.right.1) {
            Some(Side::Right)
        } else {
            None
        }
    }

    /// Which side an expression reads, if exactly one.
    fn side_of(&self, e: &ast::Expr) -> Option<Side> {
        let mut found = None;
        let mut mixed = false;
        visit_idents(e, &mut |ids| {
            let s = if ids.len() > 1 {
                self.side_named(&ids[0].value)
            } else {
                None
            };
            match (found, s) {
                (_, None) => mixed = true,
                (None, s) => found = s,
                (Some(a), Some(b)) if a != b => mixed = true,
                _ => {}
            }
        });
        if mixed {
            None
        } else {
            found
        }
    }

    /// `side.ts [+|- interval]...` as (side, offset ms).
    fn ts_term(&self, e: &ast::Expr) -> Option<(Side, i64)> {
        match e {
            ast::Expr::CompoundIdentifier(ids) if ids.len() == 2 => {
                let side = self.side_named(&ids[0].value)?;
                let stream = if side == Side::Left {
                    self.left.0
                } else {
                    self.right.0
                };
                let name = &ids[1].value;
                let is_time = name.eq_ignore_ascii_case("rowtime")
                    || stream
                        .timestamp
                        .as_deref()
                        .is_some_and(|ts| name.eq_ignore_ascii_case(ts));
                is_time.then_some((side, 0))
            }
            ast::Expr::Nested(x) => self.ts_term(x),
            ast::Expr::BinaryOp {
                left,
                op: op @ (BinaryOperator::Plus | BinaryOperator::Minus),
                right,
            } => {
                let (side, off) = self.ts_term(left)?;
                let ms = const_ms(right)?;
                Some((
                    side,
                    if *op == BinaryOperator::Plus {
                        off + ms
                    } else {
                        off - ms
                    },
                ))
            }
            _ => None,
        }
    }

    /// Bounds on `right.ts - left.ts` stated by one conjunct, as (lower, upper) pairs.
    fn time_bounds(&self, c: &ast::Expr) -> Option<Vec<(Option<i64>, Option<i64>)>> {
        match c {
            ast::Expr::Between {
                expr,
                negated: false,
                low,
                high,
            } => {
                let a = self.compare(expr, &BinaryOperator::GtEq, low)?;
                let b = self.compare(expr, &BinaryOperator::LtEq, high)?;
                Some(vec![a, b])
            }
            ast::Expr::BinaryOp { left, op, right } => Some(vec![self.compare(left, op, right)?]),
            ast::Expr::Nested(x) => self.time_bounds(x),
            _ => None,
        }
    }

    fn compare(
        &self,
        x: &ast::Expr,
        op: &BinaryOperator,
        y: &ast::Expr,
    ) -> Option<(Option<i64>, Option<i64>)> {
        let (sx, ox) = self.ts_term(x)?;
        let (sy, oy) = self.ts_term(y)?;
        if sx == sy {
            return None;
        }
        // x + ox  op  y + oy. Normalise to d = right - left  op'  c.
        let (op, c) = if sx == Side::Right {
            (op.clone(), oy - ox)
        } else {
            let flipped = match op {
                BinaryOperator::Lt => BinaryOperator::Gt,
                BinaryOperator::LtEq => BinaryOperator::GtEq,
                BinaryOperator::Gt => BinaryOperator::Lt,
                BinaryOperator::GtEq => BinaryOperator::LtEq,
                other => other.clone(),
            };
            (flipped, ox - oy)
        };
        Some(match op {
            BinaryOperator::GtEq => (Some(c), None),
            BinaryOperator::Gt => (Some(c + 1), None),
            BinaryOperator::LtEq => (None, Some(c)),
            BinaryOperator::Lt => (None, Some(c - 1)),
            BinaryOperator::Eq => (Some(c), Some(c)),
            _ => return None,
        })
    }
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
