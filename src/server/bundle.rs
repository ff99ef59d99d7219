//! `GET /api/v1/policy-bundles`: seed 004's policy bundle for a tenant, a
//! user and a session, assembled from the `agent.*` keys resolved for that
//! tenant (the org scope) and user, from the server's replica. See
//! docs/bundles.md.

use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};

use super::error::ApiError;
use super::extract::QueryParams;
use super::AppState;
use crate::client::{List, PolicyClient, PolicyError, PolicyType};
use crate::domain::bundle::{ApprovalRule, Bundle, Capability, LlmPolicy, SCHEMA_VERSION};
use crate::domain::{Level, Scope};

/// A scope field of the seed's capability entries, and the key segment
/// (`agent.<capability>.<segment>`) that holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    AllowedPaths,
    BlockedPaths,
    AllowedCommands,
    BlockedCommands,
    AllowedDomains,
    MaxFileSizeBytes,
    MaxOutputBytes,
}

impl Field {
    fn segment(self) -> &'static str {
        match self {
            Field::AllowedPaths => "allowed_paths",
            Field::BlockedPaths => "blocked_paths",
            Field::AllowedCommands => "allowed_commands",
            Field::BlockedCommands => "blocked_commands",
            Field::AllowedDomains => "allowed_domains",
            Field::MaxFileSizeBytes => "max_file_size_bytes",
            Field::MaxOutputBytes => "max_output_bytes",
        }
    }
}

use Field::*;

/// The seed's capability table: name, key segment, scope fields.
const CAPABILITIES: [(&str, &str, &[Field]); 12] = [
    ("File.Read", "file_read", &[AllowedPaths, BlockedPaths, MaxFileSizeBytes]),
    ("File.Write", "file_write", &[AllowedPaths, BlockedPaths, MaxFileSizeBytes]),
    ("File.Delete", "file_delete", &[AllowedPaths, BlockedPaths]),
    ("Shell.Exec", "shell_exec", &[AllowedCommands, BlockedCommands, MaxOutputBytes]),
    ("Network.Http", "network_http", &[AllowedDomains]),
    ("Git.Status", "git_status", &[]),
    ("Git.Diff", "git_diff", &[]),
    ("Git.Commit", "git_commit", &[]),
    ("Git.Push", "git_push", &[]),
    ("Workspace.Upload", "workspace_upload", &[MaxFileSizeBytes]),
    ("BackendTool.Invoke", "backend_tool_invoke", &[]),
    ("LLM.Call", "llm_call", &[]),
];

const LIFETIME: &str = "agent.bundle.lifetime_seconds";
const LLM_KEYS: [&str; 4] = [
    "agent.llm.allowed_models",
    "agent.llm.max_input_tokens",
    "agent.llm.max_output_tokens",
    "agent.llm.max_session_tokens",
];

/// The query, in the seed's parameter names.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BundleParams {
    tenant_id: Option<String>,
    user_id: Option<String>,
    session_id: Option<String>,
    capabilities: Option<String>,
}

fn missing(field: &'static str) -> ApiError {
    ApiError::unprocessable("missing_field", format!("{field} is required")).with_details(json!({ "field": field }))
}

/// A session id: 1 to 256 characters, no control characters.
fn session_id(raw: Option<String>) -> Result<String, ApiError> {
    let raw = raw.ok_or_else(|| missing("sessionId"))?;
    if raw.is_empty() || raw.chars().count() > 256 || raw.chars().any(char::is_control) {
        return Err(ApiError::unprocessable(
            "invalid_session_id",
            "sessionId must be 1 to 256 characters without control characters",
        ));
    }
    Ok(raw)
}

/// The capabilities asked for, in table order; all of them when not given.
fn requested(raw: Option<&str>) -> Result<Vec<usize>, ApiError> {
    let Some(raw) = raw else {
        return Ok((0..CAPABILITIES.len()).collect());
    };
    let mut wanted = vec![false; CAPABILITIES.len()];
    let names = raw.split(',').map(str::trim).filter(|n| !n.is_empty());
    let unknown: Vec<&str> =
        names.filter(|n| CAPABILITIES.iter().position(|c| c.0 == *n).map(|i| wanted[i] = true).is_none()).collect();
    if !unknown.is_empty() {
        let known: Vec<&str> = CAPABILITIES.iter().map(|c| c.0).collect();
        return Err(ApiError::unprocessable("unknown_capability", format!("unknown capabilities {unknown:?}"))
            .with_details(json!({ "unknown": unknown, "known": known })));
    }
    Ok((0..CAPABILITIES.len()).filter(|i| wanted[*i]).collect())
}

/// Reads bundle keys for one scope; a key missing from the catalog is a
/// server without the agent namespace synced (503 `not_ready`).
struct Reader<'a> {
    client: &'a PolicyClient,
    scope: &'a Scope,
    keys: Vec<String>,
}

impl Reader<'_> {
    fn get<T: PolicyType>(&mut self, key: String) -> Result<T, ApiError> {
        let value = self.client.get::<T>(self.scope, &key).map_err(|e| {
            let message = match e {
                PolicyError::Unavailable(_) => "no value is known: the database is unreachable".to_string(),
                other => format!("the bundle cannot be assembled: {other}"),
            };
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", message)
        })?;
        self.keys.push(key);
        Ok(value)
    }

    fn list(&mut self, key: String) -> Result<Vec<String>, ApiError> {
        Ok(self.get::<List>(key)?.iter().map(|i| i.to_string()).collect())
    }
}

fn capability(reader: &mut Reader<'_>, index: usize) -> Result<Option<(Capability, Option<ApprovalRule>)>, ApiError> {
    let (name, seg, fields) = CAPABILITIES[index];
    if !reader.get::<bool>(format!("agent.{seg}.allowed"))? {
        return Ok(None);
    }
    let mut cap = Capability {
        name: name.to_string(),
        allowed_paths: None,
        blocked_paths: None,
        allowed_commands: None,
        blocked_commands: None,
        allowed_domains: None,
        max_file_size_bytes: None,
        max_output_bytes: None,
        requires_approval: reader.get::<bool>(format!("agent.{seg}.requires_approval"))?,
        approval_rule_id: None,
    };
    for field in fields {
        let key = format!("agent.{seg}.{}", field.segment());
        let non_empty = |list: Vec<String>| (!list.is_empty()).then_some(list);
        match field {
            AllowedPaths => cap.allowed_paths = Some(reader.list(key)?),
            BlockedPaths => cap.blocked_paths = non_empty(reader.list(key)?),
            AllowedCommands => cap.allowed_commands = Some(reader.list(key)?),
            BlockedCommands => cap.blocked_commands = non_empty(reader.list(key)?),
            AllowedDomains => cap.allowed_domains = Some(reader.list(key)?),
            MaxFileSizeBytes => cap.max_file_size_bytes = Some(reader.get(key)?),
            MaxOutputBytes => cap.max_output_bytes = Some(reader.get(key)?),
        }
    }
    let mut rule = None;
    if cap.requires_approval {
        let id = format!("approval_{seg}");
        let title = reader.get::<std::sync::Arc<str>>(format!("agent.{id}.title"))?.to_string();
        let description = reader.get::<std::sync::Arc<str>>(format!("agent.{id}.description"))?.to_string();
        cap.approval_rule_id = Some(id.clone());
        rule = Some(ApprovalRule { approval_rule_id: id, title, description });
    }
    Ok(Some((cap, rule)))
}

/// `YYYY-MM-DD.N` from the newest row in force among the bundle's keys.
fn version(client: &PolicyClient, scope: &Scope, keys: &[String]) -> String {
    let position = client.scope_position(scope, keys.iter().map(String::as_str));
    let date = position.effective_at.unwrap_or(OffsetDateTime::UNIX_EPOCH).date();
    format!("{date}.{}", position.seq)
}

/// Assembles the bundle as of `issued` (a whole minute).
fn assemble(client: &PolicyClient, params: BundleParams, issued: OffsetDateTime) -> Result<Bundle, ApiError> {
    let tenant_id = params.tenant_id.ok_or_else(|| missing("tenantId"))?;
    let user_id = params.user_id.ok_or_else(|| missing("userId"))?;
    let session_id = session_id(params.session_id)?;
    let wanted = requested(params.capabilities.as_deref())?;
    let scope = Scope::new()
        .with(Level::Org, &tenant_id)
        .and_then(|s| s.with(Level::User, &user_id))
        .map_err(ApiError::bad_scope)?;
    let mut reader = Reader { client, scope: &scope, keys: Vec::new() };
    let lifetime: i64 = reader.get(LIFETIME.to_string())?;
    let mut capabilities = Vec::new();
    let mut approval_rules = Vec::new();
    for index in wanted {
        if let Some((cap, rule)) = capability(&mut reader, index)? {
            capabilities.push(cap);
            approval_rules.extend(rule);
        }
    }
    let [models, input, output, session] = LLM_KEYS.map(String::from);
    let llm_policy = LlmPolicy {
        allowed_models: reader.list(models)?,
        max_input_tokens: reader.get(input)?,
        max_output_tokens: reader.get(output)?,
        max_session_tokens: reader.get(session)?,
    };
    Ok(Bundle {
        policy_bundle_version: version(client, &scope, &reader.keys),
        schema_version: SCHEMA_VERSION.to_string(),
        tenant_id,
        user_id,
        session_id,
        expires_at: issued + Duration::seconds(lifetime),
        capabilities,
        llm_policy,
        approval_rules,
    })
}

/// The bundle for a tenant, user and session, with an ETag (a digest of the
/// document, which is the same for the same values within one minute).
pub async fn policy_bundle(
    State(state): State<AppState>,
    headers: HeaderMap,
    QueryParams(params): QueryParams<BundleParams>,
) -> Result<Response, ApiError> {
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap_or(OffsetDateTime::now_utc());
    let issued = now - Duration::seconds(i64::from(now.second()));
    let bundle = assemble(&state.replica, params, issued)?;
    let body = serde_json::to_vec(&bundle).map_err(|e| {
        tracing::error!(error = %e, "bundle serialization");
        ApiError::internal()
    })?;
    let etag = format!("W/\"{}.{}\"", bundle.policy_bundle_version, hex::encode(&Sha256::digest(&body)[..12]));
    let etag = HeaderValue::from_str(&etag).map_err(|_| ApiError::internal())?;
    let cache = (CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if super::read::none_match(&headers, etag.to_str().unwrap_or_default()) {
        return Ok((StatusCode::NOT_MODIFIED, [(ETAG, etag), cache]).into_response());
    }
    let json_type = (CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok((StatusCode::OK, [(ETAG, etag), cache, json_type], body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_are_read_in_table_order_and_unknown_names_list_the_known_ones() {
        assert_eq!(requested(Some("Shell.Exec,File.Read")).unwrap(), [0, 3]);
        assert_eq!(requested(None).unwrap().len(), 12);
        let err = requested(Some("File.Read,Teleport")).unwrap_err();
        assert_eq!(err.code, "unknown_capability");
        assert_eq!(err.details["unknown"], json!(["Teleport"]));
        assert_eq!(err.details["known"].as_array().unwrap().len(), 12);
    }
}
