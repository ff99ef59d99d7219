//! `GET /api/v1/replica`: the bootstrap a follower loads before it follows
//! the change feed: the catalog and every value row in force or scheduled,
//! with the position it is complete up to. Built from the server's replica,
//! at most once per position and at most every few seconds under writes
//! (a follower catches up from the feed), and kept gzipped, so a fleet
//! restarting at once costs one build, not one per instance.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::{ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_TYPE, ETAG, VARY};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::AppState;
use crate::client::Origin;

/// A built bootstrap stays in use this long while writes move the position.
const REUSE: Duration = Duration::from_secs(2);

pub struct Built {
    position: i64,
    etag: HeaderValue,
    json: Bytes,
    gzip: Bytes,
    at: Instant,
}

#[derive(Default)]
pub struct BootstrapCache {
    current: Mutex<Option<Arc<Built>>>,
    /// One build at a time; others wait for it and share it.
    building: tokio::sync::Mutex<()>,
}

impl BootstrapCache {
    fn current(&self) -> Option<Arc<Built>> {
        self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The cached build if it is still good: at the replica's position, or
    /// recent and still resumable from the feed.
    fn usable(&self, state: &AppState) -> Option<Arc<Built>> {
        let built = self.current()?;
        let position = state.replica.health().last_seq;
        let (_, horizon) = state.feed.positions();
        let fresh = built.position == position || (built.at.elapsed() < REUSE && built.position >= horizon);
        fresh.then_some(built)
    }

    async fn get(&self, state: &AppState) -> Result<Arc<Built>, ApiError> {
        if let Some(built) = self.usable(state) {
            return Ok(built);
        }
        let _one = self.building.lock().await;
        if let Some(built) = self.usable(state) {
            return Ok(built);
        }
        let replica = state.replica.clone();
        let built = tokio::task::spawn_blocking(move || build(&replica)).await.map_err(|e| {
            tracing::error!(error = %e, "building the bootstrap failed");
            ApiError::internal()
        })??;
        let built = Arc::new(built);
        *self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::clone(&built));
        Ok(built)
    }
}

fn build(replica: &crate::client::PolicyClient) -> Result<Built, ApiError> {
    let image = replica.image();
    let internal = |e: &dyn std::fmt::Display| {
        tracing::error!(error = %e, "serializing the bootstrap");
        ApiError::internal()
    };
    let json = serde_json::to_vec(&image).map_err(|e| internal(&e))?;
    let mut encoder = flate2::write::GzEncoder::new(Vec::with_capacity(json.len() / 8), flate2::Compression::fast());
    encoder.write_all(&json).map_err(|e| internal(&e))?;
    let gzip = encoder.finish().map_err(|e| internal(&e))?;
    let etag = HeaderValue::from_str(&format!("W/\"replica.{}\"", image.position)).map_err(|e| internal(&e))?;
    metrics::counter!("policy_values_bootstrap_builds_total").increment(1);
    Ok(Built { position: image.position, etag, json: json.into(), gzip: gzip.into(), at: Instant::now() })
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers.get_all(ACCEPT_ENCODING).iter().filter_map(|v| v.to_str().ok()).any(|v| {
        v.split(',').any(|coding| {
            let mut parts = coding.trim().split(';');
            let name = parts.next().unwrap_or_default().trim();
            let refused = parts.any(|p| matches!(p.trim(), "q=0" | "q=0.0" | "q=0.00" | "q=0.000"));
            name.eq_ignore_ascii_case("gzip") && !refused
        })
    })
}

/// The catalog (`keys`, as `policy_keys` columns) and every value row in
/// force or scheduled (`rows`), complete up to `position`: follow the feed
/// with `?after=<position>`. `ETag` and 304; gzip when accepted.
#[utoipa::path(get, path = "/api/v1/replica", tag = "read",
    responses((status = 200, description = "the replica as a document", body = super::schemas::Image),
              (status = 304, description = "unchanged since the If-None-Match ETag")))]
pub async fn replica(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    if state.replica.health().origin == Origin::Default {
        // Nothing but the catalog defaults: no position to follow from.
        return Err(ApiError::database_unavailable());
    }
    let built = state.bootstrap.get(&state).await?;
    let cache = (CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    let vary = (VARY, HeaderValue::from_static("accept-encoding"));
    if super::read::none_match(&headers, built.etag.to_str().unwrap_or_default()) {
        return Ok((StatusCode::NOT_MODIFIED, [(ETAG, built.etag.clone()), cache, vary]).into_response());
    }
    let json = (CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if accepts_gzip(&headers) {
        let gzip = (CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        return Ok(
            (StatusCode::OK, [(ETAG, built.etag.clone()), cache, vary, json, gzip], built.gzip.clone()).into_response()
        );
    }
    Ok((StatusCode::OK, [(ETAG, built.etag.clone()), cache, vary, json], built.json.clone()).into_response())
}
