//! `ApiError`: every HTTP error as JSON `{code, message, details}` with a
//! stable snake_case `code`. Store errors are mapped to HTTP in one place.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::domain::{ScopeError, ValueError};
use crate::store::StoreError;

/// What `Retry-After` says when the database is away, in seconds.
pub const RETRY_AFTER_SECONDS: u64 = 1;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: serde_json::Value,
    /// Seconds, for a `Retry-After` header (429, 503).
    pub retry_after: Option<u64>,
}

/// The JSON body of every error, for the OpenAPI document.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// A stable snake_case code a program can match.
    pub code: String,
    pub message: String,
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
}

/// The code of an error response, kept in its extensions so middleware
/// (the audit of refused attempts) can read it without parsing the body.
#[derive(Debug, Clone, Copy)]
pub struct ErrorCode(pub &'static str);

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), details: json!({}), retry_after: None }
    }

    pub fn with_details(mut self, details: serde_json::Value) -> ApiError {
        self.details = details;
        self
    }

    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    pub fn unknown_key(key: &str) -> ApiError {
        ApiError::unprocessable("unknown_key", format!("unknown policy key {key:?}"))
            .with_details(json!({ "key": key }))
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// A value that does not fit its key, for the named request field.
    pub fn bad_value(field: &str, err: ValueError) -> ApiError {
        let code = match err {
            ValueError::TypeMismatch { .. } => "type_mismatch",
            ValueError::OutOfBounds { .. } => "out_of_bounds",
            ValueError::ListItemType { .. } => "list_item_type",
            ValueError::ListTooLong { .. } => "list_too_long",
            ValueError::ListDuplicateItem { .. } => "list_duplicate_item",
            ValueError::ListItemNotAllowed { .. } => "list_item_not_allowed",
        };
        let mut details = json!({ "field": field });
        match &err {
            ValueError::ListItemType { index, .. } => details["index"] = json!(index),
            ValueError::ListTooLong { max_items, .. } => details["max_items"] = json!(max_items),
            _ => {}
        }
        if let Some(item) = err.item() {
            details["item"] = json!(item);
        }
        ApiError::unprocessable(code, format!("{field}: {err}")).with_details(details)
    }

    pub fn bad_scope(err: ScopeError) -> ApiError {
        ApiError::unprocessable("invalid_scope", err.to_string())
    }

    pub fn too_large() -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body exceeds {} bytes", super::extract::BODY_LIMIT),
        )
    }

    pub fn rate_limited(retry_after: u64) -> ApiError {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("too many admin writes with this token; retry in {retry_after} s"),
        )
        .retry_after(retry_after)
    }

    /// Adds a `Retry-After` of `seconds`.
    pub fn retry_after(mut self, seconds: u64) -> ApiError {
        self.retry_after = Some(seconds);
        self
    }

    /// The database cannot be reached: try again later.
    pub fn database_unavailable() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            "the database cannot be reached; retry later",
        )
        .retry_after(RETRY_AFTER_SECONDS)
    }

    /// The connection broke after COMMIT was sent: the write may have been
    /// made. The caller re-reads the value before retrying.
    pub fn commit_unknown() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "commit_outcome_unknown",
            "the connection to the database failed after the commit was sent: the write may or may not have \
             been made; read the current value before retrying",
        )
        .retry_after(RETRY_AFTER_SECONDS)
    }

    /// The server is shutting down: another server (or this one, restarted)
    /// answers the retry.
    pub fn shutting_down() -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", "the server is shutting down; retry")
            .retry_after(1)
    }

    pub fn internal() -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error; see the server log")
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> ApiError {
        match err {
            StoreError::UnknownKey(key) => ApiError::unknown_key(&key),
            StoreError::StaleOldValue { current } => ApiError::new(
                StatusCode::CONFLICT,
                "stale_old_value",
                format!("old_value does not match what the write replaces; the current value is {current}"),
            )
            .with_details(json!({ "current_value": current })),
            StoreError::EffectiveAtInPast { now } => {
                ApiError::unprocessable("effective_at_in_past", "effective_at lies more than 60 seconds in the past")
                    .with_details(
                        json!({ "database_time": now.format(&time::format_description::well_known::Rfc3339).ok() }),
                    )
            }
            StoreError::NotOverridden => {
                ApiError::new(StatusCode::CONFLICT, "not_overridden", "nothing is stored at this scope to remove")
            }
            StoreError::NotFound => ApiError::not_found("no such value row"),
            StoreError::OutOfBounds(message) => ApiError::unprocessable("out_of_bounds", message),
            StoreError::NotScheduled => ApiError::new(
                StatusCode::CONFLICT,
                "not_scheduled",
                "the change already took effect; only scheduled changes can be cancelled",
            ),
            StoreError::AlreadyCancelled => {
                ApiError::new(StatusCode::CONFLICT, "already_cancelled", "the change was already cancelled")
            }
            StoreError::CatalogConflict(offending) => ApiError::new(
                StatusCode::CONFLICT,
                "catalog_conflict",
                "the catalog change would leave stored values out of bounds",
            )
            .with_details(json!({ "offending": offending })),
            StoreError::CommitUnknown(e) => {
                tracing::error!(error = %e, "commit outcome unknown");
                ApiError::commit_unknown()
            }
            err if err.is_unavailable() => {
                tracing::warn!(error = %err, "database unavailable");
                ApiError::database_unavailable()
            }
            err @ (StoreError::Corrupt(_)
            | StoreError::Database(_)
            | StoreError::Shared(_)
            | StoreError::Task(_)
            | StoreError::Migrate(_)) => {
                tracing::error!(error = %err, "store error");
                ApiError::internal()
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({ "code": self.code, "message": self.message, "details": self.details }));
        let mut response = (self.status, body).into_response();
        response.extensions_mut().insert(ErrorCode(self.code));
        if let Some(seconds) = self.retry_after.and_then(|s| HeaderValue::from_str(&s.to_string()).ok()) {
            response.headers_mut().insert(header::RETRY_AFTER, seconds);
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
