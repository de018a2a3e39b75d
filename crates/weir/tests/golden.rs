//! Golden-file tests of the language and the engine.
//!
//! `tests/golden/<case>/` holds `rules.sql`, inputs `in.<stream>.jsonl` and expected outputs
//! `out.<stream>.jsonl` (compared as sorted lines: keyed rules run on several workers), and
//! `late.jsonl` for the expected late events (none when absent). Every case runs on the engine
//! with one and several workers and batches of 1, 7 and 1,024 events, and through `weir run`:
//! all must give the expected files, which were made one event at a time. `tests/errors/<case>.sql` are
//! rule files with mistakes; `<case>.expected` is what `weir check` must say about them.
//! `WEIR_BLESS=1 cargo test --test golden` rewrites the expected files; review the diff.

use std::fs;
use std::path::{Path, PathBuf};

use weir_core::{parse_json_row, Row};
use weir_engine::{run_batch, EngineConfig};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests")
}

fn bless() -> bool {
    std::env::var_os("WEIR_BLESS").is_some()
}

fn sorted_lines(lines: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut v: Vec<String> = lines.into_iter().collect();
    v.sort();
    v
}

fn check_file(path: &Path, actual: Vec<String>, failures: &mut Vec<String>) {
    let text = if actual.is_empty() {
        String::new()
    } else {
        actual.join("\n") + "\n"
    };
    if bless() {
        if text.is_empty() && !path.exists() {
            return;
        }
        fs::write(path, &text).unwrap();
        return;
    }
    let expected = fs::read_to_string(path).unwrap_or_default();
    let expected = sorted_lines(expected.lines().map(str::to_owned));
    if expected != actual {
        failures.push(format!(
            "{}:\n--- expected\n{}\n--- actual\n{}",
            path.display(),
            expected.join("\n"),
            actual.join("\n")
        ));
    }
}

/// A case's rules, inputs (stream, rows, file) and output streams.
struct Case {
    program: weir_lang::Program,
    inputs: Vec<(String, Vec<Row>, PathBuf)>,
    outputs: Vec<String>,
}

fn load_case(dir: &Path) -> Result<Case, String> {
    let sql = fs::read_to_string(dir.join("rules.sql")).unwrap();
    let program = weir_lang::compile(&sql)
        .map_err(|d| format!("{}: {}", dir.display(), d.render("rules.sql", &sql)))?;
    let mut inputs = Vec::new();
    let mut outputs = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if let Some(stream) = name
            .strip_prefix("in.")
            .and_then(|n| n.strip_suffix(".jsonl"))
        {
            let text = fs::read_to_string(dir.join(&name)).unwrap();
            let rows: Vec<Row> = text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| parse_json_row(l.as_bytes()).unwrap())
                .collect();
            inputs.push((stream.to_owned(), rows, dir.join(&name)));
        } else if let Some(stream) = name
            .strip_prefix("out.")
            .and_then(|n| n.strip_suffix(".jsonl"))
        {
            outputs.push(stream.to_owned());
        }
    }
    if outputs.is_empty() {
        // A new case: every sink that no rule reads is an output.
        for r in &program.rules {
            if !program
                .rules
                .iter()
                .any(|o| o.inputs().iter().any(|i| i.eq_ignore_ascii_case(&r.sink)))
                && !outputs.contains(&r.sink)
            {
                outputs.push(r.sink.clone());
            }
        }
    }
    inputs.sort_by(|a, b| a.0.cmp(&b.0));
    outputs.sort();
    Ok(Case {
        program,
        inputs,
        outputs,
    })
}

/// A late event as the expected files hold it.
fn late_line(ts: i64, event: serde_json::Value) -> String {
    serde_json::json!({"ts": ts, "event": event}).to_string()
}

/// Compares (or, blessing, writes) a case's outputs and late events; `how` names the path taken.
fn compare(
    dir: &Path,
    how: &str,
    outputs: Vec<(String, Vec<String>)>,
    late: Vec<String>,
    failures: &mut Vec<String>,
) {
    let mut found = Vec::new();
    for (stream, lines) in outputs {
        check_file(
            &dir.join(format!("out.{stream}.jsonl")),
            sorted_lines(lines),
            &mut found,
        );
    }
    check_file(&dir.join("late.jsonl"), sorted_lines(late), &mut found);
    failures.extend(found.into_iter().map(|f| format!("[{how}] {f}")));
}

/// A case through the engine, its input fed in batches of `batch_size`.
fn run_case(dir: &Path, workers: usize, batch_size: usize) -> Vec<String> {
    let case = match load_case(dir) {
        Ok(c) => c,
        Err(e) => return vec![e],
    };
    let inputs = case
        .inputs
        .into_iter()
        .map(|(s, rows, _)| (s, rows))
        .collect();
    let config = EngineConfig {
        workers,
        batch_size,
        ..EngineConfig::default()
    };
    let result = run_batch(&case.program, inputs, &case.outputs, config).unwrap();
    assert!(
        result.rejected.is_empty(),
        "{}: rejected rows {:?}",
        dir.display(),
        result.rejected
    );
    let outputs = result
        .outputs
        .iter()
        .map(|(s, evs)| (s.clone(), evs.iter().map(|e| e.row.to_json()).collect()))
        .collect();
    let late = result
        .late
        .iter()
        .map(|l| late_line(l.event.ts, serde_json::to_value(&l.event.row).unwrap()))
        .collect();
    let mut failures = Vec::new();
    compare(
        dir,
        &format!("engine, {workers} worker(s), batches of {batch_size}"),
        outputs,
        late,
        &mut failures,
    );
    failures
}

/// A case through `weir run`, as a user runs it.
fn run_cli(dir: &Path, workers: usize) -> Vec<String> {
    let case = match load_case(dir) {
        Ok(c) => c,
        Err(e) => return vec![e],
    };
    let tmp = std::env::temp_dir().join(format!(
        "weir-golden-{}-{}-{workers}",
        std::process::id(),
        dir.file_name().unwrap().to_string_lossy()
    ));
    fs::create_dir_all(&tmp).unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_weir"));
    cmd.arg("run")
        .arg(dir.join("rules.sql"))
        .arg("-q")
        .args(["--workers", &workers.to_string()]);
    for (s, _, path) in &case.inputs {
        cmd.arg("--input").arg(format!("{s}={}", path.display()));
    }
    for s in &case.outputs {
        cmd.arg("--output")
            .arg(format!("{s}={}", tmp.join(format!("{s}.jsonl")).display()));
    }
    let late_path = tmp.join("late.jsonl");
    cmd.arg("--late").arg(&late_path);
    let out = cmd.output().unwrap();
    if !out.status.success() {
        return vec![format!(
            "{}: weir run failed: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        )];
    }
    let lines = |p: &Path| -> Vec<String> {
        fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    };
    let outputs = case
        .outputs
        .iter()
        .map(|s| (s.clone(), lines(&tmp.join(format!("{s}.jsonl")))))
        .collect();
    let late = lines(&late_path)
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            late_line(v["ts"].as_i64().unwrap(), v["event"].clone())
        })
        .collect();
    let _ = fs::remove_dir_all(&tmp);
    let mut failures = Vec::new();
    compare(
        dir,
        &format!("weir run --workers {workers}"),
        outputs,
        late,
        &mut failures,
    );
    failures
}

fn cases(sub: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(root().join(sub))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

#[test]
fn golden_cases_with_one_and_several_workers() {
    let mut failures = Vec::new();
    let dirs: Vec<PathBuf> = cases("golden").into_iter().filter(|p| p.is_dir()).collect();
    assert!(
        dirs.len() >= 10,
        "expected the golden cases, found {}",
        dirs.len()
    );
    for dir in &dirs {
        failures.extend(run_case(dir, 1, 1));
        if bless() {
            continue;
        }
        // Lateness is decided per event, so neither batching nor workers change a result.
        for (workers, batch) in [(3, 1), (1, 7), (3, 7), (1, 1024), (2, 1024)] {
            failures.extend(run_case(dir, workers, batch));
        }
        for workers in [1, 3] {
            failures.extend(run_cli(dir, workers));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Every rule file with mistakes gives, through `weir check`, exactly the expected messages:
/// the language's and the connector settings' (what a node would refuse). A file whose first
/// line is `-- weir check <flags>` is checked with those flags.
#[test]
fn every_error_message() {
    let mut failures = Vec::new();
    let files: Vec<PathBuf> = cases("errors")
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    assert!(!files.is_empty());
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let text = fs::read_to_string(&f).unwrap();
        let flags = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("-- weir check "))
            .map_or(Vec::new(), |f| f.split_whitespace().collect());
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
            .arg("check")
            .args(&flags)
            .arg(&name)
            .current_dir(f.parent().unwrap())
            .output()
            .unwrap();
        let actual = match out.status.success() {
            true => "ok\n".to_owned(),
            false => String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        let expected_path = f.with_extension("expected");
        if bless() {
            fs::write(&expected_path, &actual).unwrap();
            continue;
        }
        let expected = fs::read_to_string(&expected_path).unwrap_or_default();
        if expected != actual {
            failures.push(format!(
                "{}:\n--- expected\n{expected}--- actual\n{actual}",
                f.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
