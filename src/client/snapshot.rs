//! The fail-open snapshot file: the replica written atomically (temporary
//! file, fsync, rename; mode 0600) with a SHA-256 checksum, read back when
//! the database cannot be reached at start. A file that is corrupt,
//! truncated or of another format is refused, never half-read.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use uuid::Uuid;

use super::replica::{Replica, Row, RowKind};
use crate::domain::{Bounds, KeyDef, Level, PolicyKey, ValueType};

const MAGIC: &str = "policy-values-snapshot";
const FORMAT: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("cannot read or write the snapshot file: {0}")]
    Io(#[from] std::io::Error),
    #[error("the snapshot file is not a policy-values snapshot of format {FORMAT}")]
    Format,
    #[error("the snapshot file's checksum does not match its contents")]
    Checksum,
    #[error("the snapshot file's contents are invalid: {0}")]
    Invalid(String),
}

#[derive(Serialize, Deserialize)]
struct Contents {
    last_seq: i64,
    #[serde(with = "time::serde::rfc3339")]
    horizon: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    written_at: OffsetDateTime,
    keys: Vec<SnapKey>,
    rows: Vec<SnapRow>,
}

#[derive(Serialize, Deserialize)]
struct SnapKey {
    key: String,
    value_type: ValueType,
    default: serde_json::Value,
    min: Option<i64>,
    max: Option<i64>,
    #[serde(rename = "enum")]
    values: Option<Vec<String>>,
    description: String,
    unit: String,
    fail_closed: bool,
}

#[derive(Serialize, Deserialize)]
struct SnapRow {
    seq: i64,
    id: Uuid,
    key: String,
    level: String,
    scope_id: String,
    value: Option<serde_json::Value>,
    #[serde(with = "time::serde::rfc3339")]
    effective_at: OffsetDateTime,
}

/// What a snapshot file restores.
pub struct Restored {
    pub catalog: Vec<KeyDef>,
    pub rows: Vec<Row>,
    pub last_seq: i64,
    pub horizon: OffsetDateTime,
    pub written_at: OffsetDateTime,
}

/// Writes the replica to `path` atomically: a reader sees the old file or
/// the new one, never a mix.
pub fn write(path: &Path, replica: &Replica, last_seq: i64, horizon: OffsetDateTime) -> Result<(), SnapshotError> {
    let mut keys = Vec::new();
    let mut rows = Vec::new();
    replica.for_each_key(|state| {
        let (min, max, values) = state.def.bounds.to_parts();
        keys.push(SnapKey {
            key: state.def.key.to_string(),
            value_type: state.def.value_type,
            default: state.def.default.to_json(),
            min,
            max,
            values,
            description: state.def.description.clone(),
            unit: state.def.unit.clone(),
            fail_closed: state.def.fail_closed,
        });
        rows.extend(state.entries().map(|(level, scope_id, e)| SnapRow {
            seq: e.seq,
            id: e.id,
            key: state.def.key.to_string(),
            level: level.as_str().to_string(),
            scope_id: scope_id.to_string(),
            value: e.value.as_ref().map(|v| v.to_json()),
            effective_at: e.effective_at,
        }));
    });
    rows.sort_by_key(|r| r.seq);
    let contents = Contents { last_seq, horizon, written_at: OffsetDateTime::now_utc(), keys, rows };
    let body = serde_json::to_vec(&contents).map_err(|e| SnapshotError::Invalid(e.to_string()))?;
    let header = format!("{MAGIC} {FORMAT} sha256={}\n", hex::encode(Sha256::digest(&body)));

    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp)?;
    file.write_all(header.as_bytes())?;
    file.write_all(&body)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Reads and checks a snapshot file.
pub fn read(path: &Path) -> Result<Restored, SnapshotError> {
    let bytes = std::fs::read(path)?;
    let newline = bytes.iter().position(|&b| b == b'\n').ok_or(SnapshotError::Format)?;
    let header = std::str::from_utf8(&bytes[..newline]).map_err(|_| SnapshotError::Format)?;
    let body = &bytes[newline + 1..];
    let expected = format!("{MAGIC} {FORMAT} sha256=");
    let checksum = header.strip_prefix(&expected).ok_or(SnapshotError::Format)?;
    if checksum != hex::encode(Sha256::digest(body)) {
        return Err(SnapshotError::Checksum);
    }
    let contents: Contents = serde_json::from_slice(body).map_err(|e| SnapshotError::Invalid(e.to_string()))?;
    let invalid = |what: String| SnapshotError::Invalid(what);
    let catalog = contents
        .keys
        .into_iter()
        .map(|k| {
            let key = PolicyKey::parse(&k.key).ok_or_else(|| invalid(format!("key {:?}", k.key)))?;
            let bounds = Bounds::from_parts(k.value_type, k.min, k.max, k.values)
                .ok_or_else(|| invalid(format!("bounds of {key}")))?;
            let default = crate::domain::Value::from_json(&k.default, k.value_type)
                .map_err(|e| invalid(format!("default of {key}: {e}")))?;
            let def = KeyDef {
                key,
                value_type: k.value_type,
                default,
                bounds,
                description: k.description,
                unit: k.unit,
                fail_closed: k.fail_closed,
            };
            Ok(def)
        })
        .collect::<Result<Vec<_>, SnapshotError>>()?;
    let rows = contents
        .rows
        .into_iter()
        .map(|r| {
            let level = Level::parse(&r.level).ok_or_else(|| invalid(format!("level {:?}", r.level)))?;
            let kind = if r.value.is_some() { RowKind::Set } else { RowKind::Unset };
            Ok(Row {
                seq: r.seq,
                id: r.id,
                kind,
                key: r.key,
                level,
                scope_id: r.scope_id,
                value: r.value,
                effective_at: r.effective_at,
            })
        })
        .collect::<Result<Vec<_>, SnapshotError>>()?;
    Ok(Restored {
        catalog,
        rows,
        last_seq: contents.last_seq,
        horizon: contents.horizon,
        written_at: contents.written_at,
    })
}
