//! The per-scope snapshot document (`GET /api/v1/policy-values/snapshot`):
//! every key resolved for one scope, with the store position it reflects,
//! and the ETag that names it without building it.

use serde::Serialize;
use time::OffsetDateTime;

use super::key::ValueType;
use super::resolve::Source;
use super::scope::{Level, Scope};
use super::value::Value;

/// Every key resolved for one scope, with the version (last applied seq) it
/// reflects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    /// The scope every key was resolved for.
    pub scope: Scope,
    /// The store position: the last applied `seq`.
    pub version: i64,
    /// The next scheduled change that touches this scope, if any: the
    /// document changes then without a new version.
    #[serde(with = "time::serde::rfc3339::option")]
    pub next_change_at: Option<OffsetDateTime>,
    /// Sorted by key; serialized as a JSON object.
    #[serde(serialize_with = "as_map")]
    pub values: Vec<(String, SnapshotValue)>,
}

fn as_map<S: serde::Serializer>(values: &[(String, SnapshotValue)], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_map(values.iter().map(|(k, v)| (k, v)))
}

/// One key's answer in a snapshot document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotValue {
    /// The key's type (`type` in JSON).
    #[serde(rename = "type")]
    pub value_type: ValueType,
    /// The resolved value.
    pub value: Value,
    /// The level and row that gave it.
    pub source: Source,
}

/// What a snapshot document is a function of, besides the clock: the store
/// position, the catalog, the scope, and the next scheduled change touching
/// the scope. Two documents with equal tags are equal for as long as the
/// clock stays before `next_change_at`, on any server following the same
/// database, so a tag can be checked before any document is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotTag {
    /// The store position the document reflects.
    pub version: i64,
    /// Unix nanoseconds of `next_change_at`, or 0 for none.
    pub next_change_ns: i128,
    /// A digest of the version, the catalog fingerprint, `next_change_ns`
    /// and the scope.
    pub digest: u64,
}

impl SnapshotTag {
    /// The tag of the document for `scope` at `version`, under the catalog
    /// whose fingerprint is `catalog`.
    pub fn new(version: i64, catalog: u64, next_change_at: Option<OffsetDateTime>, scope: &Scope) -> SnapshotTag {
        let next_change_ns = next_change_at.map_or(0, OffsetDateTime::unix_timestamp_nanos);
        SnapshotTag { version, next_change_ns, digest: digest(version, catalog, next_change_ns, scope) }
    }

    /// The ETag header value: `W/"<version>.<next change ns>.<digest>"`
    /// (weak: gzip and identity bodies share it).
    pub fn etag(&self) -> String {
        format!("W/\"{}.{}.{:016x}\"", self.version, self.next_change_ns, self.digest)
    }

    /// Parses a tag this format wrote (weak or strong); `None` otherwise.
    pub fn parse(raw: &str) -> Option<SnapshotTag> {
        let raw = raw.trim();
        let quoted = raw.strip_prefix("W/").unwrap_or(raw);
        let inner = quoted.strip_prefix('"')?.strip_suffix('"')?;
        let mut parts = inner.split('.');
        let version = parts.next()?.parse().ok()?;
        let next_change_ns = parts.next()?.parse().ok()?;
        let digest = u64::from_str_radix(parts.next()?, 16).ok()?;
        parts.next().is_none().then_some(SnapshotTag { version, next_change_ns, digest })
    }

    /// Whether the document this tag names is still the current one: the
    /// same position and catalog, the same scope, and its next change not
    /// yet due.
    pub fn still_current(&self, version: i64, catalog: u64, scope: &Scope, now: OffsetDateTime) -> bool {
        self.version == version
            && (self.next_change_ns == 0 || now.unix_timestamp_nanos() < self.next_change_ns)
            && self.digest == digest(version, catalog, self.next_change_ns, scope)
    }
}

/// FNV-1a over the fields: cheap enough to run on every conditional
/// request, and the same in every process and build.
fn digest(version: i64, catalog: u64, next_change_ns: i128, scope: &Scope) -> u64 {
    let mut hash = Fnv::default();
    hash.write(&version.to_be_bytes());
    hash.write(&catalog.to_be_bytes());
    hash.write(&next_change_ns.to_be_bytes());
    for level in Level::ORDER {
        // Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
        let id = scope.id(level);
        hash.write(&[u8::from(id.is_some())]);
        let id = id.unwrap_or_default();
        hash.write(&(id.len() as u64).to_be_bytes());
        hash.write(id.as_bytes());
    }
    hash.0
}

struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

/// What an `If-None-Match` header matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoneMatch {
    /// A tag that still names the current document (send it back).
    Tag(SnapshotTag),
    /// `*`: any current document.
    Any,
}

/// Matches an `If-None-Match` header value against the current document:
/// the first listed tag that is still current, or `*`.
pub fn none_match(header: &str, version: i64, catalog: u64, scope: &Scope, now: OffsetDateTime) -> Option<NoneMatch> {
    header.split(',').map(str::trim).find_map(|t| match t {
        "*" => Some(NoneMatch::Any),
        _ => SnapshotTag::parse(t).filter(|tag| tag.still_current(version, catalog, scope, now)).map(NoneMatch::Tag),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn a_tag_round_trips_and_stays_current_until_its_next_change() {
        let scope = Scope::new().org("acme");
        let next = datetime!(2026-12-01 0:00 UTC);
        let tag = SnapshotTag::new(12, 7, Some(next), &scope);
        let parsed = SnapshotTag::parse(&tag.etag()).unwrap();
        assert_eq!(parsed, tag);
        assert!(parsed.still_current(12, 7, &scope, next - time::Duration::SECOND));
        assert!(!parsed.still_current(12, 7, &scope, next), "the scheduled change is due");
        assert!(!parsed.still_current(13, 7, &scope, next - time::Duration::SECOND), "a newer version");
        assert!(!parsed.still_current(12, 8, &scope, next - time::Duration::SECOND), "another catalog");
        let other = Scope::new().org("acme2");
        assert!(!parsed.still_current(12, 7, &other, next - time::Duration::SECOND), "another scope");
    }

    #[test]
    fn scope_ids_are_hashed_unambiguously() {
        let a = SnapshotTag::new(1, 0, None, &Scope::new().user("ab").org("c"));
        let b = SnapshotTag::new(1, 0, None, &Scope::new().user("a").org("bc"));
        let c = SnapshotTag::new(1, 0, None, &Scope::new().project("ab").org("c"));
        assert_ne!(a.digest, b.digest);
        assert_ne!(a.digest, c.digest);
    }

    #[test]
    fn if_none_match_accepts_a_list_a_star_and_ignores_foreign_tags() {
        let scope = Scope::new();
        let now = datetime!(2026-06-01 0:00 UTC);
        let tag = SnapshotTag::new(3, 0, None, &scope);
        let listed = format!("\"abc\", {}", tag.etag());
        assert_eq!(none_match(&listed, 3, 0, &scope, now), Some(NoneMatch::Tag(tag)));
        assert_eq!(none_match("*", 3, 0, &scope, now), Some(NoneMatch::Any));
        assert_eq!(none_match("\"3.0.0000000000000000\"", 3, 0, &scope, now), None);
        assert_eq!(none_match("W/\"x\"", 3, 0, &scope, now), None);
    }
}
