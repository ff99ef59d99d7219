//! The CLI's commands over HTTP, like kubectl: `keys`, `get`, `set`,
//! `unset`, `cancel`, `history`, `audit`, against `POLICY_VALUES_URL` with
//! `POLICY_VALUES_TOKEN`. Tables for people, `--json` for scripts; a
//! refusal prints the server's code and message and exits 1.

use std::io::{IsTerminal, Write};

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::format;
use super::http::{Client, Connection};
use super::CliResult;

/// The scope, as flags: for `get`, any of them (what the caller knows);
/// for writes and `history`, at most one (the level; none: global); for
/// `audit`, a filter.
#[derive(Debug, Args, Default)]
pub struct ScopeFlags {
    /// User id (the user level).
    #[arg(long)]
    pub user: Option<String>,
    /// Project id (the project level).
    #[arg(long)]
    pub project: Option<String>,
    /// Organisation id (the org level).
    #[arg(long)]
    pub org: Option<String>,
    /// Plan name (the plan level).
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
    /// Resolve a key for a scope (any of --user, --project, --org, --plan).
    Get {
        /// The policy key (`policy-values keys` lists them).
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
    /// Set a value at one scope: at most one of --user, --project, --org,
    /// --plan; none: global.
    Set {
        /// The policy key.
        key: String,
        /// The new value, typed as the key's type (`45`, `-1`, `true`,
        /// `full-reimage`); after `--` if it starts with a hyphen and is not
        /// a number.
        #[arg(allow_negative_numbers = true)]
        value: String,
        #[command(flatten)]
        change: ChangeFlags,
    },
    /// Remove the value stored at one scope (none: global), so the next
    /// level answers.
    Unset {
        /// The policy key.
        key: String,
        #[command(flatten)]
        change: ChangeFlags,
    },
    /// Cancel a scheduled change by its value id.
    Cancel {
        /// The scheduled change's value id (`history` lists them).
        id: String,
        /// Why, for the audit log.
        #[arg(long)]
        reason: String,
    },
    /// Change requests for keys that need approval: list, show, approve,
    /// reject, withdraw.
    Requests {
        #[command(subcommand)]
        command: RequestsCommand,
    },
    /// Every change of a key at one scope (none: global).
    History {
        /// The policy key.
        key: String,
        #[command(flatten)]
        scope: ScopeFlags,
    },
}

#[derive(Debug, Subcommand)]
pub enum RequestsCommand {
    /// List change requests, newest first.
    List {
        /// Only requests in this state (pending, applied, scheduled,
        /// rejected, withdrawn, conflicted, expired).
        #[arg(long)]
        state: Option<String>,
        /// Only requests for this key.
        #[arg(long)]
        key: Option<String>,
        /// Only requests by this author (a token's name).
        #[arg(long)]
        author: Option<String>,
        /// How many (1 to 200).
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Show one change request with its approvals.
    Show {
        /// The request's id.
        id: String,
    },
    /// Approve a change request (not your own); the last approval needed applies it.
    Approve {
        /// The request's id (`requests list` shows them).
        id: String,
        /// Why, for the audit log.
        #[arg(long)]
        reason: String,
    },
    /// Reject a change request.
    Reject {
        /// The request's id (`requests list` shows them).
        id: String,
        /// Why, for the audit log.
        #[arg(long)]
        reason: String,
    },
    /// Withdraw your own change request.
    Withdraw {
        /// The request's id (`requests list` shows them).
        id: String,
        /// Why, for the audit log.
        #[arg(long)]
        reason: String,
    },
}

#[derive(Debug, Args)]
pub struct ChangeFlags {
    #[command(flatten)]
    pub scope: ScopeFlags,
    /// Why, for the audit log (required).
    #[arg(long)]
    pub reason: String,
    /// RFC 3339; in the future it schedules the change.
    #[arg(long)]
    pub effective_at: Option<String>,
    /// What the change replaces; without it the current value is read first
    /// and sent, so a concurrent change still fails with 409.
    #[arg(long, allow_negative_numbers = true)]
    pub old_value: Option<String>,
    /// Run every check and show what would change (and which overrides
    /// shadow it), writing nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct AuditFlags {
    /// Only records of this policy key.
    #[arg(long)]
    pub key: Option<String>,
    /// Only records by this actor (a token's name, `catalog-sync`, `anonymous`).
    #[arg(long)]
    pub actor: Option<String>,
    /// Only this action (`policy_value.set`, `policy_value.unset`,
    /// `policy_value.cancel`, `policy_key.create`, ...).
    #[arg(long)]
    pub action: Option<String>,
    /// Only `success` or `refused` attempts.
    #[arg(long)]
    pub outcome: Option<String>,
    #[command(flatten)]
    pub scope: ScopeFlags,
    /// Only records at or after this RFC 3339 time.
    #[arg(long)]
    pub from: Option<String>,
    /// Only records before this RFC 3339 time.
    #[arg(long)]
    pub to: Option<String>,
    /// How many of the newest records a table or JSON page shows (1 to 1,000).
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    /// table (the newest `limit` rows), json (the same as JSON), or csv
    /// (the whole filtered log, streamed, with the chain head at the end).
    #[arg(long, value_parser = ["table", "json", "csv"], default_value = "table")]
    pub format: String,
}

pub async fn run(conn: Connection, command: RemoteCommand) -> CliResult {
    let client = Client::new(conn);
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
        RemoteCommand::Requests { command } => requests(&client, command).await?,
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
    if change.dry_run {
        let preview = client.post("/api/v1/admin/policy-values/preview", &body).await?;
        client.print(&preview, format::preview);
        return Ok(());
    }
    let done = client.post("/api/v1/admin/policy-values", &body).await?;
    // A key that needs approval answers with a change request.
    if done.get("state").is_some() {
        client.print(&done, format::change_request);
    } else {
        client.print(&done, format::written);
    }
    Ok(())
}

/// `requests list|show|approve|reject|withdraw`.
async fn requests(client: &Client, command: RequestsCommand) -> CliResult {
    const BASE: &str = "/api/v1/admin/change-requests";
    let decide = |id: &str, verb: &str| format!("{BASE}/{id}/{verb}");
    let done = match command {
        RequestsCommand::List { state, key, author, limit } => {
            let limit = limit.to_string();
            let mut query = vec![("limit", limit.as_str())];
            for (name, v) in [("state", &state), ("key", &key), ("author", &author)] {
                if let Some(v) = v {
                    query.push((name, v.as_str()));
                }
            }
            let page = client.get(BASE, &query).await?;
            client.print(&page, format::change_requests);
            return Ok(());
        }
        RequestsCommand::Show { id } => client.get(&format!("{BASE}/{id}"), &[]).await?,
        RequestsCommand::Approve { id, reason } => {
            client.post(&decide(&id, "approve"), &json!({ "reason": reason })).await?
        }
        RequestsCommand::Reject { id, reason } => {
            client.post(&decide(&id, "reject"), &json!({ "reason": reason })).await?
        }
        RequestsCommand::Withdraw { id, reason } => {
            client.post(&decide(&id, "withdraw"), &json!({ "reason": reason })).await?
        }
    };
    client.print(&done, format::change_request);
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
    audit(&Client::new(conn), flags).await
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
    let req = client.http.get(client.url("/api/v1/admin/audit-logs")).query(query);
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
