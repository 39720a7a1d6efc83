//! `churnwatch bench-query`: the query service under load. Produces synthetic profiles into a
//! fresh profile topic, starts the query service on an empty view and times its rebuild from
//! the topic, then measures `GetCustomer` latency at a fixed request rate (open loop: latency
//! is taken from when each request was due, so a stall is not hidden) and the most requests
//! per second a closed loop of concurrent clients gets.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use churnwatch_core::output::{Profile, Reason};
use churnwatch_core::profit::ValueTier;
use churnwatch_core::{RiskLevel, Stage, Timestamp};
use churnwatch_kafka::KafkaConfig;
use churnwatch_proto::v1;
use churnwatch_proto::v1::customer_query_client::CustomerQueryClient;
use churnwatch_runtime::CancellationToken;
use tonic::transport::Channel;

use crate::pipeline::{EmbeddedBroker, feed};
use crate::stdout::outln;

/// Arguments of `churnwatch bench-query`.
#[derive(Debug, clap::Args)]
pub struct BenchQueryArgs {
    /// Kafka bootstrap servers (e.g. a local tansu); without it, an embedded broker.
    #[arg(long, env = "CHURNWATCH_BROKERS")]
    pub brokers: Option<String>,
    /// Profiles to load.
    #[arg(long, default_value_t = 1_000_000)]
    pub profiles: u64,
    /// Partitions of the profile topic.
    #[arg(long, default_value_t = 2)]
    pub partitions: i32,
    /// GetCustomer requests per second in the latency phase.
    #[arg(long, default_value_t = 10_000)]
    pub rate: u64,
    /// Seconds each load phase runs.
    #[arg(long, default_value_t = 20)]
    pub secs: u64,
    /// Connections (HTTP/2 channels) the load is spread over.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Requests in flight at once in the maximum-throughput phase.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Give up on the load and rebuild phases after this many seconds.
    #[arg(long, default_value_t = 1800)]
    pub timeout_secs: u64,
}

/// A deterministic pseudo-random sequence (splitmix64) for ids and figures.
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

fn customer_id(i: u64) -> String {
    format!("bench-{i:07}")
}

/// Returns a profile shaped like the ones scoring publishes, with varied figures.
fn synthetic_profile(i: u64, mix: &mut Mix) -> Profile {
    let r = mix.next();
    let level = [
        RiskLevel::Low,
        RiskLevel::Low,
        RiskLevel::Medium,
        RiskLevel::High,
        RiskLevel::Critical,
    ][(r % 5) as usize];
    let stage = Stage::ALL[((r >> 8) % 6) as usize];
    let tier = [ValueTier::A, ValueTier::B, ValueTier::C, ValueTier::D][((r >> 16) % 4) as usize];
    let margin = ((r >> 24) % 200_000) as i64 - 20_000;
    let at = Timestamp(1_735_689_600 - ((r >> 40) % 30) as i64 * 86_400);
    Profile {
        customer_id: customer_id(i),
        assessed_at: at,
        version: 1 + (r >> 48) % 40,
        stage,
        stage_since: Some(at.plus(-90 * 86_400)),
        risk_level: level,
        risk_score: (r % 1000) as f64 / 1000.0,
        reasons: vec![Reason {
            code: "overdue".into(),
            detail: format!(
                "no order for {} days; usually orders every 30 days",
                40 + r % 100
            ),
            contribution: 0.4,
        }],
        p_alive: Some(0.5),
        expected_purchases: 1.5,
        clv_12m: margin.max(0),
        value_at_risk: (margin.max(0) as f64 * 0.6) as i64,
        margin_12m: margin,
        revenue_12m: margin.abs() * 3,
        orders_12m: (r % 12) as u32,
        contacts_12m: (r % 4) as u32,
        value_tier: tier,
        divest: tier == ValueTier::D && r.is_multiple_of(3),
        orders: (r % 30) as u32 + 1,
        revenue: margin.abs() * 5,
        first_seen: Some(at.plus(-400 * 86_400)),
        first_order_at: Some(at.plus(-400 * 86_400)),
        last_order_at: Some(at.plus(-40 * 86_400)),
        typical_interval_days: Some(30.0),
        acquisition_source: Some(["search", "referral", "ads"][(r % 3) as usize].into()),
        first_channel: Some("web".into()),
        first_categories: vec!["coffee".into()],
        last_retention: None,
        retention_actions: vec![],
        risk_episodes: Vec::new(),
        stage_history: vec![],
        margin_breakdown: Default::default(),
    }
}

/// Returns the value at quantile `q` of sorted values.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted
        .get(((sorted.len().max(1) - 1) as f64 * q).round() as usize)
        .copied()
        .unwrap_or(f64::NAN)
}

/// Runs `churnwatch bench-query`.
pub fn run(args: &BenchQueryArgs, shutdown: &CancellationToken) -> Result<()> {
    anyhow::ensure!(args.profiles >= 1, "--profiles must be at least 1");
    anyhow::ensure!(
        args.rate >= 1 && args.connections >= 1 && args.concurrency >= 1,
        "--rate, --connections and --concurrency must be at least 1"
    );
    let prefix = format!("bench-query-{}", std::process::id());
    let mut kafka = KafkaConfig {
        partitions: args.partitions,
        client_id: "churnwatch-bench-query".into(),
        ..KafkaConfig::default()
    };
    kafka.topics.profiles = format!("{prefix}-profiles");
    let _embedded = match &args.brokers {
        Some(b) => {
            kafka.brokers = b.clone();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let mut only_profiles = kafka.clone();
            only_profiles.topics = churnwatch_kafka::Topics {
                profiles: kafka.topics.profiles.clone(),
                ..churnwatch_kafka::Topics::default()
            };
            runtime.block_on(churnwatch_kafka::bootstrap_topics(
                &only_profiles,
                Duration::from_secs(30),
            ))?;
            None
        }
        None => {
            let broker = EmbeddedBroker::start(&kafka)?;
            kafka.brokers = broker.bootstrap_servers();
            Some(broker)
        }
    };
    eprintln!(
        "bench-query: {} profiles into {} on {}",
        args.profiles, kafka.topics.profiles, kafka.brokers
    );

    // Load the topic.
    let producer = churnwatch_kafka::producer(&kafka, "bench-query")?;
    let bar = crate::progress::items(args.profiles, "profiles");
    bar.set_message("producing");
    let started = Instant::now();
    let mut mix = Mix(7);
    let messages = (0..args.profiles).map(|i| {
        let p = synthetic_profile(i, &mut mix);
        (
            p.customer_id.clone(),
            serde_json::to_vec(&p).expect("a profile serializes"),
        )
    });
    let fed = feed(&producer, &kafka.topics.profiles, messages, &bar, shutdown)?;
    bar.finish_and_clear();
    let produce_secs = started.elapsed().as_secs_f64();
    outln!(
        "produced {fed} profiles in {produce_secs:.1} s ({:.0} profiles/s)",
        fed as f64 / produce_secs
    );
    if shutdown.is_cancelled() {
        return Ok(());
    }

    // Rebuild: the query service starts on an empty view.
    let view_dir = tempfile::tempdir()?;
    let config = query::QueryConfig {
        kafka: kafka.clone(),
        grpc_addr: "127.0.0.1:0".into(),
        view_dir: view_dir.path().to_owned(),
        ..query::QueryConfig::default()
    };
    let view = query::View::open(&config.view_dir, config.view_cache_mb << 20)?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let stats = Arc::new(query::ViewStats::default());
    let stop = shutdown.child_token();
    let server =
        crate::pipeline::spawn_query(config, listener, view.clone(), stats.clone(), stop.clone())?;
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let rebuild_started = Instant::now();
    let bar = crate::progress::items(fed, "profiles");
    bar.set_message("rebuilding the view");
    let channels: Vec<Channel> = client_rt.block_on(async {
        let mut out = Vec::new();
        for _ in 0..args.connections {
            let endpoint = Channel::from_shared(format!("http://{addr}"))?;
            out.push(endpoint.connect().await?);
        }
        anyhow::Ok(out)
    })?;
    loop {
        bar.set_position(stats.consumed.load(Ordering::Relaxed));
        let serving = client_rt.block_on(async {
            tonic_health::pb::health_client::HealthClient::new(channels[0].clone())
                .check(tonic_health::pb::HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .map(|r| {
                    r.into_inner().status()
                        == tonic_health::pb::health_check_response::ServingStatus::Serving
                })
                .unwrap_or(false)
        });
        if serving {
            break;
        }
        if shutdown.is_cancelled() || server.is_finished() {
            stop.cancel();
            return server
                .join()
                .map_err(|_| anyhow::anyhow!("query panicked"))?;
        }
        if Instant::now() > deadline {
            stop.cancel();
            bail!("the view did not catch up within --timeout-secs");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bar.finish_and_clear();
    let rebuild_secs = rebuild_started.elapsed().as_secs_f64();
    let loaded = view.len()?;
    outln!(
        "view rebuilt from the topic: {loaded} profiles in {rebuild_secs:.1} s ({:.0} profiles/s); view on disk {:.1} MiB",
        stats.consumed.load(Ordering::Relaxed) as f64 / rebuild_secs,
        dir_bytes(view_dir.path()) as f64 / 1048576.0
    );
    if loaded < fed {
        bail!("the view holds {loaded} of {fed} profiles after catching up");
    }

    let result = client_rt.block_on(async {
        let latency = open_loop(&channels, args, fed, shutdown).await?;
        let max = closed_loop(&channels, args, fed, shutdown).await?;
        anyhow::Ok((latency, max))
    });
    stop.cancel();
    server
        .join()
        .map_err(|_| anyhow::anyhow!("query panicked"))?
        .context("query failed")?;
    let (latency, max) = result?;
    outln!("{latency}\n{max}");
    Ok(())
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// GetCustomer at a fixed rate: every request is sent when due, on its own task, and its
/// latency is counted from that due time.
async fn open_loop(
    channels: &[Channel],
    args: &BenchQueryArgs,
    profiles: u64,
    shutdown: &CancellationToken,
) -> Result<String> {
    let total = args.rate * args.secs;
    let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(f64, bool)>();
    let started = tokio::time::Instant::now();
    let mut mix = Mix(11);
    let mut sent = 0u64;
    while sent < total && !shutdown.is_cancelled() {
        let due = started + interval.mul_f64(sent as f64);
        tokio::time::sleep_until(due).await;
        // Send everything already due (the timer is coarser than the interval at high rates).
        let now = tokio::time::Instant::now();
        while sent < total && started + interval.mul_f64(sent as f64) <= now {
            let due = started + interval.mul_f64(sent as f64);
            let id = customer_id(mix.next() % profiles);
            let mut client =
                CustomerQueryClient::new(channels[sent as usize % channels.len()].clone());
            let tx = tx.clone();
            tokio::spawn(async move {
                let ok = client
                    .get_customer(v1::GetCustomerRequest { customer_id: id })
                    .await
                    .is_ok();
                let _ = tx.send((due.elapsed().as_secs_f64() * 1000.0, ok));
            });
            sent += 1;
        }
    }
    drop(tx);
    let mut latencies = Vec::with_capacity(sent as usize);
    let mut errors = 0u64;
    while let Some((ms, ok)) = rx.recv().await {
        latencies.push(ms);
        errors += u64::from(!ok);
    }
    let secs = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    Ok(format!(
        "GetCustomer at {} requests/s ({} sent over {:.1} s, {} errors): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        args.rate,
        latencies.len(),
        secs,
        errors,
        quantile(&latencies, 0.5),
        quantile(&latencies, 0.99),
        quantile(&latencies, 1.0)
    ))
}

/// GetCustomer as fast as `concurrency` requests in flight allow.
async fn closed_loop(
    channels: &[Channel],
    args: &BenchQueryArgs,
    profiles: u64,
    shutdown: &CancellationToken,
) -> Result<String> {
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let until = tokio::time::Instant::now() + Duration::from_secs(args.secs);
    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..args.concurrency {
        let mut client = CustomerQueryClient::new(channels[w % channels.len()].clone());
        let (done, errors, shutdown) = (done.clone(), errors.clone(), shutdown.clone());
        workers.push(tokio::spawn(async move {
            let mut mix = Mix(1000 + w as u64);
            while tokio::time::Instant::now() < until && !shutdown.is_cancelled() {
                let id = customer_id(mix.next() % profiles);
                match client
                    .get_customer(v1::GetCustomerRequest { customer_id: id })
                    .await
                {
                    Ok(_) => done.fetch_add(1, Ordering::Relaxed),
                    Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    for w in workers {
        w.await?;
    }
    let secs = started.elapsed().as_secs_f64();
    let n = done.load(Ordering::Relaxed);
    Ok(format!(
        "GetCustomer maximum: {:.0} requests/s ({n} in {secs:.1} s with {} in flight over {} connections, {} errors)",
        n as f64 / secs,
        args.concurrency,
        args.connections,
        errors.load(Ordering::Relaxed)
    ))
}
