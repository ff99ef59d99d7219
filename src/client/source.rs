//! What every source of the replica shares, whether it follows the database
//! (`tail`) or the servers' change feed: the settings, the fall-back to the
//! snapshot file or the catalog defaults when nothing answers at start,
//! writing the snapshot file after changes, and jittered backoff.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::time::Instant;

use super::snapshot::{self, Opened};
use super::{Origin, Shared};
use crate::domain::Catalog;

/// Settings every source uses.
pub struct SourceConfig {
    pub snapshot_path: Option<PathBuf>,
    pub safety_poll: Duration,
    pub load_timeout: Duration,
    pub snapshot_interval: Duration,
    pub fallback_catalog: Option<Catalog>,
    /// The longest wait between reconnection attempts.
    pub backoff_max: Duration,
}

impl Default for SourceConfig {
    fn default() -> SourceConfig {
        SourceConfig {
            snapshot_path: None,
            safety_poll: Duration::from_secs(30),
            load_timeout: Duration::from_secs(5),
            snapshot_interval: Duration::from_secs(1),
            fallback_catalog: None,
            backoff_max: Duration::from_secs(30),
        }
    }
}

pub const BACKOFF_FIRST: Duration = Duration::from_millis(100);

/// Up to 50 % random extra, so many clients do not reconnect in step.
pub fn jittered(base: Duration) -> Duration {
    let nanos = OffsetDateTime::now_utc().nanosecond();
    base + base.mul_f64(f64::from(nanos % 1000) / 2000.0)
}

/// Start-up with no source answering: the snapshot file if it is sound,
/// else the catalog defaults. Says whether the snapshot file was used.
pub fn fall_back(shared: &Shared, config: &mut SourceConfig) -> bool {
    if restore_snapshot(shared, config) {
        return true;
    }
    let catalog = match config.fallback_catalog.take() {
        Some(catalog) => catalog,
        None => match Catalog::builtin() {
            Ok(catalog) => catalog,
            Err(e) => {
                tracing::error!(error = %e, "policy-values: the built-in catalog is invalid");
                return false;
            }
        },
    };
    let _changing = shared.replica.changing();
    shared.replica.replace(catalog.keys, &[], OffsetDateTime::UNIX_EPOCH);
    shared.set_origin(Origin::Default);
    tracing::warn!("policy-values: serving catalog defaults (no source, no snapshot)");
    false
}

/// Installs the snapshot file, if there is a sound one; says whether it did.
/// The replica then serves it (`origin: snapshot`, stale since the file was
/// written) until a source catches up from the file's position. A binary
/// file is read in place, mapped, while the replica is built from it on a
/// blocking thread; `settle` swaps that in before any change is applied.
pub fn restore_snapshot(shared: &Shared, config: &SourceConfig) -> bool {
    let Some(path) = &config.snapshot_path else {
        return false;
    };
    let started = std::time::Instant::now();
    let (last_seq, horizon, written_at) = match snapshot::open(path) {
        Ok(Opened::InPlace(file)) => {
            let _changing = shared.replica.changing();
            shared.replica.install(file.replica(false));
            let labels = (file.position, file.horizon, file.written_at);
            if file.in_place {
                let build = tokio::task::spawn_blocking(move || file.replica(true));
                *shared.building.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(build);
            }
            labels
        }
        Ok(Opened::Restored(restored)) => {
            let _changing = shared.replica.changing();
            shared.replica.replace(restored.catalog, &restored.rows, restored.horizon);
            (restored.last_seq, restored.horizon, restored.written_at)
        }
        Err(e) => {
            if path.exists() {
                tracing::warn!(path = %path.display(), error = %e, "policy-values: ignoring the snapshot file");
            }
            return false;
        }
    };
    shared.set_last_seq(last_seq);
    shared.set_origin(Origin::Snapshot);
    shared.set_horizon(horizon);
    shared.stale_since_ns.store(
        i64::try_from(written_at.unix_timestamp_nanos()).unwrap_or(i64::MAX),
        std::sync::atomic::Ordering::Relaxed,
    );
    let ms = started.elapsed().as_millis() as u64;
    tracing::warn!(path = %path.display(), last_seq, ms, "policy-values: serving the snapshot file");
    if let Some(observer) = shared.observer.get() {
        observer.loaded(last_seq);
    }
    true
}

/// Swaps in the replica built from the snapshot file, if one is being
/// built: the sources call it before they change the replica, so no change
/// is applied to the file's in-place tables and then lost in the swap.
pub async fn settle(shared: &Shared) {
    let build = shared.building.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
    let Some(build) = build else {
        return;
    };
    let started = std::time::Instant::now();
    match build.await {
        Ok(fresh) => {
            let rows = fresh.rows();
            let _changing = shared.replica.changing();
            shared.replica.install(fresh);
            let ms = started.elapsed().as_millis() as u64;
            tracing::info!(rows, waited_ms = ms, "policy-values: replica built from the snapshot file");
        }
        // The in-place tables stay: they answer the same, and a change
        // builds the table it touches.
        Err(e) => tracing::warn!(error = %e, "policy-values: building the replica from the snapshot file failed"),
    }
}

/// Writes the snapshot file at most once per interval after changes.
pub struct SnapshotSchedule {
    due: Option<Instant>,
}

impl SnapshotSchedule {
    pub fn new() -> SnapshotSchedule {
        SnapshotSchedule { due: None }
    }

    /// A change was applied: write the file within the interval.
    pub fn changed(&mut self, config: &SourceConfig) {
        if config.snapshot_path.is_some() && self.due.is_none() {
            self.due = Some(Instant::now() + config.snapshot_interval);
        }
    }

    /// Completes when a write is due (never, if none is).
    pub async fn wait(&self) {
        match self.due {
            Some(due) => tokio::time::sleep_until(due).await,
            None => std::future::pending().await,
        }
    }

    pub fn is_due_set(&self) -> bool {
        self.due.is_some()
    }

    /// Writes the replica to the file, off the async threads.
    pub async fn write(&mut self, shared: &Arc<Shared>, config: &SourceConfig) {
        self.due = None;
        let Some(path) = config.snapshot_path.clone() else {
            return;
        };
        let shared = Arc::clone(shared);
        let written = tokio::task::spawn_blocking(move || {
            let (last_seq, horizon) = shared.replica.consistent(|| (shared.last_seq(), shared.horizon()));
            snapshot::write(&path, &shared.replica, last_seq, horizon)
        })
        .await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "policy-values: could not write the snapshot file"),
            Err(e) => tracing::warn!(error = %e, "policy-values: the snapshot writer failed"),
        }
    }
}
