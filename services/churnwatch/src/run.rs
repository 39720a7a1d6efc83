//! `churnwatch run` and `churnwatch backfill`: the services in one process against real Kafka,
//! and importing history into the `orders` topic.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use churnwatch_kafka::KafkaConfig;
use churnwatch_runtime::CancellationToken;
use order_ingest::IngestConfig;
use scoring::{ClockKind, ScoringConfig};

use crate::pipeline::{Pipeline, feed};
use crate::progress;
use crate::time_sort::TimeSorter;

/// Options naming the Kafka cluster.
#[derive(Debug, Clone, clap::Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers (host:port, comma-separated).
    #[arg(long, env = "CHURNWATCH_BROKERS")]
    pub brokers: String,
    /// Partitions of topics created at start-up.
    #[arg(long, env = "CHURNWATCH_PARTITIONS", default_value_t = 4)]
    pub partitions: i32,
    /// Extra librdkafka properties (KEY=VALUE, repeatable), e.g. security.protocol=SASL_SSL.
    #[arg(
        long = "kafka-property",
        value_name = "KEY=VALUE",
        env = "CHURNWATCH_KAFKA_PROPERTIES",
        value_delimiter = ','
    )]
    pub kafka_properties: Vec<String>,
}

impl KafkaArgs {
    fn config(&self) -> Result<KafkaConfig> {
        let mut properties = std::collections::BTreeMap::new();
        for p in &self.kafka_properties {
            let (k, v) = p
                .split_once('=')
                .with_context(|| format!("--kafka-property {p:?} must look like KEY=VALUE"))?;
            properties.insert(k.trim().to_owned(), v.trim().to_owned());
        }
        let config = KafkaConfig {
            brokers: self.brokers.clone(),
            partitions: self.partitions,
            properties,
            ..KafkaConfig::default()
        };
        config
            .validate()
            .map_err(|e| anyhow::anyhow!("invalid Kafka options: {}", e.join("; ")))?;
        Ok(config)
    }
}

/// Arguments of `churnwatch run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Directory of scoring's sled state store.
    #[arg(long, env = "CHURNWATCH_STATE_DIR", default_value = "churnwatch-state")]
    pub state_dir: PathBuf,
    /// sled page cache of scoring in MiB (the bulk of its memory once the states outgrow it).
    #[arg(long, env = "CHURNWATCH_STATE_CACHE_MB", default_value_t = ScoringConfig::default().state_cache_mb)]
    pub state_cache_mb: u64,
    /// Clock for evaluations: wall (live) or event (replay).
    #[arg(long, env = "CHURNWATCH_CLOCK", default_value = "wall", value_parser = ["wall", "event"])]
    pub clock: String,
    /// With --clock event: event time between population refits of every model (BG/NBD,
    /// Gamma-Gamma, value tiers, the risk model), e.g. 30d. `kill -HUP <pid>` refits at once.
    #[arg(long, env = "CHURNWATCH_EVENT_REFIT_INTERVAL", default_value = "30d", value_parser = humantime::parse_duration)]
    pub event_refit_interval: Duration,
    /// With --clock wall: interval between population refits, e.g. 6h.
    #[arg(long, env = "CHURNWATCH_REFIT_INTERVAL", default_value = "6h", value_parser = humantime::parse_duration)]
    pub refit_interval: Duration,
    /// Address the query service's gRPC API listens on.
    #[arg(long, env = "CHURNWATCH_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    pub grpc_addr: String,
    /// Address of the admin endpoint: /metrics of all services, /healthz, /readyz.
    #[arg(long, env = "CHURNWATCH_ADMIN_ADDR", default_value = "127.0.0.1:9100")]
    pub admin_addr: String,
    /// Directory of the query service's sled view (rebuilt from customer-profiles when empty).
    #[arg(long, env = "CHURNWATCH_VIEW_DIR", default_value = "churnwatch-view")]
    pub view_dir: PathBuf,
    /// Exchange rates into USD, the reporting currency, e.g. "EUR=1.08,GBP=1.27".
    #[arg(long, env = "CHURNWATCH_FX_RATES", default_value = "")]
    pub fx_rates: String,
}

/// Runs `churnwatch run` until Ctrl-C or SIGTERM.
pub fn run(args: &RunArgs, shutdown: &CancellationToken) -> Result<()> {
    let kafka = args.kafka.config()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if !runtime.block_on(churnwatch_kafka::bootstrap_topics_waiting(&kafka, shutdown))? {
        return Ok(());
    }
    let ingest = IngestConfig {
        kafka: kafka.clone(),
        fx_rates: args.fx_rates.clone(),
        ..IngestConfig::default()
    };
    ingest
        .parse_config()
        .map_err(|e| anyhow::anyhow!("invalid options: {}", e.join("; ")))?;
    let clock = if args.clock == "event" {
        ClockKind::Event
    } else {
        ClockKind::Wall
    };
    let scoring = ScoringConfig {
        kafka: kafka.clone(),
        state_dir: args.state_dir.clone(),
        state_cache_mb: args.state_cache_mb,
        clock,
        refit_interval: Some(args.refit_interval),
        event_refit_interval: Some(args.event_refit_interval),
        ..ScoringConfig::default()
    };
    let mut pipeline = Pipeline::start(ingest, scoring, false, shutdown)?;
    scoring::refit_on_sighup(&pipeline.scoring);
    let api = pipeline.start_query(
        query::QueryConfig {
            kafka: kafka.clone(),
            grpc_addr: args.grpc_addr.clone(),
            view_dir: args.view_dir.clone(),
            ..query::QueryConfig::default()
        },
        shutdown,
    )?;
    tracing::info!(addr = %api, "gRPC API listening");
    let admin = pipeline.start_admin(&args.admin_addr, shutdown)?;
    tracing::info!(addr = %admin, "admin endpoint listening: /metrics, /healthz, /readyz");
    let mut last = Instant::now();
    while !shutdown.is_cancelled() && pipeline.running() {
        std::thread::sleep(Duration::from_millis(200));
        if last.elapsed() >= Duration::from_secs(10) {
            last = Instant::now();
            let (i, s) = (&pipeline.ingest, &pipeline.scoring);
            tracing::info!(
                consumed = i.consumed.load(Ordering::Relaxed),
                rejected = i.rejected_total(),
                applied = s.applied.load(Ordering::Relaxed),
                duplicates = s.duplicates.load(Ordering::Relaxed),
                risk_events = s.risk_events.load(Ordering::Relaxed),
                stage_events = s.stage_events.load(Ordering::Relaxed),
                "progress"
            );
        }
    }
    shutdown.cancel();
    pipeline.join()
}

/// Arguments of `churnwatch backfill`.
#[derive(Debug, clap::Args)]
pub struct BackfillArgs {
    /// History to import: JSON lines (one input event per line, any type) or CSV of orders with
    /// columns customer_id, order_id, occurred_at, total, currency and optionally event_id,
    /// discount, cost, channel.
    #[arg(long)]
    pub file: PathBuf,
    /// Memory for sorting the history by event time, in MiB; a larger history is sorted on
    /// disk in runs of this size (an external merge sort).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..))]
    pub sort_memory_mb: u64,
    /// Directory for the sorted runs of a history larger than --sort-memory-mb [default: the
    /// system's temporary directory].
    #[arg(long)]
    pub sort_dir: Option<PathBuf>,
    #[command(flatten)]
    pub kafka: KafkaArgs,
}

/// Runs `churnwatch backfill`.
pub fn backfill(args: &BackfillArgs, shutdown: &CancellationToken) -> Result<()> {
    let kafka = args.kafka.config()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if !runtime.block_on(churnwatch_kafka::bootstrap_topics_waiting(&kafka, shutdown))? {
        return Ok(());
    }
    let file =
        File::open(&args.file).with_context(|| format!("cannot open {}", args.file.display()))?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let is_csv = args
        .file
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    // Scoring on the event clock reads time from the events: a file sorted by customer (as
    // many exports are) would move each partition's watermark past later customers' orders.
    // Stable, so a customer's events keep their order within one time; lines without a
    // readable time go last (order-ingest dead-letters them).
    let budget =
        usize::try_from(args.sort_memory_mb.saturating_mul(1024 * 1024)).unwrap_or(usize::MAX);
    let mut sorter = TimeSorter::new(budget, args.sort_dir.clone());
    let reading = progress::bytes(len);
    reading.set_message("reading");
    let input = reading.wrap_read(file);
    let mut emit = |key: String, payload: Vec<u8>| sorter.push(key, payload);
    if is_csv {
        csv_orders(input, &mut emit)?;
    } else {
        json_lines(input, &mut emit)?;
    }
    reading.finish_and_clear();
    let messages = sorter.finish()?;
    if messages.out_of_order > 0 {
        eprintln!(
            "sorting {} events by occurred_at ({} were out of time order{})",
            messages.messages,
            messages.out_of_order,
            if messages.runs_on_disk > 0 {
                format!(
                    "; {} sorted runs on disk, merged as they are sent",
                    messages.runs_on_disk
                )
            } else {
                String::new()
            }
        );
    }
    let producer = churnwatch_kafka::producer(&kafka, "backfill")?;
    let bar = progress::items(messages.messages, "events");
    bar.set_message("importing");
    let mut unreadable = None;
    let sent = feed(
        &producer,
        &kafka.topics.orders,
        messages.map_while(|m| m.map_err(|e| unreadable = Some(e)).ok()),
        &bar,
        shutdown,
    )?;
    bar.finish_and_clear();
    if let Some(e) = unreadable {
        return Err(e.context(format!("{sent} events were imported before the failure")));
    }
    eprintln!(
        "imported {sent} events ({len} bytes) from {} into {}",
        args.file.display(),
        kafka.topics.orders
    );
    Ok(())
}

/// What the readers hand each message to: its key and payload.
type Emit<'a> = dyn FnMut(String, Vec<u8>) -> Result<()> + 'a;

/// Reads JSON lines, keyed by their customer_id when it can be read (ingest judges the rest).
fn json_lines(file: impl Read, emit: &mut Emit<'_>) -> Result<()> {
    for (n, line) in BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("cannot read line {}", n + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let key = serde_json::from_str::<serde_json::Value>(&line)
            .ok()
            .and_then(|v| {
                v.get("customer_id")
                    .and_then(|c| c.as_str())
                    .map(str::to_owned)
            })
            .unwrap_or_default();
        emit(key, line.into_bytes())?;
    }
    Ok(())
}

/// Converts a CSV of orders into `order` events. A missing required column is an error for the
/// whole file; bad values are left for order-ingest to dead-letter with their reason.
fn csv_orders(file: impl Read, emit: &mut Emit<'_>) -> Result<()> {
    let mut reader = csv::Reader::from_reader(file);
    let headers = reader
        .headers()
        .context("cannot read the CSV header")?
        .clone();
    let column = |name: &str| headers.iter().position(|h| h.trim() == name);
    let required = [
        "customer_id",
        "order_id",
        "occurred_at",
        "total",
        "currency",
    ];
    let missing: Vec<&str> = required
        .iter()
        .copied()
        .filter(|c| column(c).is_none())
        .collect();
    if !missing.is_empty() {
        bail!(
            "the CSV lacks the column(s) {}; it needs {}",
            missing.join(", "),
            required.join(", ")
        );
    }
    let optional = ["event_id", "discount", "cost", "channel"];
    for (n, row) in reader.records().enumerate() {
        let row = row.with_context(|| format!("cannot read CSV row {}", n + 2))?;
        let get = |name: &str| {
            column(name)
                .and_then(|i| row.get(i))
                .map(str::trim)
                .filter(|v| !v.is_empty())
        };
        let mut event = serde_json::json!({ "type": "order" });
        for c in required.iter().chain(optional.iter()) {
            if let Some(v) = get(c) {
                event[*c] = serde_json::json!(v);
            }
        }
        if get("event_id").is_none() {
            // Deterministic, so importing the same file twice counts each order once.
            event["event_id"] =
                serde_json::json!(format!("backfill-{}", get("order_id").unwrap_or_default()));
        }
        let key = get("customer_id").unwrap_or_default().to_owned();
        emit(key, serde_json::to_vec(&event)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(csv: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let mut out = Vec::new();
        csv_orders(csv.as_bytes(), &mut |k, v| {
            out.push((k, v));
            Ok(())
        })?;
        Ok(out)
    }

    #[test]
    fn csv_rows_become_order_events_with_stable_ids() {
        let rows = rows("customer_id,order_id,occurred_at,total,currency,channel\nc1,o9,2025-01-02T03:04:05Z,12.50,EUR,web\n").unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].0, "c1");
        let v: serde_json::Value = serde_json::from_slice(&rows[0].1).unwrap();
        assert_eq!(v["type"], "order");
        assert_eq!(v["event_id"], "backfill-o9");
        assert_eq!(v["total"], "12.50");
        assert_eq!(v["channel"], "web");
    }

    #[test]
    fn a_csv_without_required_columns_names_them() {
        let err = rows("customer_id,total\nc1,3\n").unwrap_err().to_string();
        assert!(err.contains("order_id, occurred_at, currency"), "{err}");
    }
}
