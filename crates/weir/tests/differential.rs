//! Differential tests against a reference: the same windowed aggregates, scalar functions and
//! expressions computed by weir and by PostgreSQL (the machine's, 127.0.0.1:5432) on the same
//! random input must agree row for row. PostgreSQL stands in for what a Flink or SQL user
//! expects: sample statistics, decimal rounding, 1-based string positions, SQL's nulls.
//! Rounding a double rounds its shortest decimal representation, as Flink does
//! (`BigDecimal.valueOf`): a value that comes out as -2.3049999999999997 rounds to -2.30. On the
//! PostgreSQL side `::text::numeric` gives that representation (`::numeric` keeps 15 digits,
//! -2.305, and would round to -2.31). Rounded values are exact inputs or their extremes, never
//! sums: SQL fixes no order of summation, and one ulp flips a half-way case.

use std::process::{Command, Stdio};
use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use weir_core::{Row, Value};
use weir_engine::{run_batch, EngineConfig};

/// A reading: (id, key, ts, value, label); key, value and label may be null.
type Reading = (
    i64,
    Option<&'static str>,
    i64,
    Option<f64>,
    Option<&'static str>,
);

fn readings() -> impl Strategy<Value = Vec<Reading>> {
    let key = prop::option::weighted(0.95, prop::sample::select(vec!["a", "b", "c"]));
    let value = prop::option::weighted(0.9, (-4000i64..4000).prop_map(|c| c as f64 / 1000.0));
    let label = prop::option::weighted(0.9, prop::sample::select(vec!["x", "abc", "bob", "", "b"]));
    prop::collection::vec((key, 0i64..250, value, label), 1..120).prop_map(|raw| {
        let mut ts = 0;
        raw.into_iter()
            .enumerate()
            .map(|(i, (k, step, v, s))| {
                ts += step;
                (i as i64, k, ts, v, s)
            })
            .collect()
    })
}

fn rows(data: &[Reading]) -> Vec<Row> {
    let opt_str = |s: Option<&str>| s.map_or(Value::Null, Value::str);
    data.iter()
        .map(|(id, k, ts, v, s)| {
            [
                ("id", Value::Int(*id)),
                ("k", opt_str(*k)),
                ("ts", Value::Int(*ts)),
                ("v", v.map_or(Value::Null, Value::Float)),
                ("s", opt_str(*s)),
            ]
            .into_iter()
            .map(|(n, v)| (Arc::from(n), v))
            .collect()
        })
        .collect()
}

/// One cell, comparable across the two: numbers by value, the rest as text.
#[derive(Debug, Clone)]
enum Cell {
    Null,
    Num(f64),
    Text(String),
}

impl PartialEq for Cell {
    fn eq(&self, other: &Cell) -> bool {
        match (self, other) {
            (Cell::Null, Cell::Null) => true,
            (Cell::Num(a), Cell::Num(b)) => (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0),
            (Cell::Text(a), Cell::Text(b)) => a == b,
            _ => false,
        }
    }
}

fn cell_of_value(v: &Value) -> Cell {
    match v {
        Value::Null => Cell::Null,
        Value::Int(i) => Cell::Num(*i as f64),
        Value::Float(f) => Cell::Num(*f),
        Value::Bool(b) => Cell::Text(b.to_string()),
        Value::Str(s) => Cell::Text(s.to_string()),
        other => Cell::Text(other.to_string()),
    }
}

fn cell_of_pg(text: &str, numeric: bool) -> Cell {
    match text {
        "NULL" => Cell::Null,
        "t" => Cell::Text("true".into()),
        "f" => Cell::Text("false".into()),
        t if numeric => Cell::Num(t.parse().unwrap_or_else(|_| panic!("number: {t}"))),
        t => Cell::Text(t.to_owned()),
    }
}

/// Runs a query in PostgreSQL over a temporary table `r` holding `data`; every cell as text.
fn postgres(data: &[Reading], query: &str) -> Vec<Vec<String>> {
    let mut script = String::from(
        "CREATE TEMP TABLE r (id bigint, k text, ts bigint, v double precision, s text);\nCOPY r FROM STDIN;\n",
    );
    let null = |s: Option<String>| s.unwrap_or_else(|| "\\N".into());
    for (id, k, ts, v, s) in data {
        script += &format!(
            "{id}\t{}\t{ts}\t{}\t{}\n",
            null(k.map(str::to_owned)),
            null(v.map(|v| v.to_string())),
            null(s.map(str::to_owned))
        );
    }
    script += "\\.\n";
    script += query;
    script += ";\n";
    let mut child = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "test",
            "-X",
            "-q",
            "-A",
            "-t",
            "-F",
            "\u{1f}",
            "-P",
            "null=NULL",
            "-v",
            "ON_ERROR_STOP=1",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("psql runs (PostgreSQL's client; .ci/services.sh starts the server)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.split('\u{1f}').map(str::to_owned).collect())
        .collect()
}

/// The rule's output rows through weir, cells in the select list's order.
fn weir(data: &[Reading], select: &str, workers: usize) -> Vec<Vec<Cell>> {
    let sql = format!(
        "CREATE STREAM r (id BIGINT, k STRING, ts BIGINT, v DOUBLE, s STRING) WITH (timestamp = 'ts');
         INSERT INTO o {select};"
    );
    let program = weir_lang::compile(&sql).unwrap_or_else(|d| panic!("{}", d.render("q", &sql)));
    let config = EngineConfig {
        workers,
        batch_size: 16,
        ..EngineConfig::default()
    };
    let result = run_batch(
        &program,
        vec![("r".into(), rows(data))],
        &["o".into()],
        config,
    )
    .unwrap();
    assert!(result.late.is_empty() && result.rejected.is_empty());
    result.outputs["o"]
        .iter()
        .map(|e| e.row.iter().map(|(_, v)| cell_of_value(v)).collect())
        .collect()
}

/// A query in both languages, and which of its columns are numbers.
struct Pair {
    weir: &'static str,
    postgres: &'static str,
    numeric: &'static [bool],
}

fn compare(data: &[Reading], q: &Pair, workers: usize) -> Result<(), TestCaseError> {
    let sort = |mut v: Vec<Vec<Cell>>| {
        v.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
        v
    };
    let ours = sort(weir(data, q.weir, workers));
    let theirs = sort(
        postgres(data, q.postgres)
            .into_iter()
            .map(|r| {
                r.iter()
                    .zip(q.numeric)
                    .map(|(c, n)| cell_of_pg(c, *n))
                    .collect()
            })
            .collect(),
    );
    prop_assert_eq!(ours.len(), theirs.len(), "row counts for {}", q.weir);
    for (a, b) in ours.iter().zip(&theirs) {
        prop_assert_eq!(a, b, "{}", q.weir);
    }
    Ok(())
}

const QUERIES: &[Pair] = &[
    // Aggregates per key and second, with the grouping key inside aggregates and filters.
    Pair {
        weir: "SELECT k, window_start, count(*) AS n, count(v) AS nv, sum(v) AS sv, avg(v) AS av,
                 min(v) AS mn, max(v) AS mx, stddev(v) AS sd, stddev_pop(v) AS sdp, variance(v) AS vs,
                 var_pop(v) AS vp, count(DISTINCT v) AS dv, count(*) FILTER (WHERE v > 0) AS pos,
                 sum(CASE WHEN s = 'x' THEN 1 ELSE 0 END) AS xs, count(k) AS nk, max(k) AS mk,
                 round(max(v), 2) AS rmx, min(s) AS ms
               FROM r GROUP BY k, TUMBLE(ts, INTERVAL '1' SECOND)",
        postgres: "SELECT k, (floor(ts / 1000.0) * 1000)::bigint, count(*), count(v), sum(v), avg(v),
                 min(v), max(v), stddev_samp(v), stddev_pop(v), var_samp(v), var_pop(v),
                 count(DISTINCT v), count(*) FILTER (WHERE v > 0),
                 sum(CASE WHEN s = 'x' THEN 1 ELSE 0 END), count(k), max(k),
                 round(max(v)::text::numeric, 2), min(s COLLATE \"C\")
               FROM r GROUP BY k, floor(ts / 1000.0)",
        numeric: &[
            false, true, true, true, true, true, true, true, true, true, true, true, true, true,
            true, true, false, true, false,
        ],
    },
    // Hopping windows: each reading in every window that covers it.
    Pair {
        weir: "SELECT k, window_start, window_end, count(*) AS n, sum(v) AS sv
               FROM r GROUP BY k, HOP(ts, INTERVAL '500' MILLISECOND, INTERVAL '2' SECOND)",
        postgres: "SELECT k, w, w + 2000, count(*), sum(v)
               FROM r, generate_series((floor(ts / 500.0) * 500)::bigint - 1500, (floor(ts / 500.0) * 500)::bigint, 500) AS w
               GROUP BY k, w",
        numeric: &[false, true, true, true, true],
    },
    // Scalar functions and expressions, row by row.
    Pair {
        weir: "SELECT id, round(v, 2) AS r2, trunc(v, 1) AS t1, round(v * 1000, -2) AS r100,
                 strpos(s, 'b') AS p, upper(s) AS u, substring(s, 2, 2) AS sub, lpad(s, 4, '*') AS lp,
                 abs(v) AS a, ceil(v) AS c, floor(v) AS f, coalesce(s, 'none') AS co, nullif(s, 'x') AS ni,
                 CASE WHEN v > 0 THEN 'pos' WHEN v < 0 THEN 'neg' ELSE 'zero' END AS sign,
                 s || '!' AS bang, v BETWEEN -1 AND 1 AS near, s LIKE 'b%' AS bs, length(s) AS len,
                 k IN ('a', 'b') AS ab, v % 1 AS frac, position('b' IN s) AS pos
               FROM r",
        postgres: "SELECT id, round(v::text::numeric, 2), trunc(v::text::numeric, 1), round((v * 1000)::text::numeric, -2),
                 strpos(s, 'b'), upper(s), substring(s, 2, 2), lpad(s, 4, '*'),
                 abs(v), ceil(v), floor(v), coalesce(s, 'none'), nullif(s, 'x'),
                 CASE WHEN v > 0 THEN 'pos' WHEN v < 0 THEN 'neg' ELSE 'zero' END,
                 s || '!', v BETWEEN -1 AND 1, s LIKE 'b%', length(s),
                 k IN ('a', 'b'), mod(v::numeric, 1), position('b' IN s)
               FROM r",
        numeric: &[
            true, true, true, true, true, false, false, false, true, true, true, false, false,
            false, false, false, false, true, false, true, true,
        ],
    },
];

#[test]
fn windowed_aggregates_and_functions_agree_with_postgresql() {
    let mut runner = TestRunner::new(Config {
        cases: 12,
        ..Config::default()
    });
    runner
        .run(&(readings(), 1usize..4), |(data, workers)| {
            for q in QUERIES {
                compare(&data, q, workers)?;
            }
            Ok(())
        })
        .unwrap();
}
