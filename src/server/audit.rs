//! Auditors' endpoints: query the audit log with filters and keyset
//! pagination, export it as NDJSON or CSV (streamed, ending with the chain
//! head), verify the hash chain, read the head, and a key's history at one
//! scope.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::error::ApiError;
use super::extract::{parse_time, FieldRules, QueryParams, Valid};
use super::read::{key_def, ScopeParams};
use super::AppState;
use crate::domain::{Level, WriteScope};
use crate::store::audit::AuditRecord;
use crate::store::audit_query::{self, AuditFilter, ChainHead, Page};
use crate::store::StoreError;

/// The most rows one page (or one export batch) returns.
pub const PAGE_MAX: i64 = 1000;

#[derive(Debug, Deserialize, validator::Validate)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    #[validate(custom(function = "filter_text"))]
    policy_key: Option<String>,
    #[validate(custom(function = "filter_text"))]
    actor: Option<String>,
    #[validate(custom(function = "filter_text"))]
    action: Option<String>,
    outcome: Option<String>,
    from: Option<String>,
    to: Option<String>,
    #[validate(range(min = 1, max = 1000, message = "limit must be between 1 and 1000"))]
    limit: Option<i64>,
    cursor: Option<String>,
    order: Option<String>,
    format: Option<String>,
    #[serde(flatten)]
    scope: ScopeParams,
}

impl FieldRules for AuditParams {
    fn code_for(_field: &str) -> &'static str {
        "invalid_query"
    }
}

/// A filter text: at most 1,000 bytes, no control characters (PostgreSQL
/// refuses a NUL in a text parameter; the rest could never match).
pub(super) fn filter_text(text: &str) -> Result<(), validator::ValidationError> {
    if text.len() > 1000 {
        let mut error =
            validator::ValidationError::new("max_bytes").with_message("filters are at most 1,000 bytes".into());
        error.add_param("max".into(), &1000);
        return Err(error);
    }
    if text.chars().any(char::is_control) {
        return Err(validator::ValidationError::new("no_control_characters")
            .with_message("filters are texts without control characters".into()));
    }
    Ok(())
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::unprocessable("invalid_query", message)
}

impl AuditParams {
    fn filter(&self) -> Result<AuditFilter, ApiError> {
        if let Some(outcome) = self.outcome.as_deref().filter(|o| !matches!(*o, "success" | "refused")) {
            return Err(invalid(format!("outcome must be success or refused, not {outcome:?}")));
        }
        let scope = self.scope.to_write_scope()?;
        Ok(AuditFilter {
            policy_key: self.policy_key.clone(),
            actor: self.actor.clone(),
            action: self.action.clone(),
            outcome: self.outcome.clone(),
            scope_level: scope.as_ref().map(|s| s.level().as_str().to_string()),
            scope_id: scope.as_ref().map(|s| s.id().to_string()),
            from: self.from.as_deref().map(|t| parse_time("from", t)).transpose()?,
            to: self.to.as_deref().map(|t| parse_time("to", t)).transpose()?,
            until_seq: None,
        })
    }

    fn page(&self) -> Result<Page, ApiError> {
        let cursor = self.cursor.as_deref().map(decode_cursor).transpose()?;
        match self.order.as_deref() {
            None | Some("desc") => Ok(Page::NewestFirst { before: cursor }),
            Some("asc") => Ok(Page::OldestFirst { after: cursor }),
            Some(other) => Err(invalid(format!("order must be asc or desc, not {other:?}"))),
        }
    }
}

/// Cursors are opaque to clients: the hex of the last seq of a page.
pub(super) fn encode_cursor(seq: i64) -> String {
    hex::encode(seq.to_string())
}

fn decode_cursor(raw: &str) -> Result<i64, ApiError> {
    hex::decode(raw)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ApiError::unprocessable("invalid_cursor", "cursor is not one this server gave out"))
}

/// `GET /api/v1/admin/audit-logs`: a page as JSON, or with `format` the
/// whole result streamed.
#[utoipa::path(get, path = "/api/v1/admin/audit-logs", tag = "audit",
    params(("policy_key" = Option<String>, Query), ("actor" = Option<String>, Query),
        ("action" = Option<String>, Query), ("outcome" = Option<String>, Query, description = "success or refused"),
        ("user_id" = Option<String>, Query, description = "the caller's user id"),
        ("project_id" = Option<String>, Query, description = "the caller's project id"),
        ("org_id" = Option<String>, Query, description = "the caller's organisation id"),
        ("plan" = Option<String>, Query, description = "the caller's plan"),
        ("from" = Option<String>, Query, description = "RFC 3339, inclusive"),
        ("to" = Option<String>, Query, description = "RFC 3339, exclusive"),
        ("limit" = Option<i64>, Query, description = "1 to 1000"), ("cursor" = Option<String>, Query),
        ("order" = Option<String>, Query, description = "desc (default) or asc"),
        ("format" = Option<String>, Query, description = "json (default), ndjson or csv")),
    responses((status = 200, description = "a page {items, next_cursor}, or the streamed export",
               content((super::schemas::AuditPage = "application/json"), (String = "application/x-ndjson"), (String = "text/csv")))))]
pub async fn audit_logs(
    State(state): State<AppState>,
    Valid(QueryParams(params)): Valid<QueryParams<AuditParams>>,
) -> Result<Response, ApiError> {
    let filter = params.filter()?;
    match params.format.as_deref() {
        None | Some("json") => {}
        Some(format @ ("ndjson" | "csv")) => return export(state, filter, Export::parse(format)).await,
        Some(other) => return Err(invalid(format!("format must be json, ndjson or csv, not {other:?}"))),
    }
    let limit = params.limit.unwrap_or(100);
    let items = audit_query::page(&state.pool, &filter, params.page()?, limit).await?;
    let next_cursor = (items.len() as i64 == limit).then(|| items.last().map(|r| encode_cursor(r.seq))).flatten();
    Ok(Json(json!({ "items": items, "next_cursor": next_cursor })).into_response())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Export {
    Ndjson,
    Csv,
}

impl Export {
    fn parse(format: &str) -> Export {
        if format == "csv" {
            Export::Csv
        } else {
            Export::Ndjson
        }
    }
}

const CSV_HEADER: &str = "seq,id,occurred_at,actor,action,outcome,code,policy_key,scope_level,scope_id,\
effective_at,request_id,value_seq,metadata,prev_hash,hash\n";

/// Streams every matching record up to the chain head as it was when the
/// export began, oldest first, a page at a time (memory stays bounded),
/// then a last line with that head and the number of rows sent.
async fn export(state: AppState, mut filter: AuditFilter, format: Export) -> Result<Response, ApiError> {
    let head = audit_query::head(&state.pool).await?.unwrap_or(ChainHead { seq: 0, hash: hex::encode([0u8; 32]) });
    filter.until_seq = Some(head.seq);
    let start = match format {
        Export::Csv => Some(Bytes::from_static(CSV_HEADER.as_bytes())),
        Export::Ndjson => None,
    };
    let pool = state.pool.clone();
    let pages = futures_util::stream::unfold(Some((None::<i64>, 0u64)), move |cursor| {
        let (pool, filter, head) = (pool.clone(), filter.clone(), head.clone());
        async move {
            let (after, sent) = cursor?;
            match audit_query::page(&pool, &filter, Page::OldestFirst { after }, PAGE_MAX).await {
                Ok(rows) if rows.is_empty() => Some((Ok(trailer(format, &head, sent)), None)),
                Ok(rows) => {
                    let next = rows.last().map(|r| r.seq);
                    let chunk = rows.iter().map(|r| line(format, r)).collect::<String>();
                    Some((Ok(Bytes::from(chunk)), Some((next, sent + rows.len() as u64))))
                }
                Err(e) => {
                    tracing::error!(error = %e, "audit export failed mid-stream");
                    Some((Err(std::io::Error::other("audit export failed")), None))
                }
            }
        }
    });
    let body = futures_util::stream::iter(start.map(Ok::<_, std::io::Error>)).chain(pages);
    let content_type = match format {
        Export::Csv => "text/csv; charset=utf-8",
        Export::Ndjson => "application/x-ndjson",
    };
    Ok(([(CONTENT_TYPE, content_type)], Body::from_stream(body)).into_response())
}

use futures_util::StreamExt;

fn line(format: Export, r: &AuditRecord) -> String {
    match format {
        Export::Ndjson => serde_json::to_string(r).map(|s| s + "\n").unwrap_or_default(),
        Export::Csv => {
            let time = |t: Option<time::OffsetDateTime>| {
                t.and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok()).unwrap_or_default()
            };
            let fields = [
                r.seq.to_string(),
                r.id.to_string(),
                time(Some(r.occurred_at)),
                r.actor.clone(),
                r.action.clone(),
                r.outcome.clone(),
                r.code.clone().unwrap_or_default(),
                r.policy_key.clone().unwrap_or_default(),
                r.scope_level.clone().unwrap_or_default(),
                r.scope_id.clone().unwrap_or_default(),
                time(r.effective_at),
                r.request_id.clone().unwrap_or_default(),
                r.value_seq.map(|s| s.to_string()).unwrap_or_default(),
                r.metadata.to_string(),
                r.prev_hash.clone(),
                r.hash.clone(),
            ];
            let mut out = fields.iter().map(|f| csv_field(f)).collect::<Vec<_>>().join(",");
            out.push('\n');
            out
        }
    }
}

/// RFC 4180 quoting, and a leading `'` before what a spreadsheet would run
/// as a formula (`=`, `+`, `-`, `@`), so opening an export runs nothing.
fn csv_field(field: &str) -> String {
    let guarded = match field.chars().next() {
        Some('=' | '+' | '-' | '@') if field.parse::<f64>().is_err() => format!("'{field}"),
        _ => field.to_string(),
    };
    if guarded.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", guarded.replace('"', "\"\""))
    } else {
        guarded
    }
}

fn trailer(format: Export, head: &ChainHead, rows: u64) -> Bytes {
    let text = match format {
        Export::Ndjson => format!("{}\n", json!({ "chain_head": head, "rows": rows })),
        Export::Csv => format!("# chain_head seq={} hash={} rows={rows}\n", head.seq, head.hash),
    };
    Bytes::from(text)
}

/// `GET /api/v1/admin/audit-logs/verify`: recomputes the whole chain.
#[utoipa::path(get, path = "/api/v1/admin/audit-logs/verify", tag = "audit",
    responses((status = 200, description = "intact with the head, or where the chain breaks", body = super::schemas::Verification)))]
pub async fn verify(State(state): State<AppState>) -> Result<Json<audit_query::Verification>, ApiError> {
    Ok(Json(audit_query::verify(&state.pool).await?))
}

/// `GET /api/v1/admin/audit-logs/head`: the latest seq and hash.
#[utoipa::path(get, path = "/api/v1/admin/audit-logs/head", tag = "audit",
    responses((status = 200, description = "the latest seq and hash", body = super::schemas::ChainHead)))]
pub async fn head(State(state): State<AppState>) -> Result<Json<ChainHead>, ApiError> {
    let head = audit_query::head(&state.pool).await?;
    Ok(Json(head.unwrap_or(ChainHead { seq: 0, hash: hex::encode([0u8; 32]) })))
}

#[derive(Debug, Deserialize, validator::Validate)]
#[serde(deny_unknown_fields)]
pub struct HistoryParams {
    key: Option<String>,
    #[validate(range(min = 1, max = 1000, message = "limit must be between 1 and 1000"))]
    limit: Option<i64>,
    #[serde(flatten)]
    scope: ScopeParams,
}

impl FieldRules for HistoryParams {
    fn code_for(_field: &str) -> &'static str {
        "invalid_query"
    }
}

/// `GET /api/v1/admin/policy-values/history`: every change of a key at one
/// scope (none given: global), newest first, with audit ids.
#[utoipa::path(get, path = "/api/v1/admin/policy-values/history", tag = "audit",
    params(("key" = String, Query), ("user_id" = Option<String>, Query, description = "the caller's user id"),
        ("project_id" = Option<String>, Query, description = "the caller's project id"),
        ("org_id" = Option<String>, Query, description = "the caller's organisation id"),
        ("plan" = Option<String>, Query, description = "the caller's plan"), ("limit" = Option<i64>, Query, description = "1 to 1000")),
    responses((status = 200, description = "every change at the scope, newest first, with audit ids", body = super::schemas::History)))]
pub async fn history(
    State(state): State<AppState>,
    Valid(QueryParams(params)): Valid<QueryParams<HistoryParams>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let def = key_def(&state, params.key.as_deref()).await?;
    let scope = params.scope.to_write_scope()?.unwrap_or_else(WriteScope::global);
    let limit = params.limit.unwrap_or(PAGE_MAX);
    let level: Level = scope.level();
    let items = audit_query::history(&state.pool, def.key.as_str(), level.as_str(), scope.id(), limit)
        .await
        .map_err(|e: StoreError| ApiError::from(e))?;
    Ok(Json(json!({ "key": def.key, "scope": scope, "changes": items })))
}
