//! Property tests: window aggregates and joins computed by the engine, on random out-of-order
//! input and with several workers, equal a brute-force recomputation written here.

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use weir_core::{Row, Value};
use weir_engine::{run_batch, EngineConfig};

/// Random events `(key, ts, v)`, out of order by less than one second.
fn events(max: usize) -> impl Strategy<Value = Vec<(i64, i64, i64)>> {
    (
        prop::collection::vec((0i64..4, 0i64..20_000, -50i64..50), 1..max),
        prop::collection::vec(any::<bool>(), max),
    )
        .prop_map(|(mut evs, swaps)| {
            evs.sort_by_key(|e| e.1);
            for (i, swap) in swaps.iter().enumerate() {
                if *swap && i + 1 < evs.len() && evs[i + 1].1 - evs[i].1 < 1000 {
                    evs.swap(i, i + 1);
                }
            }
            evs
        })
}

fn rows(evs: &[(i64, i64, i64)]) -> Vec<Row> {
    evs.iter()
        .map(|(k, ts, v)| {
            [
                ("k", Value::Int(*k)),
                ("ts", Value::Int(*ts)),
                ("v", Value::Int(*v)),
            ]
            .into_iter()
            .map(|(n, v)| (Arc::from(n), v))
            .collect()
        })
        .collect()
}

fn int(r: &Row, f: &str) -> i64 {
    r.get(f)
        .and_then(Value::as_i64)
        .unwrap_or_else(|| panic!("{f} in {r}"))
}

/// (key, window_start) -> (count, sum, min, max) from the engine.
type Windows = BTreeMap<(i64, i64), (i64, i64, i64, i64)>;

fn run(sql: &str, inputs: Vec<(&str, Vec<Row>)>, output: &str, workers: usize) -> Vec<Row> {
    let program = weir_lang::compile(sql).expect("rules compile");
    let inputs = inputs.into_iter().map(|(n, r)| (n.to_owned(), r)).collect();
    let config = EngineConfig {
        workers,
        batch_size: 7,
        ..EngineConfig::default()
    };
    let result = run_batch(&program, inputs, &[output.to_owned()], config).unwrap();
    assert!(
        result.late.is_empty(),
        "no event is late by construction: {:?}",
        result.late
    );
    result.outputs[output]
        .iter()
        .map(|e| e.row.clone())
        .collect()
}

fn engine_windows(out: &[Row]) -> Windows {
    let mut w = Windows::new();
    for r in out {
        let prev = w.insert(
            (int(r, "k"), int(r, "window_start")),
            (int(r, "n"), int(r, "total"), int(r, "lo"), int(r, "hi")),
        );
        assert!(prev.is_none(), "a window was emitted twice: {r}");
    }
    w
}

fn add(w: &mut Windows, key: (i64, i64), v: i64) {
    let e = w.entry(key).or_insert((0, 0, i64::MAX, i64::MIN));
    e.0 += 1;
    e.1 += v;
    e.2 = e.2.min(v);
    e.3 = e.3.max(v);
}

const AGGS: &str = "k, window_start, count(*) AS n, sum(v) AS total, min(v) AS lo, max(v) AS hi";

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn hopping_and_tumbling_windows_match_brute_force(evs in events(200), slide in 1i64..4, factor in 1i64..4, workers in 1usize..4) {
        let (slide, size) = (slide * 500, slide * 500 * factor);
        let sql = format!(
            "CREATE STREAM s (k BIGINT, ts BIGINT, v BIGINT) WITH (timestamp = 'ts', watermark = '1 second');
             INSERT INTO o SELECT {AGGS} FROM s GROUP BY k, HOP(ts, INTERVAL '{slide}' MILLISECOND, INTERVAL '{size}' MILLISECOND);"
        );
        let got = engine_windows(&run(&sql, vec![("s", rows(&evs))], "o", workers));
        let mut want = Windows::new();
        for (k, ts, v) in &evs {
            let mut start = ts - ts.rem_euclid(slide);
            while start > ts - size {
                add(&mut want, (*k, start), *v);
                start -= slide;
            }
        }
        prop_assert_eq!(got, want);
    }

    #[test]
    fn session_windows_match_brute_force(evs in events(150), gap in 1i64..5, workers in 1usize..4) {
        let gap = gap * 300;
        let sql = format!(
            "CREATE STREAM s (k BIGINT, ts BIGINT, v BIGINT) WITH (timestamp = 'ts', watermark = '1 second');
             INSERT INTO o SELECT {AGGS}, window_end FROM s GROUP BY k, SESSION(ts, INTERVAL '{gap}' MILLISECOND);"
        );
        let out = run(&sql, vec![("s", rows(&evs))], "o", workers);
        let got = engine_windows(&out);
        let mut by_key: BTreeMap<i64, Vec<(i64, i64)>> = BTreeMap::new();
        for (k, ts, v) in &evs {
            by_key.entry(*k).or_default().push((*ts, *v));
        }
        let mut want = Windows::new();
        for (k, mut list) in by_key {
            list.sort();
            let mut start = list[0].0;
            let mut last = list[0].0;
            // Flink's sessions: events at most the gap apart share one.
            for (ts, v) in list {
                if ts > last + gap {
                    start = ts;
                }
                last = ts;
                add(&mut want, (k, start), v);
            }
        }
        prop_assert_eq!(got, want);
    }

    #[test]
    fn interval_join_matches_nested_loops(left in events(60), right in events(60), lower in -3i64..3, width in 0i64..4, workers in 1usize..4) {
        let (lower, upper) = (lower * 400, lower * 400 + width * 400);
        // Coarse times, so that pairs fall exactly on the bounds.
        let coarse = |evs: Vec<(i64, i64, i64)>| evs.into_iter().map(|(k, ts, v)| (k, ts / 200 * 200, v)).collect::<Vec<_>>();
        let (left, right) = (coarse(left), coarse(right));
        let sql = format!(
            "CREATE STREAM l (k BIGINT, ts BIGINT, v BIGINT) WITH (timestamp = 'ts', watermark = '1 second');
             CREATE STREAM r (k BIGINT, ts BIGINT, v BIGINT) WITH (timestamp = 'ts', watermark = '1 second');
             INSERT INTO o SELECT a.k AS k, a.ts AS lts, b.ts AS rts, a.v AS lv, b.v AS rv
             FROM l AS a JOIN r AS b ON a.k = b.k AND b.ts >= a.ts + {lower} AND b.ts <= a.ts + {upper};"
        );
        // Both streams must move together for nothing to be late: their time ranges match.
        let out = run(&sql, vec![("l", rows(&left)), ("r", rows(&right))], "o", workers);
        let mut got: Vec<(i64, i64, i64, i64, i64)> = out.iter().map(|r| (int(r, "k"), int(r, "lts"), int(r, "rts"), int(r, "lv"), int(r, "rv"))).collect();
        got.sort();
        let mut want = Vec::new();
        for (lk, lts, lv) in &left {
            for (rk, rts, rv) in &right {
                let d = rts - lts;
                if lk == rk && d >= lower && d <= upper {
                    want.push((*lk, *lts, *rts, *lv, *rv));
                }
            }
        }
        want.sort();
        prop_assert_eq!(got, want);
    }
}

/// Random events `(key, ts, v)` with random disorder: most a little out of order, some far
/// behind (late for every rule), so lateness, allowed-lateness updates, session merges and
/// pattern matches all happen.
fn disordered(max: usize) -> impl Strategy<Value = Vec<(i64, i64, i64)>> {
    prop::collection::vec((0i64..3, 0i64..200, -20i64..20, 0u8..10), 1..max).prop_map(|raw| {
        let mut t = 0;
        raw.into_iter()
            .map(|(k, step, v, shape)| {
                t += step;
                let ts = match shape {
                    0 => t - 3_000, // far behind
                    1 | 2 => t - 700,
                    _ => t,
                };
                (k, ts.max(0), v)
            })
            .collect()
    })
}

/// Runs `sql` over stream `s`, flushing the ingest after each chunk of `chunks` (cycled):
/// sorted outputs of every rule, and sorted late events.
fn run_chunked(
    sql: &str,
    evs: &[(i64, i64, i64)],
    chunks: &[usize],
    workers: usize,
) -> (Vec<String>, Vec<String>) {
    let program = weir_lang::compile(sql).expect("rules compile");
    let sinks: Vec<String> = program.rules.iter().map(|r| r.sink.clone()).collect();
    let config = EngineConfig {
        workers,
        batch_size: 1 << 20,
        ..EngineConfig::default()
    };
    let mut flow = weir_engine::Dataflow::build(&program, &["s".into()], &sinks, config).unwrap();
    let late = flow.take_late().unwrap();
    let mut ingest = flow.take_ingest("s").unwrap();
    let outs: Vec<_> = sinks
        .iter()
        .map(|s| (s.clone(), flow.take_output(s).unwrap()))
        .collect();
    std::thread::scope(|scope| {
        let readers: Vec<_> = outs
            .into_iter()
            .map(|(name, out)| {
                scope.spawn(move || {
                    out.flatten()
                        .map(|e| format!("{name} {}", e.row.to_json()))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let late = scope.spawn(move || {
            late.map(|l| format!("{} {}", l.rule, l.event.row.to_json()))
                .collect::<Vec<_>>()
        });
        let mut sizes = chunks.iter().cycle();
        let mut left = *sizes.next().unwrap();
        for row in rows(evs) {
            ingest.push(row).unwrap();
            left -= 1;
            if left == 0 {
                ingest.flush();
                left = *sizes.next().unwrap();
            }
        }
        ingest.finish();
        let mut got: Vec<String> = readers
            .into_iter()
            .flat_map(|r| r.join().unwrap())
            .collect();
        flow.join();
        let mut late = late.join().unwrap();
        got.sort();
        late.sort();
        (got, late)
    })
}

/// Rules of every kind whose outcome depends on event time, over one stream.
const EVENT_TIME_RULES: &str = "
    CREATE STREAM s (k BIGINT, ts BIGINT, v BIGINT)
      WITH (timestamp = 'ts', watermark = '500 ms', allowed_lateness = '400 ms');
    INSERT INTO tumbling SELECT k, window_start, count(*) AS n, sum(v) AS total
      FROM s GROUP BY k, TUMBLE(ts, INTERVAL '1' SECOND);
    INSERT INTO hopping SELECT k, window_start, count(*) AS n
      FROM s GROUP BY k, HOP(ts, INTERVAL '300' MILLISECOND, INTERVAL '900' MILLISECOND);
    INSERT INTO sessions SELECT k, window_start, window_end, count(*) AS n
      FROM s GROUP BY k, SESSION(ts, INTERVAL '250' MILLISECOND);
    INSERT INTO sliding SELECT k, window_end, sum(v) AS total
      FROM s GROUP BY k, SLIDING(ts, INTERVAL '700' MILLISECOND);
    INSERT INTO changes SELECT k, ts, v, lag(v) OVER (PARTITION BY k) AS before
      FROM s WHERE changed(v > 0) OVER (PARTITION BY k);
    INSERT INTO vees SELECT * FROM s MATCH_RECOGNIZE (PARTITION BY k ORDER BY ts
      MEASURES FIRST(A.ts) AS started, LAST(C.ts) AS ended, COUNT(B.*) AS falls
      PATTERN (A B+ C+) WITHIN INTERVAL '2' SECOND
      DEFINE B AS B.v < PREV(B.v), C AS C.v > PREV(C.v));
    INSERT INTO per_second SELECT window_start, count(*) AS n
      FROM tumbling GROUP BY TUMBLE(window_start, INTERVAL '2' SECOND);";

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    /// Where the batches end and how many workers run never changes a result: every event is
    /// judged by the watermark of the events before it, as if it came alone.
    #[test]
    fn batch_boundaries_and_workers_never_change_a_result(
        evs in disordered(300),
        chunks in prop::collection::vec(1usize..40, 1..8),
        workers in 1usize..4,
    ) {
        let alone = run_chunked(EVENT_TIME_RULES, &evs, &[1], 1);
        let chunked = run_chunked(EVENT_TIME_RULES, &evs, &chunks, workers);
        prop_assert!(!alone.0.is_empty());
        prop_assert_eq!(&chunked.0, &alone.0);
        prop_assert_eq!(&chunked.1, &alone.1);
    }
}
