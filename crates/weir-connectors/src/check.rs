//! One validation of the streams a rule file declares: each stream's connector and format
//! settings, every problem with the position of the option it concerns. `weir check` and `weir
//! run` report them, and a node refuses to install a rule for them, from this one function:
//! what `weir check` accepts, a node accepts.

use weir_lang::plan::{Program, StreamDef};
use weir_lang::Diagnostic;

use crate::codec::{CsvOptions, Format};
use crate::Endpoint;

/// Problems with the declared streams of `program` from index `from` on (those an earlier
/// file or the node's catalogue declared were checked then).
pub fn stream_problems(program: &Program, from: usize) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for def in program.streams.iter().skip(from).filter(|d| d.declared) {
        let at = |option: &str| def.option_pos.get(option).copied().unwrap_or(def.pos);
        let (_, problems) = Endpoint::build(&def.name, &def.options);
        for p in problems {
            out.push(diagnostic(def, at(&p.option), p.message));
        }
        if let Err(e) = Format::of_messages(&def.options) {
            out.push(diagnostic(def, at("format"), e));
        }
        if let Err(e) = CsvOptions::from_options(&def.options) {
            out.push(diagnostic(def, at("delimiter"), e));
        }
    }
    out.sort_by_key(|d| d.pos);
    out
}

fn diagnostic(def: &StreamDef, pos: weir_lang::Pos, message: String) -> Diagnostic {
    Diagnostic::new(pos, format!("stream {}: {message}", def.name))
        .hint("each connector's options are listed in README.md (Running a node)")
}
