//! Fan-out of the change feed: one server (the release binary, started
//! here), FANOUT_SUBSCRIBERS concurrent subscribers to `GET /api/v1/changes`
//! on loopback (10,000 by default), then FANOUT_WRITES admin writes
//! (200) at FANOUT_RATE per second (20). For every delivery, the latency from
//! the write's commit (PostgreSQL's commit timestamp of the value row's
//! transaction, when the database keeps them) to the event reaching the
//! subscriber, and beside it from the write's 201 reaching the writer and
//! from the write being sent (all on the machine's wall clock); the
//! server's resident memory before and after the subscribers join; the
//! database connections open on the benchmark database before and after;
//! and the CPU seconds the server and this process spent per 1,000
//! deliveries. The subscribers are bare TCP connections (no HTTP client
//! each); each checks it got every event once, in order. By default one
//! thread reads them all and an event's arrival is the kernel's receive
//! timestamp (FANOUT_RECEIVER=kernel); FANOUT_RECEIVER=tasks gives each its
//! own task and takes the time its read returns.
//!
//! Run by scripts/bench-load.sh (make bench), which builds the server,
//! raises the file-descriptor limit and sets POLICY_VALUES_BIN.

#[path = "support/common.rs"]
mod common;
#[path = "support/server.rs"]
mod server;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
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
    runtime.block_on(run(bin, subscribers, writes, rate, Receiver::from_env()));
}

async fn run(bin: String, wanted: usize, writes: usize, rate: usize, receiver: Receiver) {
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

    // The subscriptions, opened CONNECTING at a time.
    let failed = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Semaphore::new(CONNECTING));
    let started = Instant::now();
    let mut opening = Vec::with_capacity(subscribers);
    for _ in 0..subscribers {
        let (request, failed, gate) = (request.clone(), failed.clone(), gate.clone());
        opening.push(tokio::spawn(async move {
            let permit = gate.acquire().await.expect("gate");
            let opened = open(addr, &request).await;
            drop(permit);
            opened
                .map_err(|e| {
                    if failed.fetch_add(1, Ordering::Relaxed) < 3 {
                        eprintln!("fan-out: a subscription failed: {e}");
                    }
                })
                .ok()
        }));
    }
    let mut opened = Vec::with_capacity(subscribers);
    let join_deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    for task in opening {
        if let Ok(Ok(Some(subscription))) = tokio::time::timeout_at(join_deadline, task).await {
            opened.push(subscription);
        }
    }
    let join_time = started.elapsed();
    let subscribed = opened.len();

    // The subscribers read from here on; the writer names the last write
    // once it has them all (`last`, i64::MIN until then).
    let last = Arc::new(AtomicI64::new(i64::MIN));
    let (stop_tx, stop_rx) = watch::channel(None::<i64>);
    let receiving = match receiver {
        Receiver::Tasks => {
            let tasks: Vec<_> =
                opened.into_iter().map(|(stream, body)| tokio::spawn(follow(stream, body, stop_rx.clone()))).collect();
            tokio::spawn(async move {
                let mut all = Vec::with_capacity(tasks.len());
                for task in tasks {
                    all.push(task.await.unwrap_or_default());
                }
                (all, None)
            })
        }
        Receiver::Kernel => {
            let streams: Vec<_> = opened
                .into_iter()
                .map(|(stream, body)| (stream.into_std().expect("a standard stream"), body))
                .collect();
            let last = last.clone();
            tokio::task::spawn_blocking(move || {
                let (events, stats) = read_stamped(streams, &last);
                (events, Some(stats))
            })
        }
    };
    // Let the server settle (buffers allocated, nothing in flight).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = server.rss_bytes();
    let connections_after = server::database_connections(&pool).await;
    let cpu_joined = (cpu_seconds(&server_pid), cpu_seconds("self"));
    println!(
        "fan-out: {subscribed} of {subscribers} subscribers joined in {:.1} s ({} failed); receipt: {}",
        join_time.as_secs_f64(),
        failed.load(Ordering::Relaxed),
        receiver.describe(),
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
            let sent = now_ns();
            let response =
                http.post(format!("{base}/api/v1/admin/policy-values")).bearer_auth(&admin).json(&body).send().await;
            let response = response.expect("write");
            let committed = now_ns();
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
        write_latencies.push((committed - sent) as f64 / 1e6);
    }
    let write_seconds = writes_started.elapsed().as_secs_f64();
    let seqs: Vec<i64> = commits.keys().copied().collect();
    let committed_at = commit_times(&pool, &seqs).await;

    // Every subscriber stops once it has the last write, or 30 s after it.
    let final_seq = seqs.iter().copied().max();
    last.store(final_seq.unwrap_or(i64::MIN + 1), Ordering::Relaxed);
    let _ = stop_tx.send(final_seq);
    let (received, stats) =
        tokio::time::timeout(Duration::from_secs(40), receiving).await.ok().and_then(Result::ok).unwrap_or_default();
    let mut from_commit = Vec::with_capacity(subscribed * writes);
    let mut latencies = Vec::with_capacity(subscribed * writes);
    let mut from_sent = Vec::with_capacity(subscribed * writes);
    let (mut delivered, mut unknown, mut disordered, mut complete) = (0usize, 0usize, 0usize, 0usize);
    for events in received {
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
                Some((sent, answered)) => {
                    delivered += 1;
                    ours += 1;
                    latencies.push((at - answered) as f64 / 1e6);
                    from_sent.push((at - sent) as f64 / 1e6);
                    if let Some(commit) = committed_at.as_ref().and_then(|c| c.get(&seq)) {
                        from_commit.push((at - commit) as f64 / 1e6);
                    }
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
    write_latencies.sort_by(f64::total_cmp);
    let expected = subscribed * commits.len();
    println!(
        "fan-out: {} writes in {write_seconds:.1} s (201 in p50 {:.1} ms, p99 {:.1} ms); {delivered} of {expected} deliveries \
         ({} missing, {disordered} out of order or repeated, {unknown} other events; \
         {complete} of {subscribed} subscribers got every event exactly once, in order)",
        commits.len(),
        common::percentile(&write_latencies, 50.0),
        common::percentile(&write_latencies, 99.0),
        expected - delivered.min(expected),
    );
    if let Some(stats) = stats {
        println!(
            "fan-out kernel receipt: {} reads; {} events shared a read with a later one and carry its (later) \
             timestamp; {} reads came without a timestamp and carry the read's time",
            stats.reads, stats.shared, stats.unstamped,
        );
    }
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
    match &committed_at {
        Some(_) => println!(
            "fan-out latency, commit -> event at the subscriber, {subscribed} subscribers ({} deliveries; the commit \
             time is PostgreSQL's, pg_xact_commit_timestamp): {} (target p99 <= 100 ms)",
            from_commit.len(),
            spread(&mut from_commit),
        ),
        None => println!(
            "fan-out latency, commit -> event: not measured, the database keeps no commit timestamps \
             (track_commit_timestamp = on, set by scripts/dev-db.sh's clusters, needs a restart)"
        ),
    }
    println!(
        "fan-out latency, 201 at the writer -> event at the subscriber, {subscribed} subscribers: {}",
        spread(&mut latencies)
    );
    println!(
        "fan-out latency, write sent -> event at the subscriber (the commit lies between the two): {}",
        spread(&mut from_sent)
    );
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

/// Each write's commit time (nanoseconds since the Unix epoch) by its
/// position, from PostgreSQL's commit timestamps of the value rows'
/// transactions; `None` when the server does not keep them
/// (`track_commit_timestamp` off). PostgreSQL and this process read the
/// same wall clock: they run on one machine.
async fn commit_times(pool: &sqlx::PgPool, seqs: &[i64]) -> Option<std::collections::HashMap<i64, i64>> {
    let kept: String =
        sqlx::query_scalar("select current_setting('track_commit_timestamp')").fetch_one(pool).await.ok()?;
    if kept != "on" {
        return None;
    }
    let rows: Vec<(i64, Option<i64>)> = sqlx::query_as(
        "select seq, (extract(epoch from pg_xact_commit_timestamp(xmin)) * 1000000)::bigint \
         from policy_values where seq = any($1)",
    )
    .bind(seqs)
    .fetch_all(pool)
    .await
    .ok()?;
    Some(rows.into_iter().filter_map(|(seq, micros)| Some((seq, micros? * 1000))).collect())
}

/// "p50 …, p99 …, max …, min …" of latencies in milliseconds (sorted here).
fn spread(ms: &mut [f64]) -> String {
    ms.sort_by(f64::total_cmp);
    match (ms.first(), ms.last()) {
        (Some(min), Some(max)) => format!(
            "p50 {:.1} ms, p99 {:.1} ms, max {max:.1} ms, min {min:.1} ms",
            common::percentile(ms, 50.0),
            common::percentile(ms, 99.0)
        ),
        _ => "no deliveries".to_string(),
    }
}

/// Events as (position, arrival in nanoseconds since the Unix epoch).
type Events = Vec<(i64, i64)>;

/// The wall clock in nanoseconds since the Unix epoch: the clock of the
/// kernel's receive timestamps, so the writer's times compare with them.
fn now_ns() -> i64 {
    common::unix_nanos() as i64
}

/// How the subscribers read and when an event counts as received.
#[derive(Clone, Copy)]
enum Receiver {
    /// One thread reads every subscription in rounds (epoll, then a short
    /// sleep), and an event's arrival is the kernel's receive timestamp of
    /// its bytes (SO_TIMESTAMPNS): the moment they reached the
    /// subscriber's socket, whenever this process reads them. This process
    /// then stands in for subscribers on other machines: it is not woken
    /// once per delivery, and how soon it reads does not move the figure.
    Kernel,
    /// A tokio task per subscription, woken by every event; an event's
    /// arrival is the clock when the read returned, so the figure includes
    /// this process's own scheduling on the cores the server uses.
    Tasks,
}

impl Receiver {
    fn from_env() -> Receiver {
        match std::env::var("FANOUT_RECEIVER").as_deref() {
            Ok("tasks") => Receiver::Tasks,
            _ => Receiver::Kernel,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Receiver::Kernel => "the kernel's receive timestamp (FANOUT_RECEIVER=kernel, one reading thread)",
            Receiver::Tasks => "the read's return (FANOUT_RECEIVER=tasks, a task per subscriber)",
        }
    }
}

/// One subscription in its own task: decodes the chunked body and records
/// each event's position and arrival until the last write's event (once
/// the writer says which it is), 30 s after that, or the end of the stream.
async fn follow(mut stream: TcpStream, mut body: Body, mut stop: watch::Receiver<Option<i64>>) -> Events {
    let mut raw = vec![0u8; 16 * 1024];
    let mut events = Vec::with_capacity(256);
    // The events already in the response head's read, if any.
    body.scan(now_ns(), &mut events);
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
                if !body.feed(&raw[..n], now_ns(), &mut events) {
                    break;
                }
            }
        }
    }
    events
}

/// What the kernel-timestamp reader counted.
#[derive(Default)]
struct KernelStats {
    reads: usize,
    /// Events that came in one read with a later event: the read's
    /// timestamp is that of its last bytes, so theirs is overstated.
    shared: usize,
    /// Reads without a timestamp (none expected), stamped with the clock.
    unstamped: usize,
}

/// Time between two reading rounds: short beside the 50 ms between
/// writes, long beside one round's reads.
const ROUND_PAUSE: Duration = Duration::from_millis(5);

/// Reads every subscription from one thread until each has the last
/// write's event (`last`, once set), 30 s after that, or its end. Each
/// socket has SO_TIMESTAMPNS on, so every read brings the kernel's receive
/// time of the last bytes it returns; one epoll set (level-triggered) says
/// which sockets hold data, each of those is read once per round, and the
/// thread sleeps ROUND_PAUSE between rounds instead of waking per event.
fn read_stamped(streams: Vec<(std::net::TcpStream, Body)>, last: &AtomicI64) -> (Vec<Events>, KernelStats) {
    use std::os::fd::AsRawFd;

    let count = streams.len();
    let (streams, mut bodies): (Vec<_>, Vec<_>) = streams.into_iter().unzip();
    let mut events: Vec<Events> = (0..count).map(|_| Vec::with_capacity(256)).collect();
    let mut stats = KernelStats::default();
    // SAFETY: plain system calls on descriptors this function owns or
    // borrows from `streams`, which outlive every use; the buffers passed
    // are live and as long as stated.
    let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    assert!(epoll >= 0, "epoll_create1: {}", std::io::Error::last_os_error());
    for (i, stream) in streams.iter().enumerate() {
        let fd = stream.as_raw_fd();
        let on: libc::c_int = 1;
        // SAFETY: as above.
        let set = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_TIMESTAMPNS,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(set, 0, "SO_TIMESTAMPNS: {}", std::io::Error::last_os_error());
        let mut interest = libc::epoll_event { events: (libc::EPOLLIN | libc::EPOLLRDHUP) as u32, u64: i as u64 };
        // SAFETY: as above.
        let added = unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, fd, &mut interest) };
        assert_eq!(added, 0, "epoll_ctl: {}", std::io::Error::last_os_error());
        bodies[i].scan(now_ns(), &mut events[i]);
    }
    let mut open = vec![true; count];
    let mut left = count;
    // Stops watching subscription `i`: it is done.
    let close = |i: usize, open: &mut [bool], left: &mut usize| {
        if std::mem::replace(&mut open[i], false) {
            *left -= 1;
            // SAFETY: as above.
            unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_DEL, streams[i].as_raw_fd(), std::ptr::null_mut()) };
        }
    };
    let finished = |events: &Events, last: i64| last != i64::MIN && events.last().is_some_and(|&(seq, _)| seq >= last);
    let mut ready = vec![libc::epoll_event { events: 0, u64: 0 }; 16 * 1024];
    let mut raw = vec![0u8; 16 * 1024];
    let mut until: Option<Instant> = None;
    while left > 0 {
        let last = last.load(Ordering::Relaxed);
        if last != i64::MIN && until.is_none() {
            until = Some(Instant::now() + Duration::from_secs(30));
            for (i, got) in events.iter().enumerate() {
                if finished(got, last) {
                    close(i, &mut open, &mut left);
                }
            }
            continue;
        }
        if until.is_some_and(|u| Instant::now() >= u) {
            break;
        }
        // SAFETY: as above.
        let got = unsafe { libc::epoll_wait(epoll, ready.as_mut_ptr(), ready.len() as libc::c_int, 100) };
        if got < 0 {
            let e = std::io::Error::last_os_error();
            assert_eq!(e.kind(), std::io::ErrorKind::Interrupted, "epoll_wait: {e}");
            continue;
        }
        for event in &ready[..got as usize] {
            let i = event.u64 as usize;
            if !open[i] {
                continue;
            }
            match receive_stamped(streams[i].as_raw_fd(), &mut raw) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Ok((0, _)) | Err(_) => close(i, &mut open, &mut left),
                Ok((n, stamp)) => {
                    stats.reads += 1;
                    let stamp = stamp.unwrap_or_else(|| {
                        stats.unstamped += 1;
                        now_ns()
                    });
                    let before = events[i].len();
                    let going = bodies[i].feed(&raw[..n], stamp, &mut events[i]);
                    stats.shared += (events[i].len() - before).saturating_sub(1);
                    if !going || finished(&events[i], last) {
                        close(i, &mut open, &mut left);
                    }
                }
            }
        }
        if got > 0 {
            std::thread::sleep(ROUND_PAUSE);
        }
    }
    // SAFETY: as above; `streams` close their own descriptors when dropped.
    unsafe { libc::close(epoll) };
    (events, stats)
}

/// One `recvmsg` without waiting: the bytes and, from the control message,
/// the kernel's receive timestamp of the last of them (SCM_TIMESTAMPNS).
fn receive_stamped(fd: libc::c_int, buf: &mut [u8]) -> std::io::Result<(usize, Option<i64>)> {
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    let mut control = [0u64; 16];
    // SAFETY: a zeroed msghdr is valid; it points at `iov` and `control`,
    // both live for the call, with their true lengths.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: as above.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut stamp = None;
    // SAFETY: the CMSG_* walk stays within the control buffer the kernel
    // filled (msg_controllen), and the timestamp is read unaligned.
    unsafe {
        let mut header = libc::CMSG_FIRSTHDR(&msg);
        while !header.is_null() {
            if (*header).cmsg_level == libc::SOL_SOCKET && (*header).cmsg_type == libc::SCM_TIMESTAMPNS {
                let at: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(header).cast());
                stamp = Some(at.tv_sec as i64 * 1_000_000_000 + at.tv_nsec as i64);
            }
            header = libc::CMSG_NXTHDR(&msg, header);
        }
    }
    Ok((n as usize, stamp))
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
    fn scan(&mut self, at: i64, events: &mut Events) {
        let pending = std::mem::take(&mut self.pending);
        self.feed(&pending, at, events);
    }

    /// Decodes `bytes`, recording each complete event's id with `at`;
    /// false once the stream has ended or is not well formed.
    fn feed(&mut self, mut bytes: &[u8], at: i64, events: &mut Events) -> bool {
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
    fn lines(&mut self, mut data: &[u8], at: i64, events: &mut Events) {
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
