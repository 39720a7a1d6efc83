//! The global tracing subscriber: log lines on standard error (pretty or JSON) and, built with
//! the `otlp` feature, spans exported over OTLP/HTTP.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::LogFormat;

type Base = tracing_subscriber::layer::Layered<EnvFilter, Registry>;
type BoxedLayer = Box<dyn Layer<Base> + Send + Sync>;

/// Keeps span export running; dropping it exports the spans still buffered (waiting up to the
/// exporter's timeout) and stops it. Holds nothing when no OTLP endpoint is set.
#[derive(Debug, Default)]
#[must_use = "dropping the guard stops span export"]
pub struct TracingGuard {
    #[cfg(feature = "otlp")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for TracingGuard {
    fn drop(&mut self) {
        #[cfg(feature = "otlp")]
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("churnwatch: exporting the last spans over OTLP failed: {e}");
        }
    }
}

/// Installs the global tracing subscriber writing to standard error; `level` is an
/// `EnvFilter` directive such as `info` or `scoring=debug,rdkafka=warn`.
///
/// # Errors
///
/// When the level directive does not parse.
pub fn init_tracing(format: LogFormat, level: &str) -> Result<(), String> {
    install_tracing(format, level, None, "churnwatch").map(std::mem::forget)
}

/// Installs the global tracing subscriber as [`init_tracing`] does and, when `otlp_endpoint`
/// is set, exports spans to that OTLP/HTTP collector as service `service` (unless
/// `OTEL_SERVICE_NAME` names it otherwise). A second call keeps the first subscriber.
///
/// # Errors
///
/// When the level directive does not parse, or an endpoint is given to a build without the
/// `otlp` feature or is not an http(s) URL.
pub fn install_tracing(
    format: LogFormat,
    level: &str,
    otlp_endpoint: Option<&str>,
    service: &str,
) -> Result<TracingGuard, String> {
    let filter = EnvFilter::try_new(level).map_err(|e| format!("log level {level:?}: {e}"))?;
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt: BoxedLayer = match format {
        LogFormat::Pretty => fmt.boxed(),
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .boxed(),
    };
    let (export, guard) = match otlp_endpoint {
        Some(endpoint) => export_layer(endpoint, service)?,
        None => (None, TracingGuard::default()),
    };
    let mut layers = vec![fmt];
    layers.extend(export);
    // A second init (tests, the all-in-one binary) keeps the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(layers)
        .try_init();
    Ok(guard)
}

/// Returns the layer exporting spans to `endpoint`, and the guard that flushes it.
#[cfg(feature = "otlp")]
fn export_layer(
    endpoint: &str,
    service: &str,
) -> Result<(Option<BoxedLayer>, TracingGuard), String> {
    let provider = otlp::provider(endpoint, service)?;
    let layer = otlp::layer(&provider, service);
    Ok((
        Some(layer),
        TracingGuard {
            provider: Some(provider),
        },
    ))
}

/// Refuses an endpoint: this build has no exporter.
#[cfg(not(feature = "otlp"))]
fn export_layer(endpoint: &str, _: &str) -> Result<(Option<BoxedLayer>, TracingGuard), String> {
    Err(format!(
        "--otlp-endpoint {endpoint}: this build cannot export spans; build it with `--features otlp`"
    ))
}

/// Makes `span` a child of the W3C trace context a request carries (`traceparent`,
/// `tracestate`, read through `header`), so that a caller's trace continues through it in the
/// exported spans. Changes nothing without such a header, or in a build without `otlp`.
pub fn continue_remote_trace<'h>(span: &tracing::Span, header: impl Fn(&str) -> Option<&'h str>) {
    #[cfg(feature = "otlp")]
    otlp::continue_remote_trace(span, &header);
    #[cfg(not(feature = "otlp"))]
    let _ = (span, header);
}

#[cfg(feature = "otlp")]
pub(crate) mod otlp {
    //! Span export over OTLP/HTTP with protobuf bodies, from the SDK's own batching thread.

    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::{SpanExporter, WithExportConfig};
    use opentelemetry_sdk::Resource;
    use opentelemetry_sdk::trace::SdkTracerProvider;

    use super::BoxedLayer;

    /// Returns the URL spans are posted to: `endpoint`'s `/v1/traces`, unless it names it.
    pub(crate) fn traces_url(endpoint: &str) -> Result<String, String> {
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(format!(
                "--otlp-endpoint {endpoint}: expected an http:// or https:// URL of an OTLP/HTTP collector, e.g. http://127.0.0.1:4318"
            ));
        }
        let base = endpoint.trim_end_matches('/');
        Ok(if base.ends_with("/v1/traces") {
            base.to_owned()
        } else {
            format!("{base}/v1/traces")
        })
    }

    /// Returns a tracer provider batching spans to `endpoint`.
    pub(crate) fn provider(endpoint: &str, service: &str) -> Result<SdkTracerProvider, String> {
        let exporter = SpanExporter::builder()
            .with_http()
            .with_endpoint(traces_url(endpoint)?)
            .build()
            .map_err(|e| format!("--otlp-endpoint {endpoint}: {e}"))?;
        let mut resource = Resource::builder();
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name(service.to_owned());
        }
        Ok(SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build())
    }

    /// Request headers, as the propagator reads them.
    struct Headers<'a, 'h>(&'a dyn Fn(&str) -> Option<&'h str>);

    impl opentelemetry::propagation::Extractor for Headers<'_, '_> {
        fn get(&self, key: &str) -> Option<&str> {
            (self.0)(key)
        }

        fn keys(&self) -> Vec<&str> {
            vec!["traceparent", "tracestate"]
        }
    }

    /// See [`super::continue_remote_trace`].
    pub(crate) fn continue_remote_trace<'h>(
        span: &tracing::Span,
        header: &dyn Fn(&str) -> Option<&'h str>,
    ) {
        use opentelemetry::propagation::TextMapPropagator as _;
        use opentelemetry::trace::TraceContextExt as _;
        use tracing_opentelemetry::OpenTelemetrySpanExt as _;
        let parent =
            opentelemetry_sdk::propagation::TraceContextPropagator::new().extract(&Headers(header));
        if parent.span().span_context().is_valid() {
            let _ = span.set_parent(parent);
        }
    }

    /// Returns the layer turning tracing spans into OpenTelemetry spans of `provider`.
    pub(crate) fn layer(provider: &SdkTracerProvider, service: &str) -> BoxedLayer {
        Box::new(tracing_opentelemetry::layer().with_tracer(provider.tracer(service.to_owned())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A loopback collector, and a provider and subscriber exporting to it as `service`.
    #[cfg(feature = "otlp")]
    fn exporting(
        service: &str,
    ) -> (
        churnwatch_testkit::OtlpCollector,
        opentelemetry_sdk::trace::SdkTracerProvider,
        impl tracing::Subscriber,
    ) {
        let collector = churnwatch_testkit::OtlpCollector::start();
        let provider = otlp::provider(&collector.endpoint(), service).unwrap();
        let subscriber = tracing_subscriber::registry()
            .with(EnvFilter::new("info"))
            .with(otlp::layer(&provider, "t"));
        (collector, provider, subscriber)
    }

    #[cfg(not(feature = "otlp"))]
    #[test]
    fn an_otlp_endpoint_without_the_feature_says_how_to_get_it() {
        let err = install_tracing(
            LogFormat::Pretty,
            "info",
            Some("http://127.0.0.1:4318"),
            "t",
        )
        .unwrap_err();
        assert!(err.contains("--features otlp"), "{err}");
    }

    #[cfg(feature = "otlp")]
    #[test]
    fn endpoints_are_checked_and_name_their_traces_path() {
        assert_eq!(
            otlp::traces_url("http://c:4318/").unwrap(),
            "http://c:4318/v1/traces"
        );
        assert_eq!(
            otlp::traces_url("https://c/v1/traces").unwrap(),
            "https://c/v1/traces"
        );
        assert!(otlp::traces_url("c:4317").unwrap_err().contains("http://"));
    }

    /// A real OTLP/HTTP exchange over loopback, with the exporter the services use.
    #[cfg(feature = "otlp")]
    #[test]
    fn spans_reach_an_otlp_collector_with_their_fields_and_service_name() {
        use churnwatch_testkit::opentelemetry_proto::tonic::common::v1::any_value::Value;

        let (collector, provider, subscriber) = exporting("scoring-test");
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("batch", partition = 3, first_offset = 100_i64);
            let _enter = span.enter();
            tracing::info!("inside");
        });
        provider.shutdown().expect("the spans are exported");

        let spans = collector.spans();
        let (service, span) = spans
            .iter()
            .find(|(_, s)| s.name == "batch")
            .unwrap_or_else(|| panic!("no batch span among {spans:?}"));
        assert_eq!(service, "scoring-test");
        let attribute = |key: &str| {
            span.attributes
                .iter()
                .find(|a| a.key == key)
                .and_then(|a| a.value.as_ref()?.value.clone())
        };
        assert_eq!(attribute("partition"), Some(Value::IntValue(3)));
        assert_eq!(attribute("first_offset"), Some(Value::IntValue(100)));
    }

    /// A caller's W3C trace context makes the request's span part of the caller's trace.
    #[cfg(feature = "otlp")]
    #[test]
    fn a_request_carrying_a_traceparent_continues_the_callers_trace() {
        let (collector, provider, subscriber) = exporting("query-test");
        let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
        let caller_span = "00f067aa0ba902b7";
        let traceparent = format!("00-{trace_id}-{caller_span}-01");
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("grpc_request");
            continue_remote_trace(&span, |name| {
                (name == "traceparent").then_some(traceparent.as_str())
            });
            span.in_scope(|| tracing::info!("handled"));
            // Without the header, a request starts a trace of its own.
            let alone = tracing::info_span!("grpc_request_alone");
            continue_remote_trace(&alone, |_| None);
            alone.in_scope(|| tracing::info!("handled"));
        });
        provider.shutdown().expect("the spans are exported");

        let spans = collector.spans();
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let find = |name: &str| {
            spans
                .iter()
                .map(|(_, s)| s)
                .find(|s| s.name == name)
                .unwrap_or_else(|| panic!("no {name} span among {spans:?}"))
        };
        let continued = find("grpc_request");
        assert_eq!(hex(&continued.trace_id), trace_id);
        assert_eq!(hex(&continued.parent_span_id), caller_span);
        let alone = find("grpc_request_alone");
        assert_ne!(hex(&alone.trace_id), trace_id);
        assert!(alone.parent_span_id.is_empty());
    }

    #[cfg(not(feature = "otlp"))]
    #[test]
    fn without_the_exporter_a_traceparent_changes_nothing() {
        let span = tracing::Span::none();
        continue_remote_trace(&span, |_| {
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        });
        assert!(span.is_none());
    }
}
