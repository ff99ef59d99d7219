//! The auditors' API: query with filters and pagination, streamed export,
//! chain verification (against tampering by the database superuser), the
//! audit of refused attempts, point-in-time answers and per-scope history.

mod common;

use std::collections::HashSet;

use common::TestApp;
use reqwest::StatusCode;
use serde_json::{json, Value as Json};
use sqlx::PgPool;

const KEY: &str = "allocation.refund_window_days";

async fn write(app: &TestApp, scope: Json, value: i64, old: i64) -> Json {
    let body = json!({"key": KEY, "scope": scope, "value": value, "reason": "audit test", "old_value": old});
    let reply = app.write(body).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.json);
    reply.json
}

/// Ten writes over five orgs, so filters have something to tell apart.
async fn history_of_writes(app: &TestApp) {
    for i in 0..10i64 {
        let old = if i < 5 { 30 } else { 100 + i - 5 };
        write(app, json!({ "org_id": format!("org{}", i % 5) }), 100 + i, old).await;
    }
}

#[sqlx::test]
async fn filters_select_and_pages_cover_every_row_once(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    history_of_writes(&app).await;
    let org2 = app.get("/api/v1/admin/audit-logs?org_id=org2&action=policy_value.set", &app.auditor).await;
    let items = org2.json["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert!(items.iter().all(|i| i["scope_id"] == "org2" && i["metadata"]["policy_key"] == KEY));
    assert!(items[0]["seq"].as_i64() > items[1]["seq"].as_i64(), "newest first");
    let catalog = app.get("/api/v1/admin/audit-logs?actor=catalog-sync&limit=1000", &app.auditor).await;
    assert_eq!(catalog.json["items"].as_array().unwrap().len(), common::catalog_len());
    let none = app.get("/api/v1/admin/audit-logs?outcome=refused", &app.auditor).await;
    assert_eq!(none.json["items"], json!([]));

    let total: i64 = sqlx::query_scalar("select count(*) from audit_logs").fetch_one(&app.pool).await.unwrap();
    for order in ["desc", "asc"] {
        let mut seen = Vec::new();
        let mut path = format!("/api/v1/admin/audit-logs?limit=7&order={order}");
        loop {
            let page = app.get(&path, &app.auditor).await;
            assert_eq!(page.status, StatusCode::OK, "{}", page.json);
            seen.extend(page.json["items"].as_array().unwrap().iter().map(|i| i["seq"].as_i64().unwrap()));
            match page.json["next_cursor"].as_str() {
                Some(cursor) => path = format!("/api/v1/admin/audit-logs?limit=7&order={order}&cursor={cursor}"),
                None => break,
            }
        }
        assert_eq!(seen.len() as i64, total, "{order}: every row");
        assert_eq!(seen.iter().collect::<HashSet<_>>().len(), seen.len(), "{order}: each once");
        let mut sorted = seen.clone();
        sorted.sort();
        if order == "desc" {
            sorted.reverse();
        }
        assert_eq!(seen, sorted, "{order}: in order");
    }
}

#[sqlx::test]
async fn bad_filters_are_422_with_a_code(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    for (query, code) in [
        ("outcome=maybe", "invalid_query"),
        ("limit=0", "invalid_query"),
        ("limit=1001", "invalid_query"),
        ("limit=ten", "invalid_query"),
        ("order=sideways", "invalid_query"),
        ("format=xml", "invalid_query"),
        ("cursor=zz", "invalid_cursor"),
        ("from=yesterday", "invalid_time"),
        ("org_id=a&user_id=b", "invalid_scope"),
        ("colour=blue", "invalid_query"),
    ] {
        let reply = app.get(&format!("/api/v1/admin/audit-logs?{query}"), &app.auditor).await;
        assert_eq!((reply.status, reply.code()), (StatusCode::UNPROCESSABLE_ENTITY, code), "{query}");
    }
}

#[sqlx::test]
async fn an_export_streams_every_row_and_ends_with_the_chain_head(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    history_of_writes(&app).await;
    // Enough rows for several export pages.
    for i in 0..2_100 {
        let record = policy_values::store::audit::NewAuditRecord {
            actor: "bulk",
            action: "test.bulk",
            metadata: json!({ "i": i, "note": "a, \"quoted\"\nline" }),
            ..Default::default()
        };
        policy_values::store::audit::append(&app.pool, &record).await.unwrap();
    }
    let head = app.get("/api/v1/admin/audit-logs/head", &app.auditor).await.json;
    let total: i64 = sqlx::query_scalar("select count(*) from audit_logs").fetch_one(&app.pool).await.unwrap();
    assert_eq!(head["seq"].as_i64(), Some(total));

    let url = format!("{}/api/v1/admin/audit-logs?format=ndjson", app.base);
    let text = app.http.get(&url).bearer_auth(&app.auditor).send().await.unwrap().text().await.unwrap();
    let lines: Vec<Json> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len() as i64, total + 1);
    assert_eq!(lines[0]["seq"], json!(1), "oldest first");
    let trailer = lines.last().unwrap();
    assert_eq!(trailer["chain_head"], head);
    assert_eq!(trailer["rows"].as_i64(), Some(total));

    let filtered = format!("{}/api/v1/admin/audit-logs?format=csv&actor=bulk", app.base);
    let csv = app.http.get(&filtered).bearer_auth(&app.auditor).send().await.unwrap().text().await.unwrap();
    assert!(csv.starts_with("seq,id,occurred_at,actor,action,"));
    assert!(csv.trim_end().ends_with(&format!(
        "# chain_head seq={} hash={} rows=2100",
        head["seq"],
        head["hash"].as_str().unwrap()
    )));
    assert!(csv.contains(r#""{""i"":0,""note"":""a, \""quoted\""\nline""}""#), "quoted as RFC 4180 says");

    let verify = app.get("/api/v1/admin/audit-logs/verify", &app.auditor).await;
    assert_eq!(verify.json["status"], "intact");
    assert_eq!(verify.json["rows"].as_i64(), Some(total));
    assert_eq!(verify.json["head"], head);
}

/// Tampers with the log as the database superuser (triggers bypassed),
/// then checks where verification says it breaks.
async fn tampered(pool: PgPool, statements: &[&str]) -> (TestApp, Json) {
    let app = TestApp::spawn(pool).await;
    history_of_writes(&app).await;
    let intact = app.get("/api/v1/admin/audit-logs/verify", &app.auditor).await;
    assert_eq!(intact.json["status"], "intact");
    let mut conn = app.pool.acquire().await.unwrap();
    sqlx::query("set session_replication_role = replica").execute(&mut *conn).await.unwrap();
    for statement in statements {
        sqlx::query(statement).execute(&mut *conn).await.unwrap();
    }
    sqlx::query("set session_replication_role = origin").execute(&mut *conn).await.unwrap();
    drop(conn);
    let verdict = app.get("/api/v1/admin/audit-logs/verify", &app.auditor).await.json;
    (app, verdict)
}

#[sqlx::test]
async fn an_edited_row_is_found_at_that_row(pool: PgPool) {
    let (_, verdict) =
        tampered(pool, &["update audit_logs set metadata = jsonb_set(metadata, '{new_value}', '365') where seq = 20"])
            .await;
    assert_eq!((verdict["status"].as_str(), verdict["seq"].as_i64()), (Some("broken"), Some(20)), "{verdict}");
    assert!(verdict["reason"].as_str().unwrap().contains("edited"));
}

#[sqlx::test]
async fn a_deleted_row_is_found_where_it_was(pool: PgPool) {
    let (_, verdict) = tampered(pool, &["delete from audit_logs where seq = 18"]).await;
    assert_eq!((verdict["status"].as_str(), verdict["seq"].as_i64()), (Some("broken"), Some(19)), "{verdict}");
    assert!(verdict["reason"].as_str().unwrap().contains("missing"));
}

#[sqlx::test]
async fn reordered_rows_are_found_at_the_first_moved_row(pool: PgPool) {
    let (_, verdict) = tampered(
        pool,
        &[
            "update audit_logs set seq = -1 where seq = 21",
            "update audit_logs set seq = 21 where seq = 22",
            "update audit_logs set seq = 22 where seq = -1",
        ],
    )
    .await;
    assert_eq!((verdict["status"].as_str(), verdict["seq"].as_i64()), (Some("broken"), Some(21)), "{verdict}");
}

#[sqlx::test]
async fn an_inserted_row_is_found_at_that_row_and_the_cli_exits_non_zero(pool: PgPool) {
    let (app, verdict) = tampered(
        pool,
        &[
            "insert into audit_logs (seq, actor, action, prev_hash, hash)
           select seq + 1, 'mallory', 'policy_value.set', hash, sha256(hash) from audit_logs order by seq desc limit 1",
        ],
    )
    .await;
    let last: i64 = sqlx::query_scalar("select max(seq) from audit_logs").fetch_one(&app.pool).await.unwrap();
    assert_eq!((verdict["status"].as_str(), verdict["seq"].as_i64()), (Some("broken"), Some(last)), "{verdict}");

    let url = common::database_url_of(&app.pool);
    let cli = std::process::Command::new(env!("CARGO_BIN_EXE_policy-values"))
        .args(["audit", "verify"])
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(!cli.status.success());
    assert!(String::from_utf8_lossy(&cli.stdout).contains(&format!("broken at seq {last}")));
}

#[sqlx::test]
async fn the_cli_verifies_an_intact_log_with_exit_zero(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    history_of_writes(&app).await;
    let cli = std::process::Command::new(env!("CARGO_BIN_EXE_policy-values"))
        .args(["audit", "verify"])
        .env("DATABASE_URL", common::database_url_of(&app.pool))
        .output()
        .unwrap();
    assert!(cli.status.success(), "{}", String::from_utf8_lossy(&cli.stderr));
    let intact = format!("intact: {} rows", common::catalog_len() + 10);
    assert!(String::from_utf8_lossy(&cli.stdout).starts_with(&intact), "{}", String::from_utf8_lossy(&cli.stdout));
}

#[sqlx::test]
async fn refused_attempts_are_audited_with_their_code_and_write_no_value(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let body = json!({"key": KEY, "scope": {"org_id": "acme"}, "value": 45, "reason": "r", "old_value": 30});
    let url = format!("{}/api/v1/admin/policy-values", app.base);
    app.send(app.http.post(&url).json(&body)).await;
    app.post("/api/v1/admin/policy-values", &app.reader, &body).await;
    let mut stale = body.clone();
    stale["old_value"] = json!(29);
    app.write(stale).await;
    let mut out = body.clone();
    out["value"] = json!(999);
    app.write(out).await;
    let refused = app.get("/api/v1/admin/audit-logs?outcome=refused&order=asc", &app.auditor).await;
    let rows: Vec<(String, String, Json)> = refused.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (i["actor"].as_str().unwrap().into(), i["code"].as_str().unwrap().into(), i["metadata"]["status"].clone())
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            ("anonymous".into(), "unauthorized".into(), json!(401)),
            ("rex-reader".into(), "forbidden".into(), json!(403)),
            ("alice-admin".into(), "stale_old_value".into(), json!(409)),
            ("alice-admin".into(), "out_of_bounds".into(), json!(422)),
        ]
    );
    let first = &refused.json["items"][0];
    assert_eq!((first["policy_key"].as_str(), first["scope_id"].as_str()), (Some(KEY), Some("acme")));
    assert_eq!(app.counts().await.0, 0, "no value row");

    // A flood is capped per principal and minute.
    for _ in 0..70 {
        app.send(app.http.post(&url).bearer_auth("pvt_nonsense").json(&body)).await;
    }
    let anonymous: i64 = sqlx::query_scalar("select count(*) from audit_logs where actor = 'anonymous'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(anonymous, policy_values::server::limits::REFUSALS_PER_MINUTE as i64);
}

#[sqlx::test]
async fn a_past_answer_names_the_change_that_made_it_and_history_lists_every_change(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let first = write(&app, json!({"org_id": "acme"}), 45, 30).await;
    let between = time::OffsetDateTime::now_utc();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let second = write(&app, json!({"org_id": "acme"}), 60, 45).await;
    let at =
        between.format(&time::format_description::well_known::Rfc3339).unwrap().replace(':', "%3A").replace('+', "%2B");
    let then = app.get(&format!("/api/v1/policy-values/resolve?key={KEY}&org_id=acme&at={at}"), &app.reader).await;
    assert_eq!(then.json["value"], json!(45));
    assert_eq!(then.json["audit_id"], first["audit_id"]);
    let now = time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap();
    let now = now.replace(':', "%3A").replace('+', "%2B");
    let latest = app.get(&format!("/api/v1/policy-values/resolve?key={KEY}&org_id=acme&at={now}"), &app.reader).await;
    assert_eq!(latest.json["audit_id"], second["audit_id"]);
    let current = app.get(&format!("/api/v1/policy-values/resolve?key={KEY}&org_id=acme"), &app.reader).await;
    assert_eq!(
        (current.json["value"].clone(), current.json["audit_id"].clone()),
        (json!(60), Json::Null),
        "from memory"
    );
    let default = app.get(&format!("/api/v1/policy-values/resolve?key={KEY}&org_id=other"), &app.reader).await;
    assert_eq!(default.json["audit_id"], Json::Null);

    let later = (time::OffsetDateTime::now_utc() + time::Duration::days(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let body = json!({"key": KEY, "scope": {"org_id": "acme"}, "value": 90, "reason": "r", "old_value": 60, "effective_at": later});
    let scheduled = app.write(body).await.json;
    let id = scheduled["value"]["id"].as_str().unwrap();
    let cancel =
        app.post(&format!("/api/v1/admin/policy-values/{id}/cancel"), &app.admin, &json!({"reason": "no"})).await;

    let history = app.get(&format!("/api/v1/admin/policy-values/history?key={KEY}&org_id=acme"), &app.auditor).await;
    let changes = history.json["changes"].as_array().unwrap();
    let kinds: Vec<&str> = changes.iter().map(|c| c["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["cancel", "set", "set", "set"], "newest first");
    assert_eq!(changes[0]["audit_id"], cancel.json["audit_id"]);
    assert_eq!(changes[1]["cancelled_by"], cancel.json["value"]["id"]);
    assert_eq!(changes[3]["audit_id"], first["audit_id"]);
    assert!(changes.iter().all(|c| c["audit_id"].is_string()));
}
