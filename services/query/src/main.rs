//! The `query` binary: reads configuration, sets up tracing and signals, opens the view, and
//! runs the materialiser beside the gRPC server.

/// Services allocate and free many small buffers per message; mimalloc serves them faster than
/// the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use churnwatch_runtime::{Overrides, ServiceArgs, shutdown_on_signals};
use clap::Parser;
use query::{QueryConfig, View, ViewStats};

/// Materialises the compacted `customer-profiles` topic into a read-optimised sled view and
/// serves the churnwatch.v1 gRPC API from it: customer lookups, filtered and ordered customer
/// lists, stage counts and moves, the retention, profitability and campaign reports, a live
/// stream of risk and stage changes and bulk export, with grpc.health.v1 and server
/// reflection. Reports NOT_SERVING until the view has caught up with the topic's end offsets
/// at start-up.
///
/// Configuration is layered: built-in defaults < the TOML file given with --config < the
/// CHURNWATCH_* environment variables < these flags. The view can always be rebuilt: stop
/// query, empty --view-dir and start it again; it reads the topic from the beginning.
/// SIGTERM/SIGINT report NOT_SERVING, let requests in flight finish, flush the view and exit.
/// With --auth-token the API and reflection need `authorization: Bearer <token>` (health stays
/// open for probes); with --tls-cert and --tls-key the server speaks TLS only.
#[derive(Debug, Parser)]
#[command(name = "query", version, about, long_about)]
struct Args {
    #[command(flatten)]
    common: ServiceArgs,
    /// Address the gRPC server listens on [default: 127.0.0.1:50051].
    #[arg(long, env = "CHURNWATCH_GRPC_ADDR")]
    grpc_addr: Option<String>,
    /// Directory of the sled view; rebuilt from the topic when empty [default: ./churnwatch-view].
    #[arg(long, env = "CHURNWATCH_VIEW_DIR")]
    view_dir: Option<PathBuf>,
    /// sled page cache of the view in MiB [default: 256].
    #[arg(long, env = "CHURNWATCH_VIEW_CACHE_MB")]
    view_cache_mb: Option<u64>,
    /// Bearer token the API accepts (repeatable; at least 16 characters); without any the API
    /// is open. Clients send `authorization: Bearer <token>`.
    #[arg(
        long = "auth-token",
        value_name = "TOKEN",
        env = "CHURNWATCH_AUTH_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    auth_tokens: Vec<String>,
    /// PEM certificate chain: serve the API over TLS (with --tls-key).
    #[arg(long, env = "CHURNWATCH_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "CHURNWATCH_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Compacted topic of customer profiles [default: customer-profiles].
    #[arg(long, env = "CHURNWATCH_PROFILES_TOPIC")]
    profiles_topic: Option<String>,
}

fn overrides(a: &Args) -> Result<Overrides> {
    let mut o = a.common.overrides().map_err(anyhow::Error::msg)?;
    o.set("kafka.topics.profiles", a.profiles_topic.as_ref())
        .set("grpc_addr", a.grpc_addr.as_ref())
        .set("view_dir", a.view_dir.as_ref())
        .set("view_cache_mb", a.view_cache_mb)
        .set("tls_cert", a.tls_cert.as_ref())
        .set("tls_key", a.tls_key.as_ref())
        .set(
            "auth_tokens",
            (!a.auth_tokens.is_empty()).then_some(&a.auth_tokens),
        );
    Ok(o)
}

fn main() -> Result<()> {
    let args = Args::parse();
    // The guard outlives the runtime: dropping it last exports the final spans.
    let (config, _tracing): (QueryConfig, _) = args
        .common
        .configure(overrides(&args)?, "query")
        .map_err(anyhow::Error::msg)?;
    config
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid configuration:\n  - {}", e.join("\n  - ")))?;
    let view = View::open(&config.view_dir, config.view_cache_mb << 20)?
        .with_max_changes(config.max_changes);
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let shutdown = shutdown_on_signals();
        let listener = tokio::net::TcpListener::bind(&config.grpc_addr)
            .await
            .with_context(|| format!("cannot listen on {} (--grpc-addr)", config.grpc_addr))?;
        let stats = Arc::new(ViewStats::default());
        let readiness = args
            .common
            .start_admin(
                "127.0.0.1:9103",
                vec![Box::new(query::ViewMetrics {
                    view: view.clone(),
                    stats: stats.clone(),
                })],
                "starting",
                shutdown.clone(),
            )
            .await
            .map_err(anyhow::Error::msg)?;
        query::run(config, listener, view, stats, readiness, shutdown).await?;
        Ok(())
    })
}
