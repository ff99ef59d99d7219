//! For the benchmarks that drive the release server binary as a separate
//! process (scripts/bench-load.sh sets POLICY_VALUES_BIN): starting it,
//! its memory, tokens, and the database connections held.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use policy_values::server::auth::generate_token;
use policy_values::store::tokens::{self, Role};
use sqlx::PgPool;

/// The server binary, or `None` (with a note) outside scripts/bench-load.sh.
pub fn binary() -> Option<String> {
    match std::env::var("POLICY_VALUES_BIN") {
        Ok(bin) if !bin.is_empty() => Some(bin),
        _ => {
            eprintln!("POLICY_VALUES_BIN is not set: run this benchmark through scripts/bench-load.sh (make bench)");
            None
        }
    }
}

/// A scale knob from the environment, `default` when unset.
pub fn knob(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}

/// This process's soft limit on open files (`ulimit -n`).
pub fn open_files_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(1024)
}

/// A new token of `role` (`reader` or `admin`), stored in the database.
pub async fn token(pool: &PgPool, role: &str) -> String {
    let token = generate_token().expect("token");
    let name =
        format!("bench-{role}-{}-{}", std::process::id(), time::OffsetDateTime::now_utc().unix_timestamp_nanos());
    let role = if role == "admin" { Role::Admin } else { Role::Reader };
    tokens::insert(pool, &name, role, &token, None).await.expect("insert token");
    token
}

/// Connections open on this pool's database, other than the one asking.
pub async fn database_connections(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "select count(*) from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid()",
    )
    .fetch_one(pool)
    .await
    .expect("pg_stat_activity")
}

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// The server binary serving on a loopback port; killed when dropped.
pub struct Server {
    child: Child,
    pub base: String,
    pub pid: u32,
}

impl Server {
    /// Starts `bin serve` on `database_url` and waits until `/readyz` is 200.
    pub async fn start(bin: &str, database_url: &str, env: &[(&str, &str)]) -> Server {
        let port = free_port();
        let mut command = Command::new(bin);
        command
            .args(["serve", "--skip-migrate"])
            .env("DATABASE_URL", database_url)
            .env("POLICY_VALUES_ADDR", format!("127.0.0.1:{port}"))
            .env("POLICY_VALUES_WRITE_RATE", "1000000")
            .env("POLICY_VALUES_WRITE_BURST", "1000000")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command.spawn().expect("start the server");
        let pid = child.id();
        let server = Server { child, base: format!("http://127.0.0.1:{port}"), pid };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(r) = http.get(format!("{}/readyz", server.base)).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "the server did not become ready within 120 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        server
    }

    /// The server's resident set size (VmRSS), in bytes.
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
