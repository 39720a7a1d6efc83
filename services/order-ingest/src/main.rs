//! The `order-ingest` binary: reads configuration, sets up tracing and signals, and runs the
//! service.

/// Services allocate and free many small buffers per message; mimalloc serves them faster than
/// the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;

use anyhow::{Context, Result};
use churnwatch_runtime::{Overrides, ServiceArgs, shutdown_on_signals};
use clap::Parser;
use order_ingest::{IngestConfig, IngestStats};

/// Consumes raw purchase events from the `orders` topic, validates and normalises them (money
/// in minor units of the reporting currency, RFC 3339 times), produces accepted events keyed by
/// customer_id to `orders-accepted`, and sends every rejected message to `orders-dlq` with its
/// reason code, message, source topic/partition/offset and original bytes.
///
/// Configuration is layered: built-in defaults < the TOML file given with --config < the
/// CHURNWATCH_* environment variables < these flags.
#[derive(Debug, Parser)]
#[command(name = "order-ingest", version, about, long_about)]
struct Args {
    #[command(flatten)]
    common: ServiceArgs,
    /// Consumer group id [default: churnwatch-order-ingest].
    #[arg(long, env = "CHURNWATCH_GROUP_ID")]
    group_id: Option<String>,
    /// Topic raw events are read from [default: orders].
    #[arg(long, env = "CHURNWATCH_ORDERS_TOPIC")]
    orders_topic: Option<String>,
    /// Topic accepted events are written to, keyed by customer_id [default: orders-accepted].
    #[arg(long, env = "CHURNWATCH_ACCEPTED_TOPIC")]
    accepted_topic: Option<String>,
    /// Dead-letter topic for rejected messages [default: orders-dlq].
    #[arg(long, env = "CHURNWATCH_DLQ_TOPIC")]
    dlq_topic: Option<String>,
    /// Partitions of topics created at start-up [default: 4].
    #[arg(long, env = "CHURNWATCH_PARTITIONS")]
    partitions: Option<i32>,
    /// Currency customer money is kept in (ISO 4217) [default: USD].
    #[arg(long, env = "CHURNWATCH_REPORTING_CURRENCY")]
    reporting_currency: Option<String>,
    /// Exchange rates into the reporting currency, e.g. "EUR=1.08,GBP=1.27".
    #[arg(long, env = "CHURNWATCH_FX_RATES")]
    fx_rates: Option<String>,
}

fn overrides(a: &Args) -> Result<Overrides> {
    let mut o = a.common.overrides().map_err(anyhow::Error::msg)?;
    o.set("kafka.partitions", a.partitions)
        .set("kafka.topics.orders", a.orders_topic.as_ref())
        .set("kafka.topics.accepted", a.accepted_topic.as_ref())
        .set("kafka.topics.dlq", a.dlq_topic.as_ref())
        .set("group_id", a.group_id.as_ref())
        .set("reporting_currency", a.reporting_currency.as_ref())
        .set("fx_rates", a.fx_rates.as_ref());
    Ok(o)
}

fn main() -> Result<()> {
    let args = Args::parse();
    // The guard outlives the runtime: dropping it last exports the final spans.
    let (config, _tracing): (IngestConfig, _) = args
        .common
        .configure(overrides(&args)?, "order-ingest")
        .map_err(anyhow::Error::msg)?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let shutdown = shutdown_on_signals();
        config
            .parse_config()
            .map_err(|e| anyhow::anyhow!("invalid configuration:\n  - {}", e.join("\n  - ")))?;
        let stats = Arc::new(IngestStats::default());
        let lag = churnwatch_kafka::ConsumerLag::new(&config.group_id);
        let readiness = args
            .common
            .start_admin(
                "127.0.0.1:9101",
                vec![Box::new(stats.clone()), Box::new(lag.clone())],
                "waiting for the Kafka brokers",
                shutdown.clone(),
            )
            .await
            .map_err(anyhow::Error::msg)?;
        if !churnwatch_kafka::bootstrap_topics_waiting(&config.kafka, &shutdown).await? {
            return Ok(());
        }
        let (consumer, context) = churnwatch_kafka::consumer(
            &config.kafka,
            "order-ingest",
            &config.group_id,
            &[&config.kafka.topics.orders],
        )?;
        let producer = churnwatch_kafka::producer(&config.kafka, "order-ingest")?;
        lag.watch(&context);
        readiness.set_ready();
        let worker = tokio::task::spawn_blocking(move || {
            order_ingest::run(&config, &consumer, &context, &producer, &shutdown, &stats)
        });
        worker.await.context("the ingest worker panicked")??;
        Ok(())
    })
}
