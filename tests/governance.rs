//! Governance over real HTTP and a real PostgreSQL: change requests for
//! keys that need approval (four eyes, conflicts, scheduling, rejection,
//! withdrawal, expiry), tokens limited to keys and levels, and previews.

mod common;

use common::{create_token, eventually, options_of, TestApp};
use policy_values::domain::{Bounds, Catalog, KeyDef, PolicyKey, Scope, Value, ValueType};
use policy_values::store::{keys, tokens, tokens::Role};
use policy_values::PolicyClient;
use reqwest::StatusCode;
use serde_json::{json, Value as Json};
use sqlx::PgPool;

const REQUESTS: &str = "/api/v1/admin/change-requests";
const DEPOSIT: &str = "billing.minimum_deposit_minor";

fn write(key: &str, scope: Json, value: Json, old_value: Json) -> Json {
    json!({ "key": key, "scope": scope, "value": value, "reason": "finance asked", "old_value": old_value })
}

async fn decide(app: &TestApp, token: &str, id: &Json, verb: &str) -> common::Reply {
    let id = id.as_str().unwrap();
    app.post(&format!("{REQUESTS}/{id}/{verb}"), token, &json!({ "reason": format!("{verb}: looked at it") })).await
}

/// The actions of the audit records naming change request `id`, oldest first.
async fn transitions(app: &TestApp, id: &Json) -> Vec<String> {
    sqlx::query_scalar(
        "select action from audit_logs where metadata->>'change_request_id' = $1 and outcome = 'success' order by seq",
    )
    .bind(id.as_str().unwrap())
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

async fn value_rows(app: &TestApp) -> i64 {
    sqlx::query_scalar("select count(*) from policy_values").fetch_one(&app.pool).await.unwrap()
}

#[sqlx::test]
async fn the_catalog_shows_which_keys_need_approval(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let reply = app.get("/api/v1/policy-keys", &app.reader).await;
    let needs = |key: &str| {
        reply.json["keys"].as_array().unwrap().iter().find(|k| k["key"] == key).unwrap()["approvals_required"].clone()
    };
    assert_eq!(needs("maas.enabled"), json!(1));
    assert_eq!(needs(DEPOSIT), json!(1));
    assert_eq!(needs("billing.maximum_deposit_minor"), json!(1));
    assert_eq!(needs("auth.service_account_token_ttl_seconds"), json!(1));
    assert_eq!(needs("allocation.refund_window_days"), json!(0));
    // The bootstrap carries it to fleet clients too.
    let replica = app.get("/api/v1/replica", &app.reader).await;
    assert!(replica.json.to_string().contains("\"approvals_required\":1"), "{}", replica.json);
}

#[sqlx::test]
async fn a_sensitive_write_waits_for_another_admins_approval_then_applies_and_is_audited(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let bob = create_token(&app.pool, Role::Admin, "bob-admin").await;
    let client = PolicyClient::builder().connect_options(options_of(&app.pool)).connect().await.unwrap();
    let rows = value_rows(&app).await;

    let proposed = app.write(write("maas.enabled", json!({"plan": "pro"}), json!(true), json!(false))).await;
    assert_eq!(proposed.status, StatusCode::ACCEPTED, "{}", proposed.json);
    let request = &proposed.json;
    assert_eq!((request["state"].as_str(), request["author"].as_str()), (Some("pending"), Some("alice-admin")));
    assert_eq!((request["value"].clone(), request["scope"].clone()), (json!(true), json!({"plan": "pro"})));
    assert_eq!(value_rows(&app).await, rows, "a pending request writes no value");
    assert_eq!(app.resolve("maas.enabled", "plan=pro").await, json!(false));

    let own = decide(&app, &app.admin, &request["id"], "approve").await;
    assert_eq!((own.status, own.code()), (StatusCode::FORBIDDEN, "self_approval"));
    assert_eq!(value_rows(&app).await, rows);

    let approved = decide(&app, &bob, &request["id"], "approve").await;
    assert_eq!(approved.status, StatusCode::OK, "{}", approved.json);
    assert_eq!(approved.json["state"], "applied");
    assert_eq!(approved.json["approvals"][0]["approver"], "bob-admin");
    assert_eq!(value_rows(&app).await, rows + 1);
    assert_eq!(app.resolve("maas.enabled", "plan=pro").await, json!(true));
    eventually("the running client sees the approved change", || async {
        client.get_bool(&Scope::new().plan("pro"), "maas.enabled") == Ok(true)
    })
    .await;

    let shown = app.get(&format!("{REQUESTS}/{}", request["id"].as_str().unwrap()), &app.auditor).await;
    assert_eq!((shown.status, shown.json["state"].as_str()), (StatusCode::OK, Some("applied")));
    assert_eq!(
        transitions(&app, &request["id"]).await,
        ["change_request.created", "change_request.approved", "policy_value.set", "change_request.applied"]
    );
    let (actor, metadata): (String, Json) = sqlx::query_as(
        "select actor, metadata from audit_logs where action = 'policy_value.set' and metadata->>'change_request_id' = $1",
    )
    .bind(request["id"].as_str().unwrap())
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!((actor.as_str(), metadata["approvers"].clone()), ("alice-admin", json!(["bob-admin"])));
    let verify = app.get("/api/v1/admin/audit-logs/verify", &app.auditor).await;
    assert_eq!(verify.json["status"], "intact", "{}", verify.json);
}

#[sqlx::test]
async fn a_key_needing_two_approvals_applies_only_at_the_second_distinct_approver(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let def = KeyDef {
        key: PolicyKey::parse("payout.daily_limit_minor").unwrap(),
        value_type: ValueType::Int,
        default: Value::Int(100),
        bounds: Bounds::Int { min: 0, max: 10_000 },
        description: "two approvals".into(),
        unit: String::new(),
        fail_closed: false,
        approvals_required: 2,
    };
    let mut catalog = Catalog::builtin().unwrap();
    catalog.keys.push(def);
    keys::sync(&app.pool, &catalog, "catalog-sync", "two approvals").await.unwrap();
    // The server's replica follows catalog changes; reads of the new key
    // answer once it has.
    let path = "/api/v1/policy-values/resolve?key=payout.daily_limit_minor&org_id=a";
    eventually("the server knows the new key", || async { app.get(path, &app.reader).await.status == StatusCode::OK })
        .await;
    let bob = create_token(&app.pool, Role::Admin, "bob-admin").await;
    let carol = create_token(&app.pool, Role::Admin, "carol-admin").await;

    let proposed = app.write(write("payout.daily_limit_minor", json!({}), json!(500), json!(100))).await;
    assert_eq!((proposed.status, proposed.json["approvals_required"].clone()), (StatusCode::ACCEPTED, json!(2)));
    let id = &proposed.json["id"];
    let first = decide(&app, &bob, id, "approve").await;
    assert_eq!((first.status, first.json["state"].as_str()), (StatusCode::OK, Some("pending")));
    let again = decide(&app, &bob, id, "approve").await;
    assert_eq!((again.status, again.code()), (StatusCode::CONFLICT, "already_approved"));
    assert_eq!(app.resolve("payout.daily_limit_minor", "org_id=a").await, json!(100));
    let second = decide(&app, &carol, id, "approve").await;
    assert_eq!((second.status, second.json["state"].as_str()), (StatusCode::OK, Some("applied")), "{}", second.json);
    let approvers: Vec<&str> =
        second.json["approvals"].as_array().unwrap().iter().map(|a| a["approver"].as_str().unwrap()).collect();
    assert_eq!(approvers, ["bob-admin", "carol-admin"]);
    assert_eq!(app.resolve("payout.daily_limit_minor", "org_id=a").await, json!(500));
}

#[sqlx::test]
async fn of_two_requests_from_the_same_old_value_the_second_conflicts_and_writes_nothing(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let bob = create_token(&app.pool, Role::Admin, "bob-admin").await;
    let first = app.write(write(DEPOSIT, json!({"org_id": "acme"}), json!(2000), json!(1000))).await;
    let second = app.write(write(DEPOSIT, json!({"org_id": "acme"}), json!(3000), json!(1000))).await;
    assert_eq!((first.status, second.status), (StatusCode::ACCEPTED, StatusCode::ACCEPTED));
    assert_eq!(decide(&app, &bob, &first.json["id"], "approve").await.json["state"], "applied");

    let rows = value_rows(&app).await;
    let stale = decide(&app, &bob, &second.json["id"], "approve").await;
    assert_eq!((stale.status, stale.code()), (StatusCode::CONFLICT, "stale_old_value"), "{}", stale.json);
    assert_eq!(stale.json["details"]["current_value"], json!(2000));
    assert_eq!(stale.json["details"]["change_request"]["state"], "conflicted");
    assert_eq!(value_rows(&app).await, rows, "a conflicted request writes no value");
    assert_eq!(app.resolve(DEPOSIT, "org_id=acme").await, json!(2000));
    let shown = app.get(&format!("{REQUESTS}/{}", second.json["id"].as_str().unwrap()), &app.admin).await;
    assert_eq!((shown.json["state"].as_str(), shown.json["current_value"].clone()), (Some("conflicted"), json!(2000)));
    assert_eq!(
        transitions(&app, &second.json["id"]).await,
        ["change_request.created", "change_request.approved", "change_request.conflicted"]
    );
    // Final: a conflicted request cannot be approved again.
    let carol = create_token(&app.pool, Role::Admin, "carol-admin").await;
    let later = decide(&app, &carol, &second.json["id"], "approve").await;
    assert_eq!((later.status, later.code()), (StatusCode::CONFLICT, "not_pending"));
}

#[sqlx::test]
async fn a_request_made_stale_before_approval_is_refused_at_creation_too(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let stale = app.write(write(DEPOSIT, json!({}), json!(2000), json!(999))).await;
    assert_eq!((stale.status, stale.code()), (StatusCode::CONFLICT, "stale_old_value"));
    let bounds = app.write(write(DEPOSIT, json!({}), json!(5), json!(1000))).await;
    assert_eq!((bounds.status, bounds.code()), (StatusCode::UNPROCESSABLE_ENTITY, "out_of_bounds"));
    let none: i64 = sqlx::query_scalar("select count(*) from change_requests").fetch_one(&app.pool).await.unwrap();
    assert_eq!(none, 0);
}

#[sqlx::test]
async fn a_scheduled_request_applies_at_its_time_and_stays_cancellable(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let bob = create_token(&app.pool, Role::Admin, "bob-admin").await;
    let rfc = |t: time::OffsetDateTime| t.format(&time::format_description::well_known::Rfc3339).unwrap();
    let at = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
    let mut body = write(DEPOSIT, json!({}), json!(2500), json!(1000));
    body["effective_at"] = json!(rfc(at));
    let proposed = app.write(body).await;
    assert_eq!(proposed.status, StatusCode::ACCEPTED, "{}", proposed.json);
    let approved = decide(&app, &bob, &proposed.json["id"], "approve").await;
    assert_eq!(approved.json["state"], "scheduled", "{}", approved.json);
    assert_eq!(app.resolve(DEPOSIT, "org_id=a").await, json!(1000));
    let later = rfc(at + time::Duration::minutes(1));
    let reply = app.get(&format!("/api/v1/policy-values/resolve?key={DEPOSIT}&at={later}"), &app.reader).await;
    assert_eq!(reply.json["value"], json!(2500), "{}", reply.json);

    let value_id = approved.json["value_id"].as_str().unwrap();
    let cancel = app
        .post(&format!("/api/v1/admin/policy-values/{value_id}/cancel"), &app.admin, &json!({"reason": "not yet"}))
        .await;
    assert_eq!(cancel.status, StatusCode::OK, "{}", cancel.json);
    let reply = app.get(&format!("/api/v1/policy-values/resolve?key={DEPOSIT}&at={later}"), &app.reader).await;
    assert_eq!(reply.json["value"], json!(1000));
}

#[sqlx::test]
async fn rejection_withdrawal_and_expiry_write_nothing_but_their_audit_record(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let bob = create_token(&app.pool, Role::Admin, "bob-admin").await;
    let propose = |value: i64| app.write(write(DEPOSIT, json!({"user_id": "u1"}), json!(value), json!(1000)));
    let (rejected, withdrawn, expiring) = (propose(1100).await, propose(1200).await, propose(1300).await);
    let rows = value_rows(&app).await;

    let reply = decide(&app, &bob, &rejected.json["id"], "reject").await;
    assert_eq!((reply.status, reply.json["state"].as_str()), (StatusCode::OK, Some("rejected")));
    assert_eq!(reply.json["decided_by"], "bob-admin");
    let not_yours = decide(&app, &bob, &withdrawn.json["id"], "withdraw").await;
    assert_eq!((not_yours.status, not_yours.code()), (StatusCode::FORBIDDEN, "not_author"));
    let reply = decide(&app, &app.admin, &withdrawn.json["id"], "withdraw").await;
    assert_eq!((reply.status, reply.json["state"].as_str()), (StatusCode::OK, Some("withdrawn")));

    sqlx::query("update change_requests set expires_at = now() - interval '1 second' where id = $1::uuid")
        .bind(expiring.json["id"].as_str().unwrap())
        .execute(&app.pool)
        .await
        .unwrap();
    let pending = app.get(&format!("{REQUESTS}?state=pending"), &app.auditor).await;
    assert_eq!(pending.json["change_requests"], json!([]), "the expired one is no longer pending");
    let expired = app.get(&format!("{REQUESTS}?state=expired"), &app.auditor).await;
    assert_eq!(expired.json["change_requests"][0]["id"], expiring.json["id"]);
    let late = decide(&app, &bob, &expiring.json["id"], "approve").await;
    assert_eq!(
        (late.status, late.code(), late.json["details"]["state"].as_str()),
        (StatusCode::CONFLICT, "not_pending", Some("expired"))
    );

    assert_eq!(value_rows(&app).await, rows, "none of them wrote a value");
    assert_eq!(transitions(&app, &rejected.json["id"]).await, ["change_request.created", "change_request.rejected"]);
    assert_eq!(transitions(&app, &withdrawn.json["id"]).await, ["change_request.created", "change_request.withdrawn"]);
    assert_eq!(transitions(&app, &expiring.json["id"]).await, ["change_request.created", "change_request.expired"]);
    let expiry_actor: String =
        sqlx::query_scalar("select actor from audit_logs where action = 'change_request.expired'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(expiry_actor, "policy-values");
}

#[sqlx::test]
async fn requests_are_listed_newest_first_filtered_and_paged_and_cannot_be_edited(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let bob = create_token(&app.pool, Role::Admin, "bob-admin").await;
    let mut ids = Vec::new();
    for (i, token) in [&app.admin, &bob, &app.admin].into_iter().enumerate() {
        let body = write(DEPOSIT, json!({"org_id": format!("o{i}")}), json!(2000 + i as i64), json!(1000));
        ids.push(app.post("/api/v1/admin/policy-values", token, &body).await.json["id"].clone());
    }
    let page = app.get(&format!("{REQUESTS}?limit=2"), &app.admin).await;
    let listed: Vec<Json> = page.json["change_requests"].as_array().unwrap().iter().map(|r| r["id"].clone()).collect();
    assert_eq!(listed, [ids[2].clone(), ids[1].clone()]);
    let before = page.json["next_before"].as_i64().unwrap();
    let rest = app.get(&format!("{REQUESTS}?limit=2&before={before}"), &app.admin).await;
    assert_eq!(rest.json["change_requests"][0]["id"], ids[0]);
    assert_eq!(rest.json["next_before"], Json::Null);
    let bobs = app.get(&format!("{REQUESTS}?author=bob-admin&key={DEPOSIT}"), &app.admin).await;
    assert_eq!(bobs.json["change_requests"].as_array().unwrap().len(), 1);
    let bad = app.get(&format!("{REQUESTS}?state=maybe"), &app.admin).await;
    assert_eq!((bad.status, bad.code()), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_state"));
    // A filter with a control character (a NUL made PostgreSQL fail the
    // query: a 500, found by make schemathesis) is refused in words.
    for query in ["author=bob%00", "key=billing%1F", "author=b%C2%99"] {
        let bad = app.get(&format!("{REQUESTS}?{query}"), &app.admin).await;
        assert_eq!((bad.status, bad.code()), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_query"), "{query}");
        assert!(bad.json["message"].as_str().unwrap().contains("control characters"), "{query}: {}", bad.json);
    }
    let missing = app.get(&format!("{REQUESTS}/{}", uuid::Uuid::new_v4()), &app.admin).await;
    assert_eq!((missing.status, missing.code()), (StatusCode::NOT_FOUND, "not_found"));

    // Approvals are tied to exactly what was approved: content is immutable.
    let edit = sqlx::query("update change_requests set value = '9999' where id = $1::uuid")
        .bind(ids[0].as_str().unwrap())
        .execute(&app.pool)
        .await
        .unwrap_err();
    assert!(edit.to_string().contains("cannot be edited"), "{edit}");
}

async fn limited(app: &TestApp, name: &str, keys: &[&str], levels: &[&str]) -> String {
    let token = policy_values::server::auth::generate_token().unwrap();
    let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    let levels: Vec<String> = levels.iter().map(|l| l.to_string()).collect();
    tokens::insert_limited(&app.pool, name, Role::Admin, &token, None, Some(&keys), Some(&levels)).await.unwrap();
    token
}

#[sqlx::test]
async fn limited_tokens_write_approve_and_preview_only_their_keys_and_levels(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let billing = limited(&app, "bea-billing", &["billing.*"], &["org", "user"]).await;
    let refunds = limited(&app, "rui-refunds", &["allocation.refund_window_days"], &["user"]).await;
    const WRITE: &str = "/api/v1/admin/policy-values";
    const PREVIEW: &str = "/api/v1/admin/policy-values/preview";
    let refund = |scope: Json| write("allocation.refund_window_days", scope, json!(40), json!(30));
    let deposit = |scope: Json| write(DEPOSIT, scope, json!(2000), json!(1000));

    // Writes: inside the limits they go through (a request for a sensitive key).
    assert_eq!(app.post(WRITE, &billing, &deposit(json!({"org_id": "acme"}))).await.status, StatusCode::ACCEPTED);
    assert_eq!(app.post(WRITE, &refunds, &refund(json!({"user_id": "u1"}))).await.status, StatusCode::CREATED);
    let before = app.counts().await;
    for (token, body) in [
        (&billing, deposit(json!({}))),
        (&billing, refund(json!({"org_id": "acme"}))),
        (&refunds, refund(json!({"org_id": "acme"}))),
        (&refunds, deposit(json!({"user_id": "u2"}))),
    ] {
        let reply = app.post(WRITE, token, &body).await;
        assert_eq!((reply.status, reply.code()), (StatusCode::FORBIDDEN, "out_of_scope"), "{body}");
        assert_eq!(app.refused_codes().await.last().map(String::as_str), Some("out_of_scope"));
    }
    assert_eq!(app.counts().await, before, "out-of-scope writes wrote nothing");

    // Approvals: only of requests for their keys and levels.
    let in_scope = app.write(deposit(json!({"user_id": "u3"}))).await;
    let out_of_scope = app.write(write("maas.enabled", json!({"org_id": "acme"}), json!(true), json!(false))).await;
    let refused = decide(&app, &billing, &out_of_scope.json["id"], "approve").await;
    assert_eq!((refused.status, refused.code()), (StatusCode::FORBIDDEN, "out_of_scope"));
    let global = app.write(deposit(json!({}))).await;
    assert_eq!(decide(&app, &billing, &global.json["id"], "approve").await.code(), "out_of_scope");
    let approved = decide(&app, &billing, &in_scope.json["id"], "approve").await;
    assert_eq!((approved.status, approved.json["state"].as_str()), (StatusCode::OK, Some("applied")));
    assert_eq!(app.resolve(DEPOSIT, "user_id=u3").await, json!(2000));

    // Previews: the same limits.
    assert_eq!(app.post(PREVIEW, &billing, &deposit(json!({"org_id": "x"}))).await.status, StatusCode::OK);
    assert_eq!(app.post(PREVIEW, &billing, &deposit(json!({}))).await.code(), "out_of_scope");
    assert_eq!(app.post(PREVIEW, &refunds, &refund(json!({"plan": "pro"}))).await.code(), "out_of_scope");
    assert_eq!(app.post(PREVIEW, &refunds, &refund(json!({"user_id": "u9"}))).await.status, StatusCode::OK);
    // Cancelling a scheduled change: the same limits.
    let mut later = refund(json!({"org_id": "acme"}));
    later["effective_at"] = json!("2099-01-01T00:00:00Z");
    let scheduled = app.write(later).await;
    let path = format!("/api/v1/admin/policy-values/{}/cancel", scheduled.json["value"]["id"].as_str().unwrap());
    let cancel = app.post(&path, &refunds, &json!({"reason": "no"})).await;
    assert_eq!((cancel.status, cancel.code()), (StatusCode::FORBIDDEN, "out_of_scope"));
    assert_eq!(app.post(&path, &app.admin, &json!({"reason": "no"})).await.status, StatusCode::OK);
    // Unlimited tokens behave as before.
    assert_eq!(app.write(refund(json!({"org_id": "acme"}))).await.status, StatusCode::CREATED);
}

/// Rows of every table of the schema, by name.
async fn every_table(pool: &PgPool) -> Vec<(String, i64)> {
    let tables: Vec<String> =
        sqlx::query_scalar("select tablename::text from pg_tables where schemaname = 'public' order by 1")
            .fetch_all(pool)
            .await
            .unwrap();
    let mut counts = Vec::new();
    for table in tables {
        let n: i64 = sqlx::query_scalar(&format!("select count(*) from {table}")).fetch_one(pool).await.unwrap();
        counts.push((table, n));
    }
    counts
}

#[sqlx::test]
async fn a_preview_answers_before_after_and_the_shadowing_overrides_and_writes_nothing(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let key = "allocation.refund_window_days";
    for (scope, value, old) in [
        (json!({}), 40, 30),
        (json!({"org_id": "acme"}), 45, 40),
        (json!({"user_id": "u1"}), 7, 40),
        (json!({"user_id": "u2"}), 8, 40),
        (json!({"project_id": "p1"}), 9, 40),
        (json!({"plan": "pro"}), 11, 40),
    ] {
        assert_eq!(app.write(write(key, scope, json!(value), json!(old))).await.status, StatusCode::CREATED);
    }
    let tables = every_table(&app.pool).await;
    let app = &app;
    let preview = |body: Json| async move { app.post("/api/v1/admin/policy-values/preview", &app.admin, &body).await };

    let org = preview(write(key, json!({"org_id": "acme"}), json!(60), json!(45))).await;
    assert_eq!(org.status, StatusCode::OK, "{}", org.json);
    assert_eq!(
        (org.json["outcome"].as_str(), org.json["before"].clone(), org.json["after"].clone()),
        (Some("written"), json!(45), json!(60))
    );
    assert_eq!(org.json["shadowed_by"]["total"], json!(3));
    assert_eq!(org.json["shadowed_by"]["by_level"], json!({"project": 1, "user": 2}));
    assert_eq!(
        org.json["shadowed_by"]["first"],
        json!([{"level": "user", "scope_id": "u1", "value": 7}, {"level": "user", "scope_id": "u2", "value": 8},
               {"level": "project", "scope_id": "p1", "value": 9}])
    );
    let global = preview(write(key, json!({}), Json::Null, json!(40))).await;
    assert_eq!((global.json["before"].clone(), global.json["after"].clone()), (json!(40), json!(30)));
    assert_eq!(global.json["shadowed_by"]["total"], json!(5));
    let unset_org = preview(write(key, json!({"org_id": "acme"}), Json::Null, json!(45))).await;
    assert_eq!(unset_org.json["after"], json!(40), "the org falls back to the global value");
    let sensitive = preview(write(DEPOSIT, json!({}), json!(2000), json!(1000))).await;
    assert_eq!(
        (sensitive.json["outcome"].as_str(), sensitive.json["approvals_required"].clone()),
        (Some("change_request"), json!(1))
    );

    for (body, status, code) in [
        (write(key, json!({"org_id": "acme"}), json!(60), json!(44)), StatusCode::CONFLICT, "stale_old_value"),
        (write(key, json!({"org_id": "new"}), Json::Null, json!(40)), StatusCode::CONFLICT, "not_overridden"),
        (
            write(key, json!({"org_id": "acme"}), json!(999), json!(45)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "out_of_bounds",
        ),
        (write("no.such_key", json!({}), json!(1), json!(1)), StatusCode::UNPROCESSABLE_ENTITY, "unknown_key"),
    ] {
        let reply = preview(body).await;
        assert_eq!((reply.status, reply.code()), (status, code), "{}", reply.json);
    }
    let reader =
        app.post("/api/v1/admin/policy-values/preview", &app.reader, &write(key, json!({}), json!(1), json!(40))).await;
    assert_eq!(reader.status, StatusCode::FORBIDDEN);
    assert_eq!(every_table(&app.pool).await, tables, "previews wrote no row of any table, audit included");
}

#[sqlx::test]
async fn a_write_that_would_change_nothing_previews_as_unchanged_and_opens_no_change_request(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let bob = create_token(&app.pool, Role::Admin, "bob-admin").await;
    let key = "allocation.refund_window_days";
    assert_eq!(
        app.write(write(key, json!({"org_id": "acme"}), json!(45), json!(30))).await.status,
        StatusCode::CREATED
    );
    // A key that needs approval, with a value stored at plan pro.
    let proposed = app.write(write("maas.enabled", json!({"plan": "pro"}), json!(true), json!(false))).await;
    assert_eq!(proposed.status, StatusCode::ACCEPTED, "{}", proposed.json);
    let approved = decide(&app, &bob, &proposed.json["id"], "approve").await;
    assert_eq!(approved.json["state"], "applied", "{}", approved.json);
    let tables = every_table(&app.pool).await;
    let app = &app;
    let preview = |body: Json| async move { app.post("/api/v1/admin/policy-values/preview", &app.admin, &body).await };

    // The value already stored at the org: the preview says what the write
    // answers (200 unchanged), not "written".
    let same = preview(write(key, json!({"org_id": "acme"}), json!(45), json!(45))).await;
    assert_eq!(same.status, StatusCode::OK, "{}", same.json);
    assert_eq!(
        (same.json["outcome"].as_str(), same.json["before"].clone(), same.json["after"].clone()),
        (Some("unchanged"), json!(45), json!(45))
    );
    let written = app.write(write(key, json!({"org_id": "acme"}), json!(45), json!(45))).await;
    assert_eq!((written.status, written.json["unchanged"].clone()), (StatusCode::OK, json!(true)), "{}", written.json);
    // A value the org only inherits is a change: pinning it writes a row.
    let pin = preview(write(key, json!({"org_id": "other"}), json!(30), json!(30))).await;
    assert_eq!(pin.json["outcome"], "written", "{}", pin.json);

    // The sensitive key's stored value: nothing to approve, so no request.
    let sensitive = preview(write("maas.enabled", json!({"plan": "pro"}), json!(true), json!(true))).await;
    assert_eq!(sensitive.json["outcome"], "unchanged", "{}", sensitive.json);
    let again = app.write(write("maas.enabled", json!({"plan": "pro"}), json!(true), json!(true))).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.json);
    assert_eq!((again.json["unchanged"].clone(), again.json["value"].clone()), (json!(true), json!(true)));
    assert_eq!(again.json["value_id"], approved.json["value_id"], "names the row the approval wrote: {}", again.json);
    assert_eq!(every_table(&app.pool).await, tables, "no value row, change request or audit record");
    // A stale old_value is still refused (and audited as a refused
    // attempt), and a real change still waits for approval.
    let stale = app.write(write("maas.enabled", json!({"plan": "pro"}), json!(true), json!(false))).await;
    assert_eq!((stale.status, stale.code()), (StatusCode::CONFLICT, "stale_old_value"));
    let change = app.write(write("maas.enabled", json!({"plan": "pro"}), json!(false), json!(true))).await;
    assert_eq!(change.status, StatusCode::ACCEPTED, "{}", change.json);
}

/// The real binary, on a blocking thread so this test's server keeps answering.
async fn cli(app: &TestApp, token: &str, args: &[&str]) -> std::process::Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_policy-values"));
    command.args(args).env("POLICY_VALUES_URL", &app.base).env("POLICY_VALUES_TOKEN", token);
    command.env("DATABASE_URL", common::database_url_of(&app.pool));
    tokio::task::spawn_blocking(move || command.output().unwrap()).await.unwrap()
}

#[sqlx::test]
async fn the_cli_makes_lists_and_approves_requests_previews_and_creates_limited_tokens(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let bob = create_token(&app.pool, Role::Admin, "bob-admin").await;
    let text = |out: &std::process::Output| String::from_utf8_lossy(&out.stdout).into_owned();

    let set = cli(&app, &app.admin, &["set", "maas.enabled", "true", "--plan", "pro", "--reason", "pilot"]).await;
    assert!(set.status.success(), "{}", String::from_utf8_lossy(&set.stderr));
    let line = text(&set);
    assert!(line.starts_with("change request ") && line.contains(" pending: maas.enabled at plan pro"), "{line}");
    let id = line.split_whitespace().nth(2).unwrap().to_string();
    let list = cli(&app, &bob, &["requests", "list", "--state", "pending"]).await;
    assert!(text(&list).lines().nth(1).unwrap().starts_with(&id), "{}", text(&list));
    let approve = cli(&app, &bob, &["requests", "approve", &id, "--reason", "checked"]).await;
    assert!(text(&approve).contains(&format!("{id} applied")), "{}", text(&approve));
    assert_eq!(app.resolve("maas.enabled", "plan=pro").await, json!(true));

    let rows = value_rows(&app).await;
    let dry = cli(
        &app,
        &app.admin,
        &["set", "allocation.refund_window_days", "60", "--org", "acme", "--reason", "r", "--dry-run"],
    )
    .await;
    assert!(text(&dry).starts_with("dry run: allocation.refund_window_days"), "{}", text(&dry));
    assert!(text(&dry).contains("30 -> 60 would be written"), "{}", text(&dry));
    assert_eq!(value_rows(&app).await, rows);

    let create = cli(
        &app,
        &app.admin,
        &["token", "create", "--role", "admin", "--name", "bea", "--keys", "billing.*", "--levels", "org,user"],
    )
    .await;
    assert!(create.status.success(), "{}", String::from_utf8_lossy(&create.stderr));
    let token = text(&create).lines().last().unwrap().to_string();
    let refused =
        cli(&app, &token, &["set", "allocation.refund_window_days", "60", "--org", "a", "--reason", "r"]).await;
    assert!(String::from_utf8_lossy(&refused.stderr).contains("403 out_of_scope"));
    let list = cli(&app, &app.admin, &["token", "list"]).await;
    assert!(text(&list).contains("keys billing.* levels org,user"), "{}", text(&list));
}

#[sqlx::test]
async fn the_application_role_may_make_and_decide_requests_but_never_delete_them(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let proposed = app.write(write(DEPOSIT, json!({}), json!(2000), json!(1000))).await;
    let mut conn = app.pool.acquire().await.unwrap();
    sqlx::query("set role policy_values_app").execute(&mut *conn).await.unwrap();
    let check: String = sqlx::query_scalar(
        "select outcome from policy_values_check('billing.minimum_deposit_minor', 'global', '', '2000', null, '1000')",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    assert_eq!(check, "ok");
    sqlx::query("insert into change_request_approvals (request_id, approver, reason) values ($1::uuid, 'x', 'y')")
        .bind(proposed.json["id"].as_str().unwrap())
        .execute(&mut *conn)
        .await
        .unwrap();
    for statement in
        ["delete from change_requests", "delete from change_request_approvals", "truncate change_requests cascade"]
    {
        let err = sqlx::query(statement).execute(&mut *conn).await.unwrap_err();
        assert!(err.to_string().contains("permission denied"), "{statement}: {err}");
    }
    sqlx::query("reset role").execute(&mut *conn).await.unwrap();
    let err = sqlx::query("delete from change_requests").execute(&mut *conn).await.unwrap_err();
    assert!(err.to_string().contains("never deleted"), "{err}");
}
