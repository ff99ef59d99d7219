//! Cold load time and memory of a PolicyClient replica of 1,000,000 value
//! rows (the rows are inserted once into the benchmark database), from the
//! database; then, in the same run and with the `http-source` feature
//! (`make bench` enables it), from a server in this process: the HTTP
//! source's time to first read and to live, and a cache-first start from a
//! snapshot file of the same rows, with its open-to-first-read step timed
//! alone (wall and the starting thread's CPU time).

#[path = "support/common.rs"]
mod common;

use std::time::Instant;

use policy_values::client::PolicyClient;

const ROWS: i64 = 1_000_000;

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(run());
}

async fn run() {
    let Some((url, pool)) = common::database().await else {
        return;
    };
    let have: i64 = sqlx::query_scalar("select count(*) from policy_values where actor = 'bench-load'")
        .fetch_one(&pool)
        .await
        .expect("count");
    if have < ROWS {
        let started = Instant::now();
        // One transaction; the notify trigger is off meanwhile so the load does
        // not queue a million notifications nobody listens to.
        let mut tx = pool.begin().await.expect("begin");
        for statement in [
            "alter table policy_values disable trigger policy_values_notify",
            "insert into policy_values (kind, key, level, scope_id, value, effective_at, actor, reason)
             select 'set', 'allocation.max_concurrent_per_user',
                    (array['user','project','org','plan'])[1 + g % 4], 'load-' || g, to_jsonb(g % 1000),
                    now() - interval '1 day', 'bench-load', 'replica load benchmark'
             from generate_series(1, 1000000) g",
            "alter table policy_values enable trigger policy_values_notify",
        ] {
            sqlx::query(statement).execute(&mut *tx).await.expect("load rows");
        }
        tx.commit().await.expect("commit");
        println!("inserted {ROWS} rows in {:.1} s", started.elapsed().as_secs_f64());
    }
    let before = common::rss_bytes();
    let started = Instant::now();
    let client = PolicyClient::builder()
        .database_url(&url)
        .load_timeout(std::time::Duration::from_secs(120))
        .connect()
        .await
        .expect("client");
    let load = started.elapsed();
    let after = common::rss_bytes();
    let health = client.health();
    assert!(health.rows as i64 >= ROWS, "replica holds {} rows", health.rows);
    println!(
        "replica of {} rows: cold load {:.2} s, resident memory +{:.0} MB (process {:.0} MB)",
        health.rows,
        load.as_secs_f64(),
        (after.saturating_sub(before)) as f64 / 1e6,
        after as f64 / 1e6,
    );
    drop(client);
    #[cfg(feature = "http-source")]
    http_source(pool).await;
    #[cfg(not(feature = "http-source"))]
    {
        pool.close().await;
        println!("(the HTTP source's cold start needs --features http-source, as make bench runs it)");
    }
}

/// Time to first read and to live of an HTTP-source client against a
/// server (in this process) holding the same rows; then a cache-first start
/// from a snapshot file of them.
#[cfg(feature = "http-source")]
async fn http_source(pool: sqlx::PgPool) {
    use policy_values::client::Origin;
    use policy_values::domain::Scope;
    use policy_values::server::auth::generate_token;
    use policy_values::server::Application;
    use policy_values::store::tokens::{self, Role};
    use std::time::Duration;

    let token = generate_token().expect("token");
    let name = format!("bench-replica-load-{}", std::process::id());
    tokens::insert(&pool, &name, Role::Reader, &token, None).await.expect("token");
    let server_started = Instant::now();
    let app = Application::build(pool.clone(), "127.0.0.1:0").await.expect("bind");
    let base = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    let http = reqwest::Client::new();
    while !http.get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status().is_success()) {
        assert!(server_started.elapsed() < Duration::from_secs(120), "the server did not load within 120 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "server in this process ready (its own replica loaded) in {:.2} s",
        server_started.elapsed().as_secs_f64()
    );
    let scope = Scope::new().user("load-4").org("load-3");
    let token = token.to_string();
    let key = "allocation.max_concurrent_per_user";

    // Cold: bootstrap (gzip) and feed, no snapshot file.
    let started = Instant::now();
    let client = PolicyClient::builder()
        .servers([base.as_str()])
        .token(token.as_str())
        .load_timeout(Duration::from_secs(120))
        .connect()
        .await
        .expect("client");
    let value = client.get_int(&scope, key).expect("read");
    let first_read = started.elapsed();
    assert!(client.wait_live(Duration::from_secs(120)).await, "the HTTP-source client went live");
    let live = started.elapsed();
    let rows = client.health().rows;
    assert!(rows as i64 >= ROWS, "replica holds {rows} rows");
    assert_eq!(value, 4, "user load-4 holds 4");
    println!(
        "HTTP source, replica of {rows} rows: first read after {:.2} s, live after {:.2} s",
        first_read.as_secs_f64(),
        live.as_secs_f64()
    );
    drop(client);

    // The snapshot file, written by a client that follows the server.
    let dir = std::env::temp_dir().join(format!("policy-values-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("policy.snapshot");
    let _ = std::fs::remove_file(&path);
    let writer = PolicyClient::builder()
        .servers([base.as_str()])
        .token(token.as_str())
        .snapshot_path(&path)
        .snapshot_interval(Duration::from_millis(50))
        .load_timeout(Duration::from_secs(120))
        .connect()
        .await
        .expect("client");
    let waited = Instant::now();
    while !path.exists() {
        assert!(waited.elapsed() < Duration::from_secs(120), "no snapshot file written within 120 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(writer);
    let size = std::fs::metadata(&path).expect("snapshot").len();
    // The two clients just dropped free their million-row replicas on the
    // runtime's threads; a start measured meanwhile would queue behind that
    // (912 ms instead of about 40 in the first run without this pause).
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Cache-first: serving from the file, then live once the feed caught up.
    let started = Instant::now();
    let client = cache_first(&base, &token, &path).await;
    let value = client.get_int(&scope, key).expect("read");
    let first_read = started.elapsed();
    let origin = client.health().origin;
    assert!(client.wait_live(Duration::from_secs(120)).await, "the cache-first client went live");
    let live = started.elapsed();
    assert_eq!(value, 4, "user load-4 holds 4");
    assert!(matches!(origin, Origin::Snapshot | Origin::Live), "origin {origin:?}");
    println!(
        "cache-first start from a snapshot file of {:.0} MB ({} rows): first read after {:.0} ms (origin {}), \
         live after {:.0} ms (target: first read <= 50 ms)",
        size as f64 / 1e6,
        client.health().rows,
        first_read.as_secs_f64() * 1e3,
        origin.as_str(),
        live.as_secs_f64() * 1e3,
    );
    drop(client);

    // The open-to-first-read step alone, three times: on a thread of its
    // own with a current-thread runtime, so the CPU time that thread spends
    // (from /proc/thread-self/schedstat, which other processes' load does
    // not inflate) is the start's own; the replica built from the file in
    // the background runs on another thread. Each client goes live before
    // the next starts.
    let mut wall = Vec::new();
    let mut cpu = Vec::new();
    for _ in 0..3 {
        let (base, token, path, scope) = (base.clone(), token.clone(), path.clone(), scope.clone());
        let (w, c) = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async {
                let cpu_before = thread_cpu_ns();
                let started = Instant::now();
                let client = cache_first(&base, &token, &path).await;
                let value = client.get_int(&scope, key).expect("read");
                let wall = started.elapsed();
                let cpu = thread_cpu_ns() - cpu_before;
                assert_eq!(value, 4, "user load-4 holds 4");
                assert!(client.wait_live(Duration::from_secs(120)).await, "the cache-first client went live");
                (wall, cpu)
            })
        })
        .join()
        .expect("the timing thread");
        wall.push(w.as_secs_f64() * 1e3);
        cpu.push(c as f64 / 1e6);
    }
    println!(
        "cache-first start, open to first read alone (3 runs): wall {} ms; CPU of the starting thread {} ms",
        wall.iter().map(|ms| format!("{ms:.1}")).collect::<Vec<_>>().join(" / "),
        cpu.iter().map(|ms| format!("{ms:.1}")).collect::<Vec<_>>().join(" / "),
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _ = tokens::revoke(&pool, &name).await;
}

/// A client over HTTP that starts from the snapshot file at `path`.
#[cfg(feature = "http-source")]
async fn cache_first(base: &str, token: &str, path: &std::path::Path) -> PolicyClient {
    PolicyClient::builder()
        .servers([base])
        .token(token)
        .snapshot_path(path)
        .load_timeout(std::time::Duration::from_secs(120))
        .connect()
        .await
        .expect("client")
}

/// CPU time the calling thread has run, in nanoseconds (the first field of
/// /proc/thread-self/schedstat); 0 where there is no such file.
#[cfg(feature = "http-source")]
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
