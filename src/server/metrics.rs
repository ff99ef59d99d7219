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
            Ok(handle) => {
                describe();
                Some(handle)
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics recorder not installed");
                None
            }
        }
    });
}

/// Every metric the server exports, with the `# HELP` text `/metrics`
/// shows for it (docs/operations.md has the same table).
const COUNTERS: [(&str, &str); 13] = [
    ("policy_values_http_requests_total", "HTTP requests answered, by route template, method and status."),
    (
        "policy_values_admin_writes_total",
        "Admin writes by outcome (success or refused) and code (created, unchanged, cancelled or the error code).",
    ),
    ("policy_values_audit_rows_total", "Audit records written by this server."),
    ("policy_values_notifications_total", "Value rows written by this server (each one notifies followers)."),
    (
        "policy_values_write_visibility_slow_total",
        "Committed writes this server's replica did not show within 2 s (answered all the same).",
    ),
    (
        "policy_values_commit_unknown_total",
        "Writes whose connection failed after COMMIT was sent (answered 503 commit_outcome_unknown).",
    ),
    (
        "policy_values_db_connections_discarded_total",
        "Pooled connections discarded on release because their session was inside a transaction; should stay 0.",
    ),
    ("policy_values_client_reconnects_total", "LISTEN connections of the replica re-established."),
    ("policy_values_client_reads_total", "Replica reads by origin (live, snapshot, default), counted in batches."),
    (
        "policy_values_feed_lagged_total",
        "Change-feed streams cut off for falling more than 4,096 events behind (they resume by id).",
    ),
    ("policy_values_feed_resets_total", "Change-feed subscribers told to reload because their gap was no longer held."),
    ("policy_values_bootstrap_builds_total", "Bootstrap documents built (once per position at most)."),
    (
        "policy_values_token_lookups_total",
        "Bearer tokens looked up in the database (not cached; concurrent first uses of one token count once).",
    ),
];

const GAUGES: [(&str, &str); 4] = [
    ("policy_values_client_replica_rows", "Rows in this server's replica."),
    ("policy_values_client_last_applied_seq", "The replica's position: the last seq applied."),
    (
        "policy_values_client_staleness_seconds",
        "0 while the replica is live; else seconds since the database was lost.",
    ),
    ("policy_values_feed_subscribers", "Open change-feed streams."),
];

const HISTOGRAMS: [(&str, &str); 2] = [
    ("policy_values_http_request_duration_seconds", "Time to answer an HTTP request, by route template and method."),
    ("policy_values_write_batch_size", "Admin writes sent to the database per group commit."),
];

/// Gives every metric its `# HELP` line (the recorder keeps descriptions
/// for metrics not yet recorded, and prints them once they are).
fn describe() {
    for (name, help) in COUNTERS {
        metrics::describe_counter!(name, help);
    }
    for (name, help) in GAUGES {
        metrics::describe_gauge!(name, help);
    }
    for (name, help) in HISTOGRAMS {
        metrics::describe_histogram!(name, help);
    }
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
