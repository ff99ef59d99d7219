//! The OpenAPI schemas of the API's success answers, named so that a client
//! generated from the document knows what comes back. They describe the
//! JSON the handlers send (the domain's and the store's types as they
//! serialize, some with hand-written `Serialize` impls); `make schemathesis`
//! checks every answer against them, and tests/read_api.rs that no success
//! answer is left an untyped object.
#![allow(dead_code)] // described for the document, never built

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value as Json;
use utoipa::ToSchema;

/// `/healthz` and `/readyz`.
#[derive(Serialize, ToSchema)]
pub struct Status {
    /// `ok` (healthz) or `ready` (readyz).
    #[schema(example = "ok")]
    status: String,
}

/// A key's bounds: `{min, max}` for int, `{enum}` for string, `{}` for
/// bool, `{max_items, enum}` or `{max_items, pattern}` for list.
#[derive(Serialize, ToSchema)]
pub struct Bounds {
    min: Option<i64>,
    max: Option<i64>,
    #[serde(rename = "enum")]
    values: Option<Vec<String>>,
    /// The most items a list value may hold.
    max_items: Option<u32>,
    /// The pattern each item of a list value matches as a whole.
    pattern: Option<String>,
}

/// A key as the catalog defines it.
#[derive(Serialize, ToSchema)]
pub struct KeyDef {
    #[schema(example = "allocation.refund_window_days")]
    key: String,
    #[serde(rename = "type")]
    value_type: ValueType,
    /// The catalog default, of the key's type.
    default: Json,
    bounds: Bounds,
    description: String,
    /// The unit of an int value, or empty.
    unit: String,
    fail_closed: bool,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ValueType {
    Int,
    Bool,
    String,
    List,
}

/// `GET /api/v1/policy-keys`.
#[derive(Serialize, ToSchema)]
pub struct Catalog {
    /// Every key, sorted by name.
    keys: Vec<KeyDef>,
}

/// The level and row that gave an answer.
#[derive(Serialize, ToSchema)]
pub struct Source {
    /// `user`, `project`, `org`, `plan`, `global` or `default`.
    level: String,
    scope_id: Option<String>,
    value_id: Option<String>,
    #[schema(format = DateTime)]
    effective_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LevelState {
    NotProvided,
    NotSet,
    Removed,
    Set,
    Default,
}

/// What one level held.
#[derive(Serialize, ToSchema)]
pub struct LevelReport {
    level: String,
    scope_id: Option<String>,
    state: LevelState,
    value: Json,
    value_id: Option<String>,
    #[schema(format = DateTime)]
    effective_at: Option<String>,
    won: bool,
}

/// `GET /api/v1/policy-values/resolve`.
#[derive(Serialize, ToSchema)]
pub struct Resolution {
    key: String,
    #[serde(rename = "type")]
    value_type: ValueType,
    /// The answer, of the key's type.
    value: Json,
    source: Source,
    /// Every level consulted, most specific first, then the default.
    explain: Vec<LevelReport>,
    /// With `at`: the audit record of the change that won.
    audit_id: Option<String>,
}

/// One key's answer in a snapshot.
#[derive(Serialize, ToSchema)]
pub struct SnapshotValue {
    #[serde(rename = "type")]
    value_type: ValueType,
    value: Json,
    source: Source,
}

/// `GET /api/v1/policy-values/snapshot`.
#[derive(Serialize, ToSchema)]
pub struct Snapshot {
    /// The scope given: level name to id.
    scope: BTreeMap<String, String>,
    /// The store position the document reflects.
    version: i64,
    #[schema(format = DateTime)]
    next_change_at: Option<String>,
    /// Every key's answer, by key.
    values: BTreeMap<String, SnapshotValue>,
}

/// A stored value row.
#[derive(Serialize, ToSchema)]
pub struct ValueRow {
    id: String,
    seq: i64,
    /// `set`, `unset` (a removal) or `cancel`.
    kind: String,
    key: String,
    level: String,
    scope_id: String,
    /// The value (null for a removal or a cancel).
    value: Json,
    #[schema(format = DateTime)]
    effective_at: String,
    actor: String,
    reason: String,
    #[schema(format = DateTime)]
    created_at: String,
}

/// A write that was made (201), or a cancel (200).
#[derive(Serialize, ToSchema)]
pub struct Written {
    /// Always false here.
    unchanged: bool,
    value: ValueRow,
    /// What the write replaced (for a cancel: the cancelled value).
    old_value: Json,
    audit_id: String,
    audit_seq: i64,
}

/// A write of the value already stored at its scope (200): nothing written.
#[derive(Serialize, ToSchema)]
pub struct Unchanged {
    /// Always true here.
    unchanged: bool,
    key: String,
    level: String,
    scope_id: String,
    value: Json,
    old_value: Json,
    /// The row in force at the scope, which holds the value.
    value_id: String,
    value_seq: i64,
    #[schema(format = DateTime)]
    effective_at: String,
}

/// One scope's override of a key.
#[derive(Serialize, ToSchema)]
pub struct Override {
    level: String,
    scope: BTreeMap<String, String>,
    /// The row in force now (a removal shows as `value: null`).
    current: Option<ValueRow>,
    scheduled: Vec<ValueRow>,
}

/// `GET /api/v1/admin/policy-values`.
#[derive(Serialize, ToSchema)]
pub struct Overrides {
    key: String,
    default: Json,
    overrides: Vec<Override>,
}

/// One key's entry in `GET /api/v1/admin/policy-values/counts`.
#[derive(Serialize, ToSchema)]
pub struct KeyCounts {
    /// Scopes below global holding a value now.
    overrides: i64,
    /// Changes scheduled at any level.
    scheduled: i64,
}

/// `GET /api/v1/admin/policy-values/counts`.
#[derive(Serialize, ToSchema)]
pub struct Counts {
    /// By key.
    keys: std::collections::BTreeMap<String, KeyCounts>,
}

/// A change in a scope's history.
#[derive(Serialize, ToSchema)]
pub struct HistoryItem {
    #[serde(flatten)]
    value: ValueRow,
    audit_id: Option<String>,
    /// The cancel row that cancelled this scheduled change.
    cancelled_by: Option<String>,
}

/// `GET /api/v1/admin/policy-values/history`.
#[derive(Serialize, ToSchema)]
pub struct History {
    key: String,
    scope: BTreeMap<String, String>,
    /// Newest first.
    changes: Vec<HistoryItem>,
}

/// An audit record.
#[derive(Serialize, ToSchema)]
pub struct AuditRecord {
    seq: i64,
    id: String,
    #[schema(format = DateTime)]
    occurred_at: String,
    actor: String,
    action: String,
    /// `success` or `refused`.
    outcome: String,
    code: Option<String>,
    policy_key: Option<String>,
    scope_level: Option<String>,
    scope_id: Option<String>,
    #[schema(format = DateTime)]
    effective_at: Option<String>,
    request_id: Option<String>,
    value_seq: Option<i64>,
    metadata: Json,
    prev_hash: String,
    hash: String,
}

/// `GET /api/v1/admin/audit-logs` (format json).
#[derive(Serialize, ToSchema)]
pub struct AuditPage {
    items: Vec<AuditRecord>,
    /// Pass as `cursor` for the next page; null on the last.
    next_cursor: Option<String>,
}

/// `GET /api/v1/admin/audit-logs/head`.
#[derive(Serialize, ToSchema)]
pub struct ChainHead {
    seq: i64,
    /// Hex sha256.
    hash: String,
}

/// `GET /api/v1/admin/audit-logs/verify`.
#[derive(Serialize, ToSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Verification {
    Intact { rows: i64, head: Option<ChainHead> },
    Broken { seq: i64, reason: String, rows_checked: i64 },
}

/// `GET /api/v1/replica`: the catalog as `policy_keys` columns and every
/// row in force or scheduled, at a position.
#[derive(Serialize, ToSchema)]
pub struct Image {
    position: i64,
    #[schema(format = DateTime)]
    horizon: String,
    #[schema(format = DateTime)]
    written_at: String,
    keys: Vec<Json>,
    rows: Vec<Json>,
}

/// One admin's approval of a change request.
#[derive(Serialize, ToSchema)]
pub struct Approval {
    approver: String,
    reason: String,
    #[schema(format = DateTime)]
    created_at: String,
}

/// A change request (docs/governance.md): a write to a key that needs
/// approval, waiting for it or decided.
#[derive(Serialize, ToSchema)]
pub struct ChangeRequest {
    id: String,
    /// Its place in the order requests were made (`before` in listings).
    number: i64,
    /// `pending`, `approved`, `scheduled`, `applied`, `rejected`,
    /// `withdrawn`, `expired` or `conflicted`.
    state: String,
    key: String,
    /// The write's scope, as in its body.
    scope: Json,
    level: String,
    scope_id: String,
    /// The proposed value (null: remove the override).
    value: Json,
    old_value: Json,
    #[schema(format = DateTime)]
    effective_at: Option<String>,
    reason: String,
    author: String,
    approvals_required: i64,
    approvals: Vec<Approval>,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    expires_at: String,
    #[schema(format = DateTime)]
    decided_at: Option<String>,
    decided_by: Option<String>,
    decision_reason: Option<String>,
    /// The value row it applied (or that already held its value).
    value_id: Option<String>,
    /// The value in force when it conflicted.
    current_value: Json,
}

/// `GET /api/v1/admin/change-requests`: a page, newest first.
#[derive(Serialize, ToSchema)]
pub struct ChangeRequestPage {
    change_requests: Vec<ChangeRequest>,
    /// Pass as `before` for the next page; null on the last one.
    next_before: Option<i64>,
}

/// An override that keeps its own value over a previewed change.
#[derive(Serialize, ToSchema)]
pub struct Shadow {
    level: String,
    scope_id: String,
    value: Json,
}

/// The overrides at more specific levels that shadow a previewed change.
#[derive(Serialize, ToSchema)]
pub struct Shadows {
    total: i64,
    /// How many at each level.
    by_level: BTreeMap<String, i64>,
    /// The first few, most specific level first.
    first: Vec<Shadow>,
}

/// `POST /api/v1/admin/policy-values/preview`: what a write would do.
#[derive(Serialize, ToSchema)]
pub struct Preview {
    /// `written`, `change_request`, or `unchanged` (the value is already
    /// stored at that scope: the write would answer 200 and write nothing).
    outcome: String,
    approvals_required: i64,
    key: String,
    scope: Json,
    #[schema(format = DateTime)]
    effective_at: Option<String>,
    /// The value at the scope before and after.
    before: Json,
    after: Json,
    shadowed_by: Shadows,
}
