//! Fan-out of the change feed: one server (the release binary, started
//! here), FANOUT_SUBSCRIBERS concurrent subscribers to `GET /api/v1/changes`
//! on loopback (10,000 by default), then FANOUT_WRITES admin writes
//! (200) at FANOUT_RATE per second (20). For every delivery, the latency from
//! the write's 201 reaching the writer to the event reaching the subscriber
//! (both in this process, one monotonic clock); the server's resident memory
//! before and after the subscribers join; and the database connections
//! open on the benchmark database before and after.
//!
//! Run by scripts/bench-load.sh (make bench), which builds the server,
//! raises the file-descriptor limit and sets POLICY_VALUES_BIN.

#[path = "support/common.rs"]
mod common;
#[path = "support/server.rs"]
mod server;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::{watch, Semaphore};

const KEY: &str = "allocation.max_concurrent_per_user";
/// Subscriptions being opened at once.
const CONNECTING: usize = 200;
/// File descriptors kept back for everything but the subscriptions.
const SPARE_FDS: usize = 200;

fn main() {
    let Some(bin) = server::binary() else { return };
    let subscribers = server::knob("FANOUT_SUBSCRIBERS", 10_000);
    let writes = server::knob("FANOUT_WRITES", 200);
    let rate = server::knob("FANOUT_RATE", 20).max(1);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(run(bin, subscribers, writes, rate));
}

async fn run(bin: String, wanted: usize, writes: usize, rate: usize) {
    let Some((url, pool)) = common::database().await else { return };
    // This process and the server each hold one descriptor per subscription.
    let limit = server::open_files_limit();
    let subscribers = wanted.min(limit.saturating_sub(SPARE_FDS));
    if subscribers < wanted {
        println!(
            "fan-out: the open-files limit is {limit} (ulimit -n); measuring {subscribers} subscribers instead of {wanted}"
        );
    }
    let reader = server::token(&pool, "reader").await;
    let admin = server::token(&pool, "admin").await;
    let server = server::Server::start(&bin, &url, &[]).await;
    let base = server.base.clone();
    let http = reqwest::Client::builder().pool_max_idle_per_host(0).build().expect("http client");
    // The reader token verified once, so the count below is of what the
    // subscriptions hold, not of 200 first verifications at once.
    let global: Value = http
        .get(format!("{base}/api/v1/policy-values/resolve?key={KEY}"))
        .bearer_auth(&reader)
        .send()
        .await
        .expect("resolve")
        .json()
        .await
        .expect("json");
    let value = global["value"].clone();

    let connections_before = server::database_connections(&pool).await;
    let rss_before = server.rss_bytes();

    // Subscribers: each records (position, arrival) for every event.
    let joined = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let (stop_tx, stop_rx) = watch::channel(None::<i64>);
    let gate = Arc::new(Semaphore::new(CONNECTING));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(subscribers);
    for _ in 0..subscribers {
        let (http, base, reader, joined, failed, gate, stop) =
            (http.clone(), base.clone(), reader.clone(), joined.clone(), failed.clone(), gate.clone(), stop_rx.clone());
        tasks.push(tokio::spawn(async move { subscribe(http, base, reader, joined, failed, gate, stop).await }));
    }
    let join_deadline = Instant::now() + Duration::from_secs(180);
    while joined.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) < subscribers
        && Instant::now() < join_deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let join_time = started.elapsed();
    let subscribed = joined.load(Ordering::Relaxed);
    // Let the server settle (buffers allocated, nothing in flight).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = server.rss_bytes();
    let connections_after = server::database_connections(&pool).await;
    println!(
        "fan-out: {subscribed} of {subscribers} subscribers joined in {:.1} s ({} failed)",
        join_time.as_secs_f64(),
        failed.load(Ordering::Relaxed)
    );

    // The writes, at the given rate, each to a new user scope.
    let run_id = std::process::id();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    let mut writers = Vec::with_capacity(writes);
    let writes_started = Instant::now();
    for i in 0..writes {
        ticker.tick().await;
        let (http, base, admin, value) = (http.clone(), base.clone(), admin.clone(), value.clone());
        writers.push(tokio::spawn(async move {
            let body = json!({"key": KEY, "scope": {"user_id": format!("fanout-{run_id}-{i}")}, "value": value,
                              "reason": "fan-out benchmark", "old_value": value});
            let sent = Instant::now();
            let response =
                http.post(format!("{base}/api/v1/admin/policy-values")).bearer_auth(&admin).json(&body).send().await;
            let response = response.expect("write");
            let committed = Instant::now();
            let status = response.status().as_u16();
            let reply: Value = response.json().await.unwrap_or(Value::Null);
            assert_eq!(status, 201, "{reply}");
            (reply["value"]["seq"].as_i64().expect("seq"), sent, committed)
        }));
    }
    let mut commits = std::collections::HashMap::new();
    let mut write_latencies = Vec::new();
    for w in writers {
        let (seq, sent, committed) = w.await.expect("writer");
        commits.insert(seq, (sent, committed));
        write_latencies.push((committed - sent).as_secs_f64() * 1e3);
    }
    let write_seconds = writes_started.elapsed().as_secs_f64();

    // Every subscriber stops once it has the last write, or 30 s after it.
    let _ = stop_tx.send(commits.keys().copied().max());
    let deadline = tokio::time::sleep(Duration::from_secs(40));
    tokio::pin!(deadline);
    let mut latencies = Vec::with_capacity(subscribed * writes);
    let mut from_sent = Vec::with_capacity(subscribed * writes);
    let (mut delivered, mut unknown) = (0usize, 0usize);
    for task in tasks {
        let events = tokio::select! {
            r = task => r.unwrap_or_default(),
            () = &mut deadline => Vec::new(),
        };
        for (seq, at) in events {
            match commits.get(&seq) {
                Some((sent, committed)) => {
                    delivered += 1;
                    latencies.push(signed_ms(at, *committed));
                    from_sent.push(signed_ms(at, *sent));
                }
                None => unknown += 1,
            }
        }
    }
    drop(server);
    latencies.sort_by(f64::total_cmp);
    from_sent.sort_by(f64::total_cmp);
    write_latencies.sort_by(f64::total_cmp);
    let expected = subscribed * commits.len();
    let pct = |p: f64| if latencies.is_empty() { f64::NAN } else { common::percentile(&latencies, p) };
    println!(
        "fan-out: {} writes in {write_seconds:.1} s (201 in p50 {:.1} ms, p99 {:.1} ms); {delivered} of {expected} deliveries \
         ({} missing, {unknown} other events)",
        commits.len(),
        common::percentile(&write_latencies, 50.0),
        common::percentile(&write_latencies, 99.0),
        expected - delivered.min(expected),
    );
    println!(
        "fan-out latency, 201 at the writer -> event at the subscriber, {subscribed} subscribers: \
         p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, min {:.1} ms (target p99 <= 100 ms)",
        pct(50.0),
        pct(99.0),
        latencies.last().copied().unwrap_or(f64::NAN),
        latencies.first().copied().unwrap_or(f64::NAN),
    );
    if !from_sent.is_empty() {
        println!(
            "fan-out latency, write sent -> event at the subscriber (the commit lies between the two): \
             p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            common::percentile(&from_sent, 50.0),
            common::percentile(&from_sent, 99.0),
            from_sent.last().copied().unwrap_or(f64::NAN),
        );
    }
    let per = rss_after.saturating_sub(rss_before) as f64 / subscribed.max(1) as f64 / 1024.0;
    println!(
        "fan-out server memory: VmRSS {:.1} MiB before, {:.1} MiB with {subscribed} subscribers: {per:.1} KiB per subscriber (target <= 32 KiB)",
        rss_before as f64 / 1048576.0,
        rss_after as f64 / 1048576.0,
    );
    println!(
        "fan-out database connections (pg_stat_activity, this database, but this benchmark's own): \
         {connections_before} before, {connections_after} with the subscribers (target: unchanged)"
    );
}

/// One subscription: opens the feed, counts itself joined, then records
/// every event's position and arrival until the last write's event (once
/// the writer says which it is), 30 s after that, or the end of the stream.
async fn subscribe(
    http: reqwest::Client,
    base: String,
    token: String,
    joined: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    gate: Arc<Semaphore>,
    mut stop: watch::Receiver<Option<i64>>,
) -> Vec<(i64, Instant)> {
    let permit = gate.acquire().await.expect("gate");
    let response = http.get(format!("{base}/api/v1/changes")).bearer_auth(&token).send().await;
    drop(permit);
    let mut response = match response {
        Ok(r) if r.status().is_success() => r,
        _ => {
            failed.fetch_add(1, Ordering::Relaxed);
            return Vec::new();
        }
    };
    joined.fetch_add(1, Ordering::Relaxed);
    let mut events = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut max_seen = i64::MIN;
    // Once the writer names the last write: at most 30 s more.
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        let until = async move {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        let chunk = tokio::select! {
            c = response.chunk() => c,
            r = stop.changed(), if deadline.is_none() => {
                let last = *stop.borrow();
                match last {
                    Some(l) if r.is_ok() && max_seen < l => {
                        deadline = Some(tokio::time::Instant::now() + Duration::from_secs(30));
                        continue;
                    }
                    _ => break,
                }
            }
            () = until => break,
        };
        let Ok(Some(bytes)) = chunk else { break };
        let at = Instant::now();
        pending.extend_from_slice(&bytes);
        let mut start = 0;
        while let Some(end) = pending[start..].windows(2).position(|w| w == b"\n\n") {
            let event = &pending[start..start + end];
            if let Some(id) = event.split(|b| *b == b'\n').find_map(|l| l.strip_prefix(b"id: ")) {
                if let Some(seq) = std::str::from_utf8(id).ok().and_then(|s| s.trim().parse::<i64>().ok()) {
                    events.push((seq, at));
                    max_seen = max_seen.max(seq);
                    if stop.borrow().is_some_and(|l| seq >= l) {
                        return events;
                    }
                }
            }
            start += end + 2;
        }
        pending.drain(..start);
    }
    events
}

/// `at - since` in milliseconds, negative when `at` came first.
fn signed_ms(at: Instant, since: Instant) -> f64 {
    if at >= since {
        (at - since).as_secs_f64() * 1e3
    } else {
        -((since - at).as_secs_f64() * 1e3)
    }
}
