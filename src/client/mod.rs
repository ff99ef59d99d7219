//! `PolicyClient`: the library backend services call on every request. It
//! holds an in-memory replica of the catalog and of every value row in force
//! or scheduled; reads are synchronous, never touch the network and do not
//! allocate. A background task keeps the replica current by tailing the
//! store's notifications, and falls back to a snapshot file or the catalog
//! defaults when the database cannot be reached.

mod builder;
mod load;
mod replica;
mod snapshot;
mod tail;

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use serde::Serialize;
use time::OffsetDateTime;
use tokio::sync::broadcast;

use crate::domain::resolve::resolution;
use crate::domain::{KeyDef, Resolution, Scope, Value, ValueType};
pub use builder::{FixedBuilder, PolicyClientBuilder};
pub use replica::AppliedRow as Change;
use replica::{KeySlot, KeyState, Replica};

/// Why a read was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("unknown policy key {0:?}")]
    UnknownKey(String),
    #[error("policy key {key} holds {actual} values, not {requested}")]
    TypeMismatch { key: String, requested: ValueType, actual: ValueType },
    #[error("policy key {0} is fail-closed and no value is known (no database, no snapshot)")]
    Unavailable(String),
    #[error("invalid value for {key}: {reason}")]
    InvalidValue { key: String, reason: String },
    #[error("cannot start the client: {0}")]
    Start(String),
}

/// Where the replica's contents came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// Loaded from the database and tailing it.
    Live = 0,
    /// Restored from the snapshot file; the database has not answered yet.
    Snapshot = 1,
    /// Neither database nor snapshot: catalog defaults only.
    Default = 2,
    /// Values given in code (`PolicyClient::fixed`), for tests.
    Fixed = 3,
}

impl Origin {
    fn from_u8(raw: u8) -> Origin {
        match raw {
            0 => Origin::Live,
            1 => Origin::Snapshot,
            3 => Origin::Fixed,
            _ => Origin::Default,
        }
    }
}

/// The client's state, as health checks report it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Health {
    pub origin: Origin,
    /// Since when the replica may be stale (database unreachable), if it is.
    #[serde(with = "time::serde::rfc3339::option")]
    pub stale_since: Option<OffsetDateTime>,
    pub last_seq: i64,
    pub rows: usize,
    /// Connections to the store re-established after one was lost.
    pub reconnects: u64,
}

/// An answer with the level that won and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    #[serde(flatten)]
    pub resolution: Resolution,
    pub origin: Origin,
    #[serde(with = "time::serde::rfc3339::option")]
    pub stale_since: Option<OffsetDateTime>,
    pub last_seq: i64,
}

const NOT_STALE: i64 = i64::MIN;

/// Reads are counted per thread and added to `READS` 256 at a time, so the
/// hot path touches no shared cache line; the tail publishes the total.
static READS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static PENDING_READS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

#[inline]
fn count_read() {
    PENDING_READS.with(|pending| {
        let n = pending.get() + 1;
        if n >= 256 {
            READS.fetch_add(n, Ordering::Relaxed);
            pending.set(0);
        } else {
            pending.set(n);
        }
    });
}

/// What the client and its background task share.
pub(crate) struct Shared {
    replica: Replica,
    origin: AtomicU8,
    stale_since_ns: AtomicI64,
    last_seq: AtomicI64,
    reconnects: AtomicU64,
    events: broadcast::Sender<Change>,
    /// The last applied seq, for `wait_for`.
    applied: tokio::sync::watch::Sender<i64>,
}

impl Shared {
    fn new() -> Shared {
        Shared {
            replica: Replica::default(),
            origin: AtomicU8::new(Origin::Default as u8),
            stale_since_ns: AtomicI64::new(NOT_STALE),
            last_seq: AtomicI64::new(0),
            reconnects: AtomicU64::new(0),
            events: broadcast::channel(1024).0,
            applied: tokio::sync::watch::channel(0).0,
        }
    }

    fn origin(&self) -> Origin {
        Origin::from_u8(self.origin.load(Ordering::Relaxed))
    }

    fn set_origin(&self, origin: Origin) {
        self.origin.store(origin as u8, Ordering::Relaxed);
    }

    fn stale_since(&self) -> Option<OffsetDateTime> {
        match self.stale_since_ns.load(Ordering::Relaxed) {
            NOT_STALE => None,
            ns => OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns)).ok(),
        }
    }

    /// Marks the replica stale from `since`, unless it already is.
    fn mark_stale(&self, since: OffsetDateTime) {
        let ns = i64::try_from(since.unix_timestamp_nanos()).unwrap_or(i64::MAX);
        let _ = self.stale_since_ns.compare_exchange(NOT_STALE, ns, Ordering::Relaxed, Ordering::Relaxed);
    }

    fn mark_fresh(&self) {
        self.stale_since_ns.store(NOT_STALE, Ordering::Relaxed);
    }

    fn last_seq(&self) -> i64 {
        self.last_seq.load(Ordering::Relaxed)
    }

    fn set_last_seq(&self, seq: i64) {
        self.last_seq.store(seq, Ordering::Relaxed);
        self.applied.send_replace(seq);
    }

    /// Records the replica's state through the `metrics` facade (a no-op
    /// unless the service installed a recorder).
    fn publish_metrics(&self, reads_published: &mut u64) {
        metrics::gauge!("policy_values_client_replica_rows").set(self.replica.rows() as f64);
        metrics::gauge!("policy_values_client_last_applied_seq").set(self.last_seq() as f64);
        let stale = self.stale_since().map_or(0.0, |t| (OffsetDateTime::now_utc() - t).as_seconds_f64());
        metrics::gauge!("policy_values_client_staleness_seconds").set(stale);
        metrics::counter!("policy_values_client_reconnects_total").absolute(self.reconnects.load(Ordering::Relaxed));
        let reads = READS.load(Ordering::Relaxed);
        let source = match self.origin() {
            Origin::Live => "live",
            Origin::Snapshot => "snapshot",
            Origin::Default => "default",
            Origin::Fixed => "fixed",
        };
        metrics::counter!("policy_values_client_reads_total", "source" => source).increment(reads - *reads_published);
        *reads_published = reads;
    }

    /// Refuses a fail-closed key while only catalog defaults are known.
    fn check_available(&self, def: &KeyDef) -> Result<(), PolicyError> {
        if def.fail_closed && self.origin() == Origin::Default {
            return Err(PolicyError::Unavailable(def.key.to_string()));
        }
        Ok(())
    }
}

/// Aborts the background task when the last client clone is dropped.
struct TaskGuard(Option<tokio::task::JoinHandle<()>>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

/// A policy type a key can hold: `i64`, `bool` or `Arc<str>`.
pub trait PolicyType: Sized {
    const TYPE: ValueType;
    fn from_value(value: &Value) -> Option<Self>;
}

impl PolicyType for i64 {
    const TYPE: ValueType = ValueType::Int;
    fn from_value(value: &Value) -> Option<i64> {
        match value {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
}

impl PolicyType for bool {
    const TYPE: ValueType = ValueType::Bool;
    fn from_value(value: &Value) -> Option<bool> {
        match value {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }
}

impl PolicyType for Arc<str> {
    const TYPE: ValueType = ValueType::String;
    fn from_value(value: &Value) -> Option<Arc<str>> {
        match value {
            Value::String(s) => Some(Arc::clone(s)),
            _ => None,
        }
    }
}

/// A key checked once for existence and type; reading it cannot fail.
pub struct Handle<T> {
    slot: Arc<KeySlot>,
    /// Answered should the key's type ever change under a running client.
    fallback: T,
}

impl<T: PolicyType + Clone> Handle<T> {
    pub fn get(&self, scope: &Scope) -> T {
        count_read();
        let state = self.slot.read();
        T::from_value(state.resolve(scope, state.now()).value).unwrap_or_else(|| self.fallback.clone())
    }
}

/// The client. Cheap to clone; all clones share one replica and one
/// background task, which ends when the last clone is dropped.
#[derive(Clone)]
pub struct PolicyClient {
    shared: Arc<Shared>,
    _task: Arc<TaskGuard>,
}

impl PolicyClient {
    /// Connects to the store at `database_url` with the default settings.
    pub async fn connect(database_url: &str) -> Result<PolicyClient, PolicyError> {
        PolicyClient::builder().database_url(database_url).connect().await
    }

    pub fn builder() -> PolicyClientBuilder {
        PolicyClientBuilder::default()
    }

    /// A client with values given in code and the real resolution, no
    /// database: for services' unit tests.
    pub fn fixed() -> FixedBuilder {
        FixedBuilder::default()
    }

    /// Reads a key as `T` for `scope`.
    pub fn get<T: PolicyType>(&self, scope: &Scope, key: &str) -> Result<T, PolicyError> {
        count_read();
        let slot = self.shared.replica.slot(key).ok_or_else(|| PolicyError::UnknownKey(key.to_string()))?;
        let state = slot.read();
        self.check_type::<T>(&state)?;
        self.shared.check_available(&state.def)?;
        let value = state.resolve(scope, state.now()).value;
        T::from_value(value).ok_or_else(|| mismatch::<T>(&state.def))
    }

    pub fn get_int(&self, scope: &Scope, key: &str) -> Result<i64, PolicyError> {
        self.get(scope, key)
    }

    pub fn get_bool(&self, scope: &Scope, key: &str) -> Result<bool, PolicyError> {
        self.get(scope, key)
    }

    pub fn get_string(&self, scope: &Scope, key: &str) -> Result<Arc<str>, PolicyError> {
        self.get(scope, key)
    }

    /// A typed handle, checked now; reading it later has no error path.
    pub fn key<T: PolicyType + Clone>(&self, key: &str) -> Result<Handle<T>, PolicyError> {
        let slot = self.shared.replica.slot_arc(key).ok_or_else(|| PolicyError::UnknownKey(key.to_string()))?;
        let fallback = {
            let state = slot.read();
            self.check_type::<T>(&state)?;
            self.shared.check_available(&state.def)?;
            T::from_value(&state.def.default).ok_or_else(|| mismatch::<T>(&state.def))?
        };
        Ok(Handle { slot, fallback })
    }

    pub fn int_key(&self, key: &str) -> Result<Handle<i64>, PolicyError> {
        self.key(key)
    }

    pub fn bool_key(&self, key: &str) -> Result<Handle<bool>, PolicyError> {
        self.key(key)
    }

    pub fn string_key(&self, key: &str) -> Result<Handle<Arc<str>>, PolicyError> {
        self.key(key)
    }

    /// A key's catalog definition, as the replica holds it.
    pub fn key_def(&self, key: &str) -> Option<KeyDef> {
        Some(self.shared.replica.slot(key)?.read().def.clone())
    }

    /// The answer with every level consulted and where it came from.
    pub fn explain(&self, scope: &Scope, key: &str) -> Result<Explanation, PolicyError> {
        let slot = self.shared.replica.slot(key).ok_or_else(|| PolicyError::UnknownKey(key.to_string()))?;
        let state = slot.read();
        self.shared.check_available(&state.def)?;
        let resolution = resolution(&state.def, scope, state.now(), |level, key| state.history(level, key));
        Ok(Explanation {
            resolution,
            origin: self.shared.origin(),
            stale_since: self.shared.stale_since(),
            last_seq: self.shared.last_seq(),
        })
    }

    pub fn health(&self) -> Health {
        Health {
            origin: self.shared.origin(),
            stale_since: self.shared.stale_since(),
            last_seq: self.shared.last_seq(),
            rows: self.shared.replica.rows(),
            reconnects: self.shared.reconnects.load(Ordering::Relaxed),
        }
    }

    /// Waits until the replica has applied `seq` (or a later row), at most
    /// `timeout`; says whether it has. A server uses it so that a write's
    /// answer means the write is visible to the next read.
    pub async fn wait_for(&self, seq: i64, timeout: std::time::Duration) -> bool {
        let mut applied = self.shared.applied.subscribe();
        tokio::time::timeout(timeout, applied.wait_for(|&last| last >= seq)).await.is_ok_and(|r| r.is_ok())
    }

    /// Every change as it is applied. A receiver that falls more than 1,024
    /// changes behind loses the oldest (`RecvError::Lagged`); the replica
    /// itself is always current, so read the values again then.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.shared.events.subscribe()
    }

    /// Changes of one key only.
    pub fn watch_key(&self, key: &str) -> Result<KeyWatch, PolicyError> {
        if self.shared.replica.slot(key).is_none() {
            return Err(PolicyError::UnknownKey(key.to_string()));
        }
        Ok(KeyWatch { key: Arc::from(key), events: self.subscribe() })
    }

    fn check_type<T: PolicyType>(&self, state: &KeyState) -> Result<(), PolicyError> {
        if state.def.value_type != T::TYPE {
            return Err(mismatch::<T>(&state.def));
        }
        Ok(())
    }
}

fn mismatch<T: PolicyType>(def: &KeyDef) -> PolicyError {
    PolicyError::TypeMismatch { key: def.key.to_string(), requested: T::TYPE, actual: def.value_type }
}

/// A subscription to one key's changes.
pub struct KeyWatch {
    key: Arc<str>,
    events: broadcast::Receiver<Change>,
}

impl KeyWatch {
    /// The next change of this key; `None` once the client is gone.
    pub async fn changed(&mut self) -> Option<Change> {
        loop {
            match self.events.recv().await {
                Ok(change) if change.key == self.key => return Some(change),
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}
