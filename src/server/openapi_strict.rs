//! Makes the served OpenAPI document as strict as the server: what the
//! handlers check by hand (scope ids, reasons, limits, the catalog's keys,
//! each key's type and bounds) written into the schemas, so that a client
//! or a fuzzer generating requests from the document sends what the
//! server accepts. The catalog part is built from the catalog the server
//! serves at the time of the request. Also links a write's answer to the
//! cancel endpoint, so that its `id` is reached with a real row id.

use serde_json::{json, Value as Json};

use crate::domain::key::ItemRule;
use crate::domain::{Bounds, KeyDef, ValueType};

/// A scope id: non-empty, at most 256 characters, no control character
/// (`domain::scope::valid_scope_id`).
fn scope_id() -> Json {
    json!({"type": "string", "minLength": 1, "maxLength": 256,
           "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]+$"})
}

/// A reason: 1 to 1,000 characters, not blank, no control characters but
/// line breaks and tabs (`admin::parse_reason`).
fn reason() -> Json {
    let allowed = "[^\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f\\u007f-\\u009f]";
    let visible = "[^\\s\\u0000-\\u001f\\u007f-\\u009f]";
    json!({"type": "string", "minLength": 1, "maxLength": 1000,
           "pattern": format!("^{allowed}*{visible}{allowed}*$")})
}

/// An audit filter text: at most 1,000 bytes (250 characters keeps any
/// text under that), no control characters.
fn filter_text() -> Json {
    json!({"type": "string", "maxLength": 250, "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"})
}

/// A value of the key's type, within its bounds.
fn value_schema(def: &KeyDef) -> Json {
    match (&def.value_type, &def.bounds) {
        (ValueType::Int, Bounds::Int { min, max }) => json!({"type": "integer", "minimum": min, "maximum": max}),
        (ValueType::String, Bounds::Enum { values }) => json!({"type": "string", "enum": values}),
        (ValueType::List, Bounds::List { max_items, items }) => {
            let item = match items {
                ItemRule::Enum(values) => json!({"type": "string", "enum": values}),
                ItemRule::Pattern(pattern) => {
                    json!({"type": "string", "pattern": format!("^(?:{})$", pattern.as_str())})
                }
            };
            json!({"type": "array", "items": item, "maxItems": max_items, "uniqueItems": true})
        }
        (ValueType::List, _) => json!({"type": "array", "items": {"type": "string"}, "uniqueItems": true}),
        (ValueType::Bool, _) => json!({"type": "boolean"}),
        (ValueType::Int, _) => json!({"type": "integer"}),
        (ValueType::String, _) => json!({"type": "string"}),
    }
}

/// The write body for one key: its name, a value of its type within its
/// bounds (or null, to remove the override), and an `old_value` of its
/// type (one outside the bounds can never be the value replaced).
fn write_body(def: &KeyDef) -> Json {
    let value = value_schema(def);
    let levels = ["user_id", "project_id", "org_id", "plan"].map(|f| (f.to_string(), scope_id()));
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["key", "scope", "value", "reason", "old_value"],
        "properties": {
            "key": {"type": "string", "enum": [def.key.as_str()]},
            "scope": {"type": "object", "additionalProperties": false, "maxProperties": 1,
                      "properties": serde_json::Map::from_iter(levels),
                      "description": "{} for global, or exactly one of user_id, project_id, org_id, plan"},
            "value": {"anyOf": [value, {"type": "null"}], "description": "the new value; null removes the override"},
            "effective_at": {"type": "string", "format": "date-time",
                             "description": "default now; at most 60 s in the past; in the future it schedules the change"},
            "reason": reason(),
            "old_value": value_schema(def),
        }
    })
}

/// The schema of one query or path parameter, by its name.
fn parameter(name: &str, keys: &[Json]) -> Option<Json> {
    Some(match name {
        "user_id" | "project_id" | "org_id" | "plan" => scope_id(),
        "key" => json!({"type": "string", "enum": keys}),
        "at" | "from" | "to" => json!({"type": "string", "format": "date-time"}),
        "limit" => json!({"type": "integer", "minimum": 1, "maximum": crate::server::audit::PAGE_MAX}),
        "outcome" => json!({"type": "string", "enum": ["success", "refused"]}),
        "order" => json!({"type": "string", "enum": ["desc", "asc"]}),
        "format" => json!({"type": "string", "enum": ["json", "ndjson", "csv"]}),
        "policy_key" | "actor" | "action" => filter_text(),
        "id" => json!({"type": "string", "format": "uuid"}),
        _ => return None,
    })
}

/// Tightens `doc` (the document as utoipa builds it) for `catalog`.
pub fn tighten(doc: &mut Json, catalog: &[KeyDef]) {
    let keys: Vec<Json> = catalog.iter().map(|d| json!(d.key.as_str())).collect();
    if let Some(paths) = doc["paths"].as_object_mut() {
        for item in paths.values_mut().filter_map(Json::as_object_mut) {
            for operation in item.values_mut() {
                let Some(parameters) = operation.get_mut("parameters").and_then(Json::as_array_mut) else { continue };
                for p in parameters.iter_mut() {
                    if let Some(schema) = p["name"].as_str().and_then(|name| parameter(name, &keys)) {
                        p["schema"] = schema;
                    }
                }
            }
        }
    }
    let schemas = &mut doc["components"]["schemas"];
    if !catalog.is_empty() && schemas.get("WriteBody").is_some() {
        let description = "one variant per catalog key: its value's type and bounds";
        schemas["WriteBody"] =
            json!({"oneOf": catalog.iter().map(write_body).collect::<Vec<_>>(), "description": description});
    }
    if schemas.get("CancelBody").is_some() {
        schemas["CancelBody"] = json!({"type": "object", "additionalProperties": false, "required": ["reason"],
                                       "properties": {"reason": reason()}});
    }
    link_cancel(doc);
}

/// A write's 201 answer links to cancelling it, with the new row's id.
fn link_cancel(doc: &mut Json) {
    let cancel = &doc["paths"]["/api/v1/admin/policy-values/{id}/cancel"]["post"]["operationId"];
    let Some(operation_id) = cancel.as_str().map(str::to_string) else { return };
    let created = doc.pointer_mut("/paths/~1api~1v1~1admin~1policy-values/post/responses/201");
    if let Some(created) = created.filter(|c| c.is_object()) {
        created["links"] = json!({"CancelTheScheduledChange": {
            "operationId": operation_id,
            "parameters": {"id": "$response.body#/value/id"},
            "description": "cancel the change just written (a change already in effect answers 409 not_scheduled)",
        }});
    }
}
