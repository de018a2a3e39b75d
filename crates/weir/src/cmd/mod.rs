//! One module per subcommand.

pub mod bench;
pub mod bench_state;
pub mod check;
pub mod client;
pub mod functions;
pub mod replay;
pub mod run;
pub mod serve;
pub mod simulate;

use weir_lang::Program;

/// Reads and compiles a rule file; on errors prints every diagnostic and returns `None`.
pub fn load_rules(path: &str) -> Result<Option<(String, Program)>, String> {
    let source = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    match weir_lang::compile(&source) {
        Ok(p) => Ok(Some((source, p))),
        Err(d) => {
            eprint!("{}", d.render(path, &source));
            eprintln!("{path}: {} error(s); nothing was run", d.0.len());
            Ok(None)
        }
    }
}
