//! The store: SQL over PostgreSQL, one file per table or concern. Functions
//! take `impl PgExecutor` or `&mut PgConnection` so the caller owns the
//! transaction.

pub mod audit;
pub mod audit_query;
pub mod change_requests;
pub mod keys;
pub mod pool;
pub mod resolve;
pub mod tokens;
pub mod values;
pub mod writer;

use sqlx::postgres::PgConnectOptions;
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;

use crate::domain::Value;

/// Everything the store can refuse or fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unknown policy key {0:?}")]
    UnknownKey(String),
    #[error("old_value does not match the current value {current}")]
    StaleOldValue { current: Value },
    #[error("effective_at lies more than 60 s before the database time {now}")]
    EffectiveAtInPast { now: OffsetDateTime },
    #[error("nothing is stored at this scope to remove")]
    NotOverridden,
    #[error("no such value row")]
    NotFound,
    #[error("the change already took effect; only scheduled changes can be cancelled")]
    NotScheduled,
    #[error("the change was already cancelled")]
    AlreadyCancelled,
    #[error("catalog change refused: {} stored value(s) would fall outside the new definition", .0.len())]
    CatalogConflict(Vec<keys::OffendingValue>),
    #[error("{0}")]
    OutOfBounds(String),
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Database(sqlx::Error),
    /// One failure of a batch of writes, told to each of them.
    #[error("database error: {0}")]
    Shared(std::sync::Arc<sqlx::Error>),
    /// The connection failed after COMMIT was sent: the write may or may not
    /// have been made. Re-read before retrying.
    #[error("the commit's outcome is unknown: {0}")]
    CommitUnknown(std::sync::Arc<sqlx::Error>),
    /// A detached task (`pool::detached`) did not finish: it panicked, or
    /// the runtime is shutting down.
    #[error("a database task did not finish: {0}")]
    Task(String),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl From<sqlx::Error> for StoreError {
    /// Named constraint violations become the refusals they stand for.
    fn from(err: sqlx::Error) -> StoreError {
        match err.as_database_error() {
            Some(db) if db.constraint() == Some("policy_values_within_bounds") => {
                StoreError::OutOfBounds(db.message().to_string())
            }
            _ => StoreError::Database(err),
        }
    }
}

impl StoreError {
    /// Whether the database could not be reached (or stopped answering),
    /// as opposed to refusing what was asked: worth retrying later.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Database(e) => unreachable_database(e),
            StoreError::Shared(e) => unreachable_database(e),
            _ => false,
        }
    }
}

/// Connection failures, pool exhaustion, and the server refusing or
/// ending sessions (SQLSTATE class 08, 57P01-57P03, 53300).
pub fn unreachable_database(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            code.starts_with("08") || matches!(code.as_ref(), "57P01" | "57P02" | "57P03" | "53300")
        }
        _ => false,
    }
}

/// A pool for `database_url`, with bounded connect time, that never hands
/// out a session left inside a transaction (see `pool`).
pub async fn connect(database_url: &str, max_connections: u32) -> Result<PgPool, StoreError> {
    let options: PgConnectOptions = database_url.parse()?;
    let pool = pool::options()
        .max_connections(max_connections)
        .acquire_timeout(std::time::Duration::from_secs(5))
        .connect_with(options)
        .await?;
    Ok(pool)
}

/// A pool for `database_url` that connects when first used (a server
/// starting while the database is away).
pub fn connect_lazy(database_url: &str, max_connections: u32) -> Result<PgPool, StoreError> {
    let options: PgConnectOptions = database_url.parse()?;
    Ok(pool::options()
        .max_connections(max_connections)
        .acquire_timeout(std::time::Duration::from_secs(5))
        .connect_lazy_with(options))
}

/// Applies the forward-only migrations in `migrations/`.
pub async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    sqlx::migrate!("./migrations").run(pool).await?;
    Ok(())
}

/// Takes the write lock that serialises every write (see the first
/// migration) and returns the database clock once it is held: one round trip.
pub async fn lock_writes(conn: &mut PgConnection) -> Result<OffsetDateTime, StoreError> {
    let now = sqlx::query_scalar!(r#"select clock_timestamp() as "now!" from (select policy_values_write_lock()) l"#)
        .fetch_one(&mut *conn)
        .await?;
    Ok(now)
}

/// The database clock now (not the transaction start).
pub async fn db_now(conn: &mut PgConnection) -> Result<OffsetDateTime, StoreError> {
    let now = sqlx::query_scalar!(r#"select clock_timestamp() as "now!""#).fetch_one(&mut *conn).await?;
    Ok(now)
}
