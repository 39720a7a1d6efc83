//! The streaming pipeline in one process: order-ingest and scoring on their own threads
//! against real brokers or librdkafka's in-process mock cluster, and a feeder that streams
//! events into the `orders` topic.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;

use anyhow::{Context, Result};
use churnwatch_kafka::KafkaConfig;
use churnwatch_kafka::rdkafka::mocking::MockCluster;
use churnwatch_kafka::rdkafka::producer::{DefaultProducerContext, FutureProducer, FutureRecord};
use churnwatch_runtime::CancellationToken;
use order_ingest::{IngestConfig, IngestStats};
use scoring::{ScoringConfig, ScoringStats};

/// An in-process Kafka-protocol broker (librdkafka's mock cluster) with churnwatch's topics.
pub struct EmbeddedBroker {
    cluster: MockCluster<'static, DefaultProducerContext>,
}

impl std::fmt::Debug for EmbeddedBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedBroker")
            .field("bootstrap", &self.cluster.bootstrap_servers())
            .finish()
    }
}

impl EmbeddedBroker {
    /// Starts the broker and creates the topics of `kafka` on it.
    pub fn start(kafka: &KafkaConfig) -> Result<Self> {
        let cluster = MockCluster::new(1).context("cannot start the embedded Kafka broker")?;
        // The mock cluster does not answer the admin API's CreateTopics, so the topics are
        // made through its own interface.
        for spec in kafka.topic_specs() {
            cluster
                .create_topic(&spec.name, spec.partitions, 1)
                .with_context(|| {
                    format!("cannot create topic {} on the embedded broker", spec.name)
                })?;
        }
        Ok(Self { cluster })
    }

    /// Returns the bootstrap servers to connect to.
    pub fn bootstrap_servers(&self) -> String {
        self.cluster.bootstrap_servers()
    }
}

/// Runs the query service (materialiser and API) on a thread of its own with its own async
/// runtime, on an already-bound non-blocking `listener`, until `shutdown`.
///
/// # Errors
///
/// When the thread cannot be started; the service's own failure is the thread's result.
pub fn spawn_query(
    config: query::QueryConfig,
    listener: std::net::TcpListener,
    view: query::View,
    stats: Arc<query::ViewStats>,
    shutdown: CancellationToken,
) -> Result<JoinHandle<Result<()>>> {
    Ok(std::thread::Builder::new()
        .name("query".into())
        .spawn(move || -> Result<()> {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("query-rt")
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                let readiness = churnwatch_runtime::admin::Readiness::not_ready("starting");
                query::run(config, listener, view, stats, readiness, shutdown).await?;
                Ok(())
            })
        })?)
}

/// The running services.
#[derive(Debug)]
pub struct Pipeline {
    /// Ingest counters.
    pub ingest: Arc<IngestStats>,
    /// Scoring counters and latest profiles.
    pub scoring: Arc<ScoringStats>,
    /// The query view's counters, once query runs.
    pub query: Option<Arc<query::ViewStats>>,
    store: churnwatch_store::Store,
    view: Option<query::View>,
    lags: Vec<churnwatch_kafka::ConsumerLag>,
    threads: Vec<(&'static str, JoinHandle<Result<()>>)>,
}

impl Pipeline {
    /// Starts order-ingest and scoring on their own threads; they stop when `shutdown` is
    /// cancelled. With `keep_profiles`, scoring's counters also keep every customer's latest
    /// profile for a live summary.
    pub fn start(
        ingest: IngestConfig,
        scoring: ScoringConfig,
        keep_profiles: bool,
        shutdown: &CancellationToken,
    ) -> Result<Self> {
        let store = churnwatch_store::Store::open_with_cache(
            &scoring.state_dir,
            scoring.state_cache_mb << 20,
        )?;
        let store_handle = store.clone();
        let ingest_stats = Arc::new(IngestStats::default());
        let scoring_stats = Arc::new(if keep_profiles {
            ScoringStats::keeping_profiles()
        } else {
            ScoringStats::default()
        });
        let (ic, ictx) = churnwatch_kafka::consumer(
            &ingest.kafka,
            "order-ingest",
            &ingest.group_id,
            &[&ingest.kafka.topics.orders],
        )?;
        let ip = churnwatch_kafka::producer(&ingest.kafka, "order-ingest")?;
        let (sc, sctx) = churnwatch_kafka::consumer(
            &scoring.kafka,
            "scoring",
            &scoring.group_id,
            &[&scoring.kafka.topics.accepted],
        )?;
        let sp = churnwatch_kafka::producer(&scoring.kafka, "scoring")?;
        let lags = vec![
            churnwatch_kafka::ConsumerLag::new(&ingest.group_id),
            churnwatch_kafka::ConsumerLag::new(&scoring.group_id),
        ];
        lags[0].watch(&ictx);
        lags[1].watch(&sctx);
        let mut threads = Vec::new();
        {
            let (stats, shutdown) = (ingest_stats.clone(), shutdown.clone());
            threads.push((
                "order-ingest",
                std::thread::Builder::new()
                    .name("order-ingest".into())
                    .spawn(move || {
                        order_ingest::run(&ingest, &ic, &ictx, &ip, &shutdown, &stats)
                            .map_err(anyhow::Error::from)
                    })?,
            ));
        }
        {
            let (stats, shutdown) = (scoring_stats.clone(), shutdown.clone());
            threads.push((
                "scoring",
                std::thread::Builder::new()
                    .name("scoring".into())
                    .spawn(move || {
                        scoring::run(&scoring, &sc, &sctx, &sp, &store, &shutdown, &stats)
                            .map_err(anyhow::Error::from)
                    })?,
            ));
        }
        Ok(Self {
            ingest: ingest_stats,
            scoring: scoring_stats,
            query: None,
            store: store_handle,
            view: None,
            lags,
            threads,
        })
    }

    /// Starts the query service on its own thread (with its own async runtime) and returns the
    /// address its gRPC API listens on.
    pub fn start_query(
        &mut self,
        config: query::QueryConfig,
        shutdown: &CancellationToken,
    ) -> Result<std::net::SocketAddr> {
        config
            .validate()
            .map_err(|e| anyhow::anyhow!("invalid query options: {}", e.join("; ")))?;
        let view = query::View::open(&config.view_dir, config.view_cache_mb << 20)?
            .with_max_changes(config.max_changes);
        let listener = std::net::TcpListener::bind(&config.grpc_addr)
            .with_context(|| format!("cannot listen on {} for the gRPC API", config.grpc_addr))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(query::ViewStats::default());
        self.query = Some(stats.clone());
        self.view = Some(view.clone());
        let shutdown = shutdown.clone();
        self.threads.push((
            "query",
            spawn_query(config, listener, view, stats, shutdown)?,
        ));
        Ok(addr)
    }

    /// Serves the admin endpoint (`/metrics` of every service running here, `/healthz`,
    /// `/readyz`) on `addr` on a thread of its own until `shutdown`; returns the address.
    pub fn start_admin(
        &mut self,
        addr: &str,
        shutdown: &CancellationToken,
    ) -> Result<std::net::SocketAddr> {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(self.ingest.clone()));
        registry.register_collector(Box::new(self.scoring.clone()));
        registry.register_collector(Box::new(scoring::StoreMetrics(self.store.clone())));
        for lag in &self.lags {
            registry.register_collector(Box::new(lag.clone()));
        }
        if let (Some(view), Some(stats)) = (&self.view, &self.query) {
            registry.register_collector(Box::new(query::ViewMetrics {
                view: view.clone(),
                stats: stats.clone(),
            }));
        }
        let listener = std::net::TcpListener::bind(addr).with_context(|| {
            format!("cannot listen on {addr} for the admin endpoint (--admin-addr)")
        })?;
        listener.set_nonblocking(true)?;
        let bound = listener.local_addr()?;
        let readiness = churnwatch_runtime::admin::Readiness::ready();
        let shutdown = shutdown.clone();
        self.threads.push((
            "admin",
            std::thread::Builder::new()
                .name("admin".into())
                .spawn(move || -> Result<()> {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    runtime.block_on(async move {
                        let listener = tokio::net::TcpListener::from_std(listener)?;
                        churnwatch_runtime::admin::serve_admin(
                            listener,
                            Arc::new(registry),
                            readiness,
                            shutdown,
                        )
                        .await?;
                        Ok(())
                    })
                })?,
        ));
        Ok(bound)
    }

    /// Returns whether every service thread is still running.
    pub fn running(&self) -> bool {
        self.threads.iter().all(|(_, t)| !t.is_finished())
    }

    /// Waits for the services to stop (after the shutdown token was cancelled).
    pub fn join(self) -> Result<()> {
        for (name, t) in self.threads {
            match t.join() {
                Ok(r) => r.with_context(|| format!("{name} failed"))?,
                Err(_) => anyhow::bail!("{name} panicked"),
            }
        }
        Ok(())
    }

    /// Returns whether everything fed so far went through both services.
    pub fn caught_up(&self, fed: u64) -> bool {
        let i = &self.ingest;
        // Acquire pairs with ingest's Release: `accepted` is complete for what `consumed` counts.
        let consumed = i.consumed.load(Ordering::Acquire);
        let accepted = i.accepted.load(Ordering::Relaxed);
        let s = &self.scoring;
        let scored = s.applied.load(Ordering::Relaxed)
            + s.duplicates.load(Ordering::Relaxed)
            + s.invalid.load(Ordering::Relaxed);
        consumed >= fed && scored >= accepted && i.batches.load(Ordering::Relaxed) > 0
    }
}

/// Produces messages to `topic`, keyed, waiting for every acknowledgement at the end; stops
/// early (with what was sent so far acknowledged) once `stop` says so, e.g. on Ctrl-C.
pub fn feed<'a>(
    producer: &FutureProducer,
    topic: &str,
    messages: impl Iterator<Item = (String, Vec<u8>)> + 'a,
    progress: &indicatif::ProgressBar,
    stop: &CancellationToken,
) -> Result<u64> {
    let mut in_flight = Vec::with_capacity(FEED_WINDOW);
    let mut sent = 0u64;
    for (key, payload) in messages {
        if stop.is_cancelled() {
            break;
        }
        let record = FutureRecord::to(topic)
            .key(key.as_bytes())
            .payload(payload.as_slice());
        in_flight.push(churnwatch_kafka::send(producer, record));
        sent += 1;
        if in_flight.len() >= FEED_WINDOW {
            settle(&mut in_flight)?;
            progress.set_position(sent);
        }
    }
    settle(&mut in_flight)?;
    progress.set_position(sent);
    Ok(sent)
}

/// Messages in flight before the feeder waits for their acknowledgements.
const FEED_WINDOW: usize = 10_000;

fn settle(in_flight: &mut Vec<churnwatch_kafka::rdkafka::producer::DeliveryFuture>) -> Result<()> {
    // Drained, not taken: the vector keeps its capacity for the next window.
    for r in futures::executor::block_on(futures::future::join_all(in_flight.drain(..))) {
        match r {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => anyhow::bail!("the broker refused an event: {e}"),
            Err(_) => anyhow::bail!("the producer was closed while feeding"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use scoring::ClockKind;

    fn wait(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if done() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    #[test]
    fn a_redelivered_feed_of_nothing_but_duplicates_is_counted_through() {
        let kafka = KafkaConfig {
            partitions: 1,
            ..KafkaConfig::default()
        };
        let broker = EmbeddedBroker::start(&kafka).unwrap();
        let kafka = KafkaConfig {
            brokers: broker.bootstrap_servers(),
            ..kafka
        };
        let state = tempfile::tempdir().unwrap();
        let shutdown = CancellationToken::new();
        let pipeline = Pipeline::start(
            IngestConfig {
                kafka: kafka.clone(),
                ..IngestConfig::default()
            },
            ScoringConfig {
                kafka: kafka.clone(),
                state_dir: state.path().to_owned(),
                clock: ClockKind::Event,
                refit_interval: None,
                event_refit_interval: None,
                ..ScoringConfig::default()
            },
            false,
            &shutdown,
        )
        .unwrap();
        let orders: Vec<(String, Vec<u8>)> = (0..40)
            .map(|n| {
                let json = format!(
                    r#"{{"type":"order","event_id":"e{n}","order_id":"o{n}","customer_id":"c{}","occurred_at":"2025-01-{:02}T10:00:00Z","currency":"USD","total":"20.00"}}"#,
                    n % 7,
                    1 + n % 28
                );
                (format!("c{}", n % 7), json.into_bytes())
            })
            .collect();
        let producer = churnwatch_kafka::producer(&kafka, "test-feed").unwrap();
        let bar = indicatif::ProgressBar::hidden();
        let limit = Duration::from_secs(60);
        feed(
            &producer,
            &kafka.topics.orders,
            orders.clone().into_iter(),
            &bar,
            &shutdown,
        )
        .unwrap();
        assert!(wait(limit, || pipeline.caught_up(40)), "the first feed");
        // The same events again arrive in batches that hold only duplicates and write nothing;
        // they must still be counted, or the pipeline never looks caught up.
        feed(
            &producer,
            &kafka.topics.orders,
            orders.into_iter(),
            &bar,
            &shutdown,
        )
        .unwrap();
        assert!(
            wait(limit, || pipeline.caught_up(80)),
            "duplicates counted: {}",
            pipeline.scoring.duplicates.load(Ordering::Relaxed)
        );
        assert_eq!(pipeline.scoring.applied.load(Ordering::Relaxed), 40);
        assert_eq!(pipeline.scoring.duplicates.load(Ordering::Relaxed), 40);
        shutdown.cancel();
        pipeline.join().unwrap();
    }
}
