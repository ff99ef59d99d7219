//! Test helpers: the real server on port 0 over a per-test database (from
//! `#[sqlx::test]`), the built-in catalog synced, one token per role, and
//! typed request helpers.
#![allow(dead_code)]

use policy_values::domain::Catalog;
use policy_values::server::limits::WriteRate;
use policy_values::server::{auth, Application, ServerConfig};
use policy_values::store::{keys, tokens, tokens::Role};
use reqwest::StatusCode;
use serde_json::Value as Json;
use sqlx::postgres::PgConnectOptions;
use sqlx::PgPool;

/// The number of keys in the built-in catalog (`seed/catalog.toml`).
pub fn catalog_len() -> usize {
    Catalog::builtin().unwrap().keys.len()
}

pub struct TestApp {
    pub base: String,
    pub pool: PgPool,
    pub http: reqwest::Client,
    pub admin: String,
    pub auditor: String,
    pub reader: String,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub json: Json,
}

impl Reply {
    pub fn code(&self) -> &str {
        self.json["code"].as_str().unwrap_or("")
    }
}

pub async fn create_token(pool: &PgPool, role: Role, name: &str) -> String {
    let token = auth::generate_token().unwrap();
    tokens::insert(pool, name, role, &token, None).await.unwrap();
    token
}

impl TestApp {
    /// The server with limits high enough not to get in a test's way.
    pub async fn spawn(pool: PgPool) -> TestApp {
        let config = ServerConfig { write_rate: WriteRate { rate: 1e6, burst: 1e6 }, ..ServerConfig::default() };
        TestApp::spawn_with(pool, &config).await
    }

    pub async fn spawn_with(pool: PgPool, config: &ServerConfig) -> TestApp {
        let options = options_of(&pool);
        TestApp::spawn_via(pool, config, options).await
    }

    /// The server reaching its database with `server_options` (through a
    /// proxy, say); `pool` stays the test's direct one.
    pub async fn spawn_via(pool: PgPool, config: &ServerConfig, server_options: PgConnectOptions) -> TestApp {
        let catalog = Catalog::builtin().unwrap();
        keys::sync(&pool, &catalog, "catalog-sync", "test setup").await.unwrap();
        let admin = create_token(&pool, Role::Admin, "alice-admin").await;
        let auditor = create_token(&pool, Role::Auditor, "ava-auditor").await;
        let reader = create_token(&pool, Role::Reader, "rex-reader").await;
        let base = serve(&pool, config, server_options).await;
        TestApp { base, pool, http: reqwest::Client::new(), admin, auditor, reader }
    }

    /// Another server on the same database; its base URL.
    pub async fn another_server(&self, config: &ServerConfig) -> String {
        serve(&self.pool, config, options_of(&self.pool)).await
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.unwrap();
        let json = if bytes.is_empty() { Json::Null } else { serde_json::from_slice(&bytes).unwrap() };
        Reply { status, headers, json }
    }

    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.send(self.http.get(format!("{}{path}", self.base)).bearer_auth(token)).await
    }

    pub async fn post(&self, path: &str, token: &str, body: &Json) -> Reply {
        self.send(self.http.post(format!("{}{path}", self.base)).bearer_auth(token).json(body)).await
    }

    /// `POST /api/v1/admin/policy-values` as the admin.
    pub async fn write(&self, body: Json) -> Reply {
        self.post("/api/v1/admin/policy-values", &self.admin, &body).await
    }

    /// The resolved value of `key` for a query-string scope such as `org_id=acme`.
    pub async fn resolve(&self, key: &str, scope: &str) -> Json {
        let reply = self.get(&format!("/api/v1/policy-values/resolve?key={key}&{scope}"), &self.reader).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
        reply.json["value"].clone()
    }

    /// Value rows and successful audit rows, to prove a refusal wrote
    /// nothing (refusals are audited with outcome `refused`).
    pub async fn counts(&self) -> (i64, i64) {
        let values =
            sqlx::query_scalar::<_, i64>("select count(*) from policy_values").fetch_one(&self.pool).await.unwrap();
        let audit = sqlx::query_scalar::<_, i64>("select count(*) from audit_logs where outcome = 'success'")
            .fetch_one(&self.pool)
            .await
            .unwrap();
        (values, audit)
    }
}

/// The real server on port 0, with a pool built as `serve` builds it (sized,
/// checking each connection it takes back), closed with `test_pool` so the
/// test's database can be dropped; its base URL.
pub async fn serve(test_pool: &PgPool, config: &ServerConfig, options: PgConnectOptions) -> String {
    let server_pool = policy_values::store::pool::options()
        .max_connections(16)
        .acquire_timeout(std::time::Duration::from_secs(2))
        .connect_lazy_with(options);
    let (test_pool, closing) = (test_pool.clone(), server_pool.clone());
    tokio::spawn(async move {
        test_pool.close_event().await;
        closing.close().await;
    });
    let app = Application::build_with(server_pool, "127.0.0.1:0", config).await.unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    base
}

/// A new, migrated database on the server of `DATABASE_URL`, for tests that
/// cannot take `#[sqlx::test]` (they drive their own runtime).
pub async fn fresh_database() -> PgPool {
    use sqlx::ConnectOptions;
    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL must point at a PostgreSQL server");
    let options: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
    let name = format!("pv_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = options.clone().database("postgres").connect().await.unwrap();
    sqlx::query(&format!("create database {name}")).execute(&mut admin).await.unwrap();
    let pool =
        sqlx::postgres::PgPoolOptions::new().max_connections(4).connect_with(options.database(&name)).await.unwrap();
    policy_values::store::migrate(&pool).await.unwrap();
    pool
}

pub mod proxy;
pub mod sse;

/// Connect options for the test's own database (from its pool).
pub fn options_of(pool: &PgPool) -> sqlx::postgres::PgConnectOptions {
    (*pool.connect_options()).clone()
}

/// Waits, up to a generous bound, until `check` holds; panics with `what`
/// otherwise. The bound only keeps a broken build from hanging: it is not a
/// timing assertion.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !check().await {
        assert!(std::time::Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// Closes `pool` and drops its database (one from `fresh_database`).
pub async fn drop_database(pool: PgPool) {
    use sqlx::ConnectOptions;
    let options = options_of(&pool);
    let name = options.get_database().unwrap_or_default().to_string();
    pool.close().await;
    let mut admin = options.database("postgres").connect().await.unwrap();
    sqlx::query(&format!("drop database if exists {name} with (force)")).execute(&mut admin).await.unwrap();
}

impl TestApp {
    /// The codes of refused attempts audited, oldest first.
    pub async fn refused_codes(&self) -> Vec<String> {
        sqlx::query_scalar("select coalesce(code, '') from audit_logs where outcome = 'refused' order by seq")
            .fetch_all(&self.pool)
            .await
            .unwrap()
    }
}

/// A URL for the test's own database, for the CLI.
pub fn database_url_of(pool: &PgPool) -> String {
    let options = options_of(pool);
    format!(
        "postgres://{}@{}:{}/{}",
        options.get_username(),
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or_default()
    )
}
