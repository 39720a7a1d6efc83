//! The `scoring` binary: reads configuration, sets up tracing and signals, opens the state
//! store and runs the service.

/// Services allocate and free many small buffers per message; mimalloc serves them faster than
/// the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;

use anyhow::{Context, Result};
use churnwatch_runtime::{Overrides, ServiceArgs, shutdown_on_signals};
use clap::Parser;
use scoring::{ScoringConfig, ScoringStats};

/// Consumes accepted events from `orders-accepted`, folds them into per-customer state kept in
/// sled (one tree per partition), evaluates customers after their events and when their
/// silence timers fall due, and emits `customer-risk` and `customer-stage` events when the risk
/// level or the lifecycle stage changes, plus full profiles to the compacted
/// `customer-profiles` topic. Offsets are committed only after the state they cover is durable.
///
/// Configuration is layered: built-in defaults < the TOML file given with --config < the
/// CHURNWATCH_* environment variables < these flags. The state directory can always be
/// rebuilt: stop scoring, empty --state-dir, reset the group's offsets on orders-accepted to
/// the earliest, and start it again. SIGTERM/SIGINT stop it cleanly; SIGHUP refits the models
/// now (`churnwatch fit --state-dir` does it for a stopped store).
#[derive(Debug, Parser)]
#[command(name = "scoring", version, about, long_about)]
struct Args {
    #[command(flatten)]
    common: ServiceArgs,
    #[command(subcommand)]
    command: Option<Command>,
    /// Consumer group id [default: churnwatch-scoring].
    #[arg(long, env = "CHURNWATCH_GROUP_ID")]
    group_id: Option<String>,
    /// Directory of the sled state store; one process owns it [default: ./churnwatch-state].
    #[arg(long, env = "CHURNWATCH_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// sled page cache in MiB, the bulk of scoring's memory once the states outgrow it
    /// [default: 256].
    #[arg(long, env = "CHURNWATCH_STATE_CACHE_MB")]
    state_cache_mb: Option<u64>,
    /// Clock for evaluations: wall (live) or event (replay: the event-time watermark) [default: wall].
    #[arg(long, env = "CHURNWATCH_CLOCK", value_parser = ["wall", "event"])]
    clock: Option<String>,
    /// How late an event may arrive behind the newest one, e.g. 1h or 2d [default: 1h].
    #[arg(long, env = "CHURNWATCH_ALLOWED_LATENESS")]
    allowed_lateness: Option<String>,
    /// Interval between population refits of the BG/NBD and Gamma-Gamma models, e.g. 6h, or
    /// "off" [default: 6h]. `kill -HUP <pid>` refits at once.
    #[arg(long, env = "CHURNWATCH_REFIT_INTERVAL")]
    refit_interval: Option<String>,
    /// With --clock event: event time between population refits of every model, e.g. 30d,
    /// or "off" [default: 30d]. A replay passes months of event time in minutes.
    #[arg(long, env = "CHURNWATCH_EVENT_REFIT_INTERVAL")]
    event_refit_interval: Option<String>,
    /// Partitions of topics created at start-up [default: 4].
    #[arg(long, env = "CHURNWATCH_PARTITIONS")]
    partitions: Option<i32>,
    /// Input topic of accepted events [default: orders-accepted].
    #[arg(long, env = "CHURNWATCH_ACCEPTED_TOPIC")]
    accepted_topic: Option<String>,
    /// Topic of risk-level changes [default: customer-risk].
    #[arg(long, env = "CHURNWATCH_RISK_TOPIC")]
    risk_topic: Option<String>,
    /// Topic of stage changes [default: customer-stage].
    #[arg(long, env = "CHURNWATCH_STAGE_TOPIC")]
    stage_topic: Option<String>,
    /// Compacted topic of customer profiles [default: customer-profiles].
    #[arg(long, env = "CHURNWATCH_PROFILES_TOPIC")]
    profiles_topic: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Prints every customer state in the store as JSON lines (partition, then customer id
    /// order), for inspection and comparisons. Run it while scoring is stopped.
    Export {
        /// Directory of the sled state store.
        #[arg(long, env = "CHURNWATCH_STATE_DIR")]
        state_dir: PathBuf,
    },
}

fn export(dir: &std::path::Path) -> Result<()> {
    use std::io::Write;
    anyhow::ensure!(
        dir.is_dir(),
        "state directory {} does not exist",
        dir.display()
    );
    let store = churnwatch_store::Store::open(dir)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for p in store.partitions() {
        for state in store.partition(p)?.states() {
            serde_json::to_writer(&mut out, &state?)?;
            out.write_all(b"\n")?;
        }
    }
    out.flush()?;
    Ok(())
}

/// An interval flag's value: "off" is none.
fn interval_or_off(v: &str) -> serde_json::Value {
    if v == "off" {
        serde_json::Value::Null
    } else {
        serde_json::json!(v)
    }
}

fn overrides(a: &Args) -> Result<Overrides> {
    let mut o = a.common.overrides().map_err(anyhow::Error::msg)?;
    o.set("kafka.partitions", a.partitions)
        .set("kafka.topics.accepted", a.accepted_topic.as_ref())
        .set("kafka.topics.risk", a.risk_topic.as_ref())
        .set("kafka.topics.stage", a.stage_topic.as_ref())
        .set("kafka.topics.profiles", a.profiles_topic.as_ref())
        .set("group_id", a.group_id.as_ref())
        .set("state_dir", a.state_dir.as_ref())
        .set("state_cache_mb", a.state_cache_mb)
        .set("clock", a.clock.as_ref())
        .set("allowed_lateness", a.allowed_lateness.as_ref())
        // "off" disables periodic refits (refit on demand only).
        .set(
            "refit_interval",
            a.refit_interval.as_deref().map(interval_or_off),
        )
        .set(
            "event_refit_interval",
            a.event_refit_interval.as_deref().map(interval_or_off),
        );
    Ok(o)
}

fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(Command::Export { state_dir }) = &args.command {
        return export(state_dir);
    }
    // The guard outlives the runtime: dropping it last exports the final spans.
    let (config, _tracing): (ScoringConfig, _) = args
        .common
        .configure(overrides(&args)?, "scoring")
        .map_err(anyhow::Error::msg)?;
    config
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid configuration:\n  - {}", e.join("\n  - ")))?;
    let store =
        churnwatch_store::Store::open_with_cache(&config.state_dir, config.state_cache_mb << 20)?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let shutdown = shutdown_on_signals();
        let stats = std::sync::Arc::new(ScoringStats::default());
        let lag = churnwatch_kafka::ConsumerLag::new(&config.group_id);
        let readiness = args
            .common
            .start_admin(
                "127.0.0.1:9102",
                vec![
                    Box::new(stats.clone()),
                    Box::new(lag.clone()),
                    Box::new(scoring::StoreMetrics(store.clone())),
                ],
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
            "scoring",
            &config.group_id,
            &[&config.kafka.topics.accepted],
        )?;
        let producer = churnwatch_kafka::producer(&config.kafka, "scoring")?;
        lag.watch(&context);
        readiness.set_ready();
        scoring::refit_on_sighup(&stats);
        let worker = tokio::task::spawn_blocking(move || {
            scoring::run(
                &config, &consumer, &context, &producer, &store, &shutdown, &stats,
            )
        });
        worker.await.context("the scoring worker panicked")??;
        Ok(())
    })
}
