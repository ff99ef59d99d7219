//! The CLI's commands over HTTP, like kubectl: `keys`, `get`, `set`,
//! `unset`, `cancel`, `history`, `audit`, against `POLICY_VALUES_URL` with
//! `POLICY_VALUES_TOKEN`. Tables for people, `--json` for scripts; a
//! refusal prints the server's code and message and exits 1.

use std::io::{IsTerminal, Write};

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::remote_format as format;

/// Where the server is and who is asking.
#[derive(Debug, Args)]
pub struct Connection {
    /// The server's base URL.
    #[arg(long, env = "POLICY_VALUES_URL", default_value = "http://127.0.0.1:8080", global = true)]
    pub url: String,
    /// A bearer token (reader for reads, auditor for history and audit, admin for writes).
    #[arg(long, env = "POLICY_VALUES_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Print the server's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// One level of scope, as flags.
#[derive(Debug, Args, Default)]
pub struct ScopeFlags {
    #[arg(long)]
    pub user: Option<String>,
    #[arg(long)]
    pub project: Option<String>,
    #[arg(long)]
    pub org: Option<String>,
    #[arg(long)]
    pub plan: Option<String>,
}

impl ScopeFlags {
    fn pairs(&self) -> Vec<(&'static str, &str)> {
        [("user_id", &self.user), ("project_id", &self.project), ("org_id", &self.org), ("plan", &self.plan)]
            .into_iter()
            .filter_map(|(field, id)| Some((field, id.as_deref()?)))
            .collect()
    }

    /// The write scope: at most one flag, none for global.
    fn write_scope(&self) -> Result<Value, String> {
        match self.pairs().as_slice() {
            [] => Ok(json!({})),
            [(field, id)] => Ok(json!({ *field: id })),
            _ => Err("a write names at most one of --user, --project, --org, --plan (none: global)".into()),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum RemoteCommand {
    /// List the catalog.
    Keys,
    /// Resolve a key for a scope.
    Get {
        key: String,
        #[command(flatten)]
        scope: ScopeFlags,
        /// Answer as of this RFC 3339 time.
        #[arg(long)]
        at: Option<String>,
        /// Show every level consulted.
        #[arg(long)]
        explain: bool,
    },
    /// Set a value at one scope (none: global).
    Set {
        key: String,
        value: String,
        #[command(flatten)]
        change: ChangeFlags,
    },
    /// Remove the override at one scope.
    Unset {
        key: String,
        #[command(flatten)]
        change: ChangeFlags,
    },
    /// Cancel a scheduled change by its value id.
    Cancel {
        id: String,
        #[arg(long)]
        reason: String,
    },
    /// Every change of a key at one scope (none: global).
    History {
        key: String,
        #[command(flatten)]
        scope: ScopeFlags,
    },
}

#[derive(Debug, Args)]
pub struct ChangeFlags {
    #[command(flatten)]
    pub scope: ScopeFlags,
    #[arg(long)]
    pub reason: String,
    /// RFC 3339; in the future it schedules the change.
    #[arg(long)]
    pub effective_at: Option<String>,
    /// What the change replaces; without it the current value is read first
    /// and sent, so a concurrent change still fails with 409.
    #[arg(long)]
    pub old_value: Option<String>,
}

#[derive(Debug, Args)]
pub struct AuditFlags {
    #[arg(long)]
    pub key: Option<String>,
    #[arg(long)]
    pub actor: Option<String>,
    #[arg(long)]
    pub action: Option<String>,
    #[arg(long)]
    pub outcome: Option<String>,
    #[command(flatten)]
    pub scope: ScopeFlags,
    #[arg(long)]
    pub from: Option<String>,
    #[arg(long)]
    pub to: Option<String>,
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    /// table (the newest `limit` rows), json (the same as JSON), or csv
    /// (the whole filtered log, streamed, with the chain head at the end).
    #[arg(long, value_parser = ["table", "json", "csv"], default_value = "table")]
    pub format: String,
}

type CliResult = Result<(), Box<dyn std::error::Error>>;

struct Client {
    conn: Connection,
    http: reqwest::Client,
}

impl Client {
    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, Box<dyn std::error::Error>> {
        let req = match &self.conn.token {
            Some(token) => req.bearer_auth(token),
            None => req,
        };
        let response = req.send().await.map_err(|e| format!("cannot reach {}: {e}", self.conn.url))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let body: Value = response.json().await.unwrap_or_default();
        let code = body["code"].as_str().unwrap_or("error");
        let message = body["message"].as_str().unwrap_or("no message");
        let details = match &body["details"] {
            Value::Object(map) if !map.is_empty() => format!(" {}", body["details"]),
            _ => String::new(),
        };
        Err(format!("{} {code}: {message}{details}", status.as_u16()).into())
    }

    async fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<Value, Box<dyn std::error::Error>> {
        let req = self.http.get(format!("{}{path}", self.conn.url)).query(query);
        Ok(self.send(req).await?.json().await?)
    }

    async fn post(&self, path: &str, body: &Value) -> Result<Value, Box<dyn std::error::Error>> {
        let req = self.http.post(format!("{}{path}", self.conn.url)).json(body);
        Ok(self.send(req).await?.json().await?)
    }

    fn print(&self, json: &Value, table: impl FnOnce(&Value) -> String) {
        if self.conn.json {
            println!("{}", serde_json::to_string_pretty(json).unwrap_or_default());
        } else {
            print!("{}", table(json));
        }
    }
}

pub async fn run(conn: Connection, command: RemoteCommand) -> CliResult {
    let client = Client { conn, http: reqwest::Client::new() };
    match command {
        RemoteCommand::Keys => {
            let keys = client.get("/api/v1/policy-keys", &[]).await?;
            client.print(&keys, format::keys);
        }
        RemoteCommand::Get { key, scope, at, explain } => {
            let mut query = vec![("key", key.as_str())];
            query.extend(scope.pairs());
            if let Some(at) = &at {
                query.push(("at", at));
            }
            let answer = client.get("/api/v1/policy-values/resolve", &query).await?;
            client.print(&answer, |a| format::resolution(a, explain));
        }
        RemoteCommand::Set { key, value, change } => write(&client, &key, Some(&value), change).await?,
        RemoteCommand::Unset { key, change } => write(&client, &key, None, change).await?,
        RemoteCommand::Cancel { id, reason } => {
            let done =
                client.post(&format!("/api/v1/admin/policy-values/{id}/cancel"), &json!({ "reason": reason })).await?;
            client.print(&done, format::written);
        }
        RemoteCommand::History { key, scope } => {
            let mut query = vec![("key", key.as_str())];
            query.extend(scope.pairs());
            let history = client.get("/api/v1/admin/policy-values/history", &query).await?;
            client.print(&history, format::history);
        }
    }
    Ok(())
}

/// Sets or removes a value, reading `old_value` first unless it was given.
async fn write(client: &Client, key: &str, value: Option<&str>, change: ChangeFlags) -> CliResult {
    let scope = change.scope.write_scope()?;
    let mut query = vec![("key", key)];
    query.extend(change.scope.pairs());
    let current = client.get("/api/v1/policy-values/resolve", &query).await?;
    let value_type = current["type"].as_str().unwrap_or("string");
    let old_value = match &change.old_value {
        Some(raw) => format::typed(raw, value_type)?,
        None => current["value"].clone(),
    };
    let new_value = value.map(|raw| format::typed(raw, value_type)).transpose()?.unwrap_or(Value::Null);
    let mut body =
        json!({ "key": key, "scope": scope, "value": new_value, "reason": change.reason, "old_value": old_value });
    if let Some(at) = change.effective_at {
        body["effective_at"] = json!(at);
    }
    let done = client.post("/api/v1/admin/policy-values", &body).await?;
    client.print(&done, format::written);
    Ok(())
}

fn audit_query(flags: &AuditFlags) -> Vec<(&'static str, String)> {
    let mut query: Vec<(&'static str, String)> = [
        ("policy_key", &flags.key),
        ("actor", &flags.actor),
        ("action", &flags.action),
        ("outcome", &flags.outcome),
        ("from", &flags.from),
        ("to", &flags.to),
    ]
    .into_iter()
    .filter_map(|(name, v)| Some((name, v.clone()?)))
    .collect();
    query.extend(flags.scope.pairs().into_iter().map(|(k, v)| (k, v.to_string())));
    query
}

/// `policy-values audit [filters]`: a page as a table or JSON, or the
/// whole filtered log as CSV.
pub async fn audit_command(conn: Connection, flags: AuditFlags) -> CliResult {
    audit(&Client { conn, http: reqwest::Client::new() }, flags).await
}

async fn audit(client: &Client, flags: AuditFlags) -> CliResult {
    let mut query = audit_query(&flags);
    if flags.format == "csv" {
        query.push(("format", "csv".into()));
        return export(client, &query).await;
    }
    query.push(("limit", flags.limit.to_string()));
    let refs: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let page = client.get("/api/v1/admin/audit-logs", &refs).await?;
    if flags.format == "json" || client.conn.json {
        println!("{}", serde_json::to_string_pretty(&page["items"])?);
    } else {
        print!("{}", format::audit(&page));
    }
    Ok(())
}

/// Streams the export to standard output, with progress on a terminal.
async fn export(client: &Client, query: &[(&str, String)]) -> CliResult {
    let req = client.http.get(format!("{}/api/v1/admin/audit-logs", client.conn.url)).query(query);
    let mut response = client.send(req).await?;
    let progress = std::io::stderr().is_terminal();
    let (mut out, mut lines) = (std::io::stdout().lock(), 0u64);
    while let Some(chunk) = response.chunk().await? {
        out.write_all(&chunk)?;
        lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
        if progress {
            eprint!("\r{lines} lines exported");
        }
    }
    out.flush()?;
    if progress {
        eprintln!();
    }
    Ok(())
}
