//! Property test: over random histories (levels, scopes, times, tombstones,
//! cancellations, ties), the store's answer equals a simple reference model
//! of the rule: most specific level first; per level the non-cancelled row
//! with the latest effective_at <= T, ties to the latest seq; a tombstone
//! means "not set here"; else the catalog default. A running PolicyClient,
//! tailing the same database, gives the server's answer for every scope now,
//! and builds the same snapshot document the database computes; a client
//! following a server's change feed gives the same answers.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};

use policy_values::client::PolicyClient;
use policy_values::domain::{Bounds, Catalog, KeyDef, Level, PolicyKey, Scope, Value, ValueType};
use policy_values::store::{keys, resolve, values};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use sqlx::PgPool;
use time::{Duration, OffsetDateTime};

#[derive(Debug, Clone)]
struct Op {
    level: Level,
    scope_id: &'static str,
    /// `None` is a tombstone.
    value: Option<i64>,
    /// Hours from the base time; few distinct values so ties happen.
    hour: i64,
    cancelled: bool,
}

fn op() -> impl Strategy<Value = Op> {
    (0..5usize, prop::bool::ANY, prop::option::weighted(0.8, 0..1000i64), -3..4i64, prop::bool::weighted(0.15))
        .prop_map(|(level, second, value, hour, cancelled)| {
            let level = Level::ORDER[level];
            let scope_id = match (level, second) {
                (Level::Global, _) => "",
                (_, false) => "a",
                (_, true) => "b",
            };
            // Only a change still to come can be cancelled (as the store enforces).
            Op { level, scope_id, value, hour, cancelled: cancelled && hour > 0 }
        })
}

/// The reference model: a direct reading of the rule over the op list,
/// where list order is seq order.
fn model(ops: &[Op], default: i64, scope: &Scope, at: OffsetDateTime, base: OffsetDateTime) -> (i64, &'static str) {
    for level in Level::ORDER {
        let Some(id) = scope.id(level) else { continue };
        let winner = ops
            .iter()
            .enumerate()
            .filter(|(_, o)| o.level == level && o.scope_id == id && !o.cancelled)
            .filter(|(_, o)| base + Duration::hours(o.hour) <= at)
            .max_by_key(|(seq, o)| (o.hour, *seq));
        if let Some((_, Op { value: Some(v), .. })) = winner {
            return (*v, level.as_str());
        }
    }
    (default, "default")
}

fn scopes() -> Vec<Scope> {
    let mut out = Vec::new();
    for user in [None, Some("a"), Some("b")] {
        for org in [None, Some("a")] {
            for (project, plan) in [(None, None), (Some("a"), Some("b")), (Some("b"), Some("a"))] {
                let mut scope = Scope::new();
                for (level, id) in
                    [(Level::User, user), (Level::Project, project), (Level::Org, org), (Level::Plan, plan)]
                {
                    if let Some(id) = id {
                        scope = scope.with(level, id).unwrap();
                    }
                }
                out.push(scope);
            }
        }
    }
    out
}

async fn check(
    pool: &PgPool,
    client: &PolicyClient,
    follower: &PolicyClient,
    case: usize,
    ops: &[Op],
) -> Result<(), TestCaseError> {
    let def = KeyDef {
        key: PolicyKey::parse(&format!("prop.key_{case}")).unwrap(),
        value_type: ValueType::Int,
        default: Value::Int(-1),
        bounds: Bounds::Int { min: -1, max: 1000 },
        description: "property test".into(),
        unit: String::new(),
        fail_closed: false,
        approvals_required: 0,
    };
    keys::sync(pool, &Catalog { keys: vec![def.clone()] }, "test", "property test").await.unwrap();
    let base = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let mut conn = pool.acquire().await.unwrap();
    for o in ops {
        let at = base + Duration::hours(o.hour);
        let json = o.value.map(serde_json::Value::from);
        let row = values::append_row(&mut conn, def.key.as_str(), o.level, o.scope_id, json, at, "test", "prop")
            .await
            .unwrap();
        if o.cancelled {
            sqlx::query(
                "insert into policy_values (kind, key, level, scope_id, effective_at, actor, reason, cancels_seq)
                 values ('cancel', $1, $2, $3, now(), 'test', 'prop', $4)",
            )
            .bind(def.key.as_str())
            .bind(o.level.as_str())
            .bind(o.scope_id)
            .bind(row.seq)
            .execute(&mut *conn)
            .await
            .unwrap();
        }
    }
    for scope in scopes() {
        for half_hours in -8..10 {
            let at = base + Duration::minutes(30 * half_hours);
            let got = resolve::resolve(&mut conn, &def, &scope, Some(at)).await.unwrap();
            let Value::Int(value) = got.value else { panic!("int key") };
            let expected = model(ops, -1, &scope, at, base);
            prop_assert_eq!((value, got.source.level), expected, "scope {:?} at {}", scope, at);
        }
    }
    // The last position: value rows and catalog changes (this case's key).
    let last_seq: i64 = sqlx::query_scalar(
        "select greatest((select coalesce(max(seq), 0) from policy_values),
                         (select coalesce(max(seq), 0) from policy_key_changes))",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    common::eventually("the client applies every row", || async { client.health().last_seq >= last_seq }).await;
    common::eventually("the HTTP client applies every row", || async { follower.health().last_seq >= last_seq }).await;
    for scope in scopes() {
        let now = OffsetDateTime::now_utc();
        let server = resolve::resolve(&mut conn, &def, &scope, Some(now)).await.unwrap();
        let local = client.explain(&scope, def.key.as_str()).unwrap().resolution;
        prop_assert_eq!(&local.value, &server.value, "scope {:?}", scope);
        prop_assert_eq!(&local.source, &server.source, "scope {:?}", scope);
        prop_assert_eq!(&local.explain, &server.explain, "scope {:?}", scope);
        // The client following the servers' feed answers as the one
        // following the database.
        let remote = follower.explain(&scope, def.key.as_str()).unwrap().resolution;
        prop_assert_eq!(&remote, &local, "HTTP source, scope {:?}", scope);
    }
    // The snapshot document the server builds from its replica equals the
    // one computed by the database, key for key.
    let defs = keys::list(&mut *conn).await.unwrap();
    for scope in scopes() {
        let stored = resolve::snapshot(&mut conn, &defs, &scope).await.unwrap();
        let (local, _tag) = client.snapshot(&scope).unwrap();
        let (local, stored) = (serde_json::to_value(&local).unwrap(), serde_json::to_value(&stored).unwrap());
        prop_assert_eq!(local, stored, "snapshot for scope {:?}", scope);
    }
    Ok(())
}

#[test]
fn the_store_resolves_random_histories_as_the_reference_model_does() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let pool = rt.block_on(common::fresh_database());
    let client = rt.block_on(PolicyClient::builder().pool(pool.clone()).connect()).unwrap();
    // A server on the same database, and a client following its feed.
    let follower = rt.block_on(async {
        let token = common::create_token(&pool, policy_values::store::tokens::Role::Reader, "prop-reader").await;
        let config = policy_values::server::ServerConfig::default();
        let base = common::serve(&pool, &config, common::options_of(&pool)).await;
        PolicyClient::builder().servers([base]).token(token).connect().await.unwrap()
    });
    let cases = AtomicUsize::new(0);
    let mut runner = TestRunner::new(Config { cases: 24, failure_persistence: None, ..Config::default() });
    let result = runner.run(&prop::collection::vec(op(), 0..30), |ops| {
        let case = cases.fetch_add(1, Ordering::Relaxed);
        rt.block_on(check(&pool, &client, &follower, case, &ops))
    });
    drop(client);
    drop(follower);
    rt.block_on(common::drop_database(pool));
    if let Err(e) = result {
        panic!("{e}");
    }
    assert!(cases.load(Ordering::Relaxed) >= 24);
}
