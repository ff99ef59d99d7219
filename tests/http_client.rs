//! The client's HTTP source: a PolicyClient that follows the servers, not
//! the database. It follows a write; survives a server killed mid-stream by
//! moving to the next one with nothing missed; starts from its snapshot
//! file with every server down and goes live when one comes back.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{database_url_of, eventually, TestApp};
use policy_values::domain::Scope;
use policy_values::{client::Origin, client::PolicyClient};
use reqwest::StatusCode;
use serde_json::json;
use sqlx::PgPool;

const KEY: &str = "rate_limit.api_requests_per_minute";

/// The real server, as a process of its own, on `port`.
struct ServerProcess(Child);

impl ServerProcess {
    fn start(pool: &PgPool, port: u16) -> ServerProcess {
        let child = Command::new(env!("CARGO_BIN_EXE_policy-values"))
            .args(["serve", "--skip-migrate", "--addr", &format!("127.0.0.1:{port}")])
            .env("DATABASE_URL", database_url_of(pool))
            .env("POLICY_VALUES_WRITE_RATE", "100000")
            .env("POLICY_VALUES_WRITE_BURST", "100000")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        ServerProcess(child)
    }

    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn ready(base: &str) {
    eventually("the server is ready", || async {
        reqwest::get(format!("{base}/readyz")).await.is_ok_and(|r| r.status() == StatusCode::OK)
    })
    .await;
}

async fn write(app: &TestApp, base: &str, org: &str, value: i64, old: i64) {
    let body = json!({"key": KEY, "scope": {"org_id": org}, "value": value, "old_value": old, "reason": "http client"});
    let reply =
        app.send(app.http.post(format!("{base}/api/v1/admin/policy-values")).bearer_auth(&app.admin).json(&body)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.json);
}

/// The client's replica as (seq, key, level, scope id, value), sorted.
fn rows_of(client: &PolicyClient) -> Vec<(i64, String, String, String, Option<serde_json::Value>)> {
    let mut rows: Vec<_> =
        client.image().rows.into_iter().map(|r| (r.seq, r.key, r.level, r.scope_id, r.value)).collect();
    rows.sort_by_key(|r| r.0);
    rows
}

/// The same from the database: per scope the row in force and those to come.
async fn rows_in(pool: &PgPool) -> Vec<(i64, String, String, String, Option<serde_json::Value>)> {
    sqlx::query_as("select seq, key, level, scope_id, value from policy_values_live order by seq")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[sqlx::test]
async fn an_http_client_follows_writes_and_moves_to_the_next_server_when_one_is_killed(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (port_a, port_b) = (free_port(), free_port());
    let mut a = ServerProcess::start(&app.pool, port_a);
    let _b = ServerProcess::start(&app.pool, port_b);
    let (base_a, base_b) = (format!("http://127.0.0.1:{port_a}"), format!("http://127.0.0.1:{port_b}"));
    ready(&base_a).await;
    ready(&base_b).await;

    let client = PolicyClient::builder()
        .servers([base_a.clone(), base_b.clone()])
        .token(app.reader.clone())
        .backoff_max(Duration::from_millis(200))
        .connect()
        .await
        .unwrap();
    assert_eq!(client.health().origin, Origin::Live);
    let acme = Scope::new().org("acme");
    assert_eq!(client.get_int(&acme, KEY), Ok(120), "the catalog default, from the bootstrap");

    write(&app, &base_a, "acme", 121, 120).await;
    eventually("the client follows the write", || async { client.get_int(&acme, KEY) == Ok(121) }).await;

    a.kill();
    for (i, org) in ["o1", "o2", "o3"].iter().enumerate() {
        write(&app, &base_b, org, 200 + i as i64, 120).await;
    }
    eventually("the client moved to the other server and caught up", || async {
        client.get_int(&Scope::new().org("o3"), KEY) == Ok(202)
    })
    .await;
    assert_eq!(client.get_int(&Scope::new().org("o1"), KEY), Ok(200));
    let last: i64 = sqlx::query_scalar("select max(seq) from policy_values").fetch_one(&app.pool).await.unwrap();
    eventually("every change applied", || async { client.health().last_seq >= last }).await;
    assert_eq!(rows_of(&client), rows_in(&app.pool).await, "the replica equals the database's rows in force");
    assert_eq!(client.health().stale_since, None);
}

#[sqlx::test]
async fn an_http_client_starts_from_its_snapshot_with_the_servers_down_and_goes_live_when_one_returns(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let dir = std::env::temp_dir().join(format!("pv-http-snap-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let snapshot = dir.join("replica.snapshot");
    let acme = Scope::new().org("acme");
    {
        let mut server = ServerProcess::start(&app.pool, port);
        ready(&base).await;
        write(&app, &base, "acme", 150, 120).await;
        let first = PolicyClient::builder()
            .servers([base.clone()])
            .token(app.reader.clone())
            .snapshot_path(&snapshot)
            .snapshot_interval(Duration::from_millis(20))
            .connect()
            .await
            .unwrap();
        eventually("the first client writes its snapshot", || async {
            first.get_int(&acme, KEY) == Ok(150) && snapshot.exists()
        })
        .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        server.kill();
    }
    // Every server down: the client serves its snapshot at once.
    let client = PolicyClient::builder()
        .servers([base.clone()])
        .token(app.reader.clone())
        .snapshot_path(&snapshot)
        .backoff_max(Duration::from_millis(200))
        .connect()
        .await
        .unwrap();
    assert_eq!(client.health().origin, Origin::Snapshot);
    assert_eq!(client.get_int(&acme, KEY), Ok(150));
    assert!(!client.wait_live(Duration::from_millis(300)).await, "no server yet");

    write_direct(&app, 151, 150).await;
    let _server = ServerProcess::start(&app.pool, port);
    assert!(client.wait_live(Duration::from_secs(30)).await, "live once a server answers");
    eventually("it caught up from the snapshot's position", || async { client.get_int(&acme, KEY) == Ok(151) }).await;
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A write through the in-process server (the other servers are down).
async fn write_direct(app: &TestApp, value: i64, old: i64) {
    let base = app.base.clone();
    write(app, &base, "acme", value, old).await;
}
