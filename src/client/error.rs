//! `PolicyError`: why the client refused a read or could not start.

use crate::domain::ValueType;

/// Why a read was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
///
/// ```
/// use policy_values::{PolicyClient, PolicyError, Scope, ValueType};
///
/// # fn main() -> Result<(), PolicyError> {
/// let client = PolicyClient::fixed().build()?;
/// let scope = Scope::new();
/// assert_eq!(client.get_int(&scope, "no.such_key"), Err(PolicyError::UnknownKey("no.such_key".into())));
/// assert_eq!(
///     client.get_bool(&scope, "allocation.refund_window_days"),
///     Err(PolicyError::TypeMismatch {
///         key: "allocation.refund_window_days".into(),
///         requested: ValueType::Bool,
///         actual: ValueType::Int,
///     })
/// );
/// # Ok(())
/// # }
/// ```
pub enum PolicyError {
    /// The key is not in the catalog.
    #[error("unknown policy key {0:?}")]
    UnknownKey(String),
    /// The key holds values of another type than the one asked for.
    #[error("policy key {key} holds {actual} values, not {requested}")]
    TypeMismatch {
        /// The key.
        key: String,
        /// The type asked for.
        requested: ValueType,
        /// The type the key holds.
        actual: ValueType,
    },
    /// The key is fail-closed and the client knows nothing but the catalog
    /// defaults (no database, no snapshot file).
    #[error("policy key {0} is fail-closed and no value is known (no database, no snapshot)")]
    Unavailable(String),
    /// A value given to `PolicyClient::fixed()` does not fit its key.
    #[error("invalid value for {key}: {reason}")]
    InvalidValue {
        /// The key.
        key: String,
        /// Why the value does not fit.
        reason: String,
    },
    /// The client could not be built (a malformed database URL, a catalog
    /// that does not parse, no source given).
    #[error("cannot start the client: {0}")]
    Start(String),
}
