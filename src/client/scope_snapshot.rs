//! The per-scope snapshot document, built from the replica with no database
//! round trip: every key resolved for one scope at one position. The server
//! answers `GET /api/v1/policy-values/snapshot` with it; its tag
//! (`SnapshotTag`) can be checked before the document is built.

use time::OffsetDateTime;

use super::{PolicyClient, PolicyError};
use crate::domain::snapshot::{none_match, NoneMatch};
use crate::domain::{Scope, Snapshot, SnapshotTag, SnapshotValue, Source};

impl PolicyClient {
    /// Every key resolved for `scope` now, with the position it reflects and
    /// its tag. Reads all keys at one position (`Replica::consistent`). A
    /// fail-closed key with no known value makes the whole document
    /// unavailable, as reading that key would be.
    pub fn snapshot(&self, scope: &Scope) -> Result<(Snapshot, SnapshotTag), PolicyError> {
        let now = OffsetDateTime::now_utc();
        let replica = &self.shared.replica;
        replica.consistent(|| {
            let version = self.shared.last_seq();
            let mut values = Vec::with_capacity(32);
            let mut next_change_at: Option<OffsetDateTime> = None;
            let mut unavailable = None;
            replica.for_each_key(|state| {
                if self.shared.check_available(&state.def).is_err() {
                    unavailable = Some(state.def.key.to_string());
                    return;
                }
                // As `get` does: no clock when nothing is pending.
                let at = state.next_change.map(|_| now);
                let resolved = state.resolve(scope, at);
                let value = SnapshotValue {
                    value_type: state.def.value_type,
                    value: resolved.value.clone(),
                    source: Source::of(&resolved, scope),
                };
                values.push((state.def.key.to_string(), value));
                if let Some(next) = state.next_change_for(scope, now) {
                    next_change_at = Some(next_change_at.map_or(next, |t| t.min(next)));
                }
            });
            if let Some(key) = unavailable {
                return Err(PolicyError::Unavailable(key));
            }
            values.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            let tag = SnapshotTag::new(version, replica.catalog_fingerprint(), next_change_at, scope);
            Ok((Snapshot { scope: scope.clone(), version, next_change_at, values }, tag))
        })
    }

    /// Whether the document `tag` names is still the current one for
    /// `scope` (a kept copy may be served).
    pub fn snapshot_tag_current(&self, tag: &SnapshotTag, scope: &Scope) -> bool {
        let (version, catalog) = self.snapshot_position();
        tag.still_current(version, catalog, scope, OffsetDateTime::now_utc())
    }

    /// Whether a snapshot tag the caller holds (`If-None-Match`) still names
    /// the current document for `scope`: answered without building it.
    pub fn snapshot_unchanged(&self, if_none_match: &str, scope: &Scope) -> Option<NoneMatch> {
        let (version, catalog) = self.snapshot_position();
        none_match(if_none_match, version, catalog, scope, OffsetDateTime::now_utc())
    }

    /// The position and catalog fingerprint a tag is checked against, read
    /// together.
    fn snapshot_position(&self) -> (i64, u64) {
        let replica = &self.shared.replica;
        replica.consistent(|| (self.shared.last_seq(), replica.catalog_fingerprint()))
    }
}
