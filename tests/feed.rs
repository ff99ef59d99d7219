//! The change feed and the bootstrap: a subscriber that reconnects with its
//! last event id receives exactly what it missed, from this server or
//! another on the same database; a reset when the gap is no longer held; a
//! slow subscriber is cut off and resumes; heartbeats; the bootstrap with
//! its position, ETag and gzip.

mod common;

use std::time::Duration;

use common::sse::{Event, Sse};
use common::TestApp;
use policy_values::domain::{Bounds, Catalog, KeyDef, PolicyKey, Value, ValueType};
use policy_values::server::feed::FeedConfig;
use policy_values::server::limits::WriteRate;
use policy_values::server::ServerConfig;
use policy_values::store::keys;
use reqwest::StatusCode;
use serde_json::json;
use sqlx::PgPool;

const KEY: &str = "rate_limit.api_requests_per_minute";

fn config(feed: FeedConfig) -> ServerConfig {
    ServerConfig { write_rate: WriteRate { rate: 1e6, burst: 1e6 }, feed, ..ServerConfig::default() }
}

/// Chains `n` writes at `org`, from `from` (the value in force) upward.
async fn writes(app: &TestApp, org: &str, from: i64, n: i64) {
    for i in 0..n {
        let body = json!({"key": KEY, "scope": {"org_id": org}, "value": from + i + 1, "old_value": from + i,
                          "reason": "feed test"});
        let reply = app.write(body).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.json);
    }
}

/// Every position after `after`, from the database, in order.
async fn positions_after(pool: &PgPool, after: i64) -> Vec<i64> {
    sqlx::query_scalar(
        "select seq from policy_values where seq > $1 union all select seq from policy_key_changes where seq > $1
         order by 1",
    )
    .bind(after)
    .fetch_all(pool)
    .await
    .unwrap()
}

fn ids(events: &[Event]) -> Vec<i64> {
    events.iter().map(|e| e.id.unwrap()).collect()
}

#[sqlx::test]
async fn a_subscriber_that_reconnects_with_its_last_id_gets_exactly_what_it_missed_here_or_elsewhere(pool: PgPool) {
    let app = TestApp::spawn_with(pool, &config(FeedConfig::default())).await;
    let start: i64 = sqlx::query_scalar("select max(seq) from policy_key_changes").fetch_one(&app.pool).await.unwrap();
    let mut feed = Sse::connect(&app.base, &app.reader, Some(start)).await;
    writes(&app, "acme", 120, 3).await;
    let first = feed.events(3).await;
    assert_eq!(ids(&first), positions_after(&app.pool, start).await);
    assert_eq!(first[2].event, "value");
    let data = first[2].json();
    assert_eq!(
        (data["key"].as_str(), data["scope_id"].as_str(), data["value"].clone()),
        (Some(KEY), Some("acme"), json!(123))
    );
    let last = first[2].id.unwrap();
    drop(feed);

    // Disconnected while writes go on.
    writes(&app, "acme", 123, 5).await;
    let mut resumed = Sse::connect(&app.base, &app.reader, Some(last)).await;
    let missed = resumed.events(5).await;
    assert_eq!(ids(&missed), positions_after(&app.pool, last).await, "exactly the missed changes, in order");
    let values: Vec<_> = missed.iter().map(|e| e.json()["value"].clone()).collect();
    assert_eq!(values, [json!(124), json!(125), json!(126), json!(127), json!(128)]);

    // The same resumption against another server on the same database.
    let other = app.another_server(&config(FeedConfig::default())).await;
    let mut elsewhere = Sse::connect(&other, &app.reader, Some(last)).await;
    assert_eq!(ids(&elsewhere.events(5).await), ids(&missed), "positions are the store's, not the server's");
    writes(&app, "acme", 128, 1).await;
    let live = elsewhere.event().await.unwrap();
    assert_eq!(live.json()["value"], json!(129), "then live changes written through the first server");
    let here = resumed.event().await.unwrap();
    assert_eq!(here.id, live.id);
}

#[sqlx::test]
async fn catalog_changes_travel_in_the_same_order_as_value_rows(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let mut feed = Sse::connect(&app.base, &app.reader, Some(0)).await;
    let catalog = feed.events(common::catalog_len()).await;
    assert!(catalog.iter().all(|e| e.event == "key"), "the catalog comes first");
    let refund = catalog.iter().find(|e| e.json()["definition"]["key"] == "allocation.refund_window_days").unwrap();
    assert_eq!(refund.json()["definition"]["default_value"], json!(30));
    writes(&app, "acme", 120, 1).await;
    let value = feed.event().await.unwrap();
    assert_eq!(value.event, "value");
    assert!(value.id > catalog.last().unwrap().id);
}

#[sqlx::test]
async fn a_subscriber_whose_gap_is_no_longer_held_is_told_to_reset(pool: PgPool) {
    let app = TestApp::spawn_with(pool, &config(FeedConfig { ring: 4, ..FeedConfig::default() })).await;
    let start: i64 = sqlx::query_scalar("select max(seq) from policy_key_changes").fetch_one(&app.pool).await.unwrap();
    writes(&app, "acme", 120, 10).await;
    let mut stale = Sse::connect(&app.base, &app.reader, Some(start)).await;
    let reset = stale.event().await.unwrap();
    assert_eq!((reset.event.as_str(), reset.id), ("reset", None));
    let horizon = reset.json()["horizon"].as_i64().unwrap();
    assert_eq!(stale.next().await, None, "the stream ends after the reset");
    // The bootstrap covers the horizon; following from it works.
    let bootstrap = app.get("/api/v1/replica", &app.reader).await;
    let position = bootstrap.json["position"].as_i64().unwrap();
    assert!(position >= horizon);
    let mut fresh = Sse::connect(&app.base, &app.reader, Some(position)).await;
    writes(&app, "acme", 130, 1).await;
    assert_eq!(fresh.event().await.unwrap().json()["value"], json!(131));
}

#[sqlx::test]
async fn a_subscriber_too_slow_to_keep_up_is_cut_off_and_resumes_by_id(pool: PgPool) {
    let app = TestApp::spawn_with(pool, &config(FeedConfig { lag: 8, ..FeedConfig::default() })).await;
    let start: i64 = sqlx::query_scalar("select max(seq) from policy_key_changes").fetch_one(&app.pool).await.unwrap();
    let mut slow = Sse::connect(&app.base, &app.reader, Some(start)).await;
    // Thousands of large events (catalog definitions with long
    // descriptions, synced in one transaction) fill the socket and the
    // server's buffers while the subscriber reads nothing.
    let total = 1000;
    let description = "d".repeat(10_000);
    let keys: Vec<KeyDef> = (0..total)
        .map(|i| KeyDef {
            key: PolicyKey::parse(&format!("bulk.key_{i:04}")).unwrap(),
            value_type: ValueType::Int,
            default: Value::Int(1),
            bounds: Bounds::Int { min: 0, max: 10 },
            description: description.clone(),
            unit: String::new(),
            fail_closed: false,
            approvals_required: 0,
        })
        .collect();
    keys::sync(&app.pool, &Catalog { keys }, "test", "bulk").await.unwrap();
    let mut received = Vec::new();
    while let Some(event) = slow.event().await {
        received.push(event.id.unwrap());
    }
    assert!(received.len() < total, "the stream was cut off after {} of {total} events", received.len());
    let last = *received.last().unwrap_or(&start);
    let mut resumed = Sse::connect(&app.base, &app.reader, Some(last)).await;
    let rest = resumed.events(positions_after(&app.pool, last).await.len()).await;
    let mut all = received;
    all.extend(ids(&rest));
    assert_eq!(all, positions_after(&app.pool, start).await, "nothing lost, nothing twice");
}

#[sqlx::test]
async fn an_idle_stream_carries_heartbeats(pool: PgPool) {
    let app = TestApp::spawn_with(
        pool,
        &config(FeedConfig { heartbeat: Duration::from_millis(50), ..FeedConfig::default() }),
    )
    .await;
    let mut feed = Sse::connect(&app.base, &app.reader, None).await;
    let beat = tokio::time::timeout(Duration::from_secs(30), feed.next()).await.unwrap().unwrap();
    assert!(beat.comment, "{beat:?}");
}

#[sqlx::test]
async fn the_feed_needs_a_token_and_a_valid_position(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let anonymous = app.send(app.http.get(format!("{}/api/v1/changes", app.base))).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    let bad = app
        .send(
            app.http.get(format!("{}/api/v1/changes", app.base)).bearer_auth(&app.reader).header("last-event-id", "x"),
        )
        .await;
    assert_eq!((bad.status, bad.code()), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_last_event_id"));
    let negative = app.get("/api/v1/changes?after=-1", &app.reader).await;
    assert_eq!((negative.status, negative.code()), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_query"));
}

#[sqlx::test]
async fn the_bootstrap_holds_the_catalog_and_every_row_in_force_with_its_position(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    writes(&app, "acme", 120, 2).await;
    let at = (time::OffsetDateTime::now_utc() + time::Duration::hours(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let scheduled = json!({"key": KEY, "scope": {"org_id": "acme"}, "value": 500, "old_value": 122,
                           "effective_at": at, "reason": "later"});
    assert_eq!(app.write(scheduled).await.status, StatusCode::CREATED);
    let max: i64 = sqlx::query_scalar("select max(seq) from policy_values").fetch_one(&app.pool).await.unwrap();
    common::eventually("the bootstrap reaches the last write", || async {
        app.get("/api/v1/replica", &app.reader).await.json["position"] == json!(max)
    })
    .await;
    let reply = app.get("/api/v1/replica", &app.reader).await;
    assert_eq!(reply.json["keys"].as_array().unwrap().len(), common::catalog_len());
    let rows = reply.json["rows"].as_array().unwrap();
    let acme: Vec<_> = rows.iter().filter(|r| r["scope_id"] == "acme").map(|r| r["value"].clone()).collect();
    assert_eq!(acme, [json!(122), json!(500)], "the row in force and the scheduled one; the superseded one is pruned");
    let etag = reply.headers["etag"].to_str().unwrap().to_string();
    let again = app
        .send(
            app.http
                .get(format!("{}/api/v1/replica", app.base))
                .bearer_auth(&app.reader)
                .header("if-none-match", &etag),
        )
        .await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);
    let raw = reqwest::Client::builder().no_gzip().build().unwrap();
    let gzipped = raw
        .get(format!("{}/api/v1/replica", app.base))
        .bearer_auth(&app.reader)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(gzipped.headers()["content-encoding"], "gzip");
    assert_eq!(&gzipped.bytes().await.unwrap()[..2], &[0x1f, 0x8b]);
}

#[sqlx::test]
async fn a_shutdown_ends_open_feed_streams_instead_of_waiting_for_them_forever(pool: PgPool) {
    // A second server on the same database, one the test can stop.
    let app = TestApp::spawn_with(pool, &config(FeedConfig::default())).await;
    let server =
        policy_values::server::Application::build_with(app.pool.clone(), "127.0.0.1:0", &config(FeedConfig::default()))
            .await
            .unwrap();
    let base = format!("http://127.0.0.1:{}", server.port());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run_until_stopped(async {
        let _ = stopped.await;
    }));
    let start: i64 = sqlx::query_scalar("select max(seq) from policy_key_changes").fetch_one(&app.pool).await.unwrap();
    let mut feed = Sse::connect(&base, &app.reader, Some(start)).await;
    writes(&app, "acme", 120, 1).await;
    let before = feed.events(1).await;
    assert_eq!(before[0].json()["value"], json!(121));

    stop.send(()).unwrap();
    // Bounded only so that a regression fails instead of hanging the suite;
    // the grace before a forced stop is 30 s, so 20 s tells the two apart.
    let ended = tokio::time::timeout(Duration::from_secs(20), running).await;
    assert!(ended.is_ok(), "the server did not stop while a feed stream was open");
    ended.unwrap().unwrap().unwrap();
    let rest = tokio::time::timeout(Duration::from_secs(5), async {
        let mut rest = Vec::new();
        while let Some(e) = feed.next().await {
            rest.push(e);
        }
        rest
    })
    .await
    .expect("the stream ended with the server");
    assert!(rest.iter().all(|e| e.comment), "nothing but heartbeats after the last change: {:?}", rest.len());
    // The subscriber resumes by id on the other server and misses nothing.
    writes(&app, "acme", 121, 1).await;
    let mut resumed = Sse::connect(&app.base, &app.reader, before[0].id).await;
    assert_eq!(resumed.events(1).await[0].json()["value"], json!(122));
}
