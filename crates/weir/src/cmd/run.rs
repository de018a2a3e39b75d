//! `weir run`: the offline runner. Reads streams from files, runs the rules at full speed in
//! event time, flushes every window at the end of input, writes JSON lines.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::process::ExitCode;
use std::time::Instant;

use clap::Args;
use weir_connectors::file::{FileConfig, FileSink, FileSource};
use weir_connectors::DeadLetter;
use weir_engine::{Dataflow, EngineConfig};

/// Runs rule files over files (or stdin) and writes the results as JSON lines.
///
/// Several rule files are one program, each seeing the streams the files before it declare.
/// Every stream a rule reads needs an --input (JSON lines, or CSV for *.csv, or the stream's
/// format, or the one --input-format names); every stream a rule writes that no other rule
/// reads goes to its --output, or to stdout.
/// Malformed input lines never stop the run: they are counted and written, with the reason,
/// to --dead-letter (or reported on stderr). Late events go to --late the same way.
///
/// Example:
///   weir simulate readings --count 100000 | weir run examples/readings/tumbling_avg.sql --input readings=- --output avg_per_second=out.jsonl
///   weir simulate debs --duration 10m | weir run examples/debs2012/debs.sql examples/debs2012/query1.sql --input debs=- --input-format debs=debs2012
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct RunArgs {
    /// The rule files (streaming SQL).
    #[arg(required = true)]
    pub rules: Vec<String>,
    /// STREAM=PATH: read a stream from a file, `-` for stdin. Repeat for several streams.
    #[arg(long = "input", short = 'i', value_name = "STREAM=PATH")]
    pub inputs: Vec<String>,
    /// STREAM=PATH: write a stream to a file, `-` for stdout. Repeat for several streams.
    #[arg(long = "output", short = 'o', value_name = "STREAM=PATH")]
    pub outputs: Vec<String>,
    /// STREAM=FORMAT: read that stream's input file as json, csv or debs2012, whatever the
    /// stream declares (a stream declared for live JSON messages, read from a recording).
    #[arg(long = "input-format", value_name = "STREAM=FORMAT")]
    pub input_formats: Vec<String>,
    /// Write malformed input records here as JSON lines, with the reason.
    #[arg(long, value_name = "PATH")]
    pub dead_letter: Option<String>,
    /// Write late events here as JSON lines, with the rule and the reason.
    #[arg(long, value_name = "PATH")]
    pub late: Option<String>,
    /// Partitions per keyed rule, run on the shared worker pool (default: the number of cores).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Print nothing but errors on stderr.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

fn split_binding(b: &str) -> Result<(String, String), String> {
    match b.split_once('=') {
        Some((s, p)) if !s.is_empty() && !p.is_empty() => Ok((s.to_owned(), p.to_owned())),
        _ => Err(format!("'{b}' is not STREAM=PATH")),
    }
}

/// Writes side-output records (dead letters, late events) to a file, or summarises them on stderr.
struct SideOutput {
    file: Option<BufWriter<File>>,
    shown: u64,
    count: u64,
    what: &'static str,
}

impl SideOutput {
    fn open(path: &Option<String>, what: &'static str) -> Result<SideOutput, String> {
        let file = match path {
            Some(p) => Some(BufWriter::new(
                File::create(p).map_err(|e| format!("{p}: {e}"))?,
            )),
            None => None,
        };
        Ok(SideOutput {
            file,
            shown: 0,
            count: 0,
            what,
        })
    }

    fn write(&mut self, json: String) {
        self.count += 1;
        match &mut self.file {
            Some(f) => {
                let _ = writeln!(f, "{json}");
            }
            None if self.shown < 10 => {
                self.shown += 1;
                eprintln!("weir: {}: {json}", self.what);
            }
            None => {}
        }
    }

    fn finish(mut self) -> u64 {
        if let Some(f) = &mut self.file {
            let _ = f.flush();
        } else if self.count > self.shown {
            eprintln!(
                "weir: {} more {} not shown (name a file to keep them all)",
                self.count - self.shown,
                self.what
            );
        }
        self.count
    }
}

pub fn run(a: RunArgs) -> Result<ExitCode, String> {
    let Some(program) = super::load_rules(&a.rules, weir_connectors::check::Target::Run)? else {
        return Ok(ExitCode::from(2));
    };
    let formats: Vec<(String, String)> = a
        .input_formats
        .iter()
        .map(|b| split_binding(b))
        .collect::<Result<_, _>>()?;
    let inputs: Vec<(String, String)> = a
        .inputs
        .iter()
        .map(|b| split_binding(b))
        .collect::<Result<_, _>>()?;
    let mut outputs: Vec<(String, String)> = a
        .outputs
        .iter()
        .map(|b| split_binding(b))
        .collect::<Result<_, _>>()?;
    for (s, _) in inputs.iter().chain(outputs.iter()) {
        if program.stream(s).is_none() {
            let names: Vec<&str> = program.streams.iter().map(|s| s.name.as_str()).collect();
            return Err(format!(
                "the rules have no stream '{s}'; they have: {}",
                names.join(", ")
            ));
        }
    }
    let read: BTreeSet<String> = program
        .rules
        .iter()
        .flat_map(|r| r.inputs())
        .map(str::to_ascii_lowercase)
        .collect();
    let fed: BTreeSet<String> = inputs
        .iter()
        .map(|(s, _)| s.to_ascii_lowercase())
        .chain(program.rules.iter().map(|r| r.sink.to_ascii_lowercase()))
        .collect();
    for s in &read {
        if !fed.contains(s) {
            let name = program.stream(s).map_or(s.as_str(), |d| d.name.as_str());
            return Err(format!(
                "rules read stream '{name}', but nothing feeds it: add --input {name}=PATH"
            ));
        }
    }
    // Terminal sinks without an --output go to stdout.
    for r in &program.rules {
        let sink = r.sink.to_ascii_lowercase();
        if !read.contains(&sink) && !outputs.iter().any(|(s, _)| s.eq_ignore_ascii_case(&sink)) {
            outputs.push((r.sink.clone(), "-".to_owned()));
        }
    }

    // Open every file before anything runs, so a bad path fails fast.
    let mut sources = Vec::new();
    for (s, p) in &inputs {
        let format = formats
            .iter()
            .find(|(f, _)| f.eq_ignore_ascii_case(s))
            .map(|(_, f)| f.as_str());
        let options = program
            .stream(s)
            .map(|d| d.options.clone())
            .unwrap_or_default();
        sources.push((
            s.clone(),
            FileSource::open(FileConfig::new(p, &options, format).map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?,
        ));
    }
    let mut sinks = Vec::new();
    for (s, p) in &outputs {
        sinks.push((
            s.clone(),
            FileSink::create(FileConfig::json(p).map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?,
        ));
    }
    let mut dead = SideOutput::open(&a.dead_letter, "dead letters")?;
    let mut late = SideOutput::open(&a.late, "late events")?;

    let mut config = EngineConfig::default();
    if let Some(w) = a.workers {
        config.workers = w;
    }
    let input_names: Vec<String> = inputs.iter().map(|(s, _)| s.clone()).collect();
    let output_names: Vec<String> = outputs.iter().map(|(s, _)| s.clone()).collect();
    let started = Instant::now();
    let mut flow = Dataflow::build(&program, &input_names, &output_names, config)
        .map_err(|e| e.to_string())?;
    let late_rx = flow.take_late().ok_or("late events already taken")?;

    let (dead_tx, dead_rx) = std::sync::mpsc::sync_channel::<DeadLetter>(1024);
    let failures = std::thread::scope(|scope| {
        let mut source_threads = Vec::new();
        for (s, src) in sources {
            let ingest = flow.take_ingest(&s).expect("declared at build");
            let tx = dead_tx.clone();
            source_threads.push(scope.spawn(move || {
                src.run(ingest, &mut |d| {
                    let _ = tx.send(d);
                })
            }));
        }
        drop(dead_tx);
        let mut sink_threads = Vec::new();
        for (s, sink) in sinks {
            let out = flow.take_output(&s).expect("declared at build");
            sink_threads.push(scope.spawn(move || sink.run(out)));
        }
        let dead_thread = scope.spawn(move || {
            for d in dead_rx {
                dead.write(d.to_json());
            }
            dead.finish()
        });
        let late_thread = scope.spawn(move || {
            for l in late_rx {
                let json = serde_json::json!({"rule": l.rule, "reason": l.reason, "ts": l.event.ts, "event": serde_json::to_value(&l.event.row).unwrap_or_default()});
                late.write(json.to_string());
            }
            late.finish()
        });
        let mut failures = Vec::new();
        let mut records = 0;
        for t in source_threads {
            match t.join() {
                Ok(Ok(s)) => records += s.records,
                Ok(Err(e)) => failures.push(e.to_string()),
                Err(_) => failures.push("a source thread panicked".to_owned()),
            }
        }
        let mut written = 0;
        for t in sink_threads {
            match t.join() {
                Ok(Ok(n)) => written += n,
                Ok(Err(e)) => failures.push(e.to_string()),
                Err(_) => failures.push("a sink thread panicked".to_owned()),
            }
        }
        let stats: Vec<_> = flow.stats().to_vec();
        flow.join();
        let dead_count = dead_thread.join().unwrap_or(0);
        let late_count = late_thread.join().unwrap_or(0);
        if !a.quiet {
            let secs = started.elapsed().as_secs_f64();
            eprintln!(
                "weir: read {records} record(s) in {secs:.3} s ({:.0} records/s); wrote {written} event(s); {dead_count} dead letter(s); {late_count} late event(s)",
                records as f64 / secs.max(1e-9)
            );
            for s in stats {
                use std::sync::atomic::Ordering::Relaxed;
                eprintln!(
                    "weir:   {}: in {}, out {}, late {}",
                    s.name,
                    s.events_in.load(Relaxed),
                    s.events_out.load(Relaxed),
                    s.late.load(Relaxed)
                );
            }
        }
        failures
    });
    if failures.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(failures.join("; "))
    }
}
