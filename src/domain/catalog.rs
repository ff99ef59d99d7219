//! The declarative key catalog (`seed/catalog.toml`): parsing and validation.

use serde::Deserialize;

use super::key::{Bounds, KeyDef, PolicyKey, ValueType};
use super::value::Value;

/// The catalog shipped with this build, so a client with neither database nor
/// snapshot can still serve defaults.
pub const BUILTIN_CATALOG: &str = include_str!("../../seed/catalog.toml");

/// The keys a store knows, each with its type, default and bounds.
///
/// ```
/// use policy_values::{Catalog, Value};
///
/// let catalog = Catalog::builtin()?;
/// let refunds = catalog.get("allocation.refund_window_days").expect("a built-in key");
/// assert_eq!(refunds.default, Value::Int(30));
///
/// let text = r#"
///     [[key]]
///     key = "checkout.max_items"
///     type = "int"
///     default = 50
///     min = 1
///     max = 500
///     description = "Items one checkout may hold."
/// "#;
/// assert_eq!(Catalog::parse(text)?.keys.len(), 1);
/// # Ok::<(), policy_values::CatalogError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalog {
    /// The keys, in the order the file lists them.
    pub keys: Vec<KeyDef>,
}

/// Why a catalog file was refused.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The file is not TOML, or not in the catalog's shape.
    #[error("catalog is not valid TOML: {0}")]
    Syntax(#[from] toml::de::Error),
    /// A key's definition does not hold together.
    #[error("key {key:?}: {problem}")]
    Invalid {
        /// The key's name as written.
        key: String,
        /// What is wrong with it.
        problem: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalog {
    key: Vec<RawKey>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    key: String,
    #[serde(rename = "type")]
    value_type: ValueType,
    default: serde_json::Value,
    min: Option<i64>,
    max: Option<i64>,
    #[serde(rename = "enum")]
    enum_values: Option<Vec<String>>,
    #[serde(default)]
    unit: String,
    description: String,
    #[serde(default)]
    fail_closed: bool,
    max_items: Option<i32>,
    pattern: Option<String>,
    /// Changes need approval by other admins (docs/governance.md).
    #[serde(default)]
    requires_approval: bool,
    /// How many distinct approvals; only with `requires_approval`; default 1.
    approvals: Option<u16>,
}

/// The most approvals a key may need.
pub const MAX_APPROVALS: u16 = 10;

impl Catalog {
    /// The catalog built into this library (`seed/catalog.toml` at build time).
    pub fn builtin() -> Result<Catalog, CatalogError> {
        Catalog::parse(BUILTIN_CATALOG)
    }

    /// Parses and validates a catalog: names well-formed and unique, every
    /// key bounded in the way its type needs, every default inside its bounds.
    pub fn parse(text: &str) -> Result<Catalog, CatalogError> {
        let raw: RawCatalog = toml::from_str(text)?;
        let mut keys: Vec<KeyDef> = Vec::with_capacity(raw.key.len());
        for raw_key in raw.key {
            let def = raw_key.validate()?;
            if keys.iter().any(|k| k.key == def.key) {
                return Err(invalid(def.key.as_str(), "is defined twice"));
            }
            keys.push(def);
        }
        Ok(Catalog { keys })
    }

    /// The definition of `key`, if the catalog holds it.
    pub fn get(&self, key: &str) -> Option<&KeyDef> {
        self.keys.iter().find(|k| k.key.as_str() == key)
    }
}

fn invalid(key: &str, problem: impl Into<String>) -> CatalogError {
    CatalogError::Invalid { key: key.to_string(), problem: problem.into() }
}

impl RawKey {
    fn validate(self) -> Result<KeyDef, CatalogError> {
        let name = self.key.as_str();
        let key = PolicyKey::parse(name).ok_or_else(|| invalid(name, "is not a dotted lowercase key name"))?;
        let parts = (self.min, self.max, self.enum_values);
        let bounds = Bounds::from_columns(self.value_type, parts, self.max_items, self.pattern.as_deref());
        let bounds = bounds.ok_or_else(|| {
            let need = match self.value_type {
                ValueType::Int => "an int key needs min <= max and no enum, max_items or pattern",
                ValueType::String => "a string key needs a non-empty enum and no min/max, max_items or pattern",
                ValueType::Bool => "a bool key takes no min, max, enum, max_items or pattern",
                ValueType::List => {
                    "a list key needs max_items (1 to 1000) and either a non-empty enum of allowed items \
                     or a pattern that compiles (at most 256 bytes), and no min/max"
                }
            };
            invalid(name, need)
        })?;
        let default = Value::from_json(&self.default, self.value_type).map_err(|e| invalid(name, e.to_string()))?;
        let approvals_required = match (self.requires_approval, self.approvals) {
            (false, None) => 0,
            (false, Some(_)) => return Err(invalid(name, "approvals needs requires_approval = true")),
            (true, None) => 1,
            (true, Some(n)) if (1..=MAX_APPROVALS).contains(&n) => n,
            (true, Some(_)) => return Err(invalid(name, format!("approvals must be 1 to {MAX_APPROVALS}"))),
        };
        let def = KeyDef {
            key,
            value_type: self.value_type,
            default,
            bounds,
            description: self.description,
            unit: self.unit,
            fail_closed: self.fail_closed,
            approvals_required,
        };
        def.check(&def.default).map_err(|e| invalid(name, format!("default: {e}")))?;
        Ok(def)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_catalog_holds_the_sixteen_keys_of_the_spec_with_their_defaults() {
        let catalog = Catalog::builtin().unwrap();
        let spec = catalog.keys.iter().filter(|k| !k.key.as_str().starts_with("agent.")).count();
        assert_eq!(spec, 16);
        let default = |k: &str| catalog.get(k).unwrap().default.clone();
        assert_eq!(default("allocation.refund_window_days"), Value::Int(30));
        assert_eq!(default("allocation.max_concurrent_per_user"), Value::Int(50));
        assert_eq!(default("terminal.session_max_ttl_seconds"), Value::Int(14_400));
        assert_eq!(default("allocation.isolation_model"), Value::String("user-revoke".into()));
        assert_eq!(default("notification.low_balance_enabled"), Value::Bool(true));
        assert_eq!(default("maas.enabled"), Value::Bool(false));
    }

    #[test]
    fn the_agent_namespace_holds_the_defaults_of_the_seeds_example_bundle() {
        let catalog = Catalog::builtin().unwrap();
        let default = |k: &str| catalog.get(k).unwrap_or_else(|| panic!("{k}")).default.clone();
        assert_eq!(default("agent.llm.allowed_models"), Value::from(&["claude-sonnet-4-6"][..]));
        assert_eq!(default("agent.llm.max_input_tokens"), Value::Int(64_000));
        assert_eq!(default("agent.llm.max_output_tokens"), Value::Int(4_000));
        assert_eq!(default("agent.llm.max_session_tokens"), Value::Int(250_000));
        assert_eq!(default("agent.file_read.allowed_paths"), Value::from(&["/Users/suman/projects/demo"][..]));
        assert_eq!(default("agent.shell_exec.allowed_commands"), Value::from(&["git", "python", "npm", "pytest"][..]));
        assert_eq!(default("agent.shell_exec.requires_approval"), Value::Bool(true));
        assert_eq!(default("agent.file_read.requires_approval"), Value::Bool(false));
        assert_eq!(default("agent.approval_shell_exec.title"), Value::from("Local command execution"));
        let allowed: Vec<&str> = catalog
            .keys
            .iter()
            .filter(|k| k.key.as_str().ends_with(".allowed") && k.default == Value::Bool(true))
            .map(|k| k.key.as_str())
            .collect();
        assert_eq!(allowed, ["agent.file_read.allowed", "agent.shell_exec.allowed"]);
    }

    #[test]
    fn the_money_security_and_infrastructure_keys_need_one_approval_and_the_rest_none() {
        let catalog = Catalog::builtin().unwrap();
        let sensitive: Vec<&str> =
            catalog.keys.iter().filter(|k| k.approvals_required > 0).map(|k| k.key.as_str()).collect();
        assert_eq!(
            sensitive,
            [
                "billing.minimum_deposit_minor",
                "billing.maximum_deposit_minor",
                "auth.service_account_token_ttl_seconds",
                "maas.enabled"
            ]
        );
        assert!(catalog.keys.iter().all(|k| k.approvals_required <= 1));
    }

    #[test]
    fn approvals_default_to_one_and_need_requires_approval() {
        let key = |extra: &str| {
            format!("[[key]]\nkey = \"a.b\"\ntype = \"bool\"\ndefault = true\ndescription = \"x\"\n{extra}")
        };
        let approvals = |extra: &str| Catalog::parse(&key(extra)).map(|c| c.keys[0].approvals_required);
        assert_eq!(approvals("").unwrap(), 0);
        assert_eq!(approvals("requires_approval = true").unwrap(), 1);
        assert_eq!(approvals("requires_approval = true\napprovals = 2").unwrap(), 2);
        assert!(approvals("approvals = 2").unwrap_err().to_string().contains("requires_approval"));
        assert!(approvals("requires_approval = true\napprovals = 0").is_err());
        assert!(approvals("requires_approval = true\napprovals = 11").is_err());
    }

    #[test]
    fn a_default_outside_its_bounds_is_refused() {
        let text = r#"
            [[key]]
            key = "a.b"
            type = "int"
            default = 11
            min = 0
            max = 10
            description = "x"
        "#;
        let err = Catalog::parse(text).unwrap_err().to_string();
        assert!(err.contains("a.b") && err.contains("outside"), "{err}");
    }

    #[test]
    fn an_unbounded_int_key_is_refused() {
        let text = "[[key]]\nkey = \"a.b\"\ntype = \"int\"\ndefault = 1\ndescription = \"x\"\n";
        assert!(Catalog::parse(text).unwrap_err().to_string().contains("min <= max"));
    }

    #[test]
    fn a_list_key_needs_max_items_and_one_items_rule_and_a_default_inside_them() {
        let key = |rest: &str| format!("[[key]]\nkey = \"a.b\"\ntype = \"list\"\ndescription = \"x\"\n{rest}");
        let ok = Catalog::parse(&key("default = [\"x\"]\nmax_items = 2\nenum = [\"x\", \"y\"]\n")).unwrap();
        assert_eq!(ok.keys[0].default, Value::from(&["x"][..]));
        let no_max = Catalog::parse(&key("default = []\nenum = [\"x\"]\n")).unwrap_err().to_string();
        assert!(no_max.contains("max_items"), "{no_max}");
        let both = key("default = []\nmax_items = 2\nenum = [\"x\"]\npattern = \"[a-z]+\"\n");
        assert!(Catalog::parse(&both).is_err());
        let dup = Catalog::parse(&key("default = [\"x\", \"x\"]\nmax_items = 2\npattern = \"[a-z]+\"\n"));
        assert!(dup.unwrap_err().to_string().contains("more than once"));
    }

    #[test]
    fn a_key_defined_twice_is_refused() {
        let one = "[[key]]\nkey = \"a.b\"\ntype = \"bool\"\ndefault = true\ndescription = \"x\"\n";
        let err = Catalog::parse(&format!("{one}{one}")).unwrap_err().to_string();
        assert!(err.contains("twice"), "{err}");
    }
}
