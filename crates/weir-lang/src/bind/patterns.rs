//! Binding `MATCH_RECOGNIZE`: symbols, their conditions, navigation and measures.

use super::*;

impl Binder {
    pub(super) fn bind_pattern(
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

    pub(super) fn bind_pattern_expr(
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

    /// `PREV`, `FIRST`, `LAST` inside `MATCH_RECOGNIZE`.
    pub(super) fn bind_navigation(
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
}
