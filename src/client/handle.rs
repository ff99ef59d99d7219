//! Typed reads: the types a key can be read as (`PolicyType`), keys checked
//! once and read without an error path (`Handle`), and one key's changes
//! (`KeyWatch`).

use std::sync::Arc;

use tokio::sync::broadcast;

use super::replica::KeySlot;
use super::{count_read, Change};
use crate::domain::{Scope, Value, ValueType};

/// A list value as the client hands it out: shared with the replica, so a
/// read is a reference-count increment, never a copy of the items.
pub type List = Arc<[Arc<str>]>;

/// A policy type a key can hold: `i64`, `bool`, `Arc<str>` or [`List`].
pub trait PolicyType: Sized {
    /// The key type this Rust type reads.
    const TYPE: ValueType;
    /// The value as `Self`, if it has that type.
    fn from_value(value: &Value) -> Option<Self>;
}

impl PolicyType for i64 {
    const TYPE: ValueType = ValueType::Int;
    fn from_value(value: &Value) -> Option<i64> {
        match value {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
}

impl PolicyType for bool {
    const TYPE: ValueType = ValueType::Bool;
    fn from_value(value: &Value) -> Option<bool> {
        match value {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }
}

impl PolicyType for Arc<str> {
    const TYPE: ValueType = ValueType::String;
    fn from_value(value: &Value) -> Option<Arc<str>> {
        match value {
            Value::String(s) => Some(Arc::clone(s)),
            _ => None,
        }
    }
}

impl PolicyType for List {
    const TYPE: ValueType = ValueType::List;
    fn from_value(value: &Value) -> Option<List> {
        match value {
            Value::List(items) => Some(Arc::clone(items)),
            _ => None,
        }
    }
}

/// A key checked once for existence and type; reading it cannot fail.
/// Made by [`PolicyClient::key`](super::PolicyClient::key) (or `int_key`, `bool_key`, `string_key`, `list_key`)
/// at start-up, then read on every request.
///
/// ```
/// use policy_values::{Handle, PolicyClient, Scope};
///
/// # fn main() -> Result<(), policy_values::PolicyError> {
/// let client = PolicyClient::fixed().build()?;
/// let max_concurrent: Handle<i64> = client.int_key("allocation.max_concurrent_per_user")?;
/// assert_eq!(max_concurrent.get(&Scope::new().user("u1")), 50);
/// assert!(client.bool_key("allocation.max_concurrent_per_user").is_err()); // checked once, here
/// # Ok(())
/// # }
/// ```
pub struct Handle<T> {
    pub(super) slot: Arc<KeySlot>,
    /// Answered should the key's type ever change under a running client.
    pub(super) fallback: T,
}

impl<T: PolicyType + Clone> Handle<T> {
    /// The key's value for `scope`, from memory.
    pub fn get(&self, scope: &Scope) -> T {
        count_read();
        let state = self.slot.read();
        T::from_value(state.resolve(scope, state.now()).value).unwrap_or_else(|| self.fallback.clone())
    }
}

/// A subscription to one key's changes.
pub struct KeyWatch {
    pub(super) key: Arc<str>,
    pub(super) events: broadcast::Receiver<Change>,
}

impl KeyWatch {
    /// The next change of this key; `None` once the client is gone.
    pub async fn changed(&mut self) -> Option<Change> {
        loop {
            match self.events.recv().await {
                Ok(change) if change.key == self.key => return Some(change),
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}
