//! The built-in scalar functions. [`FUNCTIONS`] is the documented list: name, arity and a
//! one-line description; `weir functions` prints it and the binder checks calls against it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Datelike, NaiveDateTime, Timelike, Utc};
use regex::Regex;
use weir_core::Value;

use crate::decimal;
use crate::expr::{walk_path, Expr, PathSeg, Scope};

macro_rules! functions {
    ($($variant:ident $name:literal $min:tt $max:tt $cat:literal $doc:literal;)*) => {
        /// A built-in scalar function.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Func { $(#[doc = $doc] $variant),* }

        /// Name, arity, category and description of a built-in.
        pub struct FuncInfo {
            /// Which function.
            pub func: Func,
            /// Its name in SQL.
            pub name: &'static str,
            /// The fewest arguments it takes.
            pub min_args: usize,
            /// `usize::MAX` for variadic functions.
            pub max_args: usize,
            /// What kind of function it is (math, text, time, ...), for listings.
            pub category: &'static str,
            /// What it does.
            pub doc: &'static str,
        }

        /// Every built-in scalar function.
        pub const FUNCTIONS: &[FuncInfo] = &[
            $(FuncInfo { func: Func::$variant, name: $name, min_args: $min, max_args: $max, category: $cat, doc: $doc }),*
        ];
    };
}

const N: usize = usize::MAX;

functions! {
    Abs "abs" 1 1 "math" "absolute value";
    Ceil "ceil" 1 1 "math" "smallest integer not below x";
    Floor "floor" 1 1 "math" "largest integer not above x";
    Round "round" 1 2 "math" "round(x [, digits]) half away from zero, of the decimal value (round(33.035, 2) = 33.04); digits < 0 rounds to tens, hundreds, ...";
    Trunc "trunc" 1 2 "math" "trunc(x [, digits]) towards zero, of the decimal value";
    Sqrt "sqrt" 1 1 "math" "square root";
    Cbrt "cbrt" 1 1 "math" "cube root";
    Power "power" 2 2 "math" "power(x, y) = x^y";
    Exp "exp" 1 1 "math" "e^x";
    Ln "ln" 1 1 "math" "natural logarithm";
    Log "log" 1 2 "math" "log(x) base 10, log(b, x) base b";
    Log10 "log10" 1 1 "math" "base-10 logarithm";
    Log2 "log2" 1 1 "math" "base-2 logarithm";
    Sin "sin" 1 1 "math" "sine (radians)";
    Cos "cos" 1 1 "math" "cosine (radians)";
    Tan "tan" 1 1 "math" "tangent (radians)";
    Asin "asin" 1 1 "math" "arc sine";
    Acos "acos" 1 1 "math" "arc cosine";
    Atan "atan" 1 1 "math" "arc tangent";
    Atan2 "atan2" 2 2 "math" "atan2(y, x)";
    Sinh "sinh" 1 1 "math" "hyperbolic sine";
    Cosh "cosh" 1 1 "math" "hyperbolic cosine";
    Tanh "tanh" 1 1 "math" "hyperbolic tangent";
    Degrees "degrees" 1 1 "math" "radians to degrees";
    Radians "radians" 1 1 "math" "degrees to radians";
    Sign "sign" 1 1 "math" "-1, 0 or 1";
    Mod "mod" 2 2 "math" "remainder of x / y";
    Pi "pi" 0 0 "math" "the constant pi";
    Greatest "greatest" 1 N "math" "largest non-null argument";
    Least "least" 1 N "math" "smallest non-null argument";
    BitAnd "bitand" 2 2 "math" "bitwise and of two integers";
    BitOr "bitor" 2 2 "math" "bitwise or of two integers";
    BitXor "bitxor" 2 2 "math" "bitwise xor of two integers";
    BitNot "bitnot" 1 1 "math" "bitwise not of an integer";
    Concat "concat" 1 N "string" "concatenation of the arguments as text (nulls skipped)";
    ConcatWs "concat_ws" 2 N "string" "concat_ws(sep, a, b, ...)";
    Lower "lower" 1 1 "string" "lower case";
    Upper "upper" 1 1 "string" "upper case";
    Length "length" 1 1 "string" "number of characters (elements for arrays)";
    Trim "trim" 1 1 "string" "strip white space at both ends";
    Ltrim "ltrim" 1 1 "string" "strip white space at the start";
    Rtrim "rtrim" 1 1 "string" "strip white space at the end";
    Substring "substring" 2 3 "string" "substring(s, start [, len]), 1-based";
    Replace "replace" 3 3 "string" "replace(s, from, to), every occurrence";
    SplitPart "split_part" 3 3 "string" "split_part(s, sep, n): n-th piece, 1-based";
    Lpad "lpad" 2 3 "string" "lpad(s, len [, fill])";
    Rpad "rpad" 2 3 "string" "rpad(s, len [, fill])";
    StartsWith "starts_with" 2 2 "string" "whether s starts with a prefix";
    EndsWith "ends_with" 2 2 "string" "whether s ends with a suffix";
    Position "position" 2 2 "string" "position(needle IN s) or position(needle, s): 1-based index, 0 if absent (SQL; locate(needle, s) is its alias, as in Flink)";
    StrPos "strpos" 2 2 "string" "strpos(s, needle): 1-based index, 0 if absent (PostgreSQL; instr(s, needle) and indexof(s, needle) are its aliases)";
    Reverse "reverse" 1 1 "string" "characters in reverse order";
    Repeat "repeat" 2 2 "string" "repeat(s, n): s n times ('' for n < 0; null beyond 10,000 times)";
    Left "left" 2 2 "string" "first n characters";
    Right "right" 2 2 "string" "last n characters";
    Initcap "initcap" 1 1 "string" "first letter of each word upper case";
    RegexpMatches "regexp_matches" 2 2 "string" "whether s matches a regular expression";
    RegexpReplace "regexp_replace" 3 3 "string" "replace every match of a regular expression";
    RegexpExtract "regexp_extract" 2 3 "string" "regexp_extract(s, re [, group]): the matched text";
    Year "year" 1 1 "time" "year of a timestamp (UTC)";
    Month "month" 1 1 "time" "month 1..12";
    Day "day" 1 1 "time" "day of month 1..31";
    Hour "hour" 1 1 "time" "hour 0..23";
    Minute "minute" 1 1 "time" "minute 0..59";
    Second "second" 1 1 "time" "second 0..59";
    Millisecond "millisecond" 1 1 "time" "millisecond 0..999";
    DayOfWeek "dayofweek" 1 1 "time" "1 = Sunday .. 7 = Saturday";
    DayOfYear "dayofyear" 1 1 "time" "day of year 1..366";
    DateFormat "date_format" 2 2 "time" "date_format(ts, '%Y-%m-%d %H:%M:%S') with strftime patterns";
    ToTimestamp "to_timestamp" 1 2 "time" "to_timestamp(text [, strftime format]) -> epoch ms";
    ToTimestampLtz "to_timestamp_ltz" 1 2 "time" "to_timestamp_ltz(epoch [, precision]): epoch seconds (precision 0), milliseconds (3, the default), microseconds (6) or nanoseconds (9) as a timestamp (Flink)";
    FromUnixtime "from_unixtime" 1 1 "time" "epoch seconds -> ISO-8601 text";
    UnixTimestamp "unix_timestamp" 1 1 "time" "timestamp -> epoch seconds";
    DateTrunc "date_trunc" 2 2 "time" "date_trunc('minute', ts): start of the unit containing ts";
    TimestampDiff "timestamp_diff" 3 3 "time" "timestamp_diff('second', a, b) = b - a in units";
    JsonPath "json_path" 2 2 "json" "json_path(v, '$.a.b[0]'): the value at a JSON path";
    JsonExists "json_exists" 2 2 "json" "whether a JSON path exists in v";
    ToJson "to_json" 1 1 "json" "a value as JSON text";
    ParseJson "parse_json" 1 1 "json" "JSON text as a value";
    Cardinality "cardinality" 1 1 "json" "number of elements of an array or keys of an object";
    ElementAt "element_at" 2 2 "json" "element_at(array, n) 1-based, or element_at(object, key)";
    ArrayContains "array_contains" 2 2 "json" "whether an array holds a value";
    JsonKeys "json_keys" 1 1 "json" "the keys of an object, as an array";
    Coalesce "coalesce" 1 N "conditional" "first non-null argument";
    NullIf "nullif" 2 2 "conditional" "null when a = b, else a";
    IfNull "ifnull" 2 2 "conditional" "b when a is null, else a";
    If "if" 3 3 "conditional" "if(cond, then, else)";
    TypeOf "typeof" 1 1 "conditional" "the type name of a value";
}

impl Func {
    /// Looks a function up by name, case-insensitively, including common aliases.
    pub fn lookup(name: &str) -> Option<&'static FuncInfo> {
        let lower = name.to_ascii_lowercase();
        let canonical = match lower.as_str() {
            "ceiling" => "ceil",
            "pow" => "power",
            "char_length" | "character_length" | "len" => "length",
            "substr" => "substring",
            "instr" | "indexof" => "strpos",
            "locate" => "position",
            "json_value" | "json_query" | "json_extract" => "json_path",
            "json_array_length" | "array_length" => "cardinality",
            "iif" => "if",
            "truncate" => "trunc",
            "day_of_week" => "dayofweek",
            "day_of_year" => "dayofyear",
            "dayofmonth" => "day",
            other => other,
        };
        FUNCTIONS.iter().find(|f| f.name == canonical)
    }

    /// Evaluates the function on `args` for `s`.
    pub fn call<S: Scope + ?Sized>(&self, args: &[Expr], s: &S) -> Value {
        let vals: Vec<Value> = args.iter().map(|a| a.eval(s)).collect();
        self.apply(&vals)
    }

    /// Applies the function to evaluated arguments. Wrong types give null, like SQL.
    pub fn apply(&self, a: &[Value]) -> Value {
        use Func::*;
        let f = |i: usize| a.get(i).and_then(Value::as_f64);
        let int = |i: usize| a.get(i).and_then(Value::as_i64);
        let text = |i: usize| a.get(i).and_then(|v| v.as_str().map(str::to_owned));
        let math = |g: fn(f64) -> f64| f(0).map(|x| num(g(x))).unwrap_or_default();
        match self {
            Abs => match a[0] {
                Value::Int(i) => Value::Int(i.wrapping_abs()),
                _ => math(f64::abs),
            },
            Ceil => keep_int(&a[0], f64::ceil),
            Floor => keep_int(&a[0], f64::floor),
            Round | Trunc => {
                let mode = match self {
                    Round => decimal::Mode::Round,
                    _ => decimal::Mode::Trunc,
                };
                let d = match a.get(1) {
                    None => 0,
                    Some(v) => match v.as_i64() {
                        Some(d) => d,
                        None => return Value::Null,
                    },
                };
                match &a[0] {
                    Value::Int(i) if d >= 0 => Value::Int(*i),
                    Value::Int(i) => {
                        // To tens, hundreds, ...: in integers, so large ones stay exact.
                        let p = 10i128.checked_pow((-d).min(38) as u32).unwrap_or(i128::MAX);
                        let half = if mode == decimal::Mode::Round {
                            p / 2
                        } else {
                            0
                        };
                        let r = (i128::from(i.unsigned_abs()) + half) / p * p;
                        let r = if *i < 0 { -r } else { r };
                        i64::try_from(r).map_or(Value::Float(r as f64), Value::Int)
                    }
                    Value::Float(x) => Value::Float(decimal::to_digits(*x, d, mode)),
                    _ => Value::Null,
                }
            }
            Sqrt => math(f64::sqrt),
            Cbrt => math(f64::cbrt),
            Power => opt2(f(0), f(1), |x, y| num(x.powf(y))),
            Exp => math(f64::exp),
            Ln => math(f64::ln),
            Log if a.len() == 2 => opt2(f(0), f(1), |b, x| num(x.log(b))),
            Log | Log10 => math(f64::log10),
            Log2 => math(f64::log2),
            Sin => math(f64::sin),
            Cos => math(f64::cos),
            Tan => math(f64::tan),
            Asin => math(f64::asin),
            Acos => math(f64::acos),
            Atan => math(f64::atan),
            Atan2 => opt2(f(0), f(1), |y, x| num(y.atan2(x))),
            Sinh => math(f64::sinh),
            Cosh => math(f64::cosh),
            Tanh => math(f64::tanh),
            Degrees => math(f64::to_degrees),
            Radians => math(f64::to_radians),
            Sign => match a[0] {
                Value::Int(i) => Value::Int(i.signum()),
                _ => math(|x| if x == 0.0 { 0.0 } else { x.signum() }),
            },
            Mod => crate::expr::binary(crate::expr::BinOp::Mod, &a[0], &a[1]),
            Pi => Value::Float(std::f64::consts::PI),
            Greatest | Least => {
                let want = if *self == Greatest {
                    std::cmp::Ordering::Greater
                } else {
                    std::cmp::Ordering::Less
                };
                a.iter()
                    .filter(|v| !v.is_null())
                    .fold(None::<&Value>, |best, v| match best {
                        Some(b) if v.sql_cmp(b) != Some(want) => Some(b),
                        _ => Some(v),
                    })
                    .cloned()
                    .unwrap_or_default()
            }
            BitAnd => opt2(int(0), int(1), |x, y| Value::Int(x & y)),
            BitOr => opt2(int(0), int(1), |x, y| Value::Int(x | y)),
            BitXor => opt2(int(0), int(1), |x, y| Value::Int(x ^ y)),
            BitNot => int(0).map(|x| Value::Int(!x)).unwrap_or_default(),
            Concat => Value::from(a.iter().map(Value::to_text).collect::<String>()),
            ConcatWs => {
                let sep = a[0].to_text();
                let parts: Vec<String> = a[1..]
                    .iter()
                    .filter(|v| !v.is_null())
                    .map(Value::to_text)
                    .collect();
                Value::from(parts.join(&sep))
            }
            Lower => on_text(a, |s| s.to_lowercase()),
            Upper => on_text(a, |s| s.to_uppercase()),
            Length => match &a[0] {
                Value::Str(s) => Value::Int(s.chars().count() as i64),
                Value::Array(v) => Value::Int(v.len() as i64),
                _ => Value::Null,
            },
            Trim => on_text(a, |s| s.trim().to_owned()),
            Ltrim => on_text(a, |s| s.trim_start().to_owned()),
            Rtrim => on_text(a, |s| s.trim_end().to_owned()),
            Substring => match (text(0), int(1)) {
                (Some(s), Some(start)) => {
                    let skip = (start - 1).max(0) as usize;
                    let it = s.chars().skip(skip);
                    Value::from(match int(2) {
                        Some(n) => it.take(n.max(0) as usize).collect::<String>(),
                        None => it.collect::<String>(),
                    })
                }
                _ => Value::Null,
            },
            Replace => match (text(0), text(1), text(2)) {
                (Some(s), Some(x), Some(y)) => Value::from(s.replace(&x, &y)),
                _ => Value::Null,
            },
            SplitPart => match (text(0), text(1), int(2)) {
                (Some(s), Some(sep), Some(n)) if n >= 1 => s
                    .split(sep.as_str())
                    .nth(n as usize - 1)
                    .map(Value::from)
                    .unwrap_or_else(|| Value::str("")),
                _ => Value::Null,
            },
            Lpad | Rpad => match (text(0), int(1)) {
                (Some(s), Some(n)) => {
                    let fill: Vec<char> = text(2).unwrap_or_else(|| " ".into()).chars().collect();
                    let len = s.chars().count();
                    let n = n.max(0) as usize;
                    if len >= n || fill.is_empty() {
                        return Value::from(s.chars().take(n).collect::<String>());
                    }
                    let pad: String = fill.iter().cycle().take(n - len).collect();
                    Value::from(if *self == Lpad { pad + &s } else { s + &pad })
                }
                _ => Value::Null,
            },
            StartsWith => opt2(text(0), text(1), |s, p| Value::Bool(s.starts_with(&p))),
            EndsWith => opt2(text(0), text(1), |s, p| Value::Bool(s.ends_with(&p))),
            Position => opt2(text(0), text(1), |needle, s| index_of(&s, &needle)),
            StrPos => opt2(text(0), text(1), |s, needle| index_of(&s, &needle)),
            Reverse => on_text(a, |s| s.chars().rev().collect()),
            Repeat => opt2(text(0), int(1), |s, n| match n {
                ..0 => Value::str(""),
                0..=MAX_REPEAT => Value::from(s.repeat(n as usize)),
                _ => Value::Null,
            }),
            Left => opt2(text(0), int(1), |s, n| {
                Value::from(s.chars().take(n.max(0) as usize).collect::<String>())
            }),
            Right => opt2(text(0), int(1), |s, n| {
                let len = s.chars().count();
                Value::from(
                    s.chars()
                        .skip(len.saturating_sub(n.max(0) as usize))
                        .collect::<String>(),
                )
            }),
            Initcap => on_text(a, |s| {
                let mut out = String::with_capacity(s.len());
                let mut start = true;
                for c in s.chars() {
                    if start {
                        out.extend(c.to_uppercase());
                    } else {
                        out.extend(c.to_lowercase());
                    }
                    start = !c.is_alphanumeric();
                }
                out
            }),
            RegexpMatches => opt2(text(0), text(1), |s, re| {
                with_regex(&re, |r| Value::Bool(r.is_match(&s)))
            }),
            RegexpReplace => match (text(0), text(1), text(2)) {
                (Some(s), Some(re), Some(to)) => with_regex(&re, |r| {
                    Value::from(r.replace_all(&s, to.as_str()).into_owned())
                }),
                _ => Value::Null,
            },
            RegexpExtract => opt2(text(0), text(1), |s, re| {
                let g = int(2).unwrap_or(0).max(0) as usize;
                with_regex(&re, |r| {
                    r.captures(&s)
                        .and_then(|c| c.get(g))
                        .map(|m| Value::str(m.as_str()))
                        .unwrap_or_default()
                })
            }),
            Year | Month | Day | Hour | Minute | Second | Millisecond | DayOfWeek | DayOfYear => {
                match to_datetime(&a[0]) {
                    Some(t) => Value::Int(match self {
                        Year => t.year() as i64,
                        Month => t.month() as i64,
                        Day => t.day() as i64,
                        Hour => t.hour() as i64,
                        Minute => t.minute() as i64,
                        Second => t.second() as i64,
                        Millisecond => (t.timestamp_subsec_millis()) as i64,
                        DayOfWeek => t.weekday().number_from_sunday() as i64,
                        _ => t.ordinal() as i64,
                    }),
                    None => Value::Null,
                }
            }
            DateFormat => match (to_datetime(&a[0]), text(1)) {
                (Some(t), Some(fmt)) => {
                    use std::fmt::Write;
                    let mut out = String::new();
                    match write!(out, "{}", t.format(&fmt)) {
                        Ok(()) => Value::from(out),
                        Err(_) => Value::Null,
                    }
                }
                _ => Value::Null,
            },
            ToTimestamp => match (&a[0], text(1)) {
                (Value::Str(s), Some(fmt)) => NaiveDateTime::parse_from_str(s, &fmt)
                    .map(|t| Value::Int(t.and_utc().timestamp_millis()))
                    .unwrap_or_default(),
                (Value::Str(s), None) => parse_timestamp(s).map(Value::Int).unwrap_or_default(),
                (v, _) => v.as_i64().map(Value::Int).unwrap_or_default(),
            },
            ToTimestampLtz => {
                let scale = match int(1).unwrap_or(3) {
                    0 => 1000.0,
                    3 => 1.0,
                    6 => 1e-3,
                    9 => 1e-6,
                    _ => return Value::Null,
                };
                match &a[0] {
                    Value::Int(i) if scale == 1.0 => Value::Int(*i),
                    v => v
                        .as_f64()
                        .map(|x| (x * scale).floor())
                        .filter(|ms| weir_core::EVENT_TIME_RANGE.contains(&(*ms as i64)))
                        .map(|ms| Value::Int(ms as i64))
                        .unwrap_or_default(),
                }
            }
            FromUnixtime => f(0)
                .and_then(|s| DateTime::from_timestamp_millis((s * 1000.0) as i64))
                .map(|t| Value::from(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)))
                .unwrap_or_default(),
            UnixTimestamp => to_datetime(&a[0])
                .map(|t| Value::Int(t.timestamp()))
                .unwrap_or_default(),
            DateTrunc => match (text(0), to_datetime(&a[1])) {
                (Some(unit), Some(t)) => match weir_core::time::unit_millis(&unit) {
                    Some(ms) if ms <= 86_400_000 => {
                        let ts = t.timestamp_millis();
                        Value::Int(ts - ts.rem_euclid(ms))
                    }
                    _ => Value::Null,
                },
                _ => Value::Null,
            },
            TimestampDiff => match (text(0), to_datetime(&a[1]), to_datetime(&a[2])) {
                (Some(unit), Some(x), Some(y)) => match weir_core::time::unit_millis(&unit) {
                    Some(ms) => Value::Int((y.timestamp_millis() - x.timestamp_millis()) / ms),
                    None => Value::Null,
                },
                _ => Value::Null,
            },
            JsonPath => match text(1).and_then(|p| parse_json_path(&p)) {
                Some(path) => walk_path(&json_value(&a[0]), &path),
                None => Value::Null,
            },
            JsonExists => match text(1).and_then(|p| parse_json_path(&p)) {
                Some(path) => Value::Bool(!walk_path(&json_value(&a[0]), &path).is_null()),
                None => Value::Null,
            },
            ToJson => Value::from(a[0].to_string()),
            ParseJson => json_value(&a[0]),
            Cardinality => match json_value(&a[0]) {
                Value::Array(v) => Value::Int(v.len() as i64),
                Value::Object(o) => Value::Int(o.len() as i64),
                _ => Value::Null,
            },
            ElementAt => match (&a[0], &a[1]) {
                (Value::Array(v), Value::Int(i)) if *i >= 1 => {
                    v.get(*i as usize - 1).cloned().unwrap_or_default()
                }
                (Value::Array(v), Value::Int(i)) if *i < 0 => {
                    walk_path(&Value::Array(v.clone()), &[PathSeg::Index(*i)])
                }
                (Value::Object(o), Value::Str(k)) => o.get(k).cloned().unwrap_or_default(),
                _ => Value::Null,
            },
            ArrayContains => match &a[0] {
                Value::Array(v) => Value::Bool(v.contains(&a[1])),
                _ => Value::Null,
            },
            JsonKeys => match &a[0] {
                Value::Object(o) => Value::Array(Arc::new(
                    o.iter().map(|(k, _)| Value::Str(k.clone())).collect(),
                )),
                _ => Value::Null,
            },
            Coalesce => a.iter().find(|v| !v.is_null()).cloned().unwrap_or_default(),
            NullIf => {
                if a[0] == a[1] {
                    Value::Null
                } else {
                    a[0].clone()
                }
            }
            IfNull => {
                if a[0].is_null() {
                    a[1].clone()
                } else {
                    a[0].clone()
                }
            }
            If => {
                if a[0].is_true() {
                    a[1].clone()
                } else {
                    a[2].clone()
                }
            }
            TypeOf => Value::str(a[0].type_name()),
        }
    }
}

fn num(x: f64) -> Value {
    if x.is_finite() {
        Value::Float(x)
    } else {
        Value::Null
    }
}

/// The most repetitions `repeat` makes: a bound on what one event can cost.
const MAX_REPEAT: i64 = 10_000;

/// Where `needle` first occurs in `s`, counting characters from 1; 0 if it does not.
fn index_of(s: &str, needle: &str) -> Value {
    Value::Int(
        s.find(needle)
            .map_or(0, |i| s[..i].chars().count() as i64 + 1),
    )
}

/// Functions that share a name with one of eKuiper's but not its meaning, and why weir's
/// means what it does. `weir functions` prints them.
pub const EKUIPER_DIFFERENCES: &[(&str, &str)] = &[
    ("stddev, variance, var", "the sample statistics, as in PostgreSQL, Flink and the SQL standard; eKuiper's stddev and var are the population ones: use stddev_pop and var_pop (eKuiper's stddevs and vars are weir's stddev and variance, and are accepted as their aliases)"),
    ("indexof", "1-based, 0 when absent, as PostgreSQL's strpos; eKuiper's indexof is 0-based (subtract 1)"),
    ("substring", "1-based start, as in SQL; eKuiper's substring counts from 0"),
    ("lpad, rpad", "pad to a length, as in PostgreSQL and Flink (lpad('7', 3, '0') = '007'); eKuiper's add that many spaces"),
    ("repeat", "as PostgreSQL's, but null beyond 10,000 repetitions, so that one event cannot make a result of unbounded size (eKuiper has no repeat)"),
];

fn keep_int(v: &Value, g: fn(f64) -> f64) -> Value {
    match v {
        Value::Int(i) => Value::Int(*i),
        Value::Float(x) => Value::Float(g(*x)),
        _ => Value::Null,
    }
}

fn opt2<A, B>(a: Option<A>, b: Option<B>, g: impl FnOnce(A, B) -> Value) -> Value {
    match (a, b) {
        (Some(a), Some(b)) => g(a, b),
        _ => Value::Null,
    }
}

fn on_text(a: &[Value], g: impl FnOnce(&str) -> String) -> Value {
    match &a[0] {
        Value::Str(s) => Value::from(g(s)),
        _ => Value::Null,
    }
}

/// Text is parsed as JSON (so `json_path` works on JSON held in a string); other values pass.
fn json_value(v: &Value) -> Value {
    match v {
        Value::Str(s) => serde_json::from_str::<Value>(s).unwrap_or_else(|_| v.clone()),
        other => other.clone(),
    }
}

thread_local! {
    static REGEXES: RefCell<HashMap<String, Option<Regex>>> = RefCell::new(HashMap::new());
}

/// Compiles each distinct pattern once per thread; an invalid pattern gives null.
fn with_regex(re: &str, g: impl FnOnce(&Regex) -> Value) -> Value {
    REGEXES.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.len() > 256 {
            cache.clear();
        }
        let compiled = cache
            .entry(re.to_owned())
            .or_insert_with(|| Regex::new(re).ok());
        compiled.as_ref().map(g).unwrap_or_default()
    })
}

/// Parses `$.a.b[0]`, `a.b[0]` or `$['a']` into path steps.
pub fn parse_json_path(p: &str) -> Option<Vec<PathSeg>> {
    let p = p.trim();
    let p = p.strip_prefix('$').unwrap_or(p);
    let mut out = Vec::new();
    let mut chars = p.chars().peekable();
    let mut cur = String::new();
    while let Some(c) = chars.next() {
        match c {
            '.' => {
                if !cur.is_empty() {
                    out.push(PathSeg::Key(Arc::from(std::mem::take(&mut cur))));
                }
            }
            '[' => {
                if !cur.is_empty() {
                    out.push(PathSeg::Key(Arc::from(std::mem::take(&mut cur))));
                }
                let mut inner = String::new();
                for d in chars.by_ref() {
                    if d == ']' {
                        break;
                    }
                    inner.push(d);
                }
                let inner = inner.trim();
                if let Some(q) = inner
                    .strip_prefix('\'')
                    .and_then(|s| s.strip_suffix('\''))
                    .or_else(|| inner.strip_prefix('"').and_then(|s| s.strip_suffix('"')))
                {
                    out.push(PathSeg::Key(Arc::from(q)));
                } else {
                    out.push(PathSeg::Index(inner.parse().ok()?));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(PathSeg::Key(Arc::from(cur)));
    }
    Some(out)
}

/// Parses ISO-8601 / RFC 3339 text (with or without a zone; UTC assumed) into epoch ms.
pub fn parse_timestamp(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_millis());
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(t.and_utc().timestamp_millis());
        }
        if let Ok(d) = chrono::NaiveDate::parse_from_str(s, fmt) {
            return d
                .and_hms_opt(0, 0, 0)
                .map(|t| t.and_utc().timestamp_millis());
        }
    }
    None
}

fn to_datetime(v: &Value) -> Option<DateTime<Utc>> {
    let ms = match v {
        Value::Str(s) => parse_timestamp(s)?,
        other => other.as_i64()?,
    };
    DateTime::from_timestamp_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(name: &str, args: &[Value]) -> Value {
        Func::lookup(name).unwrap().func.apply(args)
    }

    #[test]
    fn there_are_many_documented_functions() {
        assert!(FUNCTIONS.len() >= 60, "{}", FUNCTIONS.len());
        for f in FUNCTIONS {
            assert!(!f.doc.is_empty());
            assert_eq!(Func::lookup(f.name).map(|i| i.func), Some(f.func));
        }
    }

    #[test]
    fn samples() {
        assert_eq!(
            call("round", &[Value::Float(2.345), Value::Int(2)]),
            Value::Float(2.35)
        );
        assert_eq!(
            call("round", &[Value::Float(33.035), Value::Int(2)]),
            Value::Float(33.04)
        );
        assert_eq!(
            call("round", &[Value::Int(1250), Value::Int(-2)]),
            Value::Int(1300)
        );
        assert_eq!(
            call("round", &[Value::Int(-1250), Value::Int(-2)]),
            Value::Int(-1300)
        );
        assert_eq!(
            call(
                "trunc",
                &[Value::Int(9_007_199_254_740_993), Value::Int(-1)]
            ),
            Value::Int(9_007_199_254_740_990)
        );
        assert_eq!(
            call("round", &[Value::Int(7), Value::Int(2)]),
            Value::Int(7)
        );
        let hello = [Value::str("hello"), Value::str("l")];
        for f in ["strpos", "instr", "indexof"] {
            assert_eq!(call(f, &hello), Value::Int(3), "{f}('hello', 'l')");
            assert_eq!(
                call(f, &[Value::str("hello"), Value::str("z")]),
                Value::Int(0)
            );
        }
        let l_in_hello = [Value::str("l"), Value::str("hello")];
        for f in ["position", "locate"] {
            assert_eq!(call(f, &l_in_hello), Value::Int(3), "{f}('l', 'hello')");
        }
        assert_eq!(
            call("repeat", &[Value::str("ab"), Value::Int(2)]),
            Value::str("abab")
        );
        assert_eq!(
            call("repeat", &[Value::str("ab"), Value::Int(-1)]),
            Value::str("")
        );
        assert_eq!(
            call("repeat", &[Value::str("ab"), Value::Int(10_001)]),
            Value::Null
        );
        assert_eq!(call("abs", &[Value::Int(-3)]), Value::Int(3));
        assert_eq!(
            call(
                "substr",
                &[Value::str("sensor"), Value::Int(2), Value::Int(3)]
            ),
            Value::str("ens")
        );
        assert_eq!(
            call("lpad", &[Value::str("7"), Value::Int(3), Value::str("0")]),
            Value::str("007")
        );
        assert_eq!(
            call(
                "split_part",
                &[Value::str("a/b/c"), Value::str("/"), Value::Int(2)]
            ),
            Value::str("b")
        );
        assert_eq!(
            call(
                "regexp_extract",
                &[Value::str("bm05"), Value::str("[0-9]+")]
            ),
            Value::str("05")
        );
        assert_eq!(
            call("hour", &[Value::Int(1_700_000_000_000)]),
            Value::Int(22)
        );
        assert_eq!(
            call(
                "date_format",
                &[Value::Int(1_700_000_000_000), Value::str("%Y-%m-%d")]
            ),
            Value::str("2023-11-14")
        );
        let doc = serde_json::from_str::<Value>(r#"{"a":{"b":[10,20]}}"#).unwrap();
        assert_eq!(
            call("json_path", &[doc.clone(), Value::str("$.a.b[1]")]),
            Value::Int(20)
        );
        assert_eq!(
            call("json_path", &[Value::str(r#"{"x":1}"#), Value::str("x")]),
            Value::Int(1)
        );
        assert_eq!(
            call("coalesce", &[Value::Null, Value::Int(2)]),
            Value::Int(2)
        );
        assert_eq!(
            call("greatest", &[Value::Int(2), Value::Float(2.5), Value::Null]),
            Value::Float(2.5)
        );
        assert_eq!(
            call(
                "date_trunc",
                &[Value::str("minute"), Value::Int(1_700_000_059_999)]
            ),
            Value::Int(1_700_000_040_000)
        );
        assert_eq!(call("sqrt", &[Value::str("x")]), Value::Null);
    }
}
