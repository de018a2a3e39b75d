//! The state seam: an operator snapshotted mid-stream and restored into a fresh one (through
//! JSON text, as a checkpoint or a move would carry it) produces exactly what an uninterrupted
//! operator produces.

use std::sync::Arc;

use weir_core::{Event, ManualClock, Row, Value};
use weir_engine::{rule_chain, run_batch, Chain, EngineConfig, Output};

fn event(ts: i64, fields: &[(&str, Value)]) -> Event {
    let mut row: Row = fields
        .iter()
        .map(|(k, v)| (Arc::from(*k), v.clone()))
        .collect();
    row.set("ts", Value::Int(ts));
    Event::new(ts, row)
}

/// (input, event) pairs with a watermark after each event (no out-of-orderness).
fn drive(chain: &mut Chain, evs: &[(usize, Event)], out: &mut Output) {
    for (input, e) in evs {
        let wm = chain.watermark();
        let mut e = e.clone();
        e.wm = wm;
        chain.on_event(*input, e.clone(), wm, out);
        chain.on_watermark(e.ts - 1, out);
    }
}

fn check(sql: &str, evs: Vec<(usize, Event)>) {
    let program = weir_lang::compile(sql).unwrap();
    let rule = &program.rules[0];
    let mut whole = rule_chain(&program, rule);
    let mut expected = Output::default();
    drive(&mut whole, &evs, &mut expected);
    whole.on_end(&mut expected);
    assert!(!expected.events.is_empty(), "the case produces output");

    for cut in [1, evs.len() / 2, evs.len() - 1] {
        let mut first = rule_chain(&program, rule);
        let mut got = Output::default();
        drive(&mut first, &evs[..cut], &mut got);
        let text = serde_json::to_string(&first.snapshot().unwrap()).unwrap();
        drop(first);
        let mut second = rule_chain(&program, rule);
        second
            .restore(&serde_json::from_str::<Box<serde_json::value::RawValue>>(&text).unwrap())
            .unwrap();
        drive(&mut second, &evs[cut..], &mut got);
        second.on_end(&mut got);
        assert_eq!(got.events, expected.events, "cut at {cut} of {sql}");
    }
}

fn readings() -> Vec<(usize, Event)> {
    (0..40)
        .map(|i| {
            (
                0,
                event(
                    i * 370,
                    &[("k", Value::Int(i % 3)), ("v", Value::Int((i * 7) % 11))],
                ),
            )
        })
        .collect()
}

#[test]
fn windows_restore() {
    for window in [
        "TUMBLE(ts, INTERVAL '1' SECOND)",
        "HOP(ts, INTERVAL '1' SECOND, INTERVAL '3' SECOND)",
        "SESSION(ts, INTERVAL '1' SECOND)",
        "SLIDING(ts, INTERVAL '2' SECOND)",
        "COUNT_WINDOW(4, 2)",
    ] {
        check(
            &format!("CREATE STREAM s (k BIGINT, ts BIGINT, v BIGINT) WITH (timestamp = 'ts');
             INSERT INTO o SELECT k, count(*) AS n, sum(v) AS total, percentile(v, 0.5) AS p, first_value(v) AS f FROM s GROUP BY k, {window};"),
            readings(),
        );
    }
}

#[test]
fn change_functions_restore() {
    check(
        "CREATE STREAM s (k BIGINT, ts BIGINT, v BIGINT) WITH (timestamp = 'ts');
         INSERT INTO o SELECT k, v, lag(v, 2) OVER (PARTITION BY k) AS l2, delta(v) OVER (PARTITION BY k) AS d
         FROM s WHERE changed(v % 2) OVER (PARTITION BY k);",
        readings(),
    );
}

#[test]
fn patterns_restore() {
    check(
        "CREATE STREAM s (k BIGINT, ts BIGINT, v BIGINT) WITH (timestamp = 'ts');
         INSERT INTO o SELECT * FROM s MATCH_RECOGNIZE (PARTITION BY k ORDER BY ts
           MEASURES FIRST(A.v) AS a, LAST(B.v) AS b, COUNT(B.*) AS nb
           PATTERN (A B+ C) WITHIN INTERVAL '20' SECOND
           DEFINE B AS B.v > PREV(B.v), C AS C.v < PREV(C.v));",
        readings(),
    );
}

#[test]
fn joins_restore() {
    let mut evs = Vec::new();
    for i in 0..30 {
        evs.push((0, event(i * 500, &[("id", Value::Int(i % 4))])));
        evs.push((1, event(i * 500 + 250, &[("id", Value::Int((i + 1) % 4))])));
    }
    check(
        "CREATE STREAM a (id BIGINT, ts BIGINT) WITH (timestamp = 'ts');
         CREATE STREAM b (id BIGINT, ts BIGINT) WITH (timestamp = 'ts');
         INSERT INTO o SELECT a.id, a.ts AS ats, b.ts AS bts FROM a JOIN b ON a.id = b.id AND b.ts BETWEEN a.ts - INTERVAL '2' SECOND AND a.ts + INTERVAL '2' SECOND;",
        evs,
    );
}

#[test]
fn processing_time_comes_from_the_injected_clock() {
    let program = weir_lang::compile(
        "CREATE STREAM s (k BIGINT, v BIGINT);
         INSERT INTO o SELECT k, window_start, count(*) AS n FROM s GROUP BY k, TUMBLE(rowtime, INTERVAL '1' SECOND);",
    )
    .unwrap();
    let clock = Arc::new(ManualClock::new(1_700_000_004_321));
    let rows: Vec<Row> = (0..5)
        .map(|i| {
            [
                (Arc::from("k"), Value::Int(i % 2)),
                (Arc::from("v"), Value::Int(i)),
            ]
            .into_iter()
            .collect()
        })
        .collect();
    let config = EngineConfig {
        clock,
        ..EngineConfig::default()
    };
    let result = run_batch(&program, vec![("s".into(), rows)], &["o".into()], config).unwrap();
    let mut out: Vec<String> = result.outputs["o"]
        .iter()
        .map(|e| e.row.to_json())
        .collect();
    out.sort();
    assert_eq!(
        out,
        [
            r#"{"k":0,"window_start":1700000004000,"n":3}"#,
            r#"{"k":1,"window_start":1700000004000,"n":2}"#
        ]
    );
}

/// What a run of [`drive_flow`] gave: outputs and late events, and at a barrier the operator
/// snapshots and the ingest watermarks.
struct Driven {
    got: Vec<String>,
    late: Vec<String>,
    states: Vec<weir_engine::Snapshot>,
    watermarks: (i64, i64),
}

/// Feeds `a` and `b` to a dataflow with outputs `sums` and `pairs`, the ingests resuming at
/// `resume`. With `barrier`, puts the barrier of epoch 1 behind the input and returns what was
/// output before it, the operator snapshots and the ingest watermarks, abandoning the flow
/// there as a crash would; otherwise ends the input and returns everything output.
fn drive_flow(
    mut flow: weir_engine::Dataflow,
    a: &[Row],
    b: &[Row],
    barrier: bool,
    resume: (i64, i64),
) -> Driven {
    use weir_engine::Delivered;
    let mut snaps = flow.take_snapshots().unwrap();
    let chains = flow.chains();
    let mut ia = flow.take_ingest("a").unwrap();
    let mut ib = flow.take_ingest("b").unwrap();
    ia.resume_at(resume.0);
    ib.resume_at(resume.1);
    let outs: Vec<_> = ["sums", "pairs"]
        .iter()
        .map(|o| flow.take_output(o).unwrap())
        .collect();
    let mut late_rx = flow.take_late().unwrap();
    let readers: Vec<_> = outs
        .into_iter()
        .map(|mut out| {
            std::thread::spawn(move || {
                let mut got = Vec::new();
                while let Some(d) = out.next_delivered() {
                    match d {
                        Delivered::Events(evs) => got.extend(evs.iter().map(|e| e.row.to_json())),
                        Delivered::Barrier(_) => break,
                    }
                }
                got
            })
        })
        .collect();
    a.iter().for_each(|r| ia.push(r.clone()).unwrap());
    b.iter().for_each(|r| ib.push(r.clone()).unwrap());
    let watermarks = (ia.watermark(), ib.watermark());
    if barrier {
        ia.barrier(1);
        ib.barrier(1);
    } else {
        ia.finish();
        ib.finish();
    }
    let got = readers
        .into_iter()
        .flat_map(|r| r.join().unwrap())
        .collect();
    let mut states: Vec<_> = if barrier {
        snaps.by_ref().take(chains).collect()
    } else {
        Vec::new()
    };
    states.sort_by_key(|s| s.index);
    assert!(states.iter().all(|s| s.epoch == 1));
    // The barrier passed every rule after the late events before it were sent; without one,
    // the flow ends and its late channel closes.
    let late: Vec<weir_engine::LateEvent> = match barrier {
        true => std::iter::from_fn(|| late_rx.try_recv()).collect(),
        false => {
            flow.join();
            late_rx.collect()
        }
    };
    Driven {
        got,
        late: late
            .iter()
            .map(|l| format!("{} {}", l.rule, l.event.row.to_json()))
            .collect(),
        states: states.into_iter().map(|s| s.state.unwrap()).collect(),
        watermarks,
    }
}

/// A whole dataflow checkpointed by a barrier mid-stream, then rebuilt from the snapshots and
/// the ingest watermarks the barrier collected and fed the rest: outputs and late events before
/// the barrier plus those after the restore are exactly those of an uninterrupted run. Two
/// inputs (a join) and two workers per keyed rule exercise barrier alignment; some events of
/// `a` are late by their own stream's watermark, which the restored ingest must remember.
#[test]
fn a_dataflow_restored_from_a_barrier_checkpoint_continues_exactly() {
    use weir_engine::Dataflow;
    let program = weir_lang::compile(
        "CREATE STREAM a (id BIGINT, ts BIGINT, v BIGINT) WITH (timestamp = 'ts');
         CREATE STREAM b (id BIGINT, ts BIGINT) WITH (timestamp = 'ts');
         INSERT INTO sums SELECT id, window_start, sum(v) AS total, count(*) AS n FROM a GROUP BY id, TUMBLE(ts, INTERVAL '1' SECOND);
         INSERT INTO pairs SELECT a.id, a.ts AS ats, b.ts AS bts FROM a JOIN b ON a.id = b.id AND b.ts BETWEEN a.ts - INTERVAL '1' SECOND AND a.ts + INTERVAL '1' SECOND;",
    )
    .unwrap();
    let row = |fields: Vec<(&str, i64)>| -> Row {
        fields
            .into_iter()
            .map(|(k, v)| (Arc::from(k), Value::Int(v)))
            .collect()
    };
    // Every 25th reading of `a` comes 600 ms after its time: late for `a`'s own watermark.
    let a: Vec<Row> = (0..400)
        .map(|i| {
            let ts = if i % 25 == 24 { i * 37 - 600 } else { i * 37 };
            row(vec![("id", i % 5), ("ts", ts), ("v", i % 13)])
        })
        .collect();
    let b: Vec<Row> = (0..300)
        .map(|i| row(vec![("id", i % 7), ("ts", i * 51)]))
        .collect();
    let (inputs, outputs) = (
        ["a".to_owned(), "b".to_owned()],
        ["sums".to_owned(), "pairs".to_owned()],
    );
    let config = || EngineConfig {
        workers: 2,
        batch_size: 16,
        ..EngineConfig::default()
    };
    let build =
        |restore| Dataflow::build_restored(&program, &inputs, &outputs, config(), restore).unwrap();
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let start = (i64::MIN, i64::MIN);
    let whole = drive_flow(build(None), &a, &b, false, start);
    assert!(whole.got.len() > 100);
    assert!(whole.late.len() > 10, "{:?}", whole.late);

    for (cut_a, cut_b) in [(230, 140), (0, 299), (400, 0), (60, 250), (24, 3), (49, 0)] {
        let mut before = drive_flow(build(None), &a[..cut_a], &b[..cut_b], true, start);
        assert_eq!(before.states.len(), 4, "two workers for each keyed rule");
        let text = serde_json::to_string(&before.states).unwrap();
        let after = drive_flow(
            build(Some(serde_json::from_str(&text).unwrap())),
            &a[cut_a..],
            &b[cut_b..],
            false,
            before.watermarks,
        );
        before.got.extend(after.got);
        before.late.extend(after.late);
        let cut = format!("cut at a {cut_a}, b {cut_b}");
        assert_eq!(sorted(before.got), sorted(whole.got.clone()), "{cut}");
        assert_eq!(sorted(before.late), sorted(whole.late.clone()), "{cut}");
    }
    let wrong = Dataflow::build_restored(&program, &inputs, &outputs, config(), Some(vec![]));
    assert!(wrong
        .err()
        .unwrap()
        .to_string()
        .contains("state of 0 operator chains and the rules need 4"));
}

/// With a state TTL, a key unused for longer than the TTL (in event time) starts again from
/// nothing: `changed` sees its old value as new. Without one, the key's history stays.
#[test]
fn a_state_ttl_drops_keys_left_idle() {
    let program = weir_lang::compile(
        "CREATE STREAM s (k BIGINT, ts BIGINT, v BIGINT) WITH (timestamp = 'ts');
         INSERT INTO o SELECT k, ts FROM s WHERE changed(v) OVER (PARTITION BY k);",
    )
    .unwrap();
    let row = |k: i64, ts: i64| -> Row {
        [("k", k), ("ts", ts), ("v", 7)]
            .into_iter()
            .map(|(n, v)| (Arc::from(n), Value::Int(v)))
            .collect()
    };
    // Key 1 at 0 s, key 2 every 100 ms for 10 s, key 1 again (same value) at 10 s.
    let mut rows = vec![row(1, 0)];
    rows.extend((1..100).map(|i| row(2, i * 100)));
    rows.push(row(1, 10_000));
    let run = |ttl| {
        let config = EngineConfig {
            workers: 1,
            batch_size: 8,
            state_ttl_ms: ttl,
            ..EngineConfig::default()
        };
        let r = run_batch(
            &program,
            vec![("s".into(), rows.clone())],
            &["o".into()],
            config,
        )
        .unwrap();
        r.outputs["o"]
            .iter()
            .filter(|e| e.row.get("k") == Some(&Value::Int(1)))
            .count()
    };
    assert_eq!(run(None), 1, "key 1's value did not change");
    assert_eq!(run(Some(2_000)), 2, "key 1 expired after 2 s idle");
}
