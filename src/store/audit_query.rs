//! Reading the audit log as auditors do: filtered, keyset-paginated pages,
//! the chain head, and verification of the hash chain.

use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::PgExecutor;
use time::OffsetDateTime;

use super::audit::{canonical, AuditRecord, AuditRow};
use super::StoreError;

/// Filters on the audit log; every one optional, all combined with AND.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub policy_key: Option<String>,
    pub actor: Option<String>,
    pub action: Option<String>,
    pub outcome: Option<String>,
    pub scope_level: Option<String>,
    pub scope_id: Option<String>,
    pub from: Option<OffsetDateTime>,
    pub to: Option<OffsetDateTime>,
    /// Only records up to this seq (an export stops at the head it started with).
    pub until_seq: Option<i64>,
}

/// Which way a page goes: newest first (`before` a seq) or oldest first
/// (`after` a seq).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    NewestFirst { before: Option<i64> },
    OldestFirst { after: Option<i64> },
}

/// One page of records matching `filter`, at most `limit`.
pub async fn page(
    executor: impl PgExecutor<'_>,
    filter: &AuditFilter,
    page: Page,
    limit: i64,
) -> Result<Vec<AuditRecord>, StoreError> {
    let f = filter;
    let rows = match page {
        Page::NewestFirst { before } => {
            sqlx::query_as!(
                AuditRow,
                r#"select seq, id, occurred_at, actor, action, outcome, code, policy_key, scope_level,
                          scope_id, effective_at, request_id, value_seq, metadata, prev_hash, hash
                   from audit_logs
                   where ($1::text is null or policy_key = $1) and ($2::text is null or actor = $2)
                     and ($3::text is null or action = $3) and ($4::text is null or outcome = $4)
                     and ($5::text is null or scope_level = $5) and ($6::text is null or scope_id = $6)
                     and ($7::timestamptz is null or occurred_at >= $7)
                     and ($8::timestamptz is null or occurred_at < $8)
                     and ($9::bigint is null or seq < $9) and ($11::bigint is null or seq <= $11)
                   order by seq desc limit $10"#,
                f.policy_key,
                f.actor,
                f.action,
                f.outcome,
                f.scope_level,
                f.scope_id,
                f.from,
                f.to,
                before,
                limit,
                f.until_seq,
            )
            .fetch_all(executor)
            .await?
        }
        Page::OldestFirst { after } => {
            sqlx::query_as!(
                AuditRow,
                r#"select seq, id, occurred_at, actor, action, outcome, code, policy_key, scope_level,
                          scope_id, effective_at, request_id, value_seq, metadata, prev_hash, hash
                   from audit_logs
                   where ($1::text is null or policy_key = $1) and ($2::text is null or actor = $2)
                     and ($3::text is null or action = $3) and ($4::text is null or outcome = $4)
                     and ($5::text is null or scope_level = $5) and ($6::text is null or scope_id = $6)
                     and ($7::timestamptz is null or occurred_at >= $7)
                     and ($8::timestamptz is null or occurred_at < $8)
                     and ($9::bigint is null or seq > $9) and ($11::bigint is null or seq <= $11)
                   order by seq asc limit $10"#,
                f.policy_key,
                f.actor,
                f.action,
                f.outcome,
                f.scope_level,
                f.scope_id,
                f.from,
                f.to,
                after,
                limit,
                f.until_seq,
            )
            .fetch_all(executor)
            .await?
        }
    };
    Ok(rows.into_iter().map(AuditRecord::from).collect())
}

/// The latest record's seq and hash: what an auditor records elsewhere to
/// detect a truncated tail later.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainHead {
    pub seq: i64,
    pub hash: String,
}

pub async fn head(executor: impl PgExecutor<'_>) -> Result<Option<ChainHead>, StoreError> {
    let row =
        sqlx::query!("select seq, hash from audit_logs order by seq desc limit 1").fetch_optional(executor).await?;
    Ok(row.map(|r| ChainHead { seq: r.seq, hash: hex::encode(r.hash) }))
}

/// The outcome of recomputing the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Verification {
    Intact { rows: i64, head: Option<ChainHead> },
    Broken { seq: i64, reason: String, rows_checked: i64 },
}

/// Recomputes the whole chain, oldest first, a page at a time: each row's
/// seq follows the previous one, its `prev_hash` is the previous row's hash
/// (32 zero bytes for the first), and its hash is
/// `sha256(prev_hash || canonical row)`. Stops at the first break.
pub async fn verify(pool: &sqlx::PgPool) -> Result<Verification, StoreError> {
    let mut prev_hash = vec![0u8; 32];
    let mut prev_seq: Option<i64> = None;
    let mut rows = 0i64;
    loop {
        let batch = sqlx::query!(
            r#"select seq, id, occurred_at, actor, action, outcome, code, policy_key, scope_level,
                      scope_id, effective_at, request_id, value_seq, metadata,
                      metadata::text as "metadata_text!", prev_hash, hash
               from audit_logs where $1::bigint is null or seq > $1 order by seq limit 1000"#,
            prev_seq
        )
        .fetch_all(pool)
        .await?;
        if batch.is_empty() {
            let head = prev_seq.map(|seq| ChainHead { seq, hash: hex::encode(&prev_hash) });
            return Ok(Verification::Intact { rows, head });
        }
        for r in batch {
            let record = AuditRecord::from(AuditRow {
                seq: r.seq,
                id: r.id,
                occurred_at: r.occurred_at,
                actor: r.actor,
                action: r.action,
                outcome: r.outcome,
                code: r.code,
                policy_key: r.policy_key,
                scope_level: r.scope_level,
                scope_id: r.scope_id,
                effective_at: r.effective_at,
                request_id: r.request_id,
                value_seq: r.value_seq,
                metadata: r.metadata,
                prev_hash: r.prev_hash,
                hash: r.hash.clone(),
            });
            if let Some(reason) = check_row(&record, &r.metadata_text, prev_seq, &prev_hash) {
                return Ok(Verification::Broken { seq: record.seq, reason, rows_checked: rows });
            }
            prev_hash = r.hash;
            prev_seq = Some(record.seq);
            rows += 1;
        }
    }
}

/// Why `record` does not chain to the row before it, if it does not.
fn check_row(record: &AuditRecord, metadata_text: &str, prev_seq: Option<i64>, prev_hash: &[u8]) -> Option<String> {
    let expected_seq = prev_seq.map_or(1, |s| s + 1);
    if record.seq != expected_seq {
        return Some(format!(
            "expected seq {expected_seq} next, found {}: rows are missing or out of order",
            record.seq
        ));
    }
    if record.prev_hash != hex::encode(prev_hash) {
        return Some(
            "prev_hash is not the previous row's hash: a row before it was changed, removed or reordered".into(),
        );
    }
    let mut hasher = Sha256::new();
    hasher.update(prev_hash);
    hasher.update(canonical(record, metadata_text));
    if record.hash != hex::encode(hasher.finalize()) {
        return Some("hash does not match the row's contents: the row was edited".into());
    }
    None
}

/// The audit record of the change that wrote value row `value_id`.
pub async fn id_for_value(
    executor: impl PgExecutor<'_>,
    value_id: uuid::Uuid,
) -> Result<Option<uuid::Uuid>, StoreError> {
    let id = sqlx::query_scalar!(
        "select a.id from audit_logs a join policy_values v on v.seq = a.value_seq
         where v.id = $1 and a.outcome = 'success' order by a.seq limit 1",
        value_id
    )
    .fetch_optional(executor)
    .await?;
    Ok(id)
}

/// One change of a key at one scope, with the audit record that wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryItem {
    #[serde(flatten)]
    pub value: super::values::ValueRow,
    pub audit_id: Option<uuid::Uuid>,
    /// The cancel row that cancelled this scheduled change, if any.
    pub cancelled_by: Option<uuid::Uuid>,
}

/// Every change of `key` at exactly (level, scope id), newest first.
pub async fn history(
    executor: impl PgExecutor<'_>,
    key: &str,
    level: &str,
    scope_id: &str,
    limit: i64,
) -> Result<Vec<HistoryItem>, StoreError> {
    let rows = sqlx::query!(
        r#"select v.id, v.seq, v.kind, v.key, v.level, v.scope_id, v.value, v.effective_at, v.actor,
                  v.reason, v.created_at, a.id as "audit_id?", c.id as "cancelled_by?"
           from policy_values v
           left join audit_logs a on a.value_seq = v.seq and a.outcome = 'success'
           left join policy_values c on c.cancels_seq = v.seq
           where v.key = $1 and v.level = $2 and v.scope_id = $3
           order by v.seq desc limit $4"#,
        key,
        level,
        scope_id,
        limit
    )
    .fetch_all(executor)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| HistoryItem {
            value: super::values::value_row!(r),
            audit_id: r.audit_id,
            cancelled_by: r.cancelled_by,
        })
        .collect())
}
