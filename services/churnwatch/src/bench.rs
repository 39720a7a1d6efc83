//! `churnwatch bench`: the load harness. Against one broker it measures, in the same run, the
//! core alone, a bare relay (consume and re-produce the same messages with no processing: the
//! transport's own ceiling) and the full pipeline (order-ingest + scoring), and reports
//! events/s and their ratios; `--latency-rate` adds produce-to-risk-event latency at a fixed rate.
//! Every loop is bounded in count and time.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use churnwatch_core::replay::{Ignore, Replay};
use churnwatch_core::{Model, Timestamp, parse_event};
use churnwatch_kafka::KafkaConfig;
use churnwatch_kafka::rdkafka::Message;
use churnwatch_kafka::rdkafka::consumer::Consumer;
use churnwatch_kafka::rdkafka::producer::FutureRecord;
use churnwatch_runtime::CancellationToken;
use churnwatch_synth::{SynthConfig, generate};
use order_ingest::IngestConfig;
use scoring::{ClockKind, ScoringConfig};

use crate::pipeline::{Pipeline, feed};
use crate::progress;
use crate::stdout::outln;

/// Arguments of `churnwatch bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Kafka bootstrap servers of the broker to measure against (e.g. a local tansu).
    #[arg(long, env = "CHURNWATCH_BROKERS")]
    pub brokers: String,
    /// Synthetic customers (about 20 events each over 24 months).
    #[arg(long, default_value_t = 10_000)]
    pub customers: u64,
    /// Partitions of the benchmark topics.
    #[arg(long, default_value_t = 2)]
    pub partitions: i32,
    /// Also measure produce-to-risk-event latency at this many events per second.
    #[arg(long)]
    pub latency_rate: Option<u64>,
    /// Seconds the latency phase sends for.
    #[arg(long, default_value_t = 20)]
    pub latency_secs: u64,
    /// Give up on any phase after this many seconds.
    #[arg(long, default_value_t = 900)]
    pub timeout_secs: u64,
}

fn topics(prefix: &str) -> churnwatch_kafka::Topics {
    churnwatch_kafka::Topics {
        orders: format!("{prefix}-orders"),
        accepted: format!("{prefix}-accepted"),
        dlq: format!("{prefix}-dlq"),
        risk: format!("{prefix}-risk"),
        stage: format!("{prefix}-stage"),
        profiles: format!("{prefix}-profiles"),
    }
}

/// Runs `churnwatch bench`.
pub fn run(args: &BenchArgs, shutdown: &CancellationToken) -> Result<()> {
    let run_id = std::process::id();
    let kafka = KafkaConfig {
        brokers: args.brokers.clone(),
        partitions: args.partitions,
        topics: topics(&format!("bench{run_id}")),
        client_id: "churnwatch-bench".into(),
        ..KafkaConfig::default()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(churnwatch_kafka::bootstrap_topics(
        &kafka,
        Duration::from_secs(30),
    ))?;
    let limit = Duration::from_secs(args.timeout_secs);

    let spinner = progress::spinner("simulating");
    let data = generate(&SynthConfig::new(args.customers, 24, 11))?;
    let lines: Vec<(String, Vec<u8>)> = data
        .events()
        .map(|e| {
            let mut line = Vec::with_capacity(512);
            e.append_json(&mut line);
            (e.customer_id(), line)
        })
        .collect();
    spinner.finish_and_clear();
    let n = lines.len() as u64;
    let fx = churnwatch_core::money::FxTable::parse_rates(
        churnwatch_core::money::CurrencyCode::default(),
        churnwatch_synth::FX_RATES_TO_USD,
    )
    .map_err(anyhow::Error::msg)?;
    let parse = churnwatch_core::ParseConfig {
        fx,
        ..churnwatch_core::ParseConfig::default()
    };

    // 1. The core alone: parse + apply + evaluate, in process.
    let started = Instant::now();
    let mut replay = Replay::new(Model::default(), None);
    for (_, line) in &lines {
        if let Ok(e) = parse_event(line, Timestamp(i64::MAX / 4), &parse) {
            replay.apply(&e, &mut Ignore);
        }
    }
    let core_rate = n as f64 / started.elapsed().as_secs_f64();
    eprintln!(
        "core only: {n} events in {:.2} s = {core_rate:.0} events/s",
        started.elapsed().as_secs_f64()
    );

    // Load the input once; both transport phases read the same messages.
    let producer = churnwatch_kafka::producer(&kafka, "bench-feed")?;
    let bar = progress::items(n, "events");
    bar.set_message("loading");
    feed(
        &producer,
        &kafka.topics.orders,
        lines.iter().cloned(),
        &bar,
        shutdown,
    )?;
    bar.finish_and_clear();

    // 2. The bare relay: consume orders and re-produce each message unchanged.
    let relay_rate = relay(&kafka, n, limit, shutdown)?;
    eprintln!("bare relay: {relay_rate:.0} events/s");

    // 3. The pipeline: ingest and scoring from the same loaded topic.
    let state = tempfile::tempdir()?;
    let ingest = IngestConfig {
        kafka: kafka.clone(),
        group_id: format!("bench{run_id}-ingest"),
        fx_rates: churnwatch_synth::FX_RATES_TO_USD.into(),
        ..IngestConfig::default()
    };
    let scoring = ScoringConfig {
        kafka: kafka.clone(),
        group_id: format!("bench{run_id}-scoring"),
        state_dir: state.path().to_owned(),
        clock: ClockKind::Event,
        refit_interval: None,
        event_refit_interval: None,
        ..ScoringConfig::default()
    };
    let stop = CancellationToken::new();
    let started = Instant::now();
    let pipeline = Pipeline::start(ingest, scoring, false, &stop)?;
    let drained = wait(limit, shutdown, || pipeline.caught_up(n));
    let secs = started.elapsed().as_secs_f64();
    let applied = pipeline.scoring.applied.load(Ordering::Relaxed);
    stop.cancel();
    pipeline.join()?;
    if !drained {
        bail!(
            "the pipeline did not finish {n} events within {} s",
            args.timeout_secs
        );
    }
    let pipeline_rate = n as f64 / secs;
    outln!("events: {n} ({applied} applied by scoring)");
    outln!("core only:      {core_rate:>10.0} events/s");
    outln!("bare relay:     {relay_rate:>10.0} events/s");
    outln!("pipeline:       {pipeline_rate:>10.0} events/s  ({secs:.1} s end to end)");
    outln!(
        "pipeline / relay = {:.2}, pipeline / core = {:.3}",
        pipeline_rate / relay_rate,
        pipeline_rate / core_rate
    );
    if let Some(rate) = args.latency_rate {
        latency(&kafka, run_id, rate, args.latency_secs, limit, shutdown)?;
    }
    Ok(())
}

fn wait(limit: Duration, shutdown: &CancellationToken, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline && !shutdown.is_cancelled() {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn relay(
    kafka: &KafkaConfig,
    n: u64,
    limit: Duration,
    shutdown: &CancellationToken,
) -> Result<f64> {
    let (consumer, context) = churnwatch_kafka::consumer(
        kafka,
        "bench-relay",
        &format!("relay{}", std::process::id()),
        &[&kafka.topics.orders],
    )?;
    let producer = churnwatch_kafka::producer(kafka, "bench-relay")?;
    // Brokers like tansu do not create topics on first use; the bench's DLQ topic exists and is
    // otherwise idle during this phase.
    let target = kafka.topics.dlq.clone();
    let started = Instant::now();
    let mut relayed = 0u64;
    let never = || false;
    while relayed < n && started.elapsed() < limit && !shutdown.is_cancelled() {
        let (batch, _) = churnwatch_kafka::poll_batch(
            &consumer,
            &context,
            2_000,
            Duration::from_millis(100),
            &never,
        );
        let make = |i: usize| {
            let m = &batch[i];
            FutureRecord::to(&target)
                .key(m.key().unwrap_or_default())
                .payload(m.payload().unwrap_or_default())
        };
        let give_up = || shutdown.is_cancelled() || started.elapsed() > limit;
        if !churnwatch_kafka::send_all(&producer, batch.len(), &make, &give_up) {
            bail!("the relay could not deliver within {} s", limit.as_secs());
        }
        churnwatch_kafka::store_batch_offsets(&consumer, &batch);
        relayed += batch.len() as u64;
    }
    if relayed < n {
        bail!("the relay moved only {relayed} of {n} events");
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

/// Sends orders at `rate` events/s and measures the time from an order's produce to the
/// `customer-risk` event it causes. Every probe is a new customer with three orders 30 days
/// apart, the last 90 days ago, sent back to back: after the third, the wall clock finds the
/// customer overdue, the risk level rises from low and a risk event is published. Latency is
/// measured from the produce of the third order.
fn latency(
    kafka: &KafkaConfig,
    run_id: u32,
    rate: u64,
    secs: u64,
    limit: Duration,
    shutdown: &CancellationToken,
) -> Result<()> {
    let kafka = KafkaConfig {
        topics: topics(&format!("lat{run_id}")),
        ..kafka.clone()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(churnwatch_kafka::bootstrap_topics(
        &kafka,
        Duration::from_secs(30),
    ))?;
    let state = tempfile::tempdir()?;
    let ingest = IngestConfig {
        kafka: kafka.clone(),
        group_id: format!("lat{run_id}-ingest"),
        batch_timeout: Duration::from_millis(5),
        ..IngestConfig::default()
    };
    let scoring = ScoringConfig {
        kafka: kafka.clone(),
        group_id: format!("lat{run_id}-scoring"),
        state_dir: state.path().to_owned(),
        clock: ClockKind::Wall,
        refit_interval: None,
        event_refit_interval: None,
        batch_timeout: Duration::from_millis(5),
        ..ScoringConfig::default()
    };
    let stop = CancellationToken::new();
    let pipeline = Pipeline::start(ingest, scoring, false, &stop)?;
    let (watcher, _) = churnwatch_kafka::consumer(
        &kafka,
        "bench-watch",
        &format!("lat{run_id}-watch"),
        &[&kafka.topics.risk],
    )?;
    let producer = churnwatch_kafka::producer(&kafka, "bench-latency")?;
    // Let the services join their groups before the clock starts.
    std::thread::sleep(Duration::from_secs(3));
    let total = rate * secs;
    let mut sent_at: HashMap<String, Instant> = HashMap::with_capacity(total as usize);
    let mut latencies: Vec<f64> = Vec::with_capacity(total as usize);
    let started = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let mut next = Instant::now();
    let mut sent = 0u64;
    let mut pending = Vec::new();
    let days_ago = |days: i64| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        Timestamp(t - days * 86_400).to_string()
    };
    let probes = (total / 3).max(1);
    let mut sending = Duration::ZERO;
    while (sent < probes || latencies.len() < sent as usize)
        && started.elapsed() < limit
        && !shutdown.is_cancelled()
    {
        while sent < probes && Instant::now() >= next {
            let customer = format!("lat-{run_id}-{sent}");
            for (n, ago) in [150, 120, 90].into_iter().enumerate() {
                let json = format!(
                    r#"{{"type":"order","event_id":"{customer}-{n}","order_id":"o-{customer}-{n}","customer_id":"{customer}","occurred_at":"{}","currency":"USD","total":"25.00"}}"#,
                    days_ago(ago)
                );
                if n == 2 {
                    sent_at.insert(customer.clone(), Instant::now());
                }
                pending.push(churnwatch_kafka::send(
                    &producer,
                    FutureRecord::to(&kafka.topics.orders)
                        .key(customer.as_bytes())
                        .payload(json.as_bytes()),
                ));
            }
            sent += 1;
            next += interval * 3;
            if sent == probes {
                sending = started.elapsed();
            }
        }
        // Take every risk event already fetched; pause briefly only when idle.
        while let Some(polled) = watcher.poll(Duration::ZERO) {
            if let Ok(m) = polled
                && let Some(start) = m
                    .key()
                    .and_then(|k| std::str::from_utf8(k).ok())
                    .and_then(|k| sent_at.remove(k))
            {
                latencies.push(start.elapsed().as_secs_f64() * 1000.0);
            }
        }
        if sent == probes || Instant::now() < next {
            std::thread::sleep(Duration::from_micros(200));
        }
        if pending.len() > 1_000 {
            futures::executor::block_on(futures::future::join_all(std::mem::take(&mut pending)));
        }
    }
    let achieved = (3 * sent) as f64 / sending.as_secs_f64().max(1e-3);
    stop.cancel();
    pipeline.join()?;
    watcher.unsubscribe();
    latencies.sort_by(f64::total_cmp);
    let q = |p: f64| {
        latencies
            .get(((latencies.len().max(1) - 1) as f64 * p) as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    outln!(
        "latency at {rate} events/s ({sent} probes of 3 events, {achieved:.0} events/s achieved, {} measured): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        latencies.len(),
        q(0.5),
        q(0.99),
        q(1.0)
    );
    if latencies.len() < sent as usize {
        bail!(
            "only {} of {sent} latency probes came back",
            latencies.len()
        );
    }
    Ok(())
}
