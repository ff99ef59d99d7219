//! Prometheus metrics at `/metrics`: requests by route, method and status
//! with latency histograms, admin writes by outcome and code, audit rows,
//! notifications, and the server's own replica (recorded by the client
//! library through the `metrics` facade).

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets in seconds: 0.1 ms to 2.5 s.
const BUCKETS: [f64; 14] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

/// Writes per group commit (`store::writer::MAX_BATCH` is 32).
const BATCH: [f64; 6] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder once (later calls reuse it; if another
/// recorder is already installed, `/metrics` answers empty).
pub fn install() {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &BUCKETS)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full("policy_values_write_batch_size".into()), &BATCH));
        match builder.and_then(|b| b.install_recorder()) {
            Ok(handle) => Some(handle),
            Err(e) => {
                tracing::warn!(error = %e, "metrics recorder not installed");
                None
            }
        }
    });
}

/// `GET /metrics`, in the Prometheus text format.
pub async fn render() -> Response {
    let text = HANDLE.get().and_then(Option::as_ref).map(PrometheusHandle::render).unwrap_or_default();
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// Counts every request and times it, labelled by its route template.
pub async fn track(req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched".to_string(), |p| p.as_str().to_string());
    let method = req.method().to_string();
    let started = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    let labels = [("route", route), ("method", method)];
    metrics::histogram!("policy_values_http_request_duration_seconds", &labels).record(started.elapsed().as_secs_f64());
    let [route, method] = labels;
    metrics::counter!("policy_values_http_requests_total", &[route, method, ("status", status)]).increment(1);
    response
}

/// An admin write's outcome: `success` with code `created`, or `refused`
/// with the error code.
pub fn admin_write(outcome: &'static str, code: &'static str) {
    metrics::counter!("policy_values_admin_writes_total", "outcome" => outcome, "code" => code).increment(1);
}
