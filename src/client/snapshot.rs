//! The replica's image: the catalog and every row in force or scheduled,
//! complete up to a position. A server answers `GET /api/v1/replica` with
//! it as JSON (the bootstrap). A client keeps it as its fail-open snapshot
//! file, written atomically (temporary file, fsync, rename; mode 0600) in
//! the binary format of `mapped` (format 3), which reads use in place; files
//! of format 2 (this image as JSON behind a SHA-256 checksum) are still
//! read. A file that is corrupt, truncated or of another format is refused,
//! never half-read.

use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use uuid::Uuid;

use super::mapped;
use super::replica::{Replica, Row, RowKind};
use crate::domain::key::KeyColumns;
use crate::domain::{KeyDef, Level};

const MAGIC: &str = "policy-values-snapshot";
/// The JSON format still read. 2: keys as their `policy_keys` columns,
/// `position` for `last_seq`.
const JSON_FORMAT: u32 = 2;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("cannot read or write the snapshot file: {0}")]
    Io(#[from] std::io::Error),
    #[error("the snapshot file is not a policy-values snapshot of format 3 (binary) or {JSON_FORMAT} (JSON)")]
    Format,
    #[error("the snapshot file's checksum does not match its contents")]
    Checksum,
    #[error("the snapshot's contents are invalid: {0}")]
    Invalid(String),
}

/// The replica as a document.
#[derive(Debug, Serialize, Deserialize)]
pub struct Image {
    /// Every change up to this position is reflected (later ones may be
    /// too: applying them again changes nothing).
    pub position: i64,
    /// The pruning horizon: the database time of the last value row.
    #[serde(with = "time::serde::rfc3339")]
    pub horizon: OffsetDateTime,
    /// When the image was made.
    #[serde(with = "time::serde::rfc3339")]
    pub written_at: OffsetDateTime,
    /// Every key's definition, as its `policy_keys` columns.
    pub keys: Vec<KeyColumns>,
    /// Per scope, the row in force and every row scheduled.
    pub rows: Vec<ImageRow>,
}

/// A set row (`value` given) or a removal in force (`value: null`).
#[derive(Debug, Serialize, Deserialize)]
pub struct ImageRow {
    /// The row's position.
    pub seq: i64,
    /// The row's id.
    pub id: Uuid,
    /// The policy key.
    pub key: String,
    /// `user`, `project`, `org`, `plan` or `global`.
    pub level: String,
    /// The id at that level (`""` for global).
    pub scope_id: String,
    /// The value; `None` for a removal in force.
    pub value: Option<serde_json::Value>,
    /// When it takes effect.
    #[serde(with = "time::serde::rfc3339")]
    pub effective_at: OffsetDateTime,
}

/// What an image restores.
pub struct Restored {
    pub catalog: Vec<KeyDef>,
    pub rows: Vec<Row>,
    pub last_seq: i64,
    pub horizon: OffsetDateTime,
    pub written_at: OffsetDateTime,
}

impl Image {
    /// The replica's contents, labelled with `position` and `horizon`
    /// (read before the contents, so the image holds at least that much).
    pub fn of(replica: &Replica, position: i64, horizon: OffsetDateTime) -> Image {
        let mut keys = Vec::new();
        let mut rows = Vec::new();
        replica.for_each_key(|state| {
            keys.push(KeyColumns::from_def(&state.def));
            rows.extend(state.entries().map(|(level, scope_id, e)| ImageRow {
                seq: e.seq,
                id: e.id,
                key: state.def.key.to_string(),
                level: level.as_str().to_string(),
                scope_id: scope_id.to_string(),
                value: e.value.as_ref().map(|v| v.to_json()),
                effective_at: e.effective_at,
            }));
        });
        keys.sort_by(|a, b| a.key.cmp(&b.key));
        rows.sort_by_key(|r| r.seq);
        Image { position, horizon, written_at: OffsetDateTime::now_utc(), keys, rows }
    }

    /// Checks every definition and row, for installing.
    pub fn restore(self) -> Result<Restored, SnapshotError> {
        let catalog = self
            .keys
            .into_iter()
            .map(|k| k.into_def().map_err(SnapshotError::Invalid))
            .collect::<Result<Vec<_>, _>>()?;
        let rows = self
            .rows
            .into_iter()
            .map(|r| {
                let level =
                    Level::parse(&r.level).ok_or_else(|| SnapshotError::Invalid(format!("level {:?}", r.level)))?;
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
        Ok(Restored { catalog, rows, last_seq: self.position, horizon: self.horizon, written_at: self.written_at })
    }
}

/// Writes the replica to `path` atomically, in the binary format: a reader
/// sees the old file or the new one, never a mix.
pub fn write(path: &Path, replica: &Replica, last_seq: i64, horizon: OffsetDateTime) -> Result<(), SnapshotError> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options.open(&tmp).map_err(SnapshotError::from).and_then(|file| {
        let file = mapped::write_to(file, replica, last_seq, horizon)?;
        file.sync_all()?;
        Ok(())
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// A snapshot file, checked and ready to install.
pub enum Opened {
    /// A binary file, mapped: readable in place at once.
    InPlace(mapped::Snapshot),
    /// A JSON file of format 2: its rows, to build the replica from.
    Restored(Restored),
}

/// Opens and checks a snapshot file of either format.
pub fn open(path: &Path) -> Result<Opened, SnapshotError> {
    if mapped::is_binary(path)? {
        return Ok(Opened::InPlace(mapped::open(path)?));
    }
    read_json(path).map(Opened::Restored)
}

/// Reads and checks a JSON snapshot file (format 2).
pub fn read_json(path: &Path) -> Result<Restored, SnapshotError> {
    let bytes = std::fs::read(path)?;
    let newline = bytes.iter().position(|&b| b == b'\n').ok_or(SnapshotError::Format)?;
    let header = std::str::from_utf8(&bytes[..newline]).map_err(|_| SnapshotError::Format)?;
    let body = &bytes[newline + 1..];
    let expected = format!("{MAGIC} {JSON_FORMAT} sha256=");
    let checksum = header.strip_prefix(&expected).ok_or(SnapshotError::Format)?;
    if checksum != hex::encode(Sha256::digest(body)) {
        return Err(SnapshotError::Checksum);
    }
    let image: Image = serde_json::from_slice(body).map_err(|e| SnapshotError::Invalid(e.to_string()))?;
    image.restore()
}
