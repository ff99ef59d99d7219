//! The one resolution rule, shared by the store, the server and the client:
//! most specific level first (user → project → org → plan → global), and at
//! each level the entry with the latest `effective_at <= at` (ties: latest
//! seq); a tombstone means "not set here"; nothing set anywhere means the
//! catalog default.

use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

use super::key::{KeyDef, ValueType};
use super::scope::{Level, Scope, ScopeKey};
use super::value::Value;

/// One set or unset row of a (key, level, scope id) history. `value: None`
/// is a tombstone. Cancelled rows never appear in a history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The row's position in the store (ties of `effective_at` go to the higher).
    pub seq: i64,
    /// The value row's id.
    pub id: Uuid,
    /// When it takes effect.
    pub effective_at: OffsetDateTime,
    /// The value, or `None` for a tombstone (the override was removed).
    pub value: Option<Value>,
}

/// The entry in effect at `at` in a history sorted by `(effective_at, seq)`.
/// `at: None` means "every entry is already in effect", so the last one wins
/// without reading a clock (the client's fast path when nothing is scheduled).
pub fn entry_at(history: &[Entry], at: Option<OffsetDateTime>) -> Option<&Entry> {
    let in_effect = match at {
        Some(at) => history.partition_point(|e| e.effective_at <= at),
        None => history.len(),
    };
    in_effect.checked_sub(1).map(|i| &history[i])
}

/// Which level gave the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Winner<'a> {
    /// A value row stored at a level.
    Row {
        /// The level that held it.
        level: Level,
        /// The row in effect there.
        entry: &'a Entry,
    },
    /// No level held a value: the catalog default.
    Default,
}

/// An answer, borrowed from the histories it was resolved from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolved<'a> {
    /// The value in force.
    pub value: &'a Value,
    /// Where it came from.
    pub winner: Winner<'a>,
}

/// Resolves `def` for `scope` at `at` (see `entry_at` for `None`).
/// `history(level, scope_id)` gives the sorted history stored at that level
/// for that id, if any.
pub fn resolve<'a, H>(def: &'a KeyDef, scope: &Scope, at: Option<OffsetDateTime>, history: H) -> Resolved<'a>
where
    H: Fn(Level, ScopeKey<'_>) -> Option<&'a [Entry]>,
{
    for level in Level::ORDER {
        let Some(key) = scope.key(level) else {
            continue;
        };
        let entry = history(level, key).and_then(|h| entry_at(h, at));
        if let Some(entry @ Entry { value: Some(value), .. }) = entry {
            return Resolved { value, winner: Winner::Row { level, entry } };
        }
    }
    Resolved { value: &def.default, winner: Winner::Default }
}

/// What one level held when a key was resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LevelState {
    /// The caller did not give an id for this level.
    NotProvided,
    /// Nothing was ever stored here (as of the time asked).
    NotSet,
    /// An override was removed here (a tombstone is in effect).
    Removed,
    /// A value is in effect here.
    Set,
    /// The catalog default (the last step).
    Default,
}

/// What one level held when a key was resolved, as `explain` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LevelReport {
    /// `user`, `project`, `org`, `plan`, `global` or `default`.
    pub level: &'static str,
    /// The caller's id at this level (`""` for global; none where not given
    /// and for the default).
    pub scope_id: Option<String>,
    /// What the level held.
    pub state: LevelState,
    /// The value in effect there (the default's value for `default`).
    pub value: Option<Value>,
    /// The value row in effect there (a tombstone's id for `removed`).
    pub value_id: Option<Uuid>,
    /// When that row took effect.
    #[serde(with = "time::serde::rfc3339::option")]
    pub effective_at: Option<OffsetDateTime>,
    /// Whether this level gave the answer (exactly one does).
    pub won: bool,
}

/// Every level consulted, in order, with what it held; the last entry is the
/// catalog default. Exactly one entry has `won: true`, the one `resolve` picks.
pub fn explain<'a, H>(def: &'a KeyDef, scope: &Scope, at: Option<OffsetDateTime>, history: H) -> Vec<LevelReport>
where
    H: Fn(Level, ScopeKey<'_>) -> Option<&'a [Entry]>,
{
    let mut reports = Vec::with_capacity(Level::ORDER.len() + 1);
    let mut decided = false;
    for level in Level::ORDER {
        let Some(key) = scope.key(level) else {
            reports.push(report(level.as_str(), None, LevelState::NotProvided, None, false));
            continue;
        };
        let entry = history(level, key).and_then(|h| entry_at(h, at));
        let state = match entry {
            None => LevelState::NotSet,
            Some(Entry { value: None, .. }) => LevelState::Removed,
            Some(Entry { value: Some(_), .. }) => LevelState::Set,
        };
        let won = state == LevelState::Set && !decided;
        decided |= won;
        reports.push(report(level.as_str(), Some(key.id.to_string()), state, entry, won));
    }
    let mut default = report("default", None, LevelState::Default, None, !decided);
    default.value = Some(def.default.clone());
    reports.push(default);
    reports
}

fn report(
    level: &'static str,
    scope_id: Option<String>,
    state: LevelState,
    entry: Option<&Entry>,
    won: bool,
) -> LevelReport {
    LevelReport {
        level,
        scope_id,
        state,
        value: entry.and_then(|e| e.value.clone()),
        value_id: entry.map(|e| e.id),
        effective_at: entry.map(|e| e.effective_at),
        won,
    }
}

/// Where an answer came from: the winning row, or the catalog default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Source {
    /// `user`, `project`, `org`, `plan`, `global` or `default`.
    pub level: &'static str,
    /// The caller's id at that level (`""` for global, none for the default).
    pub scope_id: Option<String>,
    /// The value row that won (none for the default).
    pub value_id: Option<Uuid>,
    /// When that row took effect (none for the default).
    #[serde(with = "time::serde::rfc3339::option")]
    pub effective_at: Option<OffsetDateTime>,
}

impl Source {
    /// The source of an answer resolved for `scope`.
    pub fn of(resolved: &Resolved<'_>, scope: &Scope) -> Source {
        match resolved.winner {
            Winner::Row { level, entry } => Source {
                level: level.as_str(),
                scope_id: scope.id(level).map(str::to_string),
                value_id: Some(entry.id),
                effective_at: Some(entry.effective_at),
            },
            Winner::Default => Source { level: "default", scope_id: None, value_id: None, effective_at: None },
        }
    }
}

/// An owned, explained answer, as the resolve endpoint returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Resolution {
    /// The key resolved.
    pub key: String,
    /// Its type (`type` in JSON).
    #[serde(rename = "type")]
    pub value_type: ValueType,
    /// The answer.
    pub value: Value,
    /// The level and row that gave it.
    pub source: Source,
    /// Every level consulted, most specific first, then the default.
    pub explain: Vec<LevelReport>,
}

/// `resolve` and `explain` together, owned.
pub fn resolution<'a, H>(def: &'a KeyDef, scope: &Scope, at: Option<OffsetDateTime>, history: H) -> Resolution
where
    H: Fn(Level, ScopeKey<'_>) -> Option<&'a [Entry]> + Copy,
{
    let resolved = resolve(def, scope, at, history);
    let source = Source::of(&resolved, scope);
    Resolution {
        key: def.key.to_string(),
        value_type: def.value_type,
        value: resolved.value.clone(),
        source,
        explain: explain(def, scope, at, history),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::key::{Bounds, PolicyKey, ValueType};
    use time::macros::datetime;

    fn def() -> KeyDef {
        KeyDef {
            key: PolicyKey::parse("allocation.refund_window_days").unwrap(),
            value_type: ValueType::Int,
            default: Value::Int(30),
            bounds: Bounds::Int { min: 0, max: 365 },
            description: String::new(),
            unit: String::new(),
            fail_closed: false,
            approvals_required: 0,
        }
    }

    fn entry(seq: i64, at: OffsetDateTime, value: Option<i64>) -> Entry {
        Entry { seq, id: Uuid::from_u64_pair(0, seq as u64), effective_at: at, value: value.map(Value::Int) }
    }

    #[test]
    fn the_latest_effective_entry_wins_and_ties_go_to_the_latest_seq() {
        let t = datetime!(2026-06-01 0:00 UTC);
        let history = [entry(1, t, Some(1)), entry(2, t, Some(2)), entry(3, t + time::Duration::DAY, Some(3))];
        assert_eq!(entry_at(&history, Some(t - time::Duration::SECOND)), None);
        assert_eq!(entry_at(&history, Some(t)).map(|e| e.seq), Some(2));
        assert_eq!(entry_at(&history, Some(t + time::Duration::DAY)).map(|e| e.seq), Some(3));
    }

    #[test]
    fn the_most_specific_set_level_wins_and_a_tombstone_falls_through() {
        let t = datetime!(2026-06-01 0:00 UTC);
        let org = [entry(1, t, Some(45))];
        let user = [entry(2, t, Some(7)), entry(3, t + time::Duration::HOUR, None)];
        let def = def();
        let lookup = |level: Level, key: ScopeKey<'_>| match (level, key.id) {
            (Level::Org, "acme") => Some(&org[..]),
            (Level::User, "u1") => Some(&user[..]),
            _ => None,
        };
        let scope = Scope::new().user("u1").org("acme");
        assert_eq!(resolve(&def, &scope, Some(t), lookup).value, &Value::Int(7));
        let later = resolve(&def, &scope, Some(t + time::Duration::HOUR), lookup);
        assert_eq!(later.value, &Value::Int(45));
        assert!(matches!(later.winner, Winner::Row { level: Level::Org, .. }));
        let before = resolve(&def, &scope, Some(t - time::Duration::HOUR), lookup);
        assert_eq!((before.value, before.winner), (&Value::Int(30), Winner::Default));

        let explained = explain(&def, &scope, Some(t + time::Duration::HOUR), lookup);
        let states: Vec<_> = explained.iter().map(|r| (r.level, r.state, r.won)).collect();
        assert_eq!(
            states,
            [
                ("user", LevelState::Removed, false),
                ("project", LevelState::NotProvided, false),
                ("org", LevelState::Set, true),
                ("plan", LevelState::NotProvided, false),
                ("global", LevelState::NotSet, false),
                ("default", LevelState::Default, false),
            ]
        );
    }
}
