//! The snapshot file's binary format (format 3): a lookup structure that
//! reads use in place, memory-mapped, so a client serves its first read
//! without building anything; the full replica is built from the same
//! file in the background and swapped in (docs/client.md, "Fail-open").
//!
//! Layout, little-endian throughout:
//!
//! ```text
//! header   48 bytes  magic "pvsnap3\n", format u32, CRC-32 u32 of every
//!                    byte after these 16, file length u64, the hash of
//!                    PROBE u64, meta offset u64, meta length u64
//! records            per (key, level, scope): id length u32, id, entry
//!                    count u32, then per entry seq i64, row id [16],
//!                    effective_at as unix nanoseconds i128, value length
//!                    u32 (u32::MAX for a tombstone), the value as JSON
//! tables             per (key, scoped level): entries of (scope hash u64,
//!                    record offset u64), sorted by hash
//! meta               JSON: position, horizon, written_at, and per key its
//!                    definition, its four tables, its global record, its
//!                    next scheduled change and its entry count
//! ```
//!
//! Histories are written as the replica keeps them after pruning at the
//! file's horizon, so reading them in place and building the replica from
//! them give the same entries.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::replica::{kept, Fresh, KeyState, Replica};
use super::snapshot::SnapshotError;
use crate::domain::key::KeyColumns;
use crate::domain::scope::{scope_hash, ScopeKey};
use crate::domain::{Entry, Level, Value, ValueType};

pub const MAGIC: [u8; 8] = *b"pvsnap3\n";
const FORMAT: u32 = 3;
const HEADER: usize = 48;
/// Scope hashes are stored; a build whose `scope_hash` gives another hash
/// for this text (another hasher version) cannot use the stored tables and
/// builds the replica from the records instead.
const PROBE: &str = "policy-values scope hash probe";
const TABLE_ENTRY: usize = 16;
const TOMBSTONE: u32 = u32::MAX;

/// Per scoped level, its table's (scope hash, record offset) entries.
type Tables = [Vec<(u64, u64)>; 4];
/// Per scope of a level, in table order, its history once decoded.
type Decoded = Box<[OnceLock<Box<[Entry]>>]>;

#[derive(Serialize, Deserialize)]
struct Meta {
    position: i64,
    #[serde(with = "time::serde::rfc3339")]
    horizon: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    written_at: OffsetDateTime,
    keys: Vec<MetaKey>,
}

#[derive(Serialize, Deserialize)]
struct MetaKey {
    def: KeyColumns,
    /// User, project, org, plan: (table offset, scopes).
    tables: [(u64, u64); 4],
    /// The global history's record, if the key has one.
    global: Option<u64>,
    #[serde(with = "time::serde::rfc3339::option")]
    next_change: Option<OffsetDateTime>,
    rows: u64,
}

/// Writes everything after the header, keeping its CRC and length.
struct Out {
    file: BufWriter<File>,
    crc: crc32fast::Hasher,
    at: u64,
}

impl Out {
    fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.file.write_all(bytes)?;
        self.crc.update(bytes);
        self.at += bytes.len() as u64;
        Ok(())
    }
}

/// Writes the replica to `file` (a new, empty file) in this format.
pub fn write_to(file: File, replica: &Replica, position: i64, horizon: OffsetDateTime) -> Result<File, SnapshotError> {
    let mut out = Out { file: BufWriter::with_capacity(1 << 20, file), crc: crc32fast::Hasher::new(), at: 0 };
    out.file.write_all(&[0; HEADER])?;
    out.at = HEADER as u64;
    let mut keys = Vec::new();
    let mut tables: Vec<Tables> = Vec::new();
    let mut failed = None;
    let mut record = Vec::new();
    replica.for_each_key(|state| {
        if failed.is_some() {
            return;
        }
        match write_key(&mut out, &mut record, state, horizon) {
            Ok((key, key_tables)) => {
                keys.push(key);
                tables.push(key_tables);
            }
            Err(e) => failed = Some(e),
        }
    });
    if let Some(e) = failed {
        return Err(e.into());
    }
    for (key, mut key_tables) in keys.iter_mut().zip(tables) {
        for (level, table) in key_tables.iter_mut().enumerate() {
            table.sort_unstable();
            key.tables[level] = (out.at, table.len() as u64);
            for (hash, offset) in table.iter() {
                out.put(&hash.to_le_bytes())?;
                out.put(&offset.to_le_bytes())?;
            }
        }
    }
    keys.sort_by(|a, b| a.def.key.cmp(&b.def.key));
    let meta = Meta { position, horizon, written_at: OffsetDateTime::now_utc(), keys };
    let meta = serde_json::to_vec(&meta).map_err(|e| SnapshotError::Invalid(e.to_string()))?;
    let meta_at = out.at;
    out.put(&meta)?;

    let mut fields = Vec::with_capacity(HEADER - 16);
    fields.extend_from_slice(&out.at.to_le_bytes());
    fields.extend_from_slice(&scope_hash(PROBE).to_le_bytes());
    fields.extend_from_slice(&meta_at.to_le_bytes());
    fields.extend_from_slice(&(meta.len() as u64).to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&fields);
    crc.combine(&out.crc);
    let mut header = Vec::with_capacity(HEADER);
    header.extend_from_slice(&MAGIC);
    header.extend_from_slice(&FORMAT.to_le_bytes());
    header.extend_from_slice(&crc.finalize().to_le_bytes());
    header.extend_from_slice(&fields);
    let mut file = out.file.into_inner().map_err(|e| e.into_error())?;
    file.seek(SeekFrom::Start(0))?;
    file.write_all(&header)?;
    Ok(file)
}

/// Writes one key's records; answers its meta and its unsorted tables.
fn write_key(
    out: &mut Out,
    record: &mut Vec<u8>,
    state: &KeyState,
    horizon: OffsetDateTime,
) -> std::io::Result<(MetaKey, Tables)> {
    let mut tables: Tables = Default::default();
    let mut global = None;
    let mut next_change: Option<OffsetDateTime> = None;
    let mut rows = 0u64;
    for (level, id, history) in state.histories() {
        let history = kept(history, horizon);
        if history.is_empty() {
            continue;
        }
        rows += history.len() as u64;
        if let Some(first) = history.iter().map(|e| e.effective_at).find(|&t| t > horizon) {
            next_change = Some(next_change.map_or(first, |t| t.min(first)));
        }
        let at = out.at;
        encode(record, id, history);
        out.put(record)?;
        match level {
            Level::Global => global = Some(at),
            _ => tables[level.index()].push((scope_hash(id), at)),
        }
    }
    let key = MetaKey { def: KeyColumns::from_def(&state.def), tables: [(0, 0); 4], global, next_change, rows };
    Ok((key, tables))
}

fn encode(record: &mut Vec<u8>, id: &str, history: &[Entry]) {
    record.clear();
    record.extend_from_slice(&(id.len() as u32).to_le_bytes());
    record.extend_from_slice(id.as_bytes());
    record.extend_from_slice(&(history.len() as u32).to_le_bytes());
    for e in history {
        record.extend_from_slice(&e.seq.to_le_bytes());
        record.extend_from_slice(e.id.as_bytes());
        record.extend_from_slice(&e.effective_at.unix_timestamp_nanos().to_le_bytes());
        match &e.value {
            None => record.extend_from_slice(&TOMBSTONE.to_le_bytes()),
            Some(value) => {
                let json = value.to_json().to_string();
                record.extend_from_slice(&(json.len() as u32).to_le_bytes());
                record.extend_from_slice(json.as_bytes());
            }
        }
    }
}

/// Whether the file at `path` is in this format (else it may be a JSON
/// file of format 2).
pub fn is_binary(path: &Path) -> std::io::Result<bool> {
    let mut magic = [0u8; 8];
    let mut file = File::open(path)?;
    match file.read_exact(&mut magic) {
        Ok(()) => Ok(magic == MAGIC),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// The file's bytes: mapped (or, in tests, in memory).
type Bytes = Arc<dyn AsRef<[u8]> + Send + Sync>;

/// An opened, checked snapshot file.
pub struct Snapshot {
    file: Bytes,
    pub position: i64,
    pub horizon: OffsetDateTime,
    pub written_at: OffsetDateTime,
    keys: Vec<FileKey>,
    /// Whether the stored hashes are this build's (see `PROBE`).
    pub in_place: bool,
}

struct FileKey {
    def: crate::domain::KeyDef,
    tables: [(usize, usize); 4],
    global: Vec<Entry>,
    next_change: Option<OffsetDateTime>,
    rows: usize,
}

/// Maps and checks the file: its length, its CRC over every byte, its
/// meta, its tables' bounds and its global records. Decodes nothing else.
pub fn open(path: &Path) -> Result<Snapshot, SnapshotError> {
    let file = File::open(path)?;
    // SAFETY: the map is only sound while nobody truncates or rewrites the
    // file in place. This library never does: a new file is written beside
    // it and renamed over it, and the old one's pages stay mapped until the
    // map is dropped. (docs/client.md says the file must not be edited.)
    let map = unsafe { memmap2::MmapOptions::new().populate().map(&file)? };
    let bytes: &[u8] = &map;
    if bytes.len() < HEADER || bytes[..8] != MAGIC {
        return Err(SnapshotError::Format);
    }
    let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or_default());
    let format = u32::from_le_bytes(bytes[8..12].try_into().unwrap_or_default());
    if format != FORMAT {
        return Err(SnapshotError::Format);
    }
    if word(16) != bytes.len() as u64 {
        return Err(SnapshotError::Checksum);
    }
    let crc = u32::from_le_bytes(bytes[12..16].try_into().unwrap_or_default());
    if crc != crc32fast::hash(&bytes[16..]) {
        return Err(SnapshotError::Checksum);
    }
    let in_place = word(24) == scope_hash(PROBE);
    let invalid = |what: &str| SnapshotError::Invalid(what.to_string());
    let meta_at = usize::try_from(word(32)).map_err(|_| invalid("meta offset"))?;
    let meta_len = usize::try_from(word(40)).map_err(|_| invalid("meta length"))?;
    let meta_end = meta_at.checked_add(meta_len).filter(|&end| end <= bytes.len() && meta_at >= HEADER);
    let meta_end = meta_end.ok_or_else(|| invalid("meta bounds"))?;
    let meta: Meta =
        serde_json::from_slice(&bytes[meta_at..meta_end]).map_err(|e| SnapshotError::Invalid(e.to_string()))?;
    let mut keys = Vec::with_capacity(meta.keys.len());
    for key in meta.keys {
        let def = key.def.into_def().map_err(SnapshotError::Invalid)?;
        let mut tables = [(0usize, 0usize); 4];
        for (table, &(at, count)) in tables.iter_mut().zip(&key.tables) {
            let at = usize::try_from(at).map_err(|_| invalid("table offset"))?;
            let count = usize::try_from(count).map_err(|_| invalid("table length"))?;
            let end = count.checked_mul(TABLE_ENTRY).and_then(|len| len.checked_add(at));
            if count > 0 && !end.is_some_and(|end| at >= HEADER && end <= meta_at) {
                return Err(invalid("table bounds"));
            }
            *table = (at, count);
        }
        let global = match key.global {
            None => Vec::new(),
            Some(at) => {
                let at = usize::try_from(at).map_err(|_| invalid("record offset"))?;
                decode(bytes, at, def.value_type).ok_or_else(|| invalid("global record"))?.1
            }
        };
        let rows = usize::try_from(key.rows).map_err(|_| invalid("rows"))?;
        keys.push(FileKey { def, tables, global, next_change: key.next_change, rows });
    }
    let file: Bytes = Arc::new(map);
    Ok(Snapshot { file, position: meta.position, horizon: meta.horizon, written_at: meta.written_at, keys, in_place })
}

impl Snapshot {
    /// The replica to install: read in place (`owned: false`, at once), or
    /// built from the file (`owned: true`, the background build; also what
    /// a build with other scope hashes installs at start).
    pub fn replica(&self, owned: bool) -> Fresh {
        let states = self
            .keys
            .iter()
            .map(|key| {
                let levels = key.tables.map(|(table, count)| MappedLevel {
                    file: Arc::clone(&self.file),
                    table,
                    count,
                    value_type: key.def.value_type,
                    histories: OnceLock::new(),
                });
                let owned = owned || !self.in_place;
                KeyState::from_file(key.def.clone(), levels, key.global.clone(), key.next_change, key.rows, owned)
            })
            .collect();
        Fresh::of_states(states, self.horizon)
    }
}

/// One key's scopes at one level, read from the mapped file: the sorted
/// table is binary-searched by scope hash, the ids of equal hashes are
/// compared (a collision is told apart as the replica's own table does),
/// and a scope's history is decoded the first time it is read.
pub struct MappedLevel {
    file: Bytes,
    table: usize,
    count: usize,
    value_type: ValueType,
    /// Per scope in table order, its decoded history; made on first use.
    histories: OnceLock<Decoded>,
}

impl MappedLevel {
    pub fn len(&self) -> usize {
        self.count
    }

    fn bytes(&self) -> &[u8] {
        (*self.file).as_ref()
    }

    fn word(&self, at: usize) -> u64 {
        let bytes = self.bytes().get(at..at.saturating_add(8)).and_then(|b| <[u8; 8]>::try_from(b).ok());
        bytes.map_or(u64::MAX, u64::from_le_bytes)
    }

    fn hash(&self, i: usize) -> u64 {
        self.word(self.table + i * TABLE_ENTRY)
    }

    fn record(&self, i: usize) -> usize {
        usize::try_from(self.word(self.table + i * TABLE_ENTRY + 8)).unwrap_or(usize::MAX)
    }

    fn id(&self, i: usize) -> Option<&str> {
        Cursor { bytes: self.bytes(), at: self.record(i) }.id()
    }

    /// Whether scope `i` is `id`: compares the bytes, no UTF-8 check.
    fn id_is(&self, i: usize, id: &str) -> bool {
        let mut cursor = Cursor { bytes: self.bytes(), at: self.record(i) };
        cursor.u32().and_then(|len| cursor.take(len as usize)) == Some(id.as_bytes())
    }

    fn history(&self, i: usize) -> &[Entry] {
        let histories = self.histories.get_or_init(|| (0..self.count).map(|_| OnceLock::new()).collect());
        match histories.get(i) {
            Some(history) => &history.get_or_init(|| {
                decode(self.bytes(), self.record(i), self.value_type).map(|(_, h)| h).unwrap_or_default().into()
            })[..],
            None => &[],
        }
    }

    pub fn get(&self, key: ScopeKey<'_>) -> Option<&[Entry]> {
        let (mut low, mut high) = (0, self.count);
        while low < high {
            let mid = low + (high - low) / 2;
            if self.hash(mid) < key.hash {
                low = mid + 1;
            } else {
                high = mid;
            }
        }
        while low < self.count && self.hash(low) == key.hash {
            if self.id_is(low, key.id) {
                return Some(self.history(low));
            }
            low += 1;
        }
        None
    }

    /// Every scope with its history (decoded and kept as it goes).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[Entry])> {
        (0..self.count).filter_map(|i| Some((self.id(i)?, self.history(i))))
    }

    /// Every scope with a history of its own, decoded afresh.
    pub fn for_each_owned(&self, mut f: impl FnMut(&str, Vec<Entry>)) {
        for i in 0..self.count {
            if let Some((id, history)) = decode(self.bytes(), self.record(i), self.value_type) {
                if !history.is_empty() {
                    f(id, history);
                }
            }
        }
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        let bytes = self.bytes.get(self.at..self.at.checked_add(len)?)?;
        self.at += len;
        Some(bytes)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }

    /// A record's scope id: its length, then its UTF-8 bytes.
    fn id(&mut self) -> Option<&'a str> {
        let len = self.u32()? as usize;
        std::str::from_utf8(self.take(len)?).ok()
    }
}

/// A record: its scope id and its history. An entry whose value does not
/// fit the key's type is skipped, as building the replica skips it.
fn decode(bytes: &[u8], at: usize, value_type: ValueType) -> Option<(&str, Vec<Entry>)> {
    let mut cursor = Cursor { bytes, at };
    let id = cursor.id()?;
    let count = cursor.u32()? as usize;
    let mut history = Vec::with_capacity(count.min(1 << 16));
    for _ in 0..count {
        let seq = i64::from_le_bytes(cursor.array()?);
        let row = Uuid::from_bytes(cursor.array()?);
        let effective_at = OffsetDateTime::from_unix_timestamp_nanos(i128::from_le_bytes(cursor.array()?)).ok()?;
        let value = match cursor.u32()? {
            TOMBSTONE => None,
            len => {
                let json: serde_json::Value = serde_json::from_slice(cursor.take(len as usize)?).ok()?;
                match Value::from_json(&json, value_type) {
                    Ok(value) => Some(value),
                    Err(_) => continue,
                }
            }
        };
        history.push(Entry { seq, id: row, effective_at, value });
    }
    history.shrink_to_fit();
    Some((id, history))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::replica::{Row, RowKind};
    use crate::client::snapshot::{self, Opened};
    use crate::domain::resolve::explain;
    use crate::domain::{Catalog, KeyDef, Scope};
    use proptest::prelude::*;
    use time::Duration;

    const IDS: [&str; 4] = ["a", "b", "c", "d"];

    /// One key of each type from the built-in catalog.
    fn keys() -> Vec<KeyDef> {
        let catalog = Catalog::builtin().unwrap();
        [ValueType::Int, ValueType::Bool, ValueType::String, ValueType::List]
            .into_iter()
            .map(|t| catalog.keys.iter().find(|k| k.value_type == t).unwrap().clone())
            .collect()
    }

    fn json_of(value_type: ValueType, n: i64) -> serde_json::Value {
        match value_type {
            ValueType::Int => serde_json::json!(n),
            ValueType::Bool => serde_json::json!(n % 2 == 0),
            ValueType::String => serde_json::json!(format!("s{n}")),
            ValueType::List => serde_json::json!([format!("i{n}")]),
        }
    }

    /// (key, level, scope id, 0 set / 1 unset / 2 cancel, hours from now, value)
    type Op = (usize, usize, usize, u8, i64, i64);

    fn rows(ops: &[Op], now: OffsetDateTime) -> Vec<Row> {
        let keys = keys();
        let mut rows: Vec<Row> = Vec::new();
        for (i, &(key, level, id, kind, hours, n)) in ops.iter().enumerate() {
            let seq = i as i64 + 1;
            let level = Level::ORDER[level];
            let scope_id = if level == Level::Global { String::new() } else { IDS[id].to_string() };
            let key_def = &keys[key];
            let kind = match kind {
                0 => RowKind::Set,
                1 => RowKind::Unset,
                // Cancels an earlier row of the same history, if any.
                _ => match rows
                    .iter()
                    .rev()
                    .find(|r| r.key == key_def.key.as_str() && r.level == level && r.scope_id == scope_id)
                {
                    Some(target) => RowKind::Cancel { cancels_seq: target.seq },
                    None => RowKind::Unset,
                },
            };
            let value = matches!(kind, RowKind::Set).then(|| json_of(key_def.value_type, n));
            rows.push(Row {
                seq,
                id: Uuid::from_u64_pair(7, seq as u64),
                kind,
                key: key_def.key.to_string(),
                level,
                scope_id,
                value,
                effective_at: now + Duration::minutes(hours * 37),
            });
        }
        rows
    }

    fn scopes() -> Vec<Scope> {
        let mut scopes = Vec::new();
        for user in [None, Some("a"), Some("b")] {
            for project in [None, Some("c")] {
                for org in [None, Some("a"), Some("b"), Some("d")] {
                    for plan in [None, Some("c"), Some("d")] {
                        let mut scope = Scope::new();
                        if let Some(id) = user {
                            scope = scope.user(id);
                        }
                        if let Some(id) = project {
                            scope = scope.project(id);
                        }
                        if let Some(id) = org {
                            scope = scope.org(id);
                        }
                        if let Some(id) = plan {
                            scope = scope.plan(id);
                        }
                        scopes.push(scope);
                    }
                }
            }
        }
        scopes
    }

    /// Everything a read can see of a replica: per key, its row count, its
    /// sorted entries, and for every scope and time (the client's own read
    /// time included) what `explain` reports (the value, level and row of
    /// each level) and, from the horizon on, when the answer changes next.
    /// (`next_change` is left
    /// out: a running replica keeps it after a cancel as a hint to read the
    /// clock, where one built from a file finds it afresh; reads at the
    /// client's time show that both answer the same.)
    fn reads(replica: &Replica, now: OffsetDateTime) -> Vec<String> {
        let mut seen = vec![format!("rows {}", replica.rows())];
        let times = [
            None,
            Some(now - Duration::hours(3)),
            Some(now),
            Some(now + Duration::minutes(40)),
            Some(now + Duration::hours(4)),
        ];
        for def in keys() {
            let slot = replica.slot_arc(def.key.as_str()).unwrap();
            let state = slot.read();
            let mut entries: Vec<String> = state.entries().map(|(l, id, e)| format!("{l:?} {id} {e:?}")).collect();
            entries.sort();
            seen.push(format!("{} rows {} {entries:?}", def.key, state.rows()));
            for scope in scopes() {
                let client = state.now();
                for (label, at) in
                    times.into_iter().map(|at| (format!("{at:?}"), at)).chain([("client".into(), client)])
                {
                    let report = explain(&state.def, &scope, at, |level, key| state.history(level, key));
                    // Before the horizon, `next_change_for` relies on the
                    // same hint; nobody asks it about the past.
                    let at_or_now = at.unwrap_or(now);
                    let next = (at_or_now >= now).then(|| state.next_change_for(&scope, at_or_now));
                    seen.push(format!("{} {scope:?} {label}: {report:?} next {next:?}", def.key));
                }
            }
        }
        seen
    }

    /// The first read on which two replicas differ, if any.
    fn first_difference(left: &[String], right: &[String]) -> Option<(String, String)> {
        if left.len() != right.len() {
            return Some((format!("{} reads", left.len()), format!("{} reads", right.len())));
        }
        left.iter().zip(right).find(|(l, r)| l != r).map(|(l, r)| (l.clone(), r.clone()))
    }

    fn opened(path: &Path) -> Snapshot {
        match snapshot::open(path).unwrap() {
            Opened::InPlace(file) => file,
            Opened::Restored(_) => panic!("a binary file was read as JSON"),
        }
    }

    fn installed(fresh: Fresh) -> Replica {
        let replica = Replica::default();
        replica.install(fresh);
        replica
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// Reads in place from the file answer exactly as the replica built
        /// from it and as the replica that wrote it, at every time, before
        /// and after a change is applied to them.
        #[test]
        fn reads_in_place_answer_as_the_replica_built_from_the_file(
            ops in prop::collection::vec((0..4usize, 0..5usize, 0..4usize, 0..3u8, -4..5i64, 0..100i64), 0..80),
            extra in (0..4usize, 0..5usize, 0..4usize, 0..2u8, -4..5i64, 0..100i64),
        ) {
            // The horizon, behind the clock as the database's time of the
            // last row is: a client whose clock is behind the horizon reads
            // rows between the two as pending in a running replica and as
            // in effect in one built afresh, with or without a file.
            let now = (OffsetDateTime::now_utc() - Duration::seconds(2)).replace_nanosecond(123_456_789).unwrap();
            let all = rows(&[ops.clone(), vec![extra]].concat(), now);
            let (rows, last) = all.split_at(all.len() - 1);
            let original = Replica::default();
            original.replace(keys(), rows, now);

            let dir = std::env::temp_dir().join(format!("policy-values-mapped-{}-{}", std::process::id(), ops.len()));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join(format!("replica-{}.snapshot", rows.len()));
            snapshot::write(&path, &original, rows.len() as i64, now).unwrap();
            let file = opened(&path);
            prop_assert!(file.in_place);
            prop_assert_eq!(file.position, rows.len() as i64);
            prop_assert_eq!(file.horizon, now);
            let in_place = installed(file.replica(false));
            let built = installed(file.replica(true));
            std::fs::remove_file(&path).unwrap();
            let _ = std::fs::remove_dir(&dir);

            let expected = reads(&original, now);
            prop_assert_eq!(first_difference(&reads(&in_place, now), &expected), None);
            prop_assert_eq!(first_difference(&reads(&built, now), &expected), None);
            for def in keys() {
                let schedule = |replica: &Replica| replica.slot_arc(def.key.as_str()).unwrap().read().next_change;
                prop_assert_eq!(schedule(&in_place), schedule(&built));
            }

            // A change to a level read in place builds its table first.
            for replica in [&original, &in_place, &built] {
                replica.apply(&last[0], now);
            }
            let expected = reads(&original, now);
            prop_assert_eq!(first_difference(&reads(&in_place, now), &expected), None, "after the change");
            prop_assert_eq!(first_difference(&reads(&built, now), &expected), None, "after the change");
        }
    }

    /// Scope ids whose hashes collide are told apart by their ids, as the
    /// replica's own tables do.
    #[test]
    fn colliding_scope_hashes_are_told_apart_by_id() {
        let entry = |seq: i64| Entry {
            seq,
            id: Uuid::from_u64_pair(0, seq as u64),
            effective_at: OffsetDateTime::UNIX_EPOCH,
            value: Some(Value::Int(seq)),
        };
        let mut bytes = vec![0u8; HEADER];
        let mut record = Vec::new();
        let mut offsets = Vec::new();
        for (seq, id) in [(1, "first"), (2, "second"), (3, "third")] {
            offsets.push(bytes.len() as u64);
            encode(&mut record, id, &[entry(seq)]);
            bytes.extend_from_slice(&record);
        }
        let table = bytes.len();
        // "first" and "second" share hash 5; "third" has hash 9.
        for (hash, offset) in [(5u64, offsets[0]), (5, offsets[1]), (9, offsets[2])] {
            bytes.extend_from_slice(&hash.to_le_bytes());
            bytes.extend_from_slice(&offset.to_le_bytes());
        }
        let level = MappedLevel {
            file: Arc::new(bytes),
            table,
            count: 3,
            value_type: ValueType::Int,
            histories: OnceLock::new(),
        };
        let seq_of = |id: &str, hash: u64| level.get(ScopeKey { id, hash }).map(|h| h[0].seq);
        assert_eq!(seq_of("first", 5), Some(1));
        assert_eq!(seq_of("second", 5), Some(2));
        assert_eq!(seq_of("third", 9), Some(3));
        assert_eq!(seq_of("fourth", 5), None, "same hash, another id");
        assert_eq!(seq_of("third", 5), None, "an id under another hash");
        assert_eq!(seq_of("first", 7), None);
        let ids: Vec<&str> = level.iter().map(|(id, _)| id).collect();
        assert_eq!(ids, ["first", "second", "third"]);
    }

    /// A flipped byte anywhere, a truncated file and a foreign one are
    /// refused; a JSON file of format 2 is still read.
    #[test]
    fn damaged_files_are_refused_and_json_files_still_read() {
        let now = OffsetDateTime::now_utc();
        let original = Replica::default();
        original.replace(keys(), &rows(&[(0, 2, 0, 0, -1, 42), (0, 4, 0, 0, 1, 7)], now), now);
        let dir = std::env::temp_dir().join(format!("policy-values-damaged-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("replica.snapshot");
        snapshot::write(&path, &original, 2, now).unwrap();
        let good = std::fs::read(&path).unwrap();
        assert_eq!(
            first_difference(&reads(&installed(opened(&path).replica(false)), now), &reads(&original, now)),
            None
        );
        for at in [9, 13, 20, HEADER + 3, good.len() / 2, good.len() - 2] {
            let mut bytes = good.clone();
            bytes[at] ^= 0x20;
            std::fs::write(&path, &bytes).unwrap();
            assert!(snapshot::open(&path).is_err(), "byte {at} flipped");
        }
        for len in [0, 7, HEADER, good.len() - 1] {
            std::fs::write(&path, &good[..len]).unwrap();
            assert!(snapshot::open(&path).is_err(), "truncated to {len}");
        }
        std::fs::write(&path, b"not a snapshot at all").unwrap();
        assert!(matches!(snapshot::open(&path), Err(SnapshotError::Format)));

        // Format 2, as earlier versions wrote it.
        let image = snapshot::Image::of(&original, 2, now);
        let body = serde_json::to_vec(&image).unwrap();
        let digest = <sha2::Sha256 as sha2::Digest>::digest(&body);
        let mut json = format!("policy-values-snapshot 2 sha256={}\n", hex::encode(digest)).into_bytes();
        json.extend_from_slice(&body);
        std::fs::write(&path, &json).unwrap();
        let Opened::Restored(restored) = snapshot::open(&path).unwrap() else { panic!("a JSON file read as binary") };
        assert_eq!(restored.last_seq, 2);
        let from_json = Replica::default();
        from_json.replace(restored.catalog, &restored.rows, restored.horizon);
        assert_eq!(first_difference(&reads(&from_json, now), &reads(&original, now)), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
