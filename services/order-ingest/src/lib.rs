//! order-ingest: consumes raw purchase events, validates and normalises them with the core's
//! parser, produces accepted events keyed by `customer_id` to `orders-accepted`, and sends
//! every rejected message to `orders-dlq` with its reason. A batch's offsets are stored only
//! after every message it caused is acknowledged, so nothing is lost; a crash in between
//! re-sends some accepted events, which scoring recognises by `event_id`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use churnwatch_core::money::{CurrencyCode, FxTable};
use churnwatch_core::{ParseConfig, RejectCode, Timestamp, parse_event};
use churnwatch_kafka::rdkafka::Message;
use churnwatch_kafka::rdkafka::consumer::{CommitMode, Consumer};
use churnwatch_kafka::rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
use churnwatch_kafka::rdkafka::producer::{FutureProducer, FutureRecord};
use churnwatch_kafka::{KafkaConfig, RebalanceContext, SafeConsumer};
use churnwatch_runtime::{CancellationToken, metrics};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::histogram::Histogram;
use serde::{Deserialize, Serialize};
use tracing::{debug, info, info_span, warn};

/// The configuration of order-ingest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Kafka connection and topics.
    pub kafka: KafkaConfig,
    /// Consumer group.
    pub group_id: String,
    /// Currency customer money is kept in.
    pub reporting_currency: String,
    /// Exchange rates into the reporting currency, `EUR=1.08,GBP=1.27`.
    pub fx_rates: String,
    /// Largest accepted message in bytes.
    pub max_message_bytes: usize,
    /// How far ahead of this service's clock an event may be dated.
    #[serde(with = "humantime_serde")]
    pub max_future_skew: Duration,
    /// Most messages per batch.
    pub batch_size: usize,
    /// Longest wait to fill a batch.
    #[serde(with = "humantime_serde")]
    pub batch_timeout: Duration,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            kafka: KafkaConfig::default(),
            group_id: "churnwatch-order-ingest".into(),
            reporting_currency: "USD".into(),
            fx_rates: String::new(),
            max_message_bytes: 64 * 1024,
            max_future_skew: Duration::from_secs(300),
            batch_size: 10_000,
            batch_timeout: Duration::from_millis(100),
        }
    }
}

impl IngestConfig {
    /// Returns the parser configuration, or every problem with it.
    pub fn parse_config(&self) -> Result<ParseConfig, Vec<String>> {
        let mut errors = self.kafka.validate().err().unwrap_or_default();
        let reporting = CurrencyCode::parse(&self.reporting_currency);
        if reporting.is_none() {
            errors.push(format!(
                "reporting_currency {:?} is not an ISO 4217 code",
                self.reporting_currency
            ));
        }
        let fx = FxTable::parse_rates(reporting.unwrap_or_default(), &self.fx_rates)
            .map_err(|e| errors.push(format!("fx_rates: {e}")));
        if self.batch_size == 0 {
            errors.push("batch_size must be at least 1".into());
        }
        match fx {
            Ok(fx) if errors.is_empty() => Ok(ParseConfig {
                max_bytes: self.max_message_bytes,
                max_future_skew_secs: self.max_future_skew.as_secs() as i64,
                fx,
            }),
            _ => Err(errors),
        }
    }
}

/// Counters of what ingest did, shared with whoever reports them: the demo's summary, and
/// Prometheus through its [`Collector`](prometheus_client::collector::Collector).
#[derive(Debug)]
pub struct IngestStats {
    /// Messages consumed and handled: accepted or rejected, every produce acknowledged.
    pub consumed: AtomicU64,
    /// Events accepted and produced to `orders-accepted`.
    pub accepted: AtomicU64,
    /// Messages sent to the DLQ, by reason (indexed like `RejectCode::ALL`).
    pub rejected: [AtomicU64; RejectCode::ALL.len()],
    /// Batches completed (offsets stored).
    pub batches: AtomicU64,
    /// Produce attempts that failed and were retried.
    pub produce_retries: AtomicU64,
    /// Seconds from a batch's poll to its offsets being stored.
    pub batch_seconds: Histogram,
    /// Messages per batch.
    pub batch_messages: Histogram,
}

impl Default for IngestStats {
    fn default() -> Self {
        Self {
            consumed: AtomicU64::default(),
            accepted: AtomicU64::default(),
            rejected: Default::default(),
            batches: AtomicU64::default(),
            produce_retries: AtomicU64::default(),
            batch_seconds: metrics::seconds_histogram(),
            batch_messages: metrics::messages_histogram(),
        }
    }
}

impl Collector for IngestStats {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> std::fmt::Result {
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        metrics::counter(
            &mut enc,
            "churnwatch_ingest_messages_consumed",
            "Messages read from the orders topic and handled (accepted or dead-lettered, every produce acknowledged).",
            n(&self.consumed),
        )?;
        metrics::counter(
            &mut enc,
            "churnwatch_ingest_events_accepted",
            "Events accepted and produced to the accepted topic, keyed by customer.",
            n(&self.accepted),
        )?;
        metrics::counter_by(
            &mut enc,
            "churnwatch_ingest_messages_rejected",
            "Messages rejected, by reason code; each is produced to the dead-letter topic.",
            "reason",
            RejectCode::ALL
                .iter()
                .zip(&self.rejected)
                .map(|(c, a)| (c.as_str().to_owned(), n(a))),
        )?;
        metrics::counter(
            &mut enc,
            "churnwatch_ingest_dlq_produced",
            "Messages produced to the dead-letter topic.",
            self.rejected_total(),
        )?;
        metrics::counter(
            &mut enc,
            "churnwatch_ingest_batches",
            "Batches completed (their offsets stored).",
            n(&self.batches),
        )?;
        metrics::counter(
            &mut enc,
            "churnwatch_ingest_produce_retries",
            "Produce attempts that failed and were retried.",
            n(&self.produce_retries),
        )?;
        metrics::histogram(
            &mut enc,
            "churnwatch_ingest_batch_duration_seconds",
            "Seconds from a batch's poll to its offsets being stored.",
            &self.batch_seconds,
        )?;
        metrics::histogram(
            &mut enc,
            "churnwatch_ingest_batch_messages",
            "Messages per batch.",
            &self.batch_messages,
        )
    }
}

impl IngestStats {
    /// Returns the rejections so far by reason code.
    pub fn rejected_by_reason(&self) -> BTreeMap<RejectCode, u64> {
        RejectCode::ALL
            .iter()
            .zip(&self.rejected)
            .map(|(c, n)| (*c, n.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// Returns all rejections.
    pub fn rejected_total(&self) -> u64 {
        self.rejected
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .sum()
    }
}

/// Why ingest stopped.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The configuration is unusable.
    #[error("invalid order-ingest configuration: {}", .0.join("; "))]
    Config(Vec<String>),
}

/// What one message became.
enum Outcome {
    Accepted {
        key: String,
        payload: Vec<u8>,
    },
    Rejected {
        code: RejectCode,
        headers: OwnedHeaders,
    },
}

fn classify(msg: &OwnedMessage, parse: &ParseConfig, now: Timestamp) -> Outcome {
    let payload = msg.payload().unwrap_or_default();
    match parse_event(payload, now, parse) {
        Ok(event) => Outcome::Accepted {
            key: event.customer_id.clone(),
            payload: serde_json::to_vec(&event).expect("validated events serialize"),
        },
        Err(r) => {
            let partition = msg.partition().to_string();
            let offset = msg.offset().to_string();
            let headers = OwnedHeaders::new_with_capacity(6)
                .insert(Header {
                    key: "reason",
                    value: Some(r.code.as_str()),
                })
                .insert(Header {
                    key: "message",
                    value: Some(r.message.as_str()),
                })
                .insert(Header {
                    key: "field",
                    value: r.field.as_deref(),
                })
                .insert(Header {
                    key: "source_topic",
                    value: Some(msg.topic()),
                })
                .insert(Header {
                    key: "source_partition",
                    value: Some(partition.as_str()),
                })
                .insert(Header {
                    key: "source_offset",
                    value: Some(offset.as_str()),
                });
            Outcome::Rejected {
                code: r.code,
                headers,
            }
        }
    }
}

/// Runs ingest until `shutdown` is cancelled: consume, validate, produce, and store offsets
/// only after every produce of a batch is acknowledged. Blocking; run it on its own thread.
///
/// # Errors
///
/// An unusable configuration. Broker outages are waited out with retries, never returned.
pub fn run(
    config: &IngestConfig,
    consumer: &SafeConsumer,
    context: &RebalanceContext,
    producer: &FutureProducer,
    shutdown: &CancellationToken,
    stats: &Arc<IngestStats>,
) -> Result<(), IngestError> {
    let parse = config.parse_config().map_err(IngestError::Config)?;
    let topics = &config.kafka.topics;
    info!(input = %topics.orders, accepted = %topics.accepted, dlq = %topics.dlq, "order-ingest running");
    let stop = || shutdown.is_cancelled();
    while !shutdown.is_cancelled() {
        let (batch, _changes) = churnwatch_kafka::poll_batch(
            consumer,
            context,
            config.batch_size,
            config.batch_timeout,
            &stop,
        );
        if batch.is_empty() {
            continue;
        }
        let started = std::time::Instant::now();
        if !process_batch(&batch, &parse, config, producer, shutdown, stats) {
            // Shutting down before every produce was acknowledged: store nothing for this
            // batch, so it is consumed again on restart.
            break;
        }
        churnwatch_kafka::store_batch_offsets(consumer, &batch);
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats.batch_seconds.observe(started.elapsed().as_secs_f64());
        stats.batch_messages.observe(batch.len() as f64);
    }
    info!("order-ingest stopping: committing offsets");
    if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
        debug!(error = %e, "final commit");
    }
    Ok(())
}

/// Returns the offset range of each partition in a batch, e.g. `0:100-199,3:40-52`.
fn offset_ranges(batch: &[OwnedMessage]) -> String {
    let mut ranges: std::collections::BTreeMap<i32, (i64, i64)> = Default::default();
    for m in batch {
        let r = ranges
            .entry(m.partition())
            .or_insert((m.offset(), m.offset()));
        r.0 = r.0.min(m.offset());
        r.1 = r.1.max(m.offset());
    }
    ranges
        .iter()
        .map(|(p, (first, last))| format!("{p}:{first}-{last}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Produces a batch's outcomes; returns whether every produce was acknowledged.
fn process_batch(
    batch: &[OwnedMessage],
    parse: &ParseConfig,
    config: &IngestConfig,
    producer: &FutureProducer,
    shutdown: &CancellationToken,
    stats: &IngestStats,
) -> bool {
    let span = info_span!(
        "batch",
        messages = batch.len(),
        offsets = %offset_ranges(batch)
    );
    let _enter = span.enter();
    let now = churnwatch_runtime::wall_now();
    let topics = &config.kafka.topics;
    let outcomes: Vec<Outcome> = batch.iter().map(|m| classify(m, parse, now)).collect();
    // Produce everything, then wait for every acknowledgement; failed sends are retried until
    // they succeed, so the offsets stored afterwards never skip a message.
    let make = |i: usize| match &outcomes[i] {
        Outcome::Accepted { key, payload } => FutureRecord::to(&topics.accepted)
            .key(key.as_bytes())
            .payload(payload.as_slice()),
        Outcome::Rejected { headers, .. } => {
            let r = FutureRecord::to(&topics.dlq)
                .payload(batch[i].payload().unwrap_or_default())
                .headers(headers.clone());
            match batch[i].key() {
                Some(key) => r.key(key),
                None => r,
            }
        }
    };
    if !churnwatch_kafka::send_all(producer, batch.len(), &make, &|| shutdown.is_cancelled()) {
        warn!("shutting down with unacknowledged messages; their offsets are not stored");
        return false;
    }
    for outcome in &outcomes {
        match outcome {
            Outcome::Accepted { .. } => {
                stats.accepted.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Rejected { code, .. } => {
                let i = RejectCode::ALL.iter().position(|c| c == code).unwrap_or(0);
                stats.rejected[i].fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    // Last, and with Release: whoever reads `consumed` (Acquire) sees every message it counts
    // already counted as accepted or rejected.
    stats
        .consumed
        .fetch_add(batch.len() as u64, Ordering::Release);
    true
}
