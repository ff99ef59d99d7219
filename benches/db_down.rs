//! Reads with the database down: resolve throughput (wrk, as in
//! scripts/bench-load.sh) against the release server whose every database
//! connection goes through a TCP proxy in this process, with the proxy
//! passing and with it cut (every connection dropped, new ones refused),
//! in interleaved rounds; the ratio is per round, the median reported.
//!
//! Run by scripts/bench-load.sh (make bench), which builds the server,
//! installs wrk and sets POLICY_VALUES_BIN. Knobs: OUTAGE_ROUNDS (5),
//! OUTAGE_SECONDS (5, per phase).

#[path = "support/common.rs"]
mod common;
#[path = "../tests/common/proxy.rs"]
mod proxy;
#[path = "support/server.rs"]
mod server;

use std::time::{Duration, Instant};

fn main() {
    let Some(bin) = server::binary() else { return };
    let rounds = server::knob("OUTAGE_ROUNDS", 5).max(1);
    let seconds = server::knob("OUTAGE_SECONDS", 5).max(1);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(run(bin, rounds, seconds));
}

struct Load {
    rps: f64,
    requests: u64,
    not_ok: u64,
    p99: String,
}

/// wrk with 2 threads and 64 connections, as scripts/bench-load.sh runs it.
async fn wrk(url: String, token: String, seconds: usize) -> Load {
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("wrk")
            .args(["-t2", "-c64", &format!("-d{seconds}s"), "--latency", "-H"])
            .arg(format!("Authorization: Bearer {token}"))
            .arg(&url)
            .output()
            .expect("run wrk (scripts/bench-load.sh installs it)")
    })
    .await
    .expect("wrk");
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |prefix: &str| {
        text.lines().find_map(|l| l.trim().strip_prefix(prefix).map(|v| v.trim().to_string())).unwrap_or_default()
    };
    let requests = text
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    Load {
        rps: field("Requests/sec:").parse().unwrap_or(0.0),
        requests,
        not_ok: field("Non-2xx or 3xx responses:").parse().unwrap_or(0),
        p99: field("99%").split_whitespace().next().unwrap_or("?").to_string(),
    }
}

/// Waits until `/readyz` answers `want` (200 or 503), at most `within`.
async fn readyz(base: &str, want: u16, within: Duration) -> Option<Duration> {
    let http = reqwest::Client::new();
    let started = Instant::now();
    while started.elapsed() < within {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await {
            if r.status().as_u16() == want {
                return Some(started.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

async fn run(bin: String, rounds: usize, seconds: usize) {
    let Some((url, pool)) = common::database().await else { return };
    let mut parsed = reqwest::Url::parse(&url).expect("DATABASE_URL is a URL");
    let upstream = format!("{}:{}", parsed.host_str().unwrap_or("127.0.0.1"), parsed.port().unwrap_or(5432));
    let proxy = proxy::Proxy::start(upstream).await;
    parsed.set_host(Some("127.0.0.1")).expect("host");
    parsed.set_port(Some(proxy.port)).expect("port");
    let reader = server::token(&pool, "reader").await;
    let server = server::Server::start(&bin, parsed.as_str(), &[]).await;
    let resolve = format!(
        "{}/api/v1/policy-values/resolve?key=allocation.max_concurrent_per_user&user_id=u1&project_id=p1&org_id=o1&plan=pro",
        server.base
    );
    let http = reqwest::Client::new();
    let first = http.get(&resolve).bearer_auth(&reader).send().await.expect("resolve");
    assert_eq!(first.status().as_u16(), 200, "resolve with the database up");

    let mut ratios = Vec::new();
    for round in 1..=rounds {
        let up = wrk(resolve.clone(), reader.clone(), seconds).await;
        proxy.cut();
        let noticed = readyz(&server.base, 503, Duration::from_secs(15)).await;
        let sample = http.get(&resolve).bearer_auth(&reader).send().await.expect("resolve");
        let (status, stale) = (sample.status().as_u16(), sample.headers().contains_key("policy-values-stale-since"));
        let down = wrk(resolve.clone(), reader.clone(), seconds).await;
        proxy.restore();
        let recovered = readyz(&server.base, 200, Duration::from_secs(60)).await;
        let ratio = down.rps / up.rps;
        ratios.push(ratio);
        println!(
            "db down round {round}: up {:.0}/s (p99 {}, {} of {} not 2xx); cut {:.0}/s (p99 {}, {} of {} not 2xx; \
             readyz 503 after {}, a resolve answered {status}{}); ratio {ratio:.2}; readyz 200 again after {}",
            up.rps,
            up.p99,
            up.not_ok,
            up.requests,
            down.rps,
            down.p99,
            down.not_ok,
            down.requests,
            noticed.map_or("never (15 s)".into(), |d| format!("{} ms", d.as_millis())),
            if stale { " marked stale" } else { " NOT marked stale" },
            recovered.map_or("never (60 s)".into(), |d| format!("{} ms", d.as_millis())),
        );
    }
    let mut sorted = ratios.clone();
    sorted.sort_by(f64::total_cmp);
    println!(
        "resolve with the database cut / up, throughput ratio (target >= 0.9): median {:.2} (rounds: {})",
        common::percentile(&sorted, 50.0),
        sorted.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>().join(" "),
    );
}
