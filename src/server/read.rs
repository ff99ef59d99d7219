//! Read endpoints: the catalog, resolve with explanation, the per-scope
//! snapshot with its ETag, health and readiness.

use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, ETAG, IF_NONE_MATCH};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::error::ApiError;
use super::extract::{parse_time, QueryParams};
use super::AppState;
use crate::client::PolicyError;
use crate::domain::snapshot::NoneMatch;
use crate::domain::{KeyDef, Level, PolicyKey, Resolution, Scope, SnapshotTag, WriteScope};
use crate::store::{keys, resolve as store_resolve};

/// The four scope fields a caller may pass.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeParams {
    user_id: Option<String>,
    project_id: Option<String>,
    org_id: Option<String>,
    plan: Option<String>,
}

impl ScopeParams {
    /// The fields given, most specific level first.
    fn given(&self) -> impl Iterator<Item = (Level, &str)> {
        [
            (Level::User, &self.user_id),
            (Level::Project, &self.project_id),
            (Level::Org, &self.org_id),
            (Level::Plan, &self.plan),
        ]
        .into_iter()
        .filter_map(|(level, id)| Some((level, id.as_deref()?)))
    }

    /// At most one field, as a write scope; `None` when none is given.
    pub fn to_write_scope(&self) -> Result<Option<WriteScope>, ApiError> {
        let given: Vec<(Level, &str)> = self.given().collect();
        match given.as_slice() {
            [] => Ok(None),
            [(level, id)] => WriteScope::at(*level, id).map(Some).map_err(ApiError::bad_scope),
            _ => Err(ApiError::bad_scope(crate::domain::ScopeError::NotOneLevel)),
        }
    }

    pub fn to_scope(&self) -> Result<Scope, ApiError> {
        self.given().try_fold(Scope::new(), |scope, (level, id)| scope.with(level, id).map_err(ApiError::bad_scope))
    }
}

#[utoipa::path(get, path = "/api/v1/policy-keys", tag = "read",
    responses((status = 200, description = "the catalog: {keys: [...]}", body = super::schemas::Catalog)))]
pub async fn keys(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    // From the replica, which follows catalog changes: no database needed.
    Ok(Json(json!({ "keys": state.replica.catalog() })))
}

/// Marks an answer from a replica that may be stale (its database
/// unreachable): `Age` (seconds) and `Policy-Values-Stale-Since` (RFC 3339).
pub async fn mark_stale(
    State(state): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let mut response = next.run(req).await;
    if let Some(since) = state.replica.stale_since() {
        let age = (time::OffsetDateTime::now_utc() - since).whole_seconds().max(0);
        let headers = response.headers_mut();
        if let Ok(value) = HeaderValue::from_str(&age.to_string()) {
            headers.insert(axum::http::header::AGE, value);
        }
        let since = since.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
        if let Ok(value) = HeaderValue::from_str(&since) {
            headers.insert(STALE_SINCE, value);
        }
    }
    response
}

/// The header that says since when an answer may be stale.
pub const STALE_SINCE: axum::http::HeaderName = axum::http::HeaderName::from_static("policy-values-stale-since");

fn missing_key() -> ApiError {
    ApiError::unprocessable("missing_field", "key is required").with_details(json!({ "field": "key" }))
}

/// Looks a key up in the catalog; unknown keys are 422 `unknown_key`.
pub async fn key_def(state: &AppState, key: Option<&str>) -> Result<KeyDef, ApiError> {
    let key = key.ok_or_else(missing_key)?;
    // A name that cannot be a key is unknown without asking the database.
    if PolicyKey::parse(key).is_none() {
        return Err(ApiError::unknown_key(key));
    }
    // The replica follows catalog changes; the database only for a key it
    // does not know yet (added a moment ago).
    if let Some(def) = state.replica.key_def(key) {
        return Ok(def);
    }
    keys::get(&state.pool, key).await?.ok_or_else(|| ApiError::unknown_key(key))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolveParams {
    key: Option<String>,
    at: Option<String>,
    #[serde(flatten)]
    scope: ScopeParams,
}

/// A resolution; with `at`, also the audit record of the change that won
/// (current answers come from memory and leave it null: see `history`).
#[derive(Debug, serde::Serialize)]
pub struct ResolveAnswer {
    #[serde(flatten)]
    resolution: Resolution,
    audit_id: Option<uuid::Uuid>,
}

#[utoipa::path(get, path = "/api/v1/policy-values/resolve", tag = "read",
    params(("key" = String, Query, description = "the policy key"),
        ("user_id" = Option<String>, Query, description = "the caller's user id"),
        ("project_id" = Option<String>, Query, description = "the caller's project id"),
        ("org_id" = Option<String>, Query, description = "the caller's organisation id"),
        ("plan" = Option<String>, Query, description = "the caller's plan"),
        ("at" = Option<String>, Query, description = "RFC 3339 time to answer as of")),
    responses((status = 200, description = "the value, its source, every level consulted and the winning audit id", body = super::schemas::Resolution)))]
pub async fn resolve(
    State(state): State<AppState>,
    QueryParams(params): QueryParams<ResolveParams>,
) -> Result<Json<ResolveAnswer>, ApiError> {
    let scope = params.scope.to_scope()?;
    let at = params.at.as_deref().map(|raw| parse_time("at", raw)).transpose()?;
    let Some(at) = at else {
        // Now: from the server's replica, no database round trip.
        let key = params.key.as_deref().ok_or_else(missing_key)?;
        let explained = state.replica.explain(&scope, key).map_err(|e| match e {
            PolicyError::Unavailable(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                "no value is known: the database is unreachable",
            ),
            _ => ApiError::unknown_key(key),
        })?;
        return Ok(Json(ResolveAnswer { resolution: explained.resolution, audit_id: None }));
    };
    let def = key_def(&state, params.key.as_deref()).await?;
    let mut conn = state.pool.acquire().await.map_err(crate::store::StoreError::from)?;
    let resolution = store_resolve::resolve(&mut conn, &def, &scope, Some(at)).await?;
    let audit_id = match resolution.source.value_id {
        Some(value_id) => crate::store::audit_query::id_for_value(&mut *conn, value_id).await?,
        None => None,
    };
    Ok(Json(ResolveAnswer { resolution, audit_id }))
}

/// Whether `If-None-Match` names `etag` (or `*`): the caller's copy is
/// current, answer 304.
pub(super) fn none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| tag.trim() == etag || tag.trim() == "*")
}

/// Every key for one scope, from the server's replica (no database round
/// trip). The ETag names the document by its position, the catalog, the
/// scope and its next scheduled change (`domain::SnapshotTag`), so a
/// matching `If-None-Match` is answered 304 before any document is built.
#[utoipa::path(get, path = "/api/v1/policy-values/snapshot", tag = "read",
    params(("user_id" = Option<String>, Query, description = "the caller's user id"),
        ("project_id" = Option<String>, Query, description = "the caller's project id"),
        ("org_id" = Option<String>, Query, description = "the caller's organisation id"),
        ("plan" = Option<String>, Query, description = "the caller's plan"),),
    responses((status = 200, description = "every key resolved for the scope, with an ETag", body = super::schemas::Snapshot),
              (status = 304, description = "unchanged since the If-None-Match ETag")))]
pub async fn snapshot(
    State(state): State<AppState>,
    headers: HeaderMap,
    QueryParams(params): QueryParams<ScopeParams>,
) -> Result<Response, ApiError> {
    let scope = params.to_scope()?;
    let cache = (CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    let if_none_match = headers.get_all(IF_NONE_MATCH).iter().filter_map(|v| v.to_str().ok());
    for header in if_none_match {
        match state.replica.snapshot_unchanged(header, &scope) {
            Some(NoneMatch::Tag(tag)) => {
                return Ok((StatusCode::NOT_MODIFIED, [(ETAG, etag_header(&tag)), cache]).into_response());
            }
            Some(NoneMatch::Any) => return Ok((StatusCode::NOT_MODIFIED, [cache]).into_response()),
            None => {}
        }
    }
    let (tag, body) = match state.snapshots.get(&state.replica, &scope) {
        Some(kept) => kept,
        None => {
            let (snapshot, tag) = state.replica.snapshot(&scope).map_err(|e| match e {
                PolicyError::Unavailable(_) => ApiError::database_unavailable(),
                _ => ApiError::internal(),
            })?;
            let body = serde_json::to_vec(&snapshot).map_err(|e| {
                tracing::error!(error = %e, "snapshot serialization");
                ApiError::internal()
            })?;
            let body = axum::body::Bytes::from(body);
            state.snapshots.put(scope, tag, body.clone());
            (tag, body)
        }
    };
    let json_type = (axum::http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok((StatusCode::OK, [(ETAG, etag_header(&tag)), cache, json_type], body).into_response())
}

fn etag_header(tag: &SnapshotTag) -> HeaderValue {
    HeaderValue::from_str(&tag.etag()).unwrap_or(HeaderValue::from_static("\"\""))
}

#[utoipa::path(get, path = "/healthz", tag = "health", security(()),
    responses((status = 200, description = "the process serves", body = super::schemas::Status)))]
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready when the database answers.
#[utoipa::path(get, path = "/readyz", tag = "health", security(()),
    responses((status = 200, description = "the database answers", body = super::schemas::Status)))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    match sqlx::query("select 1").execute(&state.pool).await {
        Ok(_) => Ok(Json(json!({ "status": "ready" }))),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", "the database does not answer"))
        }
    }
}
