//! Request extractors whose rejections are `ApiError`s: a JSON body (400 for
//! malformed JSON, 413 over the body limit, 415 without a JSON content type)
//! and a query string (422 for unknown or malformed parameters); and
//! `Valid<E>`, which runs the `validator` field rules of what `E` parsed
//! (422 with every failing field and rule).

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::json;
use validator::{Validate, ValidationErrors, ValidationErrorsKind};

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

/// A request part whose field rules are `#[derive(Validate)]` rules, with the
/// code its refusals carry.
pub trait FieldRules: Validate {
    /// The stable code of the 422 for a failing `field`;
    /// `validation_failed` unless the endpoint had a code of its own before.
    fn code_for(_field: &str) -> &'static str {
        "validation_failed"
    }
}

/// `JsonBody<T>` or `QueryParams<T>` whose `T` then passes its field rules:
/// else 422 with `details.errors`, one `{field, rule, message, params}` per
/// failing rule, sorted by field path. The code is that of the first failing
/// field (`FieldRules::code_for`). Meaning (keys, scopes, values) stays with
/// the domain's newtypes, checked after.
pub struct Valid<E>(pub E);

/// What a validated extractor holds.
pub trait Parsed {
    type Inner: FieldRules;
    fn inner(&self) -> &Self::Inner;
}

impl<T: FieldRules> Parsed for JsonBody<T> {
    type Inner = T;
    fn inner(&self) -> &T {
        &self.0
    }
}

impl<T: FieldRules> Parsed for QueryParams<T> {
    type Inner = T;
    fn inner(&self) -> &T {
        &self.0
    }
}

impl<S: Send + Sync, T: DeserializeOwned + FieldRules> FromRequest<S> for Valid<JsonBody<T>> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let body = JsonBody::<T>::from_request(req, state).await?;
        check(&body)?;
        Ok(Valid(body))
    }
}

impl<S: Send + Sync, T: DeserializeOwned + FieldRules> FromRequestParts<S> for Valid<QueryParams<T>> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let params = QueryParams::<T>::from_request_parts(parts, state).await?;
        check(&params)?;
        Ok(Valid(params))
    }
}

fn check<E: Parsed>(parsed: &E) -> Result<(), ApiError> {
    let Err(errors) = parsed.inner().validate() else { return Ok(()) };
    let mut failed = Vec::new();
    flatten("", &errors, &mut failed);
    failed.sort_by(|a, b| a["field"].as_str().cmp(&b["field"].as_str()));
    let first = failed.first().and_then(|e| e["field"].as_str()).unwrap_or_default().to_string();
    let message = failed
        .iter()
        .map(|e| format!("{}: {}", e["field"].as_str().unwrap_or_default(), e["message"].as_str().unwrap_or_default()))
        .collect::<Vec<_>>()
        .join("; ");
    Err(ApiError::unprocessable(E::Inner::code_for(&first), message)
        .with_details(json!({ "field": first, "errors": failed })))
}

/// Each failing rule as `{field, rule, message, params}`, with nested
/// structs and lists as dotted paths (`items.2.name`).
fn flatten(prefix: &str, errors: &ValidationErrors, out: &mut Vec<serde_json::Value>) {
    for (field, kind) in errors.errors() {
        let path = if prefix.is_empty() { field.to_string() } else { format!("{prefix}.{field}") };
        match kind {
            ValidationErrorsKind::Field(rules) => out.extend(rules.iter().map(|rule| {
                let message =
                    rule.message.as_deref().map(str::to_string).unwrap_or_else(|| format!("fails {}", rule.code));
                let params: serde_json::Map<_, _> = rule
                    .params
                    .iter()
                    .filter(|(k, _)| *k != "value")
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect();
                json!({ "field": path, "rule": rule.code, "message": message, "params": params })
            })),
            ValidationErrorsKind::Struct(inner) => flatten(&path, inner, out),
            ValidationErrorsKind::List(items) => {
                for (index, inner) in items {
                    flatten(&format!("{path}.{index}"), inner, out);
                }
            }
        }
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
