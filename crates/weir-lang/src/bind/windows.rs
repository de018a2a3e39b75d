//! Binding windows and aggregates: `GROUP BY` windows, window TVFs, named windows, aggregate calls.

use super::*;

impl Binder {
    pub(super) fn bind_aggregate(
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
    pub(super) fn window_tvf(
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

    pub(super) fn bind_window(
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
    pub(super) fn check_time_arg(
        &mut self,
        e: &ast::Expr,
        ctx: &Ctx,
        usage: &str,
    ) -> Option<JoinTime> {
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

    pub(super) fn bind_aggregate_call(
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

    /// The `OVER` of a change function, with a named window (`OVER w ... WINDOW w AS (...)`)
    /// resolved; an unknown name is an error.
    pub(super) fn window_spec(
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
}
