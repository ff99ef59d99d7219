//! Snapshot documents kept serialized, per scope, for as long as their tag
//! names the current document (the same position, catalog and scope, and
//! the scope's next scheduled change not yet due). A fleet asks for the
//! same few scopes again and again; each asks for a document only when its
//! own copy went stale, so between two changes the document of a scope is
//! built once, not once per caller.

use axum::body::Bytes;
use dashmap::DashMap;

use crate::client::PolicyClient;
use crate::domain::{Scope, SnapshotTag};

/// Scopes kept at most; past it the cache starts over (a scan of more
/// distinct scopes than this gains nothing from keeping them).
const CAPACITY: usize = 4096;

#[derive(Default)]
pub struct SnapshotCache {
    documents: DashMap<Scope, (SnapshotTag, Bytes)>,
}

impl SnapshotCache {
    /// The serialized document for `scope`, if the one kept is current.
    pub fn get(&self, replica: &PolicyClient, scope: &Scope) -> Option<(SnapshotTag, Bytes)> {
        let kept = self.documents.get(scope)?;
        let (tag, body) = kept.value();
        replica.snapshot_tag_current(tag, scope).then(|| (*tag, body.clone()))
    }

    pub fn put(&self, scope: Scope, tag: SnapshotTag, body: Bytes) {
        if self.documents.len() >= CAPACITY && !self.documents.contains_key(&scope) {
            self.documents.clear();
        }
        self.documents.insert(scope, (tag, body));
    }
}
