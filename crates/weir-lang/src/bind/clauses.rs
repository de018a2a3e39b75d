//! Clauses that parse but that weir does not implement. Each is refused by name, with a hint,
//! so that no rule runs with a clause silently ignored: what `weir check` accepts is what runs.

use sqlparser::ast::{self, Spanned};

use crate::diag::Pos;

/// A clause refused: where, which, and what to write instead.
pub(super) struct Refused {
    pub pos: Pos,
    pub clause: String,
    pub hint: &'static str,
}

fn refused(pos: impl Into<Pos>, clause: impl Into<String>, hint: &'static str) -> Refused {
    Refused {
        pos: pos.into(),
        clause: clause.into(),
        hint,
    }
}

const ENDLESS: &str =
    "a rule's output is an endless stream: windows and MATCH_RECOGNIZE order and bound it";

/// `INSERT` clauses beyond `INSERT INTO <stream> SELECT ...`.
pub(super) fn insert(ins: &ast::Insert, pos: Pos) -> Vec<Refused> {
    let mut out = Vec::new();
    let mut add = |on: bool, clause: &str, hint| {
        if on {
            out.push(refused(pos, clause, hint));
        }
    };
    let plain = "write INSERT INTO <stream> SELECT ...";
    add(ins.overwrite, "INSERT OVERWRITE", plain);
    add(
        ins.or.is_some() || ins.ignore || ins.replace_into,
        "INSERT OR/IGNORE/REPLACE",
        plain,
    );
    add(ins.partitioned.is_some(), "PARTITION", plain);
    add(ins.on.is_some(), "ON CONFLICT / ON DUPLICATE KEY", plain);
    add(ins.returning.is_some(), "RETURNING", plain);
    add(ins.output.is_some(), "OUTPUT", plain);
    add(!ins.assignments.is_empty(), "SET", plain);
    add(
        ins.table_alias.is_some(),
        "an alias for the output stream",
        plain,
    );
    add(
        ins.settings.is_some() || ins.format_clause.is_some(),
        "SETTINGS / FORMAT",
        plain,
    );
    add(
        ins.priority.is_some() || ins.insert_alias.is_some(),
        "INSERT modifiers",
        plain,
    );
    add(
        ins.multi_table_insert_type.is_some(),
        "multi-table INSERT",
        "write one INSERT INTO ... SELECT per output stream",
    );
    out
}

/// Clauses of the query around the `SELECT`.
pub(super) fn query(q: &ast::Query, pos: Pos) -> Vec<Refused> {
    let mut out = Vec::new();
    if let Some(o) = &q.order_by {
        out.push(refused(o.span(), "ORDER BY", ENDLESS));
    }
    if let Some(l) = &q.limit_clause {
        out.push(refused(l.span(), "LIMIT / OFFSET", ENDLESS));
    }
    if q.fetch.is_some() {
        out.push(refused(pos, "FETCH FIRST", ENDLESS));
    }
    if let Some(w) = &q.with {
        out.push(refused(
            w.span(),
            "WITH",
            "write the subquery as a rule of its own that feeds a stream, and read that stream",
        ));
    }
    if !q.locks.is_empty() || q.for_clause.is_some() {
        out.push(refused(pos, "FOR UPDATE / FOR XML", ENDLESS));
    }
    if q.settings.is_some() || q.format_clause.is_some() || !q.pipe_operators.is_empty() {
        out.push(refused(pos, "SETTINGS / FORMAT / pipe operators", ENDLESS));
    }
    out
}

/// Clauses of the `SELECT` that the binder does not take.
pub(super) fn select(s: &ast::Select, pos: Pos) -> Vec<Refused> {
    let mut out = Vec::new();
    if let Some(q) = &s.qualify {
        out.push(refused(
            q.span(),
            "QUALIFY",
            "filter a window's results with HAVING, or in a rule reading this rule's output",
        ));
    }
    let by = |e: &[ast::Expr]| e.first().map_or(pos, |e| Pos::from(e.span()));
    if !s.sort_by.is_empty() {
        out.push(refused(pos, "SORT BY", ENDLESS));
    }
    if !s.cluster_by.is_empty() {
        out.push(refused(
            by(&s.cluster_by),
            "CLUSTER BY",
            "keys are distributed over workers by GROUP BY, PARTITION BY and join keys",
        ));
    }
    if !s.distribute_by.is_empty() {
        out.push(refused(
            by(&s.distribute_by),
            "DISTRIBUTE BY",
            "keys are distributed over workers by GROUP BY, PARTITION BY and join keys",
        ));
    }
    if s.top.is_some() {
        out.push(refused(pos, "TOP", ENDLESS));
    }
    if s.into.is_some() {
        out.push(refused(
            pos,
            "SELECT INTO",
            "write INSERT INTO <stream> SELECT ...",
        ));
    }
    if !s.lateral_views.is_empty() {
        out.push(refused(
            pos,
            "LATERAL VIEW",
            "read arrays with json_path(), element_at() or a[0]",
        ));
    }
    if let Some(p) = &s.prewhere {
        out.push(refused(p.span(), "PREWHERE", "use WHERE"));
    }
    if !s.connect_by.is_empty() {
        out.push(refused(pos, "CONNECT BY", ENDLESS));
    }
    if s.exclude.is_some() {
        out.push(refused(
            pos,
            "SELECT * EXCLUDE",
            "list the fields to output",
        ));
    }
    if s.select_modifiers.is_some() || !s.optimizer_hints.is_empty() || s.value_table_mode.is_some()
    {
        out.push(refused(pos, "SELECT modifiers", "write a plain SELECT"));
    }
    let (ast::GroupByExpr::Expressions(_, modifiers) | ast::GroupByExpr::All(modifiers)) =
        &s.group_by;
    if !modifiers.is_empty() {
        out.push(refused(
            pos,
            "GROUP BY ... WITH ROLLUP / CUBE / TOTALS",
            "group by the keys and a window; compute totals in a rule of their own",
        ));
    }
    if !matches!(s.flavor, ast::SelectFlavor::Standard) {
        out.push(refused(
            pos,
            "FROM-first SELECT",
            "write SELECT ... FROM ...",
        ));
    }
    out
}

/// Modifiers of a stream name in `FROM` or `JOIN`.
pub(super) fn table(t: &ast::TableFactor) -> Vec<Refused> {
    let ast::TableFactor::Table {
        name,
        args,
        with_hints,
        version,
        with_ordinality,
        partitions,
        json_path,
        sample,
        index_hints,
        ..
    } = t
    else {
        return Vec::new();
    };
    let pos = Pos::from(name.span());
    let mut out = Vec::new();
    if sample.is_some() {
        out.push(refused(
            pos,
            "TABLESAMPLE",
            "sample a stream with a filter on a hash or a counter, or a COUNT_WINDOW",
        ));
    }
    if version.is_some() {
        out.push(refused(
            pos,
            "FOR SYSTEM_TIME AS OF",
            "streams join within a time bound: JOIN ... ON ... AND b.ts BETWEEN a.ts - INTERVAL '5' SECOND AND a.ts",
        ));
    }
    if args.is_some() {
        out.push(refused(pos, "a table function", "FROM takes a stream name"));
    }
    if !with_hints.is_empty() || !index_hints.is_empty() || !partitions.is_empty() {
        out.push(refused(
            pos,
            "table hints / PARTITION",
            "FROM takes a stream name",
        ));
    }
    if *with_ordinality || json_path.is_some() {
        out.push(refused(
            pos,
            "WITH ORDINALITY / a JSON path",
            "FROM takes a stream name",
        ));
    }
    out
}

/// Parts of a function call that the binder does not take.
pub(super) fn function(f: &ast::Function) -> Vec<Refused> {
    let pos = Pos::from(f.span());
    let mut out = Vec::new();
    if f.null_treatment.is_some() {
        out.push(refused(
            pos,
            "IGNORE NULLS / RESPECT NULLS",
            "aggregates skip nulls; lag() and changed() take every value",
        ));
    }
    if !matches!(f.parameters, ast::FunctionArguments::None) {
        out.push(refused(
            pos,
            "function parameters",
            "call it with its arguments only",
        ));
    }
    if let ast::FunctionArguments::List(l) = &f.args {
        if !l.clauses.is_empty() {
            out.push(refused(
                pos,
                "ORDER BY / LIMIT / SEPARATOR inside a function call",
                "aggregates take their arguments only; first_value and last_value go by event time",
            ));
        }
    }
    out
}

/// Parts of an `OVER (...)` window that change functions do not take: they run over each
/// partition's rows in event time, one result per row.
pub(super) fn window_spec(spec: &ast::WindowSpec, pos: Pos) -> Vec<Refused> {
    let mut out = Vec::new();
    if !spec.order_by.is_empty() {
        out.push(refused(
            pos,
            "ORDER BY inside OVER",
            "change functions follow event time; write OVER (PARTITION BY ...)",
        ));
    }
    if spec.window_frame.is_some() {
        out.push(refused(
            pos,
            "a window frame (ROWS / RANGE BETWEEN) inside OVER",
            "for an aggregate over the last rows or time, GROUP BY a COUNT_WINDOW or SLIDING window",
        ));
    }
    out
}
