//! The HTTP server: the router, its state and its life cycle.

pub mod admin;
pub mod audit;
pub mod auth;
pub mod bootstrap;
pub mod bundle;
pub mod change_requests;
pub mod changes;
pub mod console;
pub mod error;
pub mod extract;
pub mod feed;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub mod openapi_strict;
pub mod preview;
pub mod read;
pub mod refusals;
pub mod schemas;
pub mod snapshot_cache;
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
    /// The change feed the replica publishes to.
    pub feed: std::sync::Arc<feed::Feed>,
    /// The bootstrap, built once per position.
    pub bootstrap: bootstrap::BootstrapCache,
    /// Snapshot documents, serialized once per scope and position.
    pub snapshots: snapshot_cache::SnapshotCache,
    /// How long a change request waits for its approvals.
    pub change_request_ttl: std::time::Duration,
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// Server settings beyond the database and address.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub write_rate: limits::WriteRate,
    /// Longest a request may take before it is answered 503 `timeout`.
    pub request_timeout: std::time::Duration,
    /// How long verified tokens stay valid after the revocation listener is
    /// lost (see `token_cache`).
    pub auth_grace: std::time::Duration,
    /// Where the replica keeps its snapshot file, to start from while the
    /// database is away.
    pub snapshot_path: Option<std::path::PathBuf>,
    pub feed: feed::FeedConfig,
    /// How long a pending change request waits before it expires.
    pub change_request_ttl: std::time::Duration,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            write_rate: limits::WriteRate::default(),
            request_timeout: std::time::Duration::from_secs(30),
            auth_grace: std::time::Duration::from_secs(300),
            snapshot_path: None,
            feed: feed::FeedConfig::default(),
            change_request_ttl: change_requests::DEFAULT_TTL,
        }
    }
}

impl AppState {
    /// Loads the replica (or starts from its snapshot file), starts the
    /// change feed and the token-cache listener.
    pub async fn new(pool: PgPool, config: &ServerConfig) -> std::io::Result<AppState> {
        metrics::install();
        let feed = std::sync::Arc::new(feed::Feed::new(config.feed));
        let mut builder = crate::client::PolicyClient::builder()
            .pool(pool.clone())
            .observer(feed.clone())
            // A server reconnects quickly: it serves many clients.
            .backoff_max(std::time::Duration::from_secs(2));
        if let Some(path) = &config.snapshot_path {
            builder = builder.snapshot_path(path);
        }
        let replica = builder.connect().await.map_err(|e| std::io::Error::other(e.to_string()))?;
        if replica.health().origin == crate::client::Origin::Live {
            // Before serving, so a subscriber resuming here needs no reset.
            backfill(&pool, &feed).await;
        }
        tokio::spawn(heartbeats(std::sync::Arc::downgrade(&feed), config.feed.heartbeat));
        // Verified tokens are kept beside the snapshot file, for a start
        // while the database is away.
        let token_file = config.snapshot_path.as_ref().map(|p| {
            let mut name = p.as_os_str().to_owned();
            name.push(".tokens");
            std::path::PathBuf::from(name)
        });
        let tokens = std::sync::Arc::new(token_cache::TokenCache::new(config.auth_grace, token_file));
        tokens.spawn_listener(pool.clone()).await;
        tokio::spawn(expire_change_requests(pool.clone()));
        Ok(AppState(std::sync::Arc::new(Shared {
            writer: crate::store::writer::Writer::spawn(pool.clone()),
            pool,
            writes: limits::WriteLimiter::new(config.write_rate),
            refusals: limits::RefusalLimiter::default(),
            tokens,
            replica,
            feed,
            bootstrap: bootstrap::BootstrapCache::default(),
            snapshots: snapshot_cache::SnapshotCache::default(),
            change_request_ttl: config.change_request_ttl,
        })))
    }
}

/// Fills the feed's ring with the changes before the replica's load, so
/// subscribers resuming after a restart of this server need no reset.
async fn backfill(pool: &PgPool, feed: &feed::Feed) {
    let (position, horizon) = feed.positions();
    if position == 0 || horizon < position {
        return;
    }
    let from = (position - feed.capacity() as i64).max(0);
    match crate::client::load::after(pool, from, feed.capacity() as i64).await {
        Ok(changes) => feed.backfill(&changes, from),
        Err(e) => tracing::warn!(error = %e, "could not backfill the change feed"),
    }
}

/// Records the expiry of pending change requests past their time, once a
/// minute, until the pool is closed (reads of requests also do it first).
async fn expire_change_requests(pool: PgPool) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(60));
    while !pool.is_closed() {
        every.tick().await;
        if let Err(e) = crate::store::change_requests::expire_due(&pool).await {
            tracing::debug!(error = %e, "could not expire change requests");
        }
    }
}

/// A comment on every stream every `period`, for as long as the feed lives.
async fn heartbeats(feed: std::sync::Weak<feed::Feed>, period: std::time::Duration) {
    let mut every = tokio::time::interval(period);
    every.tick().await;
    loop {
        every.tick().await;
        match feed.upgrade() {
            Some(feed) => feed.heartbeat(),
            None => return,
        }
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
        .route("/api/v1/policy-values/snapshot", get(read::snapshot).layer(gzip()))
        .route("/api/v1/policy-bundles", get(bundle::policy_bundle))
        .route("/api/v1/replica", get(bootstrap::replica))
        .route("/api/v1/changes", get(changes::changes))
        .layer(middleware::from_fn_with_state(state.clone(), read::mark_stale));
    let auditor = Router::new()
        .route("/api/v1/admin/policy-values", get(admin::overrides))
        .route("/api/v1/admin/policy-values/counts", get(admin::counts))
        .route("/api/v1/admin/policy-values/history", get(audit::history))
        .route("/api/v1/admin/audit-logs", get(audit::audit_logs))
        .route("/api/v1/admin/audit-logs/verify", get(audit::verify))
        .route("/api/v1/admin/audit-logs/head", get(audit::head))
        .route("/api/v1/admin/change-requests", get(change_requests::list))
        .route("/api/v1/admin/change-requests/{id}", get(change_requests::show));
    let admin = Router::new()
        .route("/api/v1/admin/policy-values", post(admin::write))
        .route("/api/v1/admin/policy-values/{id}/cancel", post(admin::cancel))
        .route("/api/v1/admin/change-requests/{id}/approve", post(change_requests::approve))
        .route("/api/v1/admin/change-requests/{id}/reject", post(change_requests::reject))
        .route("/api/v1/admin/change-requests/{id}/withdraw", post(change_requests::withdraw));
    // Outside the audit of refused attempts: a preview audits nothing.
    let preview = Router::new().route("/api/v1/admin/policy-values/preview", post(preview::preview));
    let api = Router::new()
        .merge(guarded(preview, Role::Admin))
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
        .with_state(state.clone());
    // The web console calls the API above in process (docs/console.md).
    let api = api.clone().merge(console::router(state, api));
    api.layer(middleware::from_fn_with_state(config.request_timeout, answer_within))
        .layer(DefaultBodyLimit::max(extract::BODY_LIMIT))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
            let request_id = req.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("");
            tracing::info_span!("request", method = %req.method(), uri = %req.uri(), request_id)
        }))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

/// Gzip for large answers when the caller accepts it (`Accept-Encoding`);
/// small ones are not worth the CPU.
fn gzip() -> tower_http::compression::CompressionLayer<impl tower_http::compression::Predicate> {
    use tower_http::compression::predicate::{NotForContentType, Predicate, SizeAbove};
    let large = SizeAbove::new(1024).and(NotForContentType::const_new("text/event-stream"));
    tower_http::compression::CompressionLayer::new().gzip(true).compress_when(large)
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
    feed: std::sync::Arc<feed::Feed>,
}

/// How long a shutdown waits for requests in flight before it stops anyway.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

impl Application {
    pub async fn build(pool: PgPool, addr: &str) -> std::io::Result<Application> {
        Application::build_with(pool, addr, &ServerConfig::default()).await
    }

    pub async fn build_with(pool: PgPool, addr: &str, config: &ServerConfig) -> std::io::Result<Application> {
        let listener = TcpListener::bind(addr).await?;
        let state = AppState::new(pool, config).await?;
        let feed = state.feed.clone();
        Ok(Application { listener, router: router(state, config), feed })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Serves until `shutdown` completes; in-flight requests finish first
    /// (for at most [`SHUTDOWN_GRACE`]) and change-feed streams end, so
    /// their subscribers resume by id on another server.
    ///
    /// HTTP/1.1 only, one task per connection, straight onto hyper's HTTP/1
    /// connection: no protocol sniffing or upgrade handling per connection
    /// (the API serves neither HTTP/2 nor upgrades), and `TCP_NODELAY`, so a
    /// change-feed event is sent the moment it is written.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let http1 = hyper::server::conn::http1::Builder::new();
        let service = hyper_util::service::TowerToHyperService::new(self.router);
        tokio::pin!(shutdown);
        loop {
            let stream = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        accept_failed(e).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(error = %e, "could not set TCP_NODELAY");
            }
            let connection =
                graceful.watch(http1.serve_connection(hyper_util::rt::TokioIo::new(stream), service.clone()));
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::trace!(error = %e, "connection ended with an error");
                }
            });
        }
        drop(self.listener);
        self.feed.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await.is_err() {
            tracing::warn!(grace = ?SHUTDOWN_GRACE, "requests still in flight after the shutdown grace; stopping anyway");
        }
        Ok(())
    }
}

/// After a failed accept: a connection that went away before it was taken
/// is nothing; anything else (out of file descriptors) is waited out.
async fn accept_failed(error: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(error.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset) {
        return;
    }
    tracing::error!(error = %error, "accept failed; retrying in 1 s");
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
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
