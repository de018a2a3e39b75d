//! Binding a rule, `INSERT INTO ... SELECT`: its input, its select list, its change functions.

use super::*;

impl Binder {
    pub(super) fn rule(&mut self, ins: &Insert, st: &ParsedStatement, n: usize) {
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

    /// The partition of change functions: their `OVER (PARTITION BY ...)`, else the stream key.
    pub(super) fn change_partition(&mut self, ctx: &mut Ctx) -> Vec<Expr> {
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

    pub(super) fn bind_from(
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

    pub(super) fn input_stream(&mut self, name: &ast::ObjectName) -> Option<StreamDef> {
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

    pub(super) fn bind_items(
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

    pub(super) fn bind_change(
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
}
