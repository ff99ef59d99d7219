//! The command line: its arguments, and `run`, which sends each command to
//! the database (`database`: `serve`, `migrate`, `seed`, `token`, `audit
//! verify`, `lint`) or to a server over HTTP (`remote`: `keys`, `get`, `set`,
//! `unset`, `cancel`, `history`, `audit`).

mod database;
pub mod format;
pub mod http;
pub mod remote;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "policy-values", version, about = "A scoped policy-values store over PostgreSQL")]
pub struct Cli {
    /// PostgreSQL connection URL.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,
    #[command(flatten)]
    pub remote: http::Connection,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    #[command(flatten)]
    Remote(remote::RemoteCommand),
    /// Migrate, sync the catalog, then serve the HTTP API.
    Serve {
        /// Address to listen on.
        #[arg(long, env = "POLICY_VALUES_ADDR", default_value = "127.0.0.1:8080")]
        addr: String,
        /// Do not migrate at start (when serving as a role that may not).
        #[arg(long, env = "POLICY_VALUES_SKIP_MIGRATE")]
        skip_migrate: bool,
        /// Admin writes per second allowed per token (on average; see --write-burst).
        #[arg(long, env = "POLICY_VALUES_WRITE_RATE", default_value_t = 50.0)]
        write_rate: f64,
        /// Burst of admin writes allowed per token.
        #[arg(long, env = "POLICY_VALUES_WRITE_BURST", default_value_t = 100.0)]
        write_burst: f64,
        /// Seconds a request may take before it is answered 503 `timeout`.
        #[arg(long, env = "POLICY_VALUES_REQUEST_TIMEOUT", default_value_t = 30)]
        request_timeout: u64,
        /// Seconds verified tokens stay valid after the database is lost
        /// (revocations cannot be heard meanwhile).
        #[arg(long, env = "POLICY_VALUES_AUTH_GRACE", default_value_t = 300)]
        auth_grace: u64,
        /// Keep the replica's snapshot file here, and serve reads from it
        /// when the database is away at start.
        #[arg(long, env = "POLICY_VALUES_SNAPSHOT")]
        snapshot: Option<PathBuf>,
        /// Hours a pending change request waits for its approvals before
        /// it expires.
        #[arg(long, env = "POLICY_VALUES_CHANGE_REQUEST_TTL_HOURS", default_value_t = 168)]
        change_request_ttl_hours: u64,
        #[command(flatten)]
        catalog: CatalogArg,
    },
    /// Apply the database migrations.
    Migrate,
    /// Sync the key catalog into the database (idempotent, audited).
    Seed {
        #[command(flatten)]
        catalog: CatalogArg,
    },
    /// Manage API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Query the audit log over HTTP (filters, --format table|json|csv), or
    /// `audit verify` the hash chain from the database directly.
    Audit(AuditArgs),
    /// Report constants in source code named like a policy key (exit 1 on findings).
    Lint {
        /// Files or directories (Rust, Go, TypeScript/JavaScript, Python).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// text (file:line:column: key: message) or json.
        #[arg(long, value_parser = ["text", "json"], default_value = "text")]
        format: String,
        /// The catalog to match against; default: the database's if
        /// DATABASE_URL is set, else the built-in one.
        #[command(flatten)]
        catalog: CatalogArg,
    },
}

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub command: Option<AuditCommand>,
    #[command(flatten)]
    pub query: remote::AuditFlags,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute the hash chain; exit 0 if intact, 1 if broken.
    Verify,
}

#[derive(Debug, clap::Args)]
pub struct CatalogArg {
    /// The catalog file; by default the catalog built into this binary
    /// (seed/catalog.toml at build time).
    #[arg(long = "catalog", env = "POLICY_VALUES_CATALOG")]
    pub path: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token; it is printed once, as the last line of the output.
    Create {
        /// admin (writes), auditor (the audit log), or reader (resolve).
        #[arg(long, value_parser = ["admin", "auditor", "reader"])]
        role: String,
        /// Who the token is for; it becomes the actor in the audit log.
        #[arg(long)]
        name: String,
        /// Days until the token expires (default: never).
        #[arg(long)]
        expires_in_days: Option<u32>,
        /// Limit the token to keys matching this pattern (`billing.*`);
        /// repeat for more. Default: every key.
        #[arg(long)]
        keys: Vec<String>,
        /// Limit the token to these levels (`org,user`); default: every level.
        #[arg(long)]
        levels: Vec<String>,
    },
    /// List tokens (names, roles, prefixes, expiry; never secrets).
    List,
    /// Revoke a token by id or name; it is refused from its next request.
    Revoke {
        /// The token's id or name (`token list` shows both).
        id_or_name: String,
    },
}

type CliResult = Result<(), Box<dyn std::error::Error>>;

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> CliResult {
    let Cli { database_url, remote, command } = cli;
    match command {
        Command::Lint { paths, format, catalog } => {
            database::lint(database_url.as_deref(), &paths, &format, &catalog).await
        }
        Command::Remote(command) => remote::run(remote, command).await,
        Command::Audit(AuditArgs { command: None, query }) => remote::audit_command(remote, query).await,
        command => {
            let url = database_url.ok_or("DATABASE_URL is not set (use --database-url or the environment)")?;
            database::run(&url, command).await
        }
    }
}
