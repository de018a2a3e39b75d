//! Binding joins of two streams: the sides, the key equality and the time bounds.

use super::*;

impl Binder {
    pub(super) fn bind_join(
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
