//! Change propagation: from a write's commit in this process to the change
//! being visible in a PolicyClient in a second process, over 1,000 writes.
//! Both processes read the same system clock.

#[path = "support/common.rs"]
mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use policy_values::client::PolicyClient;
use policy_values::domain::{Scope, Value, WriteScope};
use policy_values::store::{keys, resolve, values};

const KEY: &str = "allocation.max_concurrent_per_user";
const WRITES: usize = 1_000;

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    if std::env::args().any(|a| a == "--follower") {
        runtime.block_on(follower());
    } else {
        runtime.block_on(leader());
    }
}

/// The second process: a client that prints `seq nanos` for every change
/// as it becomes visible.
async fn follower() {
    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL");
    let client = PolicyClient::connect(&url).await.expect("client");
    let mut changes = client.subscribe();
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready").expect("stdout");
    out.flush().expect("stdout");
    for _ in 0..WRITES {
        let Ok(change) = changes.recv().await else {
            break;
        };
        writeln!(out, "{} {}", change.seq, common::unix_nanos()).expect("stdout");
        out.flush().expect("stdout");
    }
}

async fn leader() {
    let Some((_, pool)) = common::database().await else {
        return;
    };
    let def = keys::get(&pool, KEY).await.expect("key").expect("catalog has the key");
    let mut child = Command::new(std::env::current_exe().expect("exe"))
        .arg("--follower")
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the follower");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    assert_eq!(lines.next().and_then(Result::ok).as_deref(), Some("ready"));
    let reader = std::thread::spawn(move || {
        lines
            .map_while(Result::ok)
            .filter_map(|l| {
                let (seq, nanos) = l.split_once(' ')?;
                Some((seq.parse::<i64>().ok()?, nanos.parse::<i128>().ok()?))
            })
            .collect::<HashMap<i64, i128>>()
    });

    let run = common::unix_nanos();
    // A new user scope holds nothing: the write replaces the global value.
    let mut conn = pool.acquire().await.expect("conn");
    let global = resolve::resolve(&mut conn, &def, &Scope::new(), None).await.expect("resolve");
    let old_value = global.value;
    let mut committed = HashMap::new();
    for i in 0..WRITES {
        let scope = WriteScope::at(policy_values::domain::Level::User, &format!("prop-{run}-{i}")).expect("scope");
        let change = values::Change {
            scope,
            value: Some(Value::Int((i % 1000) as i64)),
            effective_at: None,
            reason: "propagation benchmark".into(),
            old_value: old_value.clone(),
        };
        let actor = values::Actor { principal: "bench", request_id: None };
        let values::Outcome::Written(written) = values::write(&pool, &def, &change, actor).await.expect("write") else {
            panic!("every benchmark write changes a value")
        };
        committed.insert(written.value.seq, common::unix_nanos());
    }
    let seen = reader.join().expect("reader");
    let _ = child.wait();
    let mut latencies: Vec<f64> =
        committed.iter().map(|(seq, at)| seen.get(seq).map_or(f64::INFINITY, |s| (s - at) as f64 / 1e6)).collect();
    latencies.sort_by(f64::total_cmp);
    let lost = latencies.iter().filter(|l| l.is_infinite()).count();
    println!(
        "propagation over {WRITES} writes (commit returned -> visible in a second process): \
         p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms, min {:.3} ms, not seen {lost}",
        common::percentile(&latencies, 50.0),
        common::percentile(&latencies, 99.0),
        latencies.iter().rev().find(|l| l.is_finite()).copied().unwrap_or(f64::NAN),
        latencies[0],
    );
}
