//! One validation of the streams a rule file declares: each stream's connector and format
//! settings, every problem with the position of the option it concerns. `weir check` and `weir
//! run` report them, and a node refuses to install a rule for them, from this one function:
//! what `weir check --node` accepts, a node accepts.

use weir_lang::plan::{Program, StreamDef};
use weir_lang::Diagnostic;

use crate::codec::{CsvOptions, Format};
use crate::options::connector_of;
use crate::Endpoint;

/// Where a program is to run: some connectors run only under `weir run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `weir run`, with the files and rights of the user who runs it.
    Run,
    /// A node, where whoever may install rules names the streams.
    Node,
}

/// Problems with the declared streams of `program` from index `from` on (those an earlier
/// file or the node's catalogue declared were checked then).
pub fn stream_problems(program: &Program, from: usize, target: Target) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for def in program.streams.iter().skip(from).filter(|d| d.declared) {
        let at = |option: &str| def.option_pos.get(option).copied().unwrap_or(def.pos);
        if let (Target::Node, Ok(spec)) = (target, connector_of(&def.options)) {
            if let Some(why) = spec.not_on_node {
                out.push(
                    Diagnostic::new(at("connector"), format!("stream {}: {why}", def.name))
                        .hint("send events to a node by HTTP ingest, its MQTT endpoint or a broker; `weir run` reads and writes files"),
                );
                continue;
            }
        }
        let (endpoint, problems) = Endpoint::build(&def.name, &def.options);
        for p in problems {
            let hint = p.hint.unwrap_or_else(|| {
                format!("`weir connectors {}` lists its options", endpoint.kind())
            });
            out.push(diagnostic(def, at(&p.option), p.message).hint(hint));
        }
        if let Err(e) = Format::of_messages(&def.options) {
            out.push(diagnostic(def, at("format"), e).hint("formats: json, csv, debs2012"));
        }
        if let Err(e) = CsvOptions::from_options(&def.options) {
            out.push(diagnostic(def, at("delimiter"), e).hint("write e.g. delimiter = ';'"));
        }
    }
    out.sort_by_key(|d| d.pos);
    out
}

fn diagnostic(def: &StreamDef, pos: weir_lang::Pos, message: String) -> Diagnostic {
    Diagnostic::new(pos, format!("stream {}: {message}", def.name))
}
