//! The client's database source: load, then tail. It LISTENs on a dedicated
//! connection first, then reads what it missed (`seq > last_seq`), so no
//! gap is possible; a notification or the safety poll triggers a read of
//! newer rows, applied in seq order. On a lost connection it reconnects with
//! jittered exponential backoff. At start it serves the snapshot file at
//! once if there is a sound one, and catches up from the file's position;
//! else, if the database does not answer within the load timeout, it serves
//! the catalog defaults.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use time::OffsetDateTime;
use tokio::sync::oneshot;
use tokio::time::{sleep, timeout, Instant};

use super::source::{self, jittered, SnapshotSchedule, SourceConfig, BACKOFF_FIRST};
use super::wire::{self, ApplyError};
use super::{load, Origin, Shared};
use crate::store::{keys, StoreError};

/// The client's own small pool; its connections (the listener's too) are
/// named `policy-values-client` in `pg_stat_activity`. Like every pool this
/// crate builds, it discards a session left inside a transaction
/// (`store::pool`): the load's transaction is cut short when the client is
/// dropped mid-load.
pub fn pool_for(config: &SourceConfig, options: sqlx::postgres::PgConnectOptions) -> PgPool {
    crate::store::pool::options()
        .max_connections(2)
        .acquire_timeout(config.load_timeout)
        .connect_lazy_with(options.application_name(super::builder::APPLICATION_NAME))
}

/// Rows read per round trip while catching up.
const BATCH: i64 = 5_000;

/// The tail's own state: only this task writes the replica.
struct Tail {
    shared: Arc<Shared>,
    pool: PgPool,
    config: SourceConfig,
    /// Whether the replica holds a full load from the database, or the
    /// snapshot file's contents to catch up from (else it is empty or the
    /// defaults, and the next session loads fully).
    loaded: bool,
    snapshot: SnapshotSchedule,
    /// When rows were last read, for the safety poll.
    last_read: Instant,
}

pub async fn run(shared: Arc<Shared>, pool: PgPool, config: SourceConfig, ready: oneshot::Sender<()>) {
    let mut tail =
        Tail { shared, pool, config, loaded: false, snapshot: SnapshotSchedule::new(), last_read: Instant::now() };
    let mut ready = Some(ready);
    // Cache first: a sound snapshot file serves at once; the tail catches up.
    if source::restore_snapshot(&tail.shared, &tail.config) {
        tail.loaded = true;
        if let Some(ready) = ready.take() {
            let _ = ready.send(());
        }
    }
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
            source::fall_back(&tail.shared, &mut tail.config);
            let _ = ready.send(());
        }
        sleep(jittered(backoff)).await;
        backoff = (backoff * 2).min(tail.config.backoff_max);
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

impl Tail {
    /// LISTENs, then loads (fully the first time, else the gap).
    async fn connect(&mut self) -> Result<PgListener, TailError> {
        source::settle(&self.shared).await;
        let mut listener = PgListener::connect_with(&self.pool).await?;
        // A lost connection is reported at once and handled here (backoff,
        // then LISTEN and read the gap), not retried inside sqlx first.
        listener.eager_reconnect(false);
        // Value rows and catalog changes both announce their position here.
        listener.listen("policy_values").await?;
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
        let horizon = fresh.horizon();
        {
            let _changing = self.shared.replica.changing();
            self.shared.replica.install(fresh);
            self.shared.set_last_seq(last_seq);
            self.shared.set_horizon(horizon);
        }
        if let Some(observer) = self.shared.observer.get() {
            observer.loaded(last_seq);
        }
        self.loaded = true;
        let ms = started.elapsed().as_millis() as u64;
        tracing::info!(rows, last_seq, ms, "policy-values: replica loaded");
        self.snapshot.changed(&self.config);
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
                () = self.snapshot.wait(), if self.snapshot.is_due_set() => {
                    self.snapshot.write(&self.shared, &self.config).await;
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

    /// Applies every change newer than the last applied one, in seq order.
    async fn catch_up(&mut self) -> Result<(), TailError> {
        self.last_read = Instant::now();
        loop {
            let changes = load::after(&self.pool, self.shared.last_seq(), BATCH).await?;
            for change in &changes {
                match wire::apply(&self.shared, change) {
                    Ok(()) => {}
                    // A key (or a type) newer than our catalog: learn it, then apply.
                    Err(ApplyError::UnknownKey(_)) => {
                        self.reload_catalog().await?;
                        if let Err(e) = wire::apply(&self.shared, change) {
                            tracing::error!(seq = change.seq(), error = ?e, "policy-values: skipping a change");
                            self.shared.set_last_seq(change.seq());
                        }
                    }
                    Err(ApplyError::Malformed(e)) => return Err(TailError::Store(StoreError::Corrupt(e))),
                }
            }
            if !changes.is_empty() {
                self.snapshot.changed(&self.config);
            }
            if (changes.len() as i64) < BATCH {
                return Ok(());
            }
        }
    }

    async fn reload_catalog(&mut self) -> Result<(), TailError> {
        let defs = keys::list(&self.pool).await?;
        let _changing = self.shared.replica.changing();
        for def in defs {
            self.shared.replica.define(def);
        }
        Ok(())
    }
}
