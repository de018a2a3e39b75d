//! `weir simulate`: deterministic generated input for tests and benchmarks.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Generates events as JSON lines, the same for the same seed.
///
/// readings: {"sensor_id": 0..999, "ts": epoch ms from 1700000000000 every 10 ms,
/// "value": uniform in [0, 100) with 3 decimals, "flag": boolean}.
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct SimulateArgs {
    /// What to generate.
    pub kind: Kind,
    /// How many events.
    #[arg(long, default_value_t = 1000)]
    pub count: u64,
    /// Seed of the generator.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Where to write; standard output by default.
    #[arg(long, default_value = "-")]
    pub output: String,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Kind {
    Readings,
}

pub fn run(a: SimulateArgs) -> Result<ExitCode, String> {
    let out: Box<dyn Write> = if a.output == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(File::create(&a.output).map_err(|e| format!("{}: {e}", a.output))?)
    };
    let mut w = BufWriter::with_capacity(1 << 16, out);
    match a.kind {
        Kind::Readings => readings(&mut w, a.count, a.seed),
    }
    .and_then(|_| w.flush())
    .map_err(|e| format!("{}: {e}", a.output))?;
    Ok(ExitCode::SUCCESS)
}

fn readings(w: &mut impl Write, count: u64, seed: u64) -> std::io::Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for i in 0..count {
        let sensor: u32 = rng.random_range(0..1000);
        let milli: u32 = rng.random_range(0..100_000);
        let flag: bool = rng.random();
        let ts = 1_700_000_000_000u64 + 10 * i;
        writeln!(
            w,
            "{{\"sensor_id\":{sensor},\"ts\":{ts},\"value\":{}.{:03},\"flag\":{flag}}}",
            milli / 1000,
            milli % 1000
        )?;
    }
    Ok(())
}
