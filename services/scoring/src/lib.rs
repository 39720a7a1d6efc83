//! scoring: folds accepted events into per-customer state kept in sled, evaluates customers
//! after their events and when their silence timers fall due, and publishes `customer-risk`
//! and `customer-stage` events when the risk level or the stage changes, plus profiles to the
//! compacted `customer-profiles` topic.
//!
//! Per batch: the core [`Engine`] of each partition decides; the messages it causes are
//! published and acknowledged; then its effects (states, event ids, timers, watermark) are
//! written in one atomic sled batch per partition and flushed; only then are the batch's
//! offsets stored. A crash before the commit redoes the batch from the old states and publishes
//! the same messages again under the same deterministic ids; a crash after it redelivers events
//! that are recognised by `event_id`.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use churnwatch_core::engine::{Clock, Engine, Output, Work};
use churnwatch_core::population::PopulationSummary;
use churnwatch_core::stage::TransitionReason;
use churnwatch_core::{Event, Model, ModelParams, RiskLevel, Stage, Thresholds};
use churnwatch_kafka::rdkafka::Message;
use churnwatch_kafka::rdkafka::consumer::{CommitMode, Consumer};
use churnwatch_kafka::rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
use churnwatch_kafka::rdkafka::producer::{FutureProducer, FutureRecord};
use churnwatch_kafka::{KafkaConfig, RebalanceContext, SafeConsumer};
use churnwatch_runtime::{CancellationToken, metrics};
use churnwatch_store::{Commit, Partition, Rescore, SeenRetention, Store};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::histogram::Histogram;
use serde::{Deserialize, Serialize};
use tracing::{debug, error, info, info_span, warn};

/// Which clock evaluations run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ClockKind {
    /// Live: wall-clock time; silent customers are re-evaluated as real time passes.
    #[default]
    Wall,
    /// Replay: the event-time watermark of each partition.
    Event,
}

/// The configuration of scoring.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScoringConfig {
    /// Kafka connection and topics.
    pub kafka: KafkaConfig,
    /// Consumer group.
    pub group_id: String,
    /// Directory of the sled store.
    pub state_dir: PathBuf,
    /// sled's page cache in MiB: the bulk of scoring's memory once the states outgrow it.
    pub state_cache_mb: u64,
    /// Clock of evaluations.
    pub clock: ClockKind,
    /// How late an event may arrive behind the newest one (event clock).
    #[serde(with = "humantime_serde")]
    pub allowed_lateness: Duration,
    /// Interval between population refits of the models with the wall clock; none disables
    /// them.
    #[serde(with = "humantime_serde")]
    pub refit_interval: Option<Duration>,
    /// Interval of event time between population refits with the event clock (a replay or
    /// backfill passes months of event time in minutes, so wall time would never refit it);
    /// none disables them. The first refit comes one interval after the first event.
    #[serde(with = "humantime_serde")]
    pub event_refit_interval: Option<Duration>,
    /// How far behind the watermark (event time) processed event ids are still remembered
    /// for de-duplication.
    #[serde(with = "humantime_serde")]
    pub dedup_retention: Duration,
    /// How long (processing time) every processed event id is remembered at least, whatever
    /// its event time: the window in which a redelivery, such as order-ingest re-producing
    /// what it had not committed before a broker outage, is recognised.
    #[serde(with = "humantime_serde")]
    pub dedup_min_age: Duration,
    /// Most messages per batch.
    pub batch_size: usize,
    /// Customers per partition re-scored between two batches after a refit: the sweep that
    /// publishes every customer's profile under the new parameters runs in steps this size,
    /// so events keep flowing while it lasts.
    pub rescore_batch: usize,
    /// Longest wait to fill a batch.
    #[serde(with = "humantime_serde")]
    pub batch_timeout: Duration,
    /// Thresholds of signals, stages, risk and profitability.
    pub thresholds: Thresholds,
}

impl Default for ScoringConfig {
    fn default() -> Self {
        Self {
            kafka: KafkaConfig::default(),
            group_id: "churnwatch-scoring".into(),
            state_dir: PathBuf::from("churnwatch-state"),
            state_cache_mb: churnwatch_store::DEFAULT_CACHE_BYTES / (1024 * 1024),
            clock: ClockKind::Wall,
            allowed_lateness: Duration::from_secs(3600),
            refit_interval: Some(Duration::from_secs(6 * 3600)),
            event_refit_interval: Some(Duration::from_secs(30 * 86_400)),
            dedup_retention: Duration::from_secs(30 * 86_400),
            dedup_min_age: Duration::from_secs(86_400),
            batch_size: 10_000,
            rescore_batch: 1_000,
            batch_timeout: Duration::from_millis(100),
            thresholds: Thresholds::default(),
        }
    }
}

impl ScoringConfig {
    /// Returns every problem with the configuration at once.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut errors = self.kafka.validate().err().unwrap_or_default();
        if let Err(e) = self.thresholds.validate() {
            errors.extend(e.into_iter().map(|e| format!("thresholds.{e}")));
        }
        if self.allowed_lateness.as_secs() as i64 > churnwatch_core::state::DEDUP_HORIZON_SECS {
            errors.push(format!(
                "allowed_lateness must not exceed {} days, the horizon over which states recognise redelivered events",
                churnwatch_core::state::DEDUP_HORIZON_SECS / 86_400
            ));
        }
        if self.batch_size == 0 {
            errors.push("batch_size must be at least 1".into());
        }
        if self.rescore_batch == 0 {
            errors.push("rescore_batch must be at least 1".into());
        }
        if self.state_cache_mb == 0 {
            errors.push("state_cache_mb must be at least 1".into());
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// Returns how long the store remembers event ids.
    pub fn seen_retention(&self) -> SeenRetention {
        SeenRetention {
            event_secs: self.dedup_retention.as_secs() as i64,
            min_age_secs: self.dedup_min_age.as_secs() as i64,
        }
    }

    fn engine_clock(&self) -> Clock {
        match self.clock {
            ClockKind::Wall => Clock::Wall,
            ClockKind::Event => Clock::Event {
                lateness_secs: self.allowed_lateness.as_secs() as i64,
            },
        }
    }
}

/// Counters and live figures of scoring, shared with whoever reports them: the demo's summary,
/// and Prometheus through its [`Collector`](prometheus_client::collector::Collector).
#[derive(Debug)]
pub struct ScoringStats {
    /// Messages consumed.
    pub consumed: AtomicU64,
    /// Events applied.
    pub applied: AtomicU64,
    /// Events that arrived behind the watermark less the allowed lateness (event clock).
    pub late: AtomicU64,
    /// Duplicates ignored: repeated event ids, and redelivered messages already applied.
    pub duplicates: AtomicU64,
    /// Messages of an adopted partition between what this store applied and where consumption
    /// resumed: applied elsewhere (another replica with its own state) or never, so the
    /// partition's states lack them.
    pub missing_from_state: AtomicU64,
    /// Messages that were not valid accepted events (sent to the DLQ).
    pub invalid: AtomicU64,
    /// Timers fired.
    pub timers_fired: AtomicU64,
    /// Risk events published.
    pub risk_events: AtomicU64,
    /// Stage events published.
    pub stage_events: AtomicU64,
    /// Batches completed.
    pub batches: AtomicU64,
    /// Model refits completed.
    pub refits: AtomicU64,
    /// Set to ask for a population refit at the next batch boundary (SIGHUP does); cleared
    /// when the refit starts.
    pub refit_requested: std::sync::atomic::AtomicBool,
    /// Whether to keep every customer's latest profile in `profiles` (for the demo's live
    /// summary; a service leaves it off, as the map grows with the customers).
    pub keep_profiles: bool,
    /// The latest profile of every customer seen, when `keep_profiles` is on.
    pub profiles: Mutex<HashMap<String, churnwatch_core::output::Profile>>,
    /// Silence timers pending over the owned partitions, after the latest batch.
    pub pending_timers: AtomicU64,
    /// Customers who became lost.
    pub customers_lost: AtomicU64,
    /// The margin they were expected to bring over the next 12 months had they stayed, minor
    /// units of the reporting currency.
    pub lost_value: AtomicU64,
    /// Their lifetime value when they became lost, minor units of the reporting currency.
    pub lost_lifetime_value: AtomicU64,
    /// Moves to lost undone by a late order placed before them (corrections).
    pub lost_corrected: AtomicU64,
    /// Customers who placed their first order (moved out of prospect).
    pub customers_acquired: AtomicU64,
    /// What they were expected to bring over their first 12 months when they first ordered
    /// (a new customer's expectation), minor units of the reporting currency.
    pub acquired_value: AtomicU64,
    /// Lost customers who ordered again.
    pub customers_reactivated: AtomicU64,
    /// Model refits whose BG/NBD or Gamma-Gamma fit failed (the previous parameters stay).
    pub refit_failures: AtomicU64,
    /// Customers re-assessed under new parameters by the sweep after a refit.
    pub rescored: AtomicU64,
    /// Partitions whose sweep after a refit is still going.
    pub rescores_pending: AtomicU64,
    /// Seconds from a batch's poll to its offsets being stored.
    pub batch_seconds: Histogram,
    /// Messages per batch.
    pub batch_messages: Histogram,
    /// Seconds a population refit took.
    pub fit_seconds: Histogram,
    /// The parameters in use: BG/NBD r, alpha, a, b and Gamma-Gamma p, q, v.
    pub params: Mutex<Option<ModelParams>>,
}

impl Default for ScoringStats {
    fn default() -> Self {
        Self {
            consumed: AtomicU64::default(),
            applied: AtomicU64::default(),
            late: AtomicU64::default(),
            duplicates: AtomicU64::default(),
            missing_from_state: AtomicU64::default(),
            invalid: AtomicU64::default(),
            timers_fired: AtomicU64::default(),
            risk_events: AtomicU64::default(),
            stage_events: AtomicU64::default(),
            batches: AtomicU64::default(),
            refits: AtomicU64::default(),
            refit_requested: std::sync::atomic::AtomicBool::default(),
            keep_profiles: false,
            profiles: Mutex::default(),
            pending_timers: AtomicU64::default(),
            customers_lost: AtomicU64::default(),
            lost_value: AtomicU64::default(),
            lost_lifetime_value: AtomicU64::default(),
            lost_corrected: AtomicU64::default(),
            customers_acquired: AtomicU64::default(),
            acquired_value: AtomicU64::default(),
            customers_reactivated: AtomicU64::default(),
            refit_failures: AtomicU64::default(),
            rescored: AtomicU64::default(),
            rescores_pending: AtomicU64::default(),
            batch_seconds: metrics::seconds_histogram(),
            batch_messages: metrics::messages_histogram(),
            fit_seconds: metrics::seconds_histogram(),
            params: Mutex::default(),
        }
    }
}

impl Collector for ScoringStats {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> std::fmt::Result {
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        for (name, help, value) in [
            (
                "churnwatch_scoring_messages_consumed",
                "Messages read from the accepted topic.",
                &self.consumed,
            ),
            (
                "churnwatch_scoring_events_applied",
                "Events applied to customer states.",
                &self.applied,
            ),
            (
                "churnwatch_scoring_events_late",
                "Events that arrived behind the event-time watermark less the allowed lateness: silence timers may have judged their customers without them. A feed out of time order (sorted by customer, say) shows here.",
                &self.late,
            ),
            (
                "churnwatch_scoring_events_duplicate",
                "Redelivered or repeated events ignored: recognised by event id, or by offset as already applied.",
                &self.duplicates,
            ),
            (
                "churnwatch_scoring_messages_missing_from_state",
                "Messages of a partition that resumed past the offset its stored state reaches: applied by another replica's state or never (the partition's states are incomplete; see the error log).",
                &self.missing_from_state,
            ),
            (
                "churnwatch_scoring_messages_invalid",
                "Messages on the accepted topic that were not events (sent to the DLQ).",
                &self.invalid,
            ),
            (
                "churnwatch_scoring_timers_fired",
                "Silence timers that fired.",
                &self.timers_fired,
            ),
            (
                "churnwatch_scoring_risk_events",
                "customer-risk events published (risk level changes).",
                &self.risk_events,
            ),
            (
                "churnwatch_scoring_stage_events",
                "customer-stage events published (stage changes).",
                &self.stage_events,
            ),
            (
                "churnwatch_scoring_batches",
                "Batches made durable (offsets stored).",
                &self.batches,
            ),
            (
                "churnwatch_scoring_model_fits",
                "Population refits of the models.",
                &self.refits,
            ),
            (
                "churnwatch_scoring_model_fit_failures",
                "Refits in which a model failed to fit and kept its previous parameters.",
                &self.refit_failures,
            ),
            (
                "churnwatch_scoring_customers_lost",
                "Customers who moved to the lost stage.",
                &self.customers_lost,
            ),
            (
                "churnwatch_scoring_lost_value_minor",
                "Margin customers were expected to bring over the next 12 months had they stayed, summed when they moved to the lost stage, in minor units (cents) of the reporting currency.",
                &self.lost_value,
            ),
            (
                "churnwatch_scoring_lost_lifetime_value_minor",
                "Lifetime value (over the lifetime horizon, 3 years by default) of customers when they moved to the lost stage, in minor units (cents) of the reporting currency.",
                &self.lost_lifetime_value,
            ),
            (
                "churnwatch_scoring_lost_corrected",
                "Moves to the lost stage undone by a late order placed before them (corrected stage events): subtract them from churnwatch_scoring_customers_lost.",
                &self.lost_corrected,
            ),
            (
                "churnwatch_scoring_customers_acquired",
                "Customers who placed their first order (moved out of the prospect stage).",
                &self.customers_acquired,
            ),
            (
                "churnwatch_scoring_acquired_value_minor",
                "Margin new customers were expected to bring over their first 12 months, summed when each placed its first order, in minor units (cents) of the reporting currency: set against churnwatch_scoring_lost_value_minor.",
                &self.acquired_value,
            ),
            (
                "churnwatch_scoring_customers_reactivated",
                "Lost customers who ordered again (moved out of the lost stage as a reactivation).",
                &self.customers_reactivated,
            ),
            (
                "churnwatch_scoring_rescored_customers",
                "Customers re-assessed under new parameters by the sweep that follows each refit.",
                &self.rescored,
            ),
        ] {
            metrics::counter(&mut enc, name, help, n(value))?;
        }
        metrics::gauge(
            &mut enc,
            "churnwatch_scoring_pending_timers",
            "Silence timers pending over the partitions this process owns.",
            n(&self.pending_timers) as f64,
        )?;
        metrics::gauge(
            &mut enc,
            "churnwatch_scoring_rescores_pending",
            "Partitions whose re-scoring sweep after a refit is still going.",
            n(&self.rescores_pending) as f64,
        )?;
        metrics::histogram(
            &mut enc,
            "churnwatch_scoring_batch_duration_seconds",
            "Seconds from a batch's poll to its offsets being stored.",
            &self.batch_seconds,
        )?;
        metrics::histogram(
            &mut enc,
            "churnwatch_scoring_batch_messages",
            "Messages per batch.",
            &self.batch_messages,
        )?;
        metrics::histogram(
            &mut enc,
            "churnwatch_scoring_model_fit_duration_seconds",
            "Seconds a population refit took.",
            &self.fit_seconds,
        )?;
        if let Some(p) = *self.params.lock().unwrap_or_else(|p| p.into_inner()) {
            metrics::gauge_by(
                &mut enc,
                "churnwatch_scoring_model_parameter",
                "The fitted parameters in use: BG/NBD r, alpha, a, b; Gamma-Gamma p, q, v; the risk model's back-labelled customers (0: BG/NBD alone) and their silent share.",
                "parameter",
                [
                    ("bgnbd_r", p.bgnbd.r),
                    ("bgnbd_alpha", p.bgnbd.alpha),
                    ("bgnbd_a", p.bgnbd.a),
                    ("bgnbd_b", p.bgnbd.b),
                    ("gamma_gamma_p", p.gamma_gamma.p),
                    ("gamma_gamma_q", p.gamma_gamma.q),
                    ("gamma_gamma_v", p.gamma_gamma.v),
                    ("risk_model_samples", f64::from(p.risk.samples)),
                    ("risk_model_base_rate", p.risk.base_rate),
                ]
                .map(|(k, v)| (k.to_owned(), v)),
            )?;
        }
        Ok(())
    }
}

/// Exposes the store's size on disk, read at each scrape.
#[derive(Debug)]
pub struct StoreMetrics(pub Store);

impl Collector for StoreMetrics {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> std::fmt::Result {
        let bytes = self.0.size_on_disk().unwrap_or(0);
        metrics::gauge(
            &mut enc,
            "churnwatch_scoring_state_disk_bytes",
            "Bytes the sled state store occupies on disk.",
            bytes as f64,
        )
    }
}

impl ScoringStats {
    /// Returns counters that also keep every customer's latest profile.
    pub fn keeping_profiles() -> Self {
        Self {
            keep_profiles: true,
            ..Self::default()
        }
    }

    /// Returns customers per stage from the latest profiles.
    pub fn stages(&self) -> BTreeMap<Stage, u64> {
        self.count_profiles(|p| p.stage)
    }

    /// Returns customers per risk level from the latest profiles.
    pub fn levels(&self) -> BTreeMap<RiskLevel, u64> {
        self.count_profiles(|p| p.risk_level)
    }

    fn count_profiles<K: Ord>(
        &self,
        key: impl Fn(&churnwatch_core::output::Profile) -> K,
    ) -> BTreeMap<K, u64> {
        let mut out = BTreeMap::new();
        for p in self
            .profiles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
        {
            *out.entry(key(p)).or_default() += 1;
        }
        out
    }
}

/// Why scoring stopped.
#[derive(Debug, thiserror::Error)]
pub enum ScoringError {
    /// The configuration is unusable.
    #[error("invalid scoring configuration:\n  - {}", .0.join("\n  - "))]
    Config(Vec<String>),
    /// The state store failed.
    #[error(transparent)]
    Store(#[from] churnwatch_store::Error),
}

struct Owned {
    engine: Engine,
    store: Partition,
    /// Whether a message was processed since the partition was adopted.
    started: bool,
    /// The offset of the next message not yet applied to the store. The consumer group's
    /// committed offset can be behind it (offsets are committed asynchronously, and not at all
    /// while the broker is away), and a message it redelivers may be older than the event ids
    /// the store still remembers, so messages before this offset are skipped by offset.
    next_offset: Option<i64>,
    /// While the partition's customers are being re-scored after a refit: the id of the last
    /// one done (empty before the first).
    rescore_after: Option<String>,
}

impl Owned {
    /// Drops from a partition's `messages` those its store has already applied (redelivered
    /// because the committed offset lags the store); returns how many, and the offset the
    /// batch moves the store to, if it reaches past what is applied.
    fn drop_applied(
        &self,
        partition: i32,
        messages: &mut Vec<&OwnedMessage>,
    ) -> (u64, Option<i64>) {
        let next_offset = messages
            .last()
            .map(|m| m.offset() + 1)
            .filter(|&n| self.next_offset.is_none_or(|applied| n > applied));
        let Some(applied) = self.next_offset else {
            return (0, next_offset);
        };
        let before = messages.len();
        messages.retain(|m| m.offset() >= applied);
        let skipped = before - messages.len();
        if skipped > 0 {
            debug!(
                partition,
                skipped,
                applied_up_to = applied,
                "skipping redelivered messages already applied"
            );
        }
        (skipped as u64, next_offset)
    }

    /// On the partition's first new message since adoption, at `offset`: reports consumption
    /// resuming anywhere but where the stored state ends.
    fn check_resumption(&mut self, partition: i32, offset: i64, stats: &ScoringStats) {
        if self.started {
            return;
        }
        self.started = true;
        info!(partition, offset, "consuming partition from offset");
        match self.next_offset {
            None if offset > 0 => warn!(
                partition,
                offset,
                "this store has no state of the partition, yet consumption starts at offset {offset}: customers' events before it are not in their states (expected only if the topic's older messages were deleted, or if another scoring instance with its own state processed them)"
            ),
            Some(applied) if offset > applied => {
                let missing = offset - applied;
                stats
                    .missing_from_state
                    .fetch_add(missing as u64, Ordering::Relaxed);
                error!(
                    partition,
                    applied_up_to = applied,
                    resumed_at = offset,
                    missing,
                    "this store's state of the partition stops at offset {applied} but consumption resumed at {offset}: offsets {applied}..{} were applied by another scoring instance with its own state, or never; the partition's customer states are incomplete. Run one scoring replica per state, or rebuild the state (README: Rebuilding scoring's state)",
                    offset - 1
                );
            }
            _ => {}
        }
    }
}

/// The scoring service over its resources.
pub struct Scoring<'a> {
    config: &'a ScoringConfig,
    consumer: &'a SafeConsumer,
    context: &'a RebalanceContext,
    producer: &'a FutureProducer,
    store: &'a Store,
    stats: &'a ScoringStats,
    model: Model,
    partitions: BTreeMap<i32, Owned>,
    last_refit: Instant,
    /// With the event clock: the watermark of the last refit (or the first one seen).
    last_refit_event: Option<churnwatch_core::Timestamp>,
}

impl std::fmt::Debug for Scoring<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scoring")
            .field("partitions", &self.partitions.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Runs scoring until `shutdown` is cancelled. Blocking; run it on its own thread.
///
/// # Errors
///
/// An unusable configuration or a failing state store. Broker outages are waited out.
pub fn run(
    config: &ScoringConfig,
    consumer: &SafeConsumer,
    context: &RebalanceContext,
    producer: &FutureProducer,
    store: &Store,
    shutdown: &CancellationToken,
    stats: &ScoringStats,
) -> Result<(), ScoringError> {
    config.validate().map_err(ScoringError::Config)?;
    let stored = store.model_params()?;
    if let Some(p) = stored {
        // Served (and exported as metrics) from the start, not only after the next refit.
        *stats.params.lock().unwrap_or_else(|p| p.into_inner()) = Some(p);
        info!(bgnbd = ?p.bgnbd, risk_model_fitted = p.risk.is_fitted(), "stored model parameters loaded");
    }
    let params = stored.unwrap_or_default();
    let model = Model {
        params,
        thresholds: config.thresholds.clone(),
    };
    let mut scoring = Scoring {
        config,
        consumer,
        context,
        producer,
        store,
        stats,
        model,
        partitions: BTreeMap::new(),
        last_refit: Instant::now(),
        last_refit_event: None,
    };
    info!(input = %config.kafka.topics.accepted, state_dir = %config.state_dir.display(), clock = ?config.clock, "scoring running");
    scoring.run(shutdown)
}

impl Scoring<'_> {
    fn run(&mut self, shutdown: &CancellationToken) -> Result<(), ScoringError> {
        let stop = || shutdown.is_cancelled();
        while !shutdown.is_cancelled() {
            let (batch, changes) = churnwatch_kafka::poll_batch(
                self.consumer,
                self.context,
                self.config.batch_size,
                self.config.batch_timeout,
                &stop,
            );
            for (_, p) in &changes.revoked {
                // Everything of the partition up to its last stored offset is durable; if it
                // comes back, its engine is resumed from the store.
                self.partitions.remove(p);
            }
            for (_, p) in &changes.assigned {
                self.adopt(*p)?;
            }
            // Messages can arrive for a partition before its assignment was seen here.
            for p in batch
                .iter()
                .map(Message::partition)
                .collect::<std::collections::BTreeSet<_>>()
            {
                self.adopt(p)?;
            }
            let started = Instant::now();
            if !self.process(&batch, shutdown)? {
                break;
            }
            if !batch.is_empty() {
                churnwatch_kafka::store_batch_offsets(self.consumer, &batch);
                debug!(
                    messages = batch.len(),
                    last_offset = batch.last().map(Message::offset),
                    watermarks = ?self.partitions.iter().map(|(p, o)| (*p, o.engine.watermark())).collect::<Vec<_>>(),
                    "batch durable; offsets stored"
                );
                self.stats.batches.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .batch_seconds
                    .observe(started.elapsed().as_secs_f64());
                self.stats.batch_messages.observe(batch.len() as f64);
            }
            self.stats.pending_timers.store(
                self.partitions
                    .values()
                    .map(|o| o.engine.timers().len() as u64)
                    .sum(),
                Ordering::Relaxed,
            );
            self.maybe_refit()?;
            if !self.rescore_step(shutdown)? {
                break;
            }
        }
        info!("scoring stopping: flushing state and committing offsets");
        self.store.flush()?;
        if let Err(e) = self.consumer.commit_consumer_state(CommitMode::Sync) {
            debug!(error = %e, "final commit");
        }
        Ok(())
    }

    /// Takes ownership of a partition: resumes its engine from the store.
    fn adopt(&mut self, partition: i32) -> Result<(), ScoringError> {
        if self.partitions.contains_key(&partition) {
            return Ok(());
        }
        let store = self.store.partition(partition)?;
        let timers = store.timers()?;
        let watermark = store.watermark()?;
        let next_offset = store.next_offset()?;
        let rescore_after = store.rescore_after()?;
        info!(partition, timers = timers.len(), watermark = ?watermark, next_offset, rescoring = rescore_after.is_some(), "resuming partition");
        let engine = Engine::new(
            self.model.clone(),
            self.config.engine_clock(),
            watermark,
            timers,
        );
        self.partitions.insert(
            partition,
            Owned {
                engine,
                store,
                started: false,
                next_offset,
                rescore_after,
            },
        );
        Ok(())
    }

    /// Processes a batch; returns false when shutting down left it unpublished.
    fn process(
        &mut self,
        batch: &[OwnedMessage],
        shutdown: &CancellationToken,
    ) -> Result<bool, ScoringError> {
        let now = churnwatch_runtime::wall_now();
        let mut by_partition: BTreeMap<i32, Vec<&OwnedMessage>> = BTreeMap::new();
        for m in batch {
            by_partition.entry(m.partition()).or_default().push(m);
        }
        let wall = self.config.clock == ClockKind::Wall;
        // Each partition's work, with the offset its batch moves the store to, if any.
        let mut done: Vec<(i32, Work, Option<i64>)> = Vec::new();
        let mut invalid: Vec<&OwnedMessage> = Vec::new();
        let mut redelivered = 0;
        let ids: Vec<i32> = self.partitions.keys().copied().collect();
        for p in ids {
            let mut messages = by_partition.remove(&p).unwrap_or_default();
            if messages.is_empty() && !wall {
                continue;
            }
            let owned = self.partitions.get_mut(&p).expect("adopted above");
            let (skipped, next_offset) = owned.drop_applied(p, &mut messages);
            redelivered += skipped;
            if let Some(first) = messages.first() {
                owned.check_resumption(p, first.offset(), self.stats);
            }
            let span = info_span!(
                "batch",
                partition = p,
                messages = messages.len(),
                first_offset = messages.first().map(|m| m.offset()),
                last_offset = messages.last().map(|m| m.offset())
            );
            let _enter = span.enter();
            let mut work = Work::default();
            for m in &messages {
                match serde_json::from_slice::<Event>(m.payload().unwrap_or_default()) {
                    Ok(event) => {
                        owned
                            .engine
                            .on_event(&mut work, &mut owned.store, &event, now)?;
                    }
                    Err(e) => {
                        warn!(error = %e, offset = m.offset(), "not an accepted event; sending to the DLQ");
                        invalid.push(m);
                    }
                }
            }
            if wall {
                owned.engine.advance(&mut work, &mut owned.store, now)?;
            }
            done.push((p, work, next_offset));
        }
        self.stats
            .consumed
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        // Publish what the batch caused and wait for Kafka's acknowledgements first: once the
        // states are committed, redelivered events are duplicates and would not publish again.
        // A crash before the commit redoes the batch from the old states, which publishes the
        // same messages again under the same deterministic ids.
        if !self.publish_work(done.iter().map(|(_, work, _)| work), shutdown) {
            return Ok(false);
        }
        self.dead_letter(&invalid, shutdown);
        let mut wrote = false;
        for (p, work, next_offset) in &done {
            // A batch of nothing but duplicates by event id still moves the partition's offset.
            if work.is_empty() && next_offset.is_none() {
                continue;
            }
            wrote = true;
            let owned = self.partitions.get_mut(p).expect("adopted above");
            owned.store.commit(&Commit {
                next_offset: *next_offset,
                ..Commit::of_work(
                    work,
                    owned.engine.watermark(),
                    now,
                    self.config.seen_retention(),
                )
            })?;
            if next_offset.is_some() {
                owned.next_offset = *next_offset;
            }
        }
        // With nothing written there is nothing to flush (in wall-clock mode this runs every
        // batch timeout even when idle).
        if wrote {
            self.store.flush()?;
        }
        // Every piece of work is counted, including one that only recognised duplicates and so
        // wrote nothing.
        for (_, work, _) in &done {
            self.count(work);
        }
        self.stats
            .duplicates
            .fetch_add(redelivered, Ordering::Relaxed);
        Ok(true)
    }

    fn count(&self, work: &Work) {
        let s = self.stats;
        s.applied.fetch_add(work.stats.applied, Ordering::Relaxed);
        if work.stats.late > 0 {
            let before = s.late.fetch_add(work.stats.late, Ordering::Relaxed);
            // Once per power of two, so a whole feed out of order is told, not spammed.
            let after = before + work.stats.late;
            if before == 0 || after.ilog2() > before.ilog2() {
                warn!(late_events = after, allowed_lateness = ?self.config.allowed_lateness, "events arrive behind the event-time watermark; silence timers may have moved their customers (is the feed sorted by time? `churnwatch backfill` sorts a file)");
            }
        }
        s.duplicates
            .fetch_add(work.stats.duplicates, Ordering::Relaxed);
        s.timers_fired
            .fetch_add(work.stats.timers_fired, Ordering::Relaxed);
        for o in &work.outputs {
            match o {
                Output::Risk(_) => s.risk_events.fetch_add(1, Ordering::Relaxed),
                Output::Stage(e) => {
                    let value = |v: Option<i64>| v.unwrap_or(0).max(0) as u64;
                    if e.from == Stage::Prospect {
                        s.customers_acquired.fetch_add(1, Ordering::Relaxed);
                        let first = work.states.get(&e.customer_id).and_then(|st| {
                            st.stage_history.iter().find(|c| c.from == Stage::Prospect)
                        });
                        s.acquired_value
                            .fetch_add(value(first.map(|c| c.retained_12m)), Ordering::Relaxed);
                    }
                    match e.reason {
                        TransitionReason::Reactivated => {
                            s.customers_reactivated.fetch_add(1, Ordering::Relaxed);
                        }
                        TransitionReason::Corrected if e.from == Stage::Lost => {
                            s.lost_corrected.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {}
                    }
                    if e.to == Stage::Lost {
                        s.customers_lost.fetch_add(1, Ordering::Relaxed);
                        // The move is the state's latest recorded one, with its values.
                        let lost = work.states.get(&e.customer_id).and_then(|st| {
                            st.stage_history.iter().rev().find(|c| c.to == Stage::Lost)
                        });
                        s.lost_value
                            .fetch_add(value(lost.map(|c| c.retained_12m)), Ordering::Relaxed);
                        s.lost_lifetime_value
                            .fetch_add(value(lost.map(|c| c.lifetime_value)), Ordering::Relaxed);
                    }
                    s.stage_events.fetch_add(1, Ordering::Relaxed)
                }
            };
        }
        if !s.keep_profiles {
            return;
        }
        let mut profiles = s.profiles.lock().unwrap_or_else(|p| p.into_inner());
        for (id, p) in &work.profiles {
            profiles.insert(id.clone(), p.clone());
        }
    }

    /// Publishes what pieces of work caused (see [`outgoing`]); false when shutting down
    /// interrupted it.
    fn publish_work<'w>(
        &self,
        works: impl Iterator<Item = &'w Work>,
        shutdown: &CancellationToken,
    ) -> bool {
        let records: Vec<Outgoing> = works.flat_map(outgoing).collect();
        self.publish(&records, shutdown)
    }

    /// Publishes records and waits for every acknowledgement, retrying failures; returns false
    /// if shutdown interrupted it (the batch is then neither committed nor its offsets
    /// stored, so it is redone after the restart).
    fn publish(&self, records: &[Outgoing], shutdown: &CancellationToken) -> bool {
        let topics = &self.config.kafka.topics;
        let make = |i: usize| {
            let r = &records[i];
            let topic = match r.destination {
                Destination::Risk => &topics.risk,
                Destination::Stage => &topics.stage,
                Destination::Profile => &topics.profiles,
            };
            FutureRecord::to(topic)
                .key(r.key.as_bytes())
                .payload(r.payload.as_slice())
        };
        churnwatch_kafka::send_all(self.producer, records.len(), &make, &|| {
            shutdown.is_cancelled()
        })
    }

    fn dead_letter(&self, invalid: &[&OwnedMessage], shutdown: &CancellationToken) {
        if invalid.is_empty() {
            return;
        }
        self.stats
            .invalid
            .fetch_add(invalid.len() as u64, Ordering::Relaxed);
        let futures: Vec<_> = invalid
            .iter()
            .map(|m| {
                let partition = m.partition().to_string();
                let offset = m.offset().to_string();
                let headers = OwnedHeaders::new_with_capacity(5)
                    .insert(Header {
                        key: "reason",
                        value: Some("malformed_json"),
                    })
                    .insert(Header {
                        key: "message",
                        value: Some("not a validated event; was it produced by order-ingest?"),
                    })
                    .insert(Header {
                        key: "source_topic",
                        value: Some(m.topic()),
                    })
                    .insert(Header {
                        key: "source_partition",
                        value: Some(partition.as_str()),
                    })
                    .insert(Header {
                        key: "source_offset",
                        value: Some(offset.as_str()),
                    });
                let record = FutureRecord::to(&self.config.kafka.topics.dlq)
                    .payload(m.payload().unwrap_or_default())
                    .headers(headers);
                churnwatch_kafka::send(self.producer, record)
            })
            .collect();
        if !shutdown.is_cancelled() {
            for r in futures::executor::block_on(futures::future::join_all(futures)) {
                if !matches!(r, Ok(Ok(_))) {
                    warn!("a dead-letter message was not acknowledged");
                }
            }
        }
    }

    fn maybe_refit(&mut self) -> Result<(), ScoringError> {
        let requested = self.stats.refit_requested.swap(false, Ordering::Relaxed);
        let due = match self.config.clock {
            ClockKind::Wall => self
                .config
                .refit_interval
                .is_some_and(|every| self.last_refit.elapsed() >= every),
            ClockKind::Event => match (self.config.event_refit_interval, self.watermark()) {
                (Some(every), Some(watermark)) => {
                    let last = *self.last_refit_event.get_or_insert(watermark);
                    watermark.since(last) >= i64::try_from(every.as_secs()).unwrap_or(i64::MAX)
                }
                _ => false,
            },
        };
        if requested || due {
            if requested {
                info!("refit requested");
            }
            self.refit()?;
        }
        Ok(())
    }

    /// Returns the newest event-time watermark of the owned partitions.
    fn watermark(&self) -> Option<churnwatch_core::Timestamp> {
        self.partitions
            .values()
            .filter_map(|o| o.engine.watermark())
            .max()
    }

    /// Refits the population models over every owned partition and stores the parameters.
    pub fn refit(&mut self) -> Result<ModelParams, ScoringError> {
        self.last_refit = Instant::now();
        let now = match self.config.clock {
            ClockKind::Wall => churnwatch_runtime::wall_now(),
            ClockKind::Event => self.watermark().unwrap_or_default(),
        };
        if self.config.clock == ClockKind::Event {
            self.last_refit_event = Some(now);
        }
        let partitions: Vec<&Partition> = self.partitions.values().map(|o| &o.store).collect();
        let started = Instant::now();
        let fit = refit_population(self.store, &partitions, &self.model, now)?;
        self.stats
            .fit_seconds
            .observe(started.elapsed().as_secs_f64());
        if fit.bgnbd.is_err() || fit.gamma_gamma.is_err() {
            self.stats.refit_failures.fetch_add(1, Ordering::Relaxed);
        }
        *self.stats.params.lock().unwrap_or_else(|p| p.into_inner()) = Some(fit.params);
        self.model.params = fit.params;
        for owned in self.partitions.values_mut() {
            owned.engine.model.params = fit.params;
            // Every customer is re-scored under the new parameters, from the first; a sweep
            // still going from an earlier refit starts over. Stored, so a restart resumes it.
            owned.store.commit(&Commit {
                rescore: Some(Rescore::After(String::new())),
                ..Commit::default()
            })?;
            owned.rescore_after = Some(String::new());
        }
        self.store.flush()?;
        self.count_rescores_pending();
        self.stats.refits.fetch_add(1, Ordering::Relaxed);
        Ok(fit.params)
    }

    fn count_rescores_pending(&self) {
        let pending = self
            .partitions
            .values()
            .filter(|o| o.rescore_after.is_some())
            .count();
        self.stats
            .rescores_pending
            .store(pending as u64, Ordering::Relaxed);
    }

    /// Re-scores the next `rescore_batch` customers of every partition whose sweep after a
    /// refit is going: each is assessed under the new parameters at the partition's "now",
    /// its profile and any change are published, then the states and the sweep's position are
    /// committed together. Returns false when shutting down left the step unpublished (it is
    /// redone after a restart, under the same deterministic ids).
    fn rescore_step(&mut self, shutdown: &CancellationToken) -> Result<bool, ScoringError> {
        let wall_now = churnwatch_runtime::wall_now();
        let wall = self.config.clock == ClockKind::Wall;
        let mut done: Vec<(i32, Work, Rescore)> = Vec::new();
        for (p, owned) in &mut self.partitions {
            let Some(after) = &owned.rescore_after else {
                continue;
            };
            let Some(now) = (if wall {
                Some(wall_now)
            } else {
                owned.engine.watermark()
            }) else {
                // Nothing applied yet: nobody to re-score.
                done.push((*p, Work::default(), Rescore::Done));
                continue;
            };
            let states = owned.store.states_after(after, self.config.rescore_batch)?;
            let position = if states.len() < self.config.rescore_batch {
                Rescore::Done
            } else {
                Rescore::After(
                    states
                        .last()
                        .map(|s| s.customer_id.clone())
                        .unwrap_or_default(),
                )
            };
            let mut work = Work::default();
            for state in states {
                owned.engine.reassess(&mut work, state, now);
            }
            done.push((*p, work, position));
        }
        if done.is_empty() {
            return Ok(true);
        }
        if !self.publish_work(done.iter().map(|(_, work, _)| work), shutdown) {
            return Ok(false);
        }
        for (p, work, position) in done {
            let owned = self.partitions.get_mut(&p).expect("owned above");
            owned.store.commit(&Commit {
                rescore: Some(position.clone()),
                ..Commit::of_work(
                    &work,
                    owned.engine.watermark(),
                    wall_now,
                    self.config.seen_retention(),
                )
            })?;
            let rescored = self
                .stats
                .rescored
                .fetch_add(work.stats.assessments, Ordering::Relaxed)
                + work.stats.assessments;
            owned.rescore_after = match position {
                Rescore::After(id) => Some(id),
                Rescore::Done => {
                    info!(
                        partition = p,
                        rescored_since_start = rescored,
                        "every customer of the partition re-scored under the refitted models"
                    );
                    None
                }
            };
            self.count(&work);
        }
        self.store.flush()?;
        self.count_rescores_pending();
        Ok(true)
    }
}

/// Listens for SIGHUP (`kill -HUP <pid>`) and asks for a population refit at the next batch
/// boundary each time (`churnwatch fit` on a running store says so). Call it inside a tokio
/// runtime; only the binaries' `main` should.
pub fn refit_on_sighup(stats: &std::sync::Arc<ScoringStats>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let stats = std::sync::Arc::clone(stats);
        match signal(SignalKind::hangup()) {
            Ok(mut hangup) => {
                tokio::spawn(async move {
                    while hangup.recv().await.is_some() {
                        stats
                            .refit_requested
                            .store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; refits only on the interval")
            }
        }
    }
}

/// Fits BG/NBD, Gamma-Gamma and the value tiers over every customer of `partitions` as of
/// `now`, starting from `model`'s parameters, and stores the parameters in `store`. A model
/// that fails to fit keeps its previous parameters (logged).
///
/// # Errors
///
/// The store failed.
pub fn refit_population(
    store: &Store,
    partitions: &[&Partition],
    model: &Model,
    now: churnwatch_core::Timestamp,
) -> Result<churnwatch_core::population::PopulationFit, ScoringError> {
    let started = Instant::now();
    let mut summary = PopulationSummary::default();
    for partition in partitions {
        for state in partition.states() {
            summary.add(&state?, now, &model.thresholds);
        }
    }
    let fit = summary.fit(&model.params, &model.thresholds);
    if let Err(e) = &fit.bgnbd {
        warn!(error = %e, "BG/NBD refit failed; keeping the previous parameters");
    }
    if let Err(e) = &fit.gamma_gamma {
        warn!(error = %e, "Gamma-Gamma refit failed; keeping the previous parameters");
    }
    match &fit.risk {
        Ok(m) => info!(
            customers = m.samples,
            silent_share = m.base_rate,
            "risk model fitted on the back-labelled history"
        ),
        Err(e) => info!(reason = %e, "risk model not refitted; keeping the previous one"),
    }
    store.set_model_params(&fit.params)?;
    store.flush()?;
    info!(customers = fit.customers, seconds = started.elapsed().as_secs_f64(), params = ?fit.params.bgnbd, "models refitted");
    Ok(fit)
}

/// Where a published message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Destination {
    Risk,
    Stage,
    Profile,
}

/// A message to publish.
#[derive(Debug)]
struct Outgoing {
    destination: Destination,
    key: String,
    payload: Vec<u8>,
}

/// The messages a piece of work publishes: its change events in order, then the profile of
/// every customer it assessed.
fn outgoing(work: &Work) -> Vec<Outgoing> {
    let mut records = Vec::with_capacity(work.outputs.len() + work.profiles.len());
    for o in &work.outputs {
        let (destination, key, payload) = match o {
            Output::Risk(r) => (Destination::Risk, &r.customer_id, serde_json::to_vec(r)),
            Output::Stage(s) => (Destination::Stage, &s.customer_id, serde_json::to_vec(s)),
        };
        records.push(Outgoing {
            destination,
            key: key.clone(),
            payload: payload.expect("events serialize"),
        });
    }
    let mut ids: Vec<&String> = work.profiles.keys().collect();
    ids.sort_unstable();
    for id in ids {
        let payload = serde_json::to_vec(&work.profiles[id]).expect("profiles serialize");
        records.push(Outgoing {
            destination: Destination::Profile,
            key: id.clone(),
            payload,
        });
    }
    records
}
