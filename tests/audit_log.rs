//! The audit log: the database refuses to edit it, and every row's hash
//! chains to the one before, recomputable outside the database.

mod common;

use common::TestApp;
use policy_values::store::audit::{self, AuditRecord};
use policy_values::store::audit_query;
use serde_json::json;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

#[sqlx::test]
async fn the_database_refuses_update_delete_and_truncate_of_audit_rows(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let body = json!({"key": "notification.low_balance_enabled", "scope": {}, "value": false, "reason": "pilot", "old_value": true});
    assert_eq!(app.write(body).await.status, reqwest::StatusCode::CREATED);
    let before = app.counts().await;
    let keys = common::catalog_len() as i64;
    assert_eq!(before, (1, keys + 1), "one value row; an audit row per catalog key and 1 for the write");
    for statement in [
        "update audit_logs set actor = 'mallory'",
        "delete from audit_logs",
        "truncate audit_logs",
        "update policy_values set value = '1'",
        "delete from policy_values",
        "truncate policy_values cascade",
    ] {
        let err = sqlx::query(statement).execute(&app.pool).await.unwrap_err();
        assert!(err.to_string().contains("append-only"), "{statement}: {err}");
    }
    assert_eq!(app.counts().await, before);
    let actors: Vec<String> =
        sqlx::query_scalar("select distinct actor from audit_logs order by 1").fetch_all(&app.pool).await.unwrap();
    assert_eq!(actors.len(), 2, "no actor was rewritten: {actors:?}");
}

#[sqlx::test]
async fn every_hash_is_sha256_of_the_previous_hash_and_the_canonical_row(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let body = json!({"key": "billing.window_seconds", "scope": {"org_id": "a;b:c\n"}, "value": 30,
                      "reason": "quoting: ;:- and ünïcode", "old_value": 60});
    // A newline in a scope id is refused; the same scope without it is stored.
    assert_eq!(app.write(body.clone()).await.code(), "invalid_scope");
    let mut body = body;
    body["scope"] = json!({"org_id": "a;b:c"});
    assert_eq!(app.write(body).await.status, reqwest::StatusCode::CREATED);

    let records =
        audit_query::page(&app.pool, &Default::default(), audit_query::Page::NewestFirst { before: None }, 1000)
            .await
            .unwrap();
    let texts: Vec<(i64, String)> =
        sqlx::query_as("select seq, metadata::text from audit_logs order by seq").fetch_all(&app.pool).await.unwrap();
    let mut records: Vec<AuditRecord> = records;
    records.reverse();
    assert_eq!(records.len(), texts.len());
    assert_eq!(records.len(), common::catalog_len() + 2, "the catalog keys, the refused write and the write");
    let mut prev = [0u8; 32].to_vec();
    for (record, (seq, text)) in records.iter().zip(&texts) {
        assert_eq!(record.seq, *seq);
        assert_eq!(record.prev_hash, hex::encode(&prev), "row {seq} chains to the previous row");
        let mut hasher = Sha256::new();
        hasher.update(&prev);
        hasher.update(audit::canonical(record, text));
        let hash = hasher.finalize().to_vec();
        assert_eq!(record.hash, hex::encode(&hash), "row {seq}'s hash recomputes");
        prev = hash;
    }
    let last = records.last().unwrap();
    assert_eq!(last.metadata["reason"], "quoting: ;:- and ünïcode");
    assert_eq!(last.scope_id.as_deref(), Some("a;b:c"));
}

#[sqlx::test]
async fn the_application_role_may_append_but_not_rewrite(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let mut conn = app.pool.acquire().await.unwrap();
    sqlx::query("set role policy_values_app").execute(&mut *conn).await.unwrap();
    sqlx::query("insert into audit_logs (actor, action, prev_hash, hash) values ('app', 'test.append', '', '')")
        .execute(&mut *conn)
        .await
        .unwrap();
    for statement in ["update audit_logs set actor = 'x'", "delete from audit_logs", "truncate audit_logs"] {
        let err = sqlx::query(statement).execute(&mut *conn).await.unwrap_err();
        assert!(err.to_string().contains("permission denied"), "{statement}: {err}");
    }
    sqlx::query("reset role").execute(&mut *conn).await.unwrap();
    let appended: i64 = sqlx::query_scalar("select count(*) from audit_logs where action = 'test.append'")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(appended, 1);
}
