//! policy-values: a scoped policy-values store over PostgreSQL.
//!
//! Business constants (limits, refund windows, switches) are typed, bounded,
//! audited values, resolved per caller: user → project → org → plan →
//! global → catalog default. A backend service reads them through
//! [`PolicyClient`], which holds an in-memory replica of the store, so a read
//! never touches the network:
//!
//! ```
//! use policy_values::{Level, PolicyClient, Scope, WriteScope};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // In a service's tests: values given in code, resolved by the real rule.
//! let client = PolicyClient::fixed()
//!     .set("allocation.refund_window_days", WriteScope::at(Level::Org, "acme")?, 45)
//!     .build()?;
//!
//! let scope = Scope::new().user("u1").org("acme");
//! assert_eq!(client.get_int(&scope, "allocation.refund_window_days")?, 45);
//! assert_eq!(client.get_int(&Scope::new().org("globex"), "allocation.refund_window_days")?, 30);
//! # Ok(())
//! # }
//! ```
//!
//! In production the client follows the database (the `db-source`
//! feature; see [`PolicyClientBuilder`]). The crate's features:
//!
//! - `db-source`: the client's database source, and the [`store`] (SQL).
//! - `openfeature`: [`openfeature::PolicyValuesProvider`], the store as an
//!   OpenFeature provider.
//! - `server` (default): the HTTP server, the command line (a client of the
//!   server) and the constant lint; services that only read values turn it
//!   off with `default-features = false`.
//!
//! The types a service needs are re-exported here; [`client`] and
//! [`domain`] hold the rest.

pub mod client;
pub mod domain;
#[cfg(feature = "openfeature")]
pub mod openfeature;
#[cfg(feature = "db-source")]
pub mod store;

#[cfg(feature = "server")]
pub mod cli;
#[cfg(feature = "server")]
pub mod lint;
#[cfg(feature = "server")]
pub mod server;

pub use client::{
    Change, Explanation, FixedBuilder, Handle, Health, KeyWatch, List, Origin, PolicyClient, PolicyClientBuilder,
    PolicyError, PolicyType,
};
pub use domain::{
    Bounds, Catalog, CatalogError, ItemPattern, ItemRule, KeyDef, Level, PolicyKey, Resolution, Scope, ScopeError,
    Value, ValueError, ValueType, WriteScope,
};
