//! Admin endpoints: write a value (or remove an override), cancel a
//! scheduled change, list a key's overrides.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::error::ApiError;
use super::extract::{parse_time, present, FieldRules, JsonBody, QueryParams, Valid};
use super::read::key_def;
use super::AppState;
use crate::domain::{KeyDef, Value, WriteScope};
use crate::store::tokens::Principal;
use crate::store::values::{self, Actor, Change, Outcome, Unchanged, Written};
use crate::store::writer::Request;

/// The body of `POST /api/v1/admin/policy-values`, as sent. Every field is
/// optional here so each missing one gets its own error code.
#[derive(Debug, Deserialize, utoipa::ToSchema, validator::Validate)]
#[serde(deny_unknown_fields)]
pub struct WriteBody {
    #[schema(required = true, example = "allocation.refund_window_days")]
    key: Option<String>,
    /// `{}` for global, or exactly one of user_id, project_id, org_id, plan.
    #[schema(required = true, value_type = Object, example = json!({"org_id": "acme"}))]
    scope: Option<serde_json::Value>,
    /// The new value; `null` removes the override at the scope.
    #[serde(default, deserialize_with = "present")]
    #[schema(required = true, example = 45)]
    value: Option<serde_json::Value>,
    /// RFC 3339; default now; in the future it schedules the change.
    #[schema(example = "2026-12-01T00:00:00Z")]
    effective_at: Option<String>,
    #[schema(required = true, example = "Customer success request")]
    #[validate(
        required(message = "reason is required"),
        length(min = 1, max = REASON_MAX),
        custom(function = "reason_text")
    )]
    reason: Option<String>,
    /// What the write replaces: the value at this scope now, else the global value.
    #[schema(required = true, example = 30)]
    old_value: Option<serde_json::Value>,
}

/// The longest reason accepted, in characters.
pub const REASON_MAX: u64 = 1000;

/// The field rule of a reason beyond its length: not blank, and no control
/// characters other than line breaks and tabs.
pub fn reason_text(reason: &str) -> Result<(), validator::ValidationError> {
    if reason.trim().is_empty() {
        return Err(validator::ValidationError::new("not_blank").with_message("reason must not be blank".into()));
    }
    if reason.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')) {
        return Err(validator::ValidationError::new("no_control_characters")
            .with_message("reason has control characters other than line breaks and tabs".into()));
    }
    Ok(())
}

impl FieldRules for WriteBody {
    fn code_for(field: &str) -> &'static str {
        match field {
            "reason" => "invalid_reason",
            _ => "validation_failed",
        }
    }
}

fn missing(field: &str) -> ApiError {
    ApiError::unprocessable("missing_field", format!("{field} is required")).with_details(json!({ "field": field }))
}

/// The reason as stored: trimmed. Its rules (required, 1 to `REASON_MAX`
/// characters, not blank, no control characters but line breaks and tabs)
/// are the body's field rules, checked by the `Valid` extractor before any
/// handler runs.
pub fn trimmed_reason(reason: Option<&str>) -> String {
    reason.map(str::trim).unwrap_or_default().to_string()
}

impl WriteBody {
    /// The key as sent.
    pub(super) fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// Validates everything that can be checked without the current state.
    pub(super) fn into_change(self, def: &KeyDef) -> Result<Change, ApiError> {
        let scope = WriteScope::from_json(self.scope.as_ref().ok_or_else(|| {
            ApiError::unprocessable(
                "invalid_scope",
                "scope is required: {} for global or one of user_id, project_id, org_id, plan",
            )
        })?)
        .map_err(ApiError::bad_scope)?;
        let value = match self.value.ok_or_else(|| missing("value"))? {
            serde_json::Value::Null => None,
            json => Some(def.parse_value(&json).map_err(|e| ApiError::bad_value("value", e))?),
        };
        let old_value = match self.old_value {
            None | Some(serde_json::Value::Null) => return Err(missing("old_value")),
            Some(json) => Value::from_json(&json, def.value_type).map_err(|e| ApiError::bad_value("old_value", e))?,
        };
        let effective_at = self.effective_at.as_deref().map(|t| parse_time("effective_at", t)).transpose()?;
        let reason = trimmed_reason(self.reason.as_deref());
        Ok(Change { scope, value, effective_at, reason, old_value })
    }
}

/// Waits (briefly) until this server's replica has the row, so the next
/// read through this server sees the write. The write is committed either
/// way (the writer answers only after its COMMIT): a slow replica delays
/// the answer, never changes it, and is counted.
pub(super) async fn visible(state: &AppState, seq: i64) {
    if !state.replica.wait_for(seq, std::time::Duration::from_secs(2)).await {
        metrics::counter!("policy_values_write_visibility_slow_total").increment(1);
        tracing::warn!(seq, "the replica did not apply a committed write within 2 s");
    }
}

/// The caller's `X-Request-Id`, recorded with what its request wrote.
pub(super) fn request_id(headers: &HeaderMap) -> Option<&str> {
    headers.get("x-request-id").and_then(|v| v.to_str().ok())
}

fn written_json(written: Written) -> serde_json::Value {
    json!({ "unchanged": false, "value": written.value, "old_value": written.old_value,
            "audit_id": written.audit_id, "audit_seq": written.audit_seq })
}

#[tracing::instrument(skip_all, fields(key, principal = %principal.name))]
#[utoipa::path(post, path = "/api/v1/admin/policy-values", tag = "admin", request_body = WriteBody,
    responses((status = 201, description = "the new value row, what it replaced and its audit id", body = super::schemas::Written),
              (status = 200, description = "the value was already stored at that scope: nothing written", body = super::schemas::Unchanged),
              (status = 202, description = "the key needs approval: the change request made, no value changed", body = super::schemas::ChangeRequest)))]
pub async fn write(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    Valid(JsonBody(body)): Valid<JsonBody<WriteBody>>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    state.writes.take(principal.token_id).map_err(ApiError::rate_limited)?;
    let def = key_def(&state, body.key.as_deref()).await?;
    tracing::Span::current().record("key", def.key.as_str());
    let change = body.into_change(&def)?;
    super::change_requests::check_scope(&principal, def.key.as_str(), change.scope.level().as_str())?;
    if def.approvals_required > 0 {
        return super::change_requests::propose(&state, &principal, def, change, &headers).await;
    }
    let actor = Actor { principal: &principal.name, request_id: request_id(&headers) };
    match state.writer.write(Request::new(def, &change, actor)).await? {
        Outcome::Written(written) => {
            super::metrics::admin_write("success", "created");
            visible(&state, written.value.seq).await;
            Ok((StatusCode::CREATED, Json(written_json(written))))
        }
        Outcome::Unchanged(same) => Ok(unchanged(same)),
    }
}

/// The answer to a write that changed nothing (for a key that needs
/// approval too: nothing to approve): 200 and the row already holding it.
pub fn unchanged(same: Unchanged) -> (StatusCode, Json<serde_json::Value>) {
    super::metrics::admin_write("success", "unchanged");
    let mut body = json!(same);
    body["unchanged"] = json!(true);
    body["old_value"] = same.value;
    (StatusCode::OK, Json(body))
}

#[derive(Debug, Deserialize, utoipa::ToSchema, validator::Validate)]
#[serde(deny_unknown_fields)]
pub struct CancelBody {
    #[schema(required = true, example = "customer withdrew")]
    #[validate(
        required(message = "reason is required"),
        length(min = 1, max = REASON_MAX),
        custom(function = "reason_text")
    )]
    reason: Option<String>,
}

impl FieldRules for CancelBody {
    fn code_for(_field: &str) -> &'static str {
        "invalid_reason"
    }
}

#[tracing::instrument(skip_all, fields(%id, principal = %principal.name))]
#[utoipa::path(post, path = "/api/v1/admin/policy-values/{id}/cancel", tag = "admin", request_body = CancelBody,
    params(("id" = String, Path, description = "the scheduled value row's id")),
    responses((status = 200, description = "the cancel row and its audit id", body = super::schemas::Written)))]
pub async fn cancel(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Valid(JsonBody(body)): Valid<JsonBody<CancelBody>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    state.writes.take(principal.token_id).map_err(ApiError::rate_limited)?;
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::not_found("no such value row"))?;
    let reason = trimmed_reason(body.reason.as_deref());
    if principal.key_patterns.is_some() || principal.levels.is_some() {
        if let Some((key, level)) = crate::store::change_requests::value_row_scope(&state.pool, id).await? {
            super::change_requests::check_scope(&principal, &key, &level)?;
        }
    }
    // Detached: its transaction runs to completion if the caller hangs up.
    let (pool, name, rid) = (state.pool.clone(), principal.name.clone(), request_id(&headers).map(str::to_string));
    let written = crate::store::pool::detached(async move {
        values::cancel(&pool, id, &reason, Actor { principal: &name, request_id: rid.as_deref() }).await
    })
    .await?;
    super::metrics::admin_write("success", "cancelled");
    visible(&state, written.value.seq).await;
    Ok(Json(written_json(written)))
}

/// `GET /api/v1/admin/policy-values/counts`: per key, the scopes below
/// global holding a value now and the scheduled changes, in one query (the
/// console's catalog).
#[utoipa::path(get, path = "/api/v1/admin/policy-values/counts", tag = "audit",
    responses((status = 200, description = "per key: overrides in force and scheduled changes (keys with neither are absent)", body = super::schemas::Counts)))]
pub async fn counts(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let counts = values::counts(&state.pool).await?;
    Ok(Json(json!({ "keys": counts })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverridesParams {
    key: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/admin/policy-values", tag = "audit",
    params(("key" = String, Query, description = "the policy key")),
    responses((status = 200, description = "every scope overriding the key now or later", body = super::schemas::Overrides)))]
pub async fn overrides(
    State(state): State<AppState>,
    QueryParams(params): QueryParams<OverridesParams>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let def = key_def(&state, params.key.as_deref()).await?;
    let overrides = values::overrides(&state.pool, def.key.as_str()).await?;
    Ok(Json(json!({ "key": def.key, "default": def.default, "overrides": overrides })))
}
