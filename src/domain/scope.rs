//! Scopes: what a caller knows (`Scope`, any of user, project, org, plan) and
//! where a write lands (`WriteScope`, exactly one level or global).

use serde::{Serialize, Serializer};

/// A level of resolution, most specific first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    /// One user (`user_id`).
    User,
    /// One project (`project_id`).
    Project,
    /// One organisation (`org_id`).
    Org,
    /// Everyone on one plan (`plan`).
    Plan,
    /// Everyone: the admin-set global value (the catalog default stands below it).
    Global,
}

impl Level {
    /// Resolution order: most specific wins.
    pub const ORDER: [Level; 5] = [Level::User, Level::Project, Level::Org, Level::Plan, Level::Global];

    /// Position in `ORDER`, for arrays indexed by level.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The level's name: `user`, `project`, `org`, `plan` or `global`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::User => "user",
            Level::Project => "project",
            Level::Org => "org",
            Level::Plan => "plan",
            Level::Global => "global",
        }
    }

    /// The level named `raw` (`org`), if any.
    pub fn parse(raw: &str) -> Option<Level> {
        Level::ORDER.into_iter().find(|l| l.as_str() == raw)
    }

    /// The scope field that names an id at this level (`org_id`); none for global.
    pub fn field(self) -> Option<&'static str> {
        match self {
            Level::User => Some("user_id"),
            Level::Project => Some("project_id"),
            Level::Org => Some("org_id"),
            Level::Plan => Some("plan"),
            Level::Global => None,
        }
    }

    /// The level whose scope field is `field` (`org_id` → `Org`), if any.
    pub fn from_field(field: &str) -> Option<Level> {
        Level::ORDER.into_iter().find(|l| l.field() == Some(field))
    }
}

impl Serialize for Level {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a scope was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    /// A field other than `user_id`, `project_id`, `org_id` or `plan`.
    #[error("unknown scope field {0:?}; expected user_id, project_id, org_id or plan")]
    UnknownField(String),
    /// An id that is empty, over 256 characters, or holds a control character
    /// (the field's name).
    #[error("scope field {0} must be a non-empty string of at most 256 characters without control characters")]
    InvalidId(&'static str),
    /// A write scope with more than one level, or an id for the global level.
    #[error("a write scope names exactly one of user_id, project_id, org_id, plan, or is {{}} for global")]
    NotOneLevel,
    /// A scope given as JSON that is not an object.
    #[error("scope must be a JSON object")]
    NotAnObject,
}

/// Checks a scope id: non-empty, at most 256 characters, no control characters.
pub fn valid_scope_id(id: &str) -> bool {
    !id.is_empty() && id.chars().count() <= 256 && !id.chars().any(char::is_control)
}

/// The hash of a scope id, computed once when a scope is built, so a
/// lookup in the client's replica compares 64-bit hashes before strings.
pub fn scope_hash(id: &str) -> u64 {
    use std::hash::BuildHasher;
    foldhash::quality::FixedState::with_seed(0x7076_5f73_636f_7065).hash_one(id)
}

/// One scope id with its hash.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ScopeId {
    id: String,
    hash: u64,
}

impl ScopeId {
    fn new(id: String) -> ScopeId {
        let hash = scope_hash(&id);
        ScopeId { id, hash }
    }
}

/// A scope id as resolution sees it: the id and its precomputed hash
/// (`0` for global, which needs no lookup by id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScopeKey<'a> {
    /// The id (`""` for global).
    pub id: &'a str,
    /// Its hash (`scope_hash`).
    pub hash: u64,
}

/// What a caller knows about itself. Built fluently; resolution tries the
/// levels it names from the most specific, then the global level, then the
/// catalog default.
///
/// ```
/// use policy_values::{Level, Scope};
///
/// let scope = Scope::new().user("u1").org("acme").plan("pro");
/// assert_eq!(scope.id(Level::Org), Some("acme"));
/// assert_eq!(scope.id(Level::Project), None); // not given: skipped
/// assert_eq!(scope.id(Level::Global), Some("")); // always consulted
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Scope {
    /// Indexed by `Level::index()`: user, project, org, plan.
    ids: [Option<ScopeId>; 4],
}

impl Scope {
    /// A scope that names no level: only the global value and the default apply.
    pub fn new() -> Scope {
        Scope::default()
    }

    fn set(mut self, level: Level, id: String) -> Scope {
        self.ids[level.index()] = Some(ScopeId::new(id));
        self
    }

    /// With the user `id`. Ids are not checked here (a caller's own ids are
    /// trusted); `with` checks them, as the server does for requests.
    pub fn user(self, id: impl Into<String>) -> Scope {
        self.set(Level::User, id.into())
    }

    /// With the project `id`.
    pub fn project(self, id: impl Into<String>) -> Scope {
        self.set(Level::Project, id.into())
    }

    /// With the organisation `id`.
    pub fn org(self, id: impl Into<String>) -> Scope {
        self.set(Level::Org, id.into())
    }

    /// With the plan `name`.
    pub fn plan(self, name: impl Into<String>) -> Scope {
        self.set(Level::Plan, name.into())
    }

    /// Sets the id at `level` after validating it (used when parsing requests).
    pub fn with(self, level: Level, id: &str) -> Result<Scope, ScopeError> {
        let field = level.field().ok_or(ScopeError::NotOneLevel)?;
        if !valid_scope_id(id) {
            return Err(ScopeError::InvalidId(field));
        }
        Ok(self.set(level, id.to_string()))
    }

    /// The id this scope holds at `level`: `""` for global, `None` where the
    /// caller did not say.
    pub fn id(&self, level: Level) -> Option<&str> {
        self.key(level).map(|k| k.id)
    }

    /// The id and its hash at `level`, as resolution looks it up.
    pub fn key(&self, level: Level) -> Option<ScopeKey<'_>> {
        match level {
            Level::Global => Some(ScopeKey { id: "", hash: 0 }),
            _ => self.ids[level.index()].as_ref().map(|s| ScopeKey { id: &s.id, hash: s.hash }),
        }
    }
}

impl Serialize for Scope {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let present: Vec<(&str, &str)> =
            Level::ORDER.into_iter().filter_map(|l| Some((l.field()?, self.id(l)?))).collect();
        let mut map = serializer.serialize_map(Some(present.len()))?;
        for (field, id) in present {
            map.serialize_entry(field, id)?;
        }
        map.end()
    }
}

/// Where a write lands: one level and its id, or global (id `""`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WriteScope {
    level: Level,
    id: String,
}

impl WriteScope {
    /// The global level (`{}`).
    pub fn global() -> WriteScope {
        WriteScope { level: Level::Global, id: String::new() }
    }

    /// The level `level` with the id `id`, checked; `Level::Global` takes
    /// the id `""`.
    ///
    /// ```
    /// use policy_values::{Level, ScopeError, WriteScope};
    ///
    /// let acme = WriteScope::at(Level::Org, "acme")?;
    /// assert_eq!(acme.to_json(), serde_json::json!({"org_id": "acme"}));
    /// assert_eq!(WriteScope::at(Level::Global, "")?, WriteScope::global());
    /// assert_eq!(WriteScope::at(Level::Org, ""), Err(ScopeError::InvalidId("org_id")));
    /// # Ok::<(), ScopeError>(())
    /// ```
    pub fn at(level: Level, id: &str) -> Result<WriteScope, ScopeError> {
        match level.field() {
            None if id.is_empty() => Ok(WriteScope::global()),
            None => Err(ScopeError::NotOneLevel),
            Some(field) if !valid_scope_id(id) => Err(ScopeError::InvalidId(field)),
            Some(_) => Ok(WriteScope { level, id: id.to_string() }),
        }
    }

    /// Parses the JSON form: `{}` or exactly one of the four fields.
    pub fn from_json(json: &serde_json::Value) -> Result<WriteScope, ScopeError> {
        let object = json.as_object().ok_or(ScopeError::NotAnObject)?;
        let mut entries = object.iter();
        let Some((field, id)) = entries.next() else {
            return Ok(WriteScope::global());
        };
        let level = Level::from_field(field).ok_or_else(|| ScopeError::UnknownField(field.clone()))?;
        if let Some((other, _)) = entries.next() {
            return Err(match Level::from_field(other) {
                Some(_) => ScopeError::NotOneLevel,
                None => ScopeError::UnknownField(other.clone()),
            });
        }
        let id = id.as_str().ok_or(ScopeError::InvalidId(level.field().unwrap_or("scope")))?;
        WriteScope::at(level, id)
    }

    /// The level written to.
    pub fn level(&self) -> Level {
        self.level
    }

    /// The id at that level (`""` for global).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The JSON form, `{"org_id": "acme"}` or `{}`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        if let Some(field) = self.level.field() {
            map.insert(field.to_string(), serde_json::Value::String(self.id.clone()));
        }
        serde_json::Value::Object(map)
    }
}

impl Serialize for WriteScope {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_write_scope_is_empty_for_global_or_names_exactly_one_level() {
        assert_eq!(WriteScope::from_json(&json!({})), Ok(WriteScope::global()));
        let org = WriteScope::from_json(&json!({"org_id": "acme"})).unwrap();
        assert_eq!((org.level(), org.id()), (Level::Org, "acme"));
        assert_eq!(WriteScope::from_json(&json!({"org_id": "a", "user_id": "b"})), Err(ScopeError::NotOneLevel));
        assert_eq!(WriteScope::from_json(&json!({"team_id": "a"})), Err(ScopeError::UnknownField("team_id".into())));
        assert_eq!(WriteScope::from_json(&json!({"org_id": ""})), Err(ScopeError::InvalidId("org_id")));
        assert_eq!(WriteScope::from_json(&json!({"org_id": 7})), Err(ScopeError::InvalidId("org_id")));
        assert_eq!(WriteScope::from_json(&json!({"org_id": "a\nb"})), Err(ScopeError::InvalidId("org_id")));
        assert_eq!(WriteScope::from_json(&json!(["org_id"])), Err(ScopeError::NotAnObject));
    }

    #[test]
    fn a_read_scope_serializes_only_what_the_caller_gave() {
        let scope = Scope::new().user("u1").plan("pro");
        assert_eq!(serde_json::to_value(&scope).unwrap(), json!({"user_id": "u1", "plan": "pro"}));
        assert_eq!(scope.id(Level::Global), Some(""));
        assert_eq!(scope.id(Level::Org), None);
    }
}
