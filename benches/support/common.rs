//! Shared by the database benchmarks: the database from `DATABASE_URL`,
//! migrated and with the catalog synced.
#![allow(dead_code)]

use policy_values::domain::Catalog;
use policy_values::store::{self, keys};
use sqlx::PgPool;

pub async fn database() -> Option<(String, PgPool)> {
    let Ok(url) = std::env::var("DATABASE_URL") else {
        eprintln!("DATABASE_URL is not set: run this benchmark through `make bench`");
        return None;
    };
    let pool = store::connect(&url, 4).await.expect("connect to DATABASE_URL");
    store::migrate(&pool).await.expect("migrate");
    keys::sync(&pool, &Catalog::builtin().expect("catalog"), "bench", "benchmark setup").await.expect("seed");
    Some((url, pool))
}

/// The resident set size of this process, in bytes.
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

pub fn unix_nanos() -> i128 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos()
}
