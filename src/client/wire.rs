//! The store's changes as they travel: one ordered stream of value rows and
//! catalog definitions, each at its position (the global `seq`). The
//! database source reads them (`seq > N`), the server publishes them as its
//! change feed, and a client following the servers applies them; all three
//! use these types and `apply`.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::replica::{AppliedRow, Row, RowKind};
use super::Shared;
use crate::domain::key::KeyColumns;
use crate::domain::Level;

/// What a value row does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordKind {
    /// Sets a value.
    Set,
    /// Removes the override (a tombstone).
    Unset,
    /// Cancels a scheduled row (`cancels_seq`).
    Cancel,
}

/// A value row: a set, a removal (tombstone) or the cancellation of a
/// scheduled row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValueRecord {
    /// The row's position.
    pub seq: i64,
    /// The row's id.
    pub id: Uuid,
    /// What the row does.
    pub kind: RecordKind,
    /// The policy key.
    pub key: String,
    /// `user`, `project`, `org`, `plan` or `global`.
    pub level: String,
    /// The id at that level (`""` for global).
    pub scope_id: String,
    /// The value set; `None` for a removal or a cancellation.
    pub value: Option<serde_json::Value>,
    /// When the row takes effect.
    #[serde(with = "time::serde::rfc3339")]
    pub effective_at: OffsetDateTime,
    /// For a cancellation: the position of the row it cancels.
    pub cancels_seq: Option<i64>,
    /// The database time of the commit: the pruning horizon once applied.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// A key's definition after a catalog change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// The change's position.
    pub seq: i64,
    /// The key's whole definition after the change.
    pub definition: KeyColumns,
    /// The database time of the commit.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// One change at its position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ChangeRecord {
    /// A value row.
    Value(ValueRecord),
    /// A catalog definition.
    Key(KeyRecord),
}

impl ChangeRecord {
    /// The change's position.
    pub fn seq(&self) -> i64 {
        match self {
            ChangeRecord::Value(v) => v.seq,
            ChangeRecord::Key(k) => k.seq,
        }
    }

    /// The database time of its commit.
    pub fn created_at(&self) -> OffsetDateTime {
        match self {
            ChangeRecord::Value(v) => v.created_at,
            ChangeRecord::Key(k) => k.created_at,
        }
    }
}

impl ValueRecord {
    /// The row the replica applies; `None` if the record is malformed.
    pub fn to_row(&self) -> Option<Row> {
        let kind = match (self.kind, self.cancels_seq) {
            (RecordKind::Set, _) => RowKind::Set,
            (RecordKind::Unset, _) => RowKind::Unset,
            (RecordKind::Cancel, Some(cancels_seq)) => RowKind::Cancel { cancels_seq },
            (RecordKind::Cancel, None) => return None,
        };
        Some(Row {
            seq: self.seq,
            id: self.id,
            kind,
            key: self.key.clone(),
            level: Level::parse(&self.level)?,
            scope_id: self.scope_id.clone(),
            value: self.value.clone(),
            effective_at: self.effective_at,
        })
    }
}

/// Something that wants every change the replica applies, in order (the
/// server's change feed).
pub trait ChangeObserver: Send + Sync + 'static {
    /// The replica was loaded whole, complete up to `position` (at start,
    /// or after losing track); changes after it follow.
    fn loaded(&self, position: i64);
    /// One change was applied.
    fn applied(&self, change: &ChangeRecord);
}

/// Why a change could not be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyError {
    /// A value row of a key this replica does not know, or whose value does
    /// not fit the key's type as known here: the catalog is behind.
    UnknownKey(String),
    /// The record itself is malformed.
    Malformed(String),
}

/// Applies one change to the replica with the position that goes with it,
/// as one step for readers of the whole replica (`Replica::consistent`),
/// tells subscribers and the observer, and moves the pruning horizon.
pub(crate) fn apply(shared: &Shared, change: &ChangeRecord) -> Result<(), ApplyError> {
    let applied = {
        let _changing = shared.replica.changing();
        let applied = apply_locked(shared, change)?;
        shared.set_last_seq(change.seq());
        shared.set_horizon(change.created_at());
        applied
    };
    if let Some(applied) = applied {
        let _ = shared.events.send(applied);
    }
    if let Some(observer) = shared.observer.get() {
        observer.applied(change);
    }
    Ok(())
}

fn apply_locked(shared: &Shared, change: &ChangeRecord) -> Result<Option<AppliedRow>, ApplyError> {
    match change {
        ChangeRecord::Key(k) => {
            let def = k.definition.clone().into_def().map_err(ApplyError::Malformed)?;
            shared.replica.define(def);
            Ok(None)
        }
        ChangeRecord::Value(v) => {
            let row = v.to_row().ok_or_else(|| ApplyError::Malformed(format!("value row {}", v.seq)))?;
            match shared.replica.apply(&row, v.created_at) {
                Some(applied) => Ok(Some(applied)),
                None => Err(ApplyError::UnknownKey(v.key.clone())),
            }
        }
    }
}
