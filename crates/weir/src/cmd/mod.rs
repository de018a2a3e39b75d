//! One module per subcommand.

pub mod bench;
pub mod bench_debs;
pub mod bench_state;
pub mod check;
pub mod client;
pub mod functions;
pub mod replay;
pub mod run;
pub mod serve;
pub mod simulate;

use weir_lang::Program;

/// Reads and compiles rule files as one program: each file sees the streams the files before
/// it declare (as rules on a node see its catalog), and the rules of all of them run together.
/// On errors prints every diagnostic and returns `None`.
pub fn load_rules(paths: &[String]) -> Result<Option<Program>, String> {
    let mut program = Program::default();
    let mut failed = false;
    for path in paths {
        let source = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
        match weir_lang::compile_with(&source, &program.streams) {
            Ok(p) => {
                program.streams = p.streams;
                program.rules.extend(p.rules);
            }
            Err(d) => {
                eprint!("{}", d.render(path, &source));
                eprintln!("{path}: {} error(s); nothing was run", d.0.len());
                failed = true;
            }
        }
    }
    Ok((!failed).then_some(program))
}
