//! Refused admin writes are audited too: a middleware around the write
//! routes, outside authentication, records every 4xx answer (401, 403, 409,
//! 413, 422, 429, ...) with its code and no value row, within the per-
//! principal cap of `limits::RefusalLimiter`.

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::error::{ApiError, ErrorCode};
use super::extract::BODY_LIMIT;
use super::AppState;
use crate::domain::WriteScope;
use crate::store::audit::{self, NewAuditRecord};
use crate::store::tokens::Principal;

/// Who a refused request came from, for the audit log.
const ANONYMOUS: &str = "anonymous";

pub async fn audit_refusals(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let action = if parts.uri.path().ends_with("/cancel") {
        "policy_value.cancel"
    } else if parts.uri.path().contains("/change-requests/") {
        "change_request.decide"
    } else {
        "policy_value.write"
    };
    let request_id = parts.headers.get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_string);
    let (bytes, response) = match to_bytes(body, BODY_LIMIT).await {
        Ok(bytes) => {
            let response = next.run(Request::from_parts(parts, Body::from(bytes.clone()))).await;
            (bytes, response)
        }
        Err(_) => (Default::default(), ApiError::too_large().into_response()),
    };
    if response.status().is_client_error() {
        let code = response.extensions().get::<ErrorCode>().map_or("refused", |c| c.0);
        super::metrics::admin_write("refused", code);
        let principal = response.extensions().get::<Principal>().map_or(ANONYMOUS.to_string(), |p| p.name.clone());
        let attempt = Attempt { action, code, status: response.status().as_u16(), request_id, body: bytes };
        // Detached: the record is written even if the caller hangs up now.
        let recorded = crate::store::pool::detached(async move {
            record(&state, &principal, attempt).await;
            Ok(())
        });
        let _ = recorded.await;
    }
    response
}

struct Attempt {
    action: &'static str,
    code: &'static str,
    status: u16,
    request_id: Option<String>,
    body: axum::body::Bytes,
}

/// Appends the refusal (and, first, a summary of any suppressed ones). A
/// failure to audit is logged; it does not change the answer.
async fn record(state: &AppState, actor: &str, attempt: Attempt) {
    let decision = state.refusals.decide(actor);
    if decision.summarize > 0 {
        let summary = NewAuditRecord {
            actor,
            action: "audit.refusals_suppressed",
            outcome: Some("refused"),
            code: Some("suppressed"),
            metadata: json!({ "suppressed": decision.summarize, "per_minute_cap": super::limits::REFUSALS_PER_MINUTE }),
            ..Default::default()
        };
        if let Err(e) = audit::append(&state.pool, &summary).await {
            tracing::error!(error = %e, "could not audit suppressed refusals");
        }
    }
    if !decision.record {
        return;
    }
    // What the request said, as far as it parses; bounded in size.
    let body: serde_json::Value = serde_json::from_slice(&attempt.body).unwrap_or_default();
    // Control characters are dropped: a NUL cannot even be stored.
    let text = |field: &str, max: usize| {
        let raw = body.get(field).and_then(|v| v.as_str())?;
        Some(raw.chars().filter(|c| !c.is_control() || matches!(c, '\n' | '\t')).take(max).collect::<String>())
    };
    let key = text("key", 128);
    let scope = body.get("scope").and_then(|s| WriteScope::from_json(s).ok());
    let record = NewAuditRecord {
        actor,
        action: attempt.action,
        outcome: Some("refused"),
        code: Some(attempt.code),
        policy_key: key.as_deref(),
        scope_level: scope.as_ref().map(|s| s.level().as_str()),
        scope_id: scope.as_ref().map(|s| s.id()),
        request_id: attempt.request_id.as_deref(),
        metadata: json!({
            "status": attempt.status,
            "policy_key": key,
            "reason": text("reason", 1000),
            "new_value": body.get("value").filter(|v| v.is_number() || v.is_boolean() || v.is_string() || v.is_null()),
            "old_value": body.get("old_value").filter(|v| v.is_number() || v.is_boolean() || v.is_string()),
        }),
        ..Default::default()
    };
    if let Err(e) = audit::append(&state.pool, &record).await {
        tracing::error!(error = %e, "could not audit a refused attempt");
    }
}
