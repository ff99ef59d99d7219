//! Reading the store for the client: a full load (catalog, every row in
//! force or scheduled, the last seq) and the tail's fetch of newer rows.

use sqlx::PgPool;
use time::OffsetDateTime;

use super::replica::{Row, RowKind};
use crate::domain::{KeyDef, Level};
use crate::store::{keys, StoreError};

/// Everything a replica needs, read in one repeatable-read transaction.
pub struct FullLoad {
    pub catalog: Vec<KeyDef>,
    pub rows: Vec<Row>,
    pub last_seq: i64,
    /// The database time of the last committed row: the pruning horizon.
    pub horizon: OffsetDateTime,
}

pub async fn full(pool: &PgPool) -> Result<FullLoad, StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query!("set transaction isolation level repeatable read, read only")
        .execute(&mut *tx)
        .await?;
    let last =
        sqlx::query!(r#"select seq, created_at from policy_values order by seq desc limit 1"#)
            .fetch_optional(&mut *tx)
            .await?;
    let (last_seq, horizon) = match last {
        Some(r) => (r.seq, r.created_at),
        None => (0, OffsetDateTime::UNIX_EPOCH),
    };
    let catalog = keys::list(&mut *tx).await?;
    // Per scope the row in effect at the horizon, and every row after it.
    // The horizon is the time of the last committed row, not "now": a cancel
    // still in flight checked its target against a time at least that late.
    let records = sqlx::query!(
        r#"select h.seq as "seq!", h.id as "id!", h.key as "key!", h.level as "level!",
                  h.scope_id as "scope_id!", h.value, h.effective_at as "effective_at!"
           from policy_value_history h
           where h.effective_at > $1
              or h.seq = (select h2.seq from policy_value_history h2
                          where h2.key = h.key and h2.level = h.level and h2.scope_id = h.scope_id
                            and h2.effective_at <= $1
                          order by h2.effective_at desc, h2.seq desc limit 1)
           order by h.seq"#,
        horizon
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let rows = records
        .into_iter()
        .map(|r| {
            Ok(Row {
                seq: r.seq,
                id: r.id,
                kind: if r.value.is_some() {
                    RowKind::Set
                } else {
                    RowKind::Unset
                },
                key: r.key,
                level: parse_level(&r.level)?,
                scope_id: r.scope_id,
                value: r.value,
                effective_at: r.effective_at,
            })
        })
        .collect::<Result<_, StoreError>>()?;
    Ok(FullLoad {
        catalog,
        rows,
        last_seq,
        horizon,
    })
}

/// Rows with seq above `after`, in seq order, at most `limit`, with the
/// database time of the newest one (the pruning horizon after applying).
pub async fn after(
    pool: &PgPool,
    after: i64,
    limit: i64,
) -> Result<(Vec<Row>, Option<OffsetDateTime>), StoreError> {
    let records = sqlx::query!(
        "select seq, id, kind, key, level, scope_id, value, effective_at, cancels_seq, created_at
         from policy_values where seq > $1 order by seq limit $2",
        after,
        limit
    )
    .fetch_all(pool)
    .await?;
    let horizon = records.last().map(|r| r.created_at);
    let rows = records
        .into_iter()
        .map(|r| {
            let kind = match (r.kind.as_str(), r.cancels_seq) {
                ("set", _) => RowKind::Set,
                ("unset", _) => RowKind::Unset,
                ("cancel", Some(cancels_seq)) => RowKind::Cancel { cancels_seq },
                (other, _) => return Err(StoreError::Corrupt(format!("row kind {other:?}"))),
            };
            Ok(Row {
                seq: r.seq,
                id: r.id,
                kind,
                key: r.key,
                level: parse_level(&r.level)?,
                scope_id: r.scope_id,
                value: r.value,
                effective_at: r.effective_at,
            })
        })
        .collect::<Result<_, StoreError>>()?;
    Ok((rows, horizon))
}

fn parse_level(raw: &str) -> Result<Level, StoreError> {
    Level::parse(raw).ok_or_else(|| StoreError::Corrupt(format!("level {raw:?}")))
}
