//! Change requests (docs/governance.md): an admin's write to a key that
//! needs approval becomes a request (202); other admins approve or reject
//! it, its author may withdraw it, and the approval that completes it
//! applies it through the write path with its `old_value` check.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::admin::{request_id, trimmed_reason};
use super::error::ApiError;
use super::extract::{FieldRules, JsonBody, QueryParams, Valid};
use super::AppState;
use crate::domain::KeyDef;
use crate::store::change_requests::{self as requests, Decider, Decision, Filter, RequestError};
use crate::store::tokens::Principal;
use crate::store::values::{Actor, Change};

/// How long a pending request waits for its approvals by default.
pub const DEFAULT_TTL: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// The states a request can be in, for the list filter.
pub const STATES: [&str; 7] = ["pending", "applied", "scheduled", "rejected", "withdrawn", "conflicted", "expired"];

impl From<RequestError> for ApiError {
    fn from(err: RequestError) -> ApiError {
        match err {
            RequestError::Store(e) => e.into(),
            RequestError::NotFound => ApiError::not_found("no such change request"),
            RequestError::NotPending { state } => ApiError::new(
                StatusCode::CONFLICT,
                "not_pending",
                format!("the change request is {state}; only a pending request can be decided"),
            )
            .with_details(json!({ "state": state })),
            RequestError::SelfApproval => ApiError::new(
                StatusCode::FORBIDDEN,
                "self_approval",
                "the author of a change request cannot approve it; another admin must",
            ),
            RequestError::AlreadyApproved => ApiError::new(
                StatusCode::CONFLICT,
                "already_approved",
                "you already approved this change request; an approver counts once",
            ),
            RequestError::NotAuthor => ApiError::new(
                StatusCode::FORBIDDEN,
                "not_author",
                "only the author of a change request can withdraw it; reject it instead",
            ),
            RequestError::OutOfScope => out_of_scope(),
            RequestError::Conflicted { request, refusal } => {
                let mut api = ApiError::from(refusal);
                api.status = StatusCode::CONFLICT;
                api.message =
                    format!("the change request conflicts with a newer change and was not applied: {}", api.message);
                let current = request.current_value.clone();
                api.with_details(json!({ "current_value": current, "change_request": request }))
            }
        }
    }
}

/// 403 `out_of_scope`: the token is limited to other keys or levels.
pub fn out_of_scope() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "out_of_scope",
        "this token is limited to other keys or levels (see `policy-values token list`)",
    )
}

/// Refuses a key and level the principal's token may not touch.
pub fn check_scope(principal: &Principal, key: &str, level: &str) -> Result<(), ApiError> {
    if principal.may_touch(key, level) {
        Ok(())
    } else {
        Err(out_of_scope().with_details(json!({ "key": key, "level": level })))
    }
}

/// The admin write of a key that needs approval: a pending request, 202.
pub async fn propose(
    state: &AppState,
    principal: &Principal,
    def: KeyDef,
    change: Change,
    headers: &HeaderMap,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let (pool, ttl) = (state.pool.clone(), state.change_request_ttl);
    let (name, rid) = (principal.name.clone(), request_id(headers).map(str::to_string));
    // Detached: its transaction runs to completion if the caller hangs up.
    let request = crate::store::pool::detached(async move {
        let actor = Actor { principal: &name, request_id: rid.as_deref() };
        requests::create(&pool, &def, &change, actor, ttl).await
    })
    .await?;
    match request {
        requests::Proposal::Request(request) => {
            super::metrics::admin_write("success", "change_request");
            Ok((StatusCode::ACCEPTED, Json(json!(request))))
        }
        requests::Proposal::Unchanged(same) => Ok(super::admin::unchanged(same)),
    }
}

#[derive(Debug, Deserialize, validator::Validate)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    state: Option<String>,
    #[validate(custom(function = "super::audit::filter_text"))]
    key: Option<String>,
    #[validate(custom(function = "super::audit::filter_text"))]
    author: Option<String>,
    /// The `number` of the last request of the previous page.
    before: Option<i64>,
    #[validate(range(min = 1, max = 200, message = "limit must be 1 to 200"))]
    limit: Option<i64>,
}

impl FieldRules for ListParams {
    fn code_for(field: &str) -> &'static str {
        match field {
            "limit" => "invalid_limit",
            "key" | "author" => "invalid_query",
            _ => "validation_failed",
        }
    }
}

/// The longest page.
pub const PAGE_MAX: i64 = 200;

#[tracing::instrument(skip_all)]
#[utoipa::path(get, path = "/api/v1/admin/change-requests", tag = "governance",
    params(("state" = Option<String>, Query, description = "pending, applied, scheduled, rejected, withdrawn, conflicted or expired"),
           ("key" = Option<String>, Query), ("author" = Option<String>, Query),
           ("before" = Option<i64>, Query, description = "next_before of the previous page"),
           ("limit" = Option<i64>, Query, description = "1 to 200, default 50")),
    responses((status = 200, description = "{change_requests: [...], next_before}, newest first", body = super::schemas::ChangeRequestPage)))]
pub async fn list(
    State(state): State<AppState>,
    Valid(QueryParams(params)): Valid<QueryParams<ListParams>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if let Some(s) = params.state.as_deref().filter(|s| !STATES.contains(s)) {
        return Err(ApiError::unprocessable("invalid_state", format!("unknown state {s:?}"))
            .with_details(json!({ "states": STATES })));
    }
    let limit = params.limit.unwrap_or(50);
    expire(&state).await?;
    let filter = Filter { state: params.state, key: params.key, author: params.author, before: params.before, limit };
    let page = requests::list(&state.pool, &filter).await?;
    let next_before = (page.len() as i64 == limit).then(|| page.last().map(|r| r.number)).flatten();
    Ok(Json(json!({ "change_requests": page, "next_before": next_before })))
}

/// Records the expiry of pending requests past their time, so that what
/// is answered is current.
async fn expire(state: &AppState) -> Result<(), ApiError> {
    let pool = state.pool.clone();
    crate::store::pool::detached(async move { requests::expire_due(&pool).await.map(|_| ()) }).await?;
    Ok(())
}

fn parse_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| ApiError::not_found("no such change request"))
}

#[utoipa::path(get, path = "/api/v1/admin/change-requests/{id}", tag = "governance",
    params(("id" = String, Path)),
    responses((status = 200, description = "the change request with its approvals", body = super::schemas::ChangeRequest)))]
pub async fn show(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<serde_json::Value>, ApiError> {
    let id = parse_id(&id)?;
    expire(&state).await?;
    let request = requests::get(&state.pool, id).await?.ok_or_else(|| ApiError::not_found("no such change request"))?;
    Ok(Json(json!(request)))
}

#[derive(Debug, Deserialize, utoipa::ToSchema, validator::Validate)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    #[schema(required = true, example = "checked with finance")]
    #[validate(
        required(message = "reason is required"),
        length(min = 1, max = super::admin::REASON_MAX),
        custom(function = "super::admin::reason_text")
    )]
    reason: Option<String>,
}

impl FieldRules for DecisionBody {
    fn code_for(_field: &str) -> &'static str {
        "invalid_reason"
    }
}

async fn decide(
    state: AppState,
    principal: Principal,
    id: String,
    headers: HeaderMap,
    body: DecisionBody,
    decision: Decision,
) -> Result<Json<serde_json::Value>, ApiError> {
    state.writes.take(principal.token_id).map_err(ApiError::rate_limited)?;
    let id = parse_id(&id)?;
    let reason = trimmed_reason(body.reason.as_deref());
    let (pool, rid) = (state.pool.clone(), request_id(&headers).map(str::to_string));
    let decided = crate::store::pool::detached(async move {
        let allowed = |key: &str, level: &str| principal.may_touch(key, level);
        let who =
            Decider { actor: Actor { principal: &principal.name, request_id: rid.as_deref() }, allowed: &allowed };
        Ok(requests::decide(&pool, id, decision, &reason, &who).await)
    })
    .await??;
    if let Some(value_id) = decided.value_id {
        let seq = sqlx::query_scalar!("select seq from policy_values where id = $1", value_id)
            .fetch_one(&state.pool)
            .await
            .map_err(crate::store::StoreError::from)?;
        super::admin::visible(&state, seq).await;
    }
    Ok(Json(json!(decided)))
}

/// The three decisions on a change request: one handler each (its own
/// route and OpenAPI operation), the same extractors, then `decide`.
/// (Skipped by rustfmt, which indents the attribute's continuation
/// lines further on every run inside a macro.)
#[rustfmt::skip]
macro_rules! decision_handler {
    ($name:ident, $path:tt, $decision:expr, $answer:tt) => {
        #[utoipa::path(post, path = $path, tag = "governance", request_body = DecisionBody,
            params(("id" = String, Path)),
            responses((status = 200, description = $answer, body = super::schemas::ChangeRequest)))]
        pub async fn $name(
            State(state): State<AppState>,
            Extension(principal): Extension<Principal>,
            Path(id): Path<String>,
            headers: HeaderMap,
            Valid(JsonBody(body)): Valid<JsonBody<DecisionBody>>,
        ) -> Result<Json<serde_json::Value>, ApiError> {
            decide(state, principal, id, headers, body, $decision).await
        }
    };
}

decision_handler!(
    approve,
    "/api/v1/admin/change-requests/{id}/approve",
    Decision::Approve,
    "the request; applied or scheduled once it has its approvals"
);
decision_handler!(reject, "/api/v1/admin/change-requests/{id}/reject", Decision::Reject, "the rejected request");
decision_handler!(withdraw, "/api/v1/admin/change-requests/{id}/withdraw", Decision::Withdraw, "the withdrawn request");
