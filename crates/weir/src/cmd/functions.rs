//! `weir functions`: the built-in function reference.

use std::process::ExitCode;

use clap::Args;
use weir_lang::functions::{EKUIPER_DIFFERENCES, FUNCTIONS};

/// Lists the built-in scalar functions with their arity and a description.
#[derive(Args)]
pub struct FunctionsArgs {
    /// Only this category: math, string, time, json or conditional.
    #[arg(long)]
    pub category: Option<String>,
}

pub fn run(a: FunctionsArgs) -> Result<ExitCode, String> {
    for f in FUNCTIONS
        .iter()
        .filter(|f| a.category.as_deref().is_none_or(|c| c == f.category))
    {
        let arity = match (f.min_args, f.max_args) {
            (a, usize::MAX) => format!("{a}+"),
            (a, b) if a == b => a.to_string(),
            (a, b) => format!("{a}-{b}"),
        };
        println!("{:<12} {:<16} {:<5} {}", f.category, f.name, arity, f.doc);
    }
    println!("aggregates   count sum avg min max stddev stddev_pop variance var_pop percentile median first_value last_value regr_slope regr_intercept collect");
    println!(
        "per key      changed(x) lag(x [, n [, default]]) delta(x)  [OVER (PARTITION BY ...)]"
    );
    if a.category.is_none() {
        println!("\nNamesakes of eKuiper's functions that mean something else here, and why:");
        for (names, why) in EKUIPER_DIFFERENCES {
            println!("  {names}: {why}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
