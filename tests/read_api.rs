//! The read API: resolve with its explanation, the catalog, and the
//! per-scope snapshot with ETag and 304.

mod common;

use common::TestApp;
use reqwest::StatusCode;
use serde_json::{json, Value as Json};
use sqlx::PgPool;

const KEY: &str = "rate_limit.api_requests_per_minute";

async fn set(app: &TestApp, scope: Json, value: i64, old: i64) {
    let body = json!({"key": KEY, "scope": scope, "value": value, "reason": "test", "old_value": old});
    let reply = app.write(body).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.json);
}

#[sqlx::test]
async fn the_most_specific_level_wins_and_explain_lists_every_level(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    set(&app, json!({}), 200, 120).await;
    set(&app, json!({"plan": "pro"}), 300, 200).await;
    set(&app, json!({"org_id": "acme"}), 400, 200).await;
    set(&app, json!({"project_id": "p1"}), 500, 200).await;
    set(&app, json!({"user_id": "u1"}), 600, 200).await;

    let full = "user_id=u1&project_id=p1&org_id=acme&plan=pro";
    assert_eq!(app.resolve(KEY, full).await, json!(600));
    assert_eq!(app.resolve(KEY, "user_id=u2&project_id=p1&org_id=acme&plan=pro").await, json!(500));
    assert_eq!(app.resolve(KEY, "project_id=p2&org_id=acme&plan=pro").await, json!(400));
    assert_eq!(app.resolve(KEY, "org_id=other&plan=pro").await, json!(300));
    assert_eq!(app.resolve(KEY, "plan=free").await, json!(200));
    assert_eq!(app.resolve("billing.window_seconds", full).await, json!(60));

    let reply = app.get(&format!("/api/v1/policy-values/resolve?key={KEY}&org_id=acme&plan=pro"), &app.reader).await;
    assert_eq!(reply.json["type"], "int");
    assert_eq!(reply.json["source"]["level"], "org");
    assert_eq!(reply.json["source"]["scope_id"], "acme");
    let explain: Vec<(String, String, Json, bool)> = reply.json["explain"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["level"].as_str().unwrap().into(),
                r["state"].as_str().unwrap().into(),
                r["value"].clone(),
                r["won"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        explain,
        vec![
            ("user".into(), "not_provided".into(), Json::Null, false),
            ("project".into(), "not_provided".into(), Json::Null, false),
            ("org".into(), "set".into(), json!(400), true),
            ("plan".into(), "set".into(), json!(300), false),
            ("global".into(), "set".into(), json!(200), false),
            ("default".into(), "default".into(), json!(120), false),
        ]
    );
}

#[sqlx::test]
async fn bad_resolve_queries_get_422_with_a_code(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let cases = [
        ("key=no.such_key", "unknown_key"),
        ("org_id=acme", "missing_field"),
        (&*format!("key={KEY}&team_id=x"), "invalid_query"),
        (&*format!("key={KEY}&user_id="), "invalid_scope"),
        (&*format!("key={KEY}&at=yesterday"), "invalid_time"),
    ];
    for (query, code) in cases {
        let reply = app.get(&format!("/api/v1/policy-values/resolve?{query}"), &app.reader).await;
        assert_eq!((reply.status, reply.code()), (StatusCode::UNPROCESSABLE_ENTITY, code), "{query}: {}", reply.json);
    }
}

#[sqlx::test]
async fn the_counts_give_each_key_its_overrides_in_force_and_its_scheduled_changes(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    set(&app, json!({}), 200, 120).await;
    set(&app, json!({"plan": "pro"}), 300, 200).await;
    set(&app, json!({"org_id": "acme"}), 400, 200).await;
    // A removal leaves no override in force.
    let removal = json!({"key": KEY, "scope": {"org_id": "acme"}, "value": null, "reason": "t", "old_value": 400});
    assert_eq!(app.write(removal).await.status, StatusCode::CREATED);
    let at = (time::OffsetDateTime::now_utc() + time::Duration::days(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let scheduled = json!({"key": KEY, "scope": {"user_id": "u1"}, "value": 500, "reason": "t", "old_value": 200,
                           "effective_at": at});
    let reply = app.write(scheduled).await;
    assert!(reply.status.is_success(), "{}", reply.json);

    let reply = app.get("/api/v1/admin/policy-values/counts", &app.auditor).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json["keys"], json!({ KEY: {"overrides": 1, "scheduled": 1} }), "{}", reply.json);
    let reader = app.get("/api/v1/admin/policy-values/counts", &app.reader).await;
    assert_eq!((reader.status, reader.code()), (StatusCode::FORBIDDEN, "forbidden"));
}

#[sqlx::test]
async fn the_catalog_lists_every_bounded_key(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let reply = app.get("/api/v1/policy-keys", &app.reader).await;
    let keys = reply.json["keys"].as_array().unwrap();
    assert_eq!(keys.len(), common::catalog_len());
    let refund = keys.iter().find(|k| k["key"] == "allocation.refund_window_days").unwrap();
    assert_eq!(refund["type"], "int");
    assert_eq!(refund["default"], json!(30));
    assert_eq!(refund["bounds"], json!({"min": 0, "max": 365}));
    let isolation = keys.iter().find(|k| k["key"] == "allocation.isolation_model").unwrap();
    assert_eq!(isolation["bounds"], json!({"enum": ["user-revoke", "full-reimage"]}));
}

#[sqlx::test]
async fn the_snapshot_has_every_key_a_version_and_an_etag_that_answers_304(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let path = "/api/v1/policy-values/snapshot?org_id=acme";
    let first = app.get(path, &app.reader).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.json["values"].as_object().unwrap().len(), common::catalog_len());
    // The version is the store's position: here, the catalog's last change.
    let catalog: i64 =
        sqlx::query_scalar("select max(seq) from policy_key_changes").fetch_one(&app.pool).await.unwrap();
    assert_eq!(first.json["version"], json!(catalog));
    assert_eq!(first.json["scope"], json!({"org_id": "acme"}));
    let etag = first.headers["etag"].to_str().unwrap().to_string();
    // Asked again, the document kept for the scope is the same one.
    let kept = app.get(path, &app.reader).await;
    assert_eq!((&kept.json, kept.headers["etag"].to_str().unwrap()), (&first.json, etag.as_str()));

    let again = app
        .send(app.http.get(format!("{}{path}", app.base)).bearer_auth(&app.reader).header("if-none-match", &etag))
        .await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);
    assert_eq!(again.headers["etag"].to_str().unwrap(), etag);

    set(&app, json!({"org_id": "acme"}), 999, 120).await;
    let changed = app
        .send(app.http.get(format!("{}{path}", app.base)).bearer_auth(&app.reader).header("if-none-match", &etag))
        .await;
    assert_eq!(changed.status, StatusCode::OK);
    assert_ne!(changed.headers["etag"].to_str().unwrap(), etag);
    assert_eq!(changed.json["values"][KEY]["value"], json!(999));
    assert_eq!(changed.json["values"][KEY]["source"]["level"], "org");
    assert_eq!(changed.json["version"], json!(catalog + 1));
    assert_eq!(app.get(path, &app.reader).await.json, changed.json, "the kept document was replaced");
    // The ETag names the document by its position, not by hashing it.
    let tag = changed.headers["etag"].to_str().unwrap();
    assert!(tag.starts_with(&format!("W/\"{}.0.", catalog + 1)), "{tag}");
}

#[sqlx::test]
async fn a_snapshot_etag_stops_matching_when_a_scheduled_change_takes_effect(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let path = "/api/v1/policy-values/snapshot?org_id=acme";
    let at = time::OffsetDateTime::now_utc() + time::Duration::seconds(2);
    let at_text = at.format(&time::format_description::well_known::Rfc3339).unwrap();
    let body = json!({"key": KEY, "scope": {"org_id": "acme"}, "value": 777, "old_value": 120,
                      "effective_at": at_text, "reason": "scheduled"});
    assert_eq!(app.write(body).await.status, StatusCode::CREATED);
    let before = app.get(path, &app.reader).await;
    assert_eq!(before.json["values"][KEY]["value"], json!(120));
    let next = time::OffsetDateTime::parse(
        before.json["next_change_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!(next.unix_timestamp(), at.unix_timestamp());
    let etag = before.headers["etag"].to_str().unwrap().to_string();
    let conditional =
        || app.http.get(format!("{}{path}", app.base)).bearer_auth(&app.reader).header("if-none-match", &etag);
    assert_eq!(app.send(conditional()).await.status, StatusCode::NOT_MODIFIED);
    common::eventually("the scheduled change takes effect", || async { time::OffsetDateTime::now_utc() > at }).await;
    let after = app.send(conditional()).await;
    assert_eq!(after.status, StatusCode::OK, "the same position, but the change is due");
    assert_eq!(after.json["values"][KEY]["value"], json!(777));
    assert_eq!(after.json["next_change_at"], json!(null));
    assert_ne!(after.headers["etag"].to_str().unwrap(), etag);
}

#[sqlx::test]
async fn a_large_snapshot_is_gzipped_for_a_caller_that_accepts_it(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let url = format!("{}/api/v1/policy-values/snapshot?org_id=acme", app.base);
    // A client that neither asks for nor undoes compression by itself.
    let raw = reqwest::Client::builder().no_gzip().build().unwrap();
    let plain = raw.get(&url).bearer_auth(&app.reader).send().await.unwrap();
    assert_eq!(plain.headers().get("content-encoding"), None);
    let plain = plain.bytes().await.unwrap();
    assert!(plain.len() > 1024, "a document of {} bytes", plain.len());
    let gzipped = raw.get(&url).bearer_auth(&app.reader).header("accept-encoding", "gzip").send().await.unwrap();
    assert_eq!(gzipped.status(), StatusCode::OK);
    assert_eq!(gzipped.headers()["content-encoding"], "gzip");
    let bytes = gzipped.bytes().await.unwrap();
    assert_eq!(&bytes[..2], &[0x1f, 0x8b], "the gzip magic number");
    assert!(bytes.len() < plain.len() / 2, "{} gzipped bytes against {} plain", bytes.len(), plain.len());
}

#[sqlx::test]
async fn the_openapi_document_describes_every_route_and_needs_no_token(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let doc = app.send(app.http.get(format!("{}/api/v1/openapi.json", app.base))).await;
    assert_eq!(doc.status, StatusCode::OK);
    let mut paths: Vec<&str> = doc.json["paths"].as_object().unwrap().keys().map(String::as_str).collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "/api/v1/admin/audit-logs",
            "/api/v1/admin/audit-logs/head",
            "/api/v1/admin/audit-logs/verify",
            "/api/v1/admin/change-requests",
            "/api/v1/admin/change-requests/{id}",
            "/api/v1/admin/change-requests/{id}/approve",
            "/api/v1/admin/change-requests/{id}/reject",
            "/api/v1/admin/change-requests/{id}/withdraw",
            "/api/v1/admin/policy-values",
            "/api/v1/admin/policy-values/counts",
            "/api/v1/admin/policy-values/history",
            "/api/v1/admin/policy-values/preview",
            "/api/v1/admin/policy-values/{id}/cancel",
            "/api/v1/policy-keys",
            "/api/v1/policy-values/resolve",
            "/api/v1/policy-values/snapshot",
            "/api/v1/replica",
            "/healthz",
            "/readyz",
        ]
    );
    let write = &doc.json["paths"]["/api/v1/admin/policy-values"]["post"];
    assert!(write["responses"]["409"].is_object() && write["responses"]["422"].is_object());
    // The write body: one variant per catalog key, with its type and bounds.
    let variants = doc.json["components"]["schemas"]["WriteBody"]["oneOf"].as_array().unwrap();
    assert_eq!(variants.len(), common::catalog_len(), "one per catalog key");
    for variant in variants {
        let required = variant["required"].as_array().unwrap();
        for field in ["key", "scope", "value", "reason", "old_value"] {
            assert!(required.iter().any(|f| f == field), "{field} is required: {variant}");
        }
    }
    let refund = variants.iter().find(|v| v["properties"]["key"]["enum"] == json!(["allocation.refund_window_days"]));
    let value = &refund.unwrap()["properties"]["value"]["anyOf"][0];
    assert_eq!(
        (value["type"].as_str(), value["minimum"].as_i64(), value["maximum"].as_i64()),
        (Some("integer"), Some(0), Some(365))
    );
    let resolve = doc.json["paths"]["/api/v1/policy-values/resolve"]["get"]["parameters"].as_array().unwrap();
    let org = resolve.iter().find(|p| p["name"] == "org_id").unwrap();
    assert_eq!((org["schema"]["minLength"].as_i64(), org["schema"]["maxLength"].as_i64()), (Some(1), Some(256)));
    let key = resolve.iter().find(|p| p["name"] == "key").unwrap();
    assert_eq!(key["schema"]["enum"].as_array().map(Vec::len), Some(common::catalog_len()));
    // The scope: {} or one level field with its id; the time a schedule;
    // old_value's example the catalog default (what a fresh scope replaces).
    let refund = &refund.unwrap()["properties"];
    assert_eq!(refund["scope"]["maxProperties"], 1);
    assert_eq!(refund["scope"]["propertyNames"]["enum"], json!(["user_id", "project_id", "org_id", "plan"]));
    assert_eq!(refund["scope"]["additionalProperties"]["maxLength"], 256);
    assert_eq!(refund["old_value"]["examples"], json!([30]));
    assert_eq!(refund["effective_at"]["format"], "date-time");
    assert!(refund["effective_at"]["pattern"].as_str().is_some_and(|p| p.starts_with('^')), "{refund}");
    // The bodies that hold only a reason refuse anything else, as the server does.
    for body in ["CancelBody", "DecisionBody"] {
        let schema = &doc.json["components"]["schemas"][body];
        assert_eq!(
            (&schema["additionalProperties"], &schema["required"]),
            (&json!(false), &json!(["reason"])),
            "{body}"
        );
        assert_eq!(
            (
                schema["properties"]["reason"]["minLength"].as_i64(),
                schema["properties"]["reason"]["maxLength"].as_i64()
            ),
            (Some(1), Some(1000)),
            "{body}"
        );
    }
    let list = doc.json["paths"]["/api/v1/admin/change-requests"]["get"]["parameters"].as_array().unwrap();
    let param = |name: &str| list.iter().find(|p| p["name"] == name).unwrap()["schema"].clone();
    assert_eq!(param("limit")["maximum"], 200, "a change request page is at most 200, not the audit's 1,000");
    assert_eq!(param("state")["enum"].as_array().map(Vec::len), Some(7));
    assert!(param("author")["pattern"].is_string(), "a filter text has no control characters");

    // Links: from what a write answers to what a client does next, by id.
    let link = &write["responses"]["201"]["links"]["CancelTheScheduledChange"];
    assert_eq!(link["parameters"]["id"], "$response.body#/value/id", "a write links to cancelling it: {link}");
    assert_eq!(link["operationId"], "cancel");
    let accepted = &write["responses"]["202"]["links"];
    for (name, operation) in [
        ("ShowTheChangeRequest", "show"),
        ("ApproveTheChangeRequest", "approve"),
        ("RejectTheChangeRequest", "reject"),
        ("WithdrawTheChangeRequest", "withdraw"),
    ] {
        assert_eq!(accepted[name]["operationId"], operation, "{name}: {accepted}");
        assert_eq!(accepted[name]["parameters"]["id"], "$response.body#/id", "{name}");
    }
    assert_eq!(write["responses"]["409"]["$ref"], "#/components/responses/WriteConflict");
    let conflict = &doc.json["components"]["responses"]["WriteConflict"];
    let retry = &conflict["links"]["RetryWithTheCurrentValue"];
    assert_eq!(retry["operationId"], "write");
    assert_eq!(retry["requestBody"]["old_value"], "$response.body#/details/current_value");
    assert_eq!(retry["requestBody"]["key"], "$request.body#/key");
    assert_eq!(
        conflict["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/ErrorBody",
        "the conflict answers the shared error body"
    );
    assert_eq!(doc.json["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
}

/// The component a `$ref` names, if it is one of `components.<kind>`.
fn component<'a>(doc: &'a Json, reference: &Json, kind: &str) -> Option<&'a Json> {
    let name = reference.as_str()?.strip_prefix(&format!("#/components/{kind}/"))?;
    doc["components"][kind].get(name)
}

/// Whether a schema says something: a reference to a described component,
/// an array of such, a composition, or an object with properties.
fn typed(doc: &Json, schema: &Json) -> bool {
    if let Some(reference) = schema.get("$ref") {
        return component(doc, reference, "schemas").is_some_and(|s| typed(doc, s));
    }
    if ["oneOf", "allOf", "anyOf"].iter().any(|k| schema[*k].as_array().is_some_and(|a| !a.is_empty())) {
        return true;
    }
    match schema["type"].as_str() {
        Some("object") => schema["properties"].as_object().is_some_and(|p| !p.is_empty()),
        Some("array") => typed(doc, &schema["items"]),
        Some(_) => true,
        None => false,
    }
}

#[sqlx::test]
async fn every_success_answer_in_the_live_openapi_document_has_a_named_schema_and_errors_are_shared(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let doc = app.send(app.http.get(format!("{}/api/v1/openapi.json", app.base))).await.json;
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            for (status, response) in operation["responses"].as_object().unwrap() {
                let response = match response.get("$ref") {
                    Some(reference) => component(&doc, reference, "responses")
                        .unwrap_or_else(|| panic!("{method} {path} {status} refers to a missing response: {response}")),
                    None => response,
                };
                if status.starts_with('2') {
                    for (media, content) in response["content"].as_object().unwrap() {
                        let schema = &content["schema"];
                        if media == "application/json" {
                            assert!(
                                schema.get("$ref").is_some(),
                                "{method} {path} {status}: not a named schema: {schema}"
                            );
                        }
                        assert!(typed(&doc, schema), "{method} {path} {status} {media}: an untyped answer: {schema}");
                        checked += 1;
                    }
                } else if status.starts_with('4') || status.starts_with('5') {
                    // The shared error, or (the write's 409) the shared error
                    // with a link to retry.
                    let reference = &operation["responses"][status]["$ref"];
                    let shared = if (path.as_str(), method.as_str(), status.as_str())
                        == ("/api/v1/admin/policy-values", "post", "409")
                    {
                        "#/components/responses/WriteConflict"
                    } else {
                        "#/components/responses/Error"
                    };
                    assert_eq!(reference, shared, "{method} {path} {status}: the shared error");
                    assert_eq!(
                        response["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/ErrorBody",
                        "{method} {path} {status}"
                    );
                }
            }
        }
    }
    assert!(checked >= 13, "every success answer was checked ({checked})");
    let error = &doc["components"]["responses"]["Error"]["content"]["application/json"]["schema"]["$ref"];
    assert_eq!(error, "#/components/schemas/ErrorBody");
    let write = &doc["paths"]["/api/v1/admin/policy-values"]["post"]["responses"];
    assert_eq!(write["201"]["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/Written");
    assert_eq!(write["200"]["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/Unchanged");
    for status in ["400", "401", "403", "413", "415", "422", "429", "503"] {
        assert_eq!(write[status]["$ref"], "#/components/responses/Error", "write {status}");
    }
    let resolve = &doc["components"]["schemas"]["Resolution"]["properties"];
    for field in ["key", "type", "value", "source", "explain", "audit_id"] {
        assert!(resolve.get(field).is_some(), "Resolution.{field}");
    }
}
