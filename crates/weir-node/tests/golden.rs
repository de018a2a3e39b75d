//! The language's golden cases (`tests/golden`) through a node: each case's rules installed as
//! one rule, its input posted to the HTTP ingest one event per request or as one array, with
//! one and several workers. How the node happens to batch what arrives must not change a
//! result: every output and late event is what the engine gives for the same input, fed one
//! event at a time. A node never ends its input, so windows that only the end would close are
//! left out of the comparison: the reference is what the engine has emitted once every input
//! event went through (a checkpoint barrier behind them).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use weir_core::{parse_json_row, Row};
use weir_engine::{Dataflow, Delivered, EngineConfig};

struct Case {
    name: String,
    sql: String,
    program: weir_lang::Program,
    inputs: Vec<(String, Vec<String>)>,
    outputs: Vec<String>,
}

fn cases() -> Vec<Case> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs.iter().map(|d| load(d)).collect()
}

fn load(dir: &Path) -> Case {
    let sql = std::fs::read_to_string(dir.join("rules.sql")).unwrap();
    let program = weir_lang::compile(&sql).unwrap();
    let mut inputs = Vec::new();
    let mut outputs = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let file = entry.unwrap().file_name().into_string().unwrap();
        let text = std::fs::read_to_string(dir.join(&file)).unwrap();
        if let Some(s) = file
            .strip_prefix("in.")
            .and_then(|n| n.strip_suffix(".jsonl"))
        {
            let lines = text.lines().filter(|l| !l.trim().is_empty());
            inputs.push((s.to_owned(), lines.map(str::to_owned).collect()));
        } else if let Some(s) = file
            .strip_prefix("out.")
            .and_then(|n| n.strip_suffix(".jsonl"))
        {
            outputs.push(s.to_owned());
        }
    }
    inputs.sort();
    outputs.sort();
    Case {
        name: dir.file_name().unwrap().to_string_lossy().into_owned(),
        sql,
        program,
        inputs,
        outputs,
    }
}

/// What came out: output lines per stream (as `stream json`) and late events (as `ts json`),
/// each sorted.
type Seen = (Vec<String>, Vec<String>);

/// The engine's results once every input event went through, one event at a time.
fn reference(case: &Case) -> Seen {
    let names: Vec<String> = case.inputs.iter().map(|(s, _)| s.clone()).collect();
    let config = EngineConfig {
        workers: 1,
        batch_size: 1,
        ..EngineConfig::default()
    };
    let mut flow = Dataflow::build(&case.program, &names, &case.outputs, config).unwrap();
    let mut late = flow.take_late().unwrap();
    let readers: Vec<_> = case
        .outputs
        .iter()
        .map(|s| {
            let mut out = flow.take_output(s).unwrap();
            let s = s.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                while let Some(Delivered::Events(evs)) = out.next_delivered() {
                    got.extend(evs.iter().map(|e| format!("{s} {}", e.row.to_json())));
                }
                got
            })
        })
        .collect();
    let mut ingests = Vec::new();
    for (s, lines) in &case.inputs {
        let mut ingest = flow.take_ingest(s).unwrap();
        for l in lines {
            let row: Row = parse_json_row(l.as_bytes()).unwrap();
            ingest.push(row).unwrap();
        }
        ingests.push(ingest);
    }
    for i in &mut ingests {
        i.barrier(1);
    }
    let mut got: Vec<String> = readers
        .into_iter()
        .flat_map(|r| r.join().unwrap())
        .collect();
    let mut late: Vec<String> = std::iter::from_fn(|| late.try_recv())
        .map(|l| format!("{} {}", l.event.ts, l.event.row.to_json()))
        .collect();
    got.sort();
    late.sort();
    (got, late)
}

/// The case on a node: `workers` per keyed rule, input posted one event per request or as one
/// array per stream.
async fn on_node(case: &Case, workers: usize, arrays: bool, expected: usize) -> Seen {
    let dir = data_dir(&format!("golden-{}", case.name));
    let node = TestNode::start(&dir).await;
    let (_all, mut rx) = tap(&node.running.node.hub, "#");
    let id = case.name.replace('_', "-");
    let (s, v) = node
        .post(
            "/v1/rules",
            json!({"id": id, "sql": case.sql, "options": {"workers": workers}}),
        )
        .await;
    assert_eq!(s, 201, "{}: {v}", case.name);
    for (stream, lines) in &case.inputs {
        let events: Vec<Value> = lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let path = format!("/v1/streams/{stream}/events");
        let bodies = match arrays {
            true => vec![Value::Array(events)],
            false => events,
        };
        for body in bodies {
            let (s, v) = node.post(&path, body).await;
            assert_eq!(s, 200, "{}: {v}", case.name);
        }
    }
    let late_topic = format!("weir/late/{id}");
    let (mut got, mut late) = (Vec::new(), Vec::new());
    // Until everything expected is in, then a little longer for anything unexpected.
    let mut wait = Duration::from_secs(15);
    while let Ok(Some(m)) = tokio::time::timeout(wait, rx.recv()).await {
        let text = String::from_utf8_lossy(&m.payload).into_owned();
        if *m.topic == *late_topic {
            let v: Value = serde_json::from_str(&text).unwrap();
            late.push(format!("{} {}", v["ts"], v["event"]));
        } else if case.outputs.iter().any(|o| **o == *m.topic) {
            got.push(format!("{} {text}", m.topic));
        }
        if got.len() + late.len() >= expected {
            wait = Duration::from_millis(300);
        }
    }
    node.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    got.sort();
    late.sort();
    (got, late)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_cases_give_the_same_results_on_a_node_however_their_input_arrives() {
    let cases = cases();
    assert!(cases.len() >= 10);
    let mut failures = Vec::new();
    let mut compared = 0;
    for case in &cases {
        let want = reference(case);
        compared += usize::from(!want.0.is_empty());
        for (workers, arrays) in [(1, false), (3, true), (1, true), (3, false)] {
            let got = on_node(case, workers, arrays, want.0.len() + want.1.len()).await;
            if got != want {
                failures.push(format!(
                    "{} with {workers} worker(s), {}:\n  want {:?}\n  got  {:?}",
                    case.name,
                    if arrays {
                        "arrays"
                    } else {
                        "one event per request"
                    },
                    want,
                    got
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        compared >= 10,
        "only {compared} cases have results before their end"
    );
}
