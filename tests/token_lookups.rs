//! Concurrent first uses of one token make one database lookup: the other
//! requests wait for it (src/server/token_cache.rs). Counted by the
//! server's `policy_values_token_lookups_total`, which is process-wide: this
//! file holds one test, so no other test in its process adds to it.

mod common;

use common::TestApp;
use policy_values::store::tokens::Role;
use reqwest::StatusCode;
use sqlx::PgPool;

const KEYS: &str = "/api/v1/policy-keys";
const REQUESTS: usize = 24;

async fn lookups(app: &TestApp) -> f64 {
    let text = app.http.get(format!("{}/metrics", app.base)).send().await.unwrap().text().await.unwrap();
    // Absent until the first lookup.
    text.lines()
        .find_map(|l| l.strip_prefix("policy_values_token_lookups_total "))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// `REQUESTS` requests with `token` at once, while `api_tokens` is locked so
/// that every one of them reaches the server before any lookup can answer;
/// their statuses and the lookups they made.
async fn burst(app: &TestApp, token: &str) -> (Vec<StatusCode>, f64) {
    let before = lookups(app).await;
    let mut lock = app.pool.begin().await.unwrap();
    sqlx::query("lock table api_tokens in access exclusive mode").execute(&mut *lock).await.unwrap();
    let requests: Vec<_> = (0..REQUESTS)
        .map(|_| {
            // A client each: a connection each, as many subscribers would.
            let request = reqwest::Client::new().get(format!("{}{KEYS}", app.base)).bearer_auth(token);
            tokio::spawn(async move { request.send().await.unwrap().status() })
        })
        .collect();
    // A lookup is waiting for the lock: the requests are arriving.
    common::eventually("a token lookup waits for the lock", || async {
        sqlx::query_scalar::<_, i64>(
            "select count(*) from pg_stat_activity
             where datname = current_database() and wait_event_type = 'Lock' and query ilike '%from api_tokens%'",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap()
            >= 1
    })
    .await;
    // Room for the rest to arrive: any that arrive later find the answer
    // cached (a known token) or share or repeat the lookup (an unknown one).
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    lock.commit().await.unwrap();
    let mut statuses = Vec::new();
    for request in requests {
        statuses.push(request.await.unwrap());
    }
    (statuses, lookups(app).await - before)
}

#[sqlx::test]
async fn concurrent_first_uses_of_a_token_make_one_lookup(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let token = common::create_token(&app.pool, Role::Reader, "burst-reader").await;

    let (statuses, made) = burst(&app, &token).await;
    assert_eq!(statuses, vec![StatusCode::OK; REQUESTS]);
    assert_eq!(made, 1.0, "{REQUESTS} concurrent first uses of one token");

    // Cached now: no lookup at all.
    let before = lookups(&app).await;
    assert_eq!(app.get(KEYS, &token).await.status, StatusCode::OK);
    assert_eq!(lookups(&app).await - before, 0.0);

    // An unknown token is not cached, but requests that arrive while its
    // lookup is in flight share its answer.
    let (statuses, made) = burst(&app, "pvt_not-a-token").await;
    assert_eq!(statuses, vec![StatusCode::UNAUTHORIZED; REQUESTS]);
    assert!(made >= 1.0 && made < REQUESTS as f64, "{made} lookups for {REQUESTS} concurrent uses of an unknown token");
}
