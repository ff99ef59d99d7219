//! `PolicyClient`: the library backend services call on every request. It
//! holds an in-memory replica of the catalog and of every value row in force
//! or scheduled; reads are synchronous, never touch the network and do not
//! allocate. A background task keeps the replica current by tailing the
//! store's notifications, and falls back to a snapshot file or the catalog
//! defaults when the database cannot be reached.

#![warn(missing_docs)]
// Built with no source feature, the client can only be `fixed()`; the
// machinery the sources share is then unused.
#![cfg_attr(not(any(feature = "db-source", feature = "http-source")), allow(dead_code, unused_variables))]

mod builder;
mod error;
mod handle;
mod health;
#[cfg(feature = "http-source")]
mod http;
#[cfg(feature = "db-source")]
pub(crate) mod load;
mod mapped;
mod position;
mod replica;
mod scope_snapshot;
mod snapshot;
mod source;
#[cfg(feature = "db-source")]
mod tail;
pub mod wire;

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use time::OffsetDateTime;
use tokio::sync::broadcast;

use crate::domain::resolve::resolution;
use crate::domain::{KeyDef, Scope};
pub use builder::{FixedBuilder, PolicyClientBuilder};
pub use error::PolicyError;
pub use handle::{Handle, KeyWatch, List, PolicyType};
pub use health::{Explanation, Health, Origin};
pub use position::ScopePosition;
pub use replica::AppliedRow as Change;
use replica::{KeyState, Replica};
pub use snapshot::{Image, ImageRow};

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
    /// The origin, for `wait_live`.
    origin_watch: tokio::sync::watch::Sender<Origin>,
    /// The pruning horizon: the database time of the last applied row.
    horizon_ns: AtomicI64,
    /// Told of every change applied (the server's change feed).
    observer: std::sync::OnceLock<Arc<dyn wire::ChangeObserver>>,
    /// The replica being built from the snapshot file while reads use the
    /// file in place; installed before the source applies any change.
    building: std::sync::Mutex<Option<tokio::task::JoinHandle<replica::Fresh>>>,
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
            origin_watch: tokio::sync::watch::channel(Origin::Default).0,
            horizon_ns: AtomicI64::new(0),
            observer: std::sync::OnceLock::new(),
            building: std::sync::Mutex::new(None),
        }
    }

    fn origin(&self) -> Origin {
        Origin::from_u8(self.origin.load(Ordering::Relaxed))
    }

    fn set_origin(&self, origin: Origin) {
        self.origin.store(origin as u8, Ordering::Relaxed);
        self.origin_watch.send_if_modified(|o| std::mem::replace(o, origin) != origin);
    }

    fn horizon(&self) -> OffsetDateTime {
        let ns = self.horizon_ns.load(Ordering::SeqCst);
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns)).unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }

    fn set_horizon(&self, horizon: OffsetDateTime) {
        let ns = i64::try_from(horizon.unix_timestamp_nanos()).unwrap_or(i64::MAX);
        self.horizon_ns.store(ns, Ordering::SeqCst);
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
        let source = self.origin().as_str();
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

/// The client. Cheap to clone; all clones share one replica and one
/// background task, which ends when the last clone is dropped.
///
/// Reads are synchronous and answer from memory: the most specific level of
/// the scope that holds a value wins, then the global value, then the
/// catalog default.
///
/// ```
/// use policy_values::{Level, PolicyClient, Scope, WriteScope};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let client = PolicyClient::fixed()
///     .set("allocation.max_concurrent_per_user", WriteScope::global(), 10)
///     .set("allocation.max_concurrent_per_user", WriteScope::at(Level::Org, "acme")?, 20)
///     .build()?;
///
/// let key = "allocation.max_concurrent_per_user";
/// assert_eq!(client.get_int(&Scope::new().user("u1").org("acme"), key)?, 20);
/// assert_eq!(client.get_int(&Scope::new().user("u2").org("globex"), key)?, 10);
/// # Ok(())
/// # }
/// ```
///
/// A service follows the database instead (the `db-source` feature):
///
/// ```no_run
/// # #[cfg(feature = "db-source")]
/// # async fn start() -> Result<(), policy_values::PolicyError> {
/// let client = policy_values::PolicyClient::connect("postgres://policy_reader@db/policy_values").await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PolicyClient {
    shared: Arc<Shared>,
    _task: Arc<TaskGuard>,
}

impl PolicyClient {
    /// Connects to the store at `database_url` with the default settings.
    #[cfg(feature = "db-source")]
    pub async fn connect(database_url: &str) -> Result<PolicyClient, PolicyError> {
        PolicyClient::builder().database_url(database_url).connect().await
    }

    /// Settings for a client that follows a source (see [`PolicyClientBuilder`]).
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

    /// Reads an int key for `scope`.
    pub fn get_int(&self, scope: &Scope, key: &str) -> Result<i64, PolicyError> {
        self.get(scope, key)
    }

    /// Reads a bool key for `scope`.
    pub fn get_bool(&self, scope: &Scope, key: &str) -> Result<bool, PolicyError> {
        self.get(scope, key)
    }

    /// Reads a string key for `scope`; the text is shared with the replica,
    /// not copied.
    pub fn get_string(&self, scope: &Scope, key: &str) -> Result<Arc<str>, PolicyError> {
        self.get(scope, key)
    }

    /// Reads a list key for `scope`: the most specific level's whole list.
    /// The list is shared with the replica (a reference-count increment),
    /// not copied, so the read allocates nothing.
    pub fn get_list(&self, scope: &Scope, key: &str) -> Result<List, PolicyError> {
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

    /// A handle on an int key.
    pub fn int_key(&self, key: &str) -> Result<Handle<i64>, PolicyError> {
        self.key(key)
    }

    /// A handle on a bool key.
    pub fn bool_key(&self, key: &str) -> Result<Handle<bool>, PolicyError> {
        self.key(key)
    }

    /// A handle on a string key.
    pub fn string_key(&self, key: &str) -> Result<Handle<Arc<str>>, PolicyError> {
        self.key(key)
    }

    /// A handle on a list key.
    pub fn list_key(&self, key: &str) -> Result<Handle<List>, PolicyError> {
        self.key(key)
    }

    /// The replica as a document: what a server answers for the bootstrap
    /// (`GET /api/v1/replica`) and a client writes as its snapshot file.
    pub fn image(&self) -> Image {
        let replica = &self.shared.replica;
        let (position, horizon) = replica.consistent(|| (self.shared.last_seq(), self.shared.horizon()));
        Image::of(replica, position, horizon)
    }

    /// Every key's definition, as the replica holds it, sorted by key.
    pub fn catalog(&self) -> Vec<KeyDef> {
        let mut defs = Vec::new();
        self.shared.replica.for_each_key(|state| defs.push(state.def.clone()));
        defs.sort_by(|a, b| a.key.cmp(&b.key));
        defs
    }

    /// A key's catalog definition, as the replica holds it.
    pub fn key_def(&self, key: &str) -> Option<KeyDef> {
        Some(self.shared.replica.slot(key)?.read().def.clone())
    }

    /// The answer with every level consulted and where it came from, as the
    /// server's resolve endpoint gives it.
    ///
    /// ```
    /// use policy_values::{Level, PolicyClient, Scope, WriteScope};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let client = PolicyClient::fixed()
    ///     .set("allocation.refund_window_days", WriteScope::at(Level::Org, "acme")?, 45)
    ///     .build()?;
    /// let why = client.explain(&Scope::new().user("u1").org("acme"), "allocation.refund_window_days")?;
    /// assert_eq!(why.resolution.source.level, "org");
    /// let won: Vec<&str> = why.resolution.explain.iter().filter(|l| l.won).map(|l| l.level).collect();
    /// assert_eq!(won, ["org"]);
    /// # Ok(())
    /// # }
    /// ```
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

    /// Since when the replica may be stale (its source unreachable), if it
    /// is: one atomic read, for every request.
    pub fn stale_since(&self) -> Option<OffsetDateTime> {
        self.shared.stale_since()
    }

    /// The client's state: origin, staleness, position, size, reconnections.
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

    /// Waits until the replica is live (loaded from its source and
    /// following it), at most `timeout`; says whether it is. A client that
    /// started from its snapshot file serves at once and goes live when it
    /// has caught up.
    pub async fn wait_live(&self, timeout: std::time::Duration) -> bool {
        let mut origin = self.shared.origin_watch.subscribe();
        tokio::time::timeout(timeout, origin.wait_for(|o| *o == Origin::Live)).await.is_ok_and(|r| r.is_ok())
    }

    /// Every change as it is applied. A receiver that falls more than 1,024
    /// changes behind loses the oldest (`RecvError::Lagged`); the replica
    /// itself is always current, so read the values again then.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.shared.events.subscribe()
    }

    /// Changes of one key only.
    ///
    /// ```no_run
    /// # async fn follow(client: policy_values::PolicyClient) -> Result<(), policy_values::PolicyError> {
    /// let mut ttl = client.watch_key("terminal.session_max_ttl_seconds")?;
    /// while let Some(change) = ttl.changed().await {
    ///     println!("{} at {} {}: {:?} from {}", change.key, change.level, change.scope_id, change.value, change.effective_at);
    /// }
    /// # Ok(())
    /// # }
    /// ```
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
