//! Projection pushdown at ingest: fields no rule reads are dropped as events come in, yet
//! every declared column is still checked, and `SELECT *` keeps everything.

use std::sync::Arc;

use weir_core::{Row, Value};
use weir_engine::{run_batch, EngineConfig};

fn row(fields: &[(&str, Value)]) -> Row {
    fields
        .iter()
        .map(|(k, v)| (Arc::from(*k), v.clone()))
        .collect()
}

fn run(sql: &str, rows: Vec<Row>, output: &str) -> weir_engine::BatchResult {
    let program = weir_lang::compile(sql).unwrap();
    run_batch(
        &program,
        vec![("s".to_owned(), rows)],
        &[output.to_owned()],
        EngineConfig::default(),
    )
    .unwrap()
}

#[test]
fn unread_fields_are_dropped_but_declared_columns_still_checked() {
    let sql = "CREATE STREAM s (ts BIGINT, a BIGINT, b BIGINT) WITH (timestamp = 'ts');
               INSERT INTO late_view SELECT a FROM s WHERE a > 0;
               INSERT INTO counts SELECT count(*) AS n FROM s GROUP BY TUMBLE(ts, INTERVAL '1' SECOND);";
    let rows = vec![
        row(&[
            ("ts", Value::Int(10)),
            ("a", Value::Int(1)),
            ("b", Value::Int(2)),
            ("extra", Value::Int(3)),
        ]),
        // b is declared and cannot be a BIGINT: a dead letter, though no rule reads b.
        row(&[
            ("ts", Value::Int(20)),
            ("a", Value::Int(1)),
            ("b", Value::from("x")),
        ]),
    ];
    let result = run(sql, rows, "counts");
    assert_eq!(result.rejected.len(), 1, "{:?}", result.rejected);
    assert!(
        result.rejected[0].2.contains("field b"),
        "{:?}",
        result.rejected
    );
    assert_eq!(
        result.outputs["counts"][0].row.get("n"),
        Some(&Value::Int(1))
    );
}

#[test]
fn select_star_keeps_every_field() {
    let sql = "CREATE STREAM s (ts BIGINT, a BIGINT) WITH (timestamp = 'ts');
               INSERT INTO o SELECT * FROM s;
               INSERT INTO p SELECT a FROM s;";
    let rows = vec![row(&[
        ("ts", Value::Int(10)),
        ("a", Value::Int(1)),
        ("extra", Value::from("kept")),
    ])];
    let result = run(sql, rows, "o");
    assert_eq!(
        result.outputs["o"][0].row.get("extra"),
        Some(&Value::from("kept"))
    );
}

#[test]
fn fields_only_one_rule_reads_are_kept_for_it() {
    let sql = "CREATE STREAM s WITH (timestamp = 'ts');
               INSERT INTO o SELECT a FROM s;
               INSERT INTO p SELECT device.room AS room FROM s;";
    let rows = vec![weir_core::parse_json_row(
        br#"{"ts": 10, "a": 1, "device": {"room": "lab"}, "unused": 0}"#,
    )
    .unwrap()];
    let result = run(sql, rows, "p");
    assert_eq!(
        result.outputs["p"][0].row.get("room"),
        Some(&Value::from("lab"))
    );
}

/// Ingest remembers the first row's layout (names by pointer, position by position); rows of
/// another layout, or with the same names in another order, are still pruned by name.
#[test]
fn rows_laid_out_differently_are_pruned_alike() {
    let sql = "CREATE STREAM s (ts BIGINT, a BIGINT) WITH (timestamp = 'ts');
               INSERT INTO o SELECT a, ts FROM s;";
    let (ts, a, extra): (Arc<str>, Arc<str>, Arc<str>) = ("ts".into(), "a".into(), "extra".into());
    let shared = |order: [(&Arc<str>, i64); 3]| -> Row {
        order
            .into_iter()
            .map(|(k, v)| (k.clone(), Value::Int(v)))
            .collect()
    };
    let rows = vec![
        shared([(&ts, 10), (&a, 1), (&extra, 100)]),
        shared([(&extra, 200), (&a, 2), (&ts, 20)]),
        row(&[("a", Value::Int(3)), ("ts", Value::Int(30))]),
        shared([(&ts, 40), (&extra, 400), (&a, 4)]),
    ];
    let result = run(sql, rows, "o");
    let seen: Vec<String> = result.outputs["o"]
        .iter()
        .map(|e| {
            let mut f: Vec<String> = e.row.iter().map(|(k, v)| format!("{k}={v}")).collect();
            f.sort();
            f.join(",")
        })
        .collect();
    assert_eq!(seen, ["a=1,ts=10", "a=2,ts=20", "a=3,ts=30", "a=4,ts=40"]);
}
