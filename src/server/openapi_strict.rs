//! Makes the served OpenAPI document as strict as the server: what the
//! handlers check by hand (scope ids, reasons, limits, the catalog's keys,
//! each key's type and bounds) written into the schemas, so that a client
//! or a fuzzer generating requests from the document sends what the
//! server accepts. The catalog part is built from the catalog the server
//! serves at the time of the request. Also links a write's answers to
//! what a client does next with them (`links`): cancel the row it wrote,
//! show or decide the change request it made, retry with the current
//! value after a `stale_old_value` conflict, so that a fuzzer following
//! links (schemathesis' stateful phase) reaches those endpoints with real
//! ids.

use serde_json::{json, Value as Json};

use crate::domain::key::ItemRule;
use crate::domain::{Bounds, KeyDef, ValueType};

/// A scope id: non-empty, at most 256 characters, no control character
/// (`domain::scope::valid_scope_id`).
fn scope_id() -> Json {
    json!({"type": "string", "minLength": 1, "maxLength": 256,
           "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]+$"})
}

/// The write body's scope: `{}` for the global level, or one of the four
/// level fields with its id. Written as a map from level field to id
/// (`propertyNames`, `additionalProperties`) rather than as four named
/// properties: the same rule, but a field named `org_id` is not taken for
/// a reference to an "org" resource that no endpoint makes (schemathesis'
/// dependency analysis then keeps the write out of its stateful phase).
fn write_scope() -> Json {
    json!({"type": "object", "maxProperties": 1,
           "propertyNames": {"enum": ["user_id", "project_id", "org_id", "plan"]},
           "additionalProperties": scope_id(),
           "description": "{} for global, or exactly one of user_id, project_id, org_id, plan, with its id"})
}

/// A body whose only field is a required reason (cancel, and the
/// decisions on a change request).
fn reason_body() -> Json {
    json!({"type": "object", "additionalProperties": false, "required": ["reason"],
           "properties": {"reason": reason()}})
}

/// A reason: 1 to 1,000 characters, not blank, no control characters but
/// line breaks and tabs (the field rules of `admin::WriteBody`'s reason:
/// `admin::REASON_MAX` and `admin::reason_text`).
fn reason() -> Json {
    let allowed = "[^\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f\\u007f-\\u009f]";
    let visible = "[^\\s\\u0000-\\u001f\\u007f-\\u009f]";
    json!({"type": "string", "minLength": 1, "maxLength": super::admin::REASON_MAX,
           "pattern": format!("^{allowed}*{visible}{allowed}*$")})
}

/// An audit filter text: at most 1,000 bytes (250 characters keeps any
/// text under that), no control characters.
fn filter_text() -> Json {
    json!({"type": "string", "maxLength": 250, "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"})
}

/// An RFC 3339 time, as the server parses it: the `date-time` format, and
/// a pattern for the validators and generators that do not assert formats.
fn time() -> Json {
    let pattern = "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})$";
    json!({"type": "string", "format": "date-time", "pattern": pattern})
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
    let mut effective_at = time();
    effective_at["description"] = json!("default now; at most 60 s in the past; in the future it schedules the change");
    effective_at["examples"] = json!(["2099-01-01T00:00:00Z"]);
    let mut old_value = value_schema(def);
    old_value["description"] = json!(
        "the value the write replaces: the one at this scope now, else the global \
                                      value, else the catalog default (the example)"
    );
    old_value["examples"] = json!([def.default.to_json()]);
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["key", "scope", "value", "reason", "old_value"],
        "properties": {
            "key": {"type": "string", "enum": [def.key.as_str()]},
            "scope": write_scope(),
            "value": {"anyOf": [value, {"type": "null"}], "description": "the new value; null removes the override"},
            "effective_at": effective_at,
            "reason": reason(),
            "old_value": old_value,
        }
    })
}

/// The schema of one query or path parameter of the operation at `path`,
/// by its name.
fn parameter(path: &str, name: &str, keys: &[Json]) -> Option<Json> {
    let change_requests = path.starts_with("/api/v1/admin/change-requests");
    Some(match name {
        "limit" if change_requests => {
            json!({"type": "integer", "minimum": 1, "maximum": crate::server::change_requests::PAGE_MAX})
        }
        "state" if change_requests => json!({"type": "string", "enum": crate::server::change_requests::STATES}),
        "user_id" | "project_id" | "org_id" | "plan" => scope_id(),
        "key" => json!({"type": "string", "enum": keys}),
        "at" | "from" | "to" => time(),
        "limit" => json!({"type": "integer", "minimum": 1, "maximum": crate::server::audit::PAGE_MAX}),
        "outcome" => json!({"type": "string", "enum": ["success", "refused"]}),
        "order" => json!({"type": "string", "enum": ["desc", "asc"]}),
        "format" => json!({"type": "string", "enum": ["json", "ndjson", "csv"]}),
        "policy_key" | "actor" | "action" | "author" => filter_text(),
        "id" => json!({"type": "string", "format": "uuid"}),
        _ => return None,
    })
}

/// Tightens `doc` (the document as utoipa builds it) for `catalog`.
pub fn tighten(doc: &mut Json, catalog: &[KeyDef]) {
    let keys: Vec<Json> = catalog.iter().map(|d| json!(d.key.as_str())).collect();
    if let Some(paths) = doc["paths"].as_object_mut() {
        for (path, item) in paths.iter_mut() {
            let Some(item) = item.as_object_mut() else { continue };
            for operation in item.values_mut() {
                let Some(parameters) = operation.get_mut("parameters").and_then(Json::as_array_mut) else { continue };
                for p in parameters.iter_mut() {
                    if let Some(schema) = p["name"].as_str().and_then(|name| parameter(path, name, &keys)) {
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
    for name in ["CancelBody", "DecisionBody"] {
        if schemas.get(name).is_some() {
            schemas[name] = reason_body();
        }
    }
    link_write(doc);
}

/// The `operationId` of the operation at `path` and `method`, if there is one.
fn operation_id(doc: &Json, path: &str, method: &str) -> Option<String> {
    doc["paths"][path][method]["operationId"].as_str().map(str::to_string)
}

/// The name of the write's shared conflict response in
/// `components.responses`: the shared error, plus the retry link.
const WRITE_CONFLICT: &str = "WriteConflict";

/// Links the write's answers to what a client does next with them:
/// - 201 (a value row written): cancel it by its id (a change already in
///   effect answers 409 `not_scheduled`);
/// - 202 (a change request made): show, approve, reject or withdraw it by
///   its id;
/// - 409: the same write again with `old_value` set to the
///   `details.current_value` the conflict named (a `stale_old_value`
///   answer has one; `not_overridden` has none, so the link is not
///   followed). The retry has no `effective_at`: it takes effect now.
fn link_write(doc: &mut Json) {
    const WRITE: &str = "/api/v1/admin/policy-values";
    const REQUEST: &str = "/api/v1/admin/change-requests/{id}";
    let Some(write) = operation_id(doc, WRITE, "post") else { return };
    let mut on_created = serde_json::Map::new();
    if let Some(cancel) = operation_id(doc, "/api/v1/admin/policy-values/{id}/cancel", "post") {
        on_created.insert(
            "CancelTheScheduledChange".into(),
            json!({
                "operationId": cancel,
                "parameters": {"id": "$response.body#/value/id"},
                "description": "cancel the change just written (a change already in effect answers 409 not_scheduled)",
            }),
        );
    }
    let mut on_accepted = serde_json::Map::new();
    let decisions = [
        ("ShowTheChangeRequest", REQUEST.to_string(), "get", "show the change request just made"),
        ("ApproveTheChangeRequest", format!("{REQUEST}/approve"), "post", "approve it (another admin than its author)"),
        ("RejectTheChangeRequest", format!("{REQUEST}/reject"), "post", "reject it"),
        ("WithdrawTheChangeRequest", format!("{REQUEST}/withdraw"), "post", "withdraw it (its author)"),
    ];
    for (name, path, method, description) in decisions {
        if let Some(id) = operation_id(doc, &path, method) {
            on_accepted.insert(
                name.into(),
                json!({
                    "operationId": id, "parameters": {"id": "$response.body#/id"}, "description": description,
                }),
            );
        }
    }
    let retry = json!({"RetryWithTheCurrentValue": {
        "operationId": write,
        "requestBody": {
            "key": "$request.body#/key", "scope": "$request.body#/scope", "value": "$request.body#/value",
            "reason": "$request.body#/reason", "old_value": "$response.body#/details/current_value",
        },
        "x-schemathesis": {"merge_body": false},
        "description": "a stale_old_value conflict: the same write, with old_value set to the current value it named",
    }});
    let mut conflict = doc["components"]["responses"]["Error"].clone();
    let Some(responses) = doc.pointer_mut("/paths/~1api~1v1~1admin~1policy-values/post/responses") else { return };
    for (status, links) in [("201", on_created), ("202", on_accepted)] {
        if let Some(response) = responses.get_mut(status).filter(|r| r.is_object()) {
            if !links.is_empty() {
                response["links"] = Json::Object(links);
            }
        }
    }
    if conflict.is_object() && responses.get("409").is_some() {
        responses["409"] = json!({"$ref": format!("#/components/responses/{WRITE_CONFLICT}")});
        conflict["description"] = json!(
            "a conflict: `stale_old_value` (`details.current_value` is the value \
                                         the write replaces now), `not_overridden`, `catalog_conflict`, ..."
        );
        conflict["links"] = retry;
        doc["components"]["responses"][WRITE_CONFLICT] = conflict;
    }
}
