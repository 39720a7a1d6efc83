//! query: materialises the compacted `customer-profiles` topic into its own sled view with
//! secondary indexes, and answers the `churnwatch.v1` gRPC API from it. It reports NOT_SERVING
//! on `grpc.health.v1` until the view has caught up with the topic's end offsets at start-up,
//! and again first thing on shutdown. An empty view directory is rebuilt from the topic.

use std::path::PathBuf;
use std::time::Duration;

use churnwatch_kafka::KafkaConfig;
use churnwatch_proto::v1::customer_query_server::CustomerQueryServer;
use churnwatch_runtime::CancellationToken;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::info;

pub mod grpc_telemetry;
pub mod materialize;
pub mod service;
pub mod view;

pub use materialize::{ViewMetrics, ViewStats};
pub use service::QueryService;
pub use view::View;

/// The configuration of query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    /// Kafka connection and topics.
    pub kafka: KafkaConfig,
    /// Client identity towards the brokers (no offsets are committed: the view keeps its own).
    pub group_id: String,
    /// Address the gRPC server listens on.
    pub grpc_addr: String,
    /// Directory of the sled view; rebuilt from the topic when empty.
    pub view_dir: PathBuf,
    /// sled page cache of the view, in MiB.
    pub view_cache_mb: u64,
    /// Most profiles applied per view batch.
    pub batch_size: usize,
    /// Longest wait for the first message of a batch.
    #[serde(with = "humantime_serde")]
    pub batch_timeout: Duration,
    /// Largest request or response message, in bytes.
    pub max_message_bytes: usize,
    /// How long shutdown waits for requests in flight.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Bearer tokens the API accepts (`authorization: Bearer <token>`); empty: no
    /// authentication. Health checks are always open.
    pub auth_tokens: Vec<String>,
    /// PEM certificate chain for TLS; with `tls_key`, the API is served over TLS only.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Changes kept for WatchRiskChanges to resume from.
    pub max_changes: u64,
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            kafka: KafkaConfig::default(),
            group_id: "churnwatch-query".into(),
            grpc_addr: "127.0.0.1:50051".into(),
            view_dir: PathBuf::from("churnwatch-view"),
            view_cache_mb: 256,
            batch_size: 10_000,
            batch_timeout: Duration::from_millis(100),
            max_message_bytes: 16 * 1024 * 1024,
            shutdown_grace: Duration::from_secs(10),
            auth_tokens: Vec::new(),
            tls_cert: None,
            tls_key: None,
            max_changes: view::DEFAULT_MAX_CHANGES,
        }
    }
}

impl QueryConfig {
    /// Returns every problem with the configuration at once.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut errors = self.kafka.validate().err().unwrap_or_default();
        if self.grpc_addr.parse::<std::net::SocketAddr>().is_err() {
            errors.push(format!(
                "grpc_addr {:?} is not an address such as 127.0.0.1:50051",
                self.grpc_addr
            ));
        }
        if self.batch_size == 0 {
            errors.push("batch_size must be at least 1".into());
        }
        if self.view_cache_mb == 0 {
            errors.push("view_cache_mb must be at least 1".into());
        }
        if self.max_message_bytes < 4096 {
            errors.push("max_message_bytes must be at least 4096".into());
        }
        if self.auth_tokens.iter().any(|t| t.len() < 16) {
            errors.push("auth_tokens must each be at least 16 characters".into());
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) | (None, Some(_)) => {
                errors.push("tls_cert and tls_key go together: give both or neither".into());
            }
            (Some(c), Some(k)) => {
                for (name, path) in [("tls_cert", c), ("tls_key", k)] {
                    if !path.is_file() {
                        errors.push(format!("{name} {} is not a readable file", path.display()));
                    }
                }
            }
            (None, None) => {}
        }
        if self.max_changes == 0 {
            errors.push("max_changes must be at least 1".into());
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

/// Why the service stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Server(#[from] tonic::transport::Error),
    /// The view could not be kept up to date.
    #[error(transparent)]
    Materialize(#[from] materialize::MaterializeError),
    /// The materialiser thread panicked.
    #[error("the view materialiser panicked")]
    Panicked,
    /// The TLS certificate or key could not be read.
    #[error("cannot read {what} {path}: {source}")]
    Tls {
        /// Which file.
        what: &'static str,
        /// Its path.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Checks `authorization: Bearer <token>` against the configured tokens (in constant time).
#[derive(Debug, Clone)]
pub struct BearerAuth {
    tokens: std::sync::Arc<Vec<String>>,
}

impl BearerAuth {
    /// Returns a check accepting `tokens`; with none, every request passes.
    pub fn new(tokens: Vec<String>) -> Self {
        Self {
            tokens: std::sync::Arc::new(tokens),
        }
    }
}

impl tonic::service::Interceptor for BearerAuth {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if self.tokens.is_empty() {
            return Ok(request);
        }
        let given = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                tonic::Status::unauthenticated(
                    "missing credentials: send the header `authorization: Bearer <token>`",
                )
            })?;
        if self
            .tokens
            .iter()
            .any(|t| constant_time_eq::constant_time_eq(t.as_bytes(), given.as_bytes()))
        {
            Ok(request)
        } else {
            Err(tonic::Status::unauthenticated(
                "the bearer token is not valid",
            ))
        }
    }
}

/// Runs the whole service until `shutdown`: the materialiser on a blocking thread keeping
/// `view` in step with the profile topic, and the API on `listener`; `readiness` follows the
/// view catching up. A failing materialiser
/// stops the service rather than leave it serving a view that no longer moves.
///
/// # Errors
///
/// When the server or the materialiser fails.
pub async fn run(
    config: QueryConfig,
    listener: TcpListener,
    view: View,
    stats: std::sync::Arc<ViewStats>,
    readiness: churnwatch_runtime::admin::Readiness,
    shutdown: CancellationToken,
) -> Result<(), QueryError> {
    let (caught_up_tx, caught_up) = watch::channel(false);
    {
        // Ready (for /readyz) once the view has caught up, as health says SERVING.
        let mut caught_up = caught_up.clone();
        tokio::spawn(async move {
            readiness.set_not_ready("the view is catching up with the profile topic");
            if caught_up.wait_for(|c| *c).await.is_ok() {
                readiness.set_ready();
            }
        });
    }
    let materializer = {
        let (config, view, shutdown, stats) = (
            config.clone(),
            view.clone(),
            shutdown.clone(),
            stats.clone(),
        );
        tokio::task::spawn_blocking(move || {
            let r = materialize::run(&config, &view, &stats, &caught_up_tx, &shutdown);
            shutdown.cancel();
            r
        })
    };
    serve(
        config,
        listener,
        view,
        caught_up,
        stats.grpc.clone(),
        shutdown,
    )
    .await?;
    materializer.await.map_err(|_| QueryError::Panicked)??;
    Ok(())
}

fn tls_config(
    config: &QueryConfig,
) -> Result<Option<tonic::transport::ServerTlsConfig>, QueryError> {
    let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) else {
        return Ok(None);
    };
    let read = |what, path: &PathBuf| {
        std::fs::read(path).map_err(|source| QueryError::Tls {
            what,
            path: path.display().to_string(),
            source,
        })
    };
    let identity =
        tonic::transport::Identity::from_pem(read("tls_cert", cert)?, read("tls_key", key)?);
    Ok(Some(
        tonic::transport::ServerTlsConfig::new().identity(identity),
    ))
}

/// Serves the API on `listener` until `shutdown`, tracing requests and counting them in `grpc_metrics`:
/// NOT_SERVING on `grpc.health.v1` until
/// `caught_up` says the view has caught up, SERVING after, NOT_SERVING again as soon as
/// shutdown begins; then requests in flight get up to `config.shutdown_grace` to finish.
///
/// # Errors
///
/// When the server fails (the listener broke).
pub async fn serve(
    config: QueryConfig,
    listener: TcpListener,
    view: View,
    mut caught_up: watch::Receiver<bool>,
    grpc_metrics: grpc_telemetry::GrpcMetrics,
    shutdown: CancellationToken,
) -> Result<(), QueryError> {
    let tls = tls_config(&config)?;
    let auth = BearerAuth::new(config.auth_tokens.clone());
    let (reporter, health) = tonic_health::server::health_reporter();
    type Server = CustomerQueryServer<QueryService>;
    reporter.set_not_serving::<Server>().await;
    reporter
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(churnwatch_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("the API's descriptor set is valid");
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(churnwatch_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .expect("the API's descriptor set is valid");
    let api = tonic::service::interceptor::InterceptedService::new(
        CustomerQueryServer::new(QueryService::new(view, shutdown.clone()))
            .max_decoding_message_size(config.max_message_bytes)
            .max_encoding_message_size(config.max_message_bytes),
        auth.clone(),
    );
    let reflection_v1 =
        tonic::service::interceptor::InterceptedService::new(reflection_v1, auth.clone());
    let reflection_v1alpha =
        tonic::service::interceptor::InterceptedService::new(reflection_v1alpha, auth);

    // Health follows the view, then shutdown.
    let health_task = {
        let reporter = reporter.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let ready = async {
                while !*caught_up.borrow_and_update() {
                    if caught_up.changed().await.is_err() {
                        return false;
                    }
                }
                true
            };
            tokio::select! {
                _ = shutdown.cancelled() => {}
                ok = ready => if ok {
                    reporter.set_serving::<Server>().await;
                    reporter.set_service_status("", tonic_health::ServingStatus::Serving).await;
                    shutdown.cancelled().await;
                }
            }
            reporter.set_not_serving::<Server>().await;
            reporter
                .set_service_status("", tonic_health::ServingStatus::NotServing)
                .await;
        })
    };

    let addr = listener.local_addr().ok();
    info!(addr = ?addr, "gRPC API listening");
    let grace = config.shutdown_grace;
    let stopping = {
        let shutdown = shutdown.clone();
        async move {
            shutdown.cancelled().await;
            // Let health checkers see NOT_SERVING before the listener closes.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    let server = builder
        .timeout(Duration::from_secs(60))
        .layer(grpc_telemetry::GrpcTelemetryLayer(grpc_metrics))
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(api)
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            stopping,
        );
    tokio::pin!(server);
    let result = tokio::select! {
        r = &mut server => r,
        _ = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(grace_secs = grace.as_secs_f64(), "requests still running after the shutdown grace; stopping anyway");
            Ok(())
        }
    };
    health_task.abort();
    Ok(result?)
}
