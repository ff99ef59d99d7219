//! The `policy_keys` table: reading the catalog and syncing it from the
//! declarative file, audited, refusing changes that strand stored values.

use std::collections::HashMap;

use serde::Serialize;
use sqlx::{PgConnection, PgExecutor, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use super::audit::{self, NewAuditRecord};
use super::{lock_writes, StoreError};
use crate::domain::key::KeyColumns;
use crate::domain::{Catalog, KeyDef, PolicyKey};

/// A `policy_keys` row read into its definition; a row that does not make
/// one was written around the store's checks.
fn into_def(row: KeyColumns) -> Result<KeyDef, StoreError> {
    row.into_def().map_err(|e| StoreError::Corrupt(format!("policy_keys row: {e}")))
}

/// One key's definition, or `None` if the catalog has no such key.
pub async fn get(executor: impl PgExecutor<'_>, key: &str) -> Result<Option<KeyDef>, StoreError> {
    let row = sqlx::query_as!(
        KeyColumns,
        "select key, value_type, default_value, min_value, max_value, enum_values, description, unit, fail_closed,
                max_items, item_pattern, approvals_required
         from policy_keys where key = $1",
        key
    )
    .fetch_optional(executor)
    .await?;
    row.map(into_def).transpose()
}

/// The whole catalog, ordered by key.
pub async fn list(executor: impl PgExecutor<'_>) -> Result<Vec<KeyDef>, StoreError> {
    let rows = sqlx::query_as!(
        KeyColumns,
        "select key, value_type, default_value, min_value, max_value, enum_values, description, unit, fail_closed,
                max_items, item_pattern, approvals_required
         from policy_keys order by key"
    )
    .fetch_all(executor)
    .await?;
    rows.into_iter().map(into_def).collect()
}

/// A stored value (in force or scheduled) that a catalog change would strand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OffendingValue {
    pub key: String,
    pub level: String,
    pub scope_id: String,
    pub value: serde_json::Value,
    pub value_id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    pub effective_at: OffsetDateTime,
    pub problem: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SyncReport {
    pub created: Vec<String>,
    pub updated: Vec<String>,
    pub unchanged: usize,
    /// Keys in the database that the file no longer lists: left in place,
    /// since stored values and the audit trail refer to them.
    pub not_in_catalog: Vec<String>,
}

/// Syncs the catalog into `policy_keys` in one transaction. Idempotent: an
/// unchanged key is neither written nor audited. Refused as a whole, naming
/// every offending value, if any change would leave a stored value outside
/// its key's new definition.
pub async fn sync(pool: &PgPool, catalog: &Catalog, actor: &str, reason: &str) -> Result<SyncReport, StoreError> {
    let mut tx = pool.begin().await?;
    lock_writes(&mut tx).await?;
    let existing: HashMap<PolicyKey, KeyDef> =
        list(&mut *tx).await?.into_iter().map(|def| (def.key.clone(), def)).collect();
    let mut report = SyncReport::default();
    let mut offending = Vec::new();
    for def in &catalog.keys {
        let old = existing.get(&def.key);
        if old == Some(def) {
            report.unchanged += 1;
            continue;
        }
        offending.extend(stranded_values(&mut tx, def).await?);
        upsert(&mut tx, def, old, actor, reason).await?;
        match old {
            Some(_) => report.updated.push(def.key.to_string()),
            None => report.created.push(def.key.to_string()),
        }
    }
    if !offending.is_empty() {
        return Err(StoreError::CatalogConflict(offending));
    }
    report.not_in_catalog =
        existing.keys().filter(|k| catalog.get(k.as_str()).is_none()).map(|k| k.to_string()).collect();
    report.not_in_catalog.sort();
    tx.commit().await?;
    Ok(report)
}

async fn upsert(
    conn: &mut PgConnection,
    def: &KeyDef,
    old: Option<&KeyDef>,
    actor: &str,
    reason: &str,
) -> Result<(), StoreError> {
    let (min, max, values) = def.bounds.to_parts();
    let (max_items, item_pattern) = def.bounds.list_parts();
    sqlx::query!(
        "insert into policy_keys
             (key, value_type, default_value, min_value, max_value, enum_values, description, unit, fail_closed,
              max_items, item_pattern, approvals_required)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         on conflict (key) do update set
             value_type = excluded.value_type, default_value = excluded.default_value,
             min_value = excluded.min_value, max_value = excluded.max_value,
             enum_values = excluded.enum_values, description = excluded.description,
             unit = excluded.unit, fail_closed = excluded.fail_closed,
             max_items = excluded.max_items, item_pattern = excluded.item_pattern,
             approvals_required = excluded.approvals_required, updated_at = now()",
        def.key.as_str(),
        def.value_type.as_str(),
        def.default.to_json(),
        min,
        max,
        values.as_deref(),
        def.description,
        def.unit,
        def.fail_closed,
        max_items,
        item_pattern,
        i16::try_from(def.approvals_required).unwrap_or(i16::MAX),
    )
    .execute(&mut *conn)
    .await?;
    let to_json = |d: &KeyDef| serde_json::to_value(d).unwrap_or(serde_json::Value::Null);
    let record = NewAuditRecord {
        actor,
        action: if old.is_some() { "policy_key.update" } else { "policy_key.create" },
        policy_key: Some(def.key.as_str()),
        metadata: serde_json::json!({
            "policy_key": def.key.as_str(),
            "old_value": old.map(to_json),
            "new_value": to_json(def),
            "reason": reason,
        }),
        ..Default::default()
    };
    audit::append(&mut *conn, &record).await?;
    Ok(())
}

/// Stored values of `def.key` (in force or scheduled) that `def` would refuse.
async fn stranded_values(conn: &mut PgConnection, def: &KeyDef) -> Result<Vec<OffendingValue>, StoreError> {
    let rows = sqlx::query!(
        r#"select id as "id!", level as "level!", scope_id as "scope_id!", value as "value!",
                  effective_at as "effective_at!"
           from policy_values_live
           where key = $1 and value is not null
           order by seq"#,
        def.key.as_str()
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|row| {
            let problem = def.parse_value(&row.value).err()?;
            Some(OffendingValue {
                key: def.key.to_string(),
                level: row.level,
                scope_id: row.scope_id,
                value: row.value,
                value_id: row.id,
                effective_at: row.effective_at,
                problem: problem.to_string(),
            })
        })
        .collect())
}
