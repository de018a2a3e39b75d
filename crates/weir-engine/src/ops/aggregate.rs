//! Accumulators for the aggregate functions. Each can add a value, merge another (session
//! windows merge), and give its result; all serialise for snapshots.

use std::collections::HashSet;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use weir_core::Value;
use weir_lang::plan::{AggCall, AggFunc};

/// The running state of one aggregate function over one group.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Acc {
    /// count: the rows (or non-null values) seen.
    Count(i64),
    /// sum: exact in integers until a fractional value or an overflow, then in floating point.
    Sum {
        /// The sum while it is exact.
        int: i64,
        /// The sum once it is in floating point.
        float: f64,
        /// Whether the sum is in `float`.
        floats: bool,
        /// How many values were added (a sum of none is null).
        n: i64,
    },
    /// Count, sum, mean and sum of squared deviations (Welford); serves avg (the sum over
    /// the count, as Flink and PostgreSQL compute it, so a result that rounds to a boundary
    /// rounds alike), stddev and variance.
    Moments {
        /// How many values.
        n: i64,
        /// Their sum.
        sum: f64,
        /// Their running mean.
        mean: f64,
        /// The sum of squared deviations from the mean.
        m2: f64,
    },
    /// min: the smallest value so far (null before any).
    Min(Value),
    /// max: the largest value so far.
    Max(Value),
    /// Every value, for percentiles (median included).
    Values(Vec<f64>),
    /// Earliest or latest by event time: (ts, value).
    First(Option<(i64, Value)>),
    /// The latest by event time: (ts, value).
    Last(Option<(i64, Value)>),
    /// Least-squares sums for regr_slope and regr_intercept.
    Regr(Regression),
    /// Every value with its event time, for collect.
    Collect(Vec<(i64, Value)>),
}

/// Least-squares sums over points shifted by the first point seen: x is often an epoch time
/// (~1e12 ms), whose squares would swamp the variance in the unshifted sums.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Regression {
    n: i64,
    x0: f64,
    y0: f64,
    sx: f64,
    sy: f64,
    sxx: f64,
    sxy: f64,
}

impl Regression {
    fn add(&mut self, x: f64, y: f64) {
        if self.n == 0 {
            (self.x0, self.y0) = (x, y);
        }
        let (dx, dy) = (x - self.x0, y - self.y0);
        self.n += 1;
        self.sx += dx;
        self.sy += dy;
        self.sxx += dx * dx;
        self.sxy += dx * dy;
    }

    /// Adds another accumulator's points, re-shifted to this one's origin.
    fn merge(&mut self, o: &Regression) {
        if o.n == 0 {
            return;
        }
        if self.n == 0 {
            *self = o.clone();
            return;
        }
        let (d, e, m) = (o.x0 - self.x0, o.y0 - self.y0, o.n as f64);
        self.n += o.n;
        self.sxx += o.sxx + 2.0 * d * o.sx + m * d * d;
        self.sxy += o.sxy + d * o.sy + e * o.sx + m * d * e;
        self.sx += o.sx + m * d;
        self.sy += o.sy + m * e;
    }

    /// (slope, intercept), or `None` for fewer than two distinct x.
    fn line(&self) -> Option<(f64, f64)> {
        let n = self.n as f64;
        let den = n * self.sxx - self.sx * self.sx;
        if self.n < 2 || den == 0.0 {
            return None;
        }
        let slope = (n * self.sxy - self.sx * self.sy) / den;
        let (mx, my) = (self.x0 + self.sx / n, self.y0 + self.sy / n);
        Some((slope, my - slope * mx))
    }
}

/// An accumulator with its call's `DISTINCT` bookkeeping.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Accumulator {
    acc: Acc,
    seen: Option<HashSet<Value>>,
}

impl Accumulator {
    /// An empty accumulator for `call`.
    pub fn new(call: &AggCall) -> Accumulator {
        Accumulator {
            acc: Acc::new(call.func),
            seen: call.distinct.then(HashSet::new),
        }
    }

    /// Adds one row's arguments at event time `ts` (under DISTINCT, a value seen before is
    /// skipped).
    pub fn add(&mut self, args: &[Value], ts: i64) {
        if let (Some(seen), Some(v)) = (self.seen.as_mut(), args.first()) {
            if !seen.insert(v.clone()) {
                return;
            }
        }
        self.acc.add(args, ts);
    }

    /// Takes in another group's accumulator (session windows that merge).
    pub fn merge(&mut self, other: &Accumulator) {
        match (self.seen.as_mut(), other.seen.as_ref()) {
            (Some(mine), Some(theirs)) => {
                // Re-adding distinct values is only exact for count/sum-like results when the
                // sets are disjoint; sessions merge disjoint event sets, so they are.
                mine.extend(theirs.iter().cloned());
                self.acc.merge(&other.acc);
            }
            _ => self.acc.merge(&other.acc),
        }
    }

    /// The aggregate's value now.
    pub fn result(&self, func: AggFunc) -> Value {
        self.acc.result(func)
    }
}

impl Acc {
    /// The empty state of function `f`.
    pub fn new(f: AggFunc) -> Acc {
        match f {
            AggFunc::Count | AggFunc::CountStar => Acc::Count(0),
            AggFunc::Sum => Acc::Sum {
                int: 0,
                float: 0.0,
                floats: false,
                n: 0,
            },
            AggFunc::Avg
            | AggFunc::StddevSamp
            | AggFunc::StddevPop
            | AggFunc::VarSamp
            | AggFunc::VarPop => Acc::Moments {
                n: 0,
                sum: 0.0,
                mean: 0.0,
                m2: 0.0,
            },
            AggFunc::Min => Acc::Min(Value::Null),
            AggFunc::Max => Acc::Max(Value::Null),
            AggFunc::Percentile(_) => Acc::Values(Vec::new()),
            AggFunc::FirstValue => Acc::First(None),
            AggFunc::LastValue => Acc::Last(None),
            AggFunc::RegrSlope | AggFunc::RegrIntercept => Acc::Regr(Regression::default()),
            AggFunc::Collect => Acc::Collect(Vec::new()),
        }
    }

    /// Adds one row's arguments; nulls are skipped, as SQL aggregates do (except `count(*)`).
    pub fn add(&mut self, args: &[Value], ts: i64) {
        let v = args.first().unwrap_or(&Value::Null);
        match self {
            Acc::Count(n) => {
                if args.is_empty() || !v.is_null() {
                    *n += 1
                }
            }
            Acc::Sum {
                int,
                float,
                floats,
                n,
            } => match v {
                Value::Int(i) if !*floats => match int.checked_add(*i) {
                    Some(s) => {
                        *int = s;
                        *n += 1;
                    }
                    None => {
                        *floats = true;
                        *float = *int as f64 + *i as f64;
                        *n += 1;
                    }
                },
                other => {
                    if let Some(x) = other.as_f64() {
                        if !*floats {
                            *floats = true;
                            *float = *int as f64;
                        }
                        *float += x;
                        *n += 1;
                    }
                }
            },
            Acc::Moments { n, sum, mean, m2 } => {
                if let Some(x) = v.as_f64() {
                    *n += 1;
                    *sum += x;
                    let d = x - *mean;
                    *mean += d / *n as f64;
                    *m2 += d * (x - *mean);
                }
            }
            Acc::Min(m) => {
                if !v.is_null() && (m.is_null() || v.total_cmp(m).is_lt()) {
                    *m = v.clone();
                }
            }
            Acc::Max(m) => {
                if !v.is_null() && (m.is_null() || v.total_cmp(m).is_gt()) {
                    *m = v.clone();
                }
            }
            Acc::Values(vs) => {
                if let Some(x) = v.as_f64() {
                    vs.push(x)
                }
            }
            Acc::First(cur) => {
                if !v.is_null() && cur.as_ref().is_none_or(|(t, _)| ts < *t) {
                    *cur = Some((ts, v.clone()));
                }
            }
            Acc::Last(cur) => {
                if !v.is_null() && cur.as_ref().is_none_or(|(t, _)| ts >= *t) {
                    *cur = Some((ts, v.clone()));
                }
            }
            Acc::Regr(r) => {
                if let (Some(y), Some(x)) = (v.as_f64(), args.get(1).and_then(Value::as_f64)) {
                    r.add(x, y);
                }
            }
            Acc::Collect(vs) => vs.push((ts, v.clone())),
        }
    }

    /// Takes in the state of another group of the same function.
    pub fn merge(&mut self, other: &Acc) {
        match (self, other) {
            (Acc::Count(a), Acc::Count(b)) => *a += b,
            (
                Acc::Sum {
                    int,
                    float,
                    floats,
                    n,
                },
                Acc::Sum {
                    int: i2,
                    float: f2,
                    floats: fl2,
                    n: n2,
                },
            ) => {
                if *floats || *fl2 {
                    let mine = if *floats { *float } else { *int as f64 };
                    let theirs = if *fl2 { *f2 } else { *i2 as f64 };
                    *float = mine + theirs;
                    *floats = true;
                } else {
                    *int += i2;
                }
                *n += n2;
            }
            (
                Acc::Moments { n, sum, mean, m2 },
                Acc::Moments {
                    n: n2,
                    sum: sum2,
                    mean: mean2,
                    m2: m22,
                },
            ) => {
                if *n2 == 0 {
                    return;
                }
                *sum += sum2;
                let total = *n + n2;
                let d = mean2 - *mean;
                *m2 += m22 + d * d * (*n as f64) * (*n2 as f64) / total as f64;
                *mean += d * (*n2 as f64) / total as f64;
                *n = total;
            }
            (me @ Acc::Min(_), Acc::Min(b)) | (me @ Acc::Max(_), Acc::Max(b)) => {
                me.add(std::slice::from_ref(b), 0)
            }
            (Acc::Values(a), Acc::Values(b)) => a.extend_from_slice(b),
            (me @ Acc::First(_), Acc::First(Some((t, v)))) => me.add(std::slice::from_ref(v), *t),
            (me @ Acc::Last(_), Acc::Last(Some((t, v)))) => me.add(std::slice::from_ref(v), *t),
            (Acc::Regr(a), Acc::Regr(b)) => a.merge(b),
            (Acc::Collect(a), Acc::Collect(b)) => {
                a.extend(b.iter().cloned());
                a.sort_by_key(|(t, _)| *t);
            }
            _ => {}
        }
    }

    /// The value of function `f` over what was added.
    pub fn result(&self, f: AggFunc) -> Value {
        match self {
            Acc::Count(n) => Value::Int(*n),
            Acc::Sum { n: 0, .. } => Value::Null,
            Acc::Sum {
                int, float, floats, ..
            } => {
                if *floats {
                    Value::Float(*float)
                } else {
                    Value::Int(*int)
                }
            }
            Acc::Moments { n, sum, m2, .. } => {
                let n = *n as f64;
                let var = |d: f64| {
                    if n - d > 0.0 {
                        Some(m2 / (n - d))
                    } else {
                        None
                    }
                };
                let r = match f {
                    AggFunc::Avg => (n > 0.0).then_some(sum / n),
                    AggFunc::VarSamp => var(1.0),
                    AggFunc::VarPop => var(0.0),
                    AggFunc::StddevSamp => var(1.0).map(f64::sqrt),
                    AggFunc::StddevPop => var(0.0).map(f64::sqrt),
                    _ => None,
                };
                r.map(Value::Float).unwrap_or_default()
            }
            Acc::Min(v) | Acc::Max(v) => v.clone(),
            Acc::Values(vs) => match f {
                AggFunc::Percentile(p) => percentile(vs, p),
                _ => Value::Null,
            },
            Acc::First(v) | Acc::Last(v) => v.as_ref().map(|(_, v)| v.clone()).unwrap_or_default(),
            Acc::Regr(r) => match (r.line(), f) {
                (Some((slope, _)), AggFunc::RegrSlope) => Value::Float(slope),
                (Some((_, intercept)), _) => Value::Float(intercept),
                (None, _) => Value::Null,
            },
            Acc::Collect(vs) => Value::Array(Arc::new(vs.iter().map(|(_, v)| v.clone()).collect())),
        }
    }
}

/// Continuous percentile with linear interpolation (`percentile_cont`).
fn percentile(vs: &[f64], p: f64) -> Value {
    if vs.is_empty() {
        return Value::Null;
    }
    let mut s = vs.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = p * (s.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    Value::Float(s[lo] + (s[hi] - s[lo]) * (rank - lo as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(f: AggFunc, xs: &[f64]) -> Value {
        let mut a = Acc::new(f);
        for (i, x) in xs.iter().enumerate() {
            a.add(&[Value::Float(*x)], i as i64);
        }
        a.result(f)
    }

    #[test]
    fn statistics() {
        let xs = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0];
        assert_eq!(run(AggFunc::Avg, &xs), Value::Float(5.0));
        assert_eq!(run(AggFunc::StddevPop, &xs), Value::Float(2.0));
        assert_eq!(run(AggFunc::Percentile(0.5), &xs), Value::Float(4.5));
        assert_eq!(run(AggFunc::FirstValue, &xs), Value::Float(2.0));
        assert_eq!(run(AggFunc::LastValue, &xs), Value::Float(9.0));
    }

    #[test]
    fn regression_is_least_squares() {
        let mut a = Acc::new(AggFunc::RegrSlope);
        for x in 0..10 {
            a.add(&[Value::Float(3.0 * x as f64 + 1.0), Value::Int(x)], x);
        }
        assert_eq!(a.result(AggFunc::RegrSlope), Value::Float(3.0));
        assert_eq!(a.result(AggFunc::RegrIntercept), Value::Float(1.0));
    }

    #[test]
    fn regression_over_epoch_times_keeps_its_precision() {
        // x in epoch ms of 2012, y a delay in ns growing 5 ns per second: naive sums of x^2
        // would leave a handful of digits; the shifted sums, merged from two parts, keep them.
        let (x0, slope, intercept) = (1_329_929_188_967.0, 5e-3, 5e8 - 5e-3 * 1_329_929_188_967.0);
        let mut a = Acc::new(AggFunc::RegrSlope);
        let mut b = Acc::new(AggFunc::RegrSlope);
        for i in 0..2000 {
            let x = x0 + 37_000.0 * i as f64;
            let part = if i % 3 == 0 { &mut a } else { &mut b };
            part.add(&[Value::Float(intercept + slope * x), Value::Float(x)], 0);
        }
        a.merge(&b);
        let got = a.result(AggFunc::RegrSlope).as_f64().unwrap();
        assert!((got - slope).abs() / slope < 1e-9, "slope {got}");
        let at_x0 = a.result(AggFunc::RegrIntercept).as_f64().unwrap() + got * x0;
        assert!((at_x0 - 5e8).abs() < 1e-6 * 5e8, "line at x0 {at_x0}");
    }

    #[test]
    fn merged_moments_equal_one_pass() {
        let xs: Vec<f64> = (0..20).map(|i| (i * i % 7) as f64).collect();
        let mut a = Acc::new(AggFunc::VarSamp);
        let mut b = Acc::new(AggFunc::VarSamp);
        for (i, x) in xs.iter().enumerate() {
            if i < 8 { &mut a } else { &mut b }.add(&[Value::Float(*x)], 0);
        }
        a.merge(&b);
        let whole = run(AggFunc::VarSamp, &xs).as_f64().unwrap();
        assert!((a.result(AggFunc::VarSamp).as_f64().unwrap() - whole).abs() < 1e-9);
    }

    #[test]
    fn integer_sums_stay_integers() {
        let mut a = Acc::new(AggFunc::Sum);
        a.add(&[Value::Int(2)], 0);
        a.add(&[Value::Int(3)], 0);
        a.add(&[Value::Null], 0);
        assert_eq!(a.result(AggFunc::Sum), Value::Int(5));
    }
}
