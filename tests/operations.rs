//! What on-call engineers touch: Prometheus metrics and readiness.

mod common;

use common::TestApp;
use reqwest::StatusCode;
use serde_json::json;
use sqlx::PgPool;

/// The value of the first sample of `name` whose labels contain every one of `labels`.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .find(|l| labels.iter().all(|label| l.contains(label)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[sqlx::test]
async fn metrics_count_requests_writes_audit_rows_notifications_and_the_replica(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let body = json!({"key": "notification.low_balance_enabled", "scope": {}, "value": false, "reason": "pilot", "old_value": true});
    assert_eq!(app.write(body.clone()).await.status, StatusCode::CREATED);
    assert_eq!(app.write(body).await.code(), "stale_old_value");
    app.get("/api/v1/policy-keys", &app.reader).await;

    let text = app.http.get(format!("{}/metrics", app.base)).send().await.unwrap().text().await.unwrap();
    let requests = sample(
        &text,
        "policy_values_http_requests_total",
        &[r#"route="/api/v1/policy-keys""#, r#"method="GET""#, r#"status="200""#],
    );
    assert!(requests >= Some(1.0), "{text}");
    let latency =
        sample(&text, "policy_values_http_request_duration_seconds_count", &[r#"route="/api/v1/admin/policy-values""#]);
    assert!(latency >= Some(2.0), "histogram of admin writes: {text}");
    assert!(sample(&text, "policy_values_admin_writes_total", &[r#"outcome="success""#]) >= Some(1.0));
    assert!(
        sample(&text, "policy_values_admin_writes_total", &[r#"outcome="refused""#, r#"code="stale_old_value""#])
            >= Some(1.0)
    );
    assert!(sample(&text, "policy_values_audit_rows_total", &[]) >= Some(2.0), "the write and the refusal");
    assert!(sample(&text, "policy_values_notifications_total", &[]) >= Some(1.0));
    assert!(sample(&text, "policy_values_client_last_applied_seq", &[]) >= Some(1.0), "{text}");
    assert!(text.contains("policy_values_client_replica_rows"));
}

/// The family a sample line belongs to: its name, less a histogram's or
/// summary's `_bucket`/`_sum`/`_count` suffix when that names a family.
fn family_of<'a>(sample: &'a str, types: &std::collections::HashMap<&str, &str>) -> &'a str {
    let name = sample.split(['{', ' ']).next().unwrap_or(sample);
    if types.contains_key(name) {
        return name;
    }
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|s| name.strip_suffix(s).filter(|f| types.contains_key(f)))
        .unwrap_or(name)
}

#[sqlx::test]
async fn every_metric_family_on_a_live_metrics_page_has_help_and_type(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let body = json!({"key": "notification.low_balance_enabled", "scope": {}, "value": false, "reason": "pilot", "old_value": true});
    assert_eq!(app.write(body.clone()).await.status, StatusCode::CREATED);
    assert_eq!(app.write(body).await.code(), "stale_old_value");
    app.get("/api/v1/policy-keys", &app.reader).await;
    app.get("/api/v1/replica", &app.reader).await;

    let text = app.http.get(format!("{}/metrics", app.base)).send().await.unwrap().text().await.unwrap();
    let mut help = std::collections::HashSet::new();
    let mut types = std::collections::HashMap::new();
    for line in text.lines() {
        let words: Vec<&str> = line.splitn(4, ' ').collect();
        match words.as_slice() {
            ["#", "HELP", name, text] => assert!(help.insert(*name) && !text.trim().is_empty(), "{line}"),
            ["#", "TYPE", name, kind] => assert!(types.insert(*name, *kind).is_none(), "{line}"),
            _ => {}
        }
    }
    let samples: Vec<&str> = text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    let families: std::collections::BTreeSet<&str> = samples.iter().map(|s| family_of(s, &types)).collect();
    for family in &families {
        assert!(types.contains_key(family), "{family} has no # TYPE line:\n{text}");
        assert!(help.contains(family), "{family} has no # HELP line:\n{text}");
    }
    for family in types.keys() {
        assert!(help.contains(family), "{family} has a # TYPE but no # HELP line:\n{text}");
    }
    for expected in [
        "policy_values_http_requests_total",
        "policy_values_http_request_duration_seconds",
        "policy_values_admin_writes_total",
        "policy_values_write_batch_size",
        "policy_values_client_replica_rows",
        "policy_values_bootstrap_builds_total",
    ] {
        assert!(families.contains(expected), "{expected} is on the page:\n{text}");
    }
    assert_eq!(types["policy_values_http_request_duration_seconds"], "histogram");
    assert_eq!(types["policy_values_http_requests_total"], "counter");
}

#[sqlx::test]
async fn readiness_fails_while_the_database_is_unreachable(pool: PgPool) {
    let options = common::options_of(&pool);
    let proxy = common::proxy::Proxy::start(format!("{}:{}", options.get_host(), options.get_port())).await;
    let via_proxy = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(std::time::Duration::from_millis(500))
        .connect_with(options.host("127.0.0.1").port(proxy.port))
        .await
        .unwrap();
    let app = TestApp::spawn(via_proxy).await;
    let ready = |app: &TestApp| {
        let url = format!("{}/readyz", app.base);
        let http = app.http.clone();
        async move { http.get(url).send().await.unwrap().status() }
    };
    assert_eq!(ready(&app).await, StatusCode::OK);
    proxy.cut();
    common::eventually("readyz fails", || async { ready(&app).await == StatusCode::SERVICE_UNAVAILABLE }).await;
    proxy.restore();
    common::eventually("readyz recovers", || async { ready(&app).await == StatusCode::OK }).await;
}
