//! `weir check`: report every problem of a rule file without running anything.

use std::process::ExitCode;

use clap::Args;
use weir_lang::plan::{Body, Input};

/// Checks rule files: every error at once, with line, column and a hint. Runs nothing.
/// Several files are one program, each seeing the streams declared by those before it:
///   weir check examples/debs2012/debs.sql examples/debs2012/query1.sql
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct CheckArgs {
    /// The rule files (streaming SQL).
    #[arg(required = true)]
    pub rules: Vec<String>,
}

pub fn run(a: CheckArgs) -> Result<ExitCode, String> {
    let Some(program) = super::load_rules(&a.rules)? else {
        return Ok(ExitCode::from(2));
    };
    println!(
        "{}: ok — {} stream(s), {} rule(s)",
        a.rules.join(" "),
        program.streams.len(),
        program.rules.len()
    );
    for r in &program.rules {
        let input = match &r.input {
            Input::Stream(s) => s.clone(),
            Input::Join(j) => format!(
                "{} JOIN {} within [{} ms, {} ms]",
                j.left, j.right, j.lower_ms, j.upper_ms
            ),
            Input::Pattern(p) => {
                format!("{} MATCH_RECOGNIZE ({} symbols)", p.stream, p.symbols.len())
            }
        };
        let body = match &r.body {
            Body::Project(p) if p.changes.is_empty() => "projection".to_owned(),
            Body::Project(p) => format!("projection with {} change function(s)", p.changes.len()),
            Body::Aggregate(g) => format!(
                "{:?} window, {} key(s), {} aggregate(s)",
                g.window,
                g.keys.len(),
                g.aggs.len()
            ),
        };
        println!("  {} (line {}): {input} -> {body}", r.name, r.pos.line);
    }
    Ok(ExitCode::SUCCESS)
}
