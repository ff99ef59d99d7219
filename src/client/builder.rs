//! Building a `PolicyClient`: connected to the store (with its fallbacks),
//! or fixed in code for tests.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use super::replica::{Row, RowKind};
use super::tail::{self, TailConfig};
use super::{Origin, PolicyClient, PolicyError, Shared, TaskGuard};
use crate::domain::{Catalog, Value, WriteScope};

enum Database {
    Url(String),
    Options(Box<PgConnectOptions>),
    Pool(PgPool),
}

/// The name the client's connections show in `pg_stat_activity`.
pub const APPLICATION_NAME: &str = "policy-values-client";

/// Settings for `PolicyClient::builder()`.
pub struct PolicyClientBuilder {
    database: Option<Database>,
    config: TailConfig,
}

impl Default for PolicyClientBuilder {
    fn default() -> PolicyClientBuilder {
        PolicyClientBuilder {
            database: None,
            config: TailConfig {
                snapshot_path: None,
                safety_poll: Duration::from_secs(30),
                load_timeout: Duration::from_secs(5),
                snapshot_interval: Duration::from_secs(1),
                fallback_catalog: None,
            },
        }
    }
}

impl PolicyClientBuilder {
    pub fn database_url(mut self, url: &str) -> Self {
        self.database = Some(Database::Url(url.to_string()));
        self
    }

    pub fn connect_options(mut self, options: PgConnectOptions) -> Self {
        self.database = Some(Database::Options(Box::new(options)));
        self
    }

    /// Uses an existing pool for reads; the LISTEN connection is opened with
    /// the same connect options.
    pub fn pool(mut self, pool: PgPool) -> Self {
        self.database = Some(Database::Pool(pool));
        self
    }

    /// Keep a snapshot file there (written after changes, at most once per
    /// `snapshot_interval`), and start from it when the database is down.
    pub fn snapshot_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.config.snapshot_path = Some(path.into());
        self
    }

    /// How often to re-read the store in case a notification was lost (30 s).
    pub fn safety_poll(mut self, every: Duration) -> Self {
        self.config.safety_poll = every;
        self
    }

    /// How long `connect` waits for the database before falling back (5 s).
    pub fn load_timeout(mut self, timeout: Duration) -> Self {
        self.config.load_timeout = timeout;
        self
    }

    pub fn snapshot_interval(mut self, every: Duration) -> Self {
        self.config.snapshot_interval = every;
        self
    }

    /// The catalog served when neither database nor snapshot is available
    /// (default: the one built into this library).
    pub fn fallback_catalog(mut self, catalog: Catalog) -> Self {
        self.config.fallback_catalog = Some(catalog);
        self
    }

    /// Loads the replica (or falls back) and starts tailing. Returns within
    /// about `load_timeout` whether or not the database answers; it keeps
    /// retrying in the background.
    pub async fn connect(self) -> Result<PolicyClient, PolicyError> {
        let pool = match self.database {
            Some(Database::Pool(pool)) => pool,
            Some(Database::Url(url)) => {
                let options: PgConnectOptions =
                    url.parse().map_err(|e: sqlx::Error| PolicyError::Start(e.to_string()))?;
                self.config.pool_for(options)
            }
            Some(Database::Options(options)) => self.config.pool_for(*options),
            None => return Err(PolicyError::Start("no database URL or pool given".into())),
        };
        let shared = Arc::new(Shared::new());
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(tail::run(Arc::clone(&shared), pool, self.config, ready_tx));
        let guard = TaskGuard(Some(task));
        ready_rx.await.map_err(|_| PolicyError::Start("the background task ended before loading".into()))?;
        Ok(PolicyClient { shared, _task: Arc::new(guard) })
    }
}

/// Values given in code, resolved by the real rule: for services' tests.
#[derive(Default)]
pub struct FixedBuilder {
    catalog: Option<Catalog>,
    rows: Vec<(String, WriteScope, Value)>,
}

impl FixedBuilder {
    /// Use this catalog instead of the built-in one.
    pub fn catalog(mut self, catalog: Catalog) -> Self {
        self.catalog = Some(catalog);
        self
    }

    /// Stores `value` for `key` at `scope` (`WriteScope::global()` or
    /// `WriteScope::at(Level::Org, "acme")?`).
    pub fn set(mut self, key: &str, scope: WriteScope, value: impl Into<Value>) -> Self {
        self.rows.push((key.to_string(), scope, value.into()));
        self
    }

    /// Checks every value against its key's type and bounds.
    pub fn build(self) -> Result<PolicyClient, PolicyError> {
        let catalog = match self.catalog {
            Some(catalog) => catalog,
            None => Catalog::builtin().map_err(|e| PolicyError::Start(e.to_string()))?,
        };
        let mut rows = Vec::with_capacity(self.rows.len());
        for (seq, (key, scope, value)) in (1..).zip(self.rows) {
            let def = catalog.get(&key).ok_or_else(|| PolicyError::UnknownKey(key.clone()))?;
            def.check(&value).map_err(|e| PolicyError::InvalidValue { key: key.clone(), reason: e.to_string() })?;
            rows.push(Row {
                seq,
                id: Uuid::from_u64_pair(0, seq as u64),
                kind: RowKind::Set,
                key,
                level: scope.level(),
                scope_id: scope.id().to_string(),
                value: Some(value.to_json()),
                effective_at: OffsetDateTime::UNIX_EPOCH,
            });
        }
        let shared = Shared::new();
        shared.replica.replace(catalog.keys, &rows, OffsetDateTime::UNIX_EPOCH);
        shared.set_origin(Origin::Fixed);
        Ok(PolicyClient { shared: Arc::new(shared), _task: Arc::new(TaskGuard(None)) })
    }
}
