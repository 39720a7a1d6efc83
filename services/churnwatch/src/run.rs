//! `churnwatch run` and `churnwatch backfill`: the services in one process against real Kafka,
//! and importing history into the `orders` topic.

use std::fs::File;
use std::io::{BufRead, BufReader};
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
    let mut messages: Vec<(String, Vec<u8>)> = if is_csv {
        csv_orders(file)?
    } else {
        json_lines(file)?
    };
    // Scoring on the event clock reads time from the events: a file sorted by customer (as
    // many exports are) would move each partition's watermark past later customers' orders.
    // Stable, so a customer's events keep their order within one time; lines without a
    // readable time go last (order-ingest dead-letters them).
    let out_of_order = sort_by_event_time(&mut messages);
    if out_of_order > 0 {
        eprintln!(
            "sorted {} events by occurred_at ({out_of_order} were out of time order)",
            messages.len()
        );
    }
    let producer = churnwatch_kafka::producer(&kafka, "backfill")?;
    let bar = progress::items(messages.len() as u64, "events");
    bar.set_message("importing");
    let sent = feed(
        &producer,
        &kafka.topics.orders,
        messages.into_iter(),
        &bar,
        shutdown,
    )?;
    bar.finish_and_clear();
    eprintln!(
        "imported {sent} events ({len} bytes) from {} into {}",
        args.file.display(),
        kafka.topics.orders
    );
    Ok(())
}

/// Returns an event's `occurred_at`, if it has a readable one.
fn event_time(message: &[u8]) -> Option<churnwatch_core::Timestamp> {
    #[derive(serde::Deserialize)]
    struct Time<'a> {
        #[serde(borrow)]
        occurred_at: Option<&'a str>,
    }
    let t: Time<'_> = serde_json::from_slice(message).ok()?;
    churnwatch_core::Timestamp::parse_rfc3339(t.occurred_at?)
}

/// Sorts messages by event time (stable; unreadable times last) and returns how many stood
/// before an earlier event.
fn sort_by_event_time(messages: &mut [(String, Vec<u8>)]) -> usize {
    let key = |m: &(String, Vec<u8>)| event_time(&m.1).map_or(i64::MAX, |t| t.0);
    let mut newest = i64::MIN;
    let mut out_of_order = 0;
    for m in messages.iter() {
        let t = key(m);
        out_of_order += usize::from(t < newest);
        newest = newest.max(t);
    }
    if out_of_order > 0 {
        messages.sort_by_cached_key(key);
    }
    out_of_order
}

/// Reads JSON lines, keyed by their customer_id when it can be read (ingest judges the rest).
fn json_lines(file: File) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
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
        out.push((key, line.into_bytes()));
    }
    Ok(out)
}

/// Converts a CSV of orders into `order` events. A missing required column is an error for the
/// whole file; bad values are left for order-ingest to dead-letter with their reason.
fn csv_orders(file: File) -> Result<Vec<(String, Vec<u8>)>> {
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
    let mut out = Vec::new();
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
        out.push((key, serde_json::to_vec(&event)?));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_become_order_events_with_stable_ids() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.csv");
        std::fs::write(&path, "customer_id,order_id,occurred_at,total,currency,channel\nc1,o9,2025-01-02T03:04:05Z,12.50,EUR,web\n").unwrap();
        let rows = csv_orders(File::open(&path).unwrap()).unwrap();
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
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.csv");
        std::fs::write(&path, "customer_id,total\nc1,3\n").unwrap();
        let err = csv_orders(File::open(&path).unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("order_id, occurred_at, currency"), "{err}");
    }

    fn line(customer: &str, at: &str) -> (String, Vec<u8>) {
        let json = format!(r#"{{"type":"order","customer_id":"{customer}","occurred_at":"{at}"}}"#);
        (customer.to_owned(), json.into_bytes())
    }

    #[test]
    fn a_feed_in_customer_order_is_sorted_by_event_time_stably() {
        let mut m = vec![
            line("a", "2025-01-03T00:00:00Z"),
            line("a", "2025-03-01T00:00:00Z"),
            (String::new(), b"not json".to_vec()),
            line("b", "2025-01-01T00:00:00Z"),
            line("b", "2025-03-01T00:00:00Z"),
            line("c", "2025-02-01T00:00:00+01:00"),
        ];
        // b, b and c stand after a later time (the unreadable line counts as the latest).
        assert_eq!(sort_by_event_time(&mut m), 3);
        let keys: Vec<&str> = m.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["b", "a", "c", "a", "b", ""]);
        // Already in time order: nothing to do.
        assert_eq!(sort_by_event_time(&mut m), 0);
    }
}
