//! Validated domain types and the resolution rule; no I/O.

#![warn(missing_docs)]

pub mod bundle;
pub mod catalog;
pub mod key;
pub mod resolve;
pub mod scope;
pub mod snapshot;
pub mod value;

pub use catalog::{Catalog, CatalogError};
pub use key::{Bounds, ItemPattern, ItemRule, KeyDef, PolicyKey, ValueType};
pub use resolve::{Entry, LevelReport, LevelState, Resolution, Resolved, Source, Winner};
pub use scope::{Level, Scope, ScopeError, WriteScope};
pub use snapshot::{Snapshot, SnapshotTag, SnapshotValue};
pub use value::{Value, ValueError};
