//! Request extractors whose rejections are `ApiError`s: a JSON body (400 for
//! malformed JSON, 413 over the body limit, 415 without a JSON content type)
//! and a query string (422 for unknown or malformed parameters).

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// The body limit on every route.
pub const BODY_LIMIT: usize = 64 * 1024;

/// A JSON body, parsed into `T` in two steps so that syntax errors (400) and
/// shape errors (422 `invalid_request`) are told apart.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|mime| {
                let mime = mime.trim().to_ascii_lowercase();
                mime == "application/json" || mime.ends_with("+json")
            });
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::too_large()
            } else {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", rejection.body_text())
            }
        })?;
        let json: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", format!("malformed JSON: {e}")))?;
        let value = serde_json::from_value(json)
            .map_err(|e| ApiError::unprocessable("invalid_request", format!("invalid request body: {e}")))?;
        Ok(JsonBody(value))
    }
}

/// A query string parsed into `T`; unknown or malformed parameters are 422.
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Query(value) = Query::<T>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::unprocessable("invalid_query", e.body_text()))?;
        Ok(QueryParams(value))
    }
}

/// Deserializes a field that may be `null` so that `null` is `Some(Null)`
/// and only an absent field is `None` (with `#[serde(default)]`).
pub fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<serde_json::Value>, D::Error> {
    <serde_json::Value as serde::Deserialize>::deserialize(d).map(Some)
}

/// Parses an RFC 3339 time from a request field.
pub fn parse_time(field: &'static str, raw: &str) -> Result<time::OffsetDateTime, ApiError> {
    time::OffsetDateTime::parse(raw, &time::format_description::well_known::Rfc3339).map_err(|_| {
        ApiError::unprocessable(
            "invalid_time",
            format!("{field} must be an RFC 3339 time such as 2026-06-01T00:00:00Z"),
        )
        .with_details(serde_json::json!({ "field": field }))
    })
}
