//! The all-in-one `churnwatch` binary: the demo, synthetic data generation and offline
//! evaluation of the domain core against ground truth.

/// Services allocate and free many small buffers per message; mimalloc serves them faster than
/// the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod backtest;
mod bench;
mod bench_query;
mod demo;
mod eval;
mod fit;
mod footprint;
mod generate;
mod offline;
mod pipeline;
mod progress;
mod query_cli;
mod run;
mod stdout;
mod time_sort;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// churnwatch watches an e-commerce order stream and tells you which customers are slipping
/// away and why, where each customer stands in its lifecycle, what churn costs, and which
/// customers are profitable.
///
/// With no command, runs the demo: an in-process Kafka-protocol broker, order-ingest and
/// scoring, fed by a synthetic order stream, with a live summary of stages, risk and the
/// customers most at risk, until Ctrl-C.
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
    /// Runs the whole pipeline on an in-process broker with a synthetic feed and a live summary.
    Demo(demo::DemoArgs),
    /// Writes a deterministic synthetic event stream (JSON lines) and its ground truth.
    Generate(generate::GenerateArgs),
    /// Replays an event file through the core and scores it against a ground-truth file.
    Eval(eval::EvalArgs),
    /// Measures the churn-risk score on a purchase history: replays it to each cut-off and
    /// compares the score with baselines on who placed no order in the horizon after.
    Backtest(backtest::BacktestArgs),
    /// Runs order-ingest and scoring in one process against real Kafka brokers.
    Run(run::RunArgs),
    /// Imports history (JSON lines or a CSV of orders) into the orders topic.
    Backfill(run::BackfillArgs),
    /// Measures throughput (core, bare relay, pipeline) and latency against a broker.
    Bench(bench::BenchArgs),
    /// Measures the query service: view rebuild rate, GetCustomer latency at a fixed rate and
    /// the most requests per second.
    BenchQuery(bench_query::BenchQueryArgs),
    /// Measures scoring's state per customer (sled bytes on disk, resident memory).
    Footprint(footprint::FootprintArgs),
    /// Refits the BG/NBD, Gamma-Gamma and value-tier models of a scoring store now.
    Fit(fit::FitArgs),
    /// Asks the query service's gRPC API: a customer, at-risk lists, stage counts, export.
    Query(query_cli::QueryArgs),
}

fn main() -> std::process::ExitCode {
    match run_command(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // The reader of the output went away (`| head`): nothing is wrong.
        Err(e) if stdout::is_broken_pipe(&e) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:?}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run_command(cli: Cli) -> Result<()> {
    // Signals are caught by a small async runtime; the commands themselves run on threads.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let shutdown = runtime.block_on(async { churnwatch_runtime::shutdown_on_signals() });
    let quiet = "warn,rdkafka=error";
    match cli.command {
        None => {
            churnwatch_runtime::init_tracing(churnwatch_runtime::LogFormat::Pretty, quiet)
                .map_err(anyhow::Error::msg)?;
            demo::run(&demo::DemoArgs::default(), &shutdown)
        }
        Some(Command::Demo(args)) => {
            churnwatch_runtime::init_tracing(churnwatch_runtime::LogFormat::Pretty, quiet)
                .map_err(anyhow::Error::msg)?;
            demo::run(&args, &shutdown)
        }
        Some(Command::Generate(args)) => generate::run(&args),
        Some(Command::Query(args)) => query_cli::run(&args, &shutdown),
        Some(Command::BenchQuery(args)) => {
            churnwatch_runtime::init_tracing(churnwatch_runtime::LogFormat::Pretty, quiet)
                .map_err(anyhow::Error::msg)?;
            bench_query::run(&args, &shutdown)
        }
        Some(Command::Footprint(args)) => footprint::run(&args),
        Some(Command::Fit(args)) => {
            churnwatch_runtime::init_tracing(churnwatch_runtime::LogFormat::Pretty, "warn")
                .map_err(anyhow::Error::msg)?;
            fit::run(&args)
        }
        Some(Command::Eval(args)) => eval::run(&args),
        Some(Command::Backtest(args)) => backtest::run(&args),
        Some(Command::Run(args)) => {
            churnwatch_runtime::init_tracing(
                churnwatch_runtime::LogFormat::Pretty,
                "info,rdkafka=warn",
            )
            .map_err(anyhow::Error::msg)?;
            // SIGHUP (a refit) is listened for on this runtime.
            let _runtime = runtime.enter();
            run::run(&args, &shutdown)
        }
        Some(Command::Bench(args)) => {
            churnwatch_runtime::init_tracing(
                churnwatch_runtime::LogFormat::Pretty,
                "warn,rdkafka=error",
            )
            .map_err(anyhow::Error::msg)?;
            bench::run(&args, &shutdown)
        }
        Some(Command::Backfill(args)) => {
            churnwatch_runtime::init_tracing(churnwatch_runtime::LogFormat::Pretty, "warn")
                .map_err(anyhow::Error::msg)?;
            run::backfill(&args, &shutdown)
        }
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
