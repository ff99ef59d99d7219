//! The client's in-memory replica: per key, behind its own lock, the
//! histories of every scope that holds a value now or later. Reads take one
//! shard lock (the key registry) and one key lock, and hash the scope ids
//! with a fast non-cryptographic hasher; they allocate nothing.

use std::collections::HashMap;
use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use dashmap::DashMap;
use foldhash::fast::FixedState;
use hashbrown::HashTable;
use time::OffsetDateTime;
use uuid::Uuid;

use super::mapped::MappedLevel;
use crate::domain::resolve::{resolve, Resolved};
use crate::domain::scope::{scope_hash, ScopeKey};
use crate::domain::{Entry, KeyDef, Level, Scope, Value};

type FastMap<K, V> = HashMap<K, V, FixedState>;

/// One scope's history, under its id and the id's hash.
struct Slot {
    hash: u64,
    id: Box<str>,
    history: Vec<Entry>,
}

/// The scopes of one level, looked up by precomputed hash: a probe compares
/// 64-bit hashes and compares strings only when they match. A level can
/// also be read in place from a mapped snapshot file (`Mapped`) until the
/// replica built from that file is swapped in; a change to such a level
/// first builds its table from the file (`owned`).
#[derive(Default)]
struct LevelMap {
    table: HashTable<Slot>,
    /// While set, the level is read from the file and `table` is empty
    /// (boxed: a level outlives its mapped phase, so it stays small).
    mapped: Option<Box<MappedLevel>>,
}

impl LevelMap {
    fn get(&self, key: ScopeKey<'_>) -> Option<&[Entry]> {
        if let Some(mapped) = &self.mapped {
            return mapped.get(key);
        }
        self.table.find(key.hash, |s| s.hash == key.hash && *s.id == *key.id).map(|s| s.history.as_slice())
    }

    /// The level's table, built from the mapped file first if need be.
    fn owned(&mut self) -> &mut HashTable<Slot> {
        if let Some(mapped) = self.mapped.take() {
            self.table = table_of(&mapped);
        }
        &mut self.table
    }

    fn get_or_insert(&mut self, id: &str) -> &mut Vec<Entry> {
        let hash = scope_hash(id);
        let entry = self.owned().entry(hash, |s| s.hash == hash && *s.id == *id, |s| s.hash);
        &mut entry.or_insert_with(|| Slot { hash, id: Box::from(id), history: Vec::new() }).into_mut().history
    }

    /// Removes the entry with `seq`; returns how many entries went.
    fn remove_seq(&mut self, id: &str, seq: i64) -> usize {
        let hash = scope_hash(id);
        let Ok(mut found) = self.owned().find_entry(hash, |s| s.hash == hash && *s.id == *id) else { return 0 };
        let before = found.get().history.len();
        found.get_mut().history.retain(|e| e.seq != seq);
        let removed = before - found.get().history.len();
        if found.get().history.is_empty() {
            found.remove();
        }
        removed
    }

    fn iter(&self) -> impl Iterator<Item = (&str, &[Entry])> {
        // `table` is empty while the level is mapped.
        let mapped = self.mapped.iter().flat_map(|m| m.iter());
        mapped.chain(self.table.iter().map(|s| (&*s.id, s.history.as_slice())))
    }
}

/// A level's table with every scope of a mapped level, hashed afresh.
fn table_of(mapped: &MappedLevel) -> HashTable<Slot> {
    let mut table = HashTable::with_capacity(mapped.len());
    mapped.for_each_owned(|id, history| {
        let hash = scope_hash(id);
        match table.entry(hash, |s: &Slot| s.hash == hash && *s.id == *id, |s| s.hash) {
            // A file names each scope of a level once.
            hashbrown::hash_table::Entry::Occupied(_) => {}
            hashbrown::hash_table::Entry::Vacant(slot) => {
                slot.insert(Slot { hash, id: Box::from(id), history });
            }
        }
    });
    table
}

/// One stored row as the replica receives it, from a load, the tail or a
/// snapshot file.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub seq: i64,
    pub id: Uuid,
    pub kind: RowKind,
    pub key: String,
    pub level: Level,
    pub scope_id: String,
    pub value: Option<serde_json::Value>,
    pub effective_at: OffsetDateTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowKind {
    Set,
    Unset,
    Cancel { cancels_seq: i64 },
}

/// One key: its definition and every scope's history.
pub struct KeyState {
    pub def: KeyDef,
    /// User, project, org, plan, by `Level::index()`.
    levels: [LevelMap; 4],
    global: Vec<Entry>,
    /// The earliest `effective_at` still in the future when last checked.
    /// While set, reads consult the clock; while `None`, every entry is in
    /// effect and reads skip the clock.
    pub next_change: Option<OffsetDateTime>,
    rows: usize,
}

impl KeyState {
    pub fn new(def: KeyDef) -> KeyState {
        KeyState { def, levels: Default::default(), global: Vec::new(), next_change: None, rows: 0 }
    }

    /// A key whose scoped levels are read in place from a mapped snapshot
    /// file (user, project, org, plan), or built from it (`owned`: the full
    /// replica swapped in behind it). `rows` and `next_change` are what
    /// inserting the same entries would have counted and found.
    pub fn from_file(
        def: KeyDef,
        levels: [MappedLevel; 4],
        global: Vec<Entry>,
        next_change: Option<OffsetDateTime>,
        rows: usize,
        owned: bool,
    ) -> KeyState {
        let levels = levels.map(|level| match owned {
            true => LevelMap { table: table_of(&level), mapped: None },
            false => LevelMap { table: HashTable::new(), mapped: Some(Box::new(level)) },
        });
        KeyState { def, levels, global, next_change, rows }
    }

    pub fn history(&self, level: Level, key: ScopeKey<'_>) -> Option<&[Entry]> {
        match level {
            Level::Global => Some(&self.global),
            _ => self.levels[level.index()].get(key),
        }
    }

    fn history_mut(&mut self, level: Level, scope_id: &str) -> &mut Vec<Entry> {
        match level {
            Level::Global => &mut self.global,
            _ => self.levels[level.index()].get_or_insert(scope_id),
        }
    }

    /// The time to resolve at: `None` (no clock read) when nothing is pending.
    pub fn now(&self) -> Option<OffsetDateTime> {
        self.next_change.map(|_| OffsetDateTime::now_utc())
    }

    pub fn resolve<'a>(&'a self, scope: &Scope, at: Option<OffsetDateTime>) -> Resolved<'a> {
        resolve(&self.def, scope, at, |level, key| self.history(level, key))
    }

    /// Inserts an entry in `(effective_at, seq)` order, then drops entries
    /// that can no longer matter (see `prune`).
    fn insert(&mut self, level: Level, scope_id: &str, entry: Entry, horizon: OffsetDateTime) {
        if entry.effective_at > horizon {
            let next = self.next_change.map_or(entry.effective_at, |t| t.min(entry.effective_at));
            self.next_change = Some(next);
        }
        let history = self.history_mut(level, scope_id);
        let at = history.partition_point(|e| (e.effective_at, e.seq) < (entry.effective_at, entry.seq));
        // A row seen twice (a snapshot file written while rows were being
        // applied, then caught up from its position) is kept once.
        if history.get(at).is_some_and(|e| e.seq == entry.seq) {
            return;
        }
        // Histories are short, most a single entry: grow them exactly, or a
        // million scopes would each hold room for four entries.
        history.reserve_exact(1);
        history.insert(at, entry);
        let pruned = prune(history, horizon);
        self.rows = self.rows + 1 - pruned;
    }

    fn remove(&mut self, level: Level, scope_id: &str, seq: i64) {
        let removed = match level {
            Level::Global => {
                let before = self.global.len();
                self.global.retain(|e| e.seq != seq);
                before - self.global.len()
            }
            _ => self.levels[level.index()].remove_seq(scope_id, seq),
        };
        self.rows -= removed;
    }

    /// Every scope's history: (level, scope id, history).
    pub fn histories(&self) -> impl Iterator<Item = (Level, &str, &[Entry])> {
        let scoped = Level::ORDER[..4]
            .iter()
            .flat_map(move |&level| self.levels[level.index()].iter().map(move |(id, h)| (level, id, h)));
        scoped.chain(std::iter::once((Level::Global, "", self.global.as_slice())))
    }

    /// Clears `next_change` once every entry is in effect at `now`, or moves
    /// it to the next pending one. Prunes nothing: see `prune`.
    pub fn recheck_schedule(&mut self, now: OffsetDateTime) {
        self.next_change = self
            .histories()
            .flat_map(|(_, _, h)| h.iter().rev().take_while(|e| e.effective_at > now))
            .map(|e| e.effective_at)
            .min();
    }

    /// Entries held, kept as a count: metrics read it after every change.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The earliest entry after `now` in a history `scope` reads (global
    /// included): when this key's answer for `scope` changes next.
    pub fn next_change_for(&self, scope: &Scope, now: OffsetDateTime) -> Option<OffsetDateTime> {
        self.next_change?;
        Level::ORDER
            .into_iter()
            .filter_map(|level| self.history(level, scope.key(level)?))
            .filter_map(|h| h.iter().find(|e| e.effective_at > now).map(|e| e.effective_at))
            .min()
    }

    /// Every (level, scope id, entry), for snapshots.
    pub fn entries(&self) -> impl Iterator<Item = (Level, &str, &Entry)> {
        self.histories().flat_map(|(level, id, h)| h.iter().map(move |e| (level, id, e)))
    }
}

/// The part of a sorted history that `prune` keeps at `horizon`.
pub fn kept(history: &[Entry], horizon: OffsetDateTime) -> &[Entry] {
    let in_effect = history.partition_point(|e| e.effective_at <= horizon);
    &history[in_effect.saturating_sub(1)..]
}

/// Drops the entries superseded before `horizon`, the database time of the
/// last applied row: no later cancel can revive them, since a change can be
/// cancelled only before it takes effect. A tombstone in effect is kept, so
/// `explain` can say "removed" as the server does.
/// Returns how many entries it dropped.
fn prune(history: &mut Vec<Entry>, horizon: OffsetDateTime) -> usize {
    let dropped = history.len() - kept(history, horizon).len();
    if dropped == 0 {
        return 0;
    }
    history.drain(..dropped);
    history.shrink_to_fit();
    dropped
}

pub struct KeySlot {
    state: RwLock<KeyState>,
}

impl KeySlot {
    pub fn read(&self) -> RwLockReadGuard<'_, KeyState> {
        self.state.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, KeyState> {
        self.state.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The registry of keys. Rows are applied by one task at a time (the tail),
/// in seq order; reads run concurrently.
#[derive(Default)]
pub struct Replica {
    keys: DashMap<Box<str>, Arc<KeySlot>, FixedState>,
    /// A sequence lock over changes that span keys (`changing`): odd while
    /// one is under way. Reads of one key need no more than its own lock;
    /// reads of every key (a snapshot) use `consistent`.
    epoch: AtomicU64,
    /// A fingerprint of what the catalog says (see `catalog_fingerprint`),
    /// computed when first asked for after a catalog change.
    catalog: AtomicU64,
    catalog_stale: std::sync::atomic::AtomicBool,
    catalog_lock: std::sync::Mutex<()>,
}

/// Marks a change under way until dropped (see `Replica::changing`).
pub struct Changing<'a>(&'a AtomicU64);

impl Drop for Changing<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl Replica {
    /// Brackets a change (rows applied with the position that goes with
    /// them, a catalog reload) so that `consistent` readers never see half
    /// of it. Only the tail calls it, one change at a time.
    pub fn changing(&self) -> Changing<'_> {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        Changing(&self.epoch)
    }

    /// Runs `read` until it ran while no change was under way, so what it
    /// read across keys belongs to one position. Gives up waiting (and
    /// answers the last read) only if changes never pause.
    pub fn consistent<T>(&self, mut read: impl FnMut() -> T) -> T {
        for _ in 0..10_000 {
            let before = self.epoch.load(Ordering::SeqCst);
            if before % 2 == 0 {
                let out = read();
                fence(Ordering::SeqCst);
                if self.epoch.load(Ordering::SeqCst) == before {
                    return out;
                }
            }
            std::thread::yield_now();
        }
        read()
    }

    /// A digest of the catalog's keys, types, defaults, bounds and
    /// fail-closed flags; equal on every replica holding the same catalog.
    pub fn catalog_fingerprint(&self) -> u64 {
        if self.catalog_stale.load(Ordering::SeqCst) {
            let _one = self.catalog_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if self.catalog_stale.swap(false, Ordering::SeqCst) {
                self.refresh_fingerprint();
            }
        }
        self.catalog.load(Ordering::SeqCst)
    }

    fn refresh_fingerprint(&self) {
        let mut defs: Vec<String> = self
            .keys
            .iter()
            .map(|slot| {
                let state = slot.read();
                let d = &state.def;
                format!(
                    "{}|{}|{}|{:?}|{}",
                    d.key,
                    d.value_type,
                    d.default.to_json(),
                    d.bounds.to_parts(),
                    d.fail_closed
                )
            })
            .collect();
        defs.sort_unstable();
        let digest = <sha2::Sha256 as sha2::Digest>::digest(defs.join("\n").as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        self.catalog.store(u64::from_be_bytes(first), Ordering::SeqCst);
    }

    pub fn slot(&self, key: &str) -> Option<dashmap::mapref::one::Ref<'_, Box<str>, Arc<KeySlot>>> {
        self.keys.get(key)
    }

    pub fn slot_arc(&self, key: &str) -> Option<Arc<KeySlot>> {
        self.keys.get(key).map(|s| Arc::clone(&s))
    }

    /// Replaces everything with `catalog` and `rows` (see `Fresh`).
    pub fn replace(&self, catalog: Vec<KeyDef>, rows: &[Row], horizon: OffsetDateTime) {
        let mut fresh = Fresh::new(catalog, horizon);
        for row in rows {
            fresh.add(row);
        }
        self.install(fresh);
    }

    /// Swaps a freshly built replica in. Existing slots are updated in
    /// place, so typed handles stay valid.
    pub fn install(&self, fresh: Fresh) {
        self.keys.retain(|key, _| fresh.states.contains_key(key));
        // The states replaced are dropped after every lock is released: their
        // tables (and a mapped file's pages) are freed off the readers' way.
        let mut replaced = Vec::new();
        for (key, state) in fresh.states {
            match self.keys.get(&key) {
                Some(slot) => replaced.push(std::mem::replace(&mut *slot.write(), state)),
                None => {
                    self.keys.insert(key, Arc::new(KeySlot { state: RwLock::new(state) }));
                }
            }
        }
        self.catalog_stale.store(true, Ordering::SeqCst);
        drop(replaced);
    }

    /// Updates one key's definition (a catalog change), keeping its values.
    pub fn define(&self, def: KeyDef) {
        match self.keys.get(def.key.as_str()) {
            Some(slot) => slot.write().def = def,
            None => {
                let key = Box::from(def.key.as_str());
                self.keys.insert(key, Arc::new(KeySlot { state: RwLock::new(KeyState::new(def)) }));
            }
        }
        self.catalog_stale.store(true, Ordering::SeqCst);
    }

    /// Applies one row from the tail; `None` if its key is unknown here.
    pub fn apply(&self, row: &Row, horizon: OffsetDateTime) -> Option<AppliedRow> {
        let slot = self.slot_arc(&row.key)?;
        let value = apply_to(&mut slot.write(), row, horizon)?;
        Some(AppliedRow {
            seq: row.seq,
            key: Arc::from(row.key.as_str()),
            level: row.level,
            scope_id: Arc::from(row.scope_id.as_str()),
            value,
            effective_at: row.effective_at,
            cancelled: matches!(row.kind, RowKind::Cancel { .. }),
        })
    }

    pub fn rows(&self) -> usize {
        self.keys.iter().map(|s| s.read().rows()).sum()
    }

    /// The earliest pending change over all keys.
    pub fn next_change(&self) -> Option<OffsetDateTime> {
        self.keys.iter().filter_map(|s| s.read().next_change).min()
    }

    /// Rechecks the schedule of every key whose next change is due.
    pub fn recheck_schedules(&self, now: OffsetDateTime) {
        for slot in self.keys.iter() {
            if slot.read().next_change.is_some_and(|t| t <= now) {
                slot.write().recheck_schedule(now);
            }
        }
    }

    pub fn for_each_key(&self, mut f: impl FnMut(&KeyState)) {
        for slot in self.keys.iter() {
            f(&slot.read());
        }
    }
}

/// What applying a row changed, for subscribers.
#[derive(Debug, Clone, PartialEq)]
pub struct AppliedRow {
    /// The row's position in the store.
    pub seq: i64,
    /// The key it changes.
    pub key: Arc<str>,
    /// The level it was written at.
    pub level: Level,
    /// The id at that level (`""` for global).
    pub scope_id: Arc<str>,
    /// The value the row sets; `None` for a removal or a cancellation.
    pub value: Option<Value>,
    /// When the change takes (or took) effect.
    pub effective_at: OffsetDateTime,
    /// Whether the row cancels a scheduled change (`value` is then `None`).
    pub cancelled: bool,
}

/// Applies a row to its key; returns the value it sets (`None` for a
/// removal or cancellation), or `None` if the value does not fit the key.
fn apply_to(state: &mut KeyState, row: &Row, horizon: OffsetDateTime) -> Option<Option<Value>> {
    let value = match (&row.kind, &row.value) {
        (RowKind::Set, Some(json)) => Some(Value::from_json(json, state.def.value_type).ok()?),
        _ => None,
    };
    match row.kind {
        RowKind::Cancel { cancels_seq } => state.remove(row.level, &row.scope_id, cancels_seq),
        RowKind::Set | RowKind::Unset => {
            let entry = Entry { seq: row.seq, id: row.id, effective_at: row.effective_at, value: value.clone() };
            state.insert(row.level, &row.scope_id, entry, horizon);
        }
    }
    Some(value)
}

/// A replica being built from a full load, a snapshot or fixed values,
/// before it is installed.
pub struct Fresh {
    states: FastMap<Box<str>, KeyState>,
    horizon: OffsetDateTime,
    rows: usize,
}

impl Fresh {
    pub fn new(catalog: Vec<KeyDef>, horizon: OffsetDateTime) -> Fresh {
        let states = catalog.into_iter().map(|def| (Box::from(def.key.as_str()), KeyState::new(def))).collect();
        Fresh { states, horizon, rows: 0 }
    }

    /// Adds a row in any order; rows of keys not in the catalog are skipped.
    pub fn add(&mut self, row: &Row) {
        if let Some(state) = self.states.get_mut(row.key.as_str()) {
            if apply_to(state, row, self.horizon).is_some() {
                self.rows += 1;
            }
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// A replica of keys already built (from a snapshot file).
    pub fn of_states(states: Vec<KeyState>, horizon: OffsetDateTime) -> Fresh {
        let rows = states.iter().map(KeyState::rows).sum();
        let states = states.into_iter().map(|state| (Box::from(state.def.key.as_str()), state)).collect();
        Fresh { states, horizon, rows }
    }

    pub fn horizon(&self) -> OffsetDateTime {
        self.horizon
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Catalog;
    use time::Duration;

    fn row(seq: i64, scope_id: &str, kind: RowKind, at: OffsetDateTime) -> Row {
        let value = matches!(kind, RowKind::Set).then(|| serde_json::json!(seq));
        Row {
            seq,
            id: Uuid::from_u64_pair(0, seq as u64),
            kind,
            key: "allocation.max_concurrent_per_user".into(),
            level: Level::Org,
            scope_id: scope_id.into(),
            value,
            effective_at: at,
        }
    }

    #[test]
    fn the_row_count_follows_inserts_prunes_and_cancels() {
        let now = OffsetDateTime::now_utc();
        let replica = Replica::default();
        let first = [row(1, "a", RowKind::Set, now - Duration::hours(2)), row(2, "b", RowKind::Set, now)];
        replica.replace(Catalog::builtin().unwrap().keys, &first, now);
        let count = |replica: &Replica| {
            let mut recounted = 0;
            replica.for_each_key(|state| recounted += state.entries().count());
            (replica.rows(), recounted)
        };
        assert_eq!(count(&replica), (2, 2));
        replica.apply(&row(3, "a", RowKind::Set, now - Duration::hours(1)), now); // prunes seq 1
        assert_eq!(count(&replica), (2, 2));
        replica.apply(&row(4, "a", RowKind::Set, now + Duration::hours(1)), now); // scheduled
        assert_eq!(count(&replica), (3, 3));
        replica.apply(&row(5, "a", RowKind::Cancel { cancels_seq: 4 }, now), now);
        assert_eq!(count(&replica), (2, 2));
        replica.apply(&row(6, "b", RowKind::Unset, now), now);
        assert_eq!(count(&replica), (2, 2), "the tombstone replaces the value it removes");
    }
}
