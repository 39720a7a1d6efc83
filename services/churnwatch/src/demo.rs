//! `churnwatch demo`: a synthetic order feed through the whole scoring core, in process, with
//! a summary of what a retention team would look at.

use std::time::Instant;

use anyhow::Result;
use churnwatch_core::{RiskLevel, Stage};
use churnwatch_synth::{SynthConfig, generate};
use comfy_table::{Cell, CellAlignment, Table, presets::UTF8_FULL_CONDENSED};

use crate::eval::{CoreArgs, score};
use crate::progress;

/// Arguments of `churnwatch demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Customers in the synthetic feed.
    #[arg(long, default_value_t = 5_000)]
    pub customers: u64,
    /// Months of history in the feed.
    #[arg(long, default_value_t = 24)]
    pub months: u32,
    /// Random seed of the feed.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Customers shown in the at-risk list.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    #[command(flatten)]
    pub core: CoreArgs,
}

impl Default for DemoArgs {
    fn default() -> Self {
        Self {
            customers: 5_000,
            months: 24,
            seed: 7,
            top: 10,
            core: CoreArgs {
                reporting_currency: churnwatch_core::money::CurrencyCode::default(),
                fx_rates: churnwatch_synth::FX_RATES_TO_USD.to_owned(),
                refit_days: 30,
            },
        }
    }
}

/// Formats minor units of a two-decimal currency.
pub fn money(minor: i64, currency: churnwatch_core::money::CurrencyCode) -> String {
    let exp = currency.exponent();
    if exp == 0 {
        return format!("{minor} {currency}");
    }
    let scale = 10_i64.pow(exp);
    let sign = if minor < 0 { "-" } else { "" };
    format!(
        "{sign}{}.{:0width$} {currency}",
        minor.abs() / scale,
        minor.abs() % scale,
        width = exp as usize
    )
}

/// Runs `churnwatch demo`.
pub fn run(args: &DemoArgs) -> Result<()> {
    let parse = args.core.parse_config()?;
    let config = SynthConfig {
        malformed_rate: 0.01,
        duplicate_rate: 0.01,
        ..SynthConfig::new(args.customers, args.months, args.seed)
    };
    eprintln!(
        "churnwatch demo: {} synthetic customers over {} months, through the scoring core in process",
        args.customers, args.months
    );
    let spinner = progress::spinner("simulating");
    let data = generate(&config)?;
    spinner.finish_and_clear();

    let bar = progress::items(data.len() as u64, "lines");
    let started = Instant::now();
    let lines = data.events().map(|e| {
        let mut line = Vec::with_capacity(512);
        e.append_json(&mut line);
        Ok(line)
    });
    let as_of = churnwatch_core::Timestamp(data.end().unix_timestamp());
    let (run, as_of, _) = crate::offline::run_core(
        lines,
        &parse,
        churnwatch_core::Model::default(),
        Some(as_of),
        args.core.refit_every_secs(),
        &bar,
    )?;
    let elapsed = started.elapsed().as_secs_f64();
    let report = score(&run, data.truth(), as_of);

    println!(
        "{} lines in {:.2} s ({:.0} lines/s, {} model refits): {} events applied, {} duplicates ignored, {} rejected",
        run.lines,
        elapsed,
        run.lines as f64 / elapsed,
        run.refits.len(),
        run.applied,
        run.duplicates,
        run.rejected.values().sum::<u64>()
    );
    if !run.rejected.is_empty() {
        let list: Vec<String> = run
            .rejected
            .iter()
            .map(|(c, n)| format!("{c} {n}"))
            .collect();
        println!("rejected by reason: {}", list.join(", "));
    }
    println!(
        "{} risk-level changes and {} stage changes emitted\n",
        run.risk_changes, run.stage_changes
    );

    println!("Customers per stage as of {as_of}:");
    let mut stages = Table::new();
    stages.load_preset(UTF8_FULL_CONDENSED);
    stages.set_header(Stage::ALL.iter().map(|s| s.as_str()));
    stages.add_row(Stage::ALL.iter().map(|s| {
        Cell::new(run.finals.values().filter(|a| a.stage == *s).count())
            .set_alignment(CellAlignment::Right)
    }));
    println!("{stages}");
    let levels: Vec<String> = RiskLevel::ALL
        .iter()
        .map(|l| {
            format!(
                "{l} {}",
                run.finals.values().filter(|a| a.risk_level == *l).count()
            )
        })
        .collect();
    println!("Risk levels: {}\n", levels.join(", "));

    let mut at_risk: Vec<_> = run
        .finals
        .iter()
        .filter(|(_, a)| a.risk_level >= RiskLevel::High && a.stage != Stage::Lost)
        .collect();
    at_risk.sort_by(|a, b| b.1.value_at_risk.cmp(&a.1.value_at_risk).then(a.0.cmp(b.0)));
    println!(
        "Top {} customers at risk (not yet lost) by value at risk:",
        args.top.min(at_risk.len())
    );
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header([
        "customer",
        "level",
        "score",
        "stage",
        "value at risk",
        "why",
    ]);
    let currency = args.core.reporting_currency;
    for (id, a) in at_risk.iter().take(args.top) {
        let why: Vec<String> = a
            .reasons
            .iter()
            .map(|r| format!("{}: {}", r.code, r.detail()))
            .collect();
        table.add_row(vec![
            Cell::new(id),
            Cell::new(a.risk_level),
            Cell::new(format!("{:.2}", a.risk_score)),
            Cell::new(a.stage),
            Cell::new(money(a.value_at_risk, currency)).set_alignment(CellAlignment::Right),
            Cell::new(why.join("\n")),
        ]);
    }
    println!("{table}");
    println!(
        "\nAgainst the generator's truth: precision {:.3}, recall {:.3} (recall on churns >= 60 days old {:.3}); median lead time {} days",
        report.precision,
        report.recall,
        report.recall_detectable,
        report
            .lead_time_days
            .median
            .map_or("-".to_owned(), |d| format!("{d:+.0}"))
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_is_formatted_with_the_currency_exponent() {
        let usd = churnwatch_core::money::CurrencyCode::parse("USD").unwrap();
        let jpy = churnwatch_core::money::CurrencyCode::parse("JPY").unwrap();
        assert_eq!(money(123_456, usd), "1234.56 USD");
        assert_eq!(money(-5, usd), "-0.05 USD");
        assert_eq!(money(1200, jpy), "1200 JPY");
    }
}
