//! Building a `PolicyClient`: following a source (the database, or the
//! servers' change feed) with its fallbacks, or fixed in code for tests.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[cfg(feature = "db-source")]
use sqlx::postgres::PgConnectOptions;
#[cfg(feature = "db-source")]
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use super::replica::{Row, RowKind};
use super::source::SourceConfig;
use super::{Origin, PolicyClient, PolicyError, Shared, TaskGuard};
use crate::domain::{Catalog, Value, WriteScope};

/// Where the replica comes from.
enum Source {
    #[cfg(feature = "db-source")]
    Url(String),
    #[cfg(feature = "db-source")]
    Options(Box<PgConnectOptions>),
    #[cfg(feature = "db-source")]
    Pool(PgPool),
    #[cfg(feature = "http-source")]
    Servers(super::http::Servers),
}

/// The name the client's connections show in `pg_stat_activity`.
#[cfg(feature = "db-source")]
pub const APPLICATION_NAME: &str = "policy-values-client";

/// Settings for [`PolicyClient::builder()`]: a source, and optionally a
/// snapshot file and timings.
///
/// ```no_run
/// # #[cfg(feature = "db-source")]
/// # async fn start() -> Result<(), policy_values::PolicyError> {
/// use std::time::Duration;
/// use policy_values::PolicyClient;
///
/// let client = PolicyClient::builder()
///     .database_url("postgres://policy_reader@db/policy_values")
///     .snapshot_path("/var/lib/my-service/policy.snapshot")
///     .load_timeout(Duration::from_secs(3))
///     .connect()
///     .await?;
/// # Ok(())
/// # }
/// ```
#[derive(Default)]
pub struct PolicyClientBuilder {
    source: Option<Source>,
    config: SourceConfig,
    observer: Option<Arc<dyn super::wire::ChangeObserver>>,
}

#[cfg(feature = "db-source")]
impl PolicyClientBuilder {
    /// Follow the database at `url` (the `db-source` feature).
    pub fn database_url(mut self, url: &str) -> Self {
        self.source = Some(Source::Url(url.to_string()));
        self
    }

    /// Follow the database these options name (the `db-source` feature).
    pub fn connect_options(mut self, options: PgConnectOptions) -> Self {
        self.source = Some(Source::Options(Box::new(options)));
        self
    }

    /// Uses an existing pool for reads; the LISTEN connection is opened with
    /// the same connect options.
    pub fn pool(mut self, pool: PgPool) -> Self {
        self.source = Some(Source::Pool(pool));
        self
    }
}

#[cfg(feature = "http-source")]
impl PolicyClientBuilder {
    /// Follow the servers at these base URLs (the `http-source` feature):
    /// load their bootstrap, then follow their change feed, moving to the
    /// next URL whenever one fails. No database connection is held.
    pub fn servers<I, S>(mut self, urls: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let token = match self.source.take() {
            Some(Source::Servers(servers)) => servers.token,
            _ => None,
        };
        let urls = urls.into_iter().map(Into::into).collect();
        self.source = Some(Source::Servers(super::http::Servers { urls, token }));
        self
    }

    /// The bearer token (reader role) presented to the servers.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        let urls = match self.source.take() {
            Some(Source::Servers(servers)) => servers.urls,
            _ => Vec::new(),
        };
        self.source = Some(Source::Servers(super::http::Servers { urls, token: Some(token.into()) }));
        self
    }
}

impl PolicyClientBuilder {
    /// Keep a snapshot file there (written after changes, at most once per
    /// `snapshot_interval`). At start the client serves a sound file at once
    /// (`origin: snapshot`) and catches up from its position.
    pub fn snapshot_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.config.snapshot_path = Some(path.into());
        self
    }

    /// How often to re-read the source in case a change was missed (30 s).
    pub fn safety_poll(mut self, every: Duration) -> Self {
        self.config.safety_poll = every;
        self
    }

    /// How long `connect` waits for the source before falling back (5 s).
    pub fn load_timeout(mut self, timeout: Duration) -> Self {
        self.config.load_timeout = timeout;
        self
    }

    /// How often, at most, the snapshot file is rewritten after changes (1 s).
    pub fn snapshot_interval(mut self, every: Duration) -> Self {
        self.config.snapshot_interval = every;
        self
    }

    /// The longest wait between reconnection attempts (30 s); attempts
    /// start 100 ms apart and double, with jitter.
    pub fn backoff_max(mut self, max: Duration) -> Self {
        self.config.backoff_max = max;
        self
    }

    /// Tells `observer` of every change the replica applies, in order, and
    /// of every full load (the server publishes its change feed this way).
    pub fn observer(mut self, observer: Arc<dyn super::wire::ChangeObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// The catalog served when neither source nor snapshot is available
    /// (default: the one built into this library).
    pub fn fallback_catalog(mut self, catalog: Catalog) -> Self {
        self.config.fallback_catalog = Some(catalog);
        self
    }

    /// Loads the replica (or falls back) and starts following the source.
    /// Returns at once when a snapshot file serves, else within about
    /// `load_timeout` whether or not the source answers; it keeps retrying
    /// in the background.
    pub async fn connect(self) -> Result<PolicyClient, PolicyError> {
        let source = self.source.ok_or_else(|| PolicyError::Start("no source given (a database or servers)".into()))?;
        let shared = Arc::new(Shared::new());
        if let Some(observer) = self.observer {
            let _ = shared.observer.set(observer);
        }
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let task = source.spawn(Arc::clone(&shared), self.config, ready_tx)?;
        let guard = TaskGuard(Some(task));
        ready_rx.await.map_err(|_| PolicyError::Start("the background task ended before loading".into()))?;
        Ok(PolicyClient { shared, _task: Arc::new(guard) })
    }
}

impl Source {
    /// Starts the task that fills the replica from this source.
    fn spawn(
        self,
        shared: Arc<Shared>,
        config: SourceConfig,
        ready: tokio::sync::oneshot::Sender<()>,
    ) -> Result<tokio::task::JoinHandle<()>, PolicyError> {
        match self {
            #[cfg(feature = "db-source")]
            Source::Pool(pool) => Ok(tokio::spawn(super::tail::run(shared, pool, config, ready))),
            #[cfg(feature = "db-source")]
            Source::Url(url) => {
                let options: PgConnectOptions =
                    url.parse().map_err(|e: sqlx::Error| PolicyError::Start(e.to_string()))?;
                let pool = super::tail::pool_for(&config, options);
                Ok(tokio::spawn(super::tail::run(shared, pool, config, ready)))
            }
            #[cfg(feature = "db-source")]
            Source::Options(options) => {
                let pool = super::tail::pool_for(&config, *options);
                Ok(tokio::spawn(super::tail::run(shared, pool, config, ready)))
            }
            #[cfg(feature = "http-source")]
            Source::Servers(servers) => {
                if servers.urls.is_empty() {
                    return Err(PolicyError::Start("servers() needs at least one URL".into()));
                }
                Ok(tokio::spawn(super::http::run(shared, servers, config, ready)))
            }
        }
    }
}

/// Values given in code, resolved by the real rule: for services' tests.
/// Built by [`PolicyClient::fixed()`].
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
