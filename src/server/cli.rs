//! The command line: `serve`, `migrate`, `seed` and `token create`, all
//! working from `DATABASE_URL`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::domain::Catalog;
use crate::store::{self, keys, tokens, tokens::Role};

#[derive(Debug, Parser)]
#[command(
    name = "policy-values",
    version,
    about = "A scoped policy-values store over PostgreSQL"
)]
pub struct Cli {
    /// PostgreSQL connection URL.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Migrate, sync the catalog, then serve the HTTP API.
    Serve {
        /// Address to listen on.
        #[arg(long, env = "POLICY_VALUES_ADDR", default_value = "127.0.0.1:8080")]
        addr: String,
        /// Do not migrate at start (when serving as a role that may not).
        #[arg(long, env = "POLICY_VALUES_SKIP_MIGRATE")]
        skip_migrate: bool,
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
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    let url = cli
        .database_url
        .ok_or("DATABASE_URL is not set (use --database-url or the environment)")?;
    match cli.command {
        Command::Serve {
            addr,
            skip_migrate,
            catalog,
        } => {
            let pool = store::connect(&url, 16).await?;
            if !skip_migrate {
                store::migrate(&pool).await?;
            }
            sync(&pool, &catalog).await?;
            let app = super::Application::build(pool, &addr).await?;
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
        Command::Token {
            command:
                TokenCommand::Create {
                    role,
                    name,
                    expires_in_days,
                },
        } => {
            let role = Role::parse(&role).ok_or("role must be admin, auditor or reader")?;
            let pool = store::connect(&url, 2).await?;
            let token = super::auth::generate_token()?;
            let expires_at = expires_in_days
                .map(|d| time::OffsetDateTime::now_utc() + time::Duration::days(i64::from(d)));
            let id = tokens::insert(&pool, &name, role, &token, expires_at).await?;
            println!(
                "created {} token {name:?} (id {id}); it is shown once:",
                role.as_str()
            );
            println!("{token}");
        }
    }
    Ok(())
}

async fn sync(
    pool: &sqlx::PgPool,
    arg: &CatalogArg,
) -> Result<keys::SyncReport, Box<dyn std::error::Error>> {
    let (catalog, source) = match &arg.path {
        Some(path) => (
            Catalog::parse(&std::fs::read_to_string(path)?)?,
            path.display().to_string(),
        ),
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
            Err(format!(
                "catalog sync refused: {} stored value(s) would fall out of bounds",
                offending.len()
            )
            .into())
        }
        other => Ok(other?),
    }
}
