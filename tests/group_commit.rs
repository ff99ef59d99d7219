//! Group commit (`store::writer`): a batch of writes gives the answers the
//! same writes made one after another would, a write the database refuses
//! is refused alone, and concurrent writes share transactions.

use std::future::Future;
use std::task::Poll;
use std::time::Duration;

use policy_values::domain::{Catalog, KeyDef, Value, WriteScope};
use policy_values::store::values::{Actor, Change, Outcome, Written};
use policy_values::store::writer::{self, Request, Writer};
use policy_values::store::{audit_query, keys, StoreError};
use serde_json::json;
use sqlx::PgPool;
use time::OffsetDateTime;

const REFUND: &str = "allocation.refund_window_days";

async fn seeded(pool: &PgPool) -> KeyDef {
    let catalog = Catalog::builtin().unwrap();
    keys::sync(pool, &catalog, "catalog-sync", "test setup").await.unwrap();
    catalog.get(REFUND).unwrap().clone()
}

fn request(def: &KeyDef, org: &str, value: Option<i64>, old_value: i64) -> Request {
    request_at(def, org, value, old_value, None)
}

fn request_at(def: &KeyDef, org: &str, value: Option<i64>, old: i64, at: Option<OffsetDateTime>) -> Request {
    let change = Change {
        scope: WriteScope::from_json(&json!({ "org_id": org })).unwrap(),
        value: value.map(Value::Int),
        effective_at: at,
        reason: format!("group commit test, {org}"),
        old_value: Value::Int(old),
    };
    Request::new(def.clone(), &change, Actor { principal: "alice-admin", request_id: None })
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

fn written(answer: &Result<Outcome, StoreError>) -> &Written {
    match answer {
        Ok(Outcome::Written(written)) => written,
        other => panic!("expected a write, got {other:?}"),
    }
}

#[sqlx::test]
async fn a_write_in_a_batch_that_repeats_the_stored_value_is_unchanged_and_writes_nothing(pool: PgPool) {
    let def = seeded(&pool).await;
    let batch =
        [request(&def, "acme", Some(45), 30), request(&def, "acme", Some(45), 45), request(&def, "acme", Some(50), 45)];
    let answers = writer::execute(&pool, &batch).await;
    let first = written(&answers[0]).clone();
    match &answers[1] {
        Ok(Outcome::Unchanged(same)) => {
            assert_eq!((same.value_id, same.value_seq), (first.value.id, first.value.seq), "the row in force");
            assert_eq!((same.scope_id.as_str(), same.value.clone()), ("acme", json!(45)));
        }
        other => panic!("expected unchanged, got {other:?}"),
    }
    assert_eq!(written(&answers[2]).old_value, Some(json!(45)));
    assert_eq!(count(&pool, "select count(*) from policy_values where scope_id = 'acme'").await, 2);
    assert_eq!(count(&pool, "select count(*) from audit_logs where action like 'policy_value.%'").await, 2);
    assert!(matches!(audit_query::verify(&pool).await.unwrap(), audit_query::Verification::Intact { .. }));
}

#[sqlx::test]
async fn a_batch_answers_as_the_same_writes_made_one_after_another_in_order(pool: PgPool) {
    let def = seeded(&pool).await;
    let (values_before, audit_before) = (
        count(&pool, "select count(*) from policy_values").await,
        count(&pool, "select count(*) from audit_logs").await,
    );
    let two_hours_ago = OffsetDateTime::now_utc() - Duration::from_secs(7200);
    let batch = [
        request(&def, "acme", Some(45), 30),
        request(&def, "acme", Some(60), 45),
        request(&def, "acme", Some(90), 30),
        request(&def, "beta", None, 30),
        request_at(&def, "gamma", Some(10), 30, Some(two_hours_ago)),
    ];
    let answers = writer::execute(&pool, &batch).await;
    assert_eq!(answers.len(), 5);

    let (first, second) = (written(&answers[0]), written(&answers[1]));
    assert_eq!((first.value.value.clone(), first.old_value.clone()), (Some(json!(45)), Some(json!(30))));
    assert_eq!((second.value.value.clone(), second.old_value.clone()), (Some(json!(60)), Some(json!(45))));
    assert!(first.value.seq < second.value.seq && first.audit_seq < second.audit_seq);
    match &answers[2] {
        Err(StoreError::StaleOldValue { current }) => assert_eq!(current, &Value::Int(60)),
        other => panic!("expected stale_old_value, got {other:?}"),
    }
    assert!(matches!(answers[3], Err(StoreError::NotOverridden)), "{:?}", answers[3]);
    assert!(matches!(answers[4], Err(StoreError::EffectiveAtInPast { .. })), "{:?}", answers[4]);

    assert_eq!(count(&pool, "select count(*) from policy_values").await, values_before + 2);
    assert_eq!(count(&pool, "select count(*) from audit_logs").await, audit_before + 2);
    let stored: Vec<(i64, serde_json::Value)> =
        sqlx::query_as("select seq, value from policy_values where key = 'allocation.refund_window_days' order by seq")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(stored, vec![(first.value.seq, json!(45)), (second.value.seq, json!(60))]);
    assert!(matches!(audit_query::verify(&pool).await.unwrap(), audit_query::Verification::Intact { .. }));
}

#[sqlx::test]
async fn a_write_the_database_refuses_is_refused_alone_and_the_rest_of_its_batch_is_written(pool: PgPool) {
    let stored = seeded(&pool).await;
    // A writer whose copy of the catalog allows up to 1,000 days while the
    // database's allows 365: the bounds trigger refuses, mid-batch.
    let text = policy_values::domain::catalog::BUILTIN_CATALOG
        .replace("default = 30\nmin = 0\nmax = 365", "default = 30\nmin = 0\nmax = 1000");
    let stale = Catalog::parse(&text).unwrap().get(REFUND).unwrap().clone();
    assert_ne!(stale.bounds, stored.bounds);
    let values_before = count(&pool, "select coalesce(max(seq), 0) from policy_values").await;

    let batch =
        [request(&stale, "a", Some(40), 30), request(&stale, "b", Some(500), 30), request(&stale, "c", Some(50), 30)];
    let answers = writer::execute(&pool, &batch).await;

    assert_eq!(written(&answers[0]).value.value, Some(json!(40)));
    assert!(matches!(&answers[1], Err(StoreError::OutOfBounds(m)) if m.contains("500")), "{:?}", answers[1]);
    assert_eq!(written(&answers[2]).value.value, Some(json!(50)));
    let scopes: Vec<String> = sqlx::query_scalar("select scope_id from policy_values where seq > $1 order by seq")
        .bind(values_before)
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(scopes, vec!["a".to_string(), "c".to_string()]);
    assert_eq!(count(&pool, "select count(*) from audit_logs where value_seq is not null").await, 2);
}

#[sqlx::test]
async fn concurrent_writes_through_the_writer_share_transactions_and_each_gets_its_own_row(pool: PgPool) {
    let def = seeded(&pool).await;
    let writer = Writer::spawn(pool.clone());
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let (writer, request) = (writer.clone(), request(&def, &format!("org-{i}"), Some(i), 30));
            tokio::spawn(async move { writer.write(request).await })
        })
        .collect();
    let mut seqs = Vec::new();
    for (i, task) in tasks.into_iter().enumerate() {
        let answer = task.await.unwrap();
        let written = written(&answer);
        assert_eq!(
            (written.value.scope_id.as_str(), written.value.value.clone()),
            (format!("org-{i}").as_str(), Some(json!(i)))
        );
        seqs.push(written.value.seq);
    }
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), 64);
    let rows = "select count(*) from policy_values where key = 'allocation.refund_window_days'";
    assert_eq!(count(&pool, rows).await, 64);
    assert_eq!(count(&pool, "select count(*) from audit_logs where value_seq is not null").await, 64);
    // Rows committed together carry the same transaction id.
    let transactions = count(
        &pool,
        "select count(distinct xmin::text) from policy_values where key = 'allocation.refund_window_days'",
    )
    .await;
    assert!(transactions < 64, "64 concurrent writes took {transactions} transactions");
    let expected = Catalog::builtin().unwrap().keys.len() as i64 + 64;
    let verification = audit_query::verify(&pool).await.unwrap();
    assert!(
        matches!(verification, audit_query::Verification::Intact { rows, .. } if rows == expected),
        "{verification:?}"
    );
}

#[sqlx::test]
async fn a_write_given_up_before_its_batch_is_sent_is_not_written(pool: PgPool) {
    let def = seeded(&pool).await;
    let writer = Writer::spawn(pool.clone());
    // Polled once, which queues it, then dropped (a request that timed out)
    // without yielding: the writer's task has not run yet on this
    // single-threaded runtime.
    let mut gone = Box::pin(writer.write(request(&def, "gone", Some(99), 30)));
    let first_poll = std::future::poll_fn(|cx| Poll::Ready(gone.as_mut().poll(cx))).await;
    assert!(first_poll.is_pending(), "the write cannot have been answered without the writer's task running");
    drop(gone);
    let kept = writer.write(request(&def, "kept", Some(98), 30)).await;
    assert_eq!(written(&kept).value.scope_id, "kept");
    let scopes: Vec<String> =
        sqlx::query_scalar("select scope_id from policy_values where key = 'allocation.refund_window_days'")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(scopes, vec!["kept".to_string()]);
}
