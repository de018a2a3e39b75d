//! The `weir` command line.

mod cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Events are many small allocations moving between threads; mimalloc's per-thread heaps make
/// that markedly cheaper than the system allocator (see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// weir — streaming SQL for IoT and digital twins.
///
/// Rules are continuous queries in streaming SQL: CREATE STREAM declares where events come from
/// and how their time is read; INSERT INTO ... SELECT ... turns streams into new streams with
/// filters, windows, joins, patterns (MATCH_RECOGNIZE) and change detection.
///
/// Start here:
///   weir serve                      (a node: REST on :7070, MQTT on :1884; see weir serve --help)
///   weir simulate readings --count 100000 --seed 42 > readings.jsonl
///   weir check examples/readings/tumbling_avg.sql
///   weir run examples/readings/tumbling_avg.sql --input readings=readings.jsonl --output avg_per_second=-
///   weir simulate debs --duration 10m --output debs.tsv     (DEBS 2012 records)
///   weir replay debs.tsv --to debs --speed 10               (to a node's stream, or a broker URL)
///   weir connectors mqtt                                    (a connector's options and guarantees)
#[derive(Parser)]
#[command(name = "weir", version, verbatim_doc_comment)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Run(cmd::run::RunArgs),
    Check(cmd::check::CheckArgs),
    Simulate(cmd::simulate::SimulateArgs),
    Replay(cmd::replay::ReplayArgs),
    Functions(cmd::functions::FunctionsArgs),
    Connectors(cmd::connectors::ConnectorsArgs),
    Serve(Box<cmd::serve::ServeArgs>),
    Rule(cmd::client::RuleArgs),
    Stream(cmd::client::StreamArgs),
    Bench(cmd::bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(a) => cmd::run::run(a),
        Command::Check(a) => cmd::check::run(a),
        Command::Simulate(a) => cmd::simulate::run(a),
        Command::Replay(a) => cmd::replay::run(a),
        Command::Functions(a) => cmd::functions::run(a),
        Command::Connectors(a) => cmd::connectors::run(a),
        Command::Serve(a) => cmd::serve::run(*a),
        Command::Rule(a) => cmd::client::rule(a),
        Command::Stream(a) => cmd::client::stream(a),
        Command::Bench(a) => cmd::bench::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("weir: {e}");
            ExitCode::from(1)
        }
    }
}
