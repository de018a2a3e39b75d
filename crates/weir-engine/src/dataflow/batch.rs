//! One run over in-memory inputs, to completion.

use weir_core::{Event, Row};
use weir_lang::plan::Program;

use super::{BuildError, Dataflow, EngineConfig, LateEvent};

/// Everything one run over in-memory inputs produced.
#[derive(Debug, Default)]
pub struct BatchResult {
    /// Events per requested output stream, in arrival order.
    pub outputs: std::collections::BTreeMap<String, Vec<Event>>,
    /// Events that came after the watermark had passed them, with the reason.
    pub late: Vec<LateEvent>,
    /// Rows the ingest refused, with the reason.
    pub rejected: Vec<(String, Row, String)>,
}

/// Runs a program to completion over in-memory inputs: every input is read, every window
/// flushed. For tests, examples and tools that hold their input already.
pub fn run_batch(
    program: &Program,
    inputs: Vec<(String, Vec<Row>)>,
    outputs: &[String],
    config: EngineConfig,
) -> Result<BatchResult, BuildError> {
    let names: Vec<String> = inputs.iter().map(|(n, _)| n.clone()).collect();
    let mut flow = Dataflow::build(program, &names, outputs, config)?;
    let late = flow.take_late().expect("fresh dataflow");
    let mut result = BatchResult::default();
    std::thread::scope(|s| {
        let feeders: Vec<_> = inputs
            .into_iter()
            .map(|(name, rows)| {
                let mut ingest = flow.take_ingest(&name).expect("declared at build");
                s.spawn(move || {
                    let mut rejected = Vec::new();
                    for row in rows {
                        if let Err(reason) = ingest.push(row.clone()) {
                            rejected.push((name.clone(), row, reason));
                        }
                    }
                    ingest.finish();
                    rejected
                })
            })
            .collect();
        let readers: Vec<_> = outputs
            .iter()
            .map(|name| {
                let out = flow.take_output(name).expect("declared at build");
                let name = name.clone();
                s.spawn(move || (name, out.flatten().collect::<Vec<Event>>()))
            })
            .collect();
        let late_reader = s.spawn(move || late.collect::<Vec<_>>());
        for f in feeders {
            result.rejected.extend(f.join().unwrap_or_default());
        }
        for r in readers {
            if let Ok((name, evs)) = r.join() {
                result.outputs.insert(name, evs);
            }
        }
        flow.join();
        result.late = late_reader.join().unwrap_or_default();
    });
    Ok(result)
}
