//! Fan-out of the change feed: one server (the release binary, started
//! here), FANOUT_SUBSCRIBERS concurrent subscribers to `GET /api/v1/changes`
//! on loopback (10,000 by default), then FANOUT_WRITES admin writes
//! (200) at FANOUT_RATE per second (20). For every delivery, the latency from
//! the write's 201 reaching the writer to the event reaching the subscriber
//! (both in this process, one monotonic clock); the server's resident memory
//! before and after the subscribers join; the database connections open
//! on the benchmark database before and after; and the CPU seconds the
//! server and this process spent per 1,000 deliveries. The subscribers are
//! bare TCP connections (no HTTP client each), so that this process leaves
//! the CPU to the server; each checks it got every event once, in order.
//!
//! Run by scripts/bench-load.sh (make bench), which builds the server,
//! raises the file-descriptor limit and sets POLICY_VALUES_BIN.

#[path = "support/common.rs"]
mod common;
#[path = "support/server.rs"]
mod server;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
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
    let server_pid = server.pid.to_string();
    let addr: SocketAddr = base.trim_start_matches("http://").parse().expect("the server's address");
    let request: Arc<[u8]> = format!(
        "GET /api/v1/changes HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {reader}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .into_bytes()
    .into();
    let cpu_before_join = (cpu_seconds(&server_pid), cpu_seconds("self"));

    // Subscribers: each records (position, arrival) for every event.
    let joined = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let (stop_tx, stop_rx) = watch::channel(None::<i64>);
    let gate = Arc::new(Semaphore::new(CONNECTING));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(subscribers);
    for _ in 0..subscribers {
        let (request, joined, failed, gate, stop) =
            (request.clone(), joined.clone(), failed.clone(), gate.clone(), stop_rx.clone());
        tasks.push(tokio::spawn(subscribe(addr, request, joined, failed, gate, stop)));
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
    let cpu_joined = (cpu_seconds(&server_pid), cpu_seconds("self"));
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
    let cpu_before_writes = (cpu_seconds(&server_pid), cpu_seconds("self"));
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
    let (mut delivered, mut unknown, mut disordered, mut complete) = (0usize, 0usize, 0usize, 0usize);
    for task in tasks {
        let events = tokio::select! {
            r = task => r.unwrap_or_default(),
            () = &mut deadline => Vec::new(),
        };
        // Every write's event exactly once, in order: positions strictly
        // increasing, each one a write's, as many as there were writes.
        let mut previous = i64::MIN;
        let mut ours = 0;
        for (seq, at) in events {
            if seq <= previous {
                disordered += 1;
            }
            previous = previous.max(seq);
            match commits.get(&seq) {
                Some((sent, committed)) => {
                    delivered += 1;
                    ours += 1;
                    latencies.push(signed_ms(at, *committed));
                    from_sent.push(signed_ms(at, *sent));
                }
                None => unknown += 1,
            }
        }
        complete += usize::from(ours == commits.len());
    }
    // The subscribers have all returned (or the deadline passed): the CPU
    // each process spent on the writes and their deliveries.
    let cpu_after_writes = (cpu_seconds(&server_pid), cpu_seconds("self"));
    drop(server);
    latencies.sort_by(f64::total_cmp);
    from_sent.sort_by(f64::total_cmp);
    write_latencies.sort_by(f64::total_cmp);
    let expected = subscribed * commits.len();
    let pct = |p: f64| if latencies.is_empty() { f64::NAN } else { common::percentile(&latencies, p) };
    println!(
        "fan-out: {} writes in {write_seconds:.1} s (201 in p50 {:.1} ms, p99 {:.1} ms); {delivered} of {expected} deliveries \
         ({} missing, {disordered} out of order or repeated, {unknown} other events; \
         {complete} of {subscribed} subscribers got every event exactly once, in order)",
        commits.len(),
        common::percentile(&write_latencies, 50.0),
        common::percentile(&write_latencies, 99.0),
        expected - delivered.min(expected),
    );
    let per_thousand = |cpu: f64| cpu / delivered.max(1) as f64 * 1000.0;
    let (server_cpu, tool_cpu) = (cpu_after_writes.0 - cpu_before_writes.0, cpu_after_writes.1 - cpu_before_writes.1);
    println!(
        "fan-out CPU per 1,000 deliveries (utime+stime, /proc/<pid>/stat, from the first write to the last subscriber \
         done, the writes' own work included): server {:.3} s, load tool {:.3} s ({server_cpu:.2} s and {tool_cpu:.2} s \
         for {delivered} deliveries)",
        per_thousand(server_cpu),
        per_thousand(tool_cpu),
    );
    println!(
        "fan-out CPU to join {subscribed} subscribers (and settle 2 s): server {:.2} s, load tool {:.2} s",
        cpu_joined.0 - cpu_before_join.0,
        cpu_joined.1 - cpu_before_join.1,
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

/// One subscription over a bare TCP connection, as lean as a subscriber
/// can be, so that this process leaves the CPU to the server: it sends the
/// GET itself, checks the response head, then decodes the chunked body and
/// scans it for `id:` lines, recording each event's position and arrival
/// until the last write's event (once the writer says which it is), 30 s
/// after that, or the end of the stream.
async fn subscribe(
    addr: SocketAddr,
    request: Arc<[u8]>,
    joined: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    gate: Arc<Semaphore>,
    mut stop: watch::Receiver<Option<i64>>,
) -> Vec<(i64, Instant)> {
    let permit = gate.acquire().await.expect("gate");
    let opened = open(addr, &request).await;
    drop(permit);
    let (mut stream, mut body) = match opened {
        Ok(opened) => opened,
        Err(e) => {
            if failed.fetch_add(1, Ordering::Relaxed) < 3 {
                eprintln!("fan-out: a subscription failed: {e}");
            }
            return Vec::new();
        }
    };
    joined.fetch_add(1, Ordering::Relaxed);
    let mut raw = vec![0u8; 16 * 1024];
    let mut events = Vec::with_capacity(256);
    // The events already in the response head's read, if any.
    body.scan(Instant::now(), &mut events);
    // Once the writer names the last write: at most 30 s more.
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        if let (Some(&(seen, _)), Some(last)) = (events.last(), *stop.borrow()) {
            if seen >= last {
                break;
            }
        }
        let until = async move {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        // `read`, not `readable` + `try_read`: a read that fills less than
        // the buffer tells tokio the socket is drained, so each event costs
        // one read system call, not a second one answering EAGAIN (strace
        // counted 59,609 EAGAIN of 121,768 reads at 1,000 subscribers).
        let read = tokio::select! {
            r = stream.read(&mut raw) => r,
            r = stop.changed(), if deadline.is_none() => {
                if r.is_err() {
                    break;
                }
                deadline = Some(tokio::time::Instant::now() + Duration::from_secs(30));
                continue;
            }
            () = until => break,
        };
        match read {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let at = Instant::now();
                if !body.feed(&raw[..n], at, &mut events) {
                    break;
                }
            }
        }
    }
    events
}

/// Connects, sends the GET and reads the response head: 200, chunked.
async fn open(addr: SocketAddr, request: &[u8]) -> Result<(TcpStream, Body), String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
    let mut sent = 0;
    while sent < request.len() {
        stream.writable().await.map_err(|e| e.to_string())?;
        match stream.try_write(&request[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(format!("send: {e}")),
        }
    }
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 4096];
    let end = loop {
        stream.readable().await.map_err(|e| e.to_string())?;
        match stream.try_read(&mut buf) {
            Ok(0) => return Err("closed before the response head".into()),
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(format!("read: {e}")),
        }
        if let Some(end) = find(&head, b"\r\n\r\n") {
            break end + 4;
        }
        if head.len() > 64 * 1024 {
            return Err("response head too long".into());
        }
    };
    let text = String::from_utf8_lossy(&head[..end]).to_ascii_lowercase();
    if !text.starts_with("http/1.1 200") {
        return Err(text.lines().next().unwrap_or("").to_string());
    }
    if !text.contains("\r\ntransfer-encoding: chunked\r\n") || !text.contains("\r\ncontent-type: text/event-stream") {
        return Err(format!("not a chunked event stream: {text}"));
    }
    let mut body = Body::default();
    body.pending.extend_from_slice(&head[end..]);
    Ok((stream, body))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A chunked (HTTP/1.1) body of server-sent events, decoded as it comes.
#[derive(Default)]
struct Body {
    /// Bytes received and not yet decoded (an incomplete chunk-size line).
    pending: Vec<u8>,
    /// Data bytes left in the current chunk, then its CRLF.
    left: usize,
    in_chunk: bool,
    /// The CRLF after a chunk's data still to skip.
    crlf: usize,
    /// The current line of the event stream, when a read ended inside it.
    line: Vec<u8>,
    /// The `id:` of the event being read.
    id: Option<i64>,
    /// The zero-size chunk came: the stream ended.
    ended: bool,
}

impl Body {
    /// Decodes what was already received (after the response head).
    fn scan(&mut self, at: Instant, events: &mut Vec<(i64, Instant)>) {
        let pending = std::mem::take(&mut self.pending);
        self.feed(&pending, at, events);
    }

    /// Decodes `bytes`, recording each complete event's id with `at`;
    /// false once the stream has ended or is not well formed.
    fn feed(&mut self, mut bytes: &[u8], at: Instant, events: &mut Vec<(i64, Instant)>) -> bool {
        while !bytes.is_empty() && !self.ended {
            if self.crlf > 0 {
                let n = self.crlf.min(bytes.len());
                self.crlf -= n;
                bytes = &bytes[n..];
            } else if self.in_chunk {
                let n = self.left.min(bytes.len());
                self.lines(&bytes[..n], at, events);
                self.left -= n;
                bytes = &bytes[n..];
                if self.left == 0 {
                    self.in_chunk = false;
                    self.crlf = 2;
                }
            } else {
                // A chunk-size line, possibly split across reads.
                let Some(nl) = bytes.iter().position(|b| *b == b'\n') else {
                    self.pending.extend_from_slice(bytes);
                    return true;
                };
                self.pending.extend_from_slice(&bytes[..nl]);
                bytes = &bytes[nl + 1..];
                let line = std::mem::take(&mut self.pending);
                let hex = line.split(|b| *b == b';' || *b == b'\r').next().unwrap_or(&[]);
                let Some(size) = std::str::from_utf8(hex).ok().and_then(|h| usize::from_str_radix(h.trim(), 16).ok())
                else {
                    return false;
                };
                if size == 0 {
                    self.ended = true;
                } else {
                    self.left = size;
                    self.in_chunk = true;
                }
            }
        }
        !self.ended
    }

    /// Event-stream data: lines; an empty line ends an event.
    fn lines(&mut self, mut data: &[u8], at: Instant, events: &mut Vec<(i64, Instant)>) {
        while let Some(nl) = data.iter().position(|b| *b == b'\n') {
            let line = if self.line.is_empty() {
                &data[..nl]
            } else {
                self.line.extend_from_slice(&data[..nl]);
                &self.line[..]
            };
            if line.is_empty() {
                if let Some(id) = self.id.take() {
                    events.push((id, at));
                }
            } else if let Some(id) = line.strip_prefix(b"id:") {
                self.id = std::str::from_utf8(id).ok().and_then(|s| s.trim().parse().ok());
            }
            self.line.clear();
            data = &data[nl + 1..];
        }
        self.line.extend_from_slice(data);
    }
}

/// CPU seconds (user + system) a process has used so far, from
/// `/proc/<pid>/stat` (fields 14 and 15, in USER_HZ: 100 per second).
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may hold spaces: the fields after it follow the ')'.
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) as f64 / 100.0
}

/// `at - since` in milliseconds, negative when `at` came first.
fn signed_ms(at: Instant, since: Instant) -> f64 {
    if at >= since {
        (at - since).as_secs_f64() * 1e3
    } else {
        -((since - at).as_secs_f64() * 1e3)
    }
}
