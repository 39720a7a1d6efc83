//! The admin HTTP endpoint every service serves beside its work: `/metrics` (Prometheus text
//! format from the registry the service's components registered their metrics in), `/healthz`
//! (the process is alive and answering) and `/readyz` (the service can do its work: 200 when
//! ready, 503 with the reason when not).

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;

use crate::CancellationToken;

/// Whether a service is ready, and if not, why; shared between the service and its admin
/// endpoint.
#[derive(Debug, Clone)]
pub struct Readiness(Arc<Mutex<Result<(), String>>>);

impl Readiness {
    /// Returns a readiness that starts not ready for `reason`.
    pub fn not_ready(reason: impl Into<String>) -> Self {
        Self(Arc::new(Mutex::new(Err(reason.into()))))
    }

    /// Returns a readiness that starts ready.
    pub fn ready() -> Self {
        Self(Arc::new(Mutex::new(Ok(()))))
    }

    /// Marks the service ready.
    pub fn set_ready(&self) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Ok(());
    }

    /// Marks the service not ready, saying why.
    pub fn set_not_ready(&self, reason: impl Into<String>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Err(reason.into());
    }

    /// Returns `Ok` when ready, else the reason.
    pub fn get(&self) -> Result<(), String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[derive(Clone)]
struct AdminState {
    registry: Arc<Registry>,
    readiness: Readiness,
}

async fn metrics(State(s): State<AdminState>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &s.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("cannot encode the metrics: {e}\n"),
        ),
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(s): State<AdminState>) -> (StatusCode, String) {
    match s.readiness.get() {
        Ok(()) => (StatusCode::OK, "ready\n".into()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` until `shutdown`.
///
/// # Errors
///
/// When the listener fails.
pub async fn serve_admin(
    listener: tokio::net::TcpListener,
    registry: Arc<Registry>,
    readiness: Readiness,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(AdminState {
            registry,
            readiness,
        });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::counter::Counter;

    use super::*;

    async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let status = out[9..12].parse().unwrap();
        let body = out.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
        (status, body)
    }

    #[tokio::test]
    async fn metrics_health_and_readiness_are_served_over_http() {
        let mut registry = Registry::default();
        let counter = Counter::<u64>::default();
        registry.register("churnwatch_test_events", "Events seen", counter.clone());
        counter.inc_by(3);
        let readiness = Readiness::not_ready("catching up");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve_admin(
            listener,
            Arc::new(registry),
            readiness.clone(),
            shutdown.clone(),
        ));
        let (status, body) = get(addr, "/metrics").await;
        assert_eq!(status, 200);
        assert!(body.contains("churnwatch_test_events_total 3"), "{body}");
        assert_eq!(get(addr, "/healthz").await.0, 200);
        let (status, body) = get(addr, "/readyz").await;
        assert_eq!(status, 503);
        assert!(body.contains("catching up"), "{body}");
        readiness.set_ready();
        assert_eq!(get(addr, "/readyz").await.0, 200);
        shutdown.cancel();
        server.await.unwrap().unwrap();
    }
}
