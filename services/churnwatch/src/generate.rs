//! `churnwatch generate`: a deterministic synthetic event stream on standard output (or a
//! file) and its ground truth as CSV.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use churnwatch_synth::{SynthConfig, generate};
use clap::Args;

use crate::progress;

/// Arguments of `churnwatch generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Customers to simulate.
    #[arg(long, default_value_t = 10_000)]
    pub customers: u64,
    /// Months of history, starting at --start.
    #[arg(long, default_value_t = 24)]
    pub months: u32,
    /// Random seed; the same seed gives byte-identical output.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// First day of the simulated period (YYYY-MM-DD, UTC).
    #[arg(long, default_value = "2024-01-01", value_parser = parse_date)]
    pub start: time::Date,
    /// Share of extra malformed lines (0..1), each labelled in the generator with its reject reason.
    #[arg(long, default_value_t = 0.0)]
    pub malformed_rate: f64,
    /// Share of events delivered twice (0..1), as Kafka redeliveries would be.
    #[arg(long, default_value_t = 0.0)]
    pub duplicate_rate: f64,
    /// Where to write the ground truth CSV (archetype, churn and reactivation times, campaigns).
    #[arg(long)]
    pub truth: Option<PathBuf>,
    /// How purchases are drawn: `archetypes` (regulars, decliners, silent churners, category
    /// droppers, reactivators, one-time buyers, ... whose churn signals carry information) or
    /// `bgnbd` (the BG/NBD process with the parameters of --bgnbd, whose best possible score
    /// is known).
    #[arg(long, value_enum, default_value_t = ProcessArg::Archetypes)]
    pub process: ProcessArg,
    /// The BG/NBD process's parameters r,alpha,a,b (alpha in weeks), for --process bgnbd.
    #[arg(long, value_parser = parse_bgnbd, default_value = "0.3,6,1,3")]
    pub bgnbd: churnwatch_synth::BgNbdProcess,
    /// Where to write the events; standard output when absent.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

/// The purchase process of `--process`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProcessArg {
    /// The archetypes.
    Archetypes,
    /// The BG/NBD process.
    Bgnbd,
}

pub fn parse_bgnbd(s: &str) -> Result<churnwatch_synth::BgNbdProcess, String> {
    let v: Vec<f64> = s
        .split(',')
        .map(|p| p.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{s:?} is not four numbers r,alpha,a,b: {e}"))?;
    match v[..] {
        [r, alpha, a, b] if v.iter().all(|x| x.is_finite() && *x > 0.0) => {
            Ok(churnwatch_synth::BgNbdProcess { r, alpha, a, b })
        }
        _ => Err(format!(
            "{s:?} is not four positive numbers r,alpha,a,b such as 0.3,6,1,3"
        )),
    }
}

fn parse_date(s: &str) -> Result<time::Date, String> {
    time::Date::parse(s, time::macros::format_description!("[year]-[month]-[day]"))
        .map_err(|e| format!("{s:?} is not a date like 2024-01-01: {e}"))
}

/// Returns the generator configuration these arguments describe.
pub fn config(args: &GenerateArgs) -> SynthConfig {
    SynthConfig {
        customers: args.customers,
        months: args.months,
        seed: args.seed,
        start: args.start,
        malformed_rate: args.malformed_rate,
        duplicate_rate: args.duplicate_rate,
        process: match args.process {
            ProcessArg::Archetypes => churnwatch_synth::Process::Archetypes,
            ProcessArg::Bgnbd => churnwatch_synth::Process::BgNbd(args.bgnbd),
        },
    }
}

/// Runs `churnwatch generate`.
pub fn run(args: &GenerateArgs) -> Result<()> {
    let spinner = progress::spinner("simulating");
    let data = generate(&config(args)).context("cannot generate the data set")?;
    spinner.finish_and_clear();

    let out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(
            File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
        ),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut out = BufWriter::with_capacity(1 << 20, out);
    let bar = progress::items(data.len() as u64, "lines");
    bar.set_message("writing");
    let mut line = Vec::with_capacity(1024);
    for (n, event) in data.events().enumerate() {
        line.clear();
        event.append_json(&mut line);
        line.push(b'\n');
        out.write_all(&line).context("cannot write the events")?;
        if n % 8192 == 0 {
            bar.set_position(n as u64);
        }
    }
    out.flush().context("cannot write the events")?;
    bar.finish_and_clear();

    if let Some(path) = &args.truth {
        let file =
            File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        data.write_truth_csv(BufWriter::new(file))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let stats = data.stats();
    eprintln!(
        "generated {} lines for {} customers ({} orders, {} duplicates, {} malformed), {} to {}",
        stats.lines,
        stats.customers,
        stats.orders,
        stats.duplicate_lines,
        stats.malformed_lines,
        data.start().date(),
        data.end().date()
    );
    Ok(())
}
