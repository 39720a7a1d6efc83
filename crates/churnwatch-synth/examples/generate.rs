//! Writes a data set as JSON Lines to stdout and its truth CSV to a file.
//!
//! `cargo run --release -p churnwatch-synth --example generate -- CUSTOMERS MONTHS SEED TRUTH.csv [MALFORMED_RATE DUPLICATE_RATE]`

use std::io::{BufWriter, Write};
use std::time::Instant;

use churnwatch_synth::{SynthConfig, generate};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.to_owned());
    let config = SynthConfig {
        customers: arg(0, "1000").parse()?,
        months: arg(1, "24").parse()?,
        seed: arg(2, "42").parse()?,
        malformed_rate: arg(4, "0").parse()?,
        duplicate_rate: arg(5, "0").parse()?,
        ..SynthConfig::default()
    };
    let began = Instant::now();
    let dataset = generate(&config)?;
    let generated = began.elapsed();
    let stdout = std::io::stdout();
    dataset.write_jsonl(BufWriter::new(stdout.lock()))?;
    let mut truth = BufWriter::new(std::fs::File::create(arg(3, "truth.csv"))?);
    dataset.write_truth_csv(&mut truth)?;
    truth.flush()?;
    eprintln!(
        "generated in {generated:?}, written in {:?}: {:?}",
        began.elapsed() - generated,
        dataset.stats()
    );
    Ok(())
}
