//! Group commit for admin writes. Every write holds the write lock until its
//! transaction has committed, so one write at a time also meant one WAL
//! flush at a time. A `Writer` queues concurrent writes and sends whatever
//! has queued as one statement (`policy_values_write_batch`, migration
//! 0009): one transaction, one flush, and the same answers as the writes
//! made one after another in queue order (a write of the value already
//! stored at its scope answers `Outcome::Unchanged`, migration 0200). Each batch runs in a transaction
//! of its own, in a task of its own: a caller that hangs up cannot cut it
//! short, and "written" is answered only after its COMMIT succeeded.

use std::sync::Arc;

use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot, Semaphore};
use uuid::Uuid;

use super::values::{typed, Actor, Change, Outcome, Unchanged, ValueRow, Written};
use super::StoreError;
use crate::domain::{KeyDef, Value};

/// The most writes sent in one statement.
pub const MAX_BATCH: usize = 32;
/// Batches in flight at once: while one commits, the next is already
/// waiting for the lock, so the lock is never idle while writes queue.
const IN_FLIGHT: usize = 2;
/// Writes waiting for a batch before `write` itself waits.
const QUEUE: usize = 1024;

/// One admin write, owned so it can wait in the queue.
#[derive(Debug, Clone)]
pub struct Request {
    def: KeyDef,
    level: &'static str,
    scope_id: String,
    value: Option<serde_json::Value>,
    effective_at: Option<OffsetDateTime>,
    reason: String,
    old_value: serde_json::Value,
    actor: String,
    request_id: Option<String>,
    metadata: serde_json::Value,
}

impl Request {
    pub fn new(def: KeyDef, change: &Change, actor: Actor<'_>) -> Request {
        let value = change.value.as_ref().map(Value::to_json);
        let metadata = serde_json::json!({
            "policy_key": def.key.as_str(),
            "scope": change.scope.to_json(),
            "new_value": value,
            "reason": change.reason,
        });
        Request {
            level: change.scope.level().as_str(),
            scope_id: change.scope.id().to_string(),
            value,
            effective_at: change.effective_at,
            reason: change.reason.clone(),
            old_value: change.old_value.to_json(),
            actor: actor.principal.to_string(),
            request_id: actor.request_id.map(str::to_string),
            metadata,
            def,
        }
    }
}

impl Request {
    /// Adds `field` to the audit record's metadata (a change request names
    /// itself and its approvers there).
    pub fn with_metadata(mut self, field: &str, value: serde_json::Value) -> Request {
        if let Some(fields) = self.metadata.as_object_mut() {
            fields.insert(field.to_string(), value);
        }
        self
    }
}

/// Makes one write inside the caller's transaction, outside the queue: for
/// a write that must commit or roll back together with other changes (an
/// approved change request and its state). Refusals (`stale_old_value`,
/// ...) come back as errors with nothing written; the transaction stays
/// usable for recording them.
pub async fn write_in(conn: &mut sqlx::PgConnection, request: &Request) -> Result<Outcome, StoreError> {
    let mut rows = statement(conn, std::slice::from_ref(request)).await?;
    match rows.pop() {
        Some(row) if rows.is_empty() => interpret(request, row),
        _ => Err(StoreError::Corrupt("policy_values_write_batch did not answer one row for one write".into())),
    }
}

struct Queued {
    request: Request,
    reply: oneshot::Sender<Result<Outcome, StoreError>>,
}

/// The queue in front of the database; clones share it. The task that
/// drains it ends when the last clone is dropped.
#[derive(Clone)]
pub struct Writer {
    queue: mpsc::Sender<Queued>,
}

impl Writer {
    /// Starts the task that sends queued writes to `pool`.
    pub fn spawn(pool: sqlx::PgPool) -> Writer {
        let (queue, rx) = mpsc::channel(QUEUE);
        tokio::spawn(drain(pool, rx));
        Writer { queue }
    }

    /// Makes one write, committed together with any others queued meanwhile.
    /// Dropped before its batch is sent (a request timing out), it is not
    /// written at all.
    pub async fn write(&self, request: Request) -> Result<Outcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue.send(Queued { request, reply }).await.map_err(|_| StoreError::Database(sqlx::Error::PoolClosed))?;
        answer.await.map_err(|_| StoreError::Database(sqlx::Error::PoolClosed))?
    }
}

/// Takes the first queued write, then everything queued behind it up to
/// `MAX_BATCH`, once a batch slot is free: the longer the database takes,
/// the larger the next batch.
async fn drain(pool: sqlx::PgPool, mut rx: mpsc::Receiver<Queued>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        batch.retain(|q| !q.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let pool = pool.clone();
        tokio::spawn(async move {
            let (requests, replies): (Vec<_>, Vec<_>) = batch.into_iter().map(|q| (q.request, q.reply)).unzip();
            let answers = execute(&pool, &requests).await;
            drop(slot);
            for (reply, answer) in replies.into_iter().zip(answers) {
                let _ = reply.send(answer); // the caller may have gone: its write stands
            }
        });
    }
}

/// Why a statement's writes were not all answered by their rows.
enum Failure {
    /// The transaction did not commit: nothing was written.
    NotWritten(sqlx::Error),
    /// The connection failed after COMMIT was sent: whether the writes
    /// were made is unknown.
    Unknown(sqlx::Error),
}

/// Makes `requests` in one statement and answers each. If the database
/// refuses the statement (which rolls all of it back), each write is made
/// alone so that only the one at fault is refused.
pub async fn execute(pool: &sqlx::PgPool, requests: &[Request]) -> Vec<Result<Outcome, StoreError>> {
    metrics::histogram!("policy_values_write_batch_size").record(requests.len() as f64);
    match send(pool, requests).await {
        Err(Failure::NotWritten(err @ sqlx::Error::Database(_))) if requests.len() > 1 => {
            tracing::info!(error = %err, writes = requests.len(), "a batched write was refused; writing one at a time");
            let mut answers = Vec::with_capacity(requests.len());
            for request in requests.chunks(1) {
                answers.extend(answer_all(request, send(pool, request).await));
            }
            answers
        }
        sent => answer_all(requests, sent),
    }
}

/// Each write's answer from what the statement that made them returned.
fn answer_all(requests: &[Request], sent: Result<Vec<Row>, Failure>) -> Vec<Result<Outcome, StoreError>> {
    match sent {
        Ok(rows) if rows.len() == requests.len() => {
            requests.iter().zip(rows).map(|(r, row)| interpret(r, row)).collect()
        }
        Ok(rows) => {
            let msg = format!("policy_values_write_batch answered {} rows for {} writes", rows.len(), requests.len());
            requests.iter().map(|_| Err(StoreError::Corrupt(msg.clone()))).collect()
        }
        Err(Failure::NotWritten(err)) if requests.len() == 1 => vec![Err(err.into())],
        // A lost connection, say: nothing was written, and every writer
        // is told so.
        Err(Failure::NotWritten(err)) => {
            tracing::error!(error = %err, writes = requests.len(), "a batch of writes failed");
            let shared = Arc::new(err);
            requests.iter().map(|_| Err(StoreError::Shared(shared.clone()))).collect()
        }
        Err(Failure::Unknown(err)) => {
            tracing::error!(error = %err, writes = requests.len(), "the connection failed during COMMIT");
            metrics::counter!("policy_values_commit_unknown_total").increment(requests.len() as u64);
            let shared = Arc::new(err);
            requests.iter().map(|_| Err(StoreError::CommitUnknown(shared.clone()))).collect()
        }
    }
}

/// What the database answered for one write.
struct Row {
    outcome: String,
    current_value: Option<serde_json::Value>,
    db_now: OffsetDateTime,
    value_id: Option<Uuid>,
    value_seq: Option<i64>,
    effective_at: Option<OffsetDateTime>,
    created_at: Option<OffsetDateTime>,
    audit_id: Option<Uuid>,
    audit_seq: Option<i64>,
}

/// Runs the batch in a transaction this function opens on a connection
/// the pool knows to be idle (`pool::options`), and answers only once its
/// own COMMIT has succeeded: an answer of "written" means committed.
async fn send(pool: &sqlx::PgPool, requests: &[Request]) -> Result<Vec<Row>, Failure> {
    let mut tx = pool.begin().await.map_err(Failure::NotWritten)?;
    let rows = statement(&mut tx, requests).await.map_err(Failure::NotWritten)?;
    match tx.commit().await {
        Ok(()) => Ok(rows),
        // The server answered the COMMIT with an error: it rolled back.
        Err(err @ sqlx::Error::Database(_)) => Err(Failure::NotWritten(err)),
        Err(err) => Err(Failure::Unknown(err)),
    }
}

/// The `policy_values_write_batch` call for `requests`.
async fn statement(conn: &mut sqlx::PgConnection, requests: &[Request]) -> Result<Vec<Row>, sqlx::Error> {
    fn column<'a, T>(requests: &'a [Request], field: impl Fn(&'a Request) -> T) -> Vec<T> {
        requests.iter().map(field).collect()
    }
    let keys = column(requests, |r| r.def.key.as_str());
    let levels = column(requests, |r| r.level);
    let scope_ids = column(requests, |r| r.scope_id.as_str());
    let values = column(requests, |r| r.value.clone());
    let effective = column(requests, |r| r.effective_at);
    let reasons = column(requests, |r| r.reason.as_str());
    let old_values = column(requests, |r| r.old_value.clone());
    let actors = column(requests, |r| r.actor.as_str());
    let request_ids = column(requests, |r| r.request_id.as_deref());
    let metadata = column(requests, |r| r.metadata.clone());
    sqlx::query_as!(
        Row,
        r#"select outcome as "outcome!", current_value, db_now as "db_now!", value_id, value_seq,
                  effective_at, created_at, audit_id, audit_seq
           from policy_values_write_batch($1::text[], $2::text[], $3::text[], $4::jsonb[], $5::timestamptz[],
                                          $6::text[], $7::jsonb[], $8::text[], $9::text[], $10::jsonb[])
           order by ord"#,
        &keys as &[&str],
        &levels as &[&str],
        &scope_ids as &[&str],
        &values as &[Option<serde_json::Value>],
        &effective as &[Option<OffsetDateTime>],
        &reasons as &[&str],
        &old_values,
        &actors as &[&str],
        &request_ids as &[Option<&str>],
        &metadata,
    )
    .fetch_all(conn)
    .await
}

fn interpret(request: &Request, r: Row) -> Result<Outcome, StoreError> {
    let def = &request.def;
    let current = typed(def, r.current_value)?.unwrap_or_else(|| def.default.clone());
    let written = (r.value_id, r.value_seq, r.effective_at, r.created_at, r.audit_id, r.audit_seq);
    match (r.outcome.as_str(), written) {
        ("effective_at_in_past", _) => Err(StoreError::EffectiveAtInPast { now: r.db_now }),
        ("stale_old_value", _) => Err(StoreError::StaleOldValue { current }),
        ("not_overridden", _) => Err(StoreError::NotOverridden),
        ("unchanged", (Some(value_id), Some(value_seq), Some(effective_at), _, None, None)) => {
            Ok(Outcome::Unchanged(Unchanged {
                key: def.key.to_string(),
                level: request.level.to_string(),
                scope_id: request.scope_id.clone(),
                value: request.value.clone().unwrap_or(serde_json::Value::Null),
                value_id,
                value_seq,
                effective_at,
            }))
        }
        ("written", (Some(id), Some(seq), Some(effective_at), Some(created_at), Some(audit_id), Some(audit_seq))) => {
            metrics::counter!("policy_values_audit_rows_total").increment(1);
            metrics::counter!("policy_values_notifications_total").increment(1);
            let value = ValueRow {
                id,
                seq,
                kind: if request.value.is_some() { "set" } else { "unset" }.to_string(),
                key: def.key.to_string(),
                level: request.level.to_string(),
                scope_id: request.scope_id.clone(),
                value: request.value.clone(),
                effective_at,
                actor: request.actor.clone(),
                reason: request.reason.clone(),
                created_at,
            };
            Ok(Outcome::Written(Written { value, old_value: Some(current.to_json()), audit_id, audit_seq }))
        }
        (other, _) => Err(StoreError::Corrupt(format!("policy_values_write_batch answered {other:?}"))),
    }
}
