//! Exporting 1,000,000 audit rows over HTTP: the server's memory must not
//! grow with the row count. The server runs in this process; the client
//! counts the streamed bytes and drops them, so the process's peak resident
//! memory during the export bounds the server's.

#[path = "support/common.rs"]
mod common;

use std::time::Instant;

use policy_values::server::auth::generate_token;
use policy_values::server::Application;
use policy_values::store::tokens::{self, Role};

const ROWS: i64 = 1_000_000;

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(run());
}

async fn run() {
    let Some((_, pool)) = common::database().await else { return };
    let have: i64 = sqlx::query_scalar("select count(*) from audit_logs where action = 'bench.bulk'")
        .fetch_one(&pool)
        .await
        .expect("count");
    if have < ROWS {
        let started = Instant::now();
        sqlx::query(
            "insert into audit_logs (actor, action, metadata, prev_hash, hash)
             select 'bulk', 'bench.bulk', jsonb_build_object('i', g, 'reason', 'export benchmark row'), '', ''
             from generate_series(1, $1) g",
        )
        .bind(ROWS - have)
        .execute(&pool)
        .await
        .expect("insert audit rows");
        println!("inserted {} audit rows in {:.1} s", ROWS - have, started.elapsed().as_secs_f64());
    }
    let total: i64 = sqlx::query_scalar("select count(*) from audit_logs").fetch_one(&pool).await.expect("count");
    let token = generate_token().expect("token");
    tokens::insert(&pool, "bench-auditor", Role::Auditor, &token, None).await.expect("token");
    let app = Application::build(pool.clone(), "127.0.0.1:0").await.expect("bind");
    let url = format!("http://127.0.0.1:{}/api/v1/admin/audit-logs?format=ndjson", app.port());
    tokio::spawn(app.run_until_stopped(std::future::pending()));

    let before = common::rss_bytes();
    let started = Instant::now();
    let mut response = reqwest::Client::new().get(&url).bearer_auth(&token).send().await.expect("export");
    let (mut bytes, mut lines, mut peak) = (0u64, 0u64, before);
    while let Some(chunk) = response.chunk().await.expect("chunk") {
        bytes += chunk.len() as u64;
        lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
        peak = peak.max(common::rss_bytes());
    }
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(lines as i64, total + 1, "every row and the trailer");
    println!(
        "audit export of {total} rows ({:.0} MB of NDJSON) in {seconds:.1} s ({:.0} rows/s); \
         process memory {:.0} MB before, peak {:.0} MB during (+{:.0} MB)",
        bytes as f64 / 1e6,
        total as f64 / seconds,
        before as f64 / 1e6,
        peak as f64 / 1e6,
        peak.saturating_sub(before) as f64 / 1e6,
    );
}
