//! `POST /api/v1/admin/policy-values/preview`: every check a write makes,
//! and what it would do, writing nothing and auditing nothing. It answers
//! the value before and after at the write's scope and the overrides at
//! more specific levels that shadow the change (they keep their own value).

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Serialize;
use serde_json::json;

use super::admin::WriteBody;
use super::change_requests::check_scope;
use super::error::ApiError;
use super::extract::{JsonBody, Valid};
use super::read::key_def;
use super::AppState;
use crate::domain::{KeyDef, Level, Value};
use crate::store::change_requests as requests;
use crate::store::tokens::Principal;

/// How many shadowing overrides are listed (all are counted).
pub const SHADOW_LIST: usize = 10;

#[derive(Debug, Serialize)]
struct Shadow {
    level: String,
    scope_id: String,
    value: serde_json::Value,
}

#[tracing::instrument(skip_all, fields(principal = %principal.name))]
#[utoipa::path(post, path = "/api/v1/admin/policy-values/preview", tag = "admin", request_body = WriteBody,
    responses((status = 200, description = "what the write would do: outcome (written, change_request or unchanged), before, after, shadowed_by", body = super::schemas::Preview)))]
pub async fn preview(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Valid(JsonBody(body)): Valid<JsonBody<WriteBody>>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let def = key_def(&state, body.key()).await?;
    let change = body.into_change(&def)?;
    let level = change.scope.level();
    check_scope(&principal, def.key.as_str(), level.as_str())?;
    let mut conn = state.pool.acquire().await.map_err(crate::store::StoreError::from)?;
    let (before, outcome) = match requests::check(&mut conn, &def, &change).await? {
        requests::Checked::Changes(before) if def.approvals_required > 0 => (before, "change_request"),
        requests::Checked::Changes(before) => (before, "written"),
        requests::Checked::Unchanged(_) => (change.old_value.clone(), "unchanged"),
    };
    let after = match &change.value {
        Some(value) => value.clone(),
        None => fallback(&mut conn, &def, level).await?,
    };
    let (by_level, first) = shadows(&mut conn, &def, level).await?;
    let total: i64 = by_level.values().sum();
    Ok((
        StatusCode::OK,
        Json(json!({
            "outcome": outcome,
            "approvals_required": def.approvals_required,
            "key": def.key,
            "scope": change.scope.to_json(),
            "effective_at": change.effective_at.and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok()),
            "before": before.to_json(),
            "after": after.to_json(),
            "shadowed_by": { "total": total, "by_level": by_level, "first": first },
        })),
    ))
}

/// What the scope falls back to once its override is removed: the global
/// value, else the catalog default (for the global level: the default).
async fn fallback(conn: &mut sqlx::PgConnection, def: &KeyDef, level: Level) -> Result<Value, ApiError> {
    if level == Level::Global {
        return Ok(def.default.clone());
    }
    let global = sqlx::query_scalar!(
        "select value from policy_value_history
         where key = $1 and level = 'global' and effective_at <= now()
         order by effective_at desc, seq desc limit 1",
        def.key.as_str()
    )
    .fetch_optional(&mut *conn)
    .await
    .map_err(crate::store::StoreError::from)?
    .flatten();
    let global = crate::store::values::typed(def, global)?;
    Ok(global.unwrap_or_else(|| def.default.clone()))
}

/// The overrides in force now at levels more specific than `level`:
/// counted by level, the first few listed (most specific level first).
async fn shadows(
    conn: &mut sqlx::PgConnection,
    def: &KeyDef,
    level: Level,
) -> Result<(std::collections::BTreeMap<String, i64>, Vec<Shadow>), ApiError> {
    let position = Level::ORDER.iter().position(|l| *l == level).unwrap_or(0);
    let finer: Vec<String> = Level::ORDER[..position].iter().map(|l| l.as_str().to_string()).collect();
    let rows = sqlx::query!(
        r#"select level as "level!", scope_id as "scope_id!", value as "value!"
           from policy_values_live
           where key = $1 and level = any($2) and value is not null and effective_at <= now()
           order by array_position(array['user','project','org','plan','global'], level), scope_id"#,
        def.key.as_str(),
        &finer
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(crate::store::StoreError::from)?;
    let mut by_level = std::collections::BTreeMap::new();
    for r in &rows {
        *by_level.entry(r.level.clone()).or_insert(0) += 1;
    }
    let first = rows
        .into_iter()
        .take(SHADOW_LIST)
        .map(|r| Shadow { level: r.level, scope_id: r.scope_id, value: r.value })
        .collect();
    Ok((by_level, first))
}
