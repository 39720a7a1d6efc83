//! Keeps the view in step with the `customer-profiles` topic: reads every partition from the
//! offset the view has reached (from the beginning into an empty view), applies each batch
//! atomically, and says when the view has caught up with the end offsets the topic had at
//! start-up.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use churnwatch_kafka::rdkafka::consumer::Consumer;
use churnwatch_kafka::rdkafka::{Message, Offset, TopicPartitionList};
use churnwatch_runtime::CancellationToken;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::QueryConfig;
use crate::view::{Incoming, View};

/// Counters of the query service (the materialiser's and the gRPC server's), shared with
/// whoever reports them.
#[derive(Debug, Default)]
pub struct ViewStats {
    /// Profile messages read.
    pub consumed: AtomicU64,
    /// Profiles written into the view.
    pub written: AtomicU64,
    /// Messages that are not profiles, skipped.
    pub invalid: AtomicU64,
    /// Requests, responses by code and latency of the gRPC server, by method.
    pub grpc: crate::grpc_telemetry::GrpcMetrics,
}

/// The view's figures for Prometheus, read at each scrape.
#[derive(Debug)]
pub struct ViewMetrics {
    /// The view.
    pub view: View,
    /// The materialiser's counters.
    pub stats: std::sync::Arc<ViewStats>,
}

impl prometheus_client::collector::Collector for ViewMetrics {
    fn encode(
        &self,
        mut enc: prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> std::fmt::Result {
        use churnwatch_runtime::metrics;
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        metrics::counter(
            &mut enc,
            "churnwatch_query_profiles_consumed",
            "Messages read from the profile topic.",
            n(&self.stats.consumed),
        )?;
        metrics::counter(
            &mut enc,
            "churnwatch_query_profiles_written",
            "Profiles written into the view.",
            n(&self.stats.written),
        )?;
        metrics::counter(
            &mut enc,
            "churnwatch_query_profiles_invalid",
            "Messages on the profile topic that were not profiles, skipped.",
            n(&self.stats.invalid),
        )?;
        if let Ok(stages) = self.view.stage_counts() {
            metrics::gauge_by(
                &mut enc,
                "churnwatch_customers_by_stage",
                "Customers per lifecycle stage, as the query view holds them.",
                "stage",
                stages
                    .into_iter()
                    .map(|(s, c)| (s.as_str().to_owned(), c as f64)),
            )?;
        }
        if let Ok(levels) = self.view.level_counts() {
            metrics::gauge_by(
                &mut enc,
                "churnwatch_customers_by_risk_level",
                "Customers per risk level, as the query view holds them.",
                "level",
                levels
                    .into_iter()
                    .map(|(l, c)| (l.as_str().to_owned(), c as f64)),
            )?;
        }
        metrics::gauge(
            &mut enc,
            "churnwatch_query_view_disk_bytes",
            "Bytes the sled view occupies on disk.",
            self.view.size_on_disk().unwrap_or(0) as f64,
        )?;
        metrics::counter(
            &mut enc,
            "churnwatch_query_changes_logged",
            "Risk-level and stage changes recorded in the view's change log.",
            self.view.next_change(),
        )?;
        self.stats.grpc.encode(&mut enc)
    }
}

/// Errors that stop the materialiser.
#[derive(Debug, thiserror::Error)]
pub enum MaterializeError {
    /// The view failed.
    #[error(transparent)]
    View(#[from] crate::view::ViewError),
    /// The Kafka client could not be created or assigned.
    #[error("profile consumer: {0}")]
    Kafka(#[from] churnwatch_kafka::rdkafka::error::KafkaError),
}

/// Returns the partitions of `topic`, waiting (with backoff) until the brokers answer and the
/// topic exists; `None` when `shutdown` comes first.
fn partitions_of(
    config: &QueryConfig,
    topic: &str,
    shutdown: &CancellationToken,
) -> Option<Vec<i32>> {
    let mut backoff = Duration::from_millis(500);
    loop {
        match churnwatch_kafka::partition_counts(&config.kafka, &[topic], Duration::from_secs(5)) {
            // Kafka numbers a topic's partitions from 0.
            Ok(counts) if counts.get(topic).is_some_and(|n| *n > 0) => {
                return Some((0..counts[topic]).collect());
            }
            Ok(_) => warn!(
                topic,
                "the profile topic does not exist yet; waiting for scoring to create it"
            ),
            Err(e) => warn!(error = %e, "waiting for the Kafka brokers"),
        }
        let until = Instant::now() + backoff;
        while Instant::now() < until {
            if shutdown.is_cancelled() {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

/// Reads the profile topic into `view` until `shutdown`; sends `true` on `caught_up` once every
/// partition has reached the end offset it had when reading began.
///
/// # Errors
///
/// When the view fails or the consumer cannot be created; broker outages are waited out.
pub fn run(
    config: &QueryConfig,
    view: &View,
    stats: &ViewStats,
    caught_up: &watch::Sender<bool>,
    shutdown: &CancellationToken,
) -> Result<(), MaterializeError> {
    let topic = config.kafka.topics.profiles.as_str();
    let mut client = config.kafka.client("query");
    // The view keeps its own offsets beside its data; the group id is only an identity, no
    // offsets are committed to it.
    client
        .set("group.id", &config.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "20");
    // The context's offset-continuity check reports any range the broker skips.
    let context = churnwatch_kafka::RebalanceContext::default();
    let consumer: churnwatch_kafka::SafeConsumer = client.create_with_context(context.clone())?;
    let Some(partitions) = partitions_of(config, topic, shutdown) else {
        return Ok(());
    };
    let stored = view.offsets()?;
    let mut targets: BTreeMap<i32, i64> = BTreeMap::new();
    for p in &partitions {
        let high = loop {
            match consumer.fetch_watermarks(topic, *p, Duration::from_secs(5)) {
                Ok((_, high)) => break high,
                Err(e) => {
                    warn!(partition = p, error = %e, "cannot read the end offset; retrying");
                    if shutdown.is_cancelled() {
                        return Ok(());
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        };
        targets.insert(*p, high);
    }
    let mut assignment = TopicPartitionList::new();
    for p in &partitions {
        let offset = stored
            .get(p)
            .map_or(Offset::Beginning, |o| Offset::Offset(*o));
        assignment.add_partition_offset(topic, *p, offset)?;
    }
    consumer.assign(&assignment)?;
    let started = Instant::now();
    info!(topic, partitions = partitions.len(), end_offsets = ?targets, resume_from = ?stored, "materialising the profile view");
    let mut reached = stored;
    let mut is_caught_up = false;
    let mut last_report = Instant::now();
    while !shutdown.is_cancelled() {
        if !is_caught_up
            && targets
                .iter()
                .all(|(p, end)| reached.get(p).copied().unwrap_or(0) >= *end)
        {
            is_caught_up = true;
            caught_up.send_replace(true);
            info!(
                profiles = view.len()?,
                secs = started.elapsed().as_secs_f64(),
                "the view has caught up with the profile topic; serving"
            );
        }
        let stop = || shutdown.is_cancelled();
        let (batch, _) = churnwatch_kafka::poll_batch(
            &consumer,
            &context,
            config.batch_size,
            config.batch_timeout,
            &stop,
        );
        if batch.is_empty() {
            continue;
        }
        let incoming: Vec<(i32, i64, Incoming<'_>)> = batch
            .iter()
            .filter_map(|m| {
                let key = m.key().and_then(|k| std::str::from_utf8(k).ok())?;
                Some((
                    m.partition(),
                    m.offset(),
                    Incoming {
                        customer_id: key,
                        json: m.payload(),
                    },
                ))
            })
            .collect();
        let applied = view.apply(&incoming)?;
        for m in &batch {
            let e = reached.entry(m.partition()).or_insert(0);
            *e = (*e).max(m.offset() + 1);
        }
        stats
            .consumed
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        stats.written.fetch_add(applied.written, Ordering::Relaxed);
        stats.invalid.fetch_add(
            applied.invalid + (batch.len() - incoming.len()) as u64,
            Ordering::Relaxed,
        );
        if applied.invalid > 0 {
            warn!(
                skipped = applied.invalid,
                "profile messages that do not decode were skipped"
            );
        }
        if !is_caught_up && last_report.elapsed() >= Duration::from_secs(5) {
            last_report = Instant::now();
            let done: i64 = reached.values().sum();
            let total: i64 = targets.values().sum();
            info!(
                read = done,
                of = total,
                rate = (stats.consumed.load(Ordering::Relaxed) as f64
                    / started.elapsed().as_secs_f64()) as u64,
                "rebuilding the view"
            );
        }
    }
    view.flush()?;
    Ok(())
}
