//! Where the client's answers come from and how current they are: `Origin`,
//! `Health`, and `Explanation` (an answer with every level consulted).

use serde::Serialize;
use time::OffsetDateTime;

use crate::domain::Resolution;

/// Where the replica's contents came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// Loaded from its source (the database or the servers) and following it.
    Live = 0,
    /// Restored from the snapshot file; the database has not answered yet.
    Snapshot = 1,
    /// Neither database nor snapshot: catalog defaults only.
    Default = 2,
    /// Values given in code (`PolicyClient::fixed`), for tests.
    Fixed = 3,
}

impl Origin {
    /// The name health checks and metrics use: `live`, `snapshot`,
    /// `default` or `fixed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Live => "live",
            Origin::Snapshot => "snapshot",
            Origin::Default => "default",
            Origin::Fixed => "fixed",
        }
    }

    pub(super) fn from_u8(raw: u8) -> Origin {
        match raw {
            0 => Origin::Live,
            1 => Origin::Snapshot,
            3 => Origin::Fixed,
            _ => Origin::Default,
        }
    }
}

/// The client's state, as health checks report it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Health {
    /// Where the replica came from.
    pub origin: Origin,
    /// Since when the replica may be stale (database unreachable), if it is.
    #[serde(with = "time::serde::rfc3339::option")]
    pub stale_since: Option<OffsetDateTime>,
    /// The last store position applied.
    pub last_seq: i64,
    /// Value rows held (in force or scheduled).
    pub rows: usize,
    /// Connections to the store re-established after one was lost.
    pub reconnects: u64,
}

/// An answer with the level that won and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    /// The answer, its source and every level consulted.
    #[serde(flatten)]
    pub resolution: Resolution,
    /// Where the replica came from.
    pub origin: Origin,
    /// Since when the replica may be stale, if it is.
    #[serde(with = "time::serde::rfc3339::option")]
    pub stale_since: Option<OffsetDateTime>,
    /// The last store position applied.
    pub last_seq: i64,
}
