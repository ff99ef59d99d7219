//! The store: SQL over PostgreSQL, one file per table or concern. Functions
//! take `impl PgExecutor` or `&mut PgConnection` so the caller owns the
//! transaction.

pub mod audit;
pub mod audit_query;
pub mod keys;
pub mod resolve;
pub mod tokens;
pub mod values;
pub mod writer;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
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

/// A pool for `database_url`, with bounded connect time.
pub async fn connect(database_url: &str, max_connections: u32) -> Result<PgPool, StoreError> {
    let options: PgConnectOptions = database_url.parse()?;
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(std::time::Duration::from_secs(5))
        .connect_with(options)
        .await?;
    Ok(pool)
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
