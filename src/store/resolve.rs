//! Resolution against the stored rows: fetch, per level the caller names,
//! the row in effect at a time, then apply the shared rule in
//! `domain::resolve`, so the server and the client answer alike.

use sqlx::PgConnection;
use time::OffsetDateTime;

use super::values::typed;
use super::{db_now, StoreError};
use crate::domain::resolve::resolution;
use crate::domain::scope::ScopeKey;
use crate::domain::{Entry, KeyDef, Level, Resolution, Scope};

/// The row in effect at one (key, level, scope id).
struct InEffect {
    key: String,
    level: Level,
    scope_id: String,
    entry: [Entry; 1],
}

/// Per (key, level, scope id) that `scope` names, the row in effect at `at`;
/// one key, or every key when `key` is `None`.
async fn in_effect(
    conn: &mut PgConnection,
    defs: &[KeyDef],
    key: Option<&str>,
    scope: &Scope,
    at: OffsetDateTime,
) -> Result<Vec<InEffect>, StoreError> {
    let rows = sqlx::query!(
        r#"select distinct on (key, level, scope_id)
                  key as "key!", level as "level!", scope_id as "scope_id!", seq as "seq!", id as "id!",
                  value, effective_at as "effective_at!"
           from policy_value_history
           where ($1::text is null or key = $1) and effective_at <= $2
             and (level = 'global'
                  or (level = 'user' and scope_id = $3)
                  or (level = 'project' and scope_id = $4)
                  or (level = 'org' and scope_id = $5)
                  or (level = 'plan' and scope_id = $6))
           order by key, level, scope_id, effective_at desc, seq desc"#,
        key,
        at,
        scope.id(Level::User),
        scope.id(Level::Project),
        scope.id(Level::Org),
        scope.id(Level::Plan),
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        // Rows of keys no longer in the catalog cannot be typed; skip them.
        let Some(def) = defs.iter().find(|d| d.key.as_str() == r.key) else {
            continue;
        };
        let level = Level::parse(&r.level).ok_or_else(|| StoreError::Corrupt(format!("level {:?}", r.level)))?;
        let entry = Entry { seq: r.seq, id: r.id, effective_at: r.effective_at, value: typed(def, r.value)? };
        out.push(InEffect { key: r.key, level, scope_id: r.scope_id, entry: [entry] });
    }
    Ok(out)
}

fn resolve_from(def: &KeyDef, scope: &Scope, at: OffsetDateTime, rows: &[InEffect]) -> Resolution {
    let history = |level: Level, key: ScopeKey<'_>| {
        rows.iter()
            .find(|r| r.key == def.key.as_str() && r.level == level && r.scope_id == key.id)
            .map(|r| &r.entry[..])
    };
    resolution(def, scope, Some(at), history)
}

/// Resolves one key for `scope` at `at` (default: the database time now).
pub async fn resolve(
    conn: &mut PgConnection,
    def: &KeyDef,
    scope: &Scope,
    at: Option<OffsetDateTime>,
) -> Result<Resolution, StoreError> {
    let at = match at {
        Some(at) => at,
        None => db_now(conn).await?,
    };
    let defs = std::slice::from_ref(def);
    let rows = in_effect(conn, defs, Some(def.key.as_str()), scope, at).await?;
    Ok(resolve_from(def, scope, at, &rows))
}

pub use crate::domain::snapshot::{Snapshot, SnapshotValue};

/// Resolves every key in `defs` for `scope` now, in one repeatable-read
/// transaction so the version (the last position, value rows and catalog
/// changes alike) and the values agree.
pub async fn snapshot(conn: &mut PgConnection, defs: &[KeyDef], scope: &Scope) -> Result<Snapshot, StoreError> {
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    sqlx::query!("set transaction isolation level repeatable read, read only").execute(&mut *tx).await?;
    let now = db_now(&mut tx).await?;
    let version = sqlx::query_scalar!(
        r#"select greatest((select coalesce(max(seq), 0) from policy_values),
                           (select coalesce(max(seq), 0) from policy_key_changes)) as "v!""#
    )
    .fetch_one(&mut *tx)
    .await?;
    let next_change_at = sqlx::query_scalar!(
        r#"select min(effective_at) from policy_value_history
           where effective_at > $1
             and (level = 'global'
                  or (level = 'user' and scope_id = $2)
                  or (level = 'project' and scope_id = $3)
                  or (level = 'org' and scope_id = $4)
                  or (level = 'plan' and scope_id = $5))"#,
        now,
        scope.id(Level::User),
        scope.id(Level::Project),
        scope.id(Level::Org),
        scope.id(Level::Plan),
    )
    .fetch_one(&mut *tx)
    .await?;
    let rows = in_effect(&mut tx, defs, None, scope, now).await?;
    tx.commit().await?;
    let mut values = defs
        .iter()
        .map(|def| {
            let r = resolve_from(def, scope, now, &rows);
            (r.key, SnapshotValue { value_type: r.value_type, value: r.value, source: r.source })
        })
        .collect::<Vec<_>>();
    values.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok(Snapshot { scope: scope.clone(), version, next_change_at, values })
}
