//! Telemetry of the gRPC server: a span per request (method, peer, status code, duration),
//! inside which the handler runs, and request metrics by method (requests, responses by
//! status code, time to the response headers). A tower layer around the whole server, so
//! health checks and reflection are traced and counted too.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use tonic::codegen::http;
use tracing::Instrument;

type Labels = Vec<(&'static str, String)>;

/// The server's request metrics; clones share them.
#[derive(Debug, Clone)]
pub struct GrpcMetrics {
    requests: Family<Labels, Counter>,
    responses: Family<Labels, Counter>,
    seconds: Family<Labels, Histogram, fn() -> Histogram>,
}

impl Default for GrpcMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            responses: Family::default(),
            seconds: Family::new_with_constructor(churnwatch_runtime::metrics::seconds_histogram),
        }
    }
}

/// Returns the method label of a request path, folding paths of no known service together so
/// that a client cannot grow the label set without bound.
fn method_label(path: &str) -> String {
    const KNOWN: [&str; 3] = ["/churnwatch.v1.", "/grpc.health.v1.", "/grpc.reflection."];
    if KNOWN.iter().any(|k| path.starts_with(k)) && path.len() <= 128 {
        path.trim_start_matches('/').to_owned()
    } else {
        "other".to_owned()
    }
}

impl GrpcMetrics {
    /// Returns the requests counted for a method and status code (e.g. "Ok", "NotFound").
    pub fn responses(&self, method: &str, code: &str) -> u64 {
        self.responses
            .get_or_create(&vec![
                ("method", method.to_owned()),
                ("code", code.to_owned()),
            ])
            .get()
    }

    /// Writes the metrics.
    ///
    /// # Errors
    ///
    /// When the encoder fails.
    pub fn encode(&self, enc: &mut DescriptorEncoder<'_>) -> std::fmt::Result {
        self.requests.encode(enc.encode_descriptor(
            "churnwatch_grpc_requests",
            "gRPC requests received, by method.",
            None,
            self.requests.metric_type(),
        )?)?;
        self.responses.encode(enc.encode_descriptor(
            "churnwatch_grpc_responses",
            "gRPC responses, by method and status code (errors are the codes other than Ok).",
            None,
            self.responses.metric_type(),
        )?)?;
        self.seconds.encode(enc.encode_descriptor(
            "churnwatch_grpc_request_duration_seconds",
            "Seconds from a gRPC request to its response headers, by method.",
            None,
            self.seconds.metric_type(),
        )?)
    }
}

/// The tower layer that traces and counts every request of the server it wraps.
#[derive(Debug, Clone)]
pub struct GrpcTelemetryLayer(pub GrpcMetrics);

impl<S> tower::Layer<S> for GrpcTelemetryLayer {
    type Service = GrpcTelemetryService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcTelemetryService {
            inner,
            metrics: self.0.clone(),
        }
    }
}

/// A service tracing and counting the requests of the one it wraps.
#[derive(Debug, Clone)]
pub struct GrpcTelemetryService<S> {
    inner: S,
    metrics: GrpcMetrics,
}

impl<S, B, R> tower::Service<http::Request<B>> for GrpcTelemetryService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = method_label(request.uri().path());
        let ext = request.extensions();
        let peer = ext
            .get::<tonic::transport::server::TcpConnectInfo>()
            .or_else(|| {
                ext.get::<tonic::transport::server::TlsConnectInfo<
                    tonic::transport::server::TcpConnectInfo,
                >>()
                .map(|c| c.get_ref())
            })
            .and_then(|c| c.remote_addr());
        // Field names follow OpenTelemetry's RPC conventions, so an OTLP exporter maps them.
        let span = tracing::info_span!(
            "grpc_request",
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.method = %method,
            net.peer = peer.map(tracing::field::display),
            rpc.grpc.status_code = tracing::field::Empty,
            duration_ms = tracing::field::Empty,
        );
        // A caller's W3C trace context (`traceparent`) makes this request part of its trace.
        churnwatch_runtime::continue_remote_trace(&span, |name| {
            request.headers().get(name)?.to_str().ok()
        });
        let metrics = self.metrics.clone();
        metrics
            .requests
            .get_or_create(&vec![("method", method.clone())])
            .inc();
        let started = Instant::now();
        let response = span.in_scope(|| self.inner.call(request));
        let done = span.clone();
        Box::pin(
            async move {
                let result = response.await;
                // A unary error comes as a trailers-only response: the status is in the
                // headers. Streams report OK here; their final status is in trailers sent later.
                let code = match &result {
                    Ok(r) => r
                        .headers()
                        .get("grpc-status")
                        .map(|v| tonic::Code::from_bytes(v.as_bytes()))
                        .unwrap_or(tonic::Code::Ok),
                    Err(_) => tonic::Code::Unknown,
                };
                let seconds = started.elapsed().as_secs_f64();
                done.record("rpc.grpc.status_code", code as i32);
                done.record("duration_ms", seconds * 1e3);
                tracing::debug!(code = ?code, "gRPC request answered");
                metrics
                    .responses
                    .get_or_create(&vec![
                        ("method", method.clone()),
                        ("code", format!("{code:?}")),
                    ])
                    .inc();
                metrics
                    .seconds
                    .get_or_create(&vec![("method", method)])
                    .observe(seconds);
                result
            }
            .instrument(span),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tower::{Layer, Service, ServiceExt};

    /// A log sink the test reads back.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_request_runs_in_a_span_that_records_its_method_and_status() {
        let sink = Sink::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let handler = tower::service_fn(|_: http::Request<()>| async {
            tracing::info!("handler at work");
            let mut response = http::Response::new(());
            response
                .headers_mut()
                .insert("grpc-status", http::HeaderValue::from_static("5"));
            Ok::<_, std::convert::Infallible>(response)
        });
        let metrics = GrpcMetrics::default();
        let mut service = GrpcTelemetryLayer(metrics.clone()).layer(handler);
        let request = http::Request::builder()
            .uri("/churnwatch.v1.CustomerQuery/GetCustomer")
            .body(())
            .unwrap();
        service.ready().await.unwrap().call(request).await.unwrap();

        let log = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let handler_line = log
            .lines()
            .find(|l| l.contains("handler at work"))
            .unwrap_or_else(|| panic!("the handler logged:\n{log}"));
        assert!(
            handler_line.contains("grpc_request{")
                && handler_line.contains("rpc.method=churnwatch.v1.CustomerQuery/GetCustomer"),
            "the handler runs inside the request's span:\n{log}"
        );
        let close = log
            .lines()
            .find(|l| l.contains("close"))
            .unwrap_or_else(|| panic!("the span closed:\n{log}"));
        assert!(
            close.contains("rpc.grpc.status_code=5") && close.contains("duration_ms="),
            "{close}"
        );
        assert_eq!(
            metrics.responses("churnwatch.v1.CustomerQuery/GetCustomer", "NotFound"),
            1
        );
    }

    #[test]
    fn only_known_services_get_their_own_method_label() {
        assert_eq!(
            method_label("/churnwatch.v1.CustomerQuery/GetCustomer"),
            "churnwatch.v1.CustomerQuery/GetCustomer"
        );
        assert_eq!(
            method_label("/grpc.health.v1.Health/Check"),
            "grpc.health.v1.Health/Check"
        );
        assert_eq!(method_label("/evil.Service/Anything"), "other");
        assert_eq!(
            method_label(&format!("/churnwatch.v1.{}", "x".repeat(200))),
            "other"
        );
    }
}
