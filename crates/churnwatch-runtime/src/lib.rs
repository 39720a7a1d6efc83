//! What every churnwatch service process needs around its work: configuration layered as
//! defaults < TOML file < `CHURNWATCH_*` environment < command-line flags, tracing set-up
//! (`--log-format json|pretty`, `--log-level`), a shutdown token cancelled by SIGTERM or
//! SIGINT, and the admin HTTP endpoint (`/metrics`, `/healthz`, `/readyz`). Built with the
//! `otlp` feature, spans are also exported over OTLP/HTTP (`--otlp-endpoint`).

pub mod admin;
pub mod metrics;
mod telemetry;

pub use telemetry::{TracingGuard, continue_remote_trace, init_tracing, install_tracing};

use std::path::Path;

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use serde::Serialize;
use serde::de::DeserializeOwned;
pub use tokio_util::sync::CancellationToken;

/// A configuration that could not be loaded, with every problem found.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  - {}", problems.join("\n  - "))]
pub struct ConfigError {
    /// Each problem, naming the key or flag to fix.
    pub problems: Vec<String>,
}

impl ConfigError {
    /// Returns an error holding these problems.
    pub fn new(problems: Vec<String>) -> Self {
        Self { problems }
    }
}

/// Loads a configuration: the type's defaults, then the TOML `file` if given, then
/// `overrides` (the values of flags and `CHURNWATCH_*` variables the user set, as JSON; clap
/// already gives flags precedence over the environment).
///
/// # Errors
///
/// Every unknown key and ill-typed value found, each naming the key; a missing or unreadable
/// file names the file.
pub fn layered<T: DeserializeOwned + Serialize + Default>(
    file: Option<&Path>,
    overrides: serde_json::Value,
) -> Result<T, ConfigError> {
    let mut figment = Figment::from(Serialized::defaults(T::default()));
    if let Some(path) = file {
        if !path.is_file() {
            return Err(ConfigError::new(vec![format!(
                "configuration file {} does not exist",
                path.display()
            )]));
        }
        figment = figment.merge(Toml::file(path));
    }
    figment = figment.merge(Serialized::defaults(overrides));
    figment
        .extract::<T>()
        .map_err(|e| ConfigError::new(e.into_iter().map(|e| describe(&e)).collect()))
}

fn describe(e: &figment::Error) -> String {
    let key = e.path.join(".");
    let origin = e
        .metadata
        .as_ref()
        .map(|m| m.name.to_string())
        .unwrap_or_default();
    match (key.is_empty(), origin.is_empty()) {
        (true, _) => e.kind.to_string(),
        (false, true) => format!("{key}: {}", e.kind),
        (false, false) => format!("{key} (from {origin}): {}", e.kind),
    }
}

/// Returns the wall-clock time: the one place services read the clock, since the domain core
/// takes time only as a parameter.
pub fn wall_now() -> churnwatch_core::Timestamp {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    churnwatch_core::Timestamp(secs)
}

/// Log output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Pretty,
    /// One JSON object per line, for log collectors.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pretty" => Ok(Self::Pretty),
            "json" => Ok(Self::Json),
            other => Err(format!("log format {other:?} must be pretty or json")),
        }
    }
}

/// Returns a token cancelled on the first SIGTERM or SIGINT. Must be called inside a tokio
/// runtime.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested");
        cancel.cancel();
    });
    token
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The configuration values a user set through flags or `CHURNWATCH_*` variables, as the top
/// layer for [`layered`].
#[derive(Debug, Default, Clone)]
pub struct Overrides(serde_json::Value);

impl Overrides {
    /// Returns an empty set of overrides.
    pub fn new() -> Self {
        Self(serde_json::json!({}))
    }

    /// Sets the dotted `path` (e.g. `kafka.brokers`) when `value` is given.
    pub fn set<T: Serialize>(&mut self, path: &str, value: Option<T>) -> &mut Self {
        if let Some(v) = value {
            let mut node = &mut self.0;
            for part in path.split('.') {
                if !node.is_object() {
                    *node = serde_json::json!({});
                }
                node = node
                    .as_object_mut()
                    .expect("just made an object")
                    .entry(part)
                    .or_insert(serde_json::Value::Null);
            }
            *node = serde_json::to_value(v).expect("override values serialize");
        }
        self
    }

    /// Sets `path` to a map from `KEY=VALUE` strings (such as `--kafka-property`).
    ///
    /// # Errors
    ///
    /// Names the entry that has no `=`.
    pub fn key_values(&mut self, path: &str, entries: &[String]) -> Result<&mut Self, String> {
        if entries.is_empty() {
            return Ok(self);
        }
        let mut map = std::collections::BTreeMap::new();
        for e in entries {
            let (k, v) = e
                .split_once('=')
                .ok_or_else(|| format!("{e:?} must look like KEY=VALUE"))?;
            map.insert(k.trim().to_owned(), v.trim().to_owned());
        }
        Ok(self.set(path, Some(map)))
    }

    /// Returns the overrides as JSON.
    pub fn into_value(self) -> serde_json::Value {
        self.0
    }
}

#[cfg(test)]
mod override_tests {
    use super::*;

    #[test]
    fn dotted_paths_build_nested_values_and_absent_values_are_skipped() {
        let mut o = Overrides::new();
        o.set("kafka.brokers", Some("b:1"))
            .set("kafka.topics.orders", Some("o"))
            .set("group_id", None::<String>);
        o.key_values("kafka.properties", &["a=1".into(), " b = 2 ".into()])
            .unwrap();
        assert_eq!(
            o.into_value(),
            serde_json::json!({"kafka": {"brokers": "b:1", "topics": {"orders": "o"}, "properties": {"a": "1", "b": "2"}}})
        );
        assert!(
            Overrides::new()
                .key_values("p", &["novalue".into()])
                .unwrap_err()
                .contains("KEY=VALUE")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Config {
        brokers: String,
        batch_size: usize,
        group_id: String,
    }

    impl Default for Config {
        fn default() -> Self {
            Self {
                brokers: "localhost:9092".into(),
                batch_size: 500,
                group_id: "g".into(),
            }
        }
    }

    #[test]
    fn flags_override_the_file_which_overrides_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "brokers = \"kafka:9092\"\nbatch_size = 100\n").unwrap();
        let c: Config = layered(Some(&file), serde_json::json!({ "batch_size": 42 })).unwrap();
        assert_eq!(
            c,
            Config {
                brokers: "kafka:9092".into(),
                batch_size: 42,
                group_id: "g".into()
            }
        );
    }

    #[test]
    fn every_problem_in_a_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "brokerz = \"x\"\nbatch_size = \"many\"\n").unwrap();
        let err = layered::<Config>(Some(&file), serde_json::json!({}))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("brokerz") || err.contains("batch_size"),
            "{err}"
        );
        let err = layered::<Config>(Some(&dir.path().join("none.toml")), serde_json::json!({}))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("none.toml") && err.contains("does not exist"),
            "{err}"
        );
    }

    #[test]
    fn log_formats_parse_and_bad_ones_say_which_are_allowed() {
        assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert!(
            "xml"
                .parse::<LogFormat>()
                .unwrap_err()
                .contains("pretty or json")
        );
        assert!(init_tracing(LogFormat::Pretty, "not a [valid directive").is_err());
    }
}

/// The flags every service binary takes: configuration file, brokers, pass-through Kafka
/// properties and logging. Flattened into each service's own arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct ServiceArgs {
    /// TOML configuration file; its keys are the service's configuration fields (e.g.
    /// `state_dir`, `[kafka]`, `[kafka.properties]`), overridden by the environment and flags.
    #[arg(long, env = "CHURNWATCH_CONFIG")]
    pub config: Option<std::path::PathBuf>,
    /// Kafka bootstrap servers (host:port, comma-separated) [default: 127.0.0.1:9092].
    #[arg(long, env = "CHURNWATCH_BROKERS")]
    pub brokers: Option<String>,
    /// Extra librdkafka properties (KEY=VALUE, repeatable), e.g. security.protocol=SASL_SSL.
    #[arg(
        long = "kafka-property",
        value_name = "KEY=VALUE",
        env = "CHURNWATCH_KAFKA_PROPERTIES",
        value_delimiter = ','
    )]
    pub kafka_properties: Vec<String>,
    /// Log format: pretty or json.
    #[arg(long, env = "CHURNWATCH_LOG_FORMAT", default_value = "pretty")]
    pub log_format: LogFormat,
    /// Log level filter, e.g. info or scoring=debug,rdkafka=warn.
    #[arg(long, env = "CHURNWATCH_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Address of the admin HTTP endpoint: /metrics (Prometheus), /healthz, /readyz
    /// [default: 127.0.0.1:9101 order-ingest, :9102 scoring, :9103 query; "off" disables it].
    #[arg(long, env = "CHURNWATCH_ADMIN_ADDR")]
    pub admin_addr: Option<String>,
    /// OTLP/HTTP collector to export spans to, e.g. http://otel-collector:4318 (spans go to
    /// its /v1/traces). Needs a build with the `otlp` cargo feature.
    #[arg(long, env = "CHURNWATCH_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,
}

impl ServiceArgs {
    /// Returns the overrides these flags make (brokers and Kafka properties).
    ///
    /// # Errors
    ///
    /// When a `--kafka-property` is not `KEY=VALUE`.
    pub fn overrides(&self) -> Result<Overrides, String> {
        let mut o = Overrides::new();
        o.set("kafka.brokers", self.brokers.as_ref());
        o.key_values("kafka.properties", &self.kafka_properties)
            .map_err(|e| format!("--kafka-property {e}"))?;
        Ok(o)
    }

    /// Starts the admin endpoint (unless `--admin-addr off`) on the given address or
    /// `default`, serving the metrics of `collectors` until `shutdown`; returns the readiness
    /// it reports, not ready for `reason` until the service says otherwise. Must be called
    /// inside a tokio runtime.
    ///
    /// # Errors
    ///
    /// When the address does not parse or cannot be bound.
    pub async fn start_admin(
        &self,
        default: &str,
        collectors: Vec<Box<dyn prometheus_client::collector::Collector>>,
        reason: &str,
        shutdown: CancellationToken,
    ) -> Result<admin::Readiness, String> {
        let readiness = admin::Readiness::not_ready(reason);
        let addr = self.admin_addr.as_deref().unwrap_or(default);
        if addr == "off" {
            return Ok(readiness);
        }
        let mut registry = prometheus_client::registry::Registry::default();
        for c in collectors {
            registry.register_collector(c);
        }
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            format!("cannot listen on {addr} for the admin endpoint (--admin-addr): {e}")
        })?;
        tracing::info!(addr = ?listener.local_addr().ok(), "admin endpoint listening: /metrics, /healthz, /readyz");
        let served = readiness.clone();
        tokio::spawn(async move {
            if let Err(e) =
                admin::serve_admin(listener, std::sync::Arc::new(registry), served, shutdown).await
            {
                tracing::error!(error = %e, "the admin endpoint failed");
            }
        });
        Ok(readiness)
    }

    /// Reads the layered configuration (defaults < file < environment < `overrides`, which
    /// should start from [`ServiceArgs::overrides`]) and sets up tracing, naming the process
    /// `service` in exported spans. Keep the returned guard until the end of `main`: dropping
    /// it sends the spans not yet exported.
    ///
    /// # Errors
    ///
    /// When the configuration does not read, the log level does not parse, or an OTLP
    /// endpoint is given that this build cannot export to.
    pub fn configure<T: DeserializeOwned + Serialize + Default>(
        &self,
        overrides: Overrides,
        service: &str,
    ) -> Result<(T, TracingGuard), String> {
        let config =
            layered(self.config.as_deref(), overrides.into_value()).map_err(|e| e.to_string())?;
        let guard = install_tracing(
            self.log_format,
            &self.log_level,
            self.otlp_endpoint.as_deref(),
            service,
        )?;
        Ok((config, guard))
    }
}
