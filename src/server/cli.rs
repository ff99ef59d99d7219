//! The command line: `serve`, `migrate`, `seed` and `token create`, all
//! working from `DATABASE_URL`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::domain::Catalog;
use crate::store::{self, keys, tokens, tokens::Role};

#[derive(Debug, Parser)]
#[command(name = "policy-values", version, about = "A scoped policy-values store over PostgreSQL")]
pub struct Cli {
    /// PostgreSQL connection URL.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,
    #[command(flatten)]
    pub remote: super::remote::Connection,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    #[command(flatten)]
    Remote(super::remote::RemoteCommand),
    /// Migrate, sync the catalog, then serve the HTTP API.
    Serve {
        /// Address to listen on.
        #[arg(long, env = "POLICY_VALUES_ADDR", default_value = "127.0.0.1:8080")]
        addr: String,
        /// Do not migrate at start (when serving as a role that may not).
        #[arg(long, env = "POLICY_VALUES_SKIP_MIGRATE")]
        skip_migrate: bool,
        /// Admin writes per second allowed per token (token bucket).
        #[arg(long, env = "POLICY_VALUES_WRITE_RATE", default_value_t = 50.0)]
        write_rate: f64,
        /// Burst of admin writes allowed per token.
        #[arg(long, env = "POLICY_VALUES_WRITE_BURST", default_value_t = 100.0)]
        write_burst: f64,
        /// Seconds a request may take before it is answered 503 `timeout`.
        #[arg(long, env = "POLICY_VALUES_REQUEST_TIMEOUT", default_value_t = 30)]
        request_timeout: u64,
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
    pub query: super::remote::AuditFlags,
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
        #[arg(long, value_parser = ["admin", "auditor", "reader"])]
        role: String,
        /// Who the token is for; it becomes the actor in the audit log.
        #[arg(long)]
        name: String,
        /// Days until the token expires (default: never).
        #[arg(long)]
        expires_in_days: Option<u32>,
    },
    /// List tokens (names, roles, prefixes, expiry; never secrets).
    List,
    /// Revoke a token by id or name; it is refused from its next request.
    Revoke { id_or_name: String },
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    match cli.command {
        Command::Lint { paths, format, catalog } => {
            return lint(cli.database_url.as_deref(), &paths, &format, &catalog).await;
        }
        Command::Remote(command) => return super::remote::run(cli.remote, command).await,
        Command::Audit(AuditArgs { command: None, query }) => {
            return super::remote::audit_command(cli.remote, query).await;
        }
        _ => {}
    }
    let url = cli.database_url.ok_or("DATABASE_URL is not set (use --database-url or the environment)")?;
    match cli.command {
        Command::Serve { addr, skip_migrate, write_rate, write_burst, request_timeout, catalog } => {
            let pool = store::connect(&url, 16).await?;
            if !skip_migrate {
                store::migrate(&pool).await?;
            }
            sync(&pool, &catalog).await?;
            let config = super::ServerConfig {
                write_rate: super::limits::WriteRate { rate: write_rate, burst: write_burst },
                request_timeout: std::time::Duration::from_secs(request_timeout),
            };
            let app = super::Application::build_with(pool, &addr, &config).await?;
            tracing::info!(%addr, port = app.port(), "serving");
            app.run_until_stopped(super::shutdown_signal()).await?;
        }
        Command::Migrate => {
            let pool = store::connect(&url, 2).await?;
            store::migrate(&pool).await?;
            println!("migrations applied");
        }
        Command::Seed { catalog } => {
            let pool = store::connect(&url, 2).await?;
            let report = sync(&pool, &catalog).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        Command::Token { command: TokenCommand::Create { role, name, expires_in_days } } => {
            let role = Role::parse(&role).ok_or("role must be admin, auditor or reader")?;
            let pool = store::connect(&url, 2).await?;
            let token = super::auth::generate_token()?;
            let expires_at =
                expires_in_days.map(|d| time::OffsetDateTime::now_utc() + time::Duration::days(i64::from(d)));
            let id = tokens::insert(&pool, &name, role, &token, expires_at).await?;
            println!("created {} token {name:?} (id {id}); it is shown once:", role.as_str());
            println!("{token}");
        }
        Command::Token { command: TokenCommand::List } => {
            let pool = store::connect(&url, 2).await?;
            for t in tokens::list(&pool).await? {
                let state = match (t.revoked_at, t.expires_at) {
                    (Some(_), _) => "revoked".to_string(),
                    (None, Some(at)) if at <= time::OffsetDateTime::now_utc() => "expired".to_string(),
                    (None, Some(at)) => format!("expires {at}"),
                    (None, None) => "active".to_string(),
                };
                println!("{}  {:<8} {:<24} {}...  {state}", t.id, t.role, t.name, t.prefix);
            }
        }
        Command::Token { command: TokenCommand::Revoke { id_or_name } } => {
            let pool = store::connect(&url, 2).await?;
            match tokens::revoke(&pool, &id_or_name).await? {
                0 => return Err(format!("no active token with id or name {id_or_name:?}").into()),
                n => println!("revoked {n} token(s)"),
            }
        }
        Command::Audit(AuditArgs { command: Some(AuditCommand::Verify), .. }) => audit_verify(&url).await?,
        Command::Audit(AuditArgs { command: None, .. }) => unreachable!("handled above"),
        Command::Lint { .. } | Command::Remote(_) => unreachable!("handled above"),
    }
    Ok(())
}

/// Lints `paths` against the catalog; findings are an error (exit 1).
async fn lint(
    url: Option<&str>,
    paths: &[PathBuf],
    format: &str,
    arg: &CatalogArg,
) -> Result<(), Box<dyn std::error::Error>> {
    let catalog = match (&arg.path, url) {
        (Some(path), _) => Catalog::parse(&std::fs::read_to_string(path)?)?,
        (None, Some(url)) => Catalog { keys: keys::list(&store::connect(url, 1).await?).await? },
        (None, None) => Catalog::builtin()?,
    };
    let findings = crate::lint::lint_paths(paths, &catalog)?;
    match format {
        "json" => println!("{}", serde_json::to_string_pretty(&findings)?),
        _ => print!("{}", crate::lint::format_text(&findings)),
    }
    match findings.len() {
        0 => Ok(()),
        n => Err(format!("{n} constant(s) named like a policy key; read them through PolicyClient").into()),
    }
}

/// Prints the verification; an error (exit 1) when the chain is broken.
async fn audit_verify(url: &str) -> Result<(), Box<dyn std::error::Error>> {
    let pool = store::connect(url, 2).await?;
    match store::audit_query::verify(&pool).await? {
        store::audit_query::Verification::Intact { rows, head } => {
            let head = head.map_or("none".to_string(), |h| format!("seq {} hash {}", h.seq, h.hash));
            println!("intact: {rows} rows, head {head}");
            Ok(())
        }
        store::audit_query::Verification::Broken { seq, reason, rows_checked } => {
            println!("broken at seq {seq}: {reason} ({rows_checked} rows before it are intact)");
            Err("the audit chain is broken".into())
        }
    }
}

async fn sync(pool: &sqlx::PgPool, arg: &CatalogArg) -> Result<keys::SyncReport, Box<dyn std::error::Error>> {
    let (catalog, source) = match &arg.path {
        Some(path) => (Catalog::parse(&std::fs::read_to_string(path)?)?, path.display().to_string()),
        None => (Catalog::builtin()?, "the built-in catalog".to_string()),
    };
    let reason = format!("catalog sync from {source}");
    match keys::sync(pool, &catalog, "catalog-sync", &reason).await {
        Err(store::StoreError::CatalogConflict(offending)) => {
            for o in &offending {
                eprintln!(
                    "refused: {} at {} {:?} holds {} (value {}): {}",
                    o.key, o.level, o.scope_id, o.value, o.value_id, o.problem
                );
            }
            Err(format!("catalog sync refused: {} stored value(s) would fall out of bounds", offending.len()).into())
        }
        other => Ok(other?),
    }
}
