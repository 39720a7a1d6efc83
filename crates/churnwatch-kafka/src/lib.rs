//! Kafka plumbing shared by every churnwatch service: one configuration (brokers, client and
//! group ids, topic names, and any librdkafka property passed through, so SASL/SSL to a managed
//! Kafka works), topic bootstrap, consumers that store an offset only after the work it covers
//! is durable, a rebalance context that commits what is done before a partition moves, and
//! idempotent producers.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::OwnedMessage;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};

pub use rdkafka;

/// Errors of the Kafka layer, each naming what to check.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A client could not be created (usually a bad librdkafka property).
    #[error(
        "cannot create the Kafka {role} client: {source}; check brokers and --kafka-property values"
    )]
    Client {
        /// Which client.
        role: &'static str,
        /// librdkafka's complaint.
        #[source]
        source: KafkaError,
    },
    /// The brokers did not answer.
    #[error(
        "Kafka brokers {brokers} did not answer ({source}); check that they run and are reachable"
    )]
    Unreachable {
        /// The bootstrap servers.
        brokers: String,
        /// librdkafka's complaint.
        #[source]
        source: KafkaError,
    },
    /// A topic exists with another partition count than configured.
    #[error(
        "topic {topic} has {actual} partitions but {expected} are configured; set partitions = {actual} (or recreate the topic) so keys keep landing on the same partitions"
    )]
    PartitionMismatch {
        /// The topic.
        topic: String,
        /// Configured partitions.
        expected: i32,
        /// Partitions on the broker.
        actual: i32,
    },
    /// Creating a topic failed.
    #[error("cannot create topic {topic}: {message}")]
    CreateTopic {
        /// The topic.
        topic: String,
        /// What the broker said.
        message: String,
    },
}

/// The Kafka layer's result type.
pub type Result<T> = std::result::Result<T, Error>;

/// Topic names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Topics {
    /// Raw purchase events.
    pub orders: String,
    /// Validated events keyed by customer.
    pub accepted: String,
    /// Rejected messages with their reason.
    pub dlq: String,
    /// Risk-level changes.
    pub risk: String,
    /// Stage changes.
    pub stage: String,
    /// Customer profiles (compacted).
    pub profiles: String,
}

impl Default for Topics {
    fn default() -> Self {
        Self {
            orders: "orders".into(),
            accepted: "orders-accepted".into(),
            dlq: "orders-dlq".into(),
            risk: "customer-risk".into(),
            stage: "customer-stage".into(),
            profiles: "customer-profiles".into(),
        }
    }
}

/// How every service connects to Kafka.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port[,host:port...]`.
    pub brokers: String,
    /// Prefix of the client ids (the role is appended).
    pub client_id: String,
    /// Topic names.
    pub topics: Topics,
    /// Partitions of topics created at bootstrap.
    pub partitions: i32,
    /// Replication factor of topics created at bootstrap.
    pub replication_factor: i32,
    /// Whether to create missing topics at start-up.
    pub create_topics: bool,
    /// Extra librdkafka properties, e.g. `security.protocol = "SASL_SSL"`.
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            client_id: "churnwatch".into(),
            topics: Topics::default(),
            partitions: 4,
            replication_factor: 1,
            create_topics: true,
            properties: BTreeMap::new(),
        }
    }
}

/// A topic churnwatch needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    /// Name.
    pub name: String,
    /// Partitions.
    pub partitions: i32,
    /// Whether the topic is compacted (latest value per key).
    pub compacted: bool,
}

impl KafkaConfig {
    /// Returns a client configuration for `role` with the pass-through properties applied last.
    pub fn client(&self, role: &str) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        c.set("client.id", format!("{}-{role}", self.client_id));
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }

    /// Returns a consumer configuration: offsets are stored explicitly (only after the work
    /// they cover is durable) and committed in the background and on rebalance.
    pub fn consumer(&self, role: &str, group_id: &str) -> ClientConfig {
        let mut c = self.client(role);
        c.set("group.id", group_id)
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            // Statistics (every 5 s) carry each partition's consumer lag for the metrics.
            .set("statistics.interval.ms", "5000")
            // How long a fetch may wait for data. Kafka answers as soon as data arrives, so
            // this only bounds idle fetches; brokers such as tansu hold every fetch this long,
            // which puts it straight into each hop's latency (librdkafka's default is 500).
            .set("fetch.wait.max.ms", "20");
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        // These two make the delivery guarantee; a pass-through property must not undo them.
        c.set("enable.auto.offset.store", "false");
        c
    }

    /// Returns an idempotent producer configuration (`acks=all`, `enable.idempotence=true`).
    pub fn producer(&self, role: &str) -> ClientConfig {
        let mut c = self.client(role);
        c.set("linger.ms", "5")
            .set("compression.type", "lz4")
            .set("message.timeout.ms", "300000");
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c.set("enable.idempotence", "true").set("acks", "all");
        c
    }

    /// Returns the topics churnwatch uses, with the profile topic compacted.
    pub fn topic_specs(&self) -> Vec<TopicSpec> {
        let t = &self.topics;
        [
            (&t.orders, false),
            (&t.accepted, false),
            (&t.dlq, false),
            (&t.risk, false),
            (&t.stage, false),
            (&t.profiles, true),
        ]
        .into_iter()
        .map(|(name, compacted)| TopicSpec {
            name: name.clone(),
            partitions: self.partitions,
            compacted,
        })
        .collect()
    }

    /// Returns every problem with the configuration at once.
    pub fn validate(&self) -> std::result::Result<(), Vec<String>> {
        let mut errors = Vec::new();
        if self.brokers.trim().is_empty() {
            errors.push("brokers must name at least one host:port".to_owned());
        }
        if self.partitions < 1 {
            errors.push(format!(
                "partitions must be at least 1, not {}",
                self.partitions
            ));
        }
        if self.replication_factor < 1 {
            errors.push(format!(
                "replication_factor must be at least 1, not {}",
                self.replication_factor
            ));
        }
        let t = &self.topics;
        let names = [
            &t.orders,
            &t.accepted,
            &t.dlq,
            &t.risk,
            &t.stage,
            &t.profiles,
        ];
        for (i, n) in names.iter().enumerate() {
            if n.is_empty() {
                errors.push("topic names must not be empty".to_owned());
            } else if names[..i].contains(n) {
                errors.push(format!("topic {n} is configured for two purposes"));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

/// Returns the partition count of each existing topic among `names`.
pub fn partition_counts(
    config: &KafkaConfig,
    names: &[&str],
    timeout: Duration,
) -> Result<BTreeMap<String, i32>> {
    let probe: BaseConsumer =
        config
            .client("metadata")
            .create()
            .map_err(|source| Error::Client {
                role: "metadata",
                source,
            })?;
    let metadata = probe
        .fetch_metadata(None, timeout)
        .map_err(|source| Error::Unreachable {
            brokers: config.brokers.clone(),
            source,
        })?;
    Ok(metadata
        .topics()
        .iter()
        .filter(|t| names.contains(&t.name()) && t.error().is_none() && !t.partitions().is_empty())
        .map(|t| (t.name().to_owned(), t.partitions().len() as i32))
        .collect())
}

/// Creates the missing topics through the admin API and refuses to go on when an existing
/// topic's partition count disagrees with the configuration.
pub async fn bootstrap_topics(config: &KafkaConfig, timeout: Duration) -> Result<()> {
    let specs = config.topic_specs();
    let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    let existing = partition_counts(config, &names, timeout)?;
    check_partitions(&specs, &existing)?;
    let missing: Vec<&TopicSpec> = specs
        .iter()
        .filter(|s| !existing.contains_key(&s.name))
        .collect();
    if missing.is_empty() || !config.create_topics {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> =
        config
            .client("admin")
            .create()
            .map_err(|source| Error::Client {
                role: "admin",
                source,
            })?;
    let new: Vec<NewTopic<'_>> = missing
        .iter()
        .map(|s| {
            let t = NewTopic::new(
                &s.name,
                s.partitions,
                TopicReplication::Fixed(config.replication_factor),
            );
            if s.compacted {
                t.set("cleanup.policy", "compact")
            } else {
                t
            }
        })
        .collect();
    let options = AdminOptions::new()
        .operation_timeout(Some(timeout))
        .request_timeout(Some(timeout));
    let results = admin
        .create_topics(&new, &options)
        .await
        .map_err(|source| Error::Unreachable {
            brokers: config.brokers.clone(),
            source,
        })?;
    for result in results {
        match result {
            Ok(topic) => info!(topic, "created topic"),
            Err((topic, RDKafkaErrorCode::TopicAlreadyExists)) => {
                info!(topic, "topic already exists")
            }
            Err((topic, code)) => {
                return Err(Error::CreateTopic {
                    topic,
                    message: code.to_string(),
                });
            }
        }
    }
    // Another instance may have created a topic concurrently with other settings.
    check_partitions(&specs, &partition_counts(config, &names, timeout)?)
}

fn check_partitions(specs: &[TopicSpec], existing: &BTreeMap<String, i32>) -> Result<()> {
    for spec in specs {
        if let Some(&actual) = existing.get(&spec.name)
            && actual != spec.partitions
        {
            return Err(Error::PartitionMismatch {
                topic: spec.name.clone(),
                expected: spec.partitions,
                actual,
            });
        }
    }
    Ok(())
}

/// What happened to a consumer's assignment since the processing loop last looked.
#[derive(Debug, Default)]
pub struct AssignmentChanges {
    /// Partitions (topic, partition) assigned.
    pub assigned: Vec<(String, i32)>,
    /// Partitions revoked; buffered messages of these must be dropped, not processed.
    pub revoked: Vec<(String, i32)>,
}

/// A consumer context that commits the stored offsets before partitions are revoked (the work
/// they cover is already durable, since offsets are stored only after it is) and tells the
/// processing loop which partitions came and went.
///
/// It also checks that what arrives is contiguous: the input topics are not compacted and
/// their producers are not transactional, so after offset `n` of a partition (or its committed
/// offset `n + 1` at assignment) the next message must be `n + 1`. A jump means the broker
/// skipped messages — data loss this consumer cannot repair — and is logged as an error and
/// counted ([`RebalanceContext::skipped`], exported by [`ConsumerLag`]), never passed over in
/// silence.
#[derive(Debug, Clone, Default)]
pub struct RebalanceContext {
    changes: Arc<Mutex<AssignmentChanges>>,
    /// Per topic, per partition: the offset expected next.
    next: Arc<Mutex<HashMap<String, HashMap<i32, i64>>>>,
    skipped: Arc<std::sync::atomic::AtomicU64>,
    /// Per topic and partition: messages behind the log end, from librdkafka's statistics.
    lags: Arc<Mutex<BTreeMap<(String, i32), i64>>>,
}

impl RebalanceContext {
    /// Returns the consumer lag of each partition this consumer fetches (messages between
    /// its position and the log end), as of librdkafka's latest statistics
    /// (`statistics.interval.ms`).
    pub fn lags(&self) -> BTreeMap<(String, i32), i64> {
        self.lags.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Returns and clears the assignment changes seen since the last call.
    pub fn take_changes(&self) -> AssignmentChanges {
        std::mem::take(&mut *self.changes.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Returns how many messages the broker skipped (offsets that never arrived) so far.
    pub fn skipped(&self) -> u64 {
        self.skipped.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Checks a polled message against the offset expected next in its partition.
    fn check_continuity(&self, m: &OwnedMessage) {
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        // Looked up by &str: no allocation per message once the topic is known.
        let partitions = match next.get_mut(m.topic()) {
            Some(partitions) => partitions,
            None => next.entry(m.topic().to_owned()).or_default(),
        };
        let expected = partitions.insert(m.partition(), m.offset() + 1);
        if let Some(expected) = expected
            && m.offset() > expected
        {
            let missing = m.offset() - expected;
            self.skipped
                .fetch_add(missing as u64, std::sync::atomic::Ordering::Relaxed);
            error!(
                topic = m.topic(),
                partition = m.partition(),
                expected,
                got = m.offset(),
                missing,
                "the broker skipped messages: offsets {expected}..{} never arrived (a broker fault; they are not processed)",
                m.offset() - 1
            );
        }
    }
}

fn partitions_of(tpl: &TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect()
}

impl ClientContext for RebalanceContext {
    fn stats(&self, statistics: rdkafka::Statistics) {
        let mut lags = BTreeMap::new();
        for (topic, t) in &statistics.topics {
            for (id, p) in &t.partitions {
                // Partition -1 is librdkafka's internal "unassigned" queue; a lag of -1 means
                // not known yet (no position or no log end).
                if *id >= 0 && p.consumer_lag >= 0 {
                    lags.insert((topic.clone(), *id), p.consumer_lag);
                }
            }
        }
        *self.lags.lock().unwrap_or_else(|p| p.into_inner()) = lags;
    }
}

impl ConsumerContext for RebalanceContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let revoked = partitions_of(tpl);
            info!(?revoked, "partitions revoked; committing stored offsets");
            // Offsets stored so far cover durable work only, so committing them now hands the
            // partitions over exactly where this consumer's durable progress ends.
            if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync)
                && !matches!(e, KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset))
            {
                warn!(error = %e, "commit before revocation failed; the next owner will redo uncommitted work");
            }
            self.changes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .revoked
                .extend(revoked);
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let assigned = partitions_of(tpl);
                // Where each partition resumes: the first message must be this offset.
                let committed = consumer.committed_offsets((*tpl).clone(), Duration::from_secs(10));
                {
                    let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
                    for (topic, partition) in &assigned {
                        if let Some(partitions) = next.get_mut(topic) {
                            partitions.remove(partition);
                        }
                    }
                    if let Ok(committed) = &committed {
                        for e in committed.elements() {
                            if let Offset::Offset(o) = e.offset() {
                                next.entry(e.topic().to_owned())
                                    .or_default()
                                    .insert(e.partition(), o);
                            }
                        }
                    }
                }
                info!(?assigned, "partitions assigned");
                self.changes
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .assigned
                    .extend(assigned);
            }
            Rebalance::Error(e) => warn!(error = %e, "rebalance error"),
            Rebalance::Revoke(_) => {}
        }
    }
}

/// Exposes a consumer's lag per partition as the gauge `churnwatch_consumer_lag_messages`
/// {group, topic, partition}; empty until the consumer exists and librdkafka reported
/// statistics.
#[derive(Debug, Clone, Default)]
pub struct ConsumerLag {
    group: String,
    context: Arc<std::sync::OnceLock<RebalanceContext>>,
}

impl ConsumerLag {
    /// Returns the lag gauge of the consumer group `group`.
    pub fn new(group: &str) -> Self {
        Self {
            group: group.to_owned(),
            context: Arc::default(),
        }
    }

    /// Starts reporting the consumer of `context`.
    pub fn watch(&self, context: &RebalanceContext) {
        let _ = self.context.set(context.clone());
    }
}

impl prometheus_client::collector::Collector for ConsumerLag {
    fn encode(
        &self,
        mut enc: prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> std::fmt::Result {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::gauge::ConstGauge;
        let mut family = enc.encode_descriptor(
            "churnwatch_consumer_lag_messages",
            "Messages between the consumer's position and the partition's log end.",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        if let Some(context) = self.context.get() {
            for ((topic, partition), lag) in context.lags() {
                let labels = [
                    ("group", self.group.clone()),
                    ("topic", topic),
                    ("partition", partition.to_string()),
                ];
                ConstGauge::new(lag).encode(family.encode_family(&labels)?)?;
            }
        }
        let skipped = self.context.get().map_or(0, RebalanceContext::skipped);
        let counter = prometheus_client::metrics::counter::ConstCounter::new(skipped);
        counter.encode(
            enc.encode_descriptor(
                "churnwatch_consumer_messages_skipped",
                "Messages the broker never delivered: offsets missing between consecutive messages of a partition (data loss; see the consumer's error log).",
                None,
                counter.metric_type(),
            )?
            .encode_family(&[("group", self.group.as_str())])?,
        )
    }
}

/// A consumer whose offsets are stored by hand.
pub type SafeConsumer = BaseConsumer<RebalanceContext>;

/// Creates a consumer in `group_id` subscribed to `topics`.
pub fn consumer(
    config: &KafkaConfig,
    role: &'static str,
    group_id: &str,
    topics: &[&str],
) -> Result<(SafeConsumer, RebalanceContext)> {
    let context = RebalanceContext::default();
    let consumer: SafeConsumer = config
        .consumer(role, group_id)
        .create_with_context(context.clone())
        .map_err(|source| Error::Client { role, source })?;
    consumer
        .subscribe(topics)
        .map_err(|source| Error::Client { role, source })?;
    Ok((consumer, context))
}

/// Creates an idempotent producer.
pub fn producer(config: &KafkaConfig, role: &'static str) -> Result<FutureProducer> {
    config
        .producer(role)
        .create()
        .map_err(|source| Error::Client { role, source })
}

/// Polls up to `max` messages — waiting at most `timeout` for the first, then taking only what
/// is already fetched (less once `stop` says so) — and returns them with the assignment changes
/// that happened meanwhile.
///
/// A rebalance runs inside `poll`. Messages buffered before a revocation belong to the old
/// assignment: their offsets were not stored, so the next owner (or this consumer, when the
/// partition comes straight back) fetches them again from the committed offset; they are
/// dropped here at once. Messages polled after it belong to the new assignment and are kept.
pub fn poll_batch(
    consumer: &SafeConsumer,
    context: &RebalanceContext,
    max: usize,
    timeout: Duration,
    stop: &dyn Fn() -> bool,
) -> (Vec<OwnedMessage>, AssignmentChanges) {
    let mut batch: Vec<OwnedMessage> = Vec::with_capacity(max.min(4096));
    let mut changes = AssignmentChanges::default();
    let deadline = std::time::Instant::now() + timeout;
    while batch.len() < max && !stop() {
        // Wait up to the deadline for the first message; after that take only what is already
        // fetched. Under load the local queue holds whole fetch responses, so batches grow by
        // themselves; when traffic is light a message is processed at once instead of waiting
        // for company.
        let left = if batch.is_empty() {
            deadline.saturating_duration_since(std::time::Instant::now())
        } else {
            Duration::ZERO
        };
        let polled = consumer.poll(left).map(|r| r.map(|m| m.detach()));
        let drained = polled.is_none() && (!batch.is_empty() || left.is_zero());
        let now = context.take_changes();
        if !now.revoked.is_empty() {
            batch.retain(|m| {
                !now.revoked
                    .iter()
                    .any(|(t, p)| t == m.topic() && *p == m.partition())
            });
        }
        changes.revoked.extend(now.revoked);
        changes.assigned.extend(now.assigned);
        match polled {
            Some(Ok(m)) => {
                context.check_continuity(&m);
                batch.push(m);
            }
            Some(Err(e)) => {
                warn!(error = %e, "consumer error; retrying");
                std::thread::sleep(Duration::from_millis(200));
            }
            None => {}
        }
        if drained {
            break;
        }
    }
    (batch, changes)
}

/// Stores, per partition, the offset after the last message of `batch`: call only once the
/// work the batch caused is durable and acknowledged.
pub fn store_batch_offsets(consumer: &SafeConsumer, batch: &[OwnedMessage]) {
    let mut next: BTreeMap<(&str, i32), i64> = BTreeMap::new();
    for m in batch {
        let e = next.entry((m.topic(), m.partition())).or_insert(0);
        *e = (*e).max(m.offset() + 1);
    }
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), offset) in next {
        if let Err(e) = tpl.add_partition_offset(topic, partition, Offset::Offset(offset)) {
            warn!(error = %e, topic, partition, "cannot record offset");
        }
    }
    if let Err(e) = consumer.store_offsets(&tpl) {
        // Typically the partition was revoked meanwhile; the new owner redoes the batch.
        warn!(error = %e, "cannot store offsets; the batch will be redelivered");
    }
}

/// Enqueues a record, waiting while the producer's local queue is full.
pub fn send(producer: &FutureProducer, mut record: FutureRecord<'_, [u8], [u8]>) -> DeliveryFuture {
    loop {
        match producer.send_result(record) {
            Ok(future) => return future,
            Err((_, r)) => {
                record = r;
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

/// Sends `count` records built by `make` and waits for every acknowledgement, re-sending
/// failures with backoff until all are acknowledged (true) or `stop` says to give up (false).
pub fn send_all<'a>(
    producer: &FutureProducer,
    count: usize,
    make: &dyn Fn(usize) -> FutureRecord<'a, [u8], [u8]>,
    stop: &dyn Fn() -> bool,
) -> bool {
    let mut pending: Vec<usize> = (0..count).collect();
    let mut backoff = Duration::from_millis(100);
    while !pending.is_empty() {
        let futures: Vec<DeliveryFuture> =
            pending.iter().map(|i| send(producer, make(*i))).collect();
        let results = futures::executor::block_on(futures::future::join_all(futures));
        pending = pending
            .into_iter()
            .zip(results)
            .filter_map(|(i, res)| match res {
                Ok(Ok(_)) => None,
                Ok(Err((e, _))) => {
                    warn!(error = %e, "produce failed; will retry");
                    Some(i)
                }
                Err(_) => Some(i),
            })
            .collect();
        if !pending.is_empty() {
            if stop() {
                return false;
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
    true
}

/// Runs [`bootstrap_topics`] until the brokers answer, retrying with backoff up to 30 s
/// between attempts (a broker that is down at start-up is waited for, not fatal); returns
/// `Ok(false)` when `stop` is cancelled first. Configuration errors are returned at once.
pub async fn bootstrap_topics_waiting(
    config: &KafkaConfig,
    stop: &tokio_util::sync::CancellationToken,
) -> Result<bool> {
    let mut backoff = Duration::from_secs(1);
    loop {
        match bootstrap_topics(config, Duration::from_secs(10)).await {
            Ok(()) => return Ok(true),
            Err(e @ Error::Unreachable { .. }) => {
                warn!(error = %e, retry_in_secs = backoff.as_secs(), "waiting for the Kafka brokers");
            }
            Err(e) => return Err(e),
        }
        tokio::select! {
            _ = stop.cancelled() => return Ok(false),
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(partition: i32, offset: i64) -> OwnedMessage {
        OwnedMessage::new(
            None,
            None,
            "orders".into(),
            rdkafka::Timestamp::NotAvailable,
            partition,
            offset,
            None,
        )
    }

    #[test]
    fn offsets_the_broker_never_delivered_are_counted_as_skipped() {
        let context = RebalanceContext::default();
        // Unknown start (no committed offset): whatever comes first is accepted.
        context.check_continuity(&message(0, 10));
        context.check_continuity(&message(0, 11));
        // Redelivery of an earlier offset is not a gap.
        context.check_continuity(&message(0, 5));
        assert_eq!(context.skipped(), 0);
        context.check_continuity(&message(0, 6));
        context.check_continuity(&message(0, 9));
        assert_eq!(context.skipped(), 2, "offsets 7 and 8 never arrived");
        // Partitions are tracked apart; a committed offset seeds the expectation.
        context
            .next
            .lock()
            .unwrap()
            .entry("orders".into())
            .or_default()
            .insert(1, 100);
        context.check_continuity(&message(1, 100));
        assert_eq!(context.skipped(), 2);
        context.check_continuity(&message(1, 104));
        assert_eq!(context.skipped(), 5);
    }

    #[test]
    fn pass_through_properties_cannot_weaken_the_delivery_guarantees() {
        let mut config = KafkaConfig::default();
        config
            .properties
            .insert("security.protocol".into(), "SASL_SSL".into());
        config
            .properties
            .insert("enable.idempotence".into(), "false".into());
        config
            .properties
            .insert("enable.auto.offset.store".into(), "true".into());
        let p = config.producer("test");
        assert_eq!(p.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(p.get("enable.idempotence"), Some("true"));
        assert_eq!(p.get("acks"), Some("all"));
        let c = config.consumer("test", "g");
        assert_eq!(c.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(c.get("group.id"), Some("g"));
    }

    #[test]
    fn only_the_profile_topic_is_compacted() {
        let specs = KafkaConfig::default().topic_specs();
        assert_eq!(specs.len(), 6);
        let compacted: Vec<_> = specs
            .iter()
            .filter(|s| s.compacted)
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(compacted, vec!["customer-profiles"]);
    }

    #[test]
    fn a_partition_count_mismatch_names_the_fix() {
        let specs = KafkaConfig::default().topic_specs();
        let existing: BTreeMap<String, i32> = [("orders".to_owned(), 12)].into();
        let err = check_partitions(&specs, &existing).unwrap_err().to_string();
        assert!(
            err.contains("orders has 12 partitions but 4") && err.contains("partitions = 12"),
            "{err}"
        );
    }

    #[test]
    fn configuration_problems_are_reported_together() {
        let config = KafkaConfig {
            brokers: " ".into(),
            partitions: 0,
            topics: Topics {
                dlq: "orders".into(),
                ..Topics::default()
            },
            ..KafkaConfig::default()
        };
        let errors = config.validate().unwrap_err();
        assert_eq!(errors.len(), 3, "{errors:?}");
    }

    #[test]
    fn unreachable_brokers_are_reported_not_hung_on() {
        let config = KafkaConfig {
            brokers: "127.0.0.1:1".into(),
            ..KafkaConfig::default()
        };
        let err = partition_counts(&config, &["orders"], Duration::from_millis(500))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("127.0.0.1:1") && err.contains("reachable"),
            "{err}"
        );
    }
}
