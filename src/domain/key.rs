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
    pub fn parse(raw: &str) -> Option<PolicyKey> {
        let segment_ok = |s: &str| {
            let mut chars = s.chars();
            matches!(chars.next(), Some('a'..='z')) && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
        };
        let valid = raw.len() <= 128 && raw.split('.').count() >= 2 && raw.split('.').all(segment_ok);
        valid.then(|| PolicyKey(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for PolicyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueType {
    Int,
    Bool,
    String,
}

impl ValueType {
    pub fn as_str(self) -> &'static str {
        match self {
            ValueType::Int => "int",
            ValueType::Bool => "bool",
            ValueType::String => "string",
        }
    }

    pub fn parse(raw: &str) -> Option<ValueType> {
        match raw {
            "int" => Some(ValueType::Int),
            "bool" => Some(ValueType::Bool),
            "string" => Some(ValueType::String),
            _ => None,
        }
    }
}

impl std::fmt::Display for ValueType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every key is bounded: ints by an inclusive range, strings by an enum,
/// bools by their type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Bounds {
    Int {
        min: i64,
        max: i64,
    },
    Enum {
        #[serde(rename = "enum")]
        values: Vec<String>,
    },
    Bool {},
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

    /// The stored parts: (min, max, enum).
    pub fn to_parts(&self) -> (Option<i64>, Option<i64>, Option<Vec<String>>) {
        match self {
            Bounds::Int { min, max } => (Some(*min), Some(*max), None),
            Bounds::Enum { values } => (None, None, Some(values.clone())),
            Bounds::Bool {} => (None, None, None),
        }
    }

    pub fn value_type(&self) -> ValueType {
        match self {
            Bounds::Int { .. } => ValueType::Int,
            Bounds::Enum { .. } => ValueType::String,
            Bounds::Bool {} => ValueType::Bool,
        }
    }

    pub fn contains(&self, value: &Value) -> bool {
        match (self, value) {
            (Bounds::Int { min, max }, Value::Int(v)) => (min..=max).contains(&v),
            (Bounds::Enum { values }, Value::String(s)) => values.iter().any(|e| **e == **s),
            (Bounds::Bool {}, Value::Bool(_)) => true,
            _ => false,
        }
    }
}

impl std::fmt::Display for Bounds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bounds::Int { min, max } => write!(f, "[{min}, {max}]"),
            Bounds::Enum { values } => write!(f, "one of {values:?}"),
            Bounds::Bool {} => f.write_str("true or false"),
        }
    }
}

/// A key as the catalog defines it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyDef {
    pub key: PolicyKey,
    #[serde(rename = "type")]
    pub value_type: ValueType,
    pub default: Value,
    pub bounds: Bounds,
    pub description: String,
    pub unit: String,
    pub fail_closed: bool,
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
        if !self.bounds.contains(value) {
            return Err(ValueError::OutOfBounds { value: value.to_string(), bounds: self.bounds.to_string() });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn enum_bounds_accept_only_listed_strings() {
        let b = Bounds::Enum { values: vec!["user-revoke".into(), "full-reimage".into()] };
        assert!(b.contains(&Value::String("full-reimage".into())));
        assert!(!b.contains(&Value::String("FULL-REIMAGE".into())));
    }
}
