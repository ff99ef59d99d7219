//! A caller who hangs up must never cost another caller's write: no pooled
//! connection is handed out inside a transaction, work that writes runs to
//! completion whatever happens to its request, and every 201 is a committed
//! value row with its audit record.

mod common;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::{eventually, options_of, proxy::Proxy, TestApp};
use policy_values::store::audit::{self, NewAuditRecord};
use policy_values::store::audit_query::{self, Verification};
use policy_values::store::{pool, values};
use reqwest::StatusCode;
use serde_json::{json, Value as Json};
use sqlx::PgPool;

/// What sqlx logged as PostgreSQL notices (target `sqlx::postgres::notice`)
/// in this test process.
fn notices() -> &'static Mutex<Vec<String>> {
    static NOTICES: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    NOTICES.get_or_init(|| {
        use tracing_subscriber::layer::SubscriberExt;
        let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry().with(NoticeLayer));
        Mutex::new(Vec::new())
    })
}

struct NoticeLayer;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for NoticeLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().target() != "sqlx::postgres::notice" {
            return;
        }
        let mut text = String::new();
        event.record(&mut |field: &tracing::field::Field, value: &dyn std::fmt::Debug| {
            text.push_str(&format!("{}={value:?} ", field.name()));
        });
        notices().lock().unwrap().push(text);
    }
}

/// The `pg_stat_activity` states of the sessions named `application`.
async fn session_states(db: &PgPool, application: &str) -> Vec<String> {
    sqlx::query_scalar("select coalesce(state, '') from pg_stat_activity where application_name = $1")
        .bind(application)
        .fetch_all(db)
        .await
        .unwrap()
}

/// A pool of one connection through `proxy`, built as the server builds its pools.
async fn pool_through(db: &PgPool, proxy: &Proxy, application: &str) -> PgPool {
    let options = options_of(db).host("127.0.0.1").port(proxy.port).application_name(application);
    pool::options().max_connections(1).connect_with(options).await.unwrap()
}

#[sqlx::test]
async fn a_begin_dropped_after_it_was_sent_never_reaches_the_next_borrower(db: PgPool) {
    let options = options_of(&db);
    let proxy = Proxy::start(format!("{}:{}", options.get_host(), options.get_port())).await;
    let pool = pool_through(&db, &proxy, "pv-hangup-begin").await;

    // BEGIN reaches the server, its answer does not reach sqlx, and the
    // future waiting for it is dropped, as axum drops a handler's future
    // when its caller disconnects.
    let mut conn = pool.acquire().await.unwrap();
    proxy.hold_replies();
    let begin = tokio::spawn(async move {
        let _tx = sqlx::Connection::begin(&mut *conn).await;
        std::future::pending::<()>().await
    });
    eventually("BEGIN opened a transaction on the server", || async {
        session_states(&db, "pv-hangup-begin").await == ["idle in transaction"]
    })
    .await;
    begin.abort();
    assert!(begin.await.unwrap_err().is_cancelled());
    proxy.release_replies();

    // The next borrower of the one connection makes an autocommit write.
    let record = NewAuditRecord { actor: "next-borrower", action: "test.write", ..Default::default() };
    let mut conn = pool.acquire().await.unwrap();
    let written = audit::append(&mut *conn, &record).await.unwrap();
    drop(conn);

    let seen: Option<i64> = sqlx::query_scalar("select seq from audit_logs where id = $1")
        .bind(written.id)
        .fetch_optional(&db)
        .await
        .unwrap();
    assert_eq!(seen, Some(written.seq), "the next borrower's write is committed, visible to another session");
    eventually("no session of the pool is left inside a transaction", || async {
        session_states(&db, "pv-hangup-begin").await.iter().all(|s| s == "idle")
    })
    .await;
    pool.close().await;
}

#[sqlx::test]
async fn detached_work_commits_though_the_caller_is_dropped_mid_transaction(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let at = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
    let body = json!({"key": "rate_limit.api_requests_per_minute", "scope": {"org_id": "acme"}, "value": 200,
        "old_value": 120, "reason": "scheduled", "effective_at": at.format(&time::format_description::well_known::Rfc3339).unwrap()});
    let reply = app.write(body).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.json);
    let id: uuid::Uuid = reply.json["value"]["id"].as_str().unwrap().parse().unwrap();

    // Another session holds the write lock, so the cancel's transaction
    // waits inside the database, open, while its caller is dropped.
    let mut blocker = db.begin().await.unwrap();
    sqlx::query("select policy_values_write_lock()").execute(&mut *blocker).await.unwrap();
    let options = options_of(&db).application_name("pv-hangup-detached");
    let pool = pool::options().max_connections(1).connect_with(options).await.unwrap();
    let closing = pool.clone();
    let caller = tokio::spawn(async move {
        pool::detached(async move {
            let actor = values::Actor { principal: "alice-admin", request_id: None };
            values::cancel(&pool, id, "withdrawn", actor).await
        })
        .await
    });
    eventually("the cancel's transaction waits for the write lock", || async {
        let waiting: i64 = sqlx::query_scalar(
            "select count(*) from pg_stat_activity where application_name = 'pv-hangup-detached' and wait_event_type = 'Lock'",
        )
        .fetch_one(&db)
        .await
        .unwrap();
        waiting == 1
    })
    .await;
    caller.abort();
    assert!(caller.await.unwrap_err().is_cancelled(), "the caller is gone");
    blocker.commit().await.unwrap();
    eventually("the detached cancel commits", || async {
        sqlx::query_scalar::<_, i64>(
            "select count(*) from policy_values c join policy_values v on c.cancels_seq = v.seq where v.id = $1",
        )
        .bind(id)
        .fetch_one(&db)
        .await
        .unwrap()
            == 1
    })
    .await;
    closing.close().await;
}

/// A small deterministic generator (no dependency for it).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const CHAINED: &str = "rate_limit.api_requests_per_minute";
const HUNG: &str = "allocation.max_concurrent_per_user";
const SCHEDULED: &str = "allocation.refund_window_days";

#[derive(Default)]
struct Seen {
    statuses: Vec<u16>,
    created: Vec<uuid::Uuid>,
    hung_up: usize,
}

/// One writer chaining `old_value` at its own scope; every 201 is kept.
async fn chain(app: Arc<TestApp>, writer: usize, until: Instant, seen: Arc<Mutex<Seen>>) -> i64 {
    let mut current = 120;
    let mut n = 0;
    while Instant::now() < until {
        n += 1;
        let next = 1 + (writer as i64 * 1000 + n) % 90_000;
        let body = json!({"key": CHAINED, "scope": {"org_id": format!("w{writer}")}, "value": next,
                          "old_value": current, "reason": "chained"});
        let reply = app.write(body).await;
        let mut seen = seen.lock().unwrap();
        seen.statuses.push(reply.status.as_u16());
        match reply.status {
            StatusCode::CREATED => {
                seen.created.push(reply.json["value"]["id"].as_str().unwrap().parse().unwrap());
                current = next;
            }
            StatusCode::CONFLICT => current = reply.json["details"]["current_value"].as_i64().unwrap(),
            _ => {}
        }
    }
    current
}

/// A request to an endpoint that touches the database, chosen at random.
fn any_request(app: &TestApp, rng: &mut Rng, scheduled: &[String]) -> reqwest::RequestBuilder {
    let base = &app.base;
    let now = time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap();
    let org = format!("w{}", rng.below(4));
    let write = |token: &str, body: Json| {
        app.http.post(format!("{base}/api/v1/admin/policy-values")).bearer_auth(token).json(&body)
    };
    match rng.below(12) {
        0 => app.http.get(format!("{base}/api/v1/policy-values/snapshot?org_id={org}")).bearer_auth(&app.reader),
        1 => app
            .http
            .get(format!("{base}/api/v1/policy-values/resolve?key={CHAINED}&org_id={org}&at={now}"))
            .bearer_auth(&app.reader),
        2 => app.http.get(format!("{base}/api/v1/admin/audit-logs?limit=50")).bearer_auth(&app.auditor),
        3 => app.http.get(format!("{base}/api/v1/admin/audit-logs/verify")).bearer_auth(&app.auditor),
        4 => app.http.get(format!("{base}/api/v1/admin/audit-logs/head")).bearer_auth(&app.auditor),
        5 => app
            .http
            .get(format!("{base}/api/v1/admin/policy-values/history?key={CHAINED}&org_id={org}"))
            .bearer_auth(&app.auditor),
        6 => app.http.get(format!("{base}/api/v1/admin/policy-values?key={CHAINED}")).bearer_auth(&app.auditor),
        7 => app.http.get(format!("{base}/api/v1/policy-keys")).bearer_auth(&app.reader),
        8 => write(
            &app.admin,
            json!({"key": HUNG, "scope": {"user_id": format!("h{}", rng.below(40))},
                                       "value": rng.below(1000), "old_value": 50, "reason": "hung up"}),
        ),
        9 => {
            let id = &scheduled[rng.below(scheduled.len() as u64) as usize];
            app.http
                .post(format!("{base}/api/v1/admin/policy-values/{id}/cancel"))
                .bearer_auth(&app.admin)
                .json(&json!({"reason": "hung up"}))
        }
        10 => write(
            "pvt_not_a_token",
            json!({"key": HUNG, "scope": {}, "value": 1, "old_value": 50, "reason": "refused"}),
        ),
        _ => app.http.get(format!("{base}/readyz")),
    }
}

/// One client that sends requests and hangs up after 0.5 to 3.5 ms.
async fn hang_up(app: Arc<TestApp>, seed: u64, until: Instant, scheduled: Arc<Vec<String>>, seen: Arc<Mutex<Seen>>) {
    let mut rng = Rng(seed);
    while Instant::now() < until {
        let patience = Duration::from_micros(500 + rng.below(3000));
        let request = any_request(&app, &mut rng, &scheduled).timeout(patience);
        let outcome = match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let _ = response.bytes().await;
                Some(status)
            }
            Err(_) => None,
        };
        let mut seen = seen.lock().unwrap();
        match outcome {
            Some(status) => seen.statuses.push(status),
            None => seen.hung_up += 1,
        }
    }
}

async fn count(db: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(db).await.unwrap()
}

#[sqlx::test]
async fn callers_hanging_up_everywhere_cost_no_acknowledged_write(db: PgPool) {
    notices();
    let app = Arc::new(TestApp::spawn(db.clone()).await);
    let at = (time::OffsetDateTime::now_utc() + time::Duration::hours(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let mut scheduled = Vec::new();
    for i in 0..40 {
        let body = json!({"key": SCHEDULED, "scope": {"org_id": format!("s{i}")}, "value": 60, "old_value": 30,
                          "reason": "to cancel", "effective_at": at});
        scheduled.push(app.write(body).await.json["value"]["id"].as_str().unwrap().to_string());
    }
    let scheduled = Arc::new(scheduled);

    let seen = Arc::new(Mutex::new(Seen::default()));
    let until = Instant::now() + Duration::from_secs(6);
    let writers: Vec<_> = (0..4).map(|w| tokio::spawn(chain(app.clone(), w, until, seen.clone()))).collect();
    let hangers: Vec<_> = (0..12u64)
        .map(|i| {
            tokio::spawn(hang_up(app.clone(), 0x9E37_79B9_7F4A_7C15 ^ (i + 1), until, scheduled.clone(), seen.clone()))
        })
        .collect();
    let mut finals = Vec::new();
    for w in writers {
        finals.push(w.await.unwrap());
    }
    for h in hangers {
        h.await.unwrap();
    }

    let seen = std::mem::take(&mut *seen.lock().unwrap());
    assert!(seen.hung_up > 100, "callers hung up {} times", seen.hung_up);
    assert!(seen.created.len() >= 5, "{} chained writes were acknowledged", seen.created.len());
    let errors: Vec<_> = seen.statuses.iter().filter(|s| **s >= 500).collect();
    assert!(errors.is_empty(), "server errors: {errors:?}");

    // Every 201 is a stored value row with its audit record.
    let acknowledged: i64 = sqlx::query_scalar(
        "select count(*) from policy_values v join audit_logs a on a.value_seq = v.seq and a.outcome = 'success'
         where v.id = any($1)",
    )
    .bind(&seen.created)
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(acknowledged, seen.created.len() as i64);
    for (writer, last) in finals.iter().enumerate() {
        assert_eq!(
            app.resolve(CHAINED, &format!("org_id=w{writer}")).await,
            json!(last),
            "writer {writer}'s last write"
        );
    }
    // Stored and audited rows match one to one.
    assert_eq!(
        count(&db, "select count(*) from policy_values v where not exists (select 1 from audit_logs a where a.value_seq = v.seq)").await,
        0,
        "a value row without its audit record"
    );
    assert_eq!(
        count(&db, "select count(*) from (select value_seq from audit_logs where value_seq is not null group by value_seq having count(*) > 1) d").await,
        0,
        "a value row audited twice"
    );
    assert!(matches!(audit_query::verify(&db).await.unwrap(), Verification::Intact { .. }), "the chain verifies");
    eventually("no session is left inside a transaction", || async {
        count(&db, "select count(*) from pg_stat_activity where datname = current_database() and state like 'idle in transaction%'").await == 0
    })
    .await;
    let leaked: Vec<_> =
        notices().lock().unwrap().iter().filter(|n| n.contains("already a transaction in progress")).cloned().collect();
    assert!(leaked.is_empty(), "notices: {leaked:?}");
}
