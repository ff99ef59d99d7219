//! Seed 004's policy bundles over real HTTP and a real PostgreSQL: the
//! seed's JSON shape field by field, overrides per tenant and user, a
//! version that moves with the bundle's values only, ETag/304, refusals,
//! and the client-side `verify`.

mod common;

use common::TestApp;
use policy_values::domain::bundle::{Bundle, BundleError};
use reqwest::StatusCode;
use serde_json::{json, Value as Json};
use sqlx::PgPool;
use time::OffsetDateTime;

const SEED_QUERY: &str = "tenantId=tenant_abc&userId=user_123&sessionId=sess_789&capabilities=File.Read,Shell.Exec";

/// The seed's example bundle as a JSON schema (the subset this file checks:
/// type, required, properties, items, additionalProperties).
fn seed_schema() -> Json {
    let strings = json!({"type": "array", "items": {"type": "string"}});
    json!({
        "type": "object",
        "required": ["policyBundleVersion", "schemaVersion", "tenantId", "userId", "sessionId", "expiresAt",
                     "capabilities", "llmPolicy", "approvalRules"],
        "additionalProperties": false,
        "properties": {
            "policyBundleVersion": {"type": "string"}, "schemaVersion": {"type": "string"},
            "tenantId": {"type": "string"}, "userId": {"type": "string"}, "sessionId": {"type": "string"},
            "expiresAt": {"type": "string"},
            "capabilities": {"type": "array", "items": {
                "type": "object", "required": ["name", "requiresApproval"], "additionalProperties": false,
                "properties": {
                    "name": {"type": "string"}, "requiresApproval": {"type": "boolean"},
                    "approvalRuleId": {"type": "string"},
                    "allowedPaths": strings, "blockedPaths": strings, "allowedCommands": strings,
                    "blockedCommands": strings, "allowedDomains": strings,
                    "maxFileSizeBytes": {"type": "integer"}, "maxOutputBytes": {"type": "integer"}
                }}},
            "llmPolicy": {"type": "object", "additionalProperties": false,
                "required": ["allowedModels", "maxInputTokens", "maxOutputTokens", "maxSessionTokens"],
                "properties": {"allowedModels": strings, "maxInputTokens": {"type": "integer"},
                    "maxOutputTokens": {"type": "integer"}, "maxSessionTokens": {"type": "integer"}}},
            "approvalRules": {"type": "array", "items": {"type": "object", "additionalProperties": false,
                "required": ["approvalRuleId", "title", "description"],
                "properties": {"approvalRuleId": {"type": "string"}, "title": {"type": "string"},
                    "description": {"type": "string"}}}}
        }
    })
}

/// Where `value` breaks `schema`, as JSON paths.
fn violations(value: &Json, schema: &Json, path: &str) -> Vec<String> {
    let kind = match value {
        Json::Object(_) => "object",
        Json::Array(_) => "array",
        Json::String(_) => "string",
        Json::Bool(_) => "boolean",
        Json::Number(n) if n.is_i64() => "integer",
        _ => "other",
    };
    if schema["type"] != kind {
        return vec![format!("{path}: {kind}, not {}", schema["type"])];
    }
    let mut found = Vec::new();
    if let Json::Object(fields) = value {
        for required in schema["required"].as_array().into_iter().flatten() {
            if !fields.contains_key(required.as_str().unwrap()) {
                found.push(format!("{path}.{}: missing", required.as_str().unwrap()));
            }
        }
        for (name, field) in fields {
            match schema["properties"].get(name) {
                Some(sub) => found.extend(violations(field, sub, &format!("{path}.{name}"))),
                None => found.push(format!("{path}.{name}: not in the seed's shape")),
            }
        }
    }
    if let Json::Array(items) = value {
        for (i, item) in items.iter().enumerate() {
            found.extend(violations(item, &schema["items"], &format!("{path}[{i}]")));
        }
    }
    found
}

async fn bundle(app: &TestApp, query: &str) -> common::Reply {
    app.get(&format!("/api/v1/policy-bundles?{query}"), &app.reader).await
}

async fn set(app: &TestApp, key: &str, scope: Json, value: Json, old_value: Json) {
    let body = json!({"key": key, "scope": scope, "value": value, "reason": "bundle test", "old_value": old_value});
    let reply = app.write(body).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.json);
}

#[sqlx::test]
async fn the_bundle_has_the_seeds_shape_field_by_field(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let reply = bundle(&app, SEED_QUERY).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    let b = &reply.json;
    assert_eq!(violations(b, &seed_schema(), "$"), Vec::<String>::new());
    assert_eq!(
        (&b["schemaVersion"], &b["tenantId"], &b["userId"], &b["sessionId"]),
        (&json!("1.0"), &json!("tenant_abc"), &json!("user_123"), &json!("sess_789"))
    );
    assert_eq!(
        b["capabilities"],
        json!([
            {"name": "File.Read", "allowedPaths": ["/Users/suman/projects/demo"], "maxFileSizeBytes": 10_485_760,
             "requiresApproval": false},
            {"name": "Shell.Exec", "allowedCommands": ["git", "python", "npm", "pytest"], "maxOutputBytes": 1_048_576,
             "requiresApproval": true, "approvalRuleId": "approval_shell_exec"}
        ])
    );
    assert_eq!(
        b["llmPolicy"],
        json!({"allowedModels": ["claude-sonnet-4-6"], "maxInputTokens": 64000,
                                      "maxOutputTokens": 4000, "maxSessionTokens": 250000})
    );
    assert_eq!(
        b["approvalRules"],
        json!([{"approvalRuleId": "approval_shell_exec",
        "title": "Local command execution", "description": "User approval required for shell commands"}])
    );
    // Nothing stored yet: every answer is a default, at position 0.
    assert_eq!(b["policyBundleVersion"], "1970-01-01.0");
    let bundle: Bundle = serde_json::from_value(b.clone()).unwrap();
    let lifetime = bundle.expires_at - OffsetDateTime::now_utc();
    assert!(lifetime.whole_seconds() > 3_500 && lifetime.whole_seconds() <= 3_600, "{lifetime}");
    // Without `capabilities`, every allowed capability: the same two.
    let all = bundle_of(&app, "tenantId=tenant_abc&userId=user_123&sessionId=s").await;
    let names: Vec<&str> = all.capabilities.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["File.Read", "Shell.Exec"]);
}

async fn bundle_of(app: &TestApp, query: &str) -> Bundle {
    let reply = bundle(app, query).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    serde_json::from_value(reply.json).unwrap()
}

#[sqlx::test]
async fn a_tenant_override_and_a_user_override_shape_each_callers_bundle(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let models = "agent.llm.allowed_models";
    set(
        &app,
        models,
        json!({"org_id": "acme"}),
        json!(["claude-opus-4-6", "claude-sonnet-4-6"]),
        json!(["claude-sonnet-4-6"]),
    )
    .await;
    let commands = "agent.shell_exec.allowed_commands";
    set(&app, commands, json!({"user_id": "u1"}), json!(["git", "cargo"]), json!(["git", "python", "npm", "pytest"]))
        .await;
    set(&app, "agent.network_http.allowed", json!({"org_id": "acme"}), json!(true), json!(false)).await;
    set(&app, "agent.shell_exec.allowed", json!({"org_id": "other"}), json!(false), json!(true)).await;

    let q = |tenant: &str, user: &str| format!("tenantId={tenant}&userId={user}&sessionId=s1");
    let u1 = bundle_of(&app, &q("acme", "u1")).await;
    assert_eq!(u1.llm_policy.allowed_models, ["claude-opus-4-6", "claude-sonnet-4-6"]);
    let shell = u1.capabilities.iter().find(|c| c.name == "Shell.Exec").unwrap();
    assert_eq!(shell.allowed_commands.as_deref(), Some(&["git".to_string(), "cargo".to_string()][..]));
    let http = u1.capabilities.iter().find(|c| c.name == "Network.Http").unwrap();
    assert_eq!((http.allowed_domains.as_deref(), http.requires_approval), (Some(&[][..]), true));
    let rules: Vec<&str> = u1.approval_rules.iter().map(|r| r.approval_rule_id.as_str()).collect();
    assert_eq!(rules, ["approval_shell_exec", "approval_network_http"]);

    let u2 = bundle_of(&app, &q("acme", "u2")).await;
    assert_eq!(u2.llm_policy.allowed_models, ["claude-opus-4-6", "claude-sonnet-4-6"]);
    let shell = u2.capabilities.iter().find(|c| c.name == "Shell.Exec").unwrap();
    assert_eq!(shell.allowed_commands.as_ref().unwrap(), &["git", "python", "npm", "pytest"]);

    // A capability that resolves to not allowed is left out, with its rule.
    let other = bundle_of(&app, &q("other", "u3")).await;
    let names: Vec<&str> = other.capabilities.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["File.Read"]);
    assert!(other.approval_rules.is_empty());
    assert_eq!(other.llm_policy.allowed_models, ["claude-sonnet-4-6"]);
}

#[sqlx::test]
async fn the_version_moves_with_a_write_that_touches_the_bundle_and_not_with_one_that_does_not(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let query = "tenantId=acme&userId=u1&sessionId=s1";
    let first = bundle(&app, query).await;
    let tag = first.headers["etag"].to_str().unwrap().to_string();
    let v0 = first.json["policyBundleVersion"].clone();

    // Writes that the bundle does not read: another key, another tenant.
    set(&app, "allocation.refund_window_days", json!({"org_id": "acme"}), json!(45), json!(30)).await;
    set(&app, "agent.llm.max_input_tokens", json!({"org_id": "globex"}), json!(1000), json!(64000)).await;
    let same = bundle(&app, query).await;
    assert_eq!(same.json["policyBundleVersion"], v0);
    let cached = app
        .send(
            app.http
                .get(format!("{}/api/v1/policy-bundles?{query}", app.base))
                .bearer_auth(&app.reader)
                .header("if-none-match", &tag),
        )
        .await;
    if cached.status == StatusCode::OK {
        // A minute went by: the bundle was re-issued with a later expiresAt.
        assert_ne!(cached.json["expiresAt"], first.json["expiresAt"]);
    } else {
        assert_eq!(cached.status, StatusCode::NOT_MODIFIED);
        assert_eq!(cached.headers["etag"].to_str().unwrap(), tag);
    }

    // A write the bundle reads: the tenant's token limit.
    set(&app, "agent.llm.max_input_tokens", json!({"org_id": "acme"}), json!(32000), json!(64000)).await;
    let moved = bundle(&app, query).await;
    let v1 = moved.json["policyBundleVersion"].as_str().unwrap().to_string();
    assert_ne!(json!(v1), v0);
    assert_eq!(moved.json["llmPolicy"]["maxInputTokens"], 32000);
    let today = OffsetDateTime::now_utc().date().to_string();
    assert!(v1.starts_with(&format!("{today}.")), "{v1}");
    let refetch = app
        .send(
            app.http
                .get(format!("{}/api/v1/policy-bundles?{query}", app.base))
                .bearer_auth(&app.reader)
                .header("if-none-match", &tag),
        )
        .await;
    assert_eq!(refetch.status, StatusCode::OK, "the old ETag no longer matches");

    // Removing the override moves it again, though the value falls back.
    let body = json!({"key": "agent.llm.max_input_tokens", "scope": {"org_id": "acme"}, "value": null,
                      "reason": "back to the default", "old_value": 32000});
    assert_eq!(app.write(body).await.status, StatusCode::CREATED);
    let back = bundle(&app, query).await;
    assert_eq!(back.json["llmPolicy"]["maxInputTokens"], 64000);
    let v2 = back.json["policyBundleVersion"].as_str().unwrap();
    let n = |v: &str| v.rsplit('.').next().unwrap().parse::<i64>().unwrap();
    assert!(n(v2) > n(&v1), "{v2} after {v1}");
}

#[sqlx::test]
async fn unknown_capabilities_and_missing_parameters_are_refused(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let reply = bundle(&app, "tenantId=a&userId=u&sessionId=s&capabilities=File.Read,Teleport").await;
    assert_eq!((reply.status, reply.code()), (StatusCode::UNPROCESSABLE_ENTITY, "unknown_capability"));
    assert_eq!(reply.json["details"]["unknown"], json!(["Teleport"]));
    let known = reply.json["details"]["known"].as_array().unwrap();
    assert_eq!(known.len(), 12);
    assert!(known.contains(&json!("Workspace.Upload")));
    let missing = bundle(&app, "tenantId=a&sessionId=s").await;
    assert_eq!((missing.code(), &missing.json["details"]["field"]), ("missing_field", &json!("userId")));
    let unknown = bundle(&app, "tenantId=a&userId=u&sessionId=s&tenant=a").await;
    assert_eq!(unknown.code(), "invalid_query");
    let anonymous = app.send(app.http.get(format!("{}/api/v1/policy-bundles?{SEED_QUERY}", app.base))).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
}

#[sqlx::test]
async fn verify_refuses_an_expired_bundle_a_wrong_session_and_an_unknown_schema_version(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let bundle = bundle_of(&app, SEED_QUERY).await;
    let now = OffsetDateTime::now_utc();
    assert_eq!(bundle.verify(now, "sess_789", &["1.0"]), Ok(()));
    assert_eq!(
        bundle.verify(bundle.expires_at, "sess_789", &["1.0"]),
        Err(BundleError::Expired { expires_at: bundle.expires_at })
    );
    assert_eq!(
        bundle.verify(now, "sess_other", &["1.0"]),
        Err(BundleError::SessionMismatch { bundle: "sess_789".into(), current: "sess_other".into() })
    );
    assert_eq!(
        bundle.verify(now, "sess_789", &["2.0"]),
        Err(BundleError::UnsupportedSchema { version: "1.0".into(), supported: vec!["2.0".into()] })
    );
}
