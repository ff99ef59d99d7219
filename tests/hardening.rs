//! The API against the usual attacks: the authorization matrix over every
//! endpoint, revocation, rate limiting, and injection or control-character
//! payloads.

mod common;

use common::{create_token, TestApp};
use policy_values::server::limits::WriteRate;
use policy_values::server::ServerConfig;
use policy_values::store::tokens::{self, Role};
use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlx::PgPool;

const KEY: &str = "allocation.refund_window_days";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Needs {
    Reader,
    Auditor,
    Admin,
}

#[sqlx::test]
async fn every_endpoint_answers_every_kind_of_caller_as_its_role_says(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let later = (time::OffsetDateTime::now_utc() + time::Duration::days(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let body = json!({"key": KEY, "scope": {"plan": "gold"}, "value": 40, "reason": "r", "old_value": 30, "effective_at": later});
    let scheduled = app.write(body).await.json["value"]["id"].as_str().unwrap().to_string();
    let revoked = create_token(&app.pool, Role::Admin, "revoked-admin").await;
    tokens::revoke(&app.pool, "revoked-admin").await.unwrap();
    let expired = create_token(&app.pool, Role::Admin, "expired-admin").await;
    sqlx::query("update api_tokens set expires_at = now() - interval '1 minute' where name = 'expired-admin'")
        .execute(&app.pool)
        .await
        .unwrap();

    let write = json!({"key": KEY, "scope": {"user_id": "matrix"}, "value": 41, "reason": "r", "old_value": 30});
    let endpoints: Vec<(Method, String, Option<serde_json::Value>, Needs, StatusCode)> = vec![
        (Method::GET, "/api/v1/policy-keys".into(), None, Needs::Reader, StatusCode::OK),
        (Method::GET, format!("/api/v1/policy-values/resolve?key={KEY}&org_id=a"), None, Needs::Reader, StatusCode::OK),
        (Method::GET, "/api/v1/policy-values/snapshot?org_id=a".into(), None, Needs::Reader, StatusCode::OK),
        (Method::GET, format!("/api/v1/admin/policy-values?key={KEY}"), None, Needs::Auditor, StatusCode::OK),
        (Method::GET, format!("/api/v1/admin/policy-values/history?key={KEY}"), None, Needs::Auditor, StatusCode::OK),
        (Method::GET, "/api/v1/admin/policy-values/counts".into(), None, Needs::Auditor, StatusCode::OK),
        (Method::GET, "/api/v1/admin/audit-logs".into(), None, Needs::Auditor, StatusCode::OK),
        (Method::GET, "/api/v1/admin/audit-logs/verify".into(), None, Needs::Auditor, StatusCode::OK),
        (Method::GET, "/api/v1/admin/audit-logs/head".into(), None, Needs::Auditor, StatusCode::OK),
        (Method::POST, "/api/v1/admin/policy-values".into(), Some(write), Needs::Admin, StatusCode::CREATED),
        (
            Method::POST,
            format!("/api/v1/admin/policy-values/{scheduled}/cancel"),
            Some(json!({"reason": "matrix"})),
            Needs::Admin,
            StatusCode::OK,
        ),
    ];
    let callers: Vec<(&str, Option<String>, Option<Role>)> = vec![
        ("no token", None, None),
        ("malformed", Some("Bearer".into()), None),
        ("unknown", Some("Bearer pvt_00000000".into()), None),
        ("revoked", Some(format!("Bearer {revoked}")), None),
        ("expired", Some(format!("Bearer {expired}")), None),
        ("reader", Some(format!("Bearer {}", app.reader)), Some(Role::Reader)),
        ("auditor", Some(format!("Bearer {}", app.auditor)), Some(Role::Auditor)),
        ("admin", Some(format!("Bearer {}", app.admin)), Some(Role::Admin)),
    ];
    for (method, path, body, needs, ok) in &endpoints {
        for (caller, header, role) in &callers {
            let mut req = app.http.request(method.clone(), format!("{}{path}", app.base));
            if let Some(header) = header {
                req = req.header("authorization", header);
            }
            if let Some(body) = body {
                req = req.json(body);
            }
            let reply = app.send(req).await;
            let allowed = match (role, needs) {
                (None, _) => None,
                (Some(Role::Admin), _) => Some(true),
                (Some(Role::Auditor), Needs::Reader | Needs::Auditor) => Some(true),
                (Some(Role::Reader), Needs::Reader) => Some(true),
                (Some(_), _) => Some(false),
            };
            let expected = match allowed {
                None => StatusCode::UNAUTHORIZED,
                Some(false) => StatusCode::FORBIDDEN,
                Some(true) => *ok,
            };
            assert_eq!(reply.status, expected, "{method} {path} as {caller}: {}", reply.json);
            if !reply.status.is_success() {
                assert!(reply.json["code"].is_string(), "{method} {path} as {caller}: a JSON error");
            }
        }
    }
}

#[sqlx::test]
async fn a_revoked_token_is_refused_at_once_and_listings_hold_no_secret(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let token = create_token(&app.pool, Role::Reader, "temp").await;
    assert!(token.starts_with("pvt_") && token.len() == 68, "a recognisable, high-entropy token");
    assert_eq!(app.get("/api/v1/policy-keys", &token).await.status, StatusCode::OK);
    assert_eq!(tokens::revoke(&app.pool, "temp").await.unwrap(), 1);
    // The server caches tokens and drops its cache when the database
    // announces the revocation: refused as soon as that arrives.
    common::eventually("the revoked token is refused", || async {
        app.get("/api/v1/policy-keys", &token).await.status == StatusCode::UNAUTHORIZED
    })
    .await;
    let listed = serde_json::to_string(&tokens::list(&app.pool).await.unwrap()).unwrap();
    assert!(!listed.contains(&token[12..]), "no secret in a listing");
    assert!(listed.contains(&token[..12]), "the prefix identifies it");
}

#[sqlx::test]
async fn admin_writes_past_the_rate_get_429_with_retry_after(pool: PgPool) {
    let config = ServerConfig { write_rate: WriteRate { rate: 0.5, burst: 2.0 }, ..ServerConfig::default() };
    let app = TestApp::spawn_with(pool, &config).await;
    let mut statuses = Vec::new();
    for i in 0..3 {
        let body =
            json!({"key": KEY, "scope": {"user_id": format!("u{i}")}, "value": 40, "reason": "r", "old_value": 30});
        let reply = app.write(body).await;
        statuses.push(reply.status);
        if reply.status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(reply.code(), "rate_limited");
            assert_eq!(reply.headers["retry-after"], "2");
        }
    }
    assert_eq!(statuses, [StatusCode::CREATED, StatusCode::CREATED, StatusCode::TOO_MANY_REQUESTS]);
    assert_eq!(app.counts().await.0, 2);
}

#[sqlx::test]
async fn injection_payloads_are_refused_or_stored_literally(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let sql = "x'); delete from policy_values; drop table audit_logs; --";
    let unknown = app.write(json!({"key": format!("{KEY}'; drop table audit_logs; --"), "scope": {}, "value": 1, "reason": "r", "old_value": 30})).await;
    assert_eq!(unknown.code(), "unknown_key");
    let stored =
        app.write(json!({"key": KEY, "scope": {"org_id": sql}, "value": 40, "reason": sql, "old_value": 30})).await;
    assert_eq!(stored.status, StatusCode::CREATED, "{}", stored.json);
    assert_eq!(stored.json["value"]["scope_id"], sql);
    assert_eq!(stored.json["value"]["reason"], sql);
    let encoded: String = sql.bytes().map(|b| format!("%{b:02X}")).collect();
    assert_eq!(app.resolve(KEY, &format!("org_id={encoded}")).await, json!(40));
    let filtered =
        app.get(&format!("/api/v1/admin/audit-logs?actor={encoded}&policy_key={encoded}"), &app.auditor).await;
    assert_eq!((filtered.status, filtered.json["items"].clone()), (StatusCode::OK, json!([])));

    for (scope, reason, code) in [
        (json!({"org_id": "bell\u{7}"}), "r", "invalid_scope"),
        (json!({"org_id": "nul\u{0}"}), "r", "invalid_scope"),
        (json!({"org_id": "acme"}), "nul\u{0} byte", "invalid_reason"),
        (json!({"org_id": "acme"}), "escape \u{1b}[31m", "invalid_reason"),
    ] {
        let reply =
            app.write(json!({"key": KEY, "scope": scope, "value": 41, "reason": reason, "old_value": 30})).await;
        assert_eq!((reply.status, reply.code()), (StatusCode::UNPROCESSABLE_ENTITY, code), "{scope} {reason:?}");
    }
    let multiline = app.write(json!({"key": KEY, "scope": {"org_id": "acme"}, "value": 41, "reason": "line one\nline two\ttabbed", "old_value": 30})).await;
    assert_eq!(multiline.status, StatusCode::CREATED);
    let tables: i64 = sqlx::query_scalar(
        "select count(*) from information_schema.tables where table_name in ('audit_logs', 'policy_values')",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(tables, 2);
    assert_eq!(app.counts().await.0, 2);
}
