//! The `weir` binary end to end: the examples over the bundled sample, checked against a plain
//! recomputation; dead letters; `check`; `simulate`; CSV input.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn weir(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .current_dir(repo())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("weir-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

const SAMPLE: &str = "examples/readings/readings.sample.jsonl";

/// The real DEBS 2012 sample: beside the repository, or where WEIR_SHARED_DATA says (a clone
/// elsewhere on the machine finds the workspace's copy).
fn debs_sample() -> PathBuf {
    [
        std::env::var("WEIR_SHARED_DATA").ok().map(PathBuf::from),
        Some(repo().join("../shared/data")),
        Some(PathBuf::from("/work/shared/data")),
    ]
    .into_iter()
    .flatten()
    .map(|d| d.join("debs2012-sample.tsv"))
    .find(|p| p.exists())
    .expect("the DEBS 2012 sample: set WEIR_SHARED_DATA to the shared data directory")
}

/// A DEBS 2012 file read plainly: per record its time stamp (epoch ns) and its 56 fields as
/// they are written (field 0 is the time stamp text).
fn debs_records(path: &Path) -> Vec<(i64, Vec<String>)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| {
            let c: Vec<String> = line.trim_end().split('\t').map(str::to_owned).collect();
            let t = chrono::DateTime::parse_from_rfc3339(&c[0]).unwrap();
            (t.timestamp_nanos_opt().unwrap(), c)
        })
        .collect()
}

/// Runs examples/debs2012/debs.sql with `query` over a DEBS 2012 file; the events of each of
/// `streams`, in order.
fn run_debs_query(query: &str, data: &Path, streams: &[&str]) -> Vec<Vec<serde_json::Value>> {
    let outs: Vec<PathBuf> = streams.iter().map(|n| tmp(&format!("{n}.jsonl"))).collect();
    let mut args = vec![
        "run".to_owned(),
        "examples/debs2012/debs.sql".to_owned(),
        format!("examples/debs2012/{query}"),
        "--input".to_owned(),
        format!("debs={}", data.display()),
        "--input-format".to_owned(),
        "debs=debs2012".to_owned(),
    ];
    for (s, p) in streams.iter().zip(&outs) {
        args.extend(["--output".to_owned(), format!("{s}={}", p.display())]);
    }
    let r = weir(&args.iter().map(String::as_str).collect::<Vec<_>>(), None);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    outs.iter()
        .map(|p| json_lines(&std::fs::read_to_string(p).unwrap()))
        .collect()
}

fn sample() -> Vec<serde_json::Value> {
    json_lines(&std::fs::read_to_string(repo().join(SAMPLE)).unwrap())
}

#[test]
fn filter_example_keeps_exactly_the_high_readings() {
    let out = tmp("high.jsonl");
    let o = weir(
        &[
            "run",
            "examples/readings/filter.sql",
            "--input",
            &format!("readings={SAMPLE}"),
            "--output",
            &format!("high_readings={}", out.display()),
        ],
        None,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got = json_lines(&std::fs::read_to_string(&out).unwrap());
    let want: Vec<_> = sample()
        .into_iter()
        .filter(|e| e["value"].as_f64().unwrap() > 90.0)
        .collect();
    assert!(!want.is_empty());
    assert_eq!(got, want, "a stateless rule keeps input order");
}

#[test]
fn tumbling_example_matches_a_plain_recomputation() {
    let o = weir(
        &[
            "run",
            "examples/readings/tumbling_avg.sql",
            "--input",
            &format!("readings={SAMPLE}"),
        ],
        None,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut got = BTreeMap::new();
    for r in json_lines(&String::from_utf8(o.stdout).unwrap()) {
        let key = (
            r["sensor_id"].as_i64().unwrap(),
            r["window_start"].as_i64().unwrap(),
        );
        assert_eq!(r["window_end"].as_i64().unwrap(), key.1 + 1000);
        got.insert(
            key,
            (r["n"].as_i64().unwrap(), r["avg_value"].as_f64().unwrap()),
        );
    }
    let mut sums: BTreeMap<(i64, i64), (i64, f64)> = BTreeMap::new();
    for e in sample() {
        let ts = e["ts"].as_i64().unwrap();
        let s = sums
            .entry((e["sensor_id"].as_i64().unwrap(), ts - ts % 1000))
            .or_default();
        s.0 += 1;
        s.1 += e["value"].as_f64().unwrap();
    }
    assert_eq!(
        got.len(),
        sums.len(),
        "every window, including the last ones, is emitted"
    );
    for (k, (n, sum)) in sums {
        let (gn, gavg) = got[&k];
        assert_eq!(gn, n, "{k:?}");
        assert!((gavg - sum / n as f64).abs() < 1e-9, "{k:?}");
    }
}

/// Runs the filter example over `input` on stdin; returns the run and its dead letters.
fn filter_stdin(input: &str, dead: &Path) -> (Output, Vec<serde_json::Value>) {
    let o = weir(
        &[
            "run",
            "examples/readings/filter.sql",
            "--input",
            "readings=-",
            "--dead-letter",
            dead.to_str().unwrap(),
        ],
        Some(input),
    );
    let letters = json_lines(&std::fs::read_to_string(dead).unwrap_or_default());
    (o, letters)
}

#[test]
fn malformed_lines_go_to_the_dead_letters_and_the_run_goes_on() {
    let dead = tmp("dead.jsonl");
    let input = "{\"sensor_id\":1,\"ts\":1000,\"value\":95.5,\"flag\":true}\nnot json\n{\"sensor_id\":2,\"ts\":\"later\",\"value\":1,\"flag\":true}\n[1]\n{\"sensor_id\":3,\"ts\":1010,\"value\":99,\"flag\":false}\n";
    let (o, dead) = filter_stdin(input, &dead);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = json_lines(&String::from_utf8(o.stdout).unwrap());
    assert_eq!(out.len(), 2);
    assert_eq!(out[1]["value"], serde_json::json!(99.0));
    let lines: Vec<i64> = dead.iter().map(|d| d["line"].as_i64().unwrap()).collect();
    assert_eq!(lines, [2, 3, 4]);
    assert!(dead[0]["reason"].as_str().unwrap().contains("invalid JSON"));
    assert!(dead[1]["reason"].as_str().unwrap().contains("cannot cast"));
    assert!(dead[2]["reason"]
        .as_str()
        .unwrap()
        .contains("not a JSON object"));
    assert_eq!(dead[0]["raw"], "not json");
    assert!(String::from_utf8_lossy(&o.stderr).contains("3 dead letter(s)"));
}

#[test]
fn records_over_the_size_limit_are_dead_letters() {
    let dead = tmp("dead-big.jsonl");
    let big = format!(
        "{{\"sensor_id\":1,\"ts\":1000,\"value\":95.0,\"flag\":true,\"pad\":\"{}\"}}\n",
        "x".repeat(2 << 20)
    );
    let input = big + "{\"sensor_id\":2,\"ts\":1010,\"value\":96.0,\"flag\":true}\n";
    let (o, dead) = filter_stdin(&input, &dead);
    assert!(o.status.success());
    assert_eq!(json_lines(&String::from_utf8(o.stdout).unwrap()).len(), 1);
    assert!(dead[0]["reason"]
        .as_str()
        .unwrap()
        .contains("longer than the limit of 1048576 bytes"));
}

#[test]
fn late_events_are_written_with_their_reason() {
    let late = tmp("late.jsonl");
    // Each event is judged by the watermark of the events before it, in whatever batch.
    let on_time = "{\"sensor_id\":1,\"ts\":1700000005000,\"value\":1,\"flag\":true}\n".repeat(3);
    let input = on_time + "{\"sensor_id\":1,\"ts\":1700000001000,\"value\":2,\"flag\":true}\n";
    let o = weir(
        &[
            "run",
            "examples/readings/tumbling_avg.sql",
            "--input",
            "readings=-",
            "--late",
            late.to_str().unwrap(),
        ],
        Some(&input),
    );
    assert!(o.status.success());
    let late = json_lines(&std::fs::read_to_string(late).unwrap());
    assert_eq!(late.len(), 1);
    assert_eq!(late[0]["ts"], 1700000001000i64);
    assert!(late[0]["reason"]
        .as_str()
        .unwrap()
        .contains("windows closed"));
}

#[test]
fn check_reports_every_error_with_its_position_and_runs_nothing() {
    let bad = tmp("bad.sql");
    std::fs::write(&bad, "CREATE STREAM s (a BIGINT, ts BIGINT) WITH (timestamp = 'ts');\nINSERT INTO o SELECT b FROM s;\nINSERT INTO p SELECT avgg(a) FROM s;\n").unwrap();
    let o = weir(&["check", bad.to_str().unwrap()], None);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("bad.sql:2:22: error: stream s has no column 'b'"),
        "{err}"
    );
    assert!(
        err.contains("bad.sql:3:22: error: unknown function avgg()"),
        "{err}"
    );
    assert!(err.contains("did you mean avg()?"), "{err}");
    let good = weir(&["check", "examples/readings/tumbling_avg.sql"], None);
    assert!(good.status.success());
    assert!(String::from_utf8_lossy(&good.stdout).contains("ok"));
}

#[test]
fn simulate_is_deterministic_and_follows_the_format() {
    let a = weir(
        &["simulate", "readings", "--count", "500", "--seed", "7"],
        None,
    );
    let b = weir(
        &["simulate", "readings", "--count", "500", "--seed", "7"],
        None,
    );
    let c = weir(
        &["simulate", "readings", "--count", "500", "--seed", "8"],
        None,
    );
    assert_eq!(a.stdout, b.stdout);
    assert_ne!(a.stdout, c.stdout);
    let evs = json_lines(&String::from_utf8(a.stdout).unwrap());
    assert_eq!(evs.len(), 500);
    for (i, e) in evs.iter().enumerate() {
        assert_eq!(e["ts"].as_i64().unwrap(), 1_700_000_000_000 + 10 * i as i64);
        assert!((0..1000).contains(&e["sensor_id"].as_i64().unwrap()));
        let v = e["value"].as_f64().unwrap();
        assert!((0.0..100.0).contains(&v));
        assert!(
            ((v * 1000.0).round() - v * 1000.0).abs() < 1e-6,
            "3 decimals: {v}"
        );
        assert!(e["flag"].is_boolean());
    }
    let flags = evs.iter().filter(|e| e["flag"] == true).count();
    assert!((150..350).contains(&flags), "flags are uniform: {flags}");
}

#[test]
fn csv_input_is_read_by_extension() {
    let csv = tmp("readings.csv");
    std::fs::write(
        &csv,
        "sensor_id,ts,value,flag\n1,1000,91.5,true\n2,1010,10,false\n3,1020,x,true\n",
    )
    .unwrap();
    let o = weir(
        &[
            "run",
            "examples/readings/filter.sql",
            "--input",
            &format!("readings={}", csv.display()),
        ],
        None,
    );
    assert!(o.status.success());
    let out = json_lines(&String::from_utf8(o.stdout).unwrap());
    assert_eq!(
        out,
        vec![serde_json::json!({"sensor_id":1,"ts":1000,"value":91.5,"flag":true})]
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("1 dead letter(s)"));
}

#[test]
fn machines_example_finds_changes_overheating_and_command_latency() {
    let names = [
        "state_changes",
        "changes_per_minute",
        "overheating",
        "command_latency",
    ];
    let paths: Vec<PathBuf> = names.iter().map(|n| tmp(&format!("{n}.jsonl"))).collect();
    let mut args = vec![
        "run".to_owned(),
        "examples/machines/monitoring.sql".into(),
        "--input".into(),
        "telemetry=examples/machines/telemetry.sample.jsonl".into(),
        "--input".into(),
        "commands=examples/machines/commands.sample.jsonl".into(),
    ];
    for (n, p) in names.iter().zip(&paths) {
        args.push("--output".into());
        args.push(format!("{n}={}", p.display()));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = weir(&args, None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let read = |i: usize| {
        let mut v: Vec<String> = std::fs::read_to_string(&paths[i])
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        v.sort();
        v
    };
    // The sample toggles m1 at 10 s, 50 s, 100 s and m2 at 30 s, 70 s; m1 runs hot from 40 s to
    // 44 s; commands come 1.7 s, 0.7 s and 4.7 s before three of the changes (and 19.7 s
    // before the fourth, outside the join's 10 s bound).
    assert_eq!(
        read(0),
        [
            r#"{"machine":"m1","ts":1700000010000,"previous":"idle","state":"running"}"#,
            r#"{"machine":"m1","ts":1700000050000,"previous":"running","state":"idle"}"#,
            r#"{"machine":"m1","ts":1700000100000,"previous":"idle","state":"running"}"#,
            r#"{"machine":"m2","ts":1700000030000,"previous":"idle","state":"running"}"#,
            r#"{"machine":"m2","ts":1700000070000,"previous":"running","state":"idle"}"#,
        ]
    );
    assert_eq!(read(1).len(), 5);
    assert_eq!(
        read(2),
        [
            r#"{"machine":"m1","started":1700000040000,"ended":1700000044000,"peak":89.0,"readings":5}"#
        ]
    );
    assert_eq!(
        read(3),
        [
            r#"{"machine":"m1","command":"toggle","new_state":"idle","latency_ms":700}"#,
            r#"{"machine":"m1","command":"toggle","new_state":"running","latency_ms":1700}"#,
            r#"{"machine":"m2","command":"toggle","new_state":"running","latency_ms":4700}"#,
        ]
    );
}

/// The real DEBS 2012 sample through `format = 'debs2012'`: every record read, and the
/// per-second averages of mf01 equal a plain recomputation from the file.
#[test]
fn the_debs_2012_sample_reads_into_per_second_averages() {
    let data = debs_sample();
    let rules = tmp("debs.sql");
    std::fs::write(
        &rules,
        "CREATE STREAM debs (ts BIGINT, mf01 BIGINT) WITH (timestamp = 'ts', format = 'debs2012');
         INSERT INTO per_second SELECT window_start, sum(mf01) AS total, count(*) AS n FROM debs GROUP BY TUMBLE(ts, INTERVAL '1' SECOND);",
    )
    .unwrap();
    let out = tmp("debs.jsonl");
    let input = format!("debs={}", data.display());
    let output = format!("per_second={}", out.display());
    let r = weir(
        &[
            "run",
            rules.to_str().unwrap(),
            "--input",
            &input,
            "--output",
            &output,
        ],
        None,
    );
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(String::from_utf8_lossy(&r.stderr).contains("read 17000 record(s)"));
    // The same sums, straight from the text: seconds of the ISO time stamp, column 2.
    let mut expected: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for line in std::fs::read_to_string(&data).unwrap().lines() {
        let cols: Vec<&str> = line.trim_end().split('\t').collect();
        let second = cols[0][..19].to_owned();
        let e = expected.entry(second).or_default();
        e.0 += cols[2].parse::<i64>().unwrap();
        e.1 += 1;
    }
    let got: Vec<(i64, i64)> = json_lines(&std::fs::read_to_string(&out).unwrap())
        .iter()
        .map(|v| (v["total"].as_i64().unwrap(), v["n"].as_i64().unwrap()))
        .collect();
    let want: Vec<(i64, i64)> = expected.into_values().collect();
    assert_eq!(got, want);
}

/// `weir simulate debs`: the same bytes for the same seed, every line a valid DEBS 2012 record
/// at about 100 a second, and each sensor change followed by its valve after a delay.
#[test]
fn simulate_debs_toggles_sensor_valve_pairs_in_the_real_format() {
    let run = || {
        let r = weir(
            &["simulate", "debs", "--duration", "3m", "--seed", "7"],
            None,
        );
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        r.stdout
    };
    let text = run();
    assert_eq!(text, run(), "deterministic");
    let text = String::from_utf8(text).unwrap();
    assert!(text.ends_with("\r\n"));
    let mut rows = Vec::new();
    for line in text.split("\r\n").filter(|l| !l.is_empty()) {
        weir_connectors::debs::decode_line(line.as_bytes(), &mut rows);
    }
    let rows: Vec<weir_core::Row> = rows.into_iter().map(Result::unwrap).collect();
    assert!(
        (16_000..20_000).contains(&rows.len()),
        "{} records in 3 minutes",
        rows.len()
    );
    let int = |r: &weir_core::Row, f: &str| match r.get(f) {
        Some(weir_core::Value::Int(i)) => *i,
        other => panic!("{f}: {other:?}"),
    };
    for (sensor, valve) in [("bm05", "bm08"), ("bm06", "bm09"), ("bm07", "bm10")] {
        let changes = |f: &str| -> Vec<(i64, i64)> {
            rows.windows(2)
                .filter(|w| int(&w[0], f) != int(&w[1], f))
                .map(|w| (int(&w[1], "ts"), int(&w[1], f)))
                .collect()
        };
        let (s, v) = (changes(sensor), changes(valve));
        assert!(s.len() >= 3, "{sensor} changes {} times", s.len());
        for ((st, sv), (vt, vv)) in s.iter().zip(&v) {
            assert_eq!(sv, vv, "{valve} follows {sensor}");
            assert!((300..1500).contains(&(vt - st)), "delay {} ms", vt - st);
        }
    }
}

/// `weir replay` to a broker: every record arrives, stamped with its send time, as fast as
/// possible with --max, and at the recorded pace (here doubled) otherwise.
#[test]
fn replay_publishes_every_record_at_the_chosen_pace() {
    let file = tmp("replay.tsv");
    let r = weir(
        &[
            "simulate",
            "debs",
            "--duration",
            "4s",
            "--seed",
            "3",
            "--output",
            file.to_str().unwrap(),
        ],
        None,
    );
    assert!(r.status.success());
    let records = std::fs::read_to_string(&file).unwrap().lines().count();
    let subject = format!("weir.replay.{}", std::process::id());
    let rt = tokio::runtime::Runtime::new().unwrap();
    // The client and its subscription live in the runtime (their drops need it).
    let _inside = rt.enter();
    let mut sub = rt.block_on(async {
        let client = async_nats::connect("127.0.0.1:4222").await.unwrap();
        let sub = client.subscribe(subject.clone()).await.unwrap();
        client.flush().await.unwrap();
        (client, sub)
    });
    let to = format!("nats://127.0.0.1:4222/{subject}");
    for (mode, at_least, at_most) in [("--max", 0.0, 2.0), ("--speed=2", 1.7, 4.0)] {
        let started = std::time::Instant::now();
        let r = weir(&["replay", file.to_str().unwrap(), "--to", &to, mode], None);
        let secs = started.elapsed().as_secs_f64();
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        assert!((at_least..at_most).contains(&secs), "{mode}: {secs:.2} s");
        let got = rt.block_on(async {
            use futures::StreamExt;
            let mut n = 0;
            while n < records {
                let m = tokio::time::timeout(std::time::Duration::from_secs(5), sub.1.next())
                    .await
                    .expect("every record arrives")
                    .unwrap();
                let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
                assert!(
                    v["sent_ns"].as_i64().unwrap() > 0 && v["mf01"].is_i64(),
                    "{v}"
                );
                n += 1;
            }
            n
        });
        assert_eq!(got, records, "{mode}");
    }
}

/// Query 2 of examples/debs2012 against a plain recomputation written here: per-second
/// averages and relative variations ((max - min) / average) of mf01..mf03, the seconds over
/// 30 %, the raw records from 20 s before to 70 s after each violating second (each once) and
/// the merged recordings, and the average total power per minute; on the real sample and on
/// generated data (whose power surges make violations).
#[test]
fn debs_query_2_matches_a_plain_recomputation() {
    let generated = tmp("q2-generated.tsv");
    let r = weir(
        &[
            "simulate",
            "debs",
            "--duration",
            "12m",
            "--seed",
            "7",
            "--output",
            generated.to_str().unwrap(),
        ],
        None,
    );
    assert!(r.status.success());
    let sample = debs_sample();
    let mut violations_seen = 0;
    for data in [sample, generated] {
        // Plain: (ms, mf01..mf03) per record, bucketed by second and by minute.
        let records: Vec<(i64, [i64; 3])> = debs_records(&data)
            .into_iter()
            .map(|(ns, c)| {
                let mf = [2, 3, 4].map(|i| c[i].parse::<i64>().unwrap());
                (ns.div_euclid(1_000_000), mf)
            })
            .collect();
        let mut seconds: BTreeMap<i64, Vec<[f64; 3]>> = BTreeMap::new();
        let mut minutes: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
        for (ms, mf) in &records {
            let mf = mf.map(|m| m as f64);
            seconds
                .entry(ms.div_euclid(1000) * 1000)
                .or_default()
                .push(mf);
            minutes
                .entry(ms.div_euclid(60_000) * 60_000)
                .or_default()
                .push(mf.iter().sum());
        }
        let per_second: Vec<(i64, [f64; 3], [f64; 3])> = seconds
            .iter()
            .map(|(s, rows)| {
                let stat = |k: usize| {
                    let v: Vec<f64> = rows.iter().map(|r| r[k]).collect();
                    let avg = v.iter().sum::<f64>() / v.len() as f64;
                    let (lo, hi) = v
                        .iter()
                        .fold((f64::MAX, f64::MIN), |(l, h), x| (l.min(*x), h.max(*x)));
                    (avg, (hi - lo) / avg)
                };
                let s3 = [stat(0), stat(1), stat(2)];
                (*s, s3.map(|x| x.0), s3.map(|x| x.1))
            })
            .collect();
        let outs = run_debs_query(
            "query2.sql",
            &data,
            &[
                "q2_seconds",
                "q2_violations",
                "q2_power",
                "q2_recording",
                "q2_recordings",
            ],
        );
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs().max(1.0);
        let got = &outs[0];
        assert_eq!(got.len(), per_second.len());
        for (g, (start, avg, rv)) in got.iter().zip(&per_second) {
            assert_eq!(g["window_start"].as_i64(), Some(*start));
            for (k, name) in ["mf01", "mf02", "mf03"].iter().enumerate() {
                assert!(
                    close(g[format!("avg_{name}")].as_f64().unwrap(), avg[k]),
                    "{g}"
                );
                assert!(
                    close(g[format!("rv_{name}")].as_f64().unwrap(), rv[k]),
                    "{g}"
                );
            }
        }
        let expected_violations: Vec<i64> = per_second
            .iter()
            .filter(|(_, _, rv)| rv.iter().any(|r| *r > 0.3))
            .map(|(s, _, _)| *s)
            .collect();
        let violations: Vec<i64> = outs[1]
            .iter()
            .map(|v| v["window_start"].as_i64().unwrap())
            .collect();
        assert_eq!(violations, expected_violations);
        violations_seen += violations.len();
        // Plain recording: each record within [v - 20 s, v + 70 s] of some violation v, once;
        // violations less than 90 s apart share one recording.
        let recorded: Vec<(i64, [i64; 3])> = records
            .iter()
            .filter(|(t, _)| {
                violations
                    .iter()
                    .any(|v| *t >= v - 20_000 && *t <= v + 70_000)
            })
            .cloned()
            .collect();
        let mut got: Vec<(i64, [i64; 3])> = outs[3]
            .iter()
            .map(|r| {
                let mf = ["mf01", "mf02", "mf03"].map(|k| r[k].as_i64().unwrap());
                (r["ts"].as_i64().unwrap(), mf)
            })
            .collect();
        got.sort_by_key(|r| r.0);
        assert_eq!(got, recorded);
        let mut recordings: Vec<(i64, i64, usize)> = Vec::new();
        for v in &violations {
            match recordings.last_mut() {
                Some((_, to, n)) if v - (*to - 70_000) < 90_000 => {
                    *to = v + 70_000;
                    *n += 1;
                }
                _ => recordings.push((v - 20_000, v + 70_000, 1)),
            }
        }
        let got: Vec<(i64, i64, usize)> = outs[4]
            .iter()
            .map(|r| {
                (
                    r["recording_from"].as_i64().unwrap(),
                    r["recording_to"].as_i64().unwrap(),
                    r["violations"].as_u64().unwrap() as usize,
                )
            })
            .collect();
        assert_eq!(got, recordings);
        let power: Vec<(i64, f64)> = outs[2]
            .iter()
            .map(|v| {
                (
                    v["window_start"].as_i64().unwrap(),
                    v["avg_power"].as_f64().unwrap(),
                )
            })
            .collect();
        assert_eq!(power.len(), minutes.len());
        for ((start, avg), (m, totals)) in power.iter().zip(&minutes) {
            assert_eq!(start, m);
            assert!(close(
                *avg,
                totals.iter().sum::<f64>() / totals.len() as f64
            ));
        }
    }
    assert!(violations_seen > 0, "the generated surges make violations");
}

/// Least squares (slope, intercept) by the two-pass formula.
fn least_squares(points: &[(f64, f64)]) -> (f64, f64) {
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxy: f64 = points.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    let sxx: f64 = points.iter().map(|(x, _)| (x - mx) * (x - mx)).sum();
    let slope = sxy / sxx;
    (slope, my - slope * mx)
}

/// Query 1 of examples/debs2012 against a plain implementation of the same reading written
/// here, on 26 hours of generated data (2 records a second, so that the 24-hour windows fill):
/// the state changes of each sensor/valve pair, the delay of each valve change after the last
/// sensor change, the alarms (newest delay over 1.01 x the 24-hour minimum) and the 24-hour
/// least-squares trends.
#[test]
fn debs_query_1_matches_a_plain_implementation() {
    let data = tmp("q1-generated.tsv");
    let r = weir(
        &[
            "simulate",
            "debs",
            "--duration",
            "26h",
            "--rate",
            "2",
            "--seed",
            "11",
            "--output",
            data.to_str().unwrap(),
        ],
        None,
    );
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));

    // Plain: (ts ms, ts ns, bm05..bm10) per record.
    let records: Vec<(i64, i64, [u8; 6])> = debs_records(&data)
        .into_iter()
        .map(|(ns, c)| {
            let bm = [12, 13, 14, 15, 16, 17].map(|i| c[i].parse::<u8>().unwrap());
            (ns.div_euclid(1_000_000), ns, bm)
        })
        .collect();
    let pairs = [
        ("bm05-bm08", 0, 3),
        ("bm06-bm09", 1, 4),
        ("bm07-bm10", 2, 5),
    ];
    let day = 86_400_000i64;
    let mut changes = 0;
    // Per pair: (valve ts ms, delay ns).
    let mut delays: BTreeMap<&str, Vec<(i64, i64)>> = BTreeMap::new();
    for (name, s, v) in pairs {
        let mut last_sensor: Option<i64> = None;
        for w in records.windows(2) {
            let (prev, cur) = (&w[0].2, &w[1]);
            let (sc, vc) = (prev[s] != cur.2[s], prev[v] != cur.2[v]);
            assert!(!(sc && vc), "the generator never moves both in one record");
            changes += usize::from(sc || vc);
            if sc {
                last_sensor = Some(cur.1);
            }
            if vc {
                if let Some(at) = last_sensor.take() {
                    delays.entry(name).or_default().push((cur.0, cur.1 - at));
                }
            }
        }
    }
    // Alarms and trends over each delay's 24-hour window (t - 24 h, t].
    let mut alarms = Vec::new();
    let mut trends = Vec::new();
    for (pair, ds) in &delays {
        for (i, (t, d)) in ds.iter().enumerate() {
            let window: Vec<&(i64, i64)> = ds[..=i].iter().filter(|(u, _)| *u > t - day).collect();
            let min = window.iter().map(|w| w.1).min().unwrap();
            if *d as f64 > 1.01 * min as f64 {
                alarms.push((pair.to_string(), *t, *d, min));
            }
            if window.len() >= 2 {
                let pts: Vec<(f64, f64)> =
                    window.iter().map(|(u, d)| (*u as f64, *d as f64)).collect();
                let (slope, intercept) = least_squares(&pts);
                trends.push((
                    pair.to_string(),
                    *t,
                    slope * 3.6e6,
                    intercept + slope * (t - day) as f64,
                ));
            }
        }
    }
    let n_delays: usize = delays.values().map(Vec::len).sum();
    assert!(
        n_delays > 3 * 26 * 60,
        "{n_delays} delays: the pairs toggle every 20 to 60 s"
    );
    assert!(
        !alarms.is_empty() && alarms.len() < n_delays,
        "some delays raise alarms, not all"
    );

    let outs = run_debs_query(
        "query1.sql",
        &data,
        &["q1_changes", "q1_delays", "q1_alarms", "q1_trend"],
    );

    assert_eq!(outs[0].len(), changes);
    let mut got: BTreeMap<&str, Vec<(i64, i64)>> = BTreeMap::new();
    for d in &outs[1] {
        let pair = pairs.iter().find(|p| p.0 == d["pair"]).unwrap().0;
        got.entry(pair)
            .or_default()
            .push((d["ts"].as_i64().unwrap(), d["delay_ns"].as_i64().unwrap()));
    }
    got.values_mut().for_each(|v| v.sort());
    assert_eq!(got, delays);

    let key = |r: &serde_json::Value| {
        (
            r["pair"].as_str().unwrap().to_owned(),
            r["ts"].as_i64().unwrap(),
        )
    };
    let mut got: Vec<(String, i64, i64, i64)> = outs[2]
        .iter()
        .map(|a| {
            let (p, t) = key(a);
            (
                p,
                t,
                a["delay_ns"].as_i64().unwrap(),
                a["min_delay_ns_24h"].as_i64().unwrap(),
            )
        })
        .collect();
    got.sort();
    alarms.sort();
    assert_eq!(got, alarms);

    let mut got: Vec<(String, i64, f64, f64)> = outs[3]
        .iter()
        .filter(|t| !t["slope_ns_per_hour"].is_null())
        .map(|t| {
            let (p, ts) = key(t);
            (
                p,
                ts,
                t["slope_ns_per_hour"].as_f64().unwrap(),
                t["intercept_ns"].as_f64().unwrap(),
            )
        })
        .collect();
    got.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    trends.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    assert_eq!(got.len(), trends.len());
    for (g, e) in got.iter().zip(&trends) {
        assert_eq!((&g.0, g.1), (&e.0, e.1));
        assert!(
            (g.2 - e.2).abs() <= 1e-6 * e.2.abs().max(1.0),
            "slope {g:?} vs {e:?}"
        );
        assert!(
            (g.3 - e.3).abs() <= 1e-6 * e.3.abs().max(1e6),
            "intercept {g:?} vs {e:?}"
        );
    }
    // The delays grow about 5 % an hour: every pair's trend rises.
    assert!(trends
        .iter()
        .filter(|t| t.1 > 1_329_929_188_967 + day)
        .all(|t| t.2 > 0.0));
}

/// `weir bench debs` runs the whole case: on the engine alone, and through a node in the
/// process where every replayed record is read (delivery samples) and every state change of
/// Query 1 carries its read and send stamps (turnaround samples).
#[test]
fn bench_debs_measures_the_whole_case() {
    let r = weir(
        &[
            "bench",
            "debs",
            "--via",
            "engine",
            "--pace",
            "max",
            "--duration",
            "30s",
        ],
        None,
    );
    let out = String::from_utf8_lossy(&r.stdout);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(
        out.contains("events/s") && out.contains("q1_changes"),
        "{out}"
    );

    let plot = tmp("debs.svg");
    let r = weir(
        &[
            "bench",
            "debs",
            "--via",
            "embedded",
            "--pace",
            "max",
            "--duration",
            "3m",
            "--plot",
            plot.to_str().unwrap(),
        ],
        None,
    );
    let out = String::from_utf8_lossy(&r.stdout);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let field = |name: &str| -> usize {
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("{name} in {out}"));
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .replace(',', "")
            .parse()
            .unwrap()
    };
    let messages = field("messages");
    assert!(messages > 15_000, "{out}");
    let samples = |name: &str| -> usize {
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap();
        let n = line
            .rsplit('(')
            .next()
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap();
        n.parse().unwrap()
    };
    assert_eq!(samples("delivery"), messages, "{out}");
    assert!(samples("turnaround") > 0, "{out}");
    assert!(std::fs::read_to_string(&plot).unwrap().starts_with("<svg"));
}

/// Input values that do not fit their declared type are dead letters with the reason, never
/// taken in with another value; a byte-order mark before the first line of a file (or of the
/// rule file) is not part of it; a CSV stream's `delimiter` and `header` options hold for
/// files too.
#[test]
fn values_that_do_not_fit_their_type_are_dead_letters_and_files_are_read_as_declared() {
    let rules = tmp("types.sql");
    std::fs::write(
        &rules,
        "\u{feff}CREATE STREAM s (id BIGINT NOT NULL, ts TIMESTAMP, v DOUBLE) WITH (timestamp = 'ts');
         CREATE STREAM c (id BIGINT, ts BIGINT, v DOUBLE) WITH (timestamp = 'ts', format = 'csv', delimiter = ';', header = 'id;ts;v');
         INSERT INTO out_s SELECT id, ts, v FROM s;
         INSERT INTO out_c SELECT id, ts, v FROM c;",
    )
    .unwrap();
    let input = tmp("types.jsonl");
    std::fs::write(
        &input,
        [
            "\u{feff}{\"id\":1,\"ts\":1000,\"v\":1.5}",
            "{\"id\":1.5,\"ts\":1001,\"v\":1}",
            "{\"id\":100000000000000000000,\"ts\":1002,\"v\":1}",
            "{\"id\":\"7.25\",\"ts\":1003,\"v\":1}",
            "{\"id\":4,\"ts\":-9223372036854775808,\"v\":1}",
            "{\"ts\":1005,\"v\":1}",
            "{\"id\":6,\"ts\":1006,\"v\":\"NaN\"}",
            "{\"id\":7,\"ts\":\"1970-01-01T00:00:01.007Z\",\"v\":2}",
        ]
        .join("\n"),
    )
    .unwrap();
    let csv = tmp("types.csv");
    std::fs::write(&csv, "1;2000;0.5\n2;2001;x\n3;2002;1.5\n").unwrap();
    let (out_s, out_c, dead) = (
        tmp("out_s.jsonl"),
        tmp("out_c.jsonl"),
        tmp("dead_types.jsonl"),
    );
    let o = weir(
        &[
            "run",
            rules.to_str().unwrap(),
            "--input",
            &format!("s={}", input.display()),
            "--input",
            &format!("c={}", csv.display()),
            "--output",
            &format!("out_s={}", out_s.display()),
            "--output",
            &format!("out_c={}", out_c.display()),
            "--dead-letter",
            dead.to_str().unwrap(),
        ],
        None,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ids = |p: &Path| -> Vec<i64> {
        let mut v: Vec<i64> = json_lines(&std::fs::read_to_string(p).unwrap())
            .iter()
            .map(|r| r["id"].as_i64().unwrap())
            .collect();
        v.sort();
        v
    };
    assert_eq!(ids(&out_s), [1, 7], "only the records that fit");
    assert_eq!(
        ids(&out_c),
        [1, 3],
        "the CSV file read with ';' and the declared header"
    );
    let dead = json_lines(&std::fs::read_to_string(&dead).unwrap());
    let reason = |line: i64, stream: &str| -> String {
        dead.iter()
            .find(|d| d["line"] == line && d["stream"] == stream)
            .unwrap_or_else(|| panic!("no dead letter for {stream} line {line}: {dead:?}"))
            ["reason"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert!(
        reason(2, "s").contains("1.5 is not a whole number"),
        "{dead:?}"
    );
    assert!(reason(3, "s").contains("does not fit a BIGINT"), "{dead:?}");
    assert!(
        reason(4, "s").contains("7.25 is not a whole number"),
        "{dead:?}"
    );
    assert!(reason(5, "s").contains("years 1 to 9999"), "{dead:?}");
    assert!(reason(6, "s").contains("NOT NULL"), "{dead:?}");
    assert!(reason(7, "s").contains("not a finite number"), "{dead:?}");
    assert!(reason(2, "c").contains("cannot cast"), "{dead:?}");
    assert_eq!(dead.len(), 7, "{dead:?}");
}
