//! Golden-file tests of the language and the engine.
//!
//! `tests/golden/<case>/` holds `rules.sql`, inputs `in.<stream>.jsonl` and expected outputs
//! `out.<stream>.jsonl` (compared as sorted lines: keyed rules run on several workers), and
//! `late.jsonl` for the expected late events (none when absent). `tests/errors/<case>.sql` are
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

fn run_case(dir: &Path, workers: usize) -> Vec<String> {
    let mut failures = Vec::new();
    let sql = fs::read_to_string(dir.join("rules.sql")).unwrap();
    let program = match weir_lang::compile(&sql) {
        Ok(p) => p,
        Err(d) => {
            return vec![format!(
                "{}: {}",
                dir.display(),
                d.render("rules.sql", &sql)
            )]
        }
    };
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
            inputs.push((stream.to_owned(), rows));
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
    let config = EngineConfig {
        workers,
        batch_size: 1,
        ..EngineConfig::default()
    };
    let result = run_batch(&program, inputs, &outputs, config).unwrap();
    for (stream, events) in &result.outputs {
        let lines = sorted_lines(events.iter().map(|e| e.row.to_json()));
        check_file(
            &dir.join(format!("out.{stream}.jsonl")),
            lines,
            &mut failures,
        );
    }
    let late = sorted_lines(result.late.iter().map(|l| serde_json::json!({"ts": l.event.ts, "event": serde_json::to_value(&l.event.row).unwrap()}).to_string()));
    check_file(&dir.join("late.jsonl"), late, &mut failures);
    assert!(
        result.rejected.is_empty(),
        "{}: rejected rows {:?}",
        dir.display(),
        result.rejected
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
        failures.extend(run_case(dir, 1));
        if !bless() {
            failures.extend(run_case(dir, 3));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_error_message() {
    let mut failures = Vec::new();
    let files: Vec<PathBuf> = cases("errors")
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    assert!(!files.is_empty());
    for f in files {
        let sql = fs::read_to_string(&f).unwrap();
        let actual = match weir_lang::compile(&sql) {
            Ok(_) => "ok\n".to_owned(),
            Err(d) => d.render("rules.sql", &sql),
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
