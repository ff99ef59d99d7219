//! The `audit_logs` table: appending records (the database assigns seq, time
//! and hash) and reading them back.

use serde::Serialize;
use sqlx::PgExecutor;
use time::OffsetDateTime;
use uuid::Uuid;

use super::StoreError;

/// A record to append. `metadata` carries `policy_key`, `old_value`,
/// `new_value` and `reason` for value changes.
#[derive(Debug, Clone, Default)]
pub struct NewAuditRecord<'a> {
    pub actor: &'a str,
    pub action: &'a str,
    pub outcome: Option<&'a str>,
    pub code: Option<&'a str>,
    pub policy_key: Option<&'a str>,
    pub scope_level: Option<&'a str>,
    pub scope_id: Option<&'a str>,
    pub effective_at: Option<OffsetDateTime>,
    pub request_id: Option<&'a str>,
    pub value_seq: Option<i64>,
    pub metadata: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditRecord {
    pub seq: i64,
    pub id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
    pub actor: String,
    pub action: String,
    pub outcome: String,
    pub code: Option<String>,
    pub policy_key: Option<String>,
    pub scope_level: Option<String>,
    pub scope_id: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub effective_at: Option<OffsetDateTime>,
    pub request_id: Option<String>,
    pub value_seq: Option<i64>,
    pub metadata: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
}

/// A row as read, hashes still raw.
pub(crate) struct AuditRow {
    pub seq: i64,
    pub id: Uuid,
    pub occurred_at: OffsetDateTime,
    pub actor: String,
    pub action: String,
    pub outcome: String,
    pub code: Option<String>,
    pub policy_key: Option<String>,
    pub scope_level: Option<String>,
    pub scope_id: Option<String>,
    pub effective_at: Option<OffsetDateTime>,
    pub request_id: Option<String>,
    pub value_seq: Option<i64>,
    pub metadata: serde_json::Value,
    pub prev_hash: Vec<u8>,
    pub hash: Vec<u8>,
}

impl From<AuditRow> for AuditRecord {
    fn from(row: AuditRow) -> AuditRecord {
        AuditRecord {
            seq: row.seq,
            id: row.id,
            occurred_at: row.occurred_at,
            actor: row.actor,
            action: row.action,
            outcome: row.outcome,
            code: row.code,
            policy_key: row.policy_key,
            scope_level: row.scope_level,
            scope_id: row.scope_id,
            effective_at: row.effective_at,
            request_id: row.request_id,
            value_seq: row.value_seq,
            metadata: row.metadata,
            prev_hash: hex::encode(row.prev_hash),
            hash: hex::encode(row.hash),
        }
    }
}

/// Appends one record; returns it as stored (seq, time and hash filled in).
pub async fn append(executor: impl PgExecutor<'_>, record: &NewAuditRecord<'_>) -> Result<AuditRecord, StoreError> {
    let row = sqlx::query_as!(
        AuditRow,
        r#"insert into audit_logs
               (actor, action, outcome, code, policy_key, scope_level, scope_id,
                effective_at, request_id, value_seq, metadata, prev_hash, hash)
           values ($1, $2, coalesce($3, 'success'), $4, $5, $6, $7, $8, $9, $10, $11, '', '')
           returning seq, id, occurred_at, actor, action, outcome, code, policy_key, scope_level,
                     scope_id, effective_at, request_id, value_seq, metadata, prev_hash, hash"#,
        record.actor,
        record.action,
        record.outcome,
        record.code,
        record.policy_key,
        record.scope_level,
        record.scope_id,
        record.effective_at,
        record.request_id,
        record.value_seq,
        record.metadata,
    )
    .fetch_one(executor)
    .await?;
    metrics::counter!("policy_values_audit_rows_total").increment(1);
    Ok(row.into())
}

/// The canonical bytes of a record that its hash covers, as the database's
/// `audit_canonical()` builds them: each field as `<byte length>:<text>;`, or
/// `-;` for null; times as microseconds since the epoch; `metadata` as the
/// database's text form of the jsonb. A verifier recomputes
/// `sha256(prev_hash || canonical)` with this and compares.
pub fn canonical(record: &AuditRecord, metadata_text: &str) -> Vec<u8> {
    fn field(out: &mut String, value: Option<&str>) {
        match value {
            Some(v) => {
                out.push_str(&v.len().to_string());
                out.push(':');
                out.push_str(v);
                out.push(';');
            }
            None => out.push_str("-;"),
        }
    }
    let micros = |t: OffsetDateTime| (t.unix_timestamp_nanos() / 1000).to_string();
    let mut out = String::new();
    field(&mut out, Some(&record.seq.to_string()));
    field(&mut out, Some(&record.id.to_string()));
    field(&mut out, Some(&micros(record.occurred_at)));
    field(&mut out, Some(&record.actor));
    field(&mut out, Some(&record.action));
    field(&mut out, Some(&record.outcome));
    field(&mut out, record.code.as_deref());
    field(&mut out, record.policy_key.as_deref());
    field(&mut out, record.scope_level.as_deref());
    field(&mut out, record.scope_id.as_deref());
    field(&mut out, record.effective_at.map(micros).as_deref());
    field(&mut out, record.request_id.as_deref());
    field(&mut out, record.value_seq.map(|s| s.to_string()).as_deref());
    field(&mut out, Some(metadata_text));
    out.into_bytes()
}
