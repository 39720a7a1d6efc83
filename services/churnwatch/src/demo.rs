//! `churnwatch demo` (the default command): the whole pipeline on an in-process broker, fed
//! by the synthetic generator, with a live summary of what a retention team would look at.

use std::io::IsTerminal;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Result;
use churnwatch_core::output::Profile;
use churnwatch_core::{RiskLevel, Stage};
use churnwatch_kafka::KafkaConfig;
use churnwatch_runtime::CancellationToken;
use churnwatch_synth::{SynthConfig, generate};
use comfy_table::{Cell, CellAlignment, Table, presets::UTF8_FULL_CONDENSED};
use order_ingest::IngestConfig;
use scoring::{ClockKind, ScoringConfig};

use crate::eval::CoreArgs;
use crate::pipeline::{EmbeddedBroker, Pipeline, feed};
use crate::progress;
use crate::stdout::{out, outln};

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
    /// Partitions of every topic.
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// Exit once the whole feed went through the pipeline, printing the final summary
    /// (otherwise the summary stays on screen until Ctrl-C).
    #[arg(long)]
    pub once: bool,
    /// Address the query service's gRPC API listens on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub grpc_addr: String,
    /// Address of the admin endpoint: /metrics of all services, /healthz, /readyz.
    #[arg(long, default_value = "127.0.0.1:9100")]
    pub admin_addr: String,
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
            partitions: 4,
            once: false,
            grpc_addr: "127.0.0.1:50051".into(),
            admin_addr: "127.0.0.1:9100".into(),
            core: CoreArgs {
                reporting_currency: churnwatch_core::money::CurrencyCode::default(),
                fx_rates: churnwatch_synth::FX_RATES_TO_USD.to_owned(),
                refit_days: 30,
            },
        }
    }
}

/// Formats minor units of a currency.
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
pub fn run(args: &DemoArgs, shutdown: &CancellationToken) -> Result<()> {
    args.core.parse_config()?;
    let kafka = KafkaConfig {
        partitions: args.partitions,
        client_id: "churnwatch-demo".into(),
        ..KafkaConfig::default()
    };
    let broker = EmbeddedBroker::start(&kafka)?;
    let kafka = KafkaConfig {
        brokers: broker.bootstrap_servers(),
        ..kafka
    };
    let state = tempfile::tempdir()?;
    let ingest = IngestConfig {
        kafka: kafka.clone(),
        reporting_currency: args.core.reporting_currency.code().to_owned(),
        fx_rates: args.core.fx_rates.clone(),
        ..IngestConfig::default()
    };
    // The feed is history: evaluate on event time, as a replay would, and refit every 30 days
    // of event time (wall-time refits mean nothing for a replay squeezed into a minute).
    let scoring = ScoringConfig {
        kafka: kafka.clone(),
        state_dir: state.path().to_owned(),
        clock: ClockKind::Event,
        refit_interval: None,
        ..ScoringConfig::default()
    };
    eprintln!(
        "churnwatch demo: embedded Kafka broker at {}, {} synthetic customers over {} months",
        kafka.brokers, args.customers, args.months
    );
    let mut pipeline = Pipeline::start(ingest, scoring, true, shutdown)?;
    let view = tempfile::tempdir()?;
    let api = pipeline.start_query(
        query::QueryConfig {
            kafka: kafka.clone(),
            grpc_addr: args.grpc_addr.clone(),
            view_dir: view.path().to_owned(),
            ..query::QueryConfig::default()
        },
        shutdown,
    )?;
    let admin = pipeline.start_admin(&args.admin_addr, shutdown)?;
    eprintln!(
        "gRPC API (churnwatch.v1.CustomerQuery) at {api}; try: churnwatch query --addr {api} at-risk --level high"
    );
    eprintln!("metrics at http://{admin}/metrics");

    let spinner = progress::spinner("simulating");
    let data = generate(&SynthConfig {
        malformed_rate: 0.01,
        duplicate_rate: 0.01,
        ..SynthConfig::new(args.customers, args.months, args.seed)
    })?;
    spinner.finish_and_clear();
    let producer = churnwatch_kafka::producer(&kafka, "feeder")?;
    let bar = progress::items(data.len() as u64, "events");
    bar.set_message("feeding");
    let started = Instant::now();
    let lines = data.events().map(|e| {
        let mut line = Vec::with_capacity(512);
        e.append_json(&mut line);
        (e.customer_id(), line)
    });
    let fed = feed(&producer, &kafka.topics.orders, lines, &bar, shutdown)?;
    bar.finish_and_clear();
    let fed_secs = started.elapsed().as_secs_f64();
    eprintln!("fed {fed} events in {fed_secs:.1} s; processing");

    let live = std::io::stdout().is_terminal() && !args.once;
    let mut last_draw = Instant::now() - Duration::from_secs(10);
    let mut done_at = None;
    loop {
        if shutdown.is_cancelled() || !pipeline.running() {
            break;
        }
        if done_at.is_none() && pipeline.caught_up(fed) {
            done_at = Some(started.elapsed().as_secs_f64());
            if args.once {
                break;
            }
        }
        if live && last_draw.elapsed() >= Duration::from_secs(1) {
            out!(
                "\x1b[2J\x1b[H{}",
                summary(
                    &pipeline,
                    args,
                    fed,
                    started.elapsed().as_secs_f64(),
                    done_at
                )
            );
            outln!(
                "\ngRPC API at {api}: churnwatch query --addr {api} at-risk --level high\n(Ctrl-C to stop)"
            );
            last_draw = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let elapsed = done_at.unwrap_or(started.elapsed().as_secs_f64());
    let text = summary(&pipeline, args, fed, elapsed, done_at);
    shutdown.cancel();
    pipeline_result(pipeline)?;
    out!("{text}");
    Ok(())
}

fn pipeline_result(pipeline: Pipeline) -> Result<()> {
    pipeline.join()
}

/// Renders the summary a retention team looks at.
pub fn summary(
    pipeline: &Pipeline,
    args: &DemoArgs,
    fed: u64,
    elapsed: f64,
    done_at: Option<f64>,
) -> String {
    use std::fmt::Write;
    let i = &pipeline.ingest;
    let s = &pipeline.scoring;
    let scored = s.applied.load(Ordering::Relaxed) + s.duplicates.load(Ordering::Relaxed);
    let mut out = String::new();
    let state = if done_at.is_some() {
        "all events processed"
    } else {
        "processing"
    };
    let _ = writeln!(
        out,
        "churnwatch: {state} - {fed} events fed, {} validated, {} scored ({} duplicates ignored), {:.0} events/s end to end",
        i.consumed.load(Ordering::Relaxed),
        scored,
        s.duplicates.load(Ordering::Relaxed),
        scored as f64 / elapsed.max(1e-3)
    );
    let rejected = i.rejected_by_reason();
    if !rejected.is_empty() {
        let list: Vec<String> = rejected.iter().map(|(c, n)| format!("{c} {n}")).collect();
        let _ = writeln!(out, "rejected to orders-dlq: {}", list.join(", "));
    }
    let _ = writeln!(
        out,
        "{} risk changes and {} stage changes published; {} silence timers fired; {} model refits\n",
        s.risk_events.load(Ordering::Relaxed),
        s.stage_events.load(Ordering::Relaxed),
        s.timers_fired.load(Ordering::Relaxed),
        s.refits.load(Ordering::Relaxed)
    );
    let stages = s.stages();
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(Stage::ALL.iter().map(|s| s.as_str()));
    table.add_row(Stage::ALL.iter().map(|st| {
        Cell::new(stages.get(st).copied().unwrap_or(0)).set_alignment(CellAlignment::Right)
    }));
    let _ = writeln!(out, "Customers per stage:\n{table}");
    let levels = s.levels();
    let list: Vec<String> = RiskLevel::ALL
        .iter()
        .map(|l| format!("{l} {}", levels.get(l).copied().unwrap_or(0)))
        .collect();
    let _ = writeln!(out, "Risk levels: {}", list.join(", "));
    let lost = |v: &std::sync::atomic::AtomicU64| {
        money(
            i64::try_from(v.load(Ordering::Relaxed)).unwrap_or(i64::MAX),
            args.core.reporting_currency,
        )
    };
    let _ = writeln!(
        out,
        "Customers lost: {}, costing {} over the next 12 months and {} over their lifetime\n",
        s.customers_lost.load(Ordering::Relaxed),
        lost(&s.lost_value),
        lost(&s.lost_lifetime_value)
    );

    let profiles = s.profiles.lock().unwrap_or_else(|p| p.into_inner());
    let mut at_risk: Vec<&Profile> = profiles
        .values()
        .filter(|p| p.risk_level >= RiskLevel::High && p.stage != Stage::Lost)
        .collect();
    at_risk.sort_by(|a, b| {
        b.value_at_risk
            .cmp(&a.value_at_risk)
            .then(a.customer_id.cmp(&b.customer_id))
    });
    let _ = writeln!(
        out,
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
    for p in at_risk.iter().take(args.top) {
        let why: Vec<String> = p
            .reasons
            .iter()
            .map(|r| format!("{}: {}", r.code, r.detail))
            .collect();
        table.add_row(vec![
            Cell::new(&p.customer_id),
            Cell::new(p.risk_level),
            Cell::new(format!("{:.2}", p.risk_score)),
            Cell::new(p.stage),
            Cell::new(money(p.value_at_risk, args.core.reporting_currency))
                .set_alignment(CellAlignment::Right),
            Cell::new(why.join("\n")),
        ]);
    }
    let _ = writeln!(out, "{table}");
    out
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
