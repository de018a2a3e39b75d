//! One module per subcommand.

pub mod bench;
pub mod bench_debs;
pub mod bench_group;
pub mod bench_move;
pub mod bench_node;
pub mod bench_rules;
pub mod bench_secure;
pub mod bench_state;
pub mod check;
pub mod client;
pub mod connectors;
pub mod functions;
pub mod replay;
pub mod run;
pub mod serve;
pub mod simulate;

use weir_connectors::check::Target;
use weir_lang::Program;

/// Reads and compiles rule files as one program (see [`compile_sources`]). On errors prints
/// every diagnostic and returns `None`.
pub fn load_rules(paths: &[String], target: Target) -> Result<Option<Program>, String> {
    let mut sources = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
        sources.push((path.as_str(), text));
    }
    match compile_sources(&sources, target) {
        Ok(p) => Ok(Some(p)),
        Err(report) => {
            eprint!("{report}");
            Ok(None)
        }
    }
}

/// Compiles named rule texts as one program: each sees the streams the ones before it declare
/// (as rules on a node see its catalog), and the rules of all of them run together. `Err`
/// holds every diagnostic, rendered.
pub fn compile_sources(
    sources: &[(&str, impl AsRef<str>)],
    target: Target,
) -> Result<Program, String> {
    let mut program = Program::default();
    let mut report = String::new();
    for (name, text) in sources {
        let text = text.as_ref();
        // The language and the connector settings of the streams it declares, in one report:
        // with Target::Node, what a node would refuse is refused here too.
        let compiled = weir_lang::compile_checked(text, &program.streams, |p, from| {
            weir_connectors::check::stream_problems(p, from, target)
        });
        match compiled {
            Ok(p) => {
                program.streams = p.streams;
                program.rules.extend(p.rules);
            }
            Err(d) => {
                report += &d.render(name, text);
                report += &format!("{name}: {} error(s); nothing was run\n", d.0.len());
            }
        }
    }
    if report.is_empty() {
        Ok(program)
    } else {
        Err(report)
    }
}
