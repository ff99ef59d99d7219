//! Admin writes over HTTP against a running server (started by
//! scripts/bench-load.sh): 8 writers on distinct keys, then 8 writers on one
//! key chaining old_value, reporting throughput, latency and conflicts, and
//! checking that the audit log holds one record per successful write.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const WRITERS: usize = 8;
const RUN: Duration = Duration::from_secs(10);
/// Eight int keys, one per writer.
const KEYS: [&str; 8] = [
    "billing.low_balance_threshold_minor",
    "billing.window_seconds",
    "allocation.max_concurrent_per_user",
    "allocation.refund_window_days",
    "rate_limit.api_requests_per_minute",
    "rate_limit.terminal_token_requests_per_minute",
    "rate_limit.financial_requests_per_minute",
    "rate_limit.admin_overview_requests_per_minute",
];

struct Target {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Target {
    async fn current(&self, key: &str, scope: &str) -> Value {
        let url = format!("{}/api/v1/policy-values/resolve?key={key}&{scope}", self.base);
        let reply: Value =
            self.http.get(url).bearer_auth(&self.token).send().await.expect("resolve").json().await.expect("json");
        reply["value"].clone()
    }

    async fn write(&self, body: &Value) -> (u16, Value) {
        let url = format!("{}/api/v1/admin/policy-values", self.base);
        let resp = self.http.post(url).bearer_auth(&self.token).json(body).send().await.expect("write");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }
}

fn main() {
    let (Ok(base), Ok(token)) = (std::env::var("POLICY_VALUES_URL"), std::env::var("POLICY_VALUES_TOKEN")) else {
        eprintln!("POLICY_VALUES_URL and POLICY_VALUES_TOKEN are not set: run scripts/bench-load.sh (make bench)");
        return;
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let target = Arc::new(Target { base, token, http: reqwest::Client::new() });
    runtime.block_on(distinct_keys(target.clone()));
    runtime.block_on(one_key(target));
}

async fn distinct_keys(target: Arc<Target>) {
    let run = time::OffsetDateTime::now_utc().unix_timestamp();
    let started = Instant::now();
    let tasks: Vec<_> = KEYS
        .iter()
        .map(|&key| {
            let target = target.clone();
            tokio::spawn(async move {
                let global = target.current(key, "").await;
                let mut latencies = Vec::new();
                let mut i = 0u64;
                while started.elapsed() < RUN {
                    let body = json!({"key": key, "scope": {"org_id": format!("load-{run}-{i}")}, "value": global,
                                      "reason": "load benchmark", "old_value": global});
                    let t = Instant::now();
                    let (status, reply) = target.write(&body).await;
                    assert_eq!(status, 201, "{reply}");
                    latencies.push(t.elapsed().as_secs_f64() * 1e3);
                    i += 1;
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("writer"));
    }
    let seconds = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let p = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    let audited = audited_since(&target, run).await;
    println!(
        "admin writes, {WRITERS} writers on distinct keys: {} writes in {seconds:.1} s = {:.0}/s; \
         latency p50 {:.2} ms, p99 {:.2} ms; audit records for them: {audited}",
        latencies.len(),
        latencies.len() as f64 / seconds,
        p(0.5),
        p(0.99),
    );
    assert_eq!(audited, latencies.len() as u64, "one audit record per write");
}

/// Successful set records of this run (scopes named `load-<run>-*`), counted
/// through the audit export.
async fn audited_since(target: &Target, run: i64) -> u64 {
    let url = format!("{}/api/v1/admin/audit-logs?format=ndjson&action=policy_value.set&outcome=success", target.base);
    let text =
        target.http.get(url).bearer_auth(&target.token).send().await.expect("export").text().await.expect("text");
    let prefix = format!("\"scope_id\":\"load-{run}-");
    text.lines().filter(|l| l.contains(&prefix)).count() as u64
}

async fn one_key(target: Arc<Target>) {
    let key = "allocation.refund_window_days";
    let scope = format!("contended-{}", time::OffsetDateTime::now_utc().unix_timestamp());
    let started = Instant::now();
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (target, scope) = (target.clone(), scope.clone());
            tokio::spawn(async move {
                let (mut ok, mut conflicts) = (0u64, 0u64);
                let mut old = target.current(key, &format!("org_id={scope}")).await;
                while started.elapsed() < RUN {
                    let value = (w as i64 * 40 + ok as i64 % 40) % 366;
                    let body = json!({"key": key, "scope": {"org_id": scope}, "value": value,
                                      "reason": "contention benchmark", "old_value": old});
                    match target.write(&body).await {
                        (201, _) => {
                            ok += 1;
                            old = json!(value);
                        }
                        (409, reply) => {
                            conflicts += 1;
                            old = reply["details"]["current_value"].clone();
                        }
                        (status, reply) => panic!("unexpected {status}: {reply}"),
                    }
                }
                (ok, conflicts)
            })
        })
        .collect();
    let (mut ok, mut conflicts) = (0, 0);
    for task in tasks {
        let (o, c) = task.await.expect("writer");
        ok += o;
        conflicts += c;
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "admin writes, {WRITERS} writers on one key chaining old_value: {ok} succeeded ({:.0}/s), \
         {conflicts} refused with 409 stale_old_value, in {seconds:.1} s",
        ok as f64 / seconds
    );
}
