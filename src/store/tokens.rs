//! The `api_tokens` table: tokens are stored as SHA-256 hashes only.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::PgExecutor;
use time::OffsetDateTime;
use uuid::Uuid;

use super::StoreError;

/// What a token may do. `admin` may do everything; `auditor` reads the audit
/// log and everything a `reader` may; `reader` resolves and reads the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Reader,
    Auditor,
    Admin,
}

impl Role {
    pub fn parse(raw: &str) -> Option<Role> {
        match raw {
            "reader" => Some(Role::Reader),
            "auditor" => Some(Role::Auditor),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Auditor => "auditor",
            Role::Admin => "admin",
        }
    }

    /// Whether a token with this role may use an endpoint that needs `needed`.
    pub fn allows(self, needed: Role) -> bool {
        match self {
            Role::Admin => true,
            Role::Auditor => matches!(needed, Role::Auditor | Role::Reader),
            Role::Reader => needed == Role::Reader,
        }
    }
}

/// The authenticated caller: the token's name is the audit actor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    pub token_id: Uuid,
    pub name: String,
    pub role: Role,
    #[serde(skip)]
    pub expires_at: Option<OffsetDateTime>,
    /// Key patterns the token may touch (`billing.*`); `None`: every key.
    #[serde(default)]
    pub key_patterns: Option<Vec<String>>,
    /// Levels the token may write at; `None`: every level.
    #[serde(default)]
    pub levels: Option<Vec<String>>,
}

impl Principal {
    /// Whether the token may write, preview or decide a change to `key` at
    /// `level` (`global`, `plan`, `org`, `project`, `user`).
    pub fn may_touch(&self, key: &str, level: &str) -> bool {
        let key_ok = self.key_patterns.as_ref().map_or(true, |ps| ps.iter().any(|p| pattern_matches(p, key)));
        let level_ok = self.levels.as_ref().map_or(true, |ls| ls.iter().any(|l| l == level));
        key_ok && level_ok
    }
}

/// A key pattern: the exact key, or with `*` standing for any run of
/// characters (`billing.*`, `*.enabled`).
pub fn pattern_matches(pattern: &str, key: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == key,
        Some((head, rest)) => {
            let Some(tail) = key.strip_prefix(head) else {
                return false;
            };
            (0..=tail.len()).filter(|i| tail.is_char_boundary(*i)).any(|i| pattern_matches(rest, &tail[i..]))
        }
    }
}

/// A key pattern as a token may hold it: a key name in which `*` may
/// stand for any characters.
pub fn valid_pattern(pattern: &str) -> bool {
    !pattern.is_empty()
        && pattern.len() <= 128
        && pattern.chars().all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_' | '.' | '*'))
}

/// Stores a new token limited to `key_patterns` and `levels` (`None`: no
/// limit of that kind).
pub async fn insert_limited(
    executor: impl PgExecutor<'_>,
    name: &str,
    role: Role,
    token: &str,
    expires_at: Option<OffsetDateTime>,
    key_patterns: Option<&[String]>,
    levels: Option<&[String]>,
) -> Result<Uuid, StoreError> {
    let prefix: String = token.chars().take(12).collect();
    let id = sqlx::query_scalar!(
        "insert into api_tokens (name, role, token_hash, prefix, expires_at, key_patterns, levels)
         values ($1, $2, $3, $4, $5, $6, $7) returning id",
        name,
        role.as_str(),
        hash_token(token),
        prefix,
        expires_at,
        key_patterns,
        levels,
    )
    .fetch_one(executor)
    .await?;
    Ok(id)
}

/// Compares two hashes in time independent of where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub fn hash_token(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Stores a new token's hash; `prefix` is its first characters, for listings.
pub async fn insert(
    executor: impl PgExecutor<'_>,
    name: &str,
    role: Role,
    token: &str,
    expires_at: Option<OffsetDateTime>,
) -> Result<Uuid, StoreError> {
    insert_limited(executor, name, role, token, expires_at, None, None).await
}

/// The principal behind a presented token, if it exists, is not revoked and
/// has not expired. The lookup is by hash, so timing reveals nothing useful.
pub async fn authenticate(executor: impl PgExecutor<'_>, token: &str) -> Result<Option<Principal>, StoreError> {
    let presented = hash_token(token);
    let row = sqlx::query!(
        "select id, name, role, token_hash, expires_at, key_patterns, levels from api_tokens
         where token_hash = $1 and revoked_at is null and (expires_at is null or expires_at > now())",
        presented
    )
    .fetch_optional(executor)
    .await?;
    row.filter(|r| constant_time_eq(&r.token_hash, &presented))
        .map(|r| {
            let role = Role::parse(&r.role).ok_or_else(|| StoreError::Corrupt(format!("token role {:?}", r.role)))?;
            Ok(Principal {
                token_id: r.id,
                name: r.name,
                role,
                expires_at: r.expires_at,
                key_patterns: r.key_patterns,
                levels: r.levels,
            })
        })
        .transpose()
}

/// A token as listed: never its secret or hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenInfo {
    pub id: Uuid,
    pub name: String,
    pub role: String,
    pub prefix: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    /// The keys and levels the token is limited to; null: no limit.
    pub key_patterns: Option<Vec<String>>,
    pub levels: Option<Vec<String>>,
}

pub async fn list(executor: impl PgExecutor<'_>) -> Result<Vec<TokenInfo>, StoreError> {
    let rows = sqlx::query_as!(
        TokenInfo,
        "select id, name, role, prefix, created_at, expires_at, revoked_at, key_patterns, levels
         from api_tokens order by created_at, name"
    )
    .fetch_all(executor)
    .await?;
    Ok(rows)
}

/// Revokes the tokens with this id or name that are not revoked yet;
/// returns how many. A revoked token is refused from its next request.
pub async fn revoke(executor: impl PgExecutor<'_>, id_or_name: &str) -> Result<u64, StoreError> {
    let id = Uuid::parse_str(id_or_name).ok();
    let done = sqlx::query!(
        "update api_tokens set revoked_at = now()
         where revoked_at is null and (id = $1 or ($1 is null and name = $2))",
        id,
        id_or_name
    )
    .execute(executor)
    .await?;
    Ok(done.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_patterns_match_exact_keys_and_star_runs() {
        assert!(pattern_matches("billing.*", "billing.minimum_deposit_minor"));
        assert!(!pattern_matches("billing.*", "maas.enabled"));
        assert!(!pattern_matches("billing.*", "billingx.a"));
        assert!(pattern_matches("*.enabled", "maas.enabled"));
        assert!(pattern_matches("maas.enabled", "maas.enabled"));
        assert!(!pattern_matches("maas.enable", "maas.enabled"));
        assert!(pattern_matches("*", "a.b"));
        assert!(valid_pattern("billing.*") && !valid_pattern("") && !valid_pattern("Billing.*"));
    }
}
