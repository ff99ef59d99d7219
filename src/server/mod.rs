//! The HTTP server: the router, its state and its life cycle.

pub mod admin;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod error;
pub mod extract;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub mod read;
pub mod refusals;
pub mod remote;
pub mod remote_format;
pub mod token_cache;

use std::future::Future;

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Request, StatusCode};
use axum::routing::{get, post};
use axum::{middleware, Router};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::store::tokens::Role;
use error::ApiError;

/// What every handler shares. Cloned for every request (once per extractor
/// and middleware that takes it), so it is one reference count, not one per
/// field: with two cores serving, those counts were 8 % of a resolve.
#[derive(Clone)]
pub struct AppState(std::sync::Arc<Shared>);

pub struct Shared {
    pub pool: PgPool,
    pub writes: limits::WriteLimiter,
    pub refusals: limits::RefusalLimiter,
    pub tokens: std::sync::Arc<token_cache::TokenCache>,
    /// Admin writes, committed in groups (see `store::writer`).
    pub writer: crate::store::writer::Writer,
    /// The server's own replica: current answers come from memory.
    pub replica: crate::client::PolicyClient,
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// Server settings beyond the database and address.
#[derive(Debug, Clone, Copy)]
pub struct ServerConfig {
    pub write_rate: limits::WriteRate,
    /// Longest a request may take before it is answered 503 `timeout`.
    pub request_timeout: std::time::Duration,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig { write_rate: limits::WriteRate::default(), request_timeout: std::time::Duration::from_secs(30) }
    }
}

impl AppState {
    /// Loads the replica and starts the token-cache listener.
    pub async fn new(pool: PgPool, config: &ServerConfig) -> std::io::Result<AppState> {
        metrics::install();
        let replica = crate::client::PolicyClient::builder()
            .pool(pool.clone())
            .connect()
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let tokens = std::sync::Arc::new(token_cache::TokenCache::default());
        tokens.spawn_listener(pool.clone());
        Ok(AppState(std::sync::Arc::new(Shared {
            writer: crate::store::writer::Writer::spawn(pool.clone()),
            pool,
            writes: limits::WriteLimiter::new(config.write_rate),
            refusals: limits::RefusalLimiter::default(),
            tokens,
            replica,
        })))
    }
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The whole API.
pub fn router(state: AppState, config: &ServerConfig) -> Router {
    let guarded = |routes: Router<AppState>, role: Role| {
        routes.route_layer(middleware::from_fn_with_state((state.clone(), role), auth::require))
    };
    let reader = Router::new()
        .route("/api/v1/policy-keys", get(read::keys))
        .route("/api/v1/policy-values/resolve", get(read::resolve))
        .route("/api/v1/policy-values/snapshot", get(read::snapshot));
    let auditor = Router::new()
        .route("/api/v1/admin/policy-values", get(admin::overrides))
        .route("/api/v1/admin/policy-values/history", get(audit::history))
        .route("/api/v1/admin/audit-logs", get(audit::audit_logs))
        .route("/api/v1/admin/audit-logs/verify", get(audit::verify))
        .route("/api/v1/admin/audit-logs/head", get(audit::head));
    let admin = Router::new()
        .route("/api/v1/admin/policy-values", post(admin::write))
        .route("/api/v1/admin/policy-values/{id}/cancel", post(admin::cancel));
    Router::new()
        .merge(guarded(reader, Role::Reader))
        .merge(guarded(auditor, Role::Auditor))
        .merge(
            guarded(admin, Role::Admin).layer(middleware::from_fn_with_state(state.clone(), refusals::audit_refusals)),
        )
        .route("/api/v1/openapi.json", get(openapi::document))
        .route("/metrics", get(metrics::render))
        .route("/healthz", get(read::healthz))
        .route("/readyz", get(read::readyz))
        .route_layer(middleware::from_fn(metrics::track))
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed on this route")
        })
        .layer(middleware::from_fn_with_state(config.request_timeout, answer_within))
        .layer(DefaultBodyLimit::max(extract::BODY_LIMIT))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
            let request_id = req.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("");
            tracing::info_span!("request", method = %req.method(), uri = %req.uri(), request_id)
        }))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .with_state(state)
}

/// Answers 503 `timeout` when a request takes longer than `limit` to
/// produce its response head (a streamed body is not cut off).
async fn answer_within(
    axum::extract::State(limit): axum::extract::State<std::time::Duration>,
    req: axum::extract::Request,
    next: middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "timeout", "the request took too long").into_response()
        }
    }
}

/// A bound server, ready to run; `port()` tells where (bind to port 0 in tests).
pub struct Application {
    listener: TcpListener,
    router: Router,
}

impl Application {
    pub async fn build(pool: PgPool, addr: &str) -> std::io::Result<Application> {
        Application::build_with(pool, addr, &ServerConfig::default()).await
    }

    pub async fn build_with(pool: PgPool, addr: &str, config: &ServerConfig) -> std::io::Result<Application> {
        let listener = TcpListener::bind(addr).await?;
        let state = AppState::new(pool, config).await?;
        Ok(Application { listener, router: router(state, config) })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Serves until `shutdown` completes; in-flight requests finish first.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        axum::serve(self.listener, self.router).with_graceful_shutdown(shutdown).await
    }
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received; finishing in-flight requests");
}
