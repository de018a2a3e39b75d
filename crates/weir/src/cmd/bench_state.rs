//! `weir bench state`: what durable state costs. Runs the engine-core benchmark queries in
//! process with and without a checkpoint every second (barriers through the dataflow, every
//! operator snapshotted, the checkpoint file written), and times the recovery of a rule that
//! holds a given number of keys.

use std::sync::Arc;
use std::time::{Duration, Instant};

use weir_core::{Row, Value};
use weir_engine::{Dataflow, EngineConfig};
use weir_lang::Program;

use super::bench_node::median;
use weir_state::{Checkpoint, CheckpointStore, FileCheckpoints};

const QUERIES: [(&str, &str, &str); 2] = [
    (
        "filter",
        include_str!("../../../../examples/readings/filter.sql"),
        "high_readings",
    ),
    (
        "tumbling_avg",
        include_str!("../../../../examples/readings/tumbling_avg.sql"),
        "avg_per_second",
    ),
];

fn reading(i: i64, sensors: i64) -> Row {
    [
        ("sensor_id", Value::Int(i % sensors)),
        ("ts", Value::Int(1_700_000_000_000 + i / 10)),
        ("value", Value::Float(((i * 7919) % 1000) as f64 / 10.0)),
        ("flag", Value::Bool(i % 7 == 0)),
    ]
    .into_iter()
    .map(|(k, v)| (Arc::from(k), v))
    .collect()
}

/// What one run did: events/s, and per checkpoint its duration and size.
struct Run {
    rate: f64,
    checkpoints: Vec<(Duration, u64)>,
}

/// When a run puts barriers into its input.
#[derive(Clone, Copy)]
enum Barriers {
    None,
    Every(Duration),
    AtEnd,
}

/// Feeds `events` generated readings over `sensors` keys to the program's single input,
/// putting barriers in as `barriers` says and writing each completed checkpoint to `store`.
fn run_once(
    program: &Program,
    output: &str,
    (events, sensors): (usize, i64),
    barriers: Barriers,
    store: &FileCheckpoints,
) -> Result<Run, String> {
    let input = program.streams[0].name.clone();
    let config = EngineConfig {
        workers: 2,
        ..EngineConfig::default()
    };
    let mut flow = Dataflow::build(
        program,
        std::slice::from_ref(&input),
        &[output.to_owned()],
        config,
    )
    .map_err(|e| e.to_string())?;
    let mut snaps = flow.take_snapshots().ok_or("snapshots taken")?;
    let chains = flow.chains();
    let mut ingest = flow.take_ingest(&input).ok_or("no ingest")?;
    let out = flow.take_output(output).ok_or("no output")?;
    let late = flow.take_late().ok_or("no late")?;
    let started = Instant::now();
    let (asked_tx, asked_rx) = std::sync::mpsc::channel::<(u64, Instant)>();
    let mut checkpoints = Vec::new();
    std::thread::scope(|s| {
        s.spawn(move || out.count());
        s.spawn(move || late.count());
        let writer = s.spawn(move || {
            let mut done = Vec::new();
            let mut states = Vec::new();
            for (epoch, asked) in asked_rx {
                states.clear();
                while states.len() < chains {
                    match snaps.next() {
                        Some(snap) if snap.epoch == epoch => match snap.state {
                            Ok(state) => states.push(state),
                            Err(e) => panic!("state not saved: {e}"),
                        },
                        Some(_) => {}
                        None => return done,
                    }
                }
                let c = Checkpoint {
                    rule: "bench".into(),
                    epoch,
                    created_ms: 0,
                    workers: 2,
                    operators: std::mem::take(&mut states),
                    positions: Default::default(),
                    watermarks: Default::default(),
                    staged: Default::default(),
                };
                if let Ok(saved) = store.save(&c) {
                    done.push((asked.elapsed(), saved.bytes));
                }
            }
            done
        });
        let every = match barriers {
            Barriers::Every(e) => Some(e),
            _ => None,
        };
        let mut next = every.map(|e| Instant::now() + e);
        let mut epoch = 0;
        let mut barrier = |ingest: &mut weir_engine::Ingest| {
            epoch += 1;
            ingest.barrier(epoch);
            let _ = asked_tx.send((epoch, Instant::now()));
        };
        for i in 0..events {
            let _ = ingest.push(reading(i as i64, sensors));
            if let (0, Some(at), Some(e)) = (i % 1024, next, every) {
                if Instant::now() >= at {
                    barrier(&mut ingest);
                    next = Some(at + e);
                }
            }
        }
        if let Barriers::AtEnd = barriers {
            barrier(&mut ingest);
        }
        ingest.finish();
        drop(asked_tx);
        flow.join();
        checkpoints = writer.join().unwrap_or_default();
    });
    Ok(Run {
        rate: events as f64 / started.elapsed().as_secs_f64(),
        checkpoints,
    })
}

/// Throughput with and without checkpoints every second, for both benchmark queries.
pub fn overhead(events: usize, runs: usize) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("weir-bench-state-{}", std::process::id()));
    let store = FileCheckpoints::new(&dir, 0);
    for (name, sql, output) in QUERIES {
        let program = weir_lang::compile(sql).map_err(|d| d.render(name, sql))?;
        let (mut plain, mut with, mut durations, mut sizes) = (vec![], vec![], vec![], vec![]);
        for r in 0..runs {
            eprint!("\r{name}: run {}/{runs}", r + 1);
            plain.push(run_once(&program, output, (events, 1000), Barriers::None, &store)?.rate);
            let run = run_once(
                &program,
                output,
                (events, 1000),
                Barriers::Every(Duration::from_secs(1)),
                &store,
            )?;
            with.push(run.rate);
            durations.extend(run.checkpoints.iter().map(|c| c.0.as_secs_f64() * 1000.0));
            sizes.extend(run.checkpoints.iter().map(|c| c.1 as f64));
        }
        eprint!("\r\x1b[K");
        let (p, w) = (median(plain), median(with));
        println!(
            "{name}: {events} events, median of {runs}: {p:.0} events/s without checkpoints, {w:.0} with one every second: ratio {:.2}; {} checkpoints, median {:.1} ms from barrier to file, {:.0} bytes",
            w / p,
            durations.len(),
            median(durations),
            median(sizes)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Checkpoint and recovery of a rule holding `keys` keys of state.
pub fn recovery(keys: usize, runs: usize) -> Result<(), String> {
    let sql = "CREATE STREAM readings (sensor_id BIGINT, ts BIGINT, value DOUBLE, flag BOOLEAN) WITH (timestamp = 'ts');
        INSERT INTO changes SELECT sensor_id, value FROM readings WHERE changed(value) OVER (PARTITION BY sensor_id);";
    let program = weir_lang::compile(sql).map_err(|d| d.render("recovery", sql))?;
    let dir = std::env::temp_dir().join(format!("weir-bench-recovery-{}", std::process::id()));
    let store = FileCheckpoints::new(&dir, 0);
    let mut times = Vec::new();
    let mut bytes = 0;
    let mut taken = Vec::new();
    for r in 0..runs {
        eprint!("\rrecovery: run {}/{runs}", r + 1);
        let _ = store.remove("bench");
        let run = run_once(
            &program,
            "changes",
            (keys, keys as i64),
            Barriers::AtEnd,
            &store,
        )?;
        taken.extend(run.checkpoints.iter().map(|c| c.0.as_secs_f64()));
        let started = Instant::now();
        let newest = store
            .latest("bench")
            .map_err(|e| e.to_string())?
            .ok_or("no checkpoint written")?;
        bytes = newest.bytes;
        let flow = Dataflow::build_restored(
            &program,
            &["readings".to_owned()],
            &["changes".to_owned()],
            EngineConfig {
                workers: 2,
                ..EngineConfig::default()
            },
            Some(newest.checkpoint.operators),
        )
        .map_err(|e| e.to_string())?;
        times.push(started.elapsed().as_secs_f64());
        flow.join();
    }
    eprint!("\r\x1b[K");
    println!(
        "recovery: {keys} keys, median of {runs}: checkpoint {:.2} s, {:.1} MB; recovery (read, verify, decode, restore) {:.2} s",
        median(taken),
        bytes as f64 / 1e6,
        median(times)
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
