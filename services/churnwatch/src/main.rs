//! The all-in-one `churnwatch` binary: the demo, synthetic data generation and offline
//! evaluation of the domain core against ground truth.

mod demo;
mod eval;
mod generate;
mod offline;
mod progress;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// churnwatch watches an e-commerce order stream and tells you which customers are slipping
/// away and why, where each customer stands in its lifecycle, what churn costs, and which
/// customers are profitable.
///
/// With no command, runs the demo: a synthetic order feed through the whole scoring core, with
/// a summary of stages, risk and the customers most at risk.
#[derive(Debug, Parser)]
#[command(
    name = "churnwatch",
    version,
    about,
    long_about,
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs a synthetic feed through the scoring core and prints a live-style summary.
    Demo(demo::DemoArgs),
    /// Writes a deterministic synthetic event stream (JSON lines) and its ground truth.
    Generate(generate::GenerateArgs),
    /// Replays an event file through the core and scores it against a ground-truth file.
    Eval(eval::EvalArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        None => demo::run(&demo::DemoArgs::default()),
        Some(Command::Demo(args)) => demo::run(&args),
        Some(Command::Generate(args)) => generate::run(&args),
        Some(Command::Eval(args)) => eval::run(&args),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
