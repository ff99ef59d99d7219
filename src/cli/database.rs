//! The commands that work on the database directly, from `DATABASE_URL`:
//! `serve`, `migrate`, `seed`, `token`, `audit verify`, and `lint` (against
//! the database's catalog when there is one).

use std::path::PathBuf;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, PgPool};

use super::{AuditArgs, AuditCommand, CatalogArg, CliResult, Command, TokenCommand};
use crate::domain::Catalog;
use crate::server;
use crate::store::{self, keys, tokens, tokens::Role};

/// Runs a command that needs the database at `url`.
pub(super) async fn run(url: &str, command: Command) -> CliResult {
    match command {
        Command::Serve {
            addr,
            skip_migrate,
            write_rate,
            write_burst,
            request_timeout,
            auth_grace,
            snapshot,
            change_request_ttl_hours,
            catalog,
        } => {
            let config = server::ServerConfig {
                write_rate: server::limits::WriteRate { rate: write_rate, burst: write_burst },
                request_timeout: std::time::Duration::from_secs(request_timeout),
                auth_grace: std::time::Duration::from_secs(auth_grace),
                snapshot_path: snapshot,
                feed: server::feed::FeedConfig::default(),
                change_request_ttl: std::time::Duration::from_secs(change_request_ttl_hours.saturating_mul(3600)),
            };
            serve(url, &addr, skip_migrate, &config, &catalog).await?;
        }
        Command::Migrate => {
            let pool = connect(url, 2).await?;
            store::migrate(&pool).await?;
            println!("migrations applied");
        }
        Command::Seed { catalog } => {
            let pool = connect(url, 2).await?;
            let report = sync(&pool, &catalog).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        Command::Token { command } => token(url, command).await?,
        Command::Audit(AuditArgs { command: Some(AuditCommand::Verify), .. }) => audit_verify(url).await?,
        Command::Audit(AuditArgs { command: None, .. }) | Command::Lint { .. } | Command::Remote(_) => {
            unreachable!("handled by cli::run")
        }
    }
    Ok(())
}

/// Migrates (unless told not to), syncs the catalog, then serves until a
/// shutdown signal. With a snapshot file configured, a database that does
/// not answer at start is not fatal: the server serves reads from the file
/// (writes answer 503) and catches up when the database is back; migrating
/// and syncing the catalog then wait for the next start.
async fn serve(
    url: &str,
    addr: &str,
    skip_migrate: bool,
    config: &server::ServerConfig,
    catalog: &CatalogArg,
) -> CliResult {
    let pool = match connect(url, 16).await {
        Ok(pool) => pool,
        Err(e) if e.unreachable && config.snapshot_path.is_some() => {
            tracing::warn!(error = %e, "the database does not answer; serving from the snapshot file");
            let server = server::Application::build_with(store::connect_lazy(url, 16)?, addr, config).await?;
            tracing::info!(%addr, port = server.port(), "serving (database unavailable)");
            server.run_until_stopped(server::shutdown_signal()).await?;
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    if !skip_migrate {
        store::migrate(&pool).await?;
    }
    sync(&pool, catalog).await?;
    let app = server::Application::build_with(pool, addr, config).await?;
    tracing::info!(%addr, port = app.port(), "serving");
    app.run_until_stopped(server::shutdown_signal()).await?;
    Ok(())
}

/// A pool for the database at `url`. When the database cannot be reached,
/// the error names its host, port and database (never the password) and
/// why: the pool alone would retry a refused connection until its timeout
/// and then say only that it timed out, so one connection is tried first.
/// Why the database could not be used, in words that name it (never its
/// password); `unreachable` when it did not answer at all.
#[derive(Debug)]
struct ConnectError {
    message: String,
    unreachable: bool,
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConnectError {}

async fn connect(url: &str, max_connections: u32) -> Result<PgPool, ConnectError> {
    let refused = |message: String, unreachable: bool| ConnectError { message, unreachable };
    let options: PgConnectOptions =
        url.parse().map_err(|e| refused(format!("DATABASE_URL is not a PostgreSQL connection URL: {e}"), false))?;
    let database = options.get_database().unwrap_or(options.get_username());
    let place = format!("database {database:?} on {}:{}", options.get_host(), options.get_port());
    match tokio::time::timeout(Duration::from_secs(10), PgConnection::connect_with(&options)).await {
        Err(_) => return Err(refused(format!("cannot connect to the {place}: no answer within 10 s"), true)),
        Ok(Err(e)) => {
            let unreachable = store::unreachable_database(&e);
            return Err(refused(format!("cannot connect to the {place}: {}", connect_failure(&e)), unreachable));
        }
        Ok(Ok(probe)) => {
            let _ = probe.close().await;
        }
    }
    store::connect(url, max_connections)
        .await
        .map_err(|e| refused(format!("cannot connect to the {place}: {e}"), e.is_unavailable()))
}

/// Why a connection failed, in words that carry no part of the URL.
fn connect_failure(err: &sqlx::Error) -> String {
    match err {
        sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            "connection refused; is PostgreSQL running?".into()
        }
        sqlx::Error::Io(io) => io.to_string(),
        sqlx::Error::Database(db) => db.message().to_string(),
        other => other.to_string(),
    }
}

/// `token create`, `token list` and `token revoke`.
async fn token(url: &str, command: TokenCommand) -> CliResult {
    match command {
        TokenCommand::Create { role, name, expires_in_days, keys, levels } => {
            let role = Role::parse(&role).ok_or("role must be admin, auditor or reader")?;
            let pool = connect(url, 2).await?;
            let token = server::auth::generate_token()?;
            let expires_at =
                expires_in_days.map(|d| time::OffsetDateTime::now_utc() + time::Duration::days(i64::from(d)));
            if let Some(bad) = keys.iter().find(|p| !tokens::valid_pattern(p)) {
                return Err(format!("--keys {bad:?}: a key name in which * stands for any characters").into());
            }
            let levels: Vec<String> = levels.iter().flat_map(|l| l.split(',')).map(|l| l.trim().to_string()).collect();
            if let Some(bad) = levels.iter().find(|l| crate::domain::Level::parse(l).is_none()) {
                return Err(format!("--levels {bad:?}: one of global, plan, org, project, user").into());
            }
            let limit = |v: &[String]| (!v.is_empty()).then(|| v.to_vec());
            let (keys, levels) = (limit(&keys), limit(&levels));
            let id = tokens::insert_limited(&pool, &name, role, &token, expires_at, keys.as_deref(), levels.as_deref())
                .await?;
            println!("created {} token {name:?} (id {id}); it is shown once:", role.as_str());
            println!("{token}");
        }
        TokenCommand::List => {
            let pool = connect(url, 2).await?;
            for t in tokens::list(&pool).await? {
                let state = match (t.revoked_at, t.expires_at) {
                    (Some(_), _) => "revoked".to_string(),
                    (None, Some(at)) if at <= time::OffsetDateTime::now_utc() => "expired".to_string(),
                    (None, Some(at)) => format!("expires {at}"),
                    (None, None) => "active".to_string(),
                };
                let limits = match (&t.key_patterns, &t.levels) {
                    (None, None) => String::new(),
                    (keys, levels) => format!(
                        "  keys {} levels {}",
                        keys.as_ref().map_or("*".to_string(), |k| k.join(",")),
                        levels.as_ref().map_or("*".to_string(), |l| l.join(","))
                    ),
                };
                println!("{}  {:<8} {:<24} {}...  {state}{limits}", t.id, t.role, t.name, t.prefix);
            }
        }
        TokenCommand::Revoke { id_or_name } => {
            let pool = connect(url, 2).await?;
            match tokens::revoke(&pool, &id_or_name).await? {
                0 => return Err(format!("no active token with id or name {id_or_name:?}").into()),
                n => println!("revoked {n} token(s)"),
            }
        }
    }
    Ok(())
}

/// Lints `paths` against the catalog; findings are an error (exit 1).
pub(super) async fn lint(url: Option<&str>, paths: &[PathBuf], format: &str, arg: &CatalogArg) -> CliResult {
    let catalog = match (&arg.path, url) {
        (Some(path), _) => Catalog::parse(&std::fs::read_to_string(path)?)?,
        (None, Some(url)) => Catalog { keys: keys::list(&connect(url, 1).await?).await? },
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
async fn audit_verify(url: &str) -> CliResult {
    let pool = connect(url, 2).await?;
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

/// Syncs the catalog (the file given, or the built-in one) into the
/// database; refused, naming each stored value it would put out of bounds.
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
