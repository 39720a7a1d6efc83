//! Request metrics of the gRPC server, by method: requests, responses by status code and the
//! time to the response headers. A tower layer around the whole server, so health checks and
//! reflection are counted too.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use tonic::codegen::http;

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

/// The tower layer that counts every request of the server it wraps.
#[derive(Debug, Clone)]
pub struct GrpcMetricsLayer(pub GrpcMetrics);

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetricsService {
            inner,
            metrics: self.0.clone(),
        }
    }
}

/// A service counting the requests of the one it wraps.
#[derive(Debug, Clone)]
pub struct GrpcMetricsService<S> {
    inner: S,
    metrics: GrpcMetrics,
}

impl<S, B, R> tower::Service<http::Request<B>> for GrpcMetricsService<S>
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
        let metrics = self.metrics.clone();
        metrics
            .requests
            .get_or_create(&vec![("method", method.clone())])
            .inc();
        let started = Instant::now();
        let response = self.inner.call(request);
        Box::pin(async move {
            let result = response.await;
            // A unary error comes as a trailers-only response: the status is in the headers.
            // Streams report OK here; their final status is in trailers sent later.
            let code = match &result {
                Ok(r) => r
                    .headers()
                    .get("grpc-status")
                    .map(|v| tonic::Code::from_bytes(v.as_bytes()))
                    .unwrap_or(tonic::Code::Ok),
                Err(_) => tonic::Code::Unknown,
            };
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
                .observe(started.elapsed().as_secs_f64());
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
