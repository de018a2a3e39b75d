//! Events stamped once and shared by many rules give each rule what stamping them itself would
//! have: the same results and the same late events, whatever watermark the rule had reached
//! before the shared batch.

use std::sync::Arc;

use futures::executor::block_on;
use weir_core::{Event, ManualClock, Row, Value};
use weir_engine::{Dataflow, EngineConfig, Ingest, LateEvent};

const SQL: &str = "CREATE STREAM s (sensor STRING, temp DOUBLE, ts BIGINT)
                     WITH (timestamp = 'ts', watermark = '100 ms');
                   INSERT INTO counts SELECT sensor, count(*) AS n, max(temp) AS hottest
                   FROM s GROUP BY sensor, TUMBLE(ts, INTERVAL '1' SECOND);";

fn row(sensor: &str, temp: f64, ts: i64) -> Row {
    [
        (Arc::from("sensor"), Value::from(sensor)),
        (Arc::from("temp"), Value::Float(temp)),
        (Arc::from("ts"), Value::Int(ts)),
    ]
    .into_iter()
    .collect()
}

fn flow(sql: &str, config: EngineConfig) -> (Dataflow, Ingest) {
    let program = weir_lang::compile(sql).unwrap();
    let mut flow =
        Dataflow::build(&program, &["s".to_owned()], &["counts".to_owned()], config).unwrap();
    let ingest = flow.take_ingest("s").unwrap();
    (flow, ingest)
}

/// Ends the input and collects the results and late events.
fn finish(mut flow: Dataflow, ingest: Ingest) -> (Vec<Event>, Vec<LateEvent>) {
    let out = flow.take_output("counts").unwrap();
    let late = flow.take_late().unwrap();
    ingest.finish();
    let results = std::thread::spawn(move || out.flatten().collect::<Vec<_>>());
    let late = std::thread::spawn(move || late.collect::<Vec<_>>());
    flow.join();
    (results.join().unwrap(), late.join().unwrap())
}

/// The results in a fixed order: the partitions of a keyed rule emit side by side.
fn shown(evs: &[Event]) -> Vec<String> {
    let mut all: Vec<String> = evs
        .iter()
        .map(|e| format!("{} {:?}", e.ts, e.row))
        .collect();
    all.sort();
    all
}

#[test]
fn a_shared_batch_is_judged_by_each_rules_own_watermark() {
    let history: Vec<Row> = (0..=51)
        .map(|i| row(["a", "b"][i % 2], i as f64, i as i64 * 100))
        .collect();
    // After the history (up to 5,100) a rule's watermark stands at 4,999, though the last
    // event it sent carries 4,899: the first row is late only by the former, and on time for
    // a rule that did not see the history at all. Then rows out of order (1,000, 2,000 and
    // 5,900 come after their windows closed) and a row that is no event.
    let mut batch: Vec<Result<Row, String>> = vec![
        Ok(row("a", 90.0, 4_950)),
        Ok(row("b", 91.0, 1_000)),
        Ok(row("a", 92.0, 5_300)),
        Ok(row("a", 93.0, 5_200)),
        Err("not JSON".to_owned()),
        Ok(row("b", 94.0, 2_000)),
        Ok(row("b", 95.0, 6_500)),
        Ok(row("a", 96.0, 5_900)),
    ];
    batch.push(Ok(row("a", 97.0, 7_000)));
    let indexed: Vec<(usize, &Result<Row, String>)> = batch.iter().enumerate().collect();

    // Stamping each row itself.
    let (own_flow, mut own) = flow(SQL, EngineConfig::default());
    for r in &history {
        own.push(r.clone()).unwrap();
    }
    let mut rejected = 0;
    for (_, r) in &indexed {
        if let Err(_) | Ok(Err(_)) = r.as_ref().map(|r| own.push(r.clone())) {
            rejected += 1;
        }
    }
    let (own_results, own_late) = finish(own_flow, own);

    // Taking the batch as another rule, which never saw the history, stamped it.
    let (other_flow, other) = flow(SQL, EngineConfig::default());
    let stamped = other.stamp_all(indexed.iter().copied());
    assert_eq!(stamped.events, 8);
    assert_eq!(stamped.rejected.len(), rejected);
    let (shared_flow, mut shared) = flow(SQL, EngineConfig::default());
    for r in &history {
        shared.push(r.clone()).unwrap();
    }
    assert!(block_on(shared.send_stamped(&stamped)));
    let (shared_results, shared_late) = finish(shared_flow, shared);
    drop(finish(other_flow, other));

    assert_eq!(shown(&own_results).len(), 14, "{:?}", shown(&own_results));
    assert_eq!(shown(&shared_results), shown(&own_results));
    let late_ts = |l: &[LateEvent]| {
        let mut ts: Vec<i64> = l.iter().map(|l| l.event.ts).collect();
        ts.sort();
        ts
    };
    assert_eq!(late_ts(&own_late), vec![1_000, 2_000, 4_950, 5_900]);
    assert_eq!(late_ts(&shared_late), late_ts(&own_late));
}

#[test]
fn a_processing_time_stream_past_the_shared_events_stamps_them_itself() {
    let sql = "CREATE STREAM s (sensor STRING, temp DOUBLE);
               INSERT INTO counts SELECT sensor FROM s;";
    let clock = Arc::new(ManualClock::new(10_000));
    let config = EngineConfig {
        clock: clock.clone(),
        ..EngineConfig::default()
    };
    let rows = [Ok(row("a", 1.0, 0))];
    let indexed = || rows.iter().enumerate();
    let (first_flow, first) = flow(sql, config.clone());
    let (late_flow, mut late) = flow(sql, config);
    let stamped = first.stamp_all(indexed());
    clock.set(12_000);
    late.flush();
    // Its watermark (11,999) has passed the events' time (10,000): they would be late here.
    assert!(!block_on(late.send_stamped(&stamped)));
    drop(finish(first_flow, first));
    drop(finish(late_flow, late));
}

#[test]
fn rules_share_stamping_only_when_they_stamp_alike() {
    let key = |sql: &str| flow(sql, EngineConfig::default()).1.sharing_key();
    assert_eq!(key(SQL), key(SQL));
    // Another field read, another clock: stamped apart.
    let reads_less = SQL.replace("max(temp) AS hottest", "count(ts) AS m");
    assert_ne!(key(SQL), key(&reads_less));
    let clock = EngineConfig {
        clock: Arc::new(ManualClock::new(0)),
        ..EngineConfig::default()
    };
    assert_ne!(key(SQL), flow(SQL, clock).1.sharing_key());
}
