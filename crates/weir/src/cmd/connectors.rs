//! `weir connectors`: the connector reference, from each connector's spec.

use std::process::ExitCode;

use clap::Args;
use weir_connectors::registry::{self, CONNECTORS};

/// Lists the connectors a stream can name, or one connector's options, guarantees and
/// connection test:
///   weir connectors
///   weir connectors mqtt
///   weir connectors --markdown > docs/connectors.md
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct ConnectorsArgs {
    /// One connector to describe in full.
    pub name: Option<String>,
    /// The whole reference in Markdown (docs/connectors.md).
    #[arg(long, conflicts_with = "name")]
    pub markdown: bool,
}

pub fn run(a: ConnectorsArgs) -> Result<ExitCode, String> {
    if a.markdown {
        print!("{}", registry::markdown());
        return Ok(ExitCode::SUCCESS);
    }
    match a.name {
        Some(name) => {
            let spec = registry::find(&name).ok_or_else(|| {
                let names: Vec<&str> = CONNECTORS.iter().map(|c| c.name).collect();
                format!("no connector '{name}'; connectors: {}", names.join(", "))
            })?;
            print!("{}", spec.markdown());
        }
        None => {
            for c in CONNECTORS {
                let built = if c.built() {
                    ""
                } else {
                    " (not in this build)"
                };
                let summary = c.summary.split(". ").next().unwrap_or(c.summary);
                println!("{:<9} {summary}{built}", c.name);
            }
            println!("\n`weir connectors NAME` lists a connector's options.");
        }
    }
    Ok(ExitCode::SUCCESS)
}
