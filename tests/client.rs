//! The PolicyClient against a real PostgreSQL: propagation of writes,
//! reconnection, the safety poll, fail-open from a snapshot, fail-closed
//! keys, scheduled changes, and a race of writers against the tail.

mod common;

use std::time::Duration;

use common::{eventually, options_of, proxy::Proxy, TestApp};
use policy_values::client::{Origin, PolicyClient, PolicyError};
use policy_values::domain::{Level, Scope};
use reqwest::StatusCode;
use serde_json::json;
use sqlx::PgPool;

const KEY: &str = "allocation.max_concurrent_per_user";

async fn client_for(pool: &PgPool) -> PolicyClient {
    PolicyClient::builder().connect_options(options_of(pool)).connect().await.unwrap()
}

async fn set(app: &TestApp, scope: serde_json::Value, value: i64, old: i64) {
    let body = json!({"key": KEY, "scope": scope, "value": value, "reason": "test", "old_value": old});
    let reply = app.write(body).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.json);
}

#[sqlx::test]
async fn a_write_over_http_reaches_a_running_client_without_a_restart(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let client = client_for(&app.pool).await;
    let acme = Scope::new().user("u1").org("acme");
    assert_eq!(client.get_int(&acme, KEY), Ok(50));
    assert_eq!(client.health().origin, Origin::Live);
    let mut watch = client.watch_key(KEY).unwrap();

    set(&app, json!({"org_id": "acme"}), 70, 50).await;
    let change = tokio::time::timeout(Duration::from_secs(30), watch.changed()).await.unwrap().unwrap();
    assert_eq!((change.level, &*change.scope_id), (Level::Org, "acme"));
    assert_eq!(change.value, Some(70.into()));
    assert_eq!(client.get_int(&acme, KEY), Ok(70));
    let handle = client.int_key(KEY).unwrap();
    assert_eq!(handle.get(&acme), 70);
    assert_eq!(handle.get(&Scope::new().org("other")), 50);

    let explained = client.explain(&acme, KEY).unwrap();
    assert_eq!(explained.resolution.source.level, "org");
    assert_eq!(explained.origin, Origin::Live);
    assert_eq!(explained.stale_since, None);
    assert_eq!(
        client.get_bool(&acme, KEY),
        Err(PolicyError::TypeMismatch {
            key: KEY.into(),
            requested: policy_values::domain::ValueType::Bool,
            actual: policy_values::domain::ValueType::Int,
        })
    );
    assert_eq!(client.get_int(&acme, "no.such_key"), Err(PolicyError::UnknownKey("no.such_key".into())));
}

#[sqlx::test]
async fn the_client_converges_after_its_listener_is_killed_while_writes_go_on(pool: PgPool) {
    let app = std::sync::Arc::new(TestApp::spawn(pool).await);
    let client = client_for(&app.pool).await;
    let writer = {
        let app = app.clone();
        tokio::spawn(async move {
            for i in 0..60i64 {
                let org = format!("org{}", i % 6);
                let old = if i < 6 { 50 } else { 100 + i - 6 };
                set(&app, json!({ "org_id": org }), 100 + i, old).await;
            }
        })
    };
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        sqlx::query(
            "select pg_terminate_backend(pid) from pg_stat_activity
             where application_name = 'policy-values-client' and datname = current_database()",
        )
        .execute(&app.pool)
        .await
        .unwrap();
    }
    writer.await.unwrap();
    let last_seq: i64 = sqlx::query_scalar("select max(seq) from policy_values").fetch_one(&app.pool).await.unwrap();
    eventually("the client applies every row", || async { client.health().last_seq == last_seq }).await;
    for org in 0..6 {
        let expected = app.resolve(KEY, &format!("org_id=org{org}")).await;
        let got = client.get_int(&Scope::new().org(format!("org{org}")), KEY).unwrap();
        assert_eq!(json!(got), expected, "org{org}");
    }
    assert_eq!(client.health().origin, Origin::Live);
    assert!(client.health().reconnects >= 1, "the listener was killed and came back");
}

#[sqlx::test]
async fn without_notifications_the_safety_poll_converges(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let client = PolicyClient::builder()
        .connect_options(options_of(&app.pool))
        .safety_poll(Duration::from_millis(200))
        .connect()
        .await
        .unwrap();
    sqlx::query("alter table policy_values disable trigger policy_values_notify").execute(&app.pool).await.unwrap();
    set(&app, json!({"plan": "pro"}), 80, 50).await;
    let pro = Scope::new().plan("pro");
    eventually("the safety poll picks the write up", || async { client.get_int(&pro, KEY) == Ok(80) }).await;
}

#[sqlx::test]
async fn a_scheduled_change_flips_at_its_time_in_a_running_client(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let client = client_for(&app.pool).await;
    let when = time::OffsetDateTime::now_utc() + time::Duration::seconds(2);
    let body = json!({"key": KEY, "scope": {}, "value": 90, "reason": "scheduled", "old_value": 50,
                      "effective_at": when.format(&time::format_description::well_known::Rfc3339).unwrap()});
    let reply = app.write(body).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.json);
    let seq = reply.json["value"]["seq"].as_i64().unwrap();
    eventually("the client has the scheduled row", || async { client.health().last_seq >= seq }).await;
    let anyone = Scope::new().user("u9");
    let before = client.get_int(&anyone, KEY).unwrap();
    let read_at = time::OffsetDateTime::now_utc();
    if read_at < when {
        assert_eq!(before, 50, "not yet in effect");
    }
    eventually("the scheduled value takes effect", || async { client.get_int(&anyone, KEY) == Ok(90) }).await;
    assert!(time::OffsetDateTime::now_utc() >= when, "it flipped no earlier than its time");
}

#[sqlx::test]
async fn with_the_database_cut_reads_go_on_and_a_new_client_starts_from_the_snapshot(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    set(&app, json!({"org_id": "acme"}), 77, 50).await;
    let options = options_of(&app.pool);
    let proxy = Proxy::start(format!("{}:{}", options.get_host(), options.get_port())).await;
    let via_proxy = options.clone().host("127.0.0.1").port(proxy.port);
    let dir = std::env::temp_dir().join(format!("pv-snap-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let snapshot = dir.join("replica.snapshot");
    let acme = Scope::new().org("acme");

    let first = PolicyClient::builder()
        .connect_options(via_proxy.clone())
        .snapshot_path(&snapshot)
        .snapshot_interval(Duration::from_millis(50))
        .connect()
        .await
        .unwrap();
    assert_eq!(first.get_int(&acme, KEY), Ok(77));
    eventually("the snapshot file is written", || async { snapshot.exists() }).await;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&snapshot).unwrap().permissions().mode() & 0o777, 0o600);
    }

    proxy.cut();
    eventually("the client notices", || async { first.health().stale_since.is_some() }).await;
    assert_eq!(first.get_int(&acme, KEY), Ok(77), "reads keep answering from memory");
    assert_eq!(first.health().origin, Origin::Live);

    let second = PolicyClient::builder()
        .connect_options(via_proxy.clone())
        .snapshot_path(&snapshot)
        .load_timeout(Duration::from_millis(500))
        .connect()
        .await
        .unwrap();
    assert_eq!(second.health().origin, Origin::Snapshot);
    assert!(second.health().stale_since.is_some());
    assert_eq!(second.get_int(&acme, KEY), Ok(77));
    assert_eq!(
        second.get_int(&Scope::new(), "billing.minimum_deposit_minor"),
        Ok(1000),
        "fail-closed keys answer from a snapshot"
    );

    let mut bytes = std::fs::read(&snapshot).unwrap();
    let last = bytes.len() - 2;
    bytes[last] ^= 0x20;
    let corrupt = dir.join("corrupt.snapshot");
    std::fs::write(&corrupt, &bytes).unwrap();
    let truncated = dir.join("truncated.snapshot");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    for path in [&corrupt, &truncated] {
        let third = PolicyClient::builder()
            .connect_options(via_proxy.clone())
            .snapshot_path(path)
            .load_timeout(Duration::from_millis(500))
            .connect()
            .await
            .unwrap();
        assert_eq!(third.health().origin, Origin::Default);
        assert_eq!(third.get_int(&acme, KEY), Ok(50), "catalog default");
        assert_eq!(
            third.get_int(&Scope::new(), "billing.minimum_deposit_minor"),
            Err(PolicyError::Unavailable("billing.minimum_deposit_minor".into()))
        );
        assert!(third.int_key("billing.minimum_deposit_minor").is_err());
    }

    proxy.restore();
    set(&app, json!({"org_id": "acme"}), 78, 77).await;
    eventually("the second client goes live and catches up", || async {
        second.health().origin == Origin::Live && second.get_int(&acme, KEY) == Ok(78)
    })
    .await;
    // Caught up first, then marked fresh: wait for both.
    eventually("the first client reconnects and is fresh again", || async {
        first.get_int(&acme, KEY) == Ok(78) && first.health().stale_since.is_none()
    })
    .await;
    // The clients may be writing their snapshot file right now: stop them,
    // then remove the directory once no write is under way.
    drop((first, second));
    eventually("the snapshot directory is removed", || async { std::fs::remove_dir_all(&dir).is_ok() }).await;
}

#[sqlx::test]
async fn racing_writers_never_make_the_tail_skip_a_row(pool: PgPool) {
    let app = std::sync::Arc::new(TestApp::spawn(pool).await);
    let client = client_for(&app.pool).await;
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let app = app.clone();
            tokio::spawn(async move {
                for i in 0..25i64 {
                    let old = if i == 0 { 50 } else { 1000 + w * 100 + i - 1 };
                    set(&app, json!({ "user_id": format!("w{w}") }), 1000 + w * 100 + i, old).await;
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let rows: i64 = sqlx::query_scalar("select count(*) from policy_values").fetch_one(&app.pool).await.unwrap();
    assert_eq!(rows, 200);
    let last_seq: i64 = sqlx::query_scalar("select max(seq) from policy_values").fetch_one(&app.pool).await.unwrap();
    eventually("the client applies every row", || async { client.health().last_seq == last_seq }).await;
    for w in 0..8i64 {
        assert_eq!(client.get_int(&Scope::new().user(format!("w{w}")), KEY), Ok(1000 + w * 100 + 24));
    }
}

#[test]
fn a_fixed_client_resolves_given_values_with_the_real_rule() {
    use policy_values::domain::WriteScope;
    let client = PolicyClient::fixed()
        .set(KEY, WriteScope::global(), 10)
        .set(KEY, WriteScope::at(Level::Org, "acme").unwrap(), 20)
        .set("maas.enabled", WriteScope::at(Level::Plan, "pro").unwrap(), true)
        .set("allocation.isolation_model", WriteScope::global(), "full-reimage")
        .build()
        .unwrap();
    assert_eq!(client.get_int(&Scope::new().org("acme").user("u"), KEY), Ok(20));
    assert_eq!(client.get_int(&Scope::new().org("other"), KEY), Ok(10));
    assert_eq!(client.get_bool(&Scope::new().plan("pro"), "maas.enabled"), Ok(true));
    assert_eq!(client.get_bool(&Scope::new(), "maas.enabled"), Ok(false));
    assert_eq!(&*client.get_string(&Scope::new(), "allocation.isolation_model").unwrap(), "full-reimage");
    assert_eq!(client.health().origin, Origin::Fixed);
    let out_of_bounds = PolicyClient::fixed().set(KEY, WriteScope::global(), -5).build();
    assert!(matches!(out_of_bounds, Err(PolicyError::InvalidValue { .. })));
}
