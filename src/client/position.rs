//! Where a scope's answers stand in the store: the newest row in force that
//! resolving some keys for one scope consults. It moves with every write
//! that can change one of those answers and with no other, which is what a
//! policy bundle's version needs (docs/bundles.md).

use time::OffsetDateTime;

use super::PolicyClient;
use crate::domain::resolve::entry_at;
use crate::domain::{Level, Scope};

/// The newest row in force among those consulted for a scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScopePosition {
    /// The highest position (`seq`) of a row in force at a consulted level,
    /// tombstones included; 0 when every answer is a catalog default.
    pub seq: i64,
    /// The latest `effective_at` among those rows, if any.
    pub effective_at: Option<OffsetDateTime>,
}

impl PolicyClient {
    /// The newest rows in force, now, at every level of `scope` for each of
    /// `keys` (unknown keys are skipped). A write at one of those levels
    /// raises `seq`; a scheduled row that takes effect raises `effective_at`.
    pub fn scope_position<'k>(&self, scope: &Scope, keys: impl IntoIterator<Item = &'k str>) -> ScopePosition {
        let mut position = ScopePosition { seq: 0, effective_at: None };
        for key in keys {
            let Some(slot) = self.shared.replica.slot(key) else {
                continue;
            };
            let state = slot.read();
            let now = state.now();
            for level in Level::ORDER {
                let Some(scope_key) = scope.key(level) else {
                    continue;
                };
                let Some(entry) = state.history(level, scope_key).and_then(|h| entry_at(h, now)) else {
                    continue;
                };
                position.seq = position.seq.max(entry.seq);
                position.effective_at = position.effective_at.max(Some(entry.effective_at));
            }
        }
        position
    }
}
