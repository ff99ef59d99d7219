//! The `policy_values` table: the admin write path (old_value check, value
//! row and audit row in one transaction), cancelling scheduled changes,
//! listing overrides, and resolution against the stored rows.

use serde::Serialize;
use sqlx::{PgConnection, PgExecutor, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{lock_writes, StoreError};
use crate::domain::{KeyDef, Level, Value, WriteScope};

/// A `ValueRow` from a query record that has its columns under their names
/// (records of different queries are different types).
macro_rules! value_row {
    ($r:ident) => {
        $crate::store::values::ValueRow {
            id: $r.id,
            seq: $r.seq,
            kind: $r.kind,
            key: $r.key,
            level: $r.level,
            scope_id: $r.scope_id,
            value: $r.value,
            effective_at: $r.effective_at,
            actor: $r.actor,
            reason: $r.reason,
            created_at: $r.created_at,
        }
    };
}
pub(crate) use value_row;

/// A stored row, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ValueRow {
    pub id: Uuid,
    pub seq: i64,
    pub kind: String,
    pub key: String,
    pub level: String,
    pub scope_id: String,
    pub value: Option<serde_json::Value>,
    #[serde(with = "time::serde::rfc3339")]
    pub effective_at: OffsetDateTime,
    pub actor: String,
    pub reason: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// An admin's change, validated against the key's type and bounds.
#[derive(Debug, Clone)]
pub struct Change {
    pub scope: WriteScope,
    /// `None` removes the override at `scope`.
    pub value: Option<Value>,
    pub effective_at: Option<OffsetDateTime>,
    pub reason: String,
    /// What the change replaces: the value stored at `scope` now, or, when
    /// nothing is stored there, the key's global value.
    pub old_value: Value,
}

/// Who asked, for the audit record.
#[derive(Debug, Clone, Copy)]
pub struct Actor<'a> {
    pub principal: &'a str,
    pub request_id: Option<&'a str>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Written {
    pub value: ValueRow,
    /// What the change replaced (for a cancel: the cancelled scheduled value).
    pub old_value: Option<serde_json::Value>,
    pub audit_id: Uuid,
    pub audit_seq: i64,
}

/// What an admin write did.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// A value row and its audit record were written.
    Written(Written),
    /// The value was already the one stored at that exact scope (and the
    /// `old_value` matched): nothing was written, nothing was audited.
    Unchanged(Unchanged),
}

/// A write that changed nothing, and the row that already holds its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unchanged {
    pub key: String,
    pub level: String,
    pub scope_id: String,
    /// The value, as stored (and as sent).
    pub value: serde_json::Value,
    /// The row in force at the scope, which holds `value`.
    pub value_id: Uuid,
    pub value_seq: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub effective_at: OffsetDateTime,
}

/// Applies a change on its own: under the write lock, checks `old_value`,
/// inserts the row and its audit record, and commits (the insert trigger
/// notifies listeners at commit). Nothing is written if any check fails. A
/// time up to 60 s in the past is taken as now (clock skew; the database
/// applies it). A value already stored at that exact scope is
/// `Outcome::Unchanged` and writes nothing. The server sends its writes
/// through a `writer::Writer`, which commits concurrent ones together with
/// the same answers.
pub async fn write(pool: &PgPool, def: &KeyDef, change: &Change, actor: Actor<'_>) -> Result<Outcome, StoreError> {
    let request = super::writer::Request::new(def.clone(), change, actor);
    super::writer::execute(pool, std::slice::from_ref(&request))
        .await
        .pop()
        .unwrap_or_else(|| Err(StoreError::Corrupt("a write got no answer".into())))
}

/// A value row to insert.
struct NewRow<'a> {
    kind: &'static str,
    key: &'a str,
    level: &'a str,
    scope_id: &'a str,
    value: Option<serde_json::Value>,
    effective_at: OffsetDateTime,
    reason: &'a str,
    cancels_seq: Option<i64>,
}

/// The audit record of a value row; `metadata` gets the row's id added.
struct RowAudit {
    action: &'static str,
    effective_at: OffsetDateTime,
    metadata: serde_json::Value,
}

/// Inserts a value row and its audit record in one statement.
async fn insert_audited(
    conn: &mut PgConnection,
    row: &NewRow<'_>,
    audit: &RowAudit,
    actor: Actor<'_>,
) -> Result<(ValueRow, Uuid, i64), StoreError> {
    let r = sqlx::query!(
        r#"with v as (
               insert into policy_values (kind, key, level, scope_id, value, effective_at, actor, reason, cancels_seq)
               values ($1, $2, $3, $4, $5, $6, $7, $8, $9)
               returning id, seq, kind, key, level, scope_id, value, effective_at, actor, reason, created_at
           ), a as (
               insert into audit_logs (actor, action, policy_key, scope_level, scope_id, effective_at, request_id,
                                       value_seq, metadata, prev_hash, hash)
               select v.actor, $10, v.key, v.level, v.scope_id, $11, $12, v.seq,
                      $13::jsonb || jsonb_build_object('value_id', v.id), '', ''
               from v
               returning id, seq
           )
           select v.id as "id!", v.seq as "seq!", v.kind as "kind!", v.key as "key!", v.level as "level!",
                  v.scope_id as "scope_id!", v.value, v.effective_at as "effective_at!", v.actor as "actor!",
                  v.reason as "reason!", v.created_at as "created_at!", a.id as "audit_id!", a.seq as "audit_seq!"
           from v, a"#,
        row.kind,
        row.key,
        row.level,
        row.scope_id,
        row.value,
        row.effective_at,
        actor.principal,
        row.reason,
        row.cancels_seq,
        audit.action,
        audit.effective_at,
        actor.request_id,
        audit.metadata,
    )
    .fetch_one(&mut *conn)
    .await?;
    let value = value_row!(r);
    metrics::counter!("policy_values_audit_rows_total").increment(1);
    metrics::counter!("policy_values_notifications_total").increment(1);
    Ok((value, r.audit_id, r.audit_seq))
}

/// Inserts one set (`value` given) or unset (`None`) row. The database
/// assigns seq and notifies listeners at commit. Checks nothing: callers
/// validate first (`write` does).
#[allow(clippy::too_many_arguments)]
pub async fn append_row(
    conn: &mut PgConnection,
    key: &str,
    level: Level,
    scope_id: &str,
    value: Option<serde_json::Value>,
    effective_at: OffsetDateTime,
    actor: &str,
    reason: &str,
) -> Result<ValueRow, StoreError> {
    let kind = if value.is_some() { "set" } else { "unset" };
    let row = sqlx::query_as!(
        ValueRow,
        "insert into policy_values (kind, key, level, scope_id, value, effective_at, actor, reason)
         values ($1, $2, $3, $4, $5, $6, $7, $8)
         returning id, seq, kind, key, level, scope_id, value, effective_at, actor, reason, created_at",
        kind,
        key,
        level.as_str(),
        scope_id,
        value,
        effective_at,
        actor,
        reason,
    )
    .fetch_one(&mut *conn)
    .await?;
    metrics::counter!("policy_values_notifications_total").increment(1);
    Ok(row)
}

/// Reads a stored JSON value as the key's type; a mismatch means the row was
/// written around the store's checks.
pub(crate) fn typed(def: &KeyDef, json: Option<serde_json::Value>) -> Result<Option<Value>, StoreError> {
    json.map(|j| {
        Value::from_json(&j, def.value_type)
            .map_err(|e| StoreError::Corrupt(format!("value of {} does not fit its type: {e}", def.key)))
    })
    .transpose()
}

/// Cancels a scheduled change that has not taken effect yet: inserts a
/// `cancel` row naming it and an audit record, in one transaction.
pub async fn cancel(pool: &PgPool, value_id: Uuid, reason: &str, actor: Actor<'_>) -> Result<Written, StoreError> {
    let mut tx = pool.begin().await?;
    let now = lock_writes(&mut tx).await?;
    let target = sqlx::query!(
        r#"select v.seq, v.kind, v.key, v.level, v.scope_id, v.value, v.effective_at,
                  exists (select 1 from policy_values c where c.cancels_seq = v.seq) as "cancelled!"
           from policy_values v where v.id = $1"#,
        value_id
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(StoreError::NotFound)?;
    if target.cancelled {
        return Err(StoreError::AlreadyCancelled);
    }
    if target.kind == "cancel" || target.effective_at <= now {
        return Err(StoreError::NotScheduled);
    }
    let scope = WriteScope::at(Level::parse(&target.level).unwrap_or(Level::Global), &target.scope_id)
        .map(|s| s.to_json())
        .unwrap_or_default();
    let row = NewRow {
        kind: "cancel",
        key: &target.key,
        level: &target.level,
        scope_id: &target.scope_id,
        value: None,
        effective_at: now,
        reason,
        cancels_seq: Some(target.seq),
    };
    let audit = RowAudit {
        action: "policy_value.cancel",
        effective_at: target.effective_at,
        metadata: serde_json::json!({
            "policy_key": target.key,
            "scope": scope,
            "old_value": target.value,
            "new_value": null,
            "reason": reason,
            "cancelled_value_id": value_id,
        }),
    };
    let (value, audit_id, audit_seq) = insert_audited(&mut tx, &row, &audit, actor).await?;
    tx.commit().await?;
    Ok(Written { old_value: target.value, value, audit_id, audit_seq })
}

/// One scope's override of a key: what is in force now and what is scheduled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Override {
    pub level: String,
    pub scope: serde_json::Value,
    /// The row in force now; a removal (tombstone) shows as `value: null`.
    pub current: Option<ValueRow>,
    pub scheduled: Vec<ValueRow>,
}

/// Every scope that overrides `key` now or has a change scheduled, most
/// specific level first.
pub async fn overrides(executor: impl PgExecutor<'_>, key: &str) -> Result<Vec<Override>, StoreError> {
    let rows = sqlx::query!(
        r#"select l.id as "id!", l.seq as "seq!", v.kind, l.key as "key!", l.level as "level!",
                  l.scope_id as "scope_id!", l.value, l.effective_at as "effective_at!",
                  l.actor as "actor!", l.reason as "reason!", l.created_at as "created_at!",
                  l.effective_at > now() as "scheduled!"
           from policy_values_live l join policy_values v on v.seq = l.seq
           where l.key = $1
           order by array_position(array['user','project','org','plan','global'], l.level),
                    l.scope_id, l.effective_at, l.seq"#,
        key
    )
    .fetch_all(executor)
    .await?;
    let mut out: Vec<Override> = Vec::new();
    for r in rows {
        let scope = scope_json(&r.level, &r.scope_id);
        if !out.last().is_some_and(|o| o.level == r.level && o.scope == scope) {
            out.push(Override { level: r.level.clone(), scope, current: None, scheduled: Vec::new() });
        }
        let row = value_row!(r);
        let Some(entry) = out.last_mut() else {
            continue;
        };
        if r.scheduled {
            entry.scheduled.push(row);
        } else {
            entry.current = Some(row);
        }
    }
    out.retain(|o| o.current.as_ref().is_some_and(|c| c.value.is_some()) || !o.scheduled.is_empty());
    Ok(out)
}

/// How many scopes below global hold a value of a key now, and how many
/// changes of it (at any level) are scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct KeyCounts {
    pub overrides: i64,
    pub scheduled: i64,
}

/// Every key's [`KeyCounts`] in one grouped query (keys with neither are
/// absent).
pub async fn counts(
    executor: impl PgExecutor<'_>,
) -> Result<std::collections::BTreeMap<String, KeyCounts>, StoreError> {
    let rows = sqlx::query!(
        r#"select key as "key!",
                  count(*) filter (where effective_at <= now() and level <> 'global' and value is not null)
                      as "overrides!",
                  count(*) filter (where effective_at > now()) as "scheduled!"
           from policy_values_live
           group by key"#
    )
    .fetch_all(executor)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.key, KeyCounts { overrides: r.overrides, scheduled: r.scheduled }))
        .filter(|(_, c)| c.overrides > 0 || c.scheduled > 0)
        .collect())
}

fn scope_json(level: &str, scope_id: &str) -> serde_json::Value {
    Level::parse(level).and_then(|l| WriteScope::at(l, scope_id).ok()).map(|s| s.to_json()).unwrap_or_default()
}
