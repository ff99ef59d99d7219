//! Policy keys: the validated key name, its type, its bounds and its catalog
//! definition.

use serde::{Deserialize, Serialize};

use super::value::{Value, ValueError};

/// A dotted key name such as `allocation.max_concurrent_per_user`: lowercase
/// segments of `[a-z][a-z0-9_]*`, at least two, at most 128 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct PolicyKey(String);

impl PolicyKey {
    /// The key if `raw` is a well-formed name, else `None`.
    ///
    /// ```
    /// use policy_values::PolicyKey;
    ///
    /// assert_eq!(PolicyKey::parse("allocation.refund_window_days").unwrap().as_str(), "allocation.refund_window_days");
    /// assert!(PolicyKey::parse("Allocation.Refund").is_none());
    /// assert!(PolicyKey::parse("nodot").is_none());
    /// ```
    pub fn parse(raw: &str) -> Option<PolicyKey> {
        let segment_ok = |s: &str| {
            let mut chars = s.chars();
            matches!(chars.next(), Some('a'..='z')) && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
        };
        let valid = raw.len() <= 128 && raw.split('.').count() >= 2 && raw.split('.').all(segment_ok);
        valid.then(|| PolicyKey(raw.to_string()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for PolicyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The type a key holds, named `int`, `bool`, `string` or `list` in JSON and TOML.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueType {
    /// A whole number (`i64`).
    Int,
    /// `true` or `false`.
    Bool,
    /// Text, one of the key's enum.
    String,
    /// A list of distinct strings (a JSON array), each allowed by the key's
    /// items rule, at most `max_items` of them.
    List,
}

impl ValueType {
    /// The type's name: `int`, `bool` or `string`.
    pub fn as_str(self) -> &'static str {
        match self {
            ValueType::Int => "int",
            ValueType::Bool => "bool",
            ValueType::String => "string",
            ValueType::List => "list",
        }
    }

    /// The type named `raw`, if any.
    pub fn parse(raw: &str) -> Option<ValueType> {
        match raw {
            "int" => Some(ValueType::Int),
            "bool" => Some(ValueType::Bool),
            "string" => Some(ValueType::String),
            "list" => Some(ValueType::List),
            _ => None,
        }
    }
}

impl std::fmt::Display for ValueType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The longest item pattern a list key may have, in bytes.
pub const ITEM_PATTERN_MAX: usize = 256;
/// The most items a list key may allow (`max_items`).
pub const LIST_MAX_ITEMS: u32 = 1000;

/// A list key's item pattern: a regular expression every item must match
/// as a whole. Kept to the syntax that Rust's `regex` and PostgreSQL's `~`
/// read alike (literals, `[...]` classes, `?*+{m,n}`, `|`, `(...)`, `\.`),
/// since the database checks it too.
#[derive(Clone)]
pub struct ItemPattern {
    source: String,
    whole: regex::Regex,
}

impl ItemPattern {
    /// The pattern, if it compiles and is at most [`ITEM_PATTERN_MAX`] bytes.
    pub fn parse(source: &str) -> Option<ItemPattern> {
        if source.is_empty() || source.len() > ITEM_PATTERN_MAX {
            return None;
        }
        let whole = regex::Regex::new(&format!("^(?:{source})$")).ok()?;
        Some(ItemPattern { source: source.to_string(), whole })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether `item` matches the pattern as a whole.
    pub fn matches(&self, item: &str) -> bool {
        self.whole.is_match(item)
    }
}

impl PartialEq for ItemPattern {
    fn eq(&self, other: &ItemPattern) -> bool {
        self.source == other.source
    }
}

impl Eq for ItemPattern {}

impl std::fmt::Debug for ItemPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ItemPattern({:?})", self.source)
    }
}

impl Serialize for ItemPattern {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.source)
    }
}

/// What each item of a list must be: one of an enum, or a match of a pattern.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ItemRule {
    /// Each item is one of these strings (compared exactly).
    Enum(Vec<String>),
    /// Each item matches this pattern as a whole.
    Pattern(ItemPattern),
}

impl ItemRule {
    /// Whether `item` is allowed.
    pub fn allows(&self, item: &str) -> bool {
        match self {
            ItemRule::Enum(values) => values.iter().any(|v| v == item),
            ItemRule::Pattern(pattern) => pattern.matches(item),
        }
    }
}

impl std::fmt::Display for ItemRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ItemRule::Enum(values) => write!(f, "one of {values:?}"),
            ItemRule::Pattern(pattern) => write!(f, "matching {:?}", pattern.as_str()),
        }
    }
}

/// Every key is bounded: ints by an inclusive range, strings by an enum,
/// bools by their type, lists by a length and an items rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Bounds {
    /// An int from `min` to `max`, both included.
    Int {
        /// The least value allowed.
        min: i64,
        /// The greatest value allowed.
        max: i64,
    },
    /// A string that is one of `values` (compared exactly).
    Enum {
        /// The strings allowed.
        #[serde(rename = "enum")]
        values: Vec<String>,
    },
    /// A bool: both values are allowed.
    Bool {},
    /// A list of at most `max_items` distinct items, each allowed by `items`.
    List {
        /// The most items a value may hold.
        max_items: u32,
        /// What each item must be (`enum` or `pattern` in JSON).
        #[serde(flatten)]
        items: ItemRule,
    },
}

impl Bounds {
    /// Bounds from their stored parts, if they fit the type: min <= max for
    /// ints, a non-empty enum for strings, nothing for bools.
    pub fn from_parts(
        value_type: ValueType,
        min: Option<i64>,
        max: Option<i64>,
        values: Option<Vec<String>>,
    ) -> Option<Bounds> {
        match (value_type, min, max, values) {
            (ValueType::Int, Some(min), Some(max), None) if min <= max => Some(Bounds::Int { min, max }),
            (ValueType::String, None, None, Some(values)) if !values.is_empty() => Some(Bounds::Enum { values }),
            (ValueType::Bool, None, None, None) => Some(Bounds::Bool {}),
            _ => None,
        }
    }

    /// Bounds from every stored column: as [`Bounds::from_parts`], and for
    /// a list `max_items` (1 to [`LIST_MAX_ITEMS`]) with exactly one items
    /// rule, a non-empty enum or a pattern that compiles.
    pub fn from_columns(
        value_type: ValueType,
        (min, max, values): (Option<i64>, Option<i64>, Option<Vec<String>>),
        max_items: Option<i32>,
        pattern: Option<&str>,
    ) -> Option<Bounds> {
        if value_type != ValueType::List {
            return if max_items.is_none() && pattern.is_none() {
                Bounds::from_parts(value_type, min, max, values)
            } else {
                None
            };
        }
        let max_items = u32::try_from(max_items?).ok().filter(|n| (1..=LIST_MAX_ITEMS).contains(n))?;
        let items = match (min, max, values, pattern) {
            (None, None, Some(values), None) if !values.is_empty() => ItemRule::Enum(values),
            (None, None, None, Some(pattern)) => ItemRule::Pattern(ItemPattern::parse(pattern)?),
            _ => return None,
        };
        Some(Bounds::List { max_items, items })
    }

    /// The stored parts: (min, max, enum); a list's enum is its items enum.
    pub fn to_parts(&self) -> (Option<i64>, Option<i64>, Option<Vec<String>>) {
        match self {
            Bounds::Int { min, max } => (Some(*min), Some(*max), None),
            Bounds::Enum { values } => (None, None, Some(values.clone())),
            Bounds::Bool {} => (None, None, None),
            Bounds::List { items: ItemRule::Enum(values), .. } => (None, None, Some(values.clone())),
            Bounds::List { items: ItemRule::Pattern(_), .. } => (None, None, None),
        }
    }

    /// The list columns: (max_items, item_pattern), both `None` but for lists.
    pub fn list_parts(&self) -> (Option<i32>, Option<String>) {
        match self {
            Bounds::List { max_items, items } => {
                let pattern = match items {
                    ItemRule::Pattern(p) => Some(p.as_str().to_string()),
                    ItemRule::Enum(_) => None,
                };
                (i32::try_from(*max_items).ok(), pattern)
            }
            _ => (None, None),
        }
    }

    /// The type these bounds are for.
    pub fn value_type(&self) -> ValueType {
        match self {
            Bounds::Int { .. } => ValueType::Int,
            Bounds::Enum { .. } => ValueType::String,
            Bounds::Bool {} => ValueType::Bool,
            Bounds::List { .. } => ValueType::List,
        }
    }

    /// Whether `value` has the bounds' type and lies within them.
    ///
    /// ```
    /// use policy_values::{Bounds, Value};
    ///
    /// let days = Bounds::Int { min: 0, max: 365 };
    /// assert!(days.contains(&Value::Int(365)));
    /// assert!(!days.contains(&Value::Int(366)));
    /// assert!(!days.contains(&Value::Bool(true)));
    /// ```
    pub fn contains(&self, value: &Value) -> bool {
        match (self, value) {
            (Bounds::Int { min, max }, Value::Int(v)) => (min..=max).contains(&v),
            (Bounds::Enum { values }, Value::String(s)) => values.iter().any(|e| **e == **s),
            (Bounds::Bool {}, Value::Bool(_)) => true,
            (Bounds::List { .. }, Value::List(_)) => self.check_list(value).is_ok(),
            _ => false,
        }
    }

    /// Checks a list against list bounds, naming the first problem: too
    /// many items, an item the rule refuses, or an item given twice.
    /// Other combinations of bounds and value answer `Ok`: [`Bounds::contains`]
    /// and [`KeyDef::check`] handle them.
    pub fn check_list(&self, value: &Value) -> Result<(), ValueError> {
        let (Bounds::List { max_items, items: rule }, Value::List(items)) = (self, value) else {
            return Ok(());
        };
        if items.len() > *max_items as usize {
            return Err(ValueError::ListTooLong { len: items.len(), max_items: *max_items });
        }
        for (index, item) in items.iter().enumerate() {
            if !rule.allows(item) {
                return Err(ValueError::ListItemNotAllowed { item: item.to_string(), rule: rule.to_string() });
            }
            if items[..index].contains(item) {
                return Err(ValueError::ListDuplicateItem { item: item.to_string() });
            }
        }
        Ok(())
    }
}

impl std::fmt::Display for Bounds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bounds::Int { min, max } => write!(f, "[{min}, {max}]"),
            Bounds::Enum { values } => write!(f, "one of {values:?}"),
            Bounds::Bool {} => f.write_str("true or false"),
            Bounds::List { max_items, items } => write!(f, "at most {max_items} distinct items, each {items}"),
        }
    }
}

/// A key as the catalog defines it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyDef {
    /// The key's name.
    pub key: PolicyKey,
    /// The type of its values (`type` in JSON).
    #[serde(rename = "type")]
    pub value_type: ValueType,
    /// The catalog default: the answer when no level holds a value.
    pub default: Value,
    /// What a value may be.
    pub bounds: Bounds,
    /// What the key is for, in a sentence.
    pub description: String,
    /// The unit of an int value (`days`, `seconds`, `minor currency units`), or empty.
    pub unit: String,
    /// Whether a client that knows only the catalog defaults (no database,
    /// no snapshot) refuses to answer for this key rather than give the default.
    pub fail_closed: bool,
    /// How many admins other than the author must approve a change to this
    /// key before it applies (see docs/governance.md); 0: writes apply at once.
    pub approvals_required: u16,
}

impl KeyDef {
    /// Checks a JSON value against this key's type and bounds.
    pub fn parse_value(&self, json: &serde_json::Value) -> Result<Value, ValueError> {
        let value = Value::from_json(json, self.value_type)?;
        self.check(&value)?;
        Ok(value)
    }

    /// Checks a typed value against this key's type and bounds.
    pub fn check(&self, value: &Value) -> Result<(), ValueError> {
        if value.value_type() != self.value_type {
            return Err(ValueError::TypeMismatch { expected: self.value_type, got: value.value_type().to_string() });
        }
        self.bounds.check_list(value)?;
        // A list has just been checked item by item; `contains` would check it again.
        let within = match value {
            Value::List(_) => matches!(self.bounds, Bounds::List { .. }),
            _ => self.bounds.contains(value),
        };
        if !within {
            return Err(ValueError::OutOfBounds { value: value.to_string(), bounds: self.bounds.to_string() });
        }
        Ok(())
    }
}

/// A key's definition as the database stores it: the columns of a
/// `policy_keys` row, under their names. It is also the definition's JSON
/// form wherever a definition travels (the catalog history table, the
/// change feed, the bootstrap), so a column added to the table travels too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyColumns {
    /// The dotted key name.
    pub key: String,
    /// `int`, `bool` or `string`.
    pub value_type: String,
    /// The catalog default, as JSON.
    pub default_value: serde_json::Value,
    /// An int key's inclusive minimum.
    pub min_value: Option<i64>,
    /// An int key's inclusive maximum.
    pub max_value: Option<i64>,
    /// A string key's allowed values, or a list key's allowed items.
    pub enum_values: Option<Vec<String>>,
    /// What the key is for.
    pub description: String,
    /// The unit of an int key (may be empty).
    #[serde(default)]
    pub unit: String,
    /// Refuse reads rather than serve the default when nothing is known.
    #[serde(default)]
    pub fail_closed: bool,
    /// A list key's most items (absent from definitions older than lists).
    #[serde(default)]
    pub max_items: Option<i32>,
    /// A list key's item pattern, when its items rule is a pattern.
    #[serde(default)]
    pub item_pattern: Option<String>,
    /// Approvals a change needs; 0 (and absent, in definitions and snapshot
    /// files written before it existed): none.
    #[serde(default)]
    pub approvals_required: i16,
}

impl KeyColumns {
    /// The definition these columns hold, checked as a catalog file is.
    pub fn into_def(self) -> Result<KeyDef, String> {
        let name = self.key.clone();
        let invalid = |what: &str| format!("definition of {name:?}: {what}");
        let key = PolicyKey::parse(&self.key).ok_or_else(|| invalid("bad key name"))?;
        let value_type = ValueType::parse(&self.value_type).ok_or_else(|| invalid("bad value_type"))?;
        let parts = (self.min_value, self.max_value, self.enum_values);
        let bounds = Bounds::from_columns(value_type, parts, self.max_items, self.item_pattern.as_deref())
            .ok_or_else(|| invalid("bounds do not fit the type"))?;
        let default = Value::from_json(&self.default_value, value_type).map_err(|e| invalid(&e.to_string()))?;
        Ok(KeyDef {
            key,
            value_type,
            default,
            bounds,
            description: self.description,
            unit: self.unit,
            fail_closed: self.fail_closed,
            approvals_required: u16::try_from(self.approvals_required)
                .map_err(|_| invalid("approvals_required is negative"))?,
        })
    }

    /// The columns that store `def`.
    pub fn from_def(def: &KeyDef) -> KeyColumns {
        let (min_value, max_value, enum_values) = def.bounds.to_parts();
        let (max_items, item_pattern) = def.bounds.list_parts();
        KeyColumns {
            key: def.key.to_string(),
            value_type: def.value_type.as_str().to_string(),
            default_value: def.default.to_json(),
            min_value,
            max_value,
            enum_values,
            description: def.description.clone(),
            unit: def.unit.clone(),
            fail_closed: def.fail_closed,
            max_items,
            item_pattern,
            approvals_required: i16::try_from(def.approvals_required).unwrap_or(i16::MAX),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_definition_round_trips_through_its_columns() {
        let def = KeyDef {
            key: PolicyKey::parse("allocation.refund_window_days").unwrap(),
            value_type: ValueType::Int,
            default: Value::Int(30),
            bounds: Bounds::Int { min: 0, max: 365 },
            description: "days".into(),
            unit: "days".into(),
            fail_closed: true,
            approvals_required: 2,
        };
        let columns = KeyColumns::from_def(&def);
        let json = serde_json::to_value(&columns).unwrap();
        assert_eq!(json["default_value"], serde_json::json!(30));
        let back: KeyColumns = serde_json::from_value(json).unwrap();
        assert_eq!(back.into_def(), Ok(def));
        let mut bad = columns.clone();
        bad.min_value = None;
        assert!(bad.into_def().unwrap_err().contains("bounds"));
    }

    #[test]
    fn a_definition_written_before_approvals_existed_needs_none() {
        let old = serde_json::json!({"key": "a.b", "value_type": "bool", "default_value": true,
                                     "min_value": null, "max_value": null, "enum_values": null,
                                     "description": "x", "unit": "", "fail_closed": false});
        let columns: KeyColumns = serde_json::from_value(old).unwrap();
        assert_eq!(columns.into_def().unwrap().approvals_required, 0);
    }

    #[test]
    fn key_names_are_dotted_lowercase_segments() {
        assert!(PolicyKey::parse("allocation.max_concurrent_per_user").is_some());
        assert!(PolicyKey::parse("a.b.c2").is_some());
        for bad in ["", "nodot", "Upper.case", "a..b", ".a.b", "a.b.", "a.1b", "a.b-c", "a.b c", "a.b;drop"] {
            assert!(PolicyKey::parse(bad).is_none(), "{bad:?} should be refused");
        }
        assert!(PolicyKey::parse(&format!("a.{}", "b".repeat(127))).is_none());
    }

    #[test]
    fn int_bounds_are_inclusive_and_refuse_other_types() {
        let b = Bounds::Int { min: 0, max: 365 };
        assert!(b.contains(&Value::Int(0)));
        assert!(b.contains(&Value::Int(365)));
        assert!(!b.contains(&Value::Int(366)));
        assert!(!b.contains(&Value::Int(-1)));
        assert!(!b.contains(&Value::Bool(true)));
    }

    #[test]
    fn list_bounds_refuse_too_many_items_unknown_items_and_duplicates_naming_the_item() {
        let rule = ItemRule::Enum(vec!["a".into(), "b".into(), "c".into()]);
        let b = Bounds::List { max_items: 2, items: rule };
        assert_eq!(b.check_list(&Value::from(&["a", "c"][..])), Ok(()));
        assert!(b.contains(&Value::from(&[][..])));
        assert_eq!(
            b.check_list(&Value::from(&["a", "b", "c"][..])),
            Err(ValueError::ListTooLong { len: 3, max_items: 2 })
        );
        let unknown = b.check_list(&Value::from(&["a", "z"][..])).unwrap_err();
        assert_eq!(unknown.item(), Some("z"));
        assert!(matches!(unknown, ValueError::ListItemNotAllowed { .. }));
        assert_eq!(
            b.check_list(&Value::from(&["b", "b"][..])),
            Err(ValueError::ListDuplicateItem { item: "b".into() })
        );
        assert!(!b.contains(&Value::String("a".into())));
    }

    #[test]
    fn a_list_pattern_must_match_each_item_as_a_whole() {
        let pattern = ItemPattern::parse("[a-z][a-z0-9-]*").unwrap();
        let b = Bounds::List { max_items: 4, items: ItemRule::Pattern(pattern) };
        assert!(b.contains(&Value::from(&["git", "npm-x"][..])));
        assert!(!b.contains(&Value::from(&["git; rm"][..])));
        assert!(!b.contains(&Value::from(&["Git"][..])));
        assert!(ItemPattern::parse("(").is_none());
        assert!(ItemPattern::parse(&"a".repeat(ITEM_PATTERN_MAX + 1)).is_none());
    }

    #[test]
    fn a_list_definition_round_trips_and_old_definitions_without_list_columns_still_load() {
        let def = KeyDef {
            key: PolicyKey::parse("agent.shell_exec.allowed_commands").unwrap(),
            value_type: ValueType::List,
            default: Value::from(&["git"][..]),
            bounds: Bounds::List { max_items: 8, items: ItemRule::Pattern(ItemPattern::parse("[a-z]+").unwrap()) },
            description: "commands".into(),
            unit: String::new(),
            fail_closed: false,
            approvals_required: 0,
        };
        let json = serde_json::to_value(KeyColumns::from_def(&def)).unwrap();
        assert_eq!(json["max_items"], serde_json::json!(8));
        assert_eq!(json["item_pattern"], serde_json::json!("[a-z]+"));
        let back: KeyColumns = serde_json::from_value(json).unwrap();
        assert_eq!(back.into_def(), Ok(def.clone()));
        let bounds = serde_json::to_value(&def.bounds).unwrap();
        assert_eq!(bounds, serde_json::json!({"max_items": 8, "pattern": "[a-z]+"}));
        let old = serde_json::json!({"key": "a.b", "value_type": "int", "default_value": 1, "min_value": 0,
            "max_value": 2, "enum_values": null, "description": "x"});
        let old: KeyColumns = serde_json::from_value(old).unwrap();
        assert_eq!(old.into_def().unwrap().bounds, Bounds::Int { min: 0, max: 2 });
    }

    #[test]
    fn enum_bounds_accept_only_listed_strings() {
        let b = Bounds::Enum { values: vec!["user-revoke".into(), "full-reimage".into()] };
        assert!(b.contains(&Value::String("full-reimage".into())));
        assert!(!b.contains(&Value::String("FULL-REIMAGE".into())));
    }
}
