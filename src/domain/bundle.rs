//! Seed 004's policy bundle: the JSON document a session service receives
//! (`GET /api/v1/policy-bundles`) and the three checks its agent host makes
//! before a session starts ([`Bundle::verify`]). See docs/bundles.md.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// The bundle format this build writes (`schemaVersion`).
pub const SCHEMA_VERSION: &str = "1.0";

/// A policy bundle, in the seed's JSON shape (camelCase fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bundle {
    /// `YYYY-MM-DD.N`: the date of the latest change in force among the
    /// bundle's values and N the store position of the newest of them.
    pub policy_bundle_version: String,
    /// The bundle format (`1.0`).
    pub schema_version: String,
    /// The tenant (the store's org scope).
    pub tenant_id: String,
    /// The user.
    pub user_id: String,
    /// The session the bundle was issued for.
    pub session_id: String,
    /// After this instant the bundle must not be used.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// The allowed capabilities asked for, with their scopes.
    pub capabilities: Vec<Capability>,
    /// What the agent may send to and receive from the LLM Gateway.
    pub llm_policy: LlmPolicy,
    /// The approval rules the capabilities name.
    pub approval_rules: Vec<ApprovalRule>,
}

/// One allowed capability and its scope. Absent scope fields do not apply to
/// the capability (or, for the blocked lists, block nothing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Capability {
    /// `File.Read`, `Shell.Exec`, ...
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Path prefixes the capability may touch (`allowedPaths`).
    pub allowed_paths: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Path prefixes it must not touch (`blockedPaths`).
    pub blocked_paths: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Commands it may run (`allowedCommands`).
    pub allowed_commands: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Commands it must not run (`blockedCommands`).
    pub blocked_commands: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Domains it may reach (`allowedDomains`).
    pub allowed_domains: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// The largest file it may handle (`maxFileSizeBytes`).
    pub max_file_size_bytes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// The most output kept from one use (`maxOutputBytes`).
    pub max_output_bytes: Option<i64>,
    /// Whether each use needs the user's approval.
    pub requires_approval: bool,
    /// The rule that approval follows, when `requires_approval`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_rule_id: Option<String>,
}

/// The LLM block of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LlmPolicy {
    /// Model ids the agent may request.
    pub allowed_models: Vec<String>,
    /// Most tokens in one request.
    pub max_input_tokens: i64,
    /// Most tokens in one response.
    pub max_output_tokens: i64,
    /// Token budget of the whole session.
    pub max_session_tokens: i64,
}

/// An approval rule a capability names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalRule {
    /// The id capabilities name (`approval_shell_exec`).
    pub approval_rule_id: String,
    /// A short title shown to the user.
    pub title: String,
    /// What the user approves.
    pub description: String,
}

/// Why a bundle must not be used; each check has its own variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    /// `expiresAt` is not in the future.
    #[error("the policy bundle expired at {expires_at}")]
    Expired {
        /// When it expired.
        expires_at: OffsetDateTime,
    },
    /// The bundle was issued for another session.
    #[error("the policy bundle is for session {bundle:?}, not {current:?}")]
    SessionMismatch {
        /// The bundle's `sessionId`.
        bundle: String,
        /// The session being started.
        current: String,
    },
    /// This host does not understand the bundle's format.
    #[error("policy bundle schema version {version:?} is not supported (supported: {supported:?})")]
    UnsupportedSchema {
        /// The bundle's `schemaVersion`.
        version: String,
        /// The versions this host reads.
        supported: Vec<String>,
    },
}

impl Bundle {
    /// The seed's client-side validation: refuses a bundle that has expired
    /// at `now` (`expiresAt <= now`), one issued for another session than
    /// `session_id`, and one whose `schemaVersion` is not in `supported`,
    /// checked in that order. If it fails, the session must not start.
    ///
    /// ```
    /// use policy_values::domain::bundle::{Bundle, BundleError};
    /// use time::macros::datetime;
    ///
    /// let json = r#"{"policyBundleVersion": "2026-02-21.1", "schemaVersion": "1.0",
    ///     "tenantId": "tenant_abc", "userId": "user_123", "sessionId": "sess_789",
    ///     "expiresAt": "2026-02-21T18:30:00Z", "capabilities": [],
    ///     "llmPolicy": {"allowedModels": ["claude-sonnet-4-6"], "maxInputTokens": 64000,
    ///                   "maxOutputTokens": 4000, "maxSessionTokens": 250000},
    ///     "approvalRules": []}"#;
    /// let bundle: Bundle = serde_json::from_str(json)?;
    /// let before = datetime!(2026-02-21 18:00 UTC);
    /// assert_eq!(bundle.verify(before, "sess_789", &["1.0"]), Ok(()));
    /// assert!(matches!(bundle.verify(datetime!(2026-02-21 18:30 UTC), "sess_789", &["1.0"]),
    ///                  Err(BundleError::Expired { .. })));
    /// assert!(matches!(bundle.verify(before, "sess_000", &["1.0"]), Err(BundleError::SessionMismatch { .. })));
    /// assert!(matches!(bundle.verify(before, "sess_789", &["2.0"]), Err(BundleError::UnsupportedSchema { .. })));
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    pub fn verify(&self, now: OffsetDateTime, session_id: &str, supported: &[&str]) -> Result<(), BundleError> {
        if self.expires_at <= now {
            return Err(BundleError::Expired { expires_at: self.expires_at });
        }
        if self.session_id != session_id {
            return Err(BundleError::SessionMismatch { bundle: self.session_id.clone(), current: session_id.into() });
        }
        if !supported.contains(&self.schema_version.as_str()) {
            return Err(BundleError::UnsupportedSchema {
                version: self.schema_version.clone(),
                supported: supported.iter().map(|s| s.to_string()).collect(),
            });
        }
        Ok(())
    }
}
