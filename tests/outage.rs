//! Reads survive the database: with PostgreSQL cut off behind a proxy, the
//! server answers resolve, snapshot, the catalog, the bootstrap and the feed
//! from its replica, marked stale; writes and database reads answer 503
//! `database_unavailable`; nothing answers 500; verified tokens hold for the
//! grace, unknown ones get 503; everything recovers when the database is
//! back. A server with a snapshot file starts and serves while it is away.

mod common;

use std::time::Duration;

use common::sse::Sse;
use common::{create_token, eventually, options_of, proxy::Proxy, Reply, TestApp};
use policy_values::server::limits::WriteRate;
use policy_values::server::ServerConfig;
use policy_values::store::tokens::Role;
use reqwest::StatusCode;
use serde_json::json;
use sqlx::postgres::PgSslMode;
use sqlx::PgPool;

const KEY: &str = "rate_limit.api_requests_per_minute";

fn config(grace: Duration) -> ServerConfig {
    ServerConfig { write_rate: WriteRate { rate: 1e6, burst: 1e6 }, auth_grace: grace, ..ServerConfig::default() }
}

async fn proxy_for(pool: &PgPool) -> Proxy {
    let options = options_of(pool);
    Proxy::start(format!("{}:{}", options.get_host(), options.get_port())).await
}

fn write_body(value: i64, old: i64) -> serde_json::Value {
    json!({"key": KEY, "scope": {"org_id": "acme"}, "value": value, "old_value": old, "reason": "outage test"})
}

fn stale(reply: &Reply) -> bool {
    reply.headers.contains_key("policy-values-stale-since") && reply.headers.contains_key("age")
}

#[sqlx::test]
async fn with_the_database_cut_reads_go_on_writes_get_503_and_everything_recovers(pool: PgPool) {
    let proxy = proxy_for(&pool).await;
    let via_proxy = options_of(&pool).host("127.0.0.1").port(proxy.port);
    let app = TestApp::spawn_via(pool, &config(Duration::from_secs(5)), via_proxy).await;
    assert_eq!(app.write(write_body(200, 120)).await.status, StatusCode::CREATED);
    // Every token is used once while the database answers: verified, cached.
    let resolve = format!("/api/v1/policy-values/resolve?key={KEY}&org_id=acme");
    assert_eq!(app.get(&resolve, &app.reader).await.json["value"], json!(200));
    assert_eq!(app.get("/api/v1/admin/audit-logs?limit=1", &app.auditor).await.status, StatusCode::OK);
    let position = app.get("/api/v1/replica", &app.reader).await.json["position"].as_i64().unwrap();
    let mut feed = Sse::connect(&app.base, &app.reader, Some(position)).await;
    let unknown = create_token(&app.pool, Role::Reader, "never-seen").await;

    proxy.cut();
    eventually("the server notices", || async { stale(&app.get(&resolve, &app.reader).await) }).await;
    let mut statuses = Vec::new();
    let mut check = |reply: Reply, status: StatusCode, code: &str| {
        statuses.push(reply.status);
        assert_eq!((reply.status, reply.code()), (status, code), "{}", reply.json);
        reply
    };
    let reply = check(app.get(&resolve, &app.reader).await, StatusCode::OK, "");
    assert_eq!(reply.json["value"], json!(200));
    let snapshot = check(app.get("/api/v1/policy-values/snapshot?org_id=acme", &app.reader).await, StatusCode::OK, "");
    assert!(stale(&snapshot));
    assert_eq!(snapshot.json["values"][KEY]["value"], json!(200));
    check(app.get("/api/v1/policy-keys", &app.reader).await, StatusCode::OK, "");
    let bootstrap = check(app.get("/api/v1/replica", &app.reader).await, StatusCode::OK, "");
    assert!(stale(&bootstrap));
    let _resumed = Sse::connect(&app.base, &app.reader, Some(position)).await;
    let write = check(app.write(write_body(201, 200)).await, StatusCode::SERVICE_UNAVAILABLE, "database_unavailable");
    assert!(write.headers.contains_key("retry-after"));
    check(
        app.get("/api/v1/admin/audit-logs?limit=1", &app.auditor).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "database_unavailable",
    );
    let at = format!("{resolve}&at=2026-01-01T00:00:00Z");
    check(app.get(&at, &app.reader).await, StatusCode::SERVICE_UNAVAILABLE, "database_unavailable");
    check(app.get("/api/v1/policy-keys", &unknown).await, StatusCode::SERVICE_UNAVAILABLE, "database_unavailable");
    check(app.get("/readyz", "").await, StatusCode::SERVICE_UNAVAILABLE, "not_ready");
    assert_eq!(app.get("/healthz", "").await.status, StatusCode::OK);

    // After the grace, a cached token can no longer be vouched for.
    eventually("the grace ends", || async {
        app.get(&resolve, &app.reader).await.status == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    check(app.get(&resolve, &app.reader).await, StatusCode::SERVICE_UNAVAILABLE, "database_unavailable");
    assert!(statuses.iter().all(|s| s.as_u16() != 500), "{statuses:?}");

    proxy.restore();
    eventually("writes work again", || async { app.write(write_body(201, 200)).await.status == StatusCode::CREATED })
        .await;
    eventually("reads are fresh again", || async {
        let reply = app.get(&resolve, &app.reader).await;
        reply.json["value"] == json!(201) && !stale(&reply)
    })
    .await;
    assert_eq!(app.get("/readyz", "").await.status, StatusCode::OK);
    assert_eq!(app.get("/api/v1/policy-keys", &unknown).await.status, StatusCode::OK);
    let event = feed.event().await.unwrap();
    assert_eq!(event.json()["value"], json!(201), "the feed carries on where it was");
}

#[sqlx::test]
async fn a_server_with_a_snapshot_file_starts_and_serves_reads_while_the_database_is_away(pool: PgPool) {
    let dir = std::env::temp_dir().join(format!("pv-server-snap-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let snapshot = dir.join("replica.snapshot");
    let proxy = proxy_for(&pool).await;
    let via_proxy = options_of(&pool).host("127.0.0.1").port(proxy.port);
    let with_file = ServerConfig { snapshot_path: Some(snapshot.clone()), ..config(Duration::from_secs(300)) };
    let first = TestApp::spawn_via(pool, &with_file, via_proxy.clone()).await;
    assert_eq!(first.write(write_body(300, 120)).await.status, StatusCode::CREATED);
    let resolve = format!("/api/v1/policy-values/resolve?key={KEY}&org_id=acme");
    assert_eq!(first.get(&resolve, &first.reader).await.json["value"], json!(300));
    let tokens = dir.join("replica.snapshot.tokens");
    eventually("the files are written", || async {
        std::fs::read_to_string(&tokens).is_ok_and(|t| t.contains("rex-reader"))
            && policy_values::client::PolicyClient::builder()
                .snapshot_path(&snapshot)
                .load_timeout(Duration::from_millis(1))
                .database_url("postgres://127.0.0.1:1/none")
                .connect()
                .await
                .is_ok_and(|c| c.get_int(&policy_values::domain::Scope::new().org("acme"), KEY) == Ok(300))
    })
    .await;
    assert!(!std::fs::read_to_string(&tokens).unwrap().contains(&first.reader), "hashes only, never tokens");

    proxy.cut();
    let second = common::serve(&first.pool, &with_file, via_proxy).await;
    let reply = first.send(first.http.get(format!("{second}{resolve}")).bearer_auth(&first.reader)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    assert_eq!(reply.json["value"], json!(300));
    assert!(stale(&reply));
    let write_there = || async {
        let url = format!("{second}/api/v1/admin/policy-values");
        first.send(first.http.post(url).bearer_auth(&first.admin).json(&write_body(301, 300))).await
    };
    let write = write_there().await;
    assert_eq!((write.status, write.code()), (StatusCode::SERVICE_UNAVAILABLE, "database_unavailable"));

    proxy.restore();
    eventually("the second server catches up and writes", || async {
        write_there().await.status == StatusCode::CREATED
    })
    .await;
    let fresh = first.send(first.http.get(format!("{second}{resolve}")).bearer_auth(&first.reader)).await;
    assert_eq!(fresh.json["value"], json!(301));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[sqlx::test]
async fn a_write_whose_commit_answer_is_lost_says_its_outcome_is_unknown(pool: PgPool) {
    let proxy = proxy_for(&pool).await;
    // In plain text, so that the proxy can see the COMMIT go by (a server
    // with TLS on, as Debian's package sets it up, would otherwise encrypt it).
    let via_proxy = options_of(&pool).host("127.0.0.1").port(proxy.port).ssl_mode(PgSslMode::Disable);
    let app = TestApp::spawn_via(pool, &config(Duration::from_secs(300)), via_proxy).await;
    assert_eq!(app.write(write_body(200, 120)).await.status, StatusCode::CREATED);

    // The COMMIT reaches the database; its answer never comes back.
    proxy.cut_after(b"COMMIT");
    let lost = app.write(write_body(201, 200)).await;
    assert_eq!(
        (lost.status, lost.code()),
        (StatusCode::SERVICE_UNAVAILABLE, "commit_outcome_unknown"),
        "{}",
        lost.json
    );
    assert!(lost.headers.contains_key("retry-after"));

    // Re-reading shows it was made; retrying it as it was is refused.
    let resolve = format!("/api/v1/policy-values/resolve?key={KEY}&org_id=acme");
    eventually("the committed write is visible", || async {
        app.get(&resolve, &app.reader).await.json["value"] == json!(201)
    })
    .await;
    let again = app.write(write_body(201, 200)).await;
    assert_eq!((again.status, again.code()), (StatusCode::CONFLICT, "stale_old_value"));
    let audited: i64 = sqlx::query_scalar(
        "select count(*) from audit_logs where outcome = 'success' and metadata->>'new_value' = '201'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(audited, 1, "written once, audited once");
}

#[sqlx::test]
async fn sessions_terminated_under_load_cost_503s_at_worst_never_a_500(pool: PgPool) {
    let app = std::sync::Arc::new(TestApp::spawn_with(pool, &config(Duration::from_secs(300))).await);
    let until = std::time::Instant::now() + Duration::from_secs(3);
    let mut tasks = Vec::new();
    for w in 0..4 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            let (mut current, org) = (120, format!("w{w}"));
            while std::time::Instant::now() < until {
                let body = json!({"key": KEY, "scope": {"org_id": org}, "value": current + 1, "old_value": current,
                                  "reason": "terminations"});
                let reply = app.write(body).await;
                match reply.status {
                    StatusCode::CREATED => current += 1,
                    StatusCode::CONFLICT => current = reply.json["details"]["current_value"].as_i64().unwrap(),
                    _ => {}
                }
                statuses.push(reply.status.as_u16());
                let read = app.get("/api/v1/admin/audit-logs?limit=5", &app.auditor).await;
                statuses.push(read.status.as_u16());
            }
            statuses
        }));
    }
    let mut terminated = 0;
    while std::time::Instant::now() < until {
        terminated += sqlx::query_scalar::<_, i64>(
            "select count(*) from (select pg_terminate_backend(pid) from pg_stat_activity
             where datname = current_database() and pid <> pg_backend_pid()) t",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.extend(task.await.unwrap());
    }
    assert!(terminated > 0, "sessions were terminated");
    let failures: Vec<_> = statuses.iter().filter(|s| **s >= 500).collect();
    assert!(failures.iter().all(|s| **s == 503), "only 503s: {failures:?}");
    assert!(statuses.iter().filter(|s| **s == 201).count() > 0, "writes went through between terminations");
    assert!(matches!(
        policy_values::store::audit_query::verify(&app.pool).await.unwrap(),
        policy_values::store::audit_query::Verification::Intact { .. }
    ));
}
