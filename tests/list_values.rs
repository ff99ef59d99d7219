//! List values over real HTTP and a real PostgreSQL: the bounds of a list
//! (items rule, max_items, duplicates, item types) each refused with its
//! code and nothing written; the most specific whole list wins; old_value
//! compares whole lists; audit, history and a running client carry lists.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{options_of, TestApp};
use policy_values::client::PolicyClient;
use policy_values::domain::Scope;
use reqwest::StatusCode;
use serde_json::{json, Value as Json};
use sqlx::PgPool;

const MODELS: &str = "agent.llm.allowed_models";
const COMMANDS: &str = "agent.shell_exec.allowed_commands";
const DEFAULT_COMMANDS: [&str; 4] = ["git", "python", "npm", "pytest"];

fn body(key: &str, scope: Json, value: Json, old_value: Json) -> Json {
    json!({ "key": key, "scope": scope, "value": value, "reason": "list test", "old_value": old_value })
}

#[sqlx::test]
async fn every_bad_list_is_refused_with_its_code_naming_the_item_and_writes_nothing(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let before = app.counts().await;
    let too_many: Vec<String> = (0..65).map(|i| format!("cmd{i}")).collect();
    let cases = [
        (MODELS, json!(["claude-sonnet-4-6", "gpt-unknown"]), "list_item_not_allowed", json!("gpt-unknown")),
        (COMMANDS, json!(["git", "rm -rf"]), "list_item_not_allowed", json!("rm -rf")),
        (COMMANDS, json!(too_many), "list_too_long", Json::Null),
        (COMMANDS, json!(["git", "npm", "git"]), "list_duplicate_item", json!("git")),
        (COMMANDS, json!(["git", 7]), "list_item_type", Json::Null),
        (COMMANDS, json!("git"), "type_mismatch", Json::Null),
    ];
    for (key, value, code, item) in cases {
        let old = if key == MODELS { json!(["claude-sonnet-4-6"]) } else { json!(DEFAULT_COMMANDS) };
        let reply = app.write(body(key, json!({"org_id": "acme"}), value.clone(), old)).await;
        assert_eq!((reply.status, reply.code()), (StatusCode::UNPROCESSABLE_ENTITY, code), "{value}: {}", reply.json);
        assert_eq!(reply.json["details"]["item"], item, "{value}");
    }
    let too_long = app.write(body(COMMANDS, json!({}), json!(too_many), json!(DEFAULT_COMMANDS))).await;
    assert_eq!(too_long.json["details"]["max_items"], json!(64));
    let wrong_type = app.write(body(COMMANDS, json!({}), json!(["git", 7]), json!(DEFAULT_COMMANDS))).await;
    assert_eq!(wrong_type.json["details"]["index"], json!(1));
    assert_eq!(app.counts().await, before, "nothing written");
}

#[sqlx::test]
async fn the_database_refuses_a_bad_list_even_from_a_stale_catalog(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    for bad in [json!(["git", "git"]), json!(["git", "rm -rf"]), json!(["git", 1]), json!("git")] {
        let err = sqlx::query(
            "insert into policy_values (kind, key, level, scope_id, value, effective_at, actor, reason)
             values ('set', $1, 'global', '', $2, now(), 'sql', 'bypassing the server')",
        )
        .bind(COMMANDS)
        .bind(&bad)
        .execute(&app.pool)
        .await
        .unwrap_err();
        let db = err.as_database_error().unwrap();
        assert_eq!(db.constraint(), Some("policy_values_within_bounds"), "{bad}: {db}");
    }
}

#[sqlx::test]
async fn an_org_list_and_a_user_list_resolve_most_specific_whole_list_first(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let org = json!(["claude-opus-4-6", "claude-sonnet-4-6"]);
    let user = json!(["claude-haiku-4-5"]);
    let default = json!(["claude-sonnet-4-6"]);
    let written = app.write(body(MODELS, json!({"org_id": "acme"}), org.clone(), default.clone())).await;
    assert_eq!(written.status, StatusCode::CREATED, "{}", written.json);
    assert_eq!(written.json["old_value"], default);
    // The user has nothing stored: old_value is the global value (the default).
    let reply = app.write(body(MODELS, json!({"user_id": "u1"}), user.clone(), default.clone())).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.json);

    assert_eq!(app.resolve(MODELS, "org_id=acme&user_id=u1").await, user);
    assert_eq!(app.resolve(MODELS, "org_id=acme&user_id=u2").await, org);
    assert_eq!(app.resolve(MODELS, "org_id=other&user_id=u2").await, default);

    let explained =
        app.get(&format!("/api/v1/policy-values/resolve?key={MODELS}&org_id=acme&user_id=u1"), &app.reader).await;
    assert_eq!(explained.json["type"], "list");
    assert_eq!(explained.json["source"]["level"], "user");
    let levels = explained.json["explain"].as_array().unwrap();
    assert_eq!((levels[0]["value"].clone(), levels[0]["won"].clone()), (user.clone(), json!(true)));
    assert_eq!((levels[2]["value"].clone(), levels[2]["won"].clone()), (org.clone(), json!(false)));

    // old_value is compared as a whole list: same items in another order is stale.
    let reordered = json!(["claude-sonnet-4-6", "claude-opus-4-6"]);
    let before = app.counts().await;
    let stale = app.write(body(MODELS, json!({"org_id": "acme"}), json!(["claude-opus-4-6"]), reordered)).await;
    assert_eq!((stale.status, stale.code()), (StatusCode::CONFLICT, "stale_old_value"));
    assert_eq!(stale.json["details"]["current_value"], org);
    assert_eq!(app.counts().await, before);
    let ok = app.write(body(MODELS, json!({"org_id": "acme"}), json!(["claude-opus-4-6"]), org.clone())).await;
    assert_eq!(ok.status, StatusCode::CREATED, "{}", ok.json);

    let audit: Vec<Json> = sqlx::query_scalar(
        "select metadata from audit_logs where policy_key = $1 and outcome = 'success' and scope_id = 'acme' order by seq",
    )
    .bind(MODELS)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(audit.len(), 2);
    assert_eq!((audit[0]["old_value"].clone(), audit[0]["new_value"].clone()), (default.clone(), org.clone()));
    assert_eq!((audit[1]["old_value"].clone(), audit[1]["new_value"].clone()), (org, json!(["claude-opus-4-6"])));

    let snapshot = app.get("/api/v1/policy-values/snapshot?org_id=acme&user_id=u1", &app.reader).await;
    assert_eq!(snapshot.json["values"][MODELS]["value"], user, "{}", snapshot.json["values"][MODELS]);
}

#[sqlx::test]
async fn a_running_client_sees_a_list_change_and_reads_it_without_copying(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let client = PolicyClient::builder().connect_options(options_of(&app.pool)).connect().await.unwrap();
    let acme = Scope::new().org("acme").user("u1");
    let commands = client.list_key(COMMANDS).unwrap();
    let first = client.get_list(&acme, COMMANDS).unwrap();
    assert_eq!(first.iter().map(|c| &**c).collect::<Vec<_>>(), DEFAULT_COMMANDS);
    assert!(Arc::ptr_eq(&first, &commands.get(&acme)), "both reads share the replica's list");
    assert!(client.get_int(&acme, COMMANDS).is_err());

    let mut watch = client.watch_key(COMMANDS).unwrap();
    let reply =
        app.write(body(COMMANDS, json!({"org_id": "acme"}), json!(["git", "cargo"]), json!(DEFAULT_COMMANDS))).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.json);
    let change = tokio::time::timeout(Duration::from_secs(30), watch.changed()).await.unwrap().unwrap();
    assert_eq!(change.value.map(|v| v.to_json()), Some(json!(["git", "cargo"])));
    let now: Vec<String> = commands.get(&acme).iter().map(|c| c.to_string()).collect();
    assert_eq!(now, ["git", "cargo"]);
    let other: Vec<String> =
        client.get_list(&Scope::new().org("other"), COMMANDS).unwrap().iter().map(|c| c.to_string()).collect();
    assert_eq!(other, DEFAULT_COMMANDS);
}

#[sqlx::test]
async fn history_and_a_client_following_the_servers_feed_carry_lists(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let client = PolicyClient::builder().servers([app.base.clone()]).token(app.reader.clone()).connect().await.unwrap();
    let acme = Scope::new().org("acme");
    assert_eq!(client.get_list(&acme, COMMANDS).unwrap().len(), 4, "the bootstrap carries the default list");
    let mut watch = client.watch_key(COMMANDS).unwrap();
    let first = json!(["git", "make"]);
    let reply = app.write(body(COMMANDS, json!({"org_id": "acme"}), first.clone(), json!(DEFAULT_COMMANDS))).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.json);
    let change = tokio::time::timeout(Duration::from_secs(30), watch.changed()).await.unwrap().unwrap();
    assert_eq!(change.value.map(|v| v.to_json()), Some(first.clone()), "the feed carries the list");
    assert_eq!(
        client.get_list(&acme, COMMANDS).unwrap().iter().map(|c| c.to_string()).collect::<Vec<_>>(),
        ["git", "make"]
    );

    let second = app.write(body(COMMANDS, json!({"org_id": "acme"}), json!(["make"]), first.clone())).await;
    assert_eq!(second.status, StatusCode::CREATED, "{}", second.json);
    let history =
        app.get(&format!("/api/v1/admin/policy-values/history?key={COMMANDS}&org_id=acme"), &app.auditor).await;
    let values: Vec<Json> = history.json["changes"].as_array().unwrap().iter().map(|c| c["value"].clone()).collect();
    assert_eq!(values, [json!(["make"]), first], "newest first");
}
