//! Cold load time and memory of a PolicyClient replica of 1,000,000 value
//! rows (the rows are inserted once into the benchmark database).

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
    pool.close().await;

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
}
