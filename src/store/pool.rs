//! Connection hygiene. A future dropped while sqlx's `begin()` waits for the
//! answer to `BEGIN` leaves the session inside a transaction that sqlx does
//! not know about (transact-rs/sqlx issues 4385 and 4393; fixed upstream by
//! pull request 4394, in no release on the crate registry up to 0.9.0). The
//! pool would hand that session to the next borrower, whose work would then
//! run inside someone else's transaction. Two rules keep that from
//! happening here:
//!
//! 1. Every pool this crate builds checks a connection when it is released
//!    and discards it unless its session is idle (`options`).
//! 2. Database work that opens a transaction or writes runs to completion in
//!    a task of its own (`detached`), never in the future of an HTTP request,
//!    which axum drops when the caller hangs up.

use std::future::Future;

use sqlx::postgres::PgPoolOptions;
use sqlx::{PgConnection, Row};

use super::StoreError;

/// Pool options with the release check; callers add sizes and timeouts.
pub fn options() -> PgPoolOptions {
    PgPoolOptions::new().after_release(|conn, _meta| Box::pin(async move { is_idle(conn).await }))
}

/// Whether the session is outside any transaction block. Sent with the
/// simple query protocol, the statement runs in a transaction of its own
/// that starts with it, so its transaction and statement timestamps are
/// equal; inside a block opened earlier (by a `BEGIN` whose answer nobody
/// read), the transaction started before this statement. A session in a
/// failed block answers with an error, which discards it as well.
pub async fn is_idle(conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
    // A plain string, not `query!`: only an unprepared statement is sent
    // with the simple protocol, where the equality above holds.
    let row = sqlx::Executor::fetch_one(&mut *conn, "select transaction_timestamp() = statement_timestamp()").await?;
    let idle: bool = row.try_get(0)?;
    if !idle {
        metrics::counter!("policy_values_db_connections_discarded_total").increment(1);
        tracing::warn!("discarding a pooled connection whose session was left inside a transaction");
    }
    Ok(idle)
}

/// Runs `work` in a task of its own and waits for it. If the caller's future
/// is dropped (a client hanging up, a request timing out), the work still
/// runs to completion: it commits or rolls back, and its connection goes back
/// to the pool idle. Every request handler that writes or opens a
/// transaction goes through this (or through `writer::Writer`, whose batches
/// run in tasks of their own for the same reason).
pub async fn detached<T, F>(work: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: Future<Output = Result<T, StoreError>> + Send + 'static,
{
    match tokio::spawn(work).await {
        Ok(result) => result,
        Err(e) => Err(StoreError::Task(e.to_string())),
    }
}
