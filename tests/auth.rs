//! Authentication and roles: 401 without a valid token, 403 for the wrong
//! role, both as JSON errors; health needs no token.

mod common;

use common::TestApp;
use reqwest::StatusCode;
use serde_json::json;
use sqlx::PgPool;

const WRITE: &str = "/api/v1/admin/policy-values";

fn write_body() -> serde_json::Value {
    json!({"key": "notification.low_balance_enabled", "scope": {}, "value": false, "reason": "pilot", "old_value": true})
}

#[sqlx::test]
async fn a_request_without_a_valid_token_is_401_and_writes_nothing(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let before = app.counts().await;
    let url = format!("{}{WRITE}", app.base);
    let none = app.send(app.http.post(&url).json(&write_body())).await;
    assert_eq!((none.status, none.code()), (StatusCode::UNAUTHORIZED, "unauthorized"));
    assert_eq!(none.headers["www-authenticate"], "Bearer");
    let basic = app.send(app.http.post(&url).basic_auth("admin", Some("pw")).json(&write_body())).await;
    assert_eq!((basic.status, basic.code()), (StatusCode::UNAUTHORIZED, "unauthorized"));
    let unknown = app.post(WRITE, "pvt_0000", &write_body()).await;
    assert_eq!((unknown.status, unknown.code()), (StatusCode::UNAUTHORIZED, "unauthorized"));
    assert_eq!(app.counts().await, before);
}

#[sqlx::test]
async fn revoked_and_expired_tokens_are_refused(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let revoked = common::create_token(&app.pool, policy_values::store::tokens::Role::Admin, "gone").await;
    sqlx::query("update api_tokens set revoked_at = now() where name = 'gone'").execute(&app.pool).await.unwrap();
    let expired = common::create_token(&app.pool, policy_values::store::tokens::Role::Admin, "old").await;
    sqlx::query("update api_tokens set expires_at = now() - interval '1 second' where name = 'old'")
        .execute(&app.pool)
        .await
        .unwrap();
    for token in [revoked, expired] {
        let reply = app.post(WRITE, &token, &write_body()).await;
        assert_eq!((reply.status, reply.code()), (StatusCode::UNAUTHORIZED, "unauthorized"));
    }
}

#[sqlx::test]
async fn each_role_reaches_its_endpoints_and_is_403_elsewhere(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let before = app.counts().await;
    let reader_write = app.post(WRITE, &app.reader, &write_body()).await;
    assert_eq!((reader_write.status, reader_write.code()), (StatusCode::FORBIDDEN, "forbidden"));
    let auditor_write = app.post(WRITE, &app.auditor, &write_body()).await;
    assert_eq!((auditor_write.status, auditor_write.code()), (StatusCode::FORBIDDEN, "forbidden"));
    assert_eq!(app.counts().await, before);

    let audit = "/api/v1/admin/audit-logs";
    assert_eq!(app.get(audit, &app.reader).await.status, StatusCode::FORBIDDEN);
    assert_eq!(app.get(audit, &app.auditor).await.status, StatusCode::OK);
    assert_eq!(app.get(audit, &app.admin).await.status, StatusCode::OK);
    for token in [&app.reader, &app.auditor, &app.admin] {
        assert_eq!(app.get("/api/v1/policy-keys", token).await.status, StatusCode::OK);
    }
    let written = app.post(WRITE, &app.admin, &write_body()).await;
    assert_eq!(written.status, StatusCode::CREATED, "{}", written.json);
    assert_eq!(written.json["value"]["actor"], "alice-admin");
}

#[sqlx::test]
async fn health_and_readiness_need_no_token(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let health = app.send(app.http.get(format!("{}/healthz", app.base))).await;
    assert_eq!((health.status, health.json["status"].as_str()), (StatusCode::OK, Some("ok")));
    let ready = app.send(app.http.get(format!("{}/readyz", app.base))).await;
    assert_eq!((ready.status, ready.json["status"].as_str()), (StatusCode::OK, Some("ready")));
    let missing = app.send(app.http.get(format!("{}/nope", app.base))).await;
    assert_eq!((missing.status, missing.code()), (StatusCode::NOT_FOUND, "not_found"));
}
