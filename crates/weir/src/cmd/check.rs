//! `weir check`: report every problem of a rule file without running anything.

use std::process::ExitCode;

use clap::Args;
use weir_connectors::check::Target;
use weir_connectors::delivery::Delivery;
use weir_lang::plan::{Body, Input};

/// Checks rule files: every error at once, with line, column and a hint. Runs nothing.
/// Several files are one program, each seeing the streams declared by those before it:
///   weir check examples/debs2012/debs.sql examples/debs2012/query1.sql
/// With --node, checks them as a node would before installing them, refusing what it refuses
/// (file streams, and connectors that cannot give the --delivery asked for):
///   weir check --node --delivery at_least_once examples/serve/hot.sql
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct CheckArgs {
    /// The rule files (streaming SQL).
    #[arg(required = true)]
    pub rules: Vec<String>,
    /// Check as a node checks a rule before installing it, not as `weir run` does.
    #[arg(long)]
    pub node: bool,
    /// With --node: the delivery guarantee the rule would be installed with (at_most_once,
    /// at_least_once or exactly_once).
    #[arg(long, requires = "node", value_parser = Delivery::from_name)]
    pub delivery: Option<Delivery>,
}

pub fn run(a: CheckArgs) -> Result<ExitCode, String> {
    let target = if a.node { Target::Node } else { Target::Run };
    let Some(program) = super::load_rules(&a.rules, target)? else {
        return Ok(ExitCode::from(2));
    };
    let refusals = a.delivery.map_or_else(Vec::new, |d| {
        weir_node::rule::delivery_refusals(&program, d)
    });
    if !refusals.is_empty() {
        for r in &refusals {
            eprintln!("error: {r}");
        }
        eprintln!("{}: {} error(s)", a.rules.join(" "), refusals.len());
        return Ok(ExitCode::from(2));
    }
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
