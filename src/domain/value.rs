//! Typed policy values and their checks against a key's type and bounds.

use std::sync::Arc;

use serde::{Serialize, Serializer};

use super::key::ValueType;

/// A policy value. Its JSON form is the plain JSON scalar (`45`, `true`,
/// `"full-reimage"`), or an array of strings for a list. Strings and lists
/// are shared (`Arc<str>`, `Arc<[Arc<str>]>`), so handing one out of the
/// client's replica is a reference-count increment, not a copy.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
///
/// ```
/// use policy_values::{Value, ValueType};
///
/// let days = Value::from_json(&serde_json::json!(45), ValueType::Int)?;
/// assert_eq!(days, Value::Int(45));
/// assert_eq!(days.to_json(), serde_json::json!(45));
/// assert!(Value::from_json(&serde_json::json!("45"), ValueType::Int).is_err());
/// # Ok::<(), policy_values::ValueError>(())
/// ```
pub enum Value {
    /// A whole number.
    Int(i64),
    /// A switch.
    Bool(bool),
    /// Text, shared.
    String(Arc<str>),
    /// A list of strings, in order, shared as a whole.
    List(Arc<[Arc<str>]>),
}

/// Why a value does not fit a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// The value has another type than the key.
    #[error("expected a value of type {expected}, got {got}")]
    TypeMismatch {
        /// The key's type.
        expected: ValueType,
        /// The kind of value given (`string`, `float`, `null`, ...).
        got: String,
    },
    /// The value has the key's type but lies outside its bounds.
    #[error("{value} is outside the bounds {bounds}")]
    OutOfBounds {
        /// The value, as text.
        value: String,
        /// The bounds, as text (`[0, 365]`, `one of [...]`).
        bounds: String,
    },
    /// An item of a list is not a string.
    #[error("item {index} of the list is {got}, not a string")]
    ListItemType {
        /// The item's position, from 0.
        index: usize,
        /// The kind of value given there.
        got: String,
    },
    /// A list holds more items than its key allows.
    #[error("the list has {len} items, more than the {max_items} allowed")]
    ListTooLong {
        /// The number of items given.
        len: usize,
        /// The key's `max_items`.
        max_items: u32,
    },
    /// A list names the same item twice.
    #[error("the list holds {item:?} more than once")]
    ListDuplicateItem {
        /// The repeated item.
        item: String,
    },
    /// An item of a list is not allowed by the key's items rule.
    #[error("list item {item:?} is not allowed: items must be {rule}")]
    ListItemNotAllowed {
        /// The refused item.
        item: String,
        /// The items rule, as text (`one of [...]`, `matching "..."`).
        rule: String,
    },
}

impl ValueError {
    /// The offending list item, for errors about one item.
    pub fn item(&self) -> Option<&str> {
        match self {
            ValueError::ListDuplicateItem { item } | ValueError::ListItemNotAllowed { item, .. } => Some(item),
            _ => None,
        }
    }
}

impl Value {
    /// Reads a JSON scalar as a value of `value_type`. Integers must be whole
    /// numbers that fit in an i64 (`45.0` is refused: it is a float).
    pub fn from_json(json: &serde_json::Value, value_type: ValueType) -> Result<Value, ValueError> {
        let parsed = match (value_type, json) {
            (ValueType::Int, serde_json::Value::Number(n)) => n.as_i64().map(Value::Int),
            (ValueType::Bool, serde_json::Value::Bool(b)) => Some(Value::Bool(*b)),
            (ValueType::String, serde_json::Value::String(s)) => Some(Value::String(Arc::from(s.as_str()))),
            (ValueType::List, serde_json::Value::Array(items)) => return list_from_json(items),
            _ => None,
        };
        parsed.ok_or_else(|| ValueError::TypeMismatch { expected: value_type, got: json_kind(json).to_string() })
    }

    /// The plain JSON scalar.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Int(i) => serde_json::Value::from(*i),
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::String(s) => serde_json::Value::String(s.to_string()),
            Value::List(items) => items.iter().map(|i| serde_json::Value::String(i.to_string())).collect(),
        }
    }

    /// The value's type.
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::Int(_) => ValueType::Int,
            Value::Bool(_) => ValueType::Bool,
            Value::String(_) => ValueType::String,
            Value::List(_) => ValueType::List,
        }
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Int(i) => serializer.serialize_i64(*i),
            Value::Bool(b) => serializer.serialize_bool(*b),
            Value::String(s) => serializer.serialize_str(s),
            Value::List(items) => serializer.collect_seq(items.iter().map(|i| &**i)),
        }
    }
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Int(i) => write!(f, "{i}"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::String(s) => write!(f, "{s:?}"),
            Value::List(items) => f.debug_list().entries(items.iter()).finish(),
        }
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Value {
        Value::Int(v)
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Value {
        Value::Bool(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::String(Arc::from(v))
    }
}

impl From<&[&str]> for Value {
    fn from(items: &[&str]) -> Value {
        Value::List(items.iter().map(|i| Arc::from(*i)).collect())
    }
}

/// A JSON array as a list value: every item a string.
fn list_from_json(items: &[serde_json::Value]) -> Result<Value, ValueError> {
    let mut list = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        match item {
            serde_json::Value::String(s) => list.push(Arc::from(s.as_str())),
            other => return Err(ValueError::ListItemType { index, got: json_kind(other).to_string() }),
        }
    }
    Ok(Value::List(list.into()))
}

/// The JSON kind of a value, as named in error messages.
pub fn json_kind(json: &serde_json::Value) -> &'static str {
    match json {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "bool",
        serde_json::Value::Number(n) if n.is_i64() || n.is_u64() => "int",
        serde_json::Value::Number(_) => "float",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_int_key_accepts_whole_numbers_and_refuses_floats_strings_and_huge_numbers() {
        assert_eq!(Value::from_json(&json!(45), ValueType::Int), Ok(Value::Int(45)));
        assert!(Value::from_json(&json!(45.0), ValueType::Int).is_err());
        assert!(Value::from_json(&json!("45"), ValueType::Int).is_err());
        assert!(Value::from_json(&json!(u64::MAX), ValueType::Int).is_err());
    }

    #[test]
    fn a_type_mismatch_names_what_was_expected_and_what_came() {
        let err = Value::from_json(&json!("yes"), ValueType::Bool).unwrap_err();
        assert_eq!(err, ValueError::TypeMismatch { expected: ValueType::Bool, got: "string".into() });
    }

    #[test]
    fn a_list_is_a_json_array_of_strings_and_names_an_item_of_another_type() {
        let list = Value::from_json(&json!(["git", "npm"]), ValueType::List).unwrap();
        assert_eq!(list, Value::from(&["git", "npm"][..]));
        assert_eq!(list.to_json(), json!(["git", "npm"]));
        assert_eq!(serde_json::to_string(&list).unwrap(), r#"["git","npm"]"#);
        let err = Value::from_json(&json!(["git", 3]), ValueType::List).unwrap_err();
        assert_eq!(err, ValueError::ListItemType { index: 1, got: "int".into() });
        assert!(matches!(Value::from_json(&json!("git"), ValueType::List), Err(ValueError::TypeMismatch { .. })));
    }

    #[test]
    fn values_serialize_as_plain_json_scalars() {
        let json = serde_json::to_string(&[Value::Int(-3), Value::Bool(true), Value::String("a\"b".into())]).unwrap();
        assert_eq!(json, r#"[-3,true,"a\"b"]"#);
    }
}
