//! Bound expressions and their evaluation. The binder turns SQL text into [`Expr`]; operators
//! evaluate them against a [`Scope`], which is generic so the common case (one row) costs no
//! dynamic dispatch.

use std::cmp::Ordering;
use std::sync::Arc;

use weir_core::{Row, Value};

use crate::functions::Func;
use crate::types::DataType;

/// What an expression can see while it is evaluated.
pub trait Scope {
    /// A top-level field of the current row; `None` when absent.
    fn field(&self, name: &str) -> Option<&Value>;
    /// A value the operator computed beforehand (aggregate results, window bounds, change
    /// functions).
    fn slot(&self, _index: usize) -> Value {
        Value::Null
    }
    /// Navigation inside a `MATCH_RECOGNIZE` match.
    fn pattern_ref(&self, _r: &PatternRef) -> Value {
        Value::Null
    }
    /// An aggregate over the rows a match assigned to a symbol.
    fn pattern_agg(&self, _a: &PatternAgg) -> Value {
        Value::Null
    }
}

impl Scope for Row {
    fn field(&self, name: &str) -> Option<&Value> {
        self.get(name)
    }
}

/// A row plus slots: what grouped and stateful projections evaluate against.
pub struct SlotScope<'a> {
    /// The row.
    pub row: &'a Row,
    /// The values an operator computed for it (window bounds, keys, aggregates, change
    /// functions).
    pub slots: &'a [Value],
}

impl Scope for SlotScope<'_> {
    fn field(&self, name: &str) -> Option<&Value> {
        self.row.get(name)
    }
    fn slot(&self, index: usize) -> Value {
        self.slots.get(index).cloned().unwrap_or_default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// A binary operator.
pub enum BinOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `%`
    Mod,
    /// `=`
    Eq,
    /// `<>` or `!=`
    NotEq,
    /// `<`
    Lt,
    /// `<=`
    LtEq,
    /// `>`
    Gt,
    /// `>=`
    GtEq,
    /// `AND`
    And,
    /// `OR`
    Or,
    /// `||`
    Concat,
}

/// One step into a nested value: an object key or an array index.
#[derive(Debug, Clone, PartialEq)]
pub enum PathSeg {
    /// An object key.
    Key(Arc<str>),
    /// An array index (negative counts from the end).
    Index(i64),
}

/// Where navigation inside a match starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    /// The row being classified (in `DEFINE`) or the last row of the match (in `MEASURES`).
    Current,
    /// The last row mapped to the symbol (`A.x`, `LAST(A.x, n)` with offset n).
    Last(usize),
    /// The first row mapped to the symbol (`FIRST(A.x, n)`).
    First(usize),
    /// `PREV(x, n)`: n rows before the current one in the partition.
    Prev(usize),
}

/// A reference to a field of a row inside a match.
#[derive(Debug, Clone, PartialEq)]
pub struct PatternRef {
    /// Index of the symbol, `None` for "any symbol" (unqualified column).
    pub symbol: Option<usize>,
    /// Which row of the match.
    pub nav: Nav,
    /// The field of that row.
    pub field: Arc<str>,
    /// Steps into the field's nested value.
    pub path: Vec<PathSeg>,
}

/// An aggregate over the rows of a match mapped to one symbol (or all rows).
#[derive(Debug, Clone, PartialEq)]
pub struct PatternAgg {
    /// The aggregate.
    pub func: crate::plan::AggFunc,
    /// The symbol whose rows it reads, `None` for every row of the match.
    pub symbol: Option<usize>,
    /// Evaluated against each row of the symbol; `None` for `COUNT(*)`.
    pub arg: Option<Box<Expr>>,
}

#[derive(Debug, Clone, PartialEq)]
/// A bound expression, evaluated against a row (and an operator's slots).
pub enum Expr {
    /// A literal.
    Lit(Value),
    /// A field of the row.
    Field(Arc<str>),
    /// Nested access into a JSON value: `a.b[0]`, `a['k']`.
    Path(Box<Expr>, Vec<PathSeg>),
    /// A value the operator computed (see [`SlotScope`]).
    Slot(usize),
    /// Arithmetic negation.
    Neg(Box<Expr>),
    /// Logical negation.
    Not(Box<Expr>),
    /// A binary operation.
    Binary(BinOp, Box<Expr>, Box<Expr>),
    /// `IS NULL`, or `IS NOT NULL` when the flag is set.
    IsNull(Box<Expr>, bool),
    /// `IN (...)`, or `NOT IN` when the flag is set.
    InList(Box<Expr>, Vec<Expr>, bool),
    /// `BETWEEN low AND high`, or `NOT BETWEEN` when the flag is set.
    Between(Box<Expr>, Box<Expr>, Box<Expr>, bool),
    /// `LIKE` (or `ILIKE`) with `%` and `_`.
    Like {
        /// The text matched.
        expr: Box<Expr>,
        /// The pattern.
        pattern: Box<Expr>,
        /// `NOT LIKE`.
        negated: bool,
        /// `ILIKE`.
        case_insensitive: bool,
    },
    /// `CASE [operand] WHEN ... THEN ... [ELSE ...] END`.
    Case {
        /// The value compared with each `WHEN`, if any.
        operand: Option<Box<Expr>>,
        /// Each `WHEN` and its `THEN`.
        whens: Vec<(Expr, Expr)>,
        /// `ELSE`.
        otherwise: Option<Box<Expr>>,
    },
    /// `CAST(x AS type)`, or `TRY_CAST` (null instead of an error) when the flag is set.
    Cast(Box<Expr>, DataType, bool),
    /// A built-in scalar function.
    Call(Func, Vec<Expr>),
    /// A field of a row of a `MATCH_RECOGNIZE` match.
    Pattern(PatternRef),
    /// An aggregate over rows of a match.
    PatternAgg(PatternAgg),
}

impl Expr {
    /// The field `name`.
    pub fn field(name: &str) -> Expr {
        Expr::Field(Arc::from(name))
    }

    /// The value of the expression for `s`.
    pub fn eval<S: Scope + ?Sized>(&self, s: &S) -> Value {
        match self {
            Expr::Lit(v) => v.clone(),
            Expr::Field(name) => s.field(name).cloned().unwrap_or_default(),
            Expr::Path(base, path) => walk_path(&base.eval(s), path),
            Expr::Slot(i) => s.slot(*i),
            Expr::Neg(e) => match e.eval(s) {
                Value::Int(i) => Value::Int(i.wrapping_neg()),
                Value::Float(f) => Value::Float(-f),
                _ => Value::Null,
            },
            Expr::Not(e) => match e.eval(s) {
                Value::Bool(b) => Value::Bool(!b),
                _ => Value::Null,
            },
            Expr::Binary(op, l, r) => eval_binary(*op, l, r, s),
            Expr::IsNull(e, negated) => Value::Bool(e.eval(s).is_null() != *negated),
            Expr::InList(e, list, negated) => {
                let v = e.eval(s);
                if v.is_null() {
                    return Value::Null;
                }
                let found = list.iter().any(|x| x.eval(s) == v);
                Value::Bool(found != *negated)
            }
            Expr::Between(e, lo, hi, negated) => {
                let v = e.eval(s);
                match (v.sql_cmp(&lo.eval(s)), v.sql_cmp(&hi.eval(s))) {
                    (Some(a), Some(b)) => {
                        Value::Bool((a != Ordering::Less && b != Ordering::Greater) != *negated)
                    }
                    _ => Value::Null,
                }
            }
            Expr::Like {
                expr,
                pattern,
                negated,
                case_insensitive,
            } => match (expr.eval(s), pattern.eval(s)) {
                (Value::Str(t), Value::Str(p)) => {
                    Value::Bool(like(&t, &p, *case_insensitive) != *negated)
                }
                _ => Value::Null,
            },
            Expr::Case {
                operand,
                whens,
                otherwise,
            } => {
                let base = operand.as_ref().map(|o| o.eval(s));
                for (w, then) in whens {
                    let hit = match &base {
                        Some(b) => !b.is_null() && *b == w.eval(s),
                        None => w.eval(s).is_true(),
                    };
                    if hit {
                        return then.eval(s);
                    }
                }
                otherwise.as_ref().map(|o| o.eval(s)).unwrap_or_default()
            }
            Expr::Cast(e, ty, _) => ty.cast(&e.eval(s)).unwrap_or_default(),
            Expr::Call(f, args) => f.call(args, s),
            Expr::Pattern(r) => s.pattern_ref(r),
            Expr::PatternAgg(a) => s.pattern_agg(a),
        }
    }

    /// Visits this expression and every expression inside it, parents first, for rewrites.
    pub fn walk_mut(&mut self, f: &mut dyn FnMut(&mut Expr)) {
        f(self);
        match self {
            Expr::Path(b, _) | Expr::Neg(b) | Expr::Not(b) | Expr::IsNull(b, _) => b.walk_mut(f),
            Expr::Cast(b, _, _) => b.walk_mut(f),
            Expr::Binary(_, l, r) => {
                l.walk_mut(f);
                r.walk_mut(f);
            }
            Expr::InList(e, list, _) => {
                e.walk_mut(f);
                list.iter_mut().for_each(|x| x.walk_mut(f));
            }
            Expr::Between(a, b, c, _) => {
                a.walk_mut(f);
                b.walk_mut(f);
                c.walk_mut(f);
            }
            Expr::Like { expr, pattern, .. } => {
                expr.walk_mut(f);
                pattern.walk_mut(f);
            }
            Expr::Case {
                operand,
                whens,
                otherwise,
            } => {
                if let Some(o) = operand {
                    o.walk_mut(f);
                }
                for (w, t) in whens {
                    w.walk_mut(f);
                    t.walk_mut(f);
                }
                if let Some(o) = otherwise {
                    o.walk_mut(f);
                }
            }
            Expr::Call(_, args) => args.iter_mut().for_each(|a| a.walk_mut(f)),
            Expr::PatternAgg(a) => {
                if let Some(arg) = &mut a.arg {
                    arg.walk_mut(f);
                }
            }
            Expr::Lit(_) | Expr::Field(_) | Expr::Slot(_) | Expr::Pattern(_) => {}
        }
    }
}

/// Follows a path into a nested value; missing steps give null.
pub fn walk_path(base: &Value, path: &[PathSeg]) -> Value {
    let mut cur = base;
    for seg in path {
        cur = match (cur, seg) {
            (Value::Object(o), PathSeg::Key(k)) => match o.get(k) {
                Some(v) => v,
                None => return Value::Null,
            },
            (Value::Array(a), PathSeg::Index(i)) => {
                let idx = if *i < 0 { a.len() as i64 + i } else { *i };
                match usize::try_from(idx).ok().and_then(|i| a.get(i)) {
                    Some(v) => v,
                    None => return Value::Null,
                }
            }
            (Value::Array(a), PathSeg::Key(k)) => {
                match k.parse::<usize>().ok().and_then(|i| a.get(i)) {
                    Some(v) => v,
                    None => return Value::Null,
                }
            }
            _ => return Value::Null,
        };
    }
    cur.clone()
}

fn eval_binary<S: Scope + ?Sized>(op: BinOp, l: &Expr, r: &Expr, s: &S) -> Value {
    match op {
        BinOp::And => {
            let a = l.eval(s);
            if matches!(a, Value::Bool(false)) {
                return Value::Bool(false);
            }
            match (a, r.eval(s)) {
                (_, Value::Bool(false)) => Value::Bool(false),
                (Value::Bool(true), Value::Bool(true)) => Value::Bool(true),
                _ => Value::Null,
            }
        }
        BinOp::Or => {
            let a = l.eval(s);
            if a.is_true() {
                return a;
            }
            match (a, r.eval(s)) {
                (_, Value::Bool(true)) => Value::Bool(true),
                (Value::Bool(false), Value::Bool(false)) => Value::Bool(false),
                _ => Value::Null,
            }
        }
        _ => binary(op, &l.eval(s), &r.eval(s)),
    }
}

/// Applies a non-short-circuit binary operator with SQL null semantics.
pub fn binary(op: BinOp, a: &Value, b: &Value) -> Value {
    if a.is_null() || b.is_null() {
        return Value::Null;
    }
    let cmp = |pred: fn(Ordering) -> bool| match a.sql_cmp(b) {
        Some(o) => Value::Bool(pred(o)),
        None => Value::Null,
    };
    match op {
        BinOp::Eq => Value::Bool(a == b),
        BinOp::NotEq => Value::Bool(a != b),
        BinOp::Lt => cmp(|o| o == Ordering::Less),
        BinOp::LtEq => cmp(|o| o != Ordering::Greater),
        BinOp::Gt => cmp(|o| o == Ordering::Greater),
        BinOp::GtEq => cmp(|o| o != Ordering::Less),
        BinOp::Concat => Value::from(a.to_text() + &b.to_text()),
        BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Mod => arith(op, a, b),
        BinOp::And | BinOp::Or => Value::Null,
    }
}

fn arith(op: BinOp, a: &Value, b: &Value) -> Value {
    if let (Value::Int(x), Value::Int(y)) = (a, b) {
        let r = match op {
            BinOp::Add => x.checked_add(*y),
            BinOp::Sub => x.checked_sub(*y),
            BinOp::Mul => x.checked_mul(*y),
            BinOp::Div => x.checked_div(*y),
            BinOp::Mod => x.checked_rem(*y),
            _ => None,
        };
        return r.map(Value::Int).unwrap_or_default();
    }
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => {
            let r = match op {
                BinOp::Add => x + y,
                BinOp::Sub => x - y,
                BinOp::Mul => x * y,
                BinOp::Div if y == 0.0 => return Value::Null,
                BinOp::Div => x / y,
                BinOp::Mod if y == 0.0 => return Value::Null,
                BinOp::Mod => x % y,
                _ => return Value::Null,
            };
            Value::Float(r)
        }
        _ => Value::Null,
    }
}

/// SQL `LIKE` with `%` and `_`, without building a regex.
pub fn like(text: &str, pattern: &str, case_insensitive: bool) -> bool {
    let (t, p): (Vec<char>, Vec<char>) = if case_insensitive {
        (
            text.to_lowercase().chars().collect(),
            pattern.to_lowercase().chars().collect(),
        )
    } else {
        (text.chars().collect(), pattern.chars().collect())
    };
    let (mut ti, mut pi) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && p[pi] == '\\' && pi + 1 < p.len() && p[pi + 1] == t[ti] {
            pi += 2;
            ti += 1;
        } else if pi < p.len() && (p[pi] == '_' || (p[pi] == t[ti] && p[pi] != '%')) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '%' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(sp) = star {
            pi = sp + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '%' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns() {
        assert!(like("sensor-12", "sensor-%", false));
        assert!(like("abc", "a_c", false));
        assert!(!like("abd", "a_c", false));
        assert!(like("ABC", "a%", true));
        assert!(like("a%b", "a\\%b", false));
        assert!(!like("axb", "a\\%b", false));
        assert!(like("", "%", false));
    }

    #[test]
    fn null_semantics() {
        assert_eq!(
            binary(BinOp::Add, &Value::Int(1), &Value::Null),
            Value::Null
        );
        assert_eq!(
            binary(BinOp::Div, &Value::Int(1), &Value::Int(0)),
            Value::Null
        );
        assert_eq!(
            binary(BinOp::Div, &Value::Float(1.0), &Value::Int(4)),
            Value::Float(0.25)
        );
        let f = Expr::Binary(
            BinOp::And,
            Box::new(Expr::Lit(Value::Null)),
            Box::new(Expr::Lit(Value::Bool(false))),
        );
        assert_eq!(f.eval(&Row::new()), Value::Bool(false));
    }
}
