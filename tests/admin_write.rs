//! The admin write path over real HTTP and a real PostgreSQL: what is
//! stored, what is audited, and that every refusal writes nothing.

mod common;

use common::TestApp;
use reqwest::StatusCode;
use serde_json::{json, Value as Json};
use sqlx::PgPool;

const KEY: &str = "allocation.refund_window_days";

fn body(scope: Json, value: Json, old_value: Json) -> Json {
    json!({ "key": KEY, "scope": scope, "value": value, "reason": "Customer success request", "old_value": old_value })
}

#[sqlx::test]
async fn the_spec_example_is_stored_audited_and_resolved(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let reply = app.write(body(json!({"org_id": "acme"}), json!(45), json!(30))).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.json);
    assert_eq!(reply.json["value"]["value"], json!(45));
    assert_eq!(reply.json["value"]["level"], "org");
    assert_eq!(reply.json["value"]["scope_id"], "acme");
    assert_eq!(reply.json["value"]["actor"], "alice-admin");
    assert_eq!(reply.json["old_value"], json!(30));
    assert_eq!(app.resolve(KEY, "org_id=acme").await, json!(45));
    assert_eq!(app.resolve(KEY, "org_id=other").await, json!(30));

    let audit_id: uuid::Uuid = reply.json["audit_id"].as_str().unwrap().parse().unwrap();
    let row = sqlx::query_as::<_, (String, String, Option<String>, Option<String>, Json, Option<String>)>(
        "select actor, action, policy_key, scope_id, metadata, request_id from audit_logs where id = $1",
    )
    .bind(audit_id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!((row.0.as_str(), row.1.as_str()), ("alice-admin", "policy_value.set"));
    assert_eq!((row.2.as_deref(), row.3.as_deref()), (Some(KEY), Some("acme")));
    assert_eq!(row.4["policy_key"], KEY);
    assert_eq!(row.4["old_value"], json!(30));
    assert_eq!(row.4["new_value"], json!(45));
    assert_eq!(row.4["reason"], "Customer success request");
    let request_id = reply.headers["x-request-id"].to_str().unwrap();
    assert_eq!(row.5.as_deref(), Some(request_id));
}

#[sqlx::test]
async fn old_value_is_the_value_at_the_exact_scope_or_else_the_global_value(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    // Global from 30 (the default) to 40.
    assert_eq!(app.write(body(json!({}), json!(40), json!(30))).await.status, StatusCode::CREATED);
    // The org has nothing stored: it replaces the global value, 40.
    assert_eq!(app.write(body(json!({"org_id": "acme"}), json!(45), json!(40))).await.status, StatusCode::CREATED);
    // The user has nothing stored: still the global value (40), not the org's 45.
    let stale = app.write(body(json!({"user_id": "u1"}), json!(7), json!(45))).await;
    assert_eq!((stale.status, stale.code()), (StatusCode::CONFLICT, "stale_old_value"));
    assert_eq!(stale.json["details"]["current_value"], json!(40));
    assert_eq!(app.write(body(json!({"user_id": "u1"}), json!(7), json!(40))).await.status, StatusCode::CREATED);
    // The org has 45 stored now, so that is what a second org write replaces.
    let reply = app.write(body(json!({"org_id": "acme"}), json!(60), json!(45))).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.json);
    assert_eq!(app.resolve(KEY, "org_id=acme&user_id=u1").await, json!(7));
    assert_eq!(app.resolve(KEY, "org_id=acme&user_id=u2").await, json!(60));
}

#[sqlx::test]
async fn a_null_value_removes_the_override_and_the_scope_falls_back(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.write(body(json!({"org_id": "acme"}), json!(45), json!(30))).await;
    let removed = app.write(body(json!({"org_id": "acme"}), Json::Null, json!(45))).await;
    assert_eq!(removed.status, StatusCode::CREATED, "{}", removed.json);
    assert_eq!(removed.json["value"]["kind"], "unset");
    assert_eq!(app.resolve(KEY, "org_id=acme").await, json!(30));

    let before = app.counts().await;
    let again = app.write(body(json!({"org_id": "acme"}), Json::Null, json!(30))).await;
    assert_eq!((again.status, again.code()), (StatusCode::CONFLICT, "not_overridden"));
    assert_eq!(app.counts().await, before);
}

async fn value_rows_at(app: &TestApp, scope_id: &str) -> Vec<(i64, Json)> {
    sqlx::query_as("select seq, value from policy_values where key = $1 and scope_id = $2 order by seq")
        .bind(KEY)
        .bind(scope_id)
        .fetch_all(&app.pool)
        .await
        .unwrap()
}

#[sqlx::test]
async fn writing_the_value_already_stored_at_the_scope_answers_unchanged_and_writes_nothing(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let first = app.write(body(json!({"org_id": "acme"}), json!(45), json!(30))).await;
    assert_eq!((first.status, first.json["unchanged"].clone()), (StatusCode::CREATED, json!(false)), "{}", first.json);
    let rows = value_rows_at(&app, "acme").await;
    let before = app.counts().await;

    let again = app.write(body(json!({"org_id": "acme"}), json!(45), json!(45))).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.json);
    assert_eq!(again.json["unchanged"], json!(true));
    assert_eq!((again.json["key"].as_str(), again.json["level"].as_str()), (Some(KEY), Some("org")));
    assert_eq!((again.json["scope_id"].clone(), again.json["value"].clone()), (json!("acme"), json!(45)));
    assert_eq!(again.json["old_value"], json!(45));
    assert_eq!(again.json["value_id"], first.json["value"]["id"], "names the row already in force");
    assert_eq!(again.json["value_seq"], first.json["value"]["seq"]);
    assert!(again.json.get("audit_id").is_none(), "no audit record: {}", again.json);
    assert_eq!(app.counts().await, before, "no value row and no audit record");
    assert_eq!(value_rows_at(&app, "acme").await, rows);
    assert_eq!(app.resolve(KEY, "org_id=acme").await, json!(45));

    // A stale old_value is still refused, even with the stored value.
    let stale = app.write(body(json!({"org_id": "acme"}), json!(45), json!(30))).await;
    assert_eq!((stale.status, stale.code()), (StatusCode::CONFLICT, "stale_old_value"));
    assert_eq!(app.counts().await, before);
}

#[sqlx::test]
async fn a_value_only_inherited_or_scheduled_at_the_scope_is_written_not_unchanged(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    // Nothing stored at the org: its value 30 is the catalog default, and
    // writing 30 there pins it, a change.
    let pinned = app.write(body(json!({"org_id": "acme"}), json!(30), json!(30))).await;
    assert_eq!(
        (pinned.status, pinned.json["unchanged"].clone()),
        (StatusCode::CREATED, json!(false)),
        "{}",
        pinned.json
    );
    // Global 40 is not the org's stored value either.
    app.write(body(json!({}), json!(40), json!(30))).await;
    let user = app.write(body(json!({"user_id": "u1"}), json!(40), json!(40))).await;
    assert_eq!(user.status, StatusCode::CREATED, "{}", user.json);

    // A change to 60 scheduled at the org: writing 30 (stored now) for a
    // time after it is a change again, and is written.
    let soon = (time::OffsetDateTime::now_utc() + time::Duration::hours(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let later = (time::OffsetDateTime::now_utc() + time::Duration::hours(2))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let mut scheduled = body(json!({"org_id": "acme"}), json!(60), json!(30));
    scheduled["effective_at"] = json!(soon);
    assert_eq!(app.write(scheduled).await.status, StatusCode::CREATED);
    let mut back = body(json!({"org_id": "acme"}), json!(30), json!(30));
    back["effective_at"] = json!(later);
    let back = app.write(back).await;
    assert_eq!((back.status, back.json["unchanged"].clone()), (StatusCode::CREATED, json!(false)), "{}", back.json);
    // Now (before either takes effect) 30 is stored at the org: unchanged.
    let now = app.write(body(json!({"org_id": "acme"}), json!(30), json!(30))).await;
    assert_eq!((now.status, now.json["unchanged"].clone()), (StatusCode::OK, json!(true)), "{}", now.json);
    assert_eq!(now.json["value_id"], pinned.json["value"]["id"]);
}

/// Each case: a body, the expected status and code.
async fn assert_refused(app: &TestApp, request: reqwest::RequestBuilder, status: StatusCode, code: &str) {
    let before = app.counts().await;
    let reply = app.send(request).await;
    assert_eq!((reply.status, reply.code()), (status, code), "{}", reply.json);
    assert!(!reply.json["message"].as_str().unwrap_or("").is_empty(), "a refusal says why: {}", reply.json);
    assert!(reply.json["details"].is_object(), "details is an object: {}", reply.json);
    assert_eq!(app.counts().await, before, "a refused write ({code}) wrote nothing");
    let refused = app.refused_codes().await;
    assert_eq!(refused.last().map(String::as_str), Some(code), "the refusal is audited with its code");
}

#[sqlx::test]
async fn every_invalid_body_is_refused_with_its_code_and_writes_nothing(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let url = format!("{}/api/v1/admin/policy-values", app.base);
    let past = (time::OffsetDateTime::now_utc() - time::Duration::minutes(2))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let org = json!({"org_id": "acme"});
    let with = |f: &dyn Fn(&mut Json)| {
        let mut b = body(org.clone(), json!(45), json!(30));
        f(&mut b);
        b
    };
    let cases: Vec<(Json, StatusCode, &str)> = vec![
        (with(&|b| b["key"] = json!("allocation.no_such_key")), StatusCode::UNPROCESSABLE_ENTITY, "unknown_key"),
        (with(&|b| b["value"] = json!("45")), StatusCode::UNPROCESSABLE_ENTITY, "type_mismatch"),
        (with(&|b| b["value"] = json!(45.5)), StatusCode::UNPROCESSABLE_ENTITY, "type_mismatch"),
        (with(&|b| b["value"] = json!(366)), StatusCode::UNPROCESSABLE_ENTITY, "out_of_bounds"),
        (with(&|b| b["value"] = json!(-1)), StatusCode::UNPROCESSABLE_ENTITY, "out_of_bounds"),
        (
            with(&|b| b["scope"] = json!({"org_id": "a", "user_id": "b"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_scope",
        ),
        (with(&|b| b["scope"] = json!({"team_id": "a"})), StatusCode::UNPROCESSABLE_ENTITY, "invalid_scope"),
        (with(&|b| b["scope"] = json!({"org_id": ""})), StatusCode::UNPROCESSABLE_ENTITY, "invalid_scope"),
        (with(&|b| b["scope"] = json!("acme")), StatusCode::UNPROCESSABLE_ENTITY, "invalid_scope"),
        (
            with(&|b| {
                b.as_object_mut().unwrap().remove("scope");
            }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_scope",
        ),
        (
            with(&|b| {
                b.as_object_mut().unwrap().remove("reason");
            }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_reason",
        ),
        (with(&|b| b["reason"] = json!("   ")), StatusCode::UNPROCESSABLE_ENTITY, "invalid_reason"),
        (with(&|b| b["reason"] = json!("x".repeat(1001))), StatusCode::UNPROCESSABLE_ENTITY, "invalid_reason"),
        (with(&|b| b["effective_at"] = json!(past.clone())), StatusCode::UNPROCESSABLE_ENTITY, "effective_at_in_past"),
        (with(&|b| b["effective_at"] = json!("next tuesday")), StatusCode::UNPROCESSABLE_ENTITY, "invalid_time"),
        (with(&|b| b["old_value"] = json!(31)), StatusCode::CONFLICT, "stale_old_value"),
        (with(&|b| b["old_value"] = json!("30")), StatusCode::UNPROCESSABLE_ENTITY, "type_mismatch"),
        (
            with(&|b| {
                b.as_object_mut().unwrap().remove("old_value");
            }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "missing_field",
        ),
        (
            with(&|b| {
                b.as_object_mut().unwrap().remove("value");
            }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "missing_field",
        ),
        (
            with(&|b| b["efective_at"] = json!("2030-01-01T00:00:00Z")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (json!([1, 2]), StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
    ];
    for (b, status, code) in cases {
        assert_refused(&app, app.http.post(&url).bearer_auth(&app.admin).json(&b), status, code).await;
    }
    let enum_body = json!({"key": "allocation.isolation_model", "scope": {}, "value": "none",
                           "reason": "r", "old_value": "user-revoke"});
    let req = app.http.post(&url).bearer_auth(&app.admin).json(&enum_body);
    assert_refused(&app, req, StatusCode::UNPROCESSABLE_ENTITY, "out_of_bounds").await;

    let raw = |text: String| {
        app.http.post(&url).bearer_auth(&app.admin).header("content-type", "application/json").body(text)
    };
    assert_refused(&app, raw("{\"key\": ".into()), StatusCode::BAD_REQUEST, "malformed_json").await;
    let huge = json!({"key": KEY, "scope": {}, "value": 1, "old_value": 30, "reason": "x".repeat(70 * 1024)});
    assert_refused(&app, raw(huge.to_string()), StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    let plain = app.http.post(&url).bearer_auth(&app.admin).body(body(org.clone(), json!(45), json!(30)).to_string());
    assert_refused(&app, plain, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type").await;
}

#[sqlx::test]
async fn of_64_concurrent_writers_with_the_same_old_value_exactly_one_wins(pool: PgPool) {
    let app = std::sync::Arc::new(TestApp::spawn(pool).await);
    let writers = (0..64).map(|i| {
        let app = app.clone();
        tokio::spawn(async move { app.write(body(json!({"org_id": "acme"}), json!(100 + i), json!(30))).await })
    });
    let mut created = Vec::new();
    let mut conflicts = 0;
    for writer in writers {
        let reply = writer.await.unwrap();
        match reply.status {
            StatusCode::CREATED => created.push(reply.json["value"]["value"].clone()),
            StatusCode::CONFLICT => {
                assert_eq!(reply.code(), "stale_old_value");
                conflicts += 1;
            }
            other => panic!("unexpected {other}: {}", reply.json),
        }
    }
    assert_eq!((created.len(), conflicts), (1, 63));
    assert_eq!(app.resolve(KEY, "org_id=acme").await, created[0]);
    assert_eq!(app.counts().await.0, 1, "one value row");
}

#[sqlx::test]
async fn a_scheduled_change_takes_effect_at_its_time_and_can_be_cancelled_before(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let rfc = |t: time::OffsetDateTime| t.format(&time::format_description::well_known::Rfc3339).unwrap();
    let when = time::OffsetDateTime::now_utc() + time::Duration::days(30);
    let mut b = body(json!({"org_id": "acme"}), json!(45), json!(30));
    b["effective_at"] = json!(rfc(when));
    let scheduled = app.write(b).await;
    assert_eq!(scheduled.status, StatusCode::CREATED, "{}", scheduled.json);
    let id = scheduled.json["value"]["id"].as_str().unwrap().to_string();

    assert_eq!(app.resolve(KEY, "org_id=acme").await, json!(30));
    let at = |t: time::OffsetDateTime| format!("org_id=acme&at={}", rfc(t).replace(':', "%3A").replace('+', "%2B"));
    assert_eq!(app.resolve(KEY, &at(when)).await, json!(45));
    assert_eq!(app.resolve(KEY, &at(when - time::Duration::SECOND)).await, json!(30));

    let listed = app.get(&format!("/api/v1/admin/policy-values?key={KEY}"), &app.auditor).await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.json["overrides"][0]["scope"], json!({"org_id": "acme"}));
    assert_eq!(listed.json["overrides"][0]["current"], Json::Null);
    assert_eq!(listed.json["overrides"][0]["scheduled"][0]["id"], json!(id));

    let cancel_path = format!("/api/v1/admin/policy-values/{id}/cancel");
    let no_reason = app.post(&cancel_path, &app.admin, &json!({})).await;
    assert_eq!(no_reason.code(), "invalid_reason");
    let cancelled = app.post(&cancel_path, &app.admin, &json!({"reason": "customer withdrew"})).await;
    assert_eq!(cancelled.status, StatusCode::OK, "{}", cancelled.json);
    assert_eq!(cancelled.json["value"]["kind"], "cancel");
    assert_eq!(app.resolve(KEY, &at(when)).await, json!(30));
    let listed = app.get(&format!("/api/v1/admin/policy-values?key={KEY}"), &app.auditor).await;
    assert_eq!(listed.json["overrides"], json!([]));

    let before = app.counts().await;
    let twice = app.post(&cancel_path, &app.admin, &json!({"reason": "again"})).await;
    assert_eq!((twice.status, twice.code()), (StatusCode::CONFLICT, "already_cancelled"));
    let unknown = app
        .post(
            &format!("/api/v1/admin/policy-values/{}/cancel", uuid::Uuid::new_v4()),
            &app.admin,
            &json!({"reason": "r"}),
        )
        .await;
    assert_eq!((unknown.status, unknown.code()), (StatusCode::NOT_FOUND, "not_found"));
    let now_row = app.write(body(json!({"org_id": "acme"}), json!(40), json!(30))).await;
    let before_in_effect = app.counts().await;
    let in_effect = now_row.json["value"]["id"].as_str().unwrap();
    let late =
        app.post(&format!("/api/v1/admin/policy-values/{in_effect}/cancel"), &app.admin, &json!({"reason": "r"})).await;
    assert_eq!((late.status, late.code()), (StatusCode::CONFLICT, "not_scheduled"));
    assert_eq!(app.counts().await, before_in_effect);
    assert_eq!(before.0 + 1, before_in_effect.0, "only the immediate write added a row");
}

#[sqlx::test]
async fn an_effective_at_within_the_skew_tolerance_is_taken_as_now(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let sent = time::OffsetDateTime::now_utc() - time::Duration::seconds(20);
    let mut b = body(json!({"org_id": "acme"}), json!(45), json!(30));
    b["effective_at"] = json!(sent.format(&time::format_description::well_known::Rfc3339).unwrap());
    let reply = app.write(b).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.json);
    let stored = time::OffsetDateTime::parse(
        reply.json["value"]["effective_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert!(stored > sent + time::Duration::seconds(10), "stored {stored} is now, not the sent {sent}");
}

#[sqlx::test]
async fn the_database_refuses_a_value_outside_its_bounds_even_from_a_stale_catalog(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let mut conn = app.pool.acquire().await.unwrap();
    let at = time::OffsetDateTime::now_utc();
    let level = policy_values::domain::Level::Org;
    let over =
        policy_values::store::values::append_row(&mut conn, KEY, level, "acme", Some(json!(366)), at, "me", "r").await;
    assert!(matches!(over, Err(policy_values::store::StoreError::OutOfBounds(_))), "{over:?}");
    let typed =
        policy_values::store::values::append_row(&mut conn, KEY, level, "acme", Some(json!("30")), at, "me", "r").await;
    assert!(matches!(typed, Err(policy_values::store::StoreError::OutOfBounds(_))), "{typed:?}");
    let enumerated = policy_values::store::values::append_row(
        &mut conn,
        "allocation.isolation_model",
        level,
        "acme",
        Some(json!("none")),
        at,
        "me",
        "r",
    )
    .await;
    assert!(matches!(enumerated, Err(policy_values::store::StoreError::OutOfBounds(_))), "{enumerated:?}");
    assert_eq!(app.counts().await.0, 0);
}

#[sqlx::test]
async fn field_rules_answer_422_naming_every_failing_field_and_rule(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let mut bad = body(json!({"org_id": "acme"}), json!(45), json!(30));
    bad["reason"] = json!(format!("{}\u{1b}", "x".repeat(1000)));
    // The preview runs the same field rules as the write.
    let preview = app.post("/api/v1/admin/policy-values/preview", &app.admin, &bad).await;
    assert_eq!((preview.status, preview.code()), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_reason"));
    assert_eq!(preview.json["details"]["errors"].as_array().map(Vec::len), Some(2), "{}", preview.json);
    let reply = app.write(bad).await;
    assert_eq!((reply.status, reply.code()), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_reason"));
    let errors = &reply.json["details"]["errors"];
    let rules: Vec<(&str, &str)> = errors
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["field"].as_str().unwrap(), e["rule"].as_str().unwrap()))
        .collect();
    assert_eq!(rules.len(), 2, "{errors}");
    assert!(rules.contains(&("reason", "length")), "{errors}");
    assert!(rules.contains(&("reason", "no_control_characters")), "{errors}");
    let length = errors.as_array().unwrap().iter().find(|e| e["rule"] == "length").unwrap();
    assert_eq!(length["params"], json!({"min": 1, "max": 1000}));
    assert_eq!(reply.json["details"]["field"], "reason");

    let audit = app.get("/api/v1/admin/audit-logs?limit=0&actor=a%07b", &app.auditor).await;
    assert_eq!((audit.status, audit.code()), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_query"));
    let fields: Vec<(&str, &str)> = audit.json["details"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["field"].as_str().unwrap(), e["rule"].as_str().unwrap()))
        .collect();
    assert_eq!(fields, [("actor", "no_control_characters"), ("limit", "range")]);
    assert_eq!(app.counts().await.0, 0, "nothing written");
}
