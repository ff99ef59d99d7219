//! policy-values: a scoped policy-values store over PostgreSQL.
//!
//! The library holds the domain (validated keys, scopes, values and the one
//! resolution function), the store (SQL over PostgreSQL) and, behind the
//! default `server` feature, the HTTP server and CLI.

pub mod client;
pub mod domain;
#[cfg(feature = "server")]
pub mod lint;
pub mod store;

#[cfg(feature = "server")]
pub mod server;
