//! The client's background task: load, then tail. It LISTENs on a dedicated
//! connection first, then reads what it missed (`seq > last_seq`), so no
//! gap is possible; a notification or the safety poll triggers a read of
//! newer rows, applied in seq order. On a lost connection it reconnects with
//! jittered exponential backoff. At start, if the database does not answer
//! within the load timeout, it serves the snapshot file or the defaults.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use time::OffsetDateTime;
use tokio::sync::oneshot;
use tokio::time::{sleep, timeout, Instant};

use super::{load, snapshot, Origin, Shared};
use crate::domain::Catalog;
use crate::store::{keys, StoreError};

pub struct TailConfig {
    pub snapshot_path: Option<PathBuf>,
    pub safety_poll: Duration,
    pub load_timeout: Duration,
    pub snapshot_interval: Duration,
    pub fallback_catalog: Option<Catalog>,
}

impl TailConfig {
    /// The client's own small pool; its connections (the listener's too) are
    /// named `policy-values-client` in `pg_stat_activity`.
    pub fn pool_for(&self, options: sqlx::postgres::PgConnectOptions) -> PgPool {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(self.load_timeout)
            .connect_lazy_with(options.application_name(super::builder::APPLICATION_NAME))
    }
}

/// Rows read per round trip while catching up.
const BATCH: i64 = 5_000;
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// The tail's own state: only this task writes the replica.
struct Tail {
    shared: Arc<Shared>,
    pool: PgPool,
    config: TailConfig,
    /// Whether the replica holds a full load from the database (else it is
    /// empty, a snapshot or the defaults, and the next session loads fully).
    loaded: bool,
    horizon: OffsetDateTime,
    snapshot_due: Option<Instant>,
    /// When rows were last read, for the safety poll.
    last_read: Instant,
}

pub async fn run(shared: Arc<Shared>, pool: PgPool, config: TailConfig, ready: oneshot::Sender<()>) {
    let mut tail = Tail {
        shared,
        pool,
        config,
        loaded: false,
        horizon: OffsetDateTime::UNIX_EPOCH,
        snapshot_due: None,
        last_read: Instant::now(),
    };
    let mut ready = Some(ready);
    let mut backoff = BACKOFF_FIRST;
    let mut sessions = 0u64;
    loop {
        let outcome = match ready.is_some() {
            true => match timeout(tail.config.load_timeout, tail.connect()).await {
                Ok(result) => result,
                Err(_) => Err(TailError::Timeout),
            },
            false => tail.connect().await,
        };
        let error = match outcome {
            Ok(mut listener) => {
                sessions += 1;
                if sessions > 1 {
                    tail.shared.reconnects.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                if let Some(ready) = ready.take() {
                    let _ = ready.send(());
                }
                backoff = BACKOFF_FIRST;
                tail.follow(&mut listener).await
            }
            Err(e) => e,
        };
        tracing::warn!(error = %error, "policy-values: store unreachable; serving from memory");
        tail.shared.mark_stale(OffsetDateTime::now_utc());
        if let Some(ready) = ready.take() {
            tail.fall_back();
            let _ = ready.send(());
        }
        sleep(jittered(backoff)).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

#[derive(Debug, thiserror::Error)]
enum TailError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("the listening connection was lost")]
    Lost,
    #[error("the database did not answer within the load timeout")]
    Timeout,
}

/// Up to 50 % random extra, so many clients do not reconnect in step.
fn jittered(base: Duration) -> Duration {
    let nanos = OffsetDateTime::now_utc().nanosecond();
    base + base.mul_f64(f64::from(nanos % 1000) / 2000.0)
}

impl Tail {
    /// LISTENs, then loads (fully the first time, else the gap).
    async fn connect(&mut self) -> Result<PgListener, TailError> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen_all(["policy_values", "policy_keys"]).await?;
        if self.loaded {
            self.reload_catalog().await?;
            self.catch_up().await?;
        } else {
            self.load_fully().await?;
        }
        self.shared.set_origin(Origin::Live);
        self.shared.mark_fresh();
        Ok(listener)
    }

    async fn load_fully(&mut self) -> Result<(), TailError> {
        let started = std::time::Instant::now();
        let (fresh, last_seq) = load::full(&self.pool).await?;
        let rows = fresh.rows();
        self.horizon = fresh.horizon();
        self.shared.replica.install(fresh);
        self.shared.set_last_seq(last_seq);
        self.loaded = true;
        let ms = started.elapsed().as_millis() as u64;
        tracing::info!(rows, last_seq, ms, "policy-values: replica loaded");
        self.schedule_snapshot();
        Ok(())
    }

    /// Follows notifications until the connection fails; publishes the
    /// replica's metrics after each step and at least every 5 s.
    async fn follow(&mut self, listener: &mut PgListener) -> TailError {
        let mut reads_published = 0;
        loop {
            self.shared.publish_metrics(&mut reads_published);
            let next_change = self.shared.replica.next_change();
            let until_change = next_change.map(|t| (t - OffsetDateTime::now_utc()).max(time::Duration::ZERO));
            let step = tokio::select! {
                received = listener.try_recv() => match received {
                    Ok(Some(n)) if n.channel() == "policy_keys" => self.reload_catalog().await,
                    Ok(Some(n)) if n.payload().parse::<i64>().is_ok_and(|seq| seq <= self.shared.last_seq()) => Ok(()),
                    Ok(Some(_)) => {
                        // A burst of writes: one read covers every notification already here.
                        while listener.next_buffered().is_some() {}
                        self.catch_up().await
                    }
                    Ok(None) => Err(TailError::Lost),
                    Err(e) => Err(e.into()),
                },
                () = sleep(self.config.safety_poll.min(Duration::from_secs(5))) => self.poll_if_due().await,
                () = sleep(until_change.map_or(Duration::MAX, |d| d.unsigned_abs())), if until_change.is_some() => {
                    self.shared.replica.recheck_schedules(OffsetDateTime::now_utc());
                    Ok(())
                }
                () = sleep_until_opt(self.snapshot_due), if self.snapshot_due.is_some() => {
                    self.write_snapshot().await;
                    Ok(())
                }
            };
            if let Err(e) = step {
                return e;
            }
        }
    }

    /// The safety poll, when its interval has passed since the last read.
    async fn poll_if_due(&mut self) -> Result<(), TailError> {
        if self.last_read.elapsed() >= self.config.safety_poll {
            return self.catch_up().await;
        }
        Ok(())
    }

    /// Applies every row newer than the last applied one, in seq order.
    async fn catch_up(&mut self) -> Result<(), TailError> {
        self.last_read = Instant::now();
        loop {
            let (rows, horizon) = load::after(&self.pool, self.shared.last_seq(), BATCH).await?;
            let Some(horizon) = horizon else {
                return Ok(());
            };
            self.horizon = horizon;
            for row in &rows {
                let applied = match self.shared.replica.apply(row, horizon) {
                    Some(applied) => Some(applied),
                    // A key newer than our catalog: learn it, then apply.
                    None => {
                        self.reload_catalog().await?;
                        self.shared.replica.apply(row, horizon)
                    }
                };
                self.shared.set_last_seq(row.seq);
                if let Some(applied) = applied {
                    let _ = self.shared.events.send(applied);
                }
            }
            self.schedule_snapshot();
            if (rows.len() as i64) < BATCH {
                return Ok(());
            }
        }
    }

    async fn reload_catalog(&mut self) -> Result<(), TailError> {
        for def in keys::list(&self.pool).await? {
            self.shared.replica.define(def);
        }
        Ok(())
    }

    /// Start-up without the database: the snapshot file if it is sound,
    /// else the catalog defaults.
    fn fall_back(&mut self) {
        if let Some(path) = &self.config.snapshot_path {
            match snapshot::read(path) {
                Ok(restored) => {
                    self.shared.replica.replace(restored.catalog, &restored.rows, restored.horizon);
                    self.shared.set_last_seq(restored.last_seq);
                    self.shared.set_origin(Origin::Snapshot);
                    self.shared.stale_since_ns.store(
                        i64::try_from(restored.written_at.unix_timestamp_nanos()).unwrap_or(i64::MAX),
                        std::sync::atomic::Ordering::Relaxed,
                    );
                    tracing::warn!(path = %path.display(), last_seq = restored.last_seq, "policy-values: serving the snapshot file");
                    return;
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "policy-values: ignoring the snapshot file")
                }
            }
        }
        let catalog = match self.config.fallback_catalog.take() {
            Some(catalog) => catalog,
            None => match Catalog::builtin() {
                Ok(catalog) => catalog,
                Err(e) => {
                    tracing::error!(error = %e, "policy-values: the built-in catalog is invalid");
                    return;
                }
            },
        };
        self.shared.replica.replace(catalog.keys, &[], OffsetDateTime::UNIX_EPOCH);
        self.shared.set_origin(Origin::Default);
        tracing::warn!("policy-values: serving catalog defaults (no database, no snapshot)");
    }

    fn schedule_snapshot(&mut self) {
        if self.config.snapshot_path.is_some() && self.snapshot_due.is_none() {
            self.snapshot_due = Some(Instant::now() + self.config.snapshot_interval);
        }
    }

    async fn write_snapshot(&mut self) {
        self.snapshot_due = None;
        let Some(path) = self.config.snapshot_path.clone() else {
            return;
        };
        let shared = Arc::clone(&self.shared);
        let (last_seq, horizon) = (shared.last_seq(), self.horizon);
        let written =
            tokio::task::spawn_blocking(move || snapshot::write(&path, &shared.replica, last_seq, horizon)).await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "policy-values: could not write the snapshot file")
            }
            Err(e) => tracing::warn!(error = %e, "policy-values: the snapshot writer failed"),
        }
    }
}

async fn sleep_until_opt(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}
