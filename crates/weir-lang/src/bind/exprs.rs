//! Binding expressions: columns and fields, operators, casts and function calls.

use super::*;

impl Binder {
    pub(super) fn bind_expr(&mut self, e: &ast::Expr, ctx: &mut Ctx) -> Expr {
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

    pub(super) fn column(&mut self, ids: &[ast::Ident], ctx: &mut Ctx, pos: Pos) -> Expr {
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
    pub(super) fn field_of(
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

    pub(super) fn bind_function(
        &mut self,
        f: &ast::Function,
        e: &ast::Expr,
        ctx: &mut Ctx,
    ) -> Expr {
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
}
