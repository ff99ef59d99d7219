//! The `change_requests` table (migration 0401): writes to sensitive keys
//! held until other admins approve them, then applied through the ordinary
//! write path, with the request's `old_value`, in the approval's transaction.
//! Every transition is an audit record (docs/governance.md).

use serde::Serialize;
use serde_json::json;
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use super::audit::{self, NewAuditRecord};
use super::values::{Actor, Change, Outcome, Unchanged};
use super::writer::{self, Request};
use super::{keys, lock_writes, StoreError};
use crate::domain::{KeyDef, Level, Value, WriteScope};

/// A change request as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChangeRequest {
    pub id: Uuid,
    /// Increasing with creation; `before` pages on it.
    pub number: i64,
    pub state: String,
    pub key: String,
    pub scope: serde_json::Value,
    pub level: String,
    pub scope_id: String,
    /// The proposed value; null removes the override at the scope.
    pub value: Option<serde_json::Value>,
    pub old_value: serde_json::Value,
    #[serde(with = "time::serde::rfc3339::option")]
    pub effective_at: Option<OffsetDateTime>,
    pub reason: String,
    pub author: String,
    pub approvals_required: i16,
    pub approvals: Vec<Approval>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub decided_at: Option<OffsetDateTime>,
    pub decided_by: Option<String>,
    pub decision_reason: Option<String>,
    /// The value row an applied or scheduled request wrote.
    pub value_id: Option<Uuid>,
    /// The value found instead of `old_value`, for a conflicted request.
    pub current_value: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Approval {
    pub approver: String,
    pub reason: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// A row as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
struct Row {
    id: Uuid,
    number: i64,
    key: String,
    level: String,
    scope_id: String,
    value: Option<serde_json::Value>,
    old_value: serde_json::Value,
    effective_at: Option<OffsetDateTime>,
    reason: String,
    author: String,
    approvals_required: i16,
    state: String,
    created_at: OffsetDateTime,
    expires_at: OffsetDateTime,
    decided_at: Option<OffsetDateTime>,
    decided_by: Option<String>,
    decision_reason: Option<String>,
    value_id: Option<Uuid>,
    current_value: Option<serde_json::Value>,
}

impl Row {
    fn scope_json(&self) -> serde_json::Value {
        Level::parse(&self.level)
            .and_then(|level| WriteScope::at(level, &self.scope_id).ok())
            .map_or(serde_json::Value::Null, |s| s.to_json())
    }

    fn into_request(self, approvals: Vec<Approval>) -> ChangeRequest {
        ChangeRequest {
            scope: self.scope_json(),
            id: self.id,
            number: self.number,
            state: self.state,
            key: self.key,
            level: self.level,
            scope_id: self.scope_id,
            value: self.value,
            old_value: self.old_value,
            effective_at: self.effective_at,
            reason: self.reason,
            author: self.author,
            approvals_required: self.approvals_required,
            approvals,
            created_at: self.created_at,
            expires_at: self.expires_at,
            decided_at: self.decided_at,
            decided_by: self.decided_by,
            decision_reason: self.decision_reason,
            value_id: self.value_id,
            current_value: self.current_value,
        }
    }
}

/// Why a decision on a request was refused or did not apply.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no such change request")]
    NotFound,
    #[error("the change request is {state}, not pending")]
    NotPending { state: String },
    #[error("the author of a change request cannot approve it")]
    SelfApproval,
    #[error("this approver already approved the change request")]
    AlreadyApproved,
    #[error("only the author of a change request can withdraw it")]
    NotAuthor,
    #[error("the token may not touch this key at this level")]
    OutOfScope,
    /// Approved, but what it replaces changed since it was made: nothing
    /// was written and the request is `conflicted`.
    #[error("the change request conflicts with a newer change")]
    Conflicted { request: Box<ChangeRequest>, refusal: StoreError },
}

impl From<sqlx::Error> for RequestError {
    fn from(err: sqlx::Error) -> RequestError {
        RequestError::Store(err.into())
    }
}

/// What a caller decides on a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Approve,
    Reject,
    Withdraw,
}

/// Who decides, and which keys and levels their token may touch.
pub struct Decider<'a> {
    pub actor: Actor<'a>,
    pub allowed: &'a (dyn Fn(&str, &str) -> bool + Sync),
}

/// What a write would do, by every check it makes, without writing.
#[derive(Debug, Clone, PartialEq)]
pub enum Checked {
    /// It would write, replacing this value.
    Changes(Value),
    /// The value is already the one stored at that exact scope (the rule
    /// of `Outcome::Unchanged`): it would write nothing.
    Unchanged(Unchanged),
}

/// Every check a write makes, without writing: what the write would do,
/// or the refusal it would get.
pub async fn check(conn: &mut PgConnection, def: &KeyDef, change: &Change) -> Result<Checked, StoreError> {
    let r = sqlx::query!(
        r#"select outcome as "outcome!", current_value, db_now as "db_now!", value_id, value_seq, effective_at
           from policy_values_check($1, $2, $3, $4, $5, $6)"#,
        def.key.as_str(),
        change.scope.level().as_str(),
        change.scope.id(),
        change.value.as_ref().map(Value::to_json),
        change.effective_at,
        change.old_value.to_json(),
    )
    .fetch_one(&mut *conn)
    .await?;
    let current = super::values::typed(def, r.current_value)?.unwrap_or_else(|| def.default.clone());
    match (r.outcome.as_str(), r.value_id, r.value_seq, r.effective_at) {
        ("ok", ..) => Ok(Checked::Changes(current)),
        ("unchanged", Some(value_id), Some(value_seq), Some(effective_at)) => Ok(Checked::Unchanged(Unchanged {
            key: def.key.to_string(),
            level: change.scope.level().as_str().to_string(),
            scope_id: change.scope.id().to_string(),
            value: change.value.as_ref().map_or(serde_json::Value::Null, Value::to_json),
            value_id,
            value_seq,
            effective_at,
        })),
        ("stale_old_value", ..) => Err(StoreError::StaleOldValue { current }),
        ("not_overridden", ..) => Err(StoreError::NotOverridden),
        ("effective_at_in_past", ..) => Err(StoreError::EffectiveAtInPast { now: r.db_now }),
        (other, ..) => Err(StoreError::Corrupt(format!("policy_values_check answered {other:?}"))),
    }
}

/// What a write to a key that needs approval made.
#[derive(Debug, Clone)]
pub enum Proposal {
    /// A pending change request.
    Request(Box<ChangeRequest>),
    /// Nothing: the value is already stored at that scope, so there is
    /// nothing to approve (no request, no audit record).
    Unchanged(Unchanged),
}

/// Makes a request for `change` (checked as a write is, `old_value`
/// included) and audits it as `change_request.created`; a change that
/// would write nothing makes no request.
pub async fn create(
    pool: &PgPool,
    def: &KeyDef,
    change: &Change,
    actor: Actor<'_>,
    ttl: std::time::Duration,
) -> Result<Proposal, StoreError> {
    let mut tx = pool.begin().await?;
    lock_writes(&mut tx).await?;
    if let Checked::Unchanged(same) = check(&mut tx, def, change).await? {
        return Ok(Proposal::Unchanged(same));
    }
    let ttl_seconds = ttl.as_secs_f64();
    let row = sqlx::query_as!(
        Row,
        "insert into change_requests
             (key, level, scope_id, value, old_value, effective_at, reason, author, approvals_required, expires_at)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, now() + make_interval(secs => $10))
         returning id, number, key, level, scope_id, value, old_value, effective_at, reason, author,
                   approvals_required, state, created_at, expires_at, decided_at, decided_by, decision_reason,
                   value_id, current_value",
        def.key.as_str(),
        change.scope.level().as_str(),
        change.scope.id(),
        change.value.as_ref().map(Value::to_json),
        change.old_value.to_json(),
        change.effective_at,
        change.reason,
        actor.principal,
        i16::try_from(def.approvals_required.max(1)).unwrap_or(i16::MAX),
        ttl_seconds,
    )
    .fetch_one(&mut *tx)
    .await?;
    record(&mut tx, &row, actor, "created", None, &row.reason, json!({})).await?;
    tx.commit().await?;
    Ok(Proposal::Request(Box::new(row.into_request(Vec::new()))))
}

/// Appends the audit record of a transition of `row` (whose `state` is the
/// state after it; `from` the one before, if different).
async fn record(
    conn: &mut PgConnection,
    row: &Row,
    actor: Actor<'_>,
    transition: &str,
    from: Option<&str>,
    reason: &str,
    extra: serde_json::Value,
) -> Result<(), StoreError> {
    let action = format!("change_request.{transition}");
    let mut metadata = json!({
        "change_request_id": row.id,
        "from_state": from.unwrap_or(row.state.as_str()),
        "to_state": row.state,
        "reason": reason,
        "policy_key": row.key,
        "scope": row.scope_json(),
        "new_value": row.value,
        "old_value": row.old_value,
        "author": row.author,
        "approvals_required": row.approvals_required,
    });
    if let (Some(fields), Some(more)) = (metadata.as_object_mut(), extra.as_object()) {
        fields.extend(more.clone());
    }
    let entry = NewAuditRecord {
        actor: actor.principal,
        action: &action,
        policy_key: Some(&row.key),
        scope_level: Some(&row.level),
        scope_id: Some(&row.scope_id),
        effective_at: row.effective_at,
        request_id: actor.request_id,
        metadata,
        ..Default::default()
    };
    audit::append(&mut *conn, &entry).await?;
    Ok(())
}

const COLUMNS: &str = "id, number, key, level, scope_id, value, old_value, effective_at, reason, author, \
                       approvals_required, state, created_at, expires_at, decided_at, decided_by, \
                       decision_reason, value_id, current_value";

async fn approvals_of(conn: &mut PgConnection, ids: &[Uuid]) -> Result<Vec<(Uuid, Approval)>, StoreError> {
    let rows = sqlx::query!(
        "select request_id, approver, reason, created_at from change_request_approvals
         where request_id = any($1) order by created_at, approver",
        ids
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.request_id, Approval { approver: r.approver, reason: r.reason, created_at: r.created_at }))
        .collect())
}

async fn with_approvals(conn: &mut PgConnection, rows: Vec<Row>) -> Result<Vec<ChangeRequest>, StoreError> {
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let mut approvals = approvals_of(conn, &ids).await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let mine = approvals.iter().filter(|(id, _)| *id == row.id).map(|(_, a)| a.clone()).collect();
            approvals.retain(|(id, _)| *id != row.id);
            row.into_request(mine)
        })
        .collect())
}

/// One request, with its approvals.
pub async fn get(pool: &PgPool, id: Uuid) -> Result<Option<ChangeRequest>, StoreError> {
    let mut conn = pool.acquire().await?;
    let row = sqlx::query_as::<_, Row>(&format!("select {COLUMNS} from change_requests where id = $1"))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    match row {
        Some(row) => Ok(with_approvals(&mut conn, vec![row]).await?.pop()),
        None => Ok(None),
    }
}

/// Filters for `list`; `None` matches everything.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub state: Option<String>,
    pub key: Option<String>,
    pub author: Option<String>,
    /// Only requests older than this `number` (the page after one ending there).
    pub before: Option<i64>,
    pub limit: i64,
}

/// Requests matching `filter`, newest first.
pub async fn list(pool: &PgPool, filter: &Filter) -> Result<Vec<ChangeRequest>, StoreError> {
    let mut conn = pool.acquire().await?;
    let rows = sqlx::query_as::<_, Row>(&format!(
        "select {COLUMNS} from change_requests
         where ($1::text is null or state = $1) and ($2::text is null or key = $2)
           and ($3::text is null or author = $3) and ($4::bigint is null or number < $4)
         order by number desc limit $5"
    ))
    .bind(&filter.state)
    .bind(&filter.key)
    .bind(&filter.author)
    .bind(filter.before)
    .bind(filter.limit)
    .fetch_all(&mut *conn)
    .await?;
    with_approvals(&mut conn, rows).await
}

/// The key and level of value row `id`, for a token limited to keys and
/// levels that cancels it; `None` if there is no such row.
pub async fn value_row_scope(pool: &PgPool, id: Uuid) -> Result<Option<(String, String)>, StoreError> {
    let row = sqlx::query!("select key, level from policy_values where id = $1", id).fetch_optional(pool).await?;
    Ok(row.map(|r| (r.key, r.level)))
}

/// The reason recorded for an expiry.
const EXPIRED: &str = "no decision within the change request's time to live";

/// The actor of transitions nobody asked for (expiry).
pub const SYSTEM_ACTOR: &str = "policy-values";

/// Moves every pending request past its `expires_at` to `expired`, each
/// with its audit record; returns how many.
pub async fn expire_due(pool: &PgPool) -> Result<usize, StoreError> {
    let due = sqlx::query_scalar!(
        r#"select exists (select 1 from change_requests where state = 'pending' and expires_at <= now()) as "due!""#
    )
    .fetch_one(pool)
    .await?;
    if !due {
        return Ok(0);
    }
    let mut tx = pool.begin().await?;
    lock_writes(&mut tx).await?;
    let rows = sqlx::query_as::<_, Row>(&format!(
        "update change_requests set state = 'expired', decided_at = clock_timestamp()
         where state = 'pending' and expires_at <= clock_timestamp() returning {COLUMNS}"
    ))
    .fetch_all(&mut *tx)
    .await?;
    let actor = Actor { principal: SYSTEM_ACTOR, request_id: None };
    for row in &rows {
        record(&mut tx, row, actor, "expired", Some("pending"), EXPIRED, json!({})).await?;
    }
    tx.commit().await?;
    Ok(rows.len())
}

/// Approves, rejects or withdraws request `id`, with `reason`. An approval
/// that brings the count to `approvals_required` applies the change in the
/// same transaction; if the change no longer fits (`old_value` stale, the
/// override to remove gone) nothing is written, the request becomes
/// `conflicted` and the answer is `RequestError::Conflicted`.
pub async fn decide(
    pool: &PgPool,
    id: Uuid,
    decision: Decision,
    reason: &str,
    who: &Decider<'_>,
) -> Result<ChangeRequest, RequestError> {
    let mut tx = pool.begin().await?;
    let now = lock_writes(&mut tx).await?;
    let row: Row = sqlx::query_as::<_, Row>(&format!("select {COLUMNS} from change_requests where id = $1 for update"))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(RequestError::NotFound)?;
    if !(who.allowed)(&row.key, &row.level) {
        return Err(RequestError::OutOfScope);
    }
    if row.state == "pending" && row.expires_at <= now {
        transition(&mut tx, &row, "expired", None, None, None).await?;
        let expired = reread(&mut tx, id).await?;
        let system = Actor { principal: SYSTEM_ACTOR, request_id: None };
        record(&mut tx, &expired, system, "expired", Some("pending"), EXPIRED, json!({})).await?;
        tx.commit().await?;
        return Err(RequestError::NotPending { state: "expired".into() });
    }
    if row.state != "pending" {
        return Err(RequestError::NotPending { state: row.state });
    }
    let principal = who.actor.principal;
    match decision {
        Decision::Withdraw | Decision::Reject => {
            if decision == Decision::Withdraw && row.author != principal {
                return Err(RequestError::NotAuthor);
            }
            let (to, name) =
                if decision == Decision::Withdraw { ("withdrawn", "withdrawn") } else { ("rejected", "rejected") };
            transition(&mut tx, &row, to, Some(principal), Some(reason), None).await?;
            let after = reread(&mut tx, id).await?;
            record(&mut tx, &after, who.actor, name, Some("pending"), reason, json!({})).await?;
        }
        Decision::Approve => {
            if let Err(err) = approve(&mut tx, row, reason, who, now).await {
                // A conflict is recorded (state and audit), then refused.
                if matches!(err, RequestError::Conflicted { .. }) {
                    tx.commit().await?;
                }
                return Err(err);
            }
        }
    }
    tx.commit().await?;
    get(pool, id).await?.ok_or(RequestError::NotFound)
}

async fn approve(
    tx: &mut PgConnection,
    row: Row,
    reason: &str,
    who: &Decider<'_>,
    now: OffsetDateTime,
) -> Result<(), RequestError> {
    let principal = who.actor.principal;
    if row.author == principal {
        return Err(RequestError::SelfApproval);
    }
    let inserted = sqlx::query_scalar!(
        "insert into change_request_approvals (request_id, approver, reason) values ($1, $2, $3)
         on conflict do nothing returning approver",
        row.id,
        principal,
        reason
    )
    .fetch_optional(&mut *tx)
    .await?;
    if inserted.is_none() {
        return Err(RequestError::AlreadyApproved);
    }
    let approvers: Vec<String> = approvals_of(tx, &[row.id]).await?.into_iter().map(|(_, a)| a.approver).collect();
    let extra = json!({ "approvals": approvers.len(), "approvers": approvers });
    record(tx, &row, who.actor, "approved", None, reason, extra).await?;
    if approvers.len() < usize::try_from(row.approvals_required).unwrap_or(usize::MAX) {
        return Ok(());
    }
    match apply(tx, &row, &approvers, who.actor, now).await? {
        Ok(written) => {
            // Scheduled when it was given a time still to come (see `apply`).
            let to = if row.effective_at.is_some_and(|t| t > now) { "scheduled" } else { "applied" };
            transition(tx, &row, to, Some(principal), Some(reason), Some(written.value_id)).await?;
            let after = reread(tx, row.id).await?;
            let extra =
                json!({ "approvers": approvers, "value_id": written.value_id, "value_audit_id": written.audit_id });
            record(tx, &after, who.actor, "applied", Some("pending"), reason, extra).await?;
            Ok(())
        }
        Err(refusal) => {
            let current = match &refusal {
                StoreError::StaleOldValue { current } => Some(current.to_json()),
                _ => None,
            };
            sqlx::query!(
                "update change_requests set state = 'conflicted', decided_at = clock_timestamp(), decided_by = $2,
                        decision_reason = $3, current_value = $4 where id = $1",
                row.id,
                principal,
                reason,
                current,
            )
            .execute(&mut *tx)
            .await?;
            let after = reread(tx, row.id).await?;
            let extra = json!({ "approvers": approvers, "code": refusal_code(&refusal), "current_value": current });
            record(tx, &after, who.actor, "conflicted", Some("pending"), reason, extra).await?;
            let mut request = with_approvals(tx, vec![after]).await?;
            let request = request.pop().ok_or(RequestError::NotFound)?;
            // Committed by the caller: the conflict is recorded, then refused.
            Err(RequestError::Conflicted { request: Box::new(request), refusal })
        }
    }
}

/// The stable code of a write refusal that makes a request conflicted.
fn refusal_code(err: &StoreError) -> &'static str {
    match err {
        StoreError::StaleOldValue { .. } => "stale_old_value",
        StoreError::NotOverridden => "not_overridden",
        StoreError::EffectiveAtInPast { .. } => "effective_at_in_past",
        _ => "conflict",
    }
}

/// The value row an applied request stands on: the one it wrote (with its
/// audit record), or the one that already held its value.
struct Applied {
    value_id: Uuid,
    audit_id: Option<Uuid>,
}

/// Applies the request through the write function, in `tx`. The outer
/// result is a failure of the database; the inner one a refusal of the write
/// (nothing written).
async fn apply(
    tx: &mut PgConnection,
    row: &Row,
    approvers: &[String],
    actor: Actor<'_>,
    now: OffsetDateTime,
) -> Result<Result<Applied, StoreError>, RequestError> {
    let def = keys::get(&mut *tx, &row.key).await?.ok_or_else(|| StoreError::UnknownKey(row.key.clone()))?;
    let corrupt = |what: &str| StoreError::Corrupt(format!("change request {}: {what}", row.id));
    let level = Level::parse(&row.level).ok_or_else(|| corrupt("level"))?;
    let scope = WriteScope::at(level, &row.scope_id).map_err(|_| corrupt("scope"))?;
    // A bound tightened since the request was made refuses it like a write.
    let value = row.value.as_ref().map(|j| def.parse_value(j)).transpose();
    let value = match value {
        Ok(value) => value,
        Err(e) => return Err(StoreError::OutOfBounds(e.to_string()).into()),
    };
    let old_value = Value::from_json(&row.old_value, def.value_type).map_err(|_| corrupt("old_value"))?;
    // A time that passed while the request waited: it applies now.
    let effective_at = row.effective_at.filter(|t| *t > now);
    let change = Change { scope, value, effective_at, reason: row.reason.clone(), old_value };
    let request = Request::new(def, &change, Actor { principal: &row.author, request_id: actor.request_id })
        .with_metadata("change_request_id", json!(row.id))
        .with_metadata("approvers", json!(approvers))
        .with_metadata("requested_by", json!(row.author));
    match writer::write_in(tx, &request).await {
        Ok(Outcome::Written(written)) => {
            Ok(Ok(Applied { value_id: written.value.id, audit_id: Some(written.audit_id) }))
        }
        // The value was already the one stored there: nothing to write.
        Ok(Outcome::Unchanged(same)) => Ok(Ok(Applied { value_id: same.value_id, audit_id: None })),
        Err(
            e @ (StoreError::StaleOldValue { .. } | StoreError::NotOverridden | StoreError::EffectiveAtInPast { .. }),
        ) => Ok(Err(e)),
        Err(e) => Err(e.into()),
    }
}

async fn transition(
    conn: &mut PgConnection,
    row: &Row,
    to: &str,
    by: Option<&str>,
    reason: Option<&str>,
    value_id: Option<Uuid>,
) -> Result<(), StoreError> {
    sqlx::query!(
        "update change_requests set state = $2, decided_at = clock_timestamp(), decided_by = $3,
                decision_reason = $4, value_id = $5 where id = $1",
        row.id,
        to,
        by,
        reason,
        value_id,
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn reread(conn: &mut PgConnection, id: Uuid) -> Result<Row, StoreError> {
    let row = sqlx::query_as::<_, Row>(&format!("select {COLUMNS} from change_requests where id = $1"))
        .bind(id)
        .fetch_one(&mut *conn)
        .await?;
    Ok(row)
}
